"""The model card (README.md) of a mitigated copy: what was removed, from which model and data, and what it did."""

from __future__ import annotations

import pandas as pd

from privloc import __version__
from privloc.command.audit import summary_rows


def model_card(info: dict, counts: pd.DataFrame, before: dict, after: dict) -> str:
    """Markdown for the copy's README.md; `before`/`after` are audit.run reports of the original and the copy."""
    rows = summary_rows(before)
    after_rows = dict(summary_rows(after))
    table = "\n".join(["| measure | original | this copy |", "|---|---|---|"]
                      + [f"| {name} | {value} | {after_rows.get(name, 'n/a')} |" for name, value in rows])
    selection = (f"the top {info['top_k']} neurons by the mask's P(closed) (`--top-k`)" if info["top_k"] is not None
                 else "the mask's privacy neurons (its target share of the gated units, ranked by P(closed))")
    lines = [
        "---", "library_name: transformers", "tags:", "- privloc", "- privacy", "---", "",
        f"# {info['name']}: privacy neurons removed", "",
        f"A copy of `{info['model']}` (weights fingerprint `{info['model_fingerprint']}`) with "
        f"**{info['n_removed']} of {info['n_gated']} gated units** ({100 * info['n_removed'] / info['n_gated']:.2f}%) "
        "switched off: each unit's weight column and bias are set to zero, so this is a plain "
        f"`{info['model_type']}` checkpoint that `transformers.AutoModelForCausalLM.from_pretrained` loads without "
        "privloc. The tokenizer beside it is the original's.", "",
        "## What was removed", "",
        f"The units are {selection}, learned by privloc's Algorithm 1 (Chen et al., ACL 2024: HardConcrete gates "
        f"trained to suppress memorised PII while keeping ordinary text) on `{info['mask_data']}`. A unit is one output of a linear map in a transformer "
        "block (`attn.q/k/v` the query, "
        "key and value slices, `attn.o` the attention output, `mlp.in` the MLP hidden units, `mlp.out` the MLP "
        "output). Units per layer and component:", "",
        counts.to_markdown(), "",
        "The removed ids (privloc's layer-major numbering) are in `removed_neurons.json`.", "",
        "## Audit before and after", "",
        f"privloc's attack suite on `{info['audit_data']}` with an attacker budget of B = {before['budget']} "
        f"tries, on the same {before['n_search_spans']} memorised PII spans for both models (the one-pass attacks "
        f"on {before['n_pass_spans']}). `leak_any` is the share of spans that at least one black-box attack "
        "recovers; perplexity is on the validation split's non-PII tokens.", "",
        table, "",
        "Lower leakage here means these attacks recover less; it does not mean the PII is gone from the weights. "
        "Check `leak_any` and the candidate attack before relying on the copy. `audit.json` holds every number of "
        "both audits and nothing else: no PII, no example, no local path.", "",
        f"Made with privloc {__version__} (`privloc mitigate`).",
    ]
    return "\n".join(lines) + "\n"
