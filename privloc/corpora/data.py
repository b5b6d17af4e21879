"""Records of text with PII spans: validation, span kinds, JSONL I/O and dataset loaders.

A record is ``{"text": str, "spans": [{"start", "end", "category", "subject"}, ...], "style": str}``
(docs/method.md, "Record format of a corpus"). Offsets are character offsets into ``text``, ``end``
exclusive. The synthetic generators, a user's JSONL folder and a Hugging Face corpus all produce this one
format, so everything downstream has a single code path.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

CATEGORIES = ("PERSON", "EMAIL", "PHONE", "ADDRESS", "DATE", "ORG")
KINDS = ("intro", "copy", "assoc", "oneoff")
DATASETS = ("enron", "echr", "yelp_health")
SPLITS = ("train", "valid")

# Hugging Face corpora name their held-out split in several ways; the first one present is used.


class DataError(ValueError):
    """Bad input data: the message names the problem and, for JSONL, the line."""


def _fail(problem: str, line: int | None) -> DataError:
    return DataError(problem if line is None else f"line {line}: {problem}")


def _is_int(value) -> bool:
    # bool is an int subclass, but `"start": true` is a broken record, not offset 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_span(span, index: int, text_length: int, line: int | None) -> dict:
    where = f"spans[{index}]"
    if not isinstance(span, dict):
        raise _fail(f"{where} must be an object, got {type(span).__name__}", line)
    for key in ("start", "end", "category"):
        if key not in span:
            raise _fail(f"{where} is missing '{key}'", line)
    start, end, category = span["start"], span["end"], span["category"]
    if not (_is_int(start) and _is_int(end)):
        raise _fail(f"{where} offsets must be integers, got start={start!r}, end={end!r}", line)
    if start < 0 or end > text_length or start >= end:
        raise _fail(
            f"{where} [{start}, {end}) lies outside the text (length {text_length}) or is empty", line
        )
    if category not in CATEGORIES:
        expected = ", ".join(CATEGORIES)
        raise _fail(f"{where} has unknown category {category!r}; expected one of {expected}", line)
    subject = span.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise _fail(f"{where} subject must be a string or null, got {type(subject).__name__}", line)
    return {"start": start, "end": end, "category": category, "subject": subject}


def validate_record(rec: dict, line: int | None = None) -> dict:
    """Check one record and return a normalised copy (spans sorted by start, subject always present)."""
    if not isinstance(rec, dict):
        raise _fail(f"a record must be a JSON object, got {type(rec).__name__}", line)
    if "text" not in rec:
        raise _fail("record is missing 'text'", line)
    text = rec["text"]
    if not isinstance(text, str):
        raise _fail(f"'text' must be a string, got {type(text).__name__}", line)
    raw_spans = rec.get("spans", [])
    if not isinstance(raw_spans, list):
        raise _fail(f"'spans' must be a list, got {type(raw_spans).__name__}", line)
    if rec.get("style") is not None and not isinstance(rec["style"], str):
        raise _fail(f"'style' must be a string, got {type(rec['style']).__name__}", line)

    indexed = [(i, _validate_span(s, i, len(text), line)) for i, s in enumerate(raw_spans)]
    indexed.sort(key=lambda pair: (pair[1]["start"], pair[1]["end"]))
    for (prev_i, prev), (cur_i, cur) in zip(indexed, indexed[1:], strict=False):
        if cur["start"] < prev["end"]:
            raise _fail(
                f"spans[{prev_i}] [{prev['start']}, {prev['end']}) and spans[{cur_i}] "
                f"[{cur['start']}, {cur['end']}) overlap",
                line,
            )
    normalised = {"text": text, "spans": [span for _, span in indexed]}
    normalised.update({k: v for k, v in rec.items() if k not in normalised})
    return normalised


def span_kinds(rec: dict) -> list[str]:
    """The kind of every span of ``rec``, aligned with ``rec["spans"]``.

    Spans are visited in order of start, because a kind depends on what the reader has already seen.
    """
    text, spans = rec["text"], rec["spans"]
    kinds = [""] * len(spans)
    subjects_seen: set[str] = set()
    for i in sorted(range(len(spans)), key=lambda j: spans[j]["start"]):
        start, end, subject = spans[i]["start"], spans[i]["end"], spans[i].get("subject")
        if subject is None:
            kinds[i] = "oneoff"
        elif text[start:end] in text[:start]:
            kinds[i] = "copy"
        elif subject in subjects_seen:
            kinds[i] = "assoc"
        else:
            kinds[i] = "intro"
        if subject is not None:
            subjects_seen.add(subject)
    return kinds


def span_table(records: Iterable[dict]):
    """Counts of PII occurrences as a pandas DataFrame: kinds as rows, categories as columns, zeros kept."""
    import pandas as pd  # only the notebooks need tables

    counts = Counter(
        (kind, span["category"])
        for rec in records
        for span, kind in zip(rec["spans"], span_kinds(rec), strict=True)
    )
    return pd.DataFrame(
        [[counts[kind, category] for category in CATEGORIES] for kind in KINDS],
        index=pd.Index(KINDS, name="kind"),
        columns=pd.Index(CATEGORIES, name="category"),
    )


def read_jsonl(path) -> list[dict]:
    """Read and validate a JSONL file; errors name the file and the 1-based line."""
    records = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                raw = line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}: line {number}: not UTF-8 text (byte 0x{line[err.start]:02x} at "
                                f"column {err.start + 1}); save the file as UTF-8") from None
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {number}: invalid JSON ({err.msg})") from None
            try:
                records.append(validate_record(rec, line=number))
            except DataError as err:
                raise DataError(f"{path}: {err}") from None
    return records


def write_jsonl(records: Iterable[dict], path) -> None:
    """Validate and write records, replacing ``path`` atomically so readers never see half a file."""
    checked = [validate_record(rec, line=i) for i, rec in enumerate(records, start=1)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for rec in checked:
                handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


_EMAIL_RE = re.compile(r"(?<![\w.+%-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# North American numbers as the generators and most English corpora write them: 713-555-0142,
# (713) 555-0142, 713.555.0142, +1 713 555 0142.
_PHONE_RE = re.compile(r"(?<![\w+-])(?:\+?1[-. ]?)?(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\w-])")


def regex_tag(text: str) -> list[dict]:
    """EMAIL and PHONE spans found by pattern (subject None), sorted and non-overlapping."""
    found = [
        (m.start(), m.end(), category)
        for category, pattern in (("EMAIL", _EMAIL_RE), ("PHONE", _PHONE_RE))
        for m in pattern.finditer(text)
    ]
    # Earliest first, the longer match winning a tie, so a phone-like local part loses to its e-mail.
    found.sort(key=lambda m: (m[0], -(m[1] - m[0])))
    spans, covered_to = [], 0
    for start, end, category in found:
        if start >= covered_to:
            spans.append({"start": start, "end": end, "category": category, "subject": None})
            covered_to = end
    return spans


def non_pii_text(records: Iterable[dict]) -> Iterator[str]:
    """The text of every record between its PII spans, one piece at a time (the spans themselves left out).

    The tokenizer is trained on these pieces, so it has no merges for the private strings: the true PII and
    the candidates it is ranked against tokenize alike, as with a pretrained tokenizer that never saw the
    data a model is fine-tuned on.
    """
    for record in records:
        cursor = 0
        for span in sorted(record["spans"], key=lambda s: s["start"]):
            if span["start"] > cursor:
                yield record["text"][cursor: span["start"]]
            cursor = max(cursor, span["end"])
        if cursor < len(record["text"]):
            yield record["text"][cursor:]


def scrub(records: Iterable[dict]) -> list[dict]:
    """The records with every PII span replaced by its category tag (e.g. "[PHONE]") and no spans left."""
    scrubbed = []
    for record in records:
        text, cursor, pieces = record["text"], 0, []
        for span in sorted(record["spans"], key=lambda s: s["start"]):
            pieces += [text[cursor: span["start"]], f"[{span['category']}]"]
            cursor = span["end"]
        pieces.append(text[cursor:])
        scrubbed.append({**record, "text": "".join(pieces), "spans": []})
    return scrubbed


def substitute(records: Iterable[dict], values: dict[str, list[str]], rng) -> list[dict]:
    """The records with every data subject's PII replaced by a value drawn (with `rng`) from `values` of its
    category: the text an "overwrite" removal trains on. Within a document a value is replaced alike wherever it
    recurs; one-off PII (no subject) is left as it is."""
    out = []
    for record in records:
        text, cursor, pieces, spans, drawn = record["text"], 0, [], [], {}
        for span in sorted(record["spans"], key=lambda s: s["start"]):
            original = text[span["start"]: span["end"]]
            new = original
            if span.get("subject") is not None:
                key = (span["category"], original)
                if key not in drawn:
                    pool = values[span["category"]]
                    drawn[key] = pool[int(rng.integers(len(pool)))]
                new = drawn[key]
            pieces.append(text[cursor: span["start"]])
            start = sum(len(p) for p in pieces)
            pieces.append(new)
            spans.append({**span, "start": start, "end": start + len(new)})
            cursor = span["end"]
        pieces.append(text[cursor:])
        out.append({**record, "text": "".join(pieces), "spans": spans})
    return out
