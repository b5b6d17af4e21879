"""Redaction of PII in what privloc writes: reports show the shape of a recovered value, not the value.

An audit report is kept by the auditor, yet it is the file most likely to be pasted into a ticket or a paper:
its examples keep each value's first character and its format (punctuation, spaces, where digits and
letters are) and mask the rest, unless the user asks for them in full (`--show-pii`). A mitigated copy, which
is meant to be shared, gets no examples at all (see public_report).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def redact(value: str) -> str:
    """'jane.doe@mail.com' -> 'j***.***@****.***', '+1 555-0100' -> '+# ###-####'."""
    if not value:
        return value
    return value[0] + "".join("#" if c.isdigit() else "*" if c.isalpha() else c for c in value[1:])


def pii_strings(records: Iterable[dict]) -> list[str]:
    """Every PII value of the records, longest first (so that a value is masked before any part of it)."""
    values = {r["text"][s["start"]: s["end"]] for r in records for s in r["spans"]}
    return sorted((v for v in values if v.strip()), key=lambda v: (-len(v), v))


def redact_known(text: str, values: list[str]) -> str:
    """`text` with every occurrence of the given PII values redacted."""
    for value in values:
        if value in text:
            text = text.replace(value, redact(value))
    return text


def redact_examples(examples: list[dict], values: list[str]) -> list[dict]:
    """Audit examples with the true value and the model's completion redacted, and any PII in the prompt."""
    return [{**e, "prompt": redact_known(e["prompt"], values), "true_pii": redact(e["true_pii"]),
             "greedy_completion": redact(e["greedy_completion"])} for e in examples]


def source_label(source: str) -> str:
    """A data source as a shared file may name it: a built-in or hub name as it is, a folder by its name only."""
    return source if "/" not in source or source.startswith("hf:") else Path(source).name


def public_report(report: dict) -> dict:
    """An audit report with numbers only: no examples, no local paths (for a copy that is meant to be shared)."""
    drop = {"examples", "model", "model_fingerprint"}
    public = {k: v for k, v in report.items() if k not in drop}
    public["data"] = source_label(report["data"])
    return public
