"""Comparing localisation methods at an equal neuron budget: Table 1, Fig. 5 (docs/method.md, "Baselines")."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from privloc import devices
from privloc.config import Profile
from privloc.method import baselines
from privloc.study.pipeline import Victim, deactivation_effect, memorisation_metrics
from privloc.study.state_attacks import prepare, state_row

RANKED_BASELINES = ("activation", "integrated_gradients")
# Metrics whose spread over neuron sets (seeds) Table 1 reports as `<metric>_std`.
SPREAD = ("em_assoc", "ppl_nonpii", "leak_any", "leak_beam", "leak_sample", "leak_candidates", "leak_logit_lens")


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
                      batch_size: int = 16, first_token: bool = True, autocast: str | None = None) -> dict:
    """Neuron rankings of the attribution baselines on the victim's PII targets.

    The PII targets are those the localisation uses (`kinds`, `first_token`), so every method sees the same
    positions. Integrated gradients costs `ig_steps` backward passes per batch, so it attributes over the first
    `ig_rows` documents that contain PII targets (DEPN also attributes over a sample of examples). `autocast`
    ("bfloat16") runs both methods' passes in that precision (the pretrained victim); None: fp32.
    """
    enc = v.corpus.enc_train
    pii = enc.target_mask(kinds, first_token=first_token)
    rows = pii.any(dim=1).nonzero().flatten()[:ig_rows]
    sample = enc.select(rows.tolist())
    with devices.autocast(autocast, devices.main_device(v.model)):
        return {
            "activation": baselines.activation_contrast(v.model, enc, masker, pii, batch_size=batch_size),
            "integrated_gradients": baselines.integrated_gradients(
                v.model, sample, masker, pii[rows], steps=ig_steps, batch_size=batch_size // 2),
        }


def first_seed_states(run, rankings: dict[str, np.ndarray]) -> dict[str, np.ndarray | None]:
    """The states of one localisation run that Table 4 attacks at every budget: the victim, our mask and its
    controls, and each baseline's ranking matched to our mask."""
    controls = control_sets(run)
    return {"original": None, **controls,
            **{m: matched_top_k(r, run.masker, controls["privloc"]) for m, r in rankings.items()}}


def mitigation_rows(v: Victim, neuron_sets: dict[str, list[np.ndarray]], components, profile: Profile,
                    progress: bool = True) -> pd.DataFrame:
    """One row per method: its neuron set(s) switched off, every metric and attack (mean and std over sets).

    The first row is the victim itself (`original`). Each set is one model state of the attack suite,
    cached (state_attacks.attack), so states that notebook 03 already attacked are read back.
    """
    prepare(profile, [(v, None, components)] + [(v, ids, components) for sets in neuron_sets.values() for ids in sets],
            progress=progress)
    original = state_row(v, profile, None, components)
    rows = [{"method": "original", "n_neurons": 0, **original, "n_sets": 1,
             **{f"{m}_std": 0.0 for m in SPREAD}}]
    for method, sets in tqdm(neuron_sets.items(), desc="methods", disable=not progress, leave=False):
        frame = pd.DataFrame([state_row(v, profile, ids, components) for ids in sets])
        rows.append({"method": method, "n_neurons": len(sets[0]), **frame.mean(numeric_only=True).to_dict(),
                     **{f"{m}_std": float(frame[m].std(ddof=0)) for m in SPREAD}, "n_sets": len(sets)})
    table = pd.DataFrame(rows)
    table["ppl_change_pct"] = 100 * (table["ppl_nonpii"] / original["ppl_nonpii"] - 1)
    return table


# The columns of Table 1 a reader compares (its Markdown); the CSV keeps every one.
TABLE1_SHOWN = ["dataset", "method", "n_neurons", "leak_greedy", "leak_beam", "leak_sample", "leak_candidates",
                "leak_any", "leak_logit_lens", "mrr", "ppl_change_pct"]


# Largest share of our drop in leak_any that each random control may reach (the attack-suite issue's decision).
CONTROL_BOUNDS = {"random_uniform": 0.1, "random": 0.2}


def control_ratios(per_seed: pd.DataFrame, metrics=("leak_any", "em_assoc")) -> pd.DataFrame:
    """Per dataset and metric: the drop from the original of ours and of each control (mean over seeds),
    the control's drop as a share of ours, and whether it is within its bound (judged on leak_any)."""
    rows = []
    for name, frame in per_seed.groupby("dataset", sort=False):
        for metric in metrics:
            mean = frame[[c for c in frame if c.startswith(f"{metric}_")]].mean()
            drop = {label: mean[f"{metric}_original"] - mean[f"{metric}_{label}"]
                    for label in ("privloc", *CONTROL_BOUNDS)}
            row = {"dataset": name, "metric": metric, "original": mean[f"{metric}_original"],
                   **{f"drop_{k}": d for k, d in drop.items()}}
            for label, bound in CONTROL_BOUNDS.items():
                share = drop[label] / drop["privloc"] if drop["privloc"] > 0 else np.nan
                row[f"share_{label}"], row[f"bound_{label}"] = share, bound
                row[f"within_{label}"] = bool(share < bound) if metric == "leak_any" else None
            rows.append(row)
    return pd.DataFrame(rows)


def control_sets(run) -> dict[str, np.ndarray]:
    """Ours and the two random controls of one localisation (random seed = localisation seed)."""
    ids = run.closed_ids()
    return {"privloc": ids, "random": baselines.random_matched(run.masker, ids, seed=run.config.seed),
            "random_uniform": baselines.random_uniform(run.masker, len(ids), seed=run.config.seed)}


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


def sensitivity(v: Victim, masker, rankings: dict[str, np.ndarray], ks, profile: Profile, attack_ks=(),
                progress: bool = True) -> pd.DataFrame:
    """Exact match and perplexity as the top-k of each ranking is switched off, for every k in `ks`.

    At the k of `attack_ks` the whole attack suite runs too (column `leak_any`; NaN elsewhere).
    """
    prepare(profile, [(v, ranking[:k], masker.components) for ranking in rankings.values() for k in ks
                      if k in attack_ks], progress=progress)
    rows = []
    precision = profile.attack.autocast  # the passes outside the suite run as its own do
    bar = tqdm(total=len(rankings) * len(ks), desc="sensitivity", disable=not progress, leave=False)
    for method, ranking in rankings.items():
        for k in ks:
            if k in attack_ks:
                metrics = state_row(v, profile, ranking[:k], masker.components)
            else:
                metrics = deactivation_effect(v, ranking[:k], masker.components, precision)
            rows.append({"method": method, "k": int(k), "share_pct": 100 * k / masker.n_neurons,
                         "em_assoc": metrics["em_assoc"], "ppl_nonpii": metrics["ppl_nonpii"],
                         "leak_any": metrics.get("leak_any", np.nan)})
            bar.update()
    bar.close()
    return pd.DataFrame(rows)
