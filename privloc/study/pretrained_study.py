"""Notebook 10: the study on a pretrained language model fine-tuned on a PII corpus (SmolLM2-135M).

The pieces the small victims' notebooks use (pipeline, compare, assess) run unchanged on the pretrained victim;
this module holds what only notebook 10 needs: the memorisation curve per epoch beside the validation cast,
the figure of where the privacy neurons sit across its 30 layers, the held-out contexts, and "What we found"
written from the run.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from privloc.corpora.data import CATEGORIES
from privloc.study import state_attacks
from privloc.study.plots import OKABE_ITO

LEAKS = ("leak_greedy", "leak_beam", "leak_sample", "leak_candidates", "leak_any", "leak_logit_lens")


def memorisation_table(victims: dict) -> pd.DataFrame:
    """One row per dataset and evaluation (one per epoch): exact match of the memorisable PII overall and per
    category, of the validation cast (never seen), and non-PII perplexity."""
    rows = []
    for name, v in victims.items():
        every = v.history[0]["step"]
        for record in v.history:
            rows.append({"dataset": name, "epoch": record["step"] / every, "step": record["step"],
                         "train_loss": record["train_loss"], "em_assoc": record["em_assoc"],
                         **{f"em_{c}": record.get(f"em_{c}") for c in CATEGORIES},
                         "em_assoc_valid": record.get("em_assoc_valid"), "ppl_nonpii": record["ppl_nonpii"],
                         "train_seconds": record["train_seconds"]})
    return pd.DataFrame(rows)


def plot_memorisation(table: pd.DataFrame, target: float):
    """Exact match per epoch: every category, the overall curve, and the never-seen validation cast."""
    names = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names, strict=True):
        d = table[table["dataset"] == name]
        for i, c in enumerate(c for c in CATEGORIES if d[f"em_{c}"].notna().any()):
            ax.plot(d["epoch"], d[f"em_{c}"], marker="o", ms=3, lw=1, color=OKABE_ITO[(i + 1) % len(OKABE_ITO)],
                    label=c)
        ax.plot(d["epoch"], d["em_assoc"], color="black", lw=2.5, label="all (training cast)")
        ax.plot(d["epoch"], d["em_assoc_valid"], color="black", lw=1.5, ls="--", label="validation cast")
        ax.axhline(target, color="grey", lw=0.8, ls=":")
        ax.set(title=name, xlabel="epoch", ylim=(-0.03, 1.03), xticks=d["epoch"])
    axes[0][0].set_ylabel("greedy exact match, memorisable PII")
    axes[0][-1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def plot_layers(shares: pd.DataFrame, components: pd.DataFrame):
    """Where the privacy neurons sit: share per layer (bars: mean over runs, points: each run), and the
    fraction of each component's units that are privacy neurons."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [2.6, 1]})
    mean = shares.groupby("layer")["share"].mean()
    left.bar(mean.index, mean.to_numpy(), color="#DDDDDD", edgecolor="black", width=0.7, label="mean over runs")
    for i, ((name, seed), run) in enumerate(shares.groupby(["dataset", "seed"], sort=False)):
        left.scatter(run["layer"] + (i - 0.5) * 0.15, run["share"], s=12, zorder=3,
                     color=OKABE_ITO[(i + 1) % len(OKABE_ITO)], label=f"{name}, seed {seed}")
    left.axhline(1 / len(mean), color="grey", lw=0.8, ls=":", label="uniform over layers")
    left.set(xlabel="layer", ylabel="share of privacy neurons", title="privacy neurons per layer")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.legend(fontsize=7, frameon=False, ncol=2)
    per = components.groupby("component", sort=False)[["count", "size"]].sum()
    right.bar(per.index, per["count"] / per["size"], color="#0072B2")
    right.set(ylabel="fraction of the component's units", title="per component")
    right.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def held_out(v, run, cfg) -> pd.DataFrame:
    """Every attack on the documents a holdout localisation learned on and on the other documents of the same
    people, with its privacy neurons switched off and with none (Table 1 has the random controls)."""
    from privloc.study.pipeline import holdout_split

    parts = dict(zip(("learned documents", "held-out documents"), holdout_split(v.corpus, run), strict=True))
    sets = {"original": None, "privloc": run.closed_ids()}
    rows = []
    for label, ids in sets.items():
        for part, doc_rows in parts.items():
            summary = state_attacks.attack(v, cfg, ids, run.masker.components, rows=doc_rows).summary()
            rows.append({"set": label, "documents": part, "n_docs": len(doc_rows),
                         "n_spans": summary["n_pass_spans"], **{k: summary[k] for k in LEAKS}})
    return pd.DataFrame(rows)


def table1_columns(table: pd.DataFrame) -> pd.DataFrame:
    """`table` (method_comparison.mitigation_rows of several datasets) with the columns of Table 1, in its order."""
    present = [c for c in CATEGORIES if f"em_{c}" in table and table[f"em_{c}"].notna().any()]
    columns = (["dataset", "method", "n_neurons", "em_assoc", "em_assoc_std", "exposure", "mrr", "ppl_nonpii",
                "ppl_change_pct", "ppl_nonpii_std", "n_sets", *[f"em_{c}" for c in present], "n_gated", *LEAKS,
                "leak_any_std", "leak_candidates_chance", "exposure_chance", "mrr_chance", "n_pass_spans",
                "n_search_spans", *[f"leak_any_{c}" for c in present]])
    return table[columns]


def _broken(mitigation: pd.DataFrame, methods: list[str]) -> str:
    """A sentence naming the methods whose perplexity more than doubled: their leakage is a broken model's."""
    broken = [m for m in methods if _row(mitigation, m)["ppl_change_pct"] > 100]
    if not broken:
        return ""
    return (f" At this budget {', '.join(broken)} more than double the non-PII perplexity: such a model no longer "
            "models language, so its low leakage says nothing about removal.")


def _row(table: pd.DataFrame, method: str) -> pd.Series:
    return table.set_index("method").loc[method]


def findings(name: str, memo: pd.DataFrame, mitigation: pd.DataFrame, shares: pd.DataFrame,
             components: pd.DataFrame, sensitivity: pd.DataFrame, calibration: pd.DataFrame,
             heldout: pd.DataFrame | None, budget: int, target: float, n_layer: int) -> list[str]:
    """The answers of notebook 10, as Markdown bullets, read off the run's tables."""
    last = memo[memo["dataset"] == name].iloc[-1]
    lines = [f"- **Memorisation** ({name}): greedy exact match of the memorisable PII "
             + " → ".join(f"{x:.2f}" for x in memo[memo["dataset"] == name]["em_assoc"])
             + f" over {len(memo[memo['dataset'] == name])} epochs; the never-seen validation cast "
             f"{last['em_assoc_valid']:.2f}. "
             + ("The victim memorised its PII" if last["em_assoc"] >= target
                else f"**Below the {target:.0%} target**") + f" (non-PII perplexity {last['ppl_nonpii']:.2f})."]
    runs = shares.groupby(["dataset", "seed"])
    layers_hit = [int((run["count"] > 0).sum()) for _, run in runs]
    per = components.groupby("component", sort=False)[["count", "size"]].sum()
    mlp = per[per.index.str.startswith("mlp")]["count"].sum() / per["count"].sum()
    lines.append(f"- **All layers?** Layers holding a privacy neuron: {', '.join(map(str, layers_hit))} of "
                 f"{n_layer} ({len(layers_hit)} runs). **Mostly MLP?** {mlp:.0%} of them are MLP units (the MLP "
                 f"holds {per[per.index.str.startswith('mlp')]['size'].sum() / per['size'].sum():.0%} of the gated "
                 "units); per component, the fraction of units: "
                 + ", ".join(f"{c} {r['count'] / r['size']:.3f}" for c, r in per.iterrows()) + ".")
    original, ours = _row(mitigation, "original"), _row(mitigation, "privloc")
    others = [m for m in mitigation["method"] if m not in ("original", "privloc")]
    lines.append(
        f"- **Mitigation at {int(ours['n_neurons'])} units** (B = {budget}): greedy {original['leak_greedy']:.3f} → "
        f"**{ours['leak_greedy']:.3f}**, beam {original['leak_beam']:.3f} → {ours['leak_beam']:.3f}, sampling "
        f"{original['leak_sample']:.3f} → {ours['leak_sample']:.3f}, candidates {original['leak_candidates']:.3f} → "
        f"{ours['leak_candidates']:.3f} (chance {ours['leak_candidates_chance']:.3f}), logit lens "
        f"{original['leak_logit_lens']:.3f} → {ours['leak_logit_lens']:.3f}; **`leak_any` "
        f"{original['leak_any']:.3f} → {ours['leak_any']:.3f}** at {ours['ppl_change_pct']:+.1f}% non-PII "
        "perplexity. The same budget elsewhere: "
        + "; ".join(f"{m} `leak_any` {_row(mitigation, m)['leak_any']:.3f}, greedy {_row(mitigation, m)['leak_greedy']:.3f} "
                    f"({_row(mitigation, m)['ppl_change_pct']:+.1f}%)" for m in others) + "."
        + _broken(mitigation, others))
    ours_curve = sensitivity[sensitivity["method"] == "privloc"]
    lines.append("- **How many units it takes**: with our top units off, greedy exact match / `leak_any` / "
                 "perplexity change: " + ", ".join(
                     f"{r['share_pct']:.0f}%: {r['em_assoc']:.2f} / "
                     + ("—" if np.isnan(r["leak_any"]) else f"{r['leak_any']:.2f}")
                     + f" / {100 * (r['ppl_nonpii'] / original['ppl_nonpii'] - 1):+.0f}%"
                     for _, r in ours_curve.iterrows()) + ".")
    if heldout is not None:
        h = heldout.set_index(["set", "documents"])
        lines.append("- **Held-out contexts** (mask learned on part of each person's documents): `leak_any` with our "
                     "units off " + f"{h.loc[('privloc', 'learned documents'), 'leak_any']:.3f} on the learned "
                     f"documents, {h.loc[('privloc', 'held-out documents'), 'leak_any']:.3f} on the held-out ones "
                     f"(greedy {h.loc[('privloc', 'learned documents'), 'leak_greedy']:.3f} / "
                     f"{h.loc[('privloc', 'held-out documents'), 'leak_greedy']:.3f}; untouched "
                     f"{h.loc[('original', 'held-out documents'), 'leak_greedy']:.3f}).")
    unseen = calibration[(calibration["case"] != "memorised") & (calibration["category"] == "all")]
    lines.append("- **Calibration**: exposure (bits) against chance for the models that never saw these people: "
                 + "; ".join(f"{r['case']} {r['exposure']:.2f} vs {r['exposure_chance']:.2f} "
                             f"({'at chance' if abs(r['gap_bits']) <= 0.5 else '**not at chance**'})"
                             for _, r in unseen.iterrows())
                 + f"; memorised {calibration[(calibration['case'] == 'memorised') & (calibration['category'] == 'all')]['exposure'].iloc[0]:.2f}.")
    verdict = ("holds" if ours["leak_greedy"] < 0.5 * original["leak_greedy"] and ours["ppl_change_pct"] < 10
               else "does not hold")
    lines.append(f"- **The paper's claim on a pretrained LM**: measured by greedy extraction, \"switching the privacy "
                 f"neurons off mitigates leakage at little perplexity cost\" {verdict} here; against the whole "
                 f"suite, an attacker with {budget} tries still recovers {ours['leak_any']:.0%} of the spans.")
    return lines
