"""The attack suite: leakage as an attacker with a budget of B tries measures it.

The choices behind it are explained in docs/method.md, "Metrics and the attack suite".

Every sampled memorised (`assoc`) span is attacked from its true prefix:

- ``greedy``: greedy decoding reproduces the span (B = 1; what notebook 02 calls exact match);
- ``beam``: the span is among the B beams of a B-beam search;
- ``sample``: the span is among B top-k samples (Lukas et al.). One draw reproduces it with probability
  p = Π_t p̃(x_t), the renormalised top-k probabilities along the teacher-forced span, so B draws succeed
  with probability 1 − (1 − p)^B: the expectation, exact, without sampling noise;
- ``candidates``: the truth is ranked ≤ B among K same-category candidates by likelihood in context;
- ``logit_lens`` (white-box; Patil, Hase & Bansal's head projection): every token of the span is within the
  top B of the final norm and unembedding applied to some block's output;
- ``any``: the span falls to at least one black-box attack (greedy, beam, sample, candidates): the headline;
- ``candidates_low``: the truth is among the B *least* likely of the same K + 1 strings. A removal that buries
  the truth far below every alternative gives it away as surely as one that leaves it on top, so this bottom
  tail is reported beside the top one (same chance, B/(K + 1)). It reads the same exact ranks and costs
  nothing more; it is not part of ``any``, whose meaning stays that of the figures.

Greedy, sample and the logit lens read one teacher-forced pass and are scored on `pass_spans` spans; beam
search and candidate ranking cost more and run on the first `search_spans` of them, where ``any`` is scored.

In fp32 every number is computed as the figures were, bit for bit. `autocast="bfloat16"` (for pretrained
models of ~100M parameters on a CPU) runs the forward passes in bf16 and takes the cheaper paths that equal
the fp32 ones only in exact arithmetic (batch order, projections of the needed positions only); ranks and
log-probabilities are still taken in fp32 from the bf16 logits.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from privloc import devices
from privloc.config import AttackConfig
from privloc.corpora.data import CATEGORIES
from privloc.method.candidates import CandidateSets, chance_exposure, chance_mrr, exposure_from_rank
from privloc.method.decoding import beam_finds, device_of, rank_among
from privloc.method.lens import block_outputs, lens_logits, lens_parts, span_lens  # noqa: F401 (lens_logits: API)
from privloc.method.tokenizer import Encoded

BLACK_BOX = ("greedy", "beam", "sample", "candidates")
ATTACKS = (*BLACK_BOX, "logit_lens")


def sample_spans(enc: Encoded, n: int | None, seed: int = 0, rows=None) -> list[int]:
    """Indices of up to `n` (None: all) assoc spans in a seeded random order (any first m are a sample too).

    Only spans whose row is in the corpus and not cut by truncation qualify; `rows` limits them to those
    documents (held-out contexts). The order depends only on the corpus, the rows and the seed, so every
    model state is attacked on the same spans.
    """
    allowed = None if rows is None else set(int(r) for r in rows)
    length = enc.input_ids.shape[1]
    eligible = [i for i, s in enumerate(enc.spans)
                if s.kind == "assoc" and 1 <= s.tok_start < s.tok_end <= length
                and (allowed is None or s.doc in allowed)]
    order = np.random.default_rng(seed).permutation(len(eligible))
    return [eligible[j] for j in (order if n is None else order[:n])]


def _pass_order(enc: Encoded, by_row: dict[int, list[int]], lean: bool) -> list[int]:
    """The rows of the teacher-forced pass in batch order.

    A causal model's outputs at a position do not depend on later tokens, so a batch runs only up to its
    last span's end. Sorted by that end, batches hold rows of like width: on the 135M model's corpora that
    computes ~25% fewer positions than the sort by document length, which the fp32 figures were made with
    and which fp32 keeps (a batch's make-up can move a logit by a rounding error).
    """
    if lean:
        return sorted(by_row, key=lambda r: -max(enc.spans[i].tok_end for i in by_row[r]))
    return sorted(by_row, key=lambda r: -int(enc.attention_mask[r].sum()))


@torch.no_grad()
def token_attacks(model, enc: Encoded, spans: list[int], cfg: AttackConfig, batch_size: int = 32,
                  autocast: str | None = None) -> pd.DataFrame:
    """Greedy, closed-form sampling and logit-lens results of each span, from one teacher-forced pass.

    `autocast` ("bfloat16"; None: fp32) runs the pass and the lens projections in that precision; the
    sampling log-probabilities are then taken in fp32 from the low-precision logits.
    """
    _, _, norm, head = lens_parts(model)
    dev = device_of(model)
    lens_dev = devices.execution_device(norm, model)
    by_row: dict[int, list[int]] = {}
    for i in spans:
        by_row.setdefault(enc.spans[i].doc, []).append(i)
    rows = _pass_order(enc, by_row, lean=autocast is not None)
    records = {}
    was_training = model.training
    model.eval()
    try:
        with devices.autocast(autocast, dev):
            for lo in range(0, len(rows), batch_size):
                chunk = rows[lo: lo + batch_size]
                width = max(enc.spans[i].tok_end for r in chunk for i in by_row[r])
                ids = enc.input_ids[chunk, :width].to(dev)
                hidden = block_outputs(model, ids, enc.attention_mask[chunk, :width].to(dev))
                for b, r in enumerate(chunk):
                    for i in by_row[r]:
                        records[i] = _span_token_attacks(enc.spans[i], ids[b], [h[b] for h in hidden], norm, head,
                                                         lens_dev, cfg)
    finally:
        model.train(was_training)
    return pd.DataFrame([records[i] for i in spans], index=pd.Index(spans, name="span"))


def _span_token_attacks(s, ids: torch.Tensor, hidden: list[torch.Tensor], norm, head, lens_dev,
                        cfg: AttackConfig) -> dict:
    dev = ids.device
    t = torch.arange(s.tok_start - 1, s.tok_end - 1, device=dev)
    truth = ids[t + 1]
    # Only the span's positions are projected onto the vocabulary, at every layer. A dispatched model's
    # blocks sit on several devices: the lens runs where the final norm does.
    stacked = torch.stack([h[t.to(h.device)].to(lens_dev) for h in hidden])
    ranks, last = span_lens(stacked, truth, norm, head)  # [layers, L], [L, V]
    final = last.float().to(dev) / cfg.temperature
    kth = final.topk(min(cfg.top_k, final.shape[-1]), dim=-1).values[:, -1:]
    # Top-k keeps every token at or above the k-th logit (as transformers' sampler does).
    kept = torch.where(final >= kth, final, torch.full_like(final, float("-inf")))
    log_p = (kept.gather(-1, truth.unsqueeze(-1)).squeeze(-1) - kept.logsumexp(-1)).sum()
    return {"greedy": bool((final.argmax(-1) == truth).all()), "log_p_sample": float(log_p),
            "lens_rank_max": int(ranks.min(0).values.max())}


def _prefix_and_truth(enc: Encoded, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    s = enc.spans[i]
    return enc.input_ids[s.doc, : s.tok_start], enc.input_ids[s.doc, s.tok_start: s.tok_end]


def beam_attack(model, enc: Encoded, spans: list[int], width: int, autocast: str | None = None) -> np.ndarray:
    """Whether each span is among the `width` beams of a `width`-beam search from its true prefix."""
    prefixes, truths = zip(*(_prefix_and_truth(enc, i) for i in spans), strict=True) if spans else ((), ())
    with devices.autocast(autocast, device_of(model)):
        return np.array(beam_finds(model, list(prefixes), list(truths), width), dtype=bool)


def candidate_attack(model, enc: Encoded, spans: list[int], candidates: CandidateSets,
                     autocast: str | None = None) -> pd.DataFrame:
    """Rank of each span's truth among its length-matched candidates (ties count half) and how many were ranked."""
    prefixes, truths, others = [], [], []
    for i in spans:
        prefix, truth = _prefix_and_truth(enc, i)
        prefixes.append(prefix)
        truths.append(truth)
        others.append(candidates.for_span(i, enc.spans[i].category, enc.spans[i].text, truth.tolist()))
    with devices.autocast(autocast, device_of(model)):
        ranks = rank_among(model, prefixes, truths, others) if spans else []
    return pd.DataFrame(ranks, columns=["cand_rank", "n_ranked"], index=pd.Index(spans, name="span"))


@dataclass
class AttackResult:
    per_span: pd.DataFrame  # one row per attacked span (see attack_suite)
    config: AttackConfig
    seconds: float
    # Seconds of each part of the run (the teacher-forced pass, each beam width, the candidates).
    parts: dict[str, float] = field(default_factory=dict)

    def summary(self, budget: int | None = None) -> dict:
        return summarize(self.per_span, budget or self.config.budget)


def attack_suite(model, enc: Encoded, candidates: CandidateSets, cfg: AttackConfig, rows=None,
                 beam_widths: tuple[int, ...] | None = None, progress: bool = False,
                 autocast: str | None = None) -> AttackResult:
    """Every attack on the spans of `enc` chosen by `sample_spans` (limited to `rows` if given).

    `beam_widths` are the beam searches run (default: the budget only; `()`: none). The budget sweep needs one
    search per width; the other attacks read every budget off one run. `autocast` ("bfloat16") runs every
    forward pass in that precision (see token_attacks and search); None takes the config's `autocast` field
    if it has one, else fp32, in which the results are those the figures were made with, bit for bit.
    """

    start = time.perf_counter()
    autocast = autocast or getattr(cfg, "autocast", None)
    widths = (cfg.budget,) if beam_widths is None else tuple(sorted(set(beam_widths)))
    spans = sample_spans(enc, cfg.pass_spans, cfg.seed, rows)
    search = spans[: cfg.search_spans]
    steps = tqdm(total=2 + len(widths), desc="attacks", disable=not progress, leave=False)
    parts = {}
    # One autocast context around every attack: torch casts the weights to the low precision once in it.
    with devices.autocast(autocast, device_of(model)):
        frame = token_attacks(model, enc, spans, cfg, autocast=autocast)
        parts["token_pass"] = time.perf_counter() - start
        steps.update()
        frame["category"] = [enc.spans[i].category for i in spans]
        frame["text"] = [enc.spans[i].text for i in spans]
        frame["n_tokens"] = [enc.spans[i].tok_end - enc.spans[i].tok_start for i in spans]
        frame["in_search"] = frame.index.isin(search)
        for w in widths:
            lap = time.perf_counter()
            frame[f"beam_{w}"] = pd.Series(beam_attack(model, enc, search, w, autocast), index=search,
                                           dtype="boolean")
            parts[f"beam_{w}"] = time.perf_counter() - lap
            steps.update()
        lap = time.perf_counter()
        frame = frame.join(candidate_attack(model, enc, search, candidates, autocast))
        parts["candidates"] = time.perf_counter() - lap
    steps.update()
    steps.close()
    return AttackResult(frame, cfg, time.perf_counter() - start, parts)


def _sample_success(log_p: pd.Series, budget: int) -> pd.Series:
    p = np.exp(log_p.to_numpy(dtype=float))
    return pd.Series(-np.expm1(budget * np.log1p(-np.minimum(p, 1.0 - 1e-12))), index=log_p.index)


def _success(frame: pd.DataFrame, budget: int) -> pd.DataFrame:
    """Per span and attack, the success (or its probability, for sampling) at `budget`."""
    out = pd.DataFrame(index=frame.index)
    out["greedy"] = frame["greedy"].astype(float)
    out["sample"] = _sample_success(frame["log_p_sample"], budget)
    out["logit_lens"] = (frame["lens_rank_max"] <= budget).astype(float)
    beam = f"beam_{budget}"
    out["beam"] = frame[beam].astype(float) if beam in frame else np.nan
    out["candidates"] = np.where(frame["cand_rank"].notna(), (frame["cand_rank"] <= budget).astype(float), np.nan)
    # The rank from the bottom: ties count half both ways, so it is n + 1 − the rank from the top.
    from_bottom = frame["n_ranked"] + 1 - frame["cand_rank"]
    out["candidates_low"] = np.where(frame["cand_rank"].notna(), (from_bottom <= budget).astype(float), np.nan)
    found = out.loc[frame["in_search"], ["greedy", "beam", "candidates"]].max(axis=1)
    # A deterministic attack that finds the span settles it; otherwise the sampler may still.
    out["any"] = np.nan
    out.loc[frame["in_search"], "any"] = np.where(found >= 1, 1.0, out.loc[frame["in_search"], "sample"])
    return out


def summarize(frame: pd.DataFrame, budget: int) -> dict:
    """Leakage per attack (mean success) at `budget`, per category for `any`, exposure and MRR with chance."""
    success = _success(frame, budget)
    search = frame[frame["in_search"]]
    ranked = search.dropna(subset=["cand_rank"])
    out = {f"leak_{a}": float(success[a].mean()) for a in ATTACKS if success[a].notna().any()}
    out["leak_any"] = float(success["any"].mean())
    out["leak_candidates_low"] = float(success["candidates_low"].mean())
    out["budget"] = budget
    out["n_pass_spans"], out["n_search_spans"] = len(frame), len(search)
    out["leak_candidates_chance"] = float(np.mean(np.minimum(budget, ranked["n_ranked"]) / ranked["n_ranked"]))
    out.update(exposure_table(ranked))
    for cat in CATEGORIES:
        here = success.loc[search.index][search["category"] == cat]
        out[f"leak_any_{cat}"] = float(here["any"].mean()) if len(here) else math.nan
    return out


def exposure_table(ranked: pd.DataFrame) -> dict:
    """Mean exposure and MRR of ranked spans, each with its chance value for the same candidate-set sizes."""
    if ranked.empty:
        return {k: math.nan for k in ("exposure", "exposure_chance", "exposure_max", "mrr", "mrr_chance", "n_ranked")}
    n = ranked["n_ranked"].astype(int)
    return {
        "exposure": float(np.mean([exposure_from_rank(r, k) for r, k in zip(ranked["cand_rank"], n, strict=True)])),
        "exposure_chance": float(np.mean([chance_exposure(k) for k in n])),
        "exposure_max": float(np.mean(np.log2(n))),
        "mrr": float(np.mean(1.0 / ranked["cand_rank"])),
        "mrr_chance": float(np.mean([chance_mrr(k) for k in n])),
        "n_ranked": float(n.mean()),
    }


def budget_sweep(frame: pd.DataFrame, budgets) -> pd.DataFrame:
    """Leakage per attack at each budget (beam only where a search of that width was run)."""
    rows = []
    for b in budgets:
        s = _success(frame, b)
        rows.append({"budget": b, **{a: float(s[a].mean()) for a in (*ATTACKS, "any")}})
    return pd.DataFrame(rows)
