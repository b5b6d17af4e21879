"""Comparing localisation methods at an equal neuron budget: Table 1, Fig. 5 (SPEC D9, S3)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import baselines
from .data import CATEGORIES
from .metrics import candidate_ranks, exposure_summary
from .mitigate import masked
from .pipeline import Victim, deactivation_effect, memorisation_metrics
from .synthetic import sample_values

RANKED_BASELINES = ("activation", "integrated_gradients")


def matched_top_k(ranking: np.ndarray, masker, reference_ids) -> np.ndarray:
    """The best-ranked neurons with the same count per (layer, component) as `reference_ids`.

    This is the equal budget of the comparison: a method may only choose *which* units inside each cell.
    """
    table = masker.neuron_table()
    cell = table["layer"] * len(masker.components) + table["component"]
    wanted = np.bincount(cell[np.asarray(reference_ids, dtype=np.int64)], minlength=cell.max() + 1)
    taken = np.zeros_like(wanted)
    chosen = []
    for neuron in ranking:
        c = cell[neuron]
        if taken[c] < wanted[c]:
            taken[c] += 1
            chosen.append(neuron)
            if len(chosen) == len(reference_ids):
                break
    return np.sort(np.asarray(chosen, dtype=np.int64))


def baseline_rankings(v: Victim, masker, kinds=("assoc",), ig_steps: int = 16, ig_rows: int = 64,
                      batch_size: int = 16, first_token: bool = True) -> dict:
    """Neuron rankings of the attribution baselines on the victim's PII targets.

    The PII targets are those the localisation uses (`kinds`, `first_token`), so every method sees the same
    positions. Integrated gradients costs `ig_steps` backward passes per batch, so it attributes over the first
    `ig_rows` documents that contain PII targets (DEPN also attributes over a sample of examples).
    """
    enc = v.corpus.enc_train
    pii = enc.target_mask(kinds, first_token=first_token)
    rows = pii.any(dim=1).nonzero().flatten()[:ig_rows]
    sample = enc.select(rows.tolist())
    return {
        "activation": baselines.activation_contrast(v.model, enc, masker, pii, batch_size=batch_size),
        "integrated_gradients": baselines.integrated_gradients(
            v.model, sample, masker, pii[rows], steps=ig_steps, batch_size=batch_size // 2),
    }


def candidate_sets(n: int = 200, seed: int = 0) -> dict[str, list[str]]:
    """Same-format alternatives per category for exposure; generated, so never in any training cast."""
    return {c: sample_values(c, n, seed=seed + 1) for c in CATEGORIES}


def leakage_row(v: Victim, candidates: dict, max_spans: int = 32) -> dict:
    """Exact match, perplexity, exposure and MRR of the victim as it currently is (hooks included)."""
    row = memorisation_metrics(v.model, v.corpus)
    ranks = candidate_ranks(v.model, v.corpus.enc_train, candidates, v.corpus.tokenizer, max_spans=max_spans)
    row.update({k: val for k, val in exposure_summary(ranks).items() if k in ("exposure", "mrr")})
    return row


def mitigation_rows(v: Victim, masker, neuron_sets: dict[str, list[np.ndarray]], candidates: dict,
                    max_spans: int = 32, progress: bool = True) -> pd.DataFrame:
    """One row per method: its neuron set(s) switched off (mean and std over sets, e.g. random seeds)."""
    original = leakage_row(v, candidates, max_spans)
    rows = [{"method": "original", "n_neurons": 0, **original, "em_assoc_std": 0.0, "ppl_nonpii_std": 0.0, "n_sets": 1}]
    for method, sets in tqdm(neuron_sets.items(), desc="methods", disable=not progress, leave=False):
        results = []
        for ids in sets:
            with masked(v.model, ids, masker.components):
                results.append(leakage_row(v, candidates, max_spans))
        frame = pd.DataFrame(results)
        row = {"method": method, "n_neurons": len(sets[0]), **frame.mean(numeric_only=True).to_dict(),
               "em_assoc_std": float(frame["em_assoc"].std(ddof=0)),
               "ppl_nonpii_std": float(frame["ppl_nonpii"].std(ddof=0)), "n_sets": len(sets)}
        rows.append(row)
    table = pd.DataFrame(rows)
    table["ppl_change_pct"] = 100 * (table["ppl_nonpii"] / original["ppl_nonpii"] - 1)
    return table


def effect_by_part(v: Victim, masker, neuron_sets: dict[str, np.ndarray], by: str = "layer",
                   metric: str = "em_assoc") -> pd.DataFrame:
    """`metric` of the victim with only one layer's (or one component's) part of each set switched off.

    Rows: the parts (every layer or component of `masker`); columns: (set, "neurons") and (set, metric).
    Shows where a set's effect comes from, e.g. whether a random control hurts through one layer only.
    A part holding no neuron of a set keeps the original model's value.
    """
    if by not in ("layer", "component"):
        raise ValueError(f"by must be 'layer' or 'component', not {by!r}")
    table = masker.neuron_table()
    names = [f"layer {i}" for i in range(masker.n_layer)] if by == "layer" else list(masker.components)
    # Only needed where a set leaves a part empty: one pass over the corpus saved otherwise.
    original = functools.cache(lambda: memorisation_metrics(v.model, v.corpus)[metric])
    columns = {}
    for label, ids in neuron_sets.items():
        ids = np.asarray(ids, dtype=np.int64)
        where = table[by][ids]
        inside = [ids[where == i] for i in range(len(names))]
        columns[(label, "neurons")] = [len(part) for part in inside]
        columns[(label, metric)] = [deactivation_effect(v, part, masker.components)[metric] if len(part)
                                    else original() for part in inside]
    frame = pd.DataFrame(columns, index=pd.Index(names, name=by))
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


def sensitivity(v: Victim, masker, rankings: dict[str, np.ndarray], ks, progress: bool = True) -> pd.DataFrame:
    """Exact match and perplexity as the top-k of each ranking is switched off, for every k in `ks`."""
    rows = []
    total = len(rankings) * len(ks)
    bar = tqdm(total=total, desc="sensitivity", disable=not progress, leave=False)
    for method, ranking in rankings.items():
        for k in ks:
            metrics = deactivation_effect(v, ranking[:k], masker.components)
            rows.append({"method": method, "k": int(k), "share_pct": 100 * k / masker.n_neurons,
                         "em_assoc": metrics["em_assoc"], "ppl_nonpii": metrics["ppl_nonpii"]})
            bar.update()
    bar.close()
    return pd.DataFrame(rows)
