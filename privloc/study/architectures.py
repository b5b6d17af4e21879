"""The study of notebook 08: one corpus, the same pipeline on a victim of each architecture family.

Each family's victim is trained from scratch at the profile's sizes (`ModelConfig.architecture`), localised
with Algorithm 1 under the profile's seeds, and attacked with its privacy neurons and with the two random
controls (matched per layer and component, and uniform) switched off: the numbers beside GPT-2's.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from privloc import artifacts
from privloc.config import Profile
from privloc.method import families
from privloc.study import method_comparison, state_attacks
from privloc.study import pipeline as pipe
from privloc.study.plots import style

METRICS = ("em_assoc", "leak_any", "leak_beam", "leak_logit_lens", "ppl_nonpii")


def family_profile(profile: Profile, architecture: str) -> Profile:
    """`profile` with victims of `architecture` (a from-scratch model of the same sizes)."""
    families.get(architecture)  # an unknown name is refused with the known ones
    return replace(profile, model=replace(profile.model, architecture=architecture))


def _train(source: str, profile: Profile) -> None:
    pipe.victim(source, profile, progress=False)


def prepare(source: str, profile: Profile, architectures, workers: int | None = None) -> None:
    """Train the victims of every family the cache lacks, one process per core (each trains on one thread)."""
    profiles = [family_profile(profile, a) for a in architectures]
    data = pipe.corpus(source, profiles[0])  # built once, before the workers share it
    todo = [p for p in profiles if not artifacts.is_cached(*pipe._victim_folder(data, p, False))]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(workers or cores, len(todo))
    if workers <= 1 or profiles[0].device != "cpu":
        for p in todo:
            _train(source, p)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(_train, source, p) for p in todo]:
            future.result()


def study(source: str, profile: Profile, architectures, progress: bool = True) -> dict:
    """Per family: the victim, its localisations, and one row per seed of the metrics of every neuron set."""
    out = {}
    for name in architectures:
        p = family_profile(profile, name)
        v = pipe.victim(source, p, progress=progress)
        runs = pipe.localizations(source, p, progress=progress)
        original = state_attacks.state_row(v, profile=p)
        rows = []
        for run in runs:
            states = {label: state_attacks.state_row(v, p, ids, run.masker.components)
                      for label, ids in method_comparison.control_sets(run).items()}
            rows.append({"dataset": name, "seed": run.config.seed, "neurons": len(run.closed_ids()),
                         "share_pct": 100 * run.share_closed, "localize_seconds": run.seconds,
                         **{f"{m}_{label}": s[m] for label, s in {"original": original, **states}.items()
                            for m in METRICS}})
        out[name] = {"victim": v, "runs": runs, "per_seed": pd.DataFrame(rows),
                     "parameters": sum(t.numel() for t in v.model.parameters())}
    return out


def summary_table(results: dict) -> pd.DataFrame:
    """Table 6: one row per family (means over seeds), with each control's share of our leak_any drop."""
    per_seed = pd.concat([r["per_seed"] for r in results.values()], ignore_index=True)
    ratios = method_comparison.control_ratios(per_seed, metrics=("leak_any",)).set_index("dataset")
    gpt2_seconds = results["gpt2"]["victim"].train_seconds if "gpt2" in results else np.nan
    rows = []
    for name, r in results.items():
        mean = r["per_seed"].drop(columns=["dataset", "seed"]).mean()
        q = ratios.loc[name]
        rows.append({"architecture": name, "parameters": r["parameters"],
                     "n_gated": r["runs"][0].masker.n_neurons, "n_neurons": mean["neurons"],
                     "train_seconds": r["victim"].train_seconds,
                     "train_seconds_over_gpt2": r["victim"].train_seconds / gpt2_seconds,
                     **mean[[c for c in mean.index if c.split("_")[0] in ("em", "leak", "ppl")]].to_dict(),
                     "leak_any_privloc_std": float(r["per_seed"]["leak_any_privloc"].std(ddof=0)),
                     "share_random": q["share_random"], "share_random_uniform": q["share_random_uniform"],
                     "within_random": q["within_random"], "within_random_uniform": q["within_random_uniform"],
                     "localize_seconds": mean["localize_seconds"]})
    return pd.DataFrame(rows)


def placement(results: dict, by: str) -> pd.DataFrame:
    """Share of each family's privacy neurons per layer (`by="layer"`) or per component, mean over seeds.

    Layers are given as a fraction of the depth when families differ in depth; here they share the sizes.
    """
    frames = {}
    for name, r in results.items():
        shares = []
        for run in r["runs"]:
            counts = run.masker.counts(run.closed_ids())
            part = counts.loc[counts.index != "total", "total"] if by == "layer" else \
                counts.loc["total", list(run.masker.components)]
            shares.append(part / max(1, counts.loc["total", "total"]))
        frames[name] = pd.concat(shares, axis=1).mean(axis=1)
    table = pd.DataFrame(frames)
    table.index.name = by
    return table


def plot(table: pd.DataFrame, layers: pd.DataFrame, components: pd.DataFrame):
    """Fig. 8: where the privacy neurons sit (layers, components) and leak_any after each set, per family."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    names = list(table["architecture"])
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        kw = style(i)
        for ax, frame in ((axes[0], layers), (axes[1], components)):
            x = np.arange(len(frame)) + (i - (len(names) - 1) / 2) * width
            ax.bar(x, frame[name].to_numpy(), width, label=name, color=kw.get("color"))
    axes[0].set(xticks=range(len(layers)), xticklabels=[str(i) for i in layers.index], xlabel="layer",
                ylabel="share of privacy neurons", title="per layer")
    axes[1].set(xticks=range(len(components)), xticklabels=list(components.index), title="per component")
    axes[1].tick_params(axis="x", rotation=30)
    sets = (("original", "original"), ("privloc", "ours"), ("random", "random (matched)"),
            ("random_uniform", "random (uniform)"))
    w = 0.8 / len(sets)
    for j, (key, label) in enumerate(sets):
        x = np.arange(len(names)) + (j - (len(sets) - 1) / 2) * w
        axes[2].bar(x, table[f"leak_any_{key}"], w, label=label, color=f"C{j}")
    axes[2].set(xticks=range(len(names)), xticklabels=names, ylim=(0, 1.05), ylabel="leak_any",
                title="leakage after switching each set off")
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def findings(table: pd.DataFrame, layers: pd.DataFrame, components: pd.DataFrame, source: str,
             budget: int, target_em: float = 0.8) -> list[str]:
    """The "what we found" lines, every number from the run."""
    lines = []
    mlp = components.loc[[c for c in components.index if c.startswith("mlp.")]].sum()
    for r in table.itertuples():
        n_layers_used = int((layers[r.architecture] > 0).sum())
        top_layer = int(layers[r.architecture].to_numpy().argmax())
        memorised = "memorises" if r.em_assoc_original >= target_em else "does **not** memorise"
        judged = r.share_random == r.share_random  # NaN when our mask removed nothing
        verdict = ("within both random controls' bounds" if r.within_random and r.within_random_uniform else
                   "outside the random controls' bounds" if judged else
                   "the controls' bounds cannot be judged: our drop is none")
        lines.append(
            f"- **{r.architecture}** ({r.parameters:,} parameters, {r.train_seconds:.0f} s of training, "
            f"{r.train_seconds_over_gpt2:.2f}× GPT-2's): the victim {memorised} `{source}` (greedy exact match "
            f"{r.em_assoc_original:.3f}, `leak_any` {r.leak_any_original:.3f}). Its {r.n_neurons:.0f} privacy "
            f"neurons ({100 * r.n_neurons / r.n_gated:.1f}% of {r.n_gated:,} gated units) sit in "
            f"{n_layers_used} of {len(layers)} layers (most in layer {top_layer}, "
            f"{100 * layers[r.architecture].max():.0f}%) and {100 * mlp[r.architecture]:.0f}% in the MLP. "
            f"Switched off they take `leak_any` (B = {budget}) to {r.leak_any_privloc:.3f} ± "
            f"{r.leak_any_privloc_std:.3f} and greedy exact match to {r.em_assoc_privloc:.3f}; matched random "
            f"neurons leave `leak_any` {r.leak_any_random:.3f}, uniform ones {r.leak_any_random_uniform:.3f} "
            f"({verdict}). Non-PII perplexity {r.ppl_nonpii_original:.3f} → "
            f"{r.ppl_nonpii_privloc:.3f}.")
    return lines
