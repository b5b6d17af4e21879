"""Leakage and utility metrics (docs/method.md, "Metrics and the attack suite").

Every metric reads one teacher-forced pass over an encoded corpus: position t of the scores is the
prediction of token t + 1, whose PII labels are ``enc.category[:, t + 1]`` and ``enc.kind[:, t + 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch

from privloc.corpora.data import CATEGORIES, KINDS
from privloc.devices import autocast as autocast_context
from privloc.devices import execution_device
from privloc.method.model import next_token_logits

_ASSOC = KINDS.index("assoc") + 1  # label value of assoc tokens in enc.kind
# The kinds `leakage` must score for the headline numbers (exact match of memorised PII, per category):
# scoring only them is cheaper than scoring every kind.
ASSOC_ONLY = ("assoc",)


def _device(model) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextmanager
def _eval_mode(model):
    # Per-module flags, so that a module kept in a different mode on purpose (e.g. gates) comes back as it was.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def score_tokens(model, enc, batch_size: int = 32, positions: torch.Tensor | None = None,
                 autocast: str | None = None) -> dict[str, torch.Tensor]:
    """One forward pass over the corpus: per next-token target, argmax correctness, NLL and validity.

    `positions` ([N, L-1] bool) limits the scoring to those targets (the others stay False / 0), which is
    cheaper; rows without any are skipped, and a row runs only up to its last scored target (a causal
    model's outputs there do not depend on later tokens). Rows are batched by length so that little padding
    is computed. `autocast` ("bfloat16") runs the forward in that precision and projects the targets onto
    the vocabulary a block at a time, the NLL taken in fp32 (see _projected_scores); None: fp32, as before.
    """
    ids, att = enc.input_ids, enc.attention_mask
    n, length = ids.shape
    correct = torch.zeros(n, length - 1, dtype=torch.bool)
    nll = torch.zeros(n, length - 1)
    dev = _device(model)
    lengths = att.sum(1)
    if positions is not None:
        target_index = torch.arange(length - 1).expand_as(positions)
        lengths = torch.minimum(lengths, torch.where(positions, target_index + 2, 0).max(1).values)
    rows = torch.arange(n) if positions is None else positions.any(1).nonzero().flatten()
    # Longest first; padding is on the right, so cutting it off leaves every real position unchanged.
    rows = rows[torch.argsort(lengths[rows], descending=True, stable=True)]
    with _eval_mode(model), autocast_context(autocast, dev):
        for lo in range(0, len(rows), batch_size):
            idx = rows[lo : lo + batch_size]
            width = max(int(lengths[idx].max()), 2)
            x = ids[idx, :width].to(dev)
            where = None if positions is None else positions[idx, : width - 1].to(dev)
            tgt = x[:, 1:] if where is None else x[:, 1:][where]
            if autocast is not None:
                batch_nll, batch_correct = _projected_scores(model, x, att[idx, :width].to(dev), where, tgt)
            else:
                masks = () if where is None else (where,)
                logits = next_token_logits(model, x, att[idx, :width].to(dev), *masks).float()
                tgt_logit = logits.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
                batch_nll, batch_correct = logits.logsumexp(-1) - tgt_logit, logits.argmax(-1) == tgt
            batch_nll, batch_correct = batch_nll.cpu(), batch_correct.cpu()
            if where is None:
                nll[idx, : width - 1] = batch_nll
                correct[idx, : width - 1] = batch_correct
            else:
                r, t = where.cpu().nonzero(as_tuple=True)
                nll[idx[r], t], correct[idx[r], t] = batch_nll, batch_correct
    valid = att[:, 1:].bool() & att[:, :-1].bool()
    return {"correct": correct & valid, "nll": torch.where(valid, nll, 0.0), "valid": valid}


def _projected_scores(model, x, attention, where, tgt, rows: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """NLL and argmax correctness of the targets `tgt`, the body's last hidden state projected `rows` at a time.

    A batch of 32 rows of 230 tokens over a 49,152-token vocabulary has 1.4 GB of fp32 logits; a block of
    positions' logits is reduced while it is in cache instead.
    """
    head = model.get_output_embeddings()
    # The body's last hidden state is after the final norm in every family privloc knows.
    hidden = model.base_model(input_ids=x, attention_mask=attention).last_hidden_state[:, :-1]
    flat = hidden.reshape(-1, hidden.shape[-1]) if where is None else hidden[where]
    flat = flat.to(execution_device(head, model))
    want = tgt.reshape(-1).to(flat.device)
    nll, correct = torch.empty(len(want), device=flat.device), torch.empty(len(want), dtype=torch.bool)
    for lo in range(0, len(want), rows):
        logits = head(flat[lo: lo + rows]).float()
        part = want[lo: lo + rows]
        nll[lo: lo + rows] = logits.logsumexp(-1) - logits.gather(-1, part.unsqueeze(-1)).squeeze(-1)
        correct[lo: lo + rows] = (logits.argmax(-1) == part).cpu()
    return nll.view(tgt.shape).to(tgt.device), correct.view(tgt.shape).to(tgt.device)


def _span_rows(enc) -> np.ndarray:
    """Row of each span, read from span_id (robust to SpanInfo.doc being a corpus-wide document id); -1 if absent."""
    rows = np.full(len(enc.spans), -1)
    r, t = (enc.span_id >= 0).nonzero(as_tuple=True)
    rows[enc.span_id[r, t].numpy()] = r.numpy()
    return rows


def span_exact_match(scores: dict, enc) -> np.ndarray:
    """Per span: every token predicted correctly from the true prefix.

    Teacher-forced argmax over the span equals greedy extraction from the true prefix, as long as all
    earlier tokens were right, so one pass is enough.
    """
    ok = (scores["correct"] & scores["valid"]).numpy()
    # wrong[r, t] = number of wrong targets among positions < t; a span's targets are [tok_start - 1, tok_end - 1).
    wrong = np.concatenate([np.zeros((ok.shape[0], 1), dtype=np.int64), np.cumsum(~ok, axis=1)], axis=1)
    rows = _span_rows(enc)
    exact = np.zeros(len(enc.spans), dtype=bool)
    for i, sp in enumerate(enc.spans):
        # A span missing from the rows or cut by truncation cannot be extracted in full.
        if rows[i] >= 0 and 1 <= sp.tok_start < sp.tok_end <= ok.shape[1] + 1:
            exact[i] = wrong[rows[i], sp.tok_end - 1] == wrong[rows[i], sp.tok_start - 1]
    return exact


def _mean(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(x.mean()) if x.size else math.nan


def leakage(model, enc, batch_size: int = 32, kinds: Sequence[str] = KINDS, autocast: str | None = None) -> dict:
    """Extraction exact match on memorised (assoc) PII, per category and per kind, and PII token accuracy.

    Only the occurrences of `kinds` are scored: `kinds=("assoc",)` gives every number but the other kinds'
    exact match for less work (fewer targets projected, rows cut after their last assoc span).
    """
    if "assoc" not in kinds or not set(kinds) <= set(KINDS):
        raise ValueError(f"kinds must be some of {KINDS}, 'assoc' among them; got {tuple(kinds)}")
    # Only targets inside PII spans decide extraction: the others need no vocabulary projection.
    codes = torch.tensor([KINDS.index(k) + 1 for k in kinds])
    scores = score_tokens(model, enc, batch_size, positions=torch.isin(enc.kind[:, 1:], codes), autocast=autocast)
    exact = span_exact_match(scores, enc)
    per_span = pd.DataFrame(
        {
            "doc": [s.doc for s in enc.spans],
            "category": [s.category for s in enc.spans],
            "kind": [s.kind for s in enc.spans],
            "subject": [s.subject for s in enc.spans],
            "text": [s.text for s in enc.spans],
            "exact": exact,
        }
    )
    per_span = per_span[per_span["kind"].isin(kinds)]
    assoc = per_span[per_span["kind"] == "assoc"]
    out = {"em_assoc": _mean(assoc["exact"]), "n_assoc": len(assoc)}
    for cat in CATEGORIES:
        out[f"em_{cat}"] = _mean(assoc.loc[assoc["category"] == cat, "exact"])
    for kind in kinds:
        out[f"em_kind_{kind}"] = _mean(per_span.loc[per_span["kind"] == kind, "exact"])
    on_assoc = scores["valid"] & (enc.kind[:, 1:] == _ASSOC)
    out["pii_token_acc"] = _mean(scores["correct"][on_assoc].numpy())
    out["per_span"] = per_span
    return out


def perplexity(model, enc, batch_size: int = 32, autocast: str | None = None) -> dict:
    """Perplexity (natural log) on non-PII targets and on all targets (`autocast`: see score_tokens)."""
    scores = score_tokens(model, enc, batch_size, autocast=autocast)
    nll, valid = scores["nll"].double(), scores["valid"]
    nonpii = valid & (enc.category[:, 1:] == 0)
    return {
        "ppl_nonpii": math.exp(nll[nonpii].mean()) if nonpii.any() else math.nan,
        "ppl_all": math.exp(nll[valid].mean()) if valid.any() else math.nan,
    }


def evaluate(model, enc_train, enc_valid, batch_size: int = 32) -> dict:
    """Memorisation on the training corpus and utility on the validation corpus, as one flat dict."""
    out = leakage(model, enc_train, batch_size)
    out.pop("per_span")
    out.update(perplexity(model, enc_valid, batch_size))
    return out
