"""Greedy completions from the true prefix of PII occurrences: the qualitative view of leakage."""

from __future__ import annotations

import pandas as pd
import torch

from privloc.corpora.data import CATEGORIES
from privloc.method.decoding import beam_search
from privloc.method.tokenizer import Encoded, SpanInfo


def pick_spans(enc: Encoded, n: int, kind: str = "assoc") -> list[SpanInfo]:
    """The first `kind` occurrences in corpus order, taking categories in turn so that they mix."""
    queues = {c: [s for s in enc.spans if s.kind == kind and s.category == c] for c in CATEGORIES}
    picked: list[SpanInfo] = []
    while len(picked) < n and any(queues.values()):
        for category in CATEGORIES:
            if queues[category] and len(picked) < n:
                picked.append(queues[category].pop(0))
    return picked


@torch.no_grad()
def greedy_completion(model, tokenizer, enc: Encoded, span: SpanInfo) -> str:
    """Greedy decoding of as many tokens as the true span has, from the document's true prefix."""
    prefix = enc.input_ids[span.doc, : span.tok_start].unsqueeze(0).to(model.device)
    output = model.generate(
        prefix, attention_mask=torch.ones_like(prefix), max_new_tokens=span.tok_end - span.tok_start,
        do_sample=False, pad_token_id=tokenizer.pad_token_id,
    )
    completion = tokenizer.decode(output[0, prefix.shape[1]:], skip_special_tokens=True).strip()
    return completion.replace("\n", " ⏎ ")


def prompt_tail(tokenizer, enc: Encoded, span: SpanInfo, chars: int = 60) -> str:
    text = tokenizer.decode(enc.input_ids[span.doc, 1: span.tok_start], skip_special_tokens=True)
    text = ("…" + text[-chars:]) if len(text) > chars else text
    return text.replace("\n", " ⏎ ")  # one line per example, so tables stay readable


def beam_recovery(model, enc: Encoded, span: SpanInfo, width: int) -> str:
    """Where the true span sits among the `width` beams of a beam search from its true prefix, in words."""
    prefix = enc.input_ids[span.doc, : span.tok_start]
    truth = enc.input_ids[span.doc, span.tok_start: span.tok_end]
    beams = beam_search(model, [prefix], [len(truth)], width)[0]
    hit = (beams == truth).all(1).nonzero().flatten()
    return f"beam {int(hit[0]) + 1} of {width}" if len(hit) else f"not in {width} beams"


def completion_examples(model, tokenizer, enc: Encoded, n: int = 4, models: dict | None = None,
                        beam_width: int | None = None) -> pd.DataFrame:
    """Prompt tail, true PII and greedy completion for `n` occurrences picked by `pick_spans`.

    `models` maps extra column names to other models (e.g. the model after deactivation) to compare. With
    `beam_width`, each of them also gets a `<column>_beam` column: whether a beam search of that width from
    the true prefix still finds the PII, and at which beam.
    """
    models = {"completion": model, **(models or {})}
    rows = []
    for span in pick_spans(enc, n):
        row = {"category": span.category, "prompt": prompt_tail(tokenizer, enc, span), "true_pii": span.text}
        for column, each in models.items():
            row[column] = greedy_completion(each, tokenizer, enc, span)
            if beam_width:
                row[f"{column}_beam"] = beam_recovery(each, enc, span, beam_width)
        rows.append(row)
    return pd.DataFrame(rows)
