"""What notebook 11 concludes from its table (removal_study.compare): which removal holds, whether our units
help, the trade-off figure and the "What we found" lines."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from privloc.study.plots import OKABE_ITO
from privloc.study.removal_study import EDITS


def holds(table: pd.DataFrame, tolerance: float = 0.05, max_ppl_change: float = 5.0) -> pd.Series:
    """Per row: leak_any within `tolerance` of the floor's on the same documents (or of the candidates' chance
    without a floor), the bottom tail within `tolerance` of chance, at most `max_ppl_change` % perplexity."""
    floor = _floor(table).set_index("documents")["leak_any"]
    level = table["documents"].map(floor) if len(floor) else table["leak_candidates_chance"]
    return ((table["leak_any"] <= level + tolerance)
            & (table["leak_candidates_low"] <= table["leak_candidates_chance"] + tolerance)
            & (table["ppl_change_pct"] <= max_ppl_change))


def strongest(table: pd.DataFrame) -> pd.DataFrame:
    """Each removal at its strongest setting (the last row of each method and units), per document part."""
    return table.groupby(["method", "units", "documents"], sort=False).tail(1).reset_index(drop=True)


def units_help(table: pd.DataFrame) -> pd.DataFrame:
    """Our units against matched random ones, per removal, strength and document part: the difference in
    leak_any and in candidate ranking (negative: ours removes more)."""
    rows = []
    for method in ("deactivate", *(m for m, (_, which) in EDITS.items() if "random" in which)):
        here = table[table["method"] == method]
        ours, rand = (here[here["units"] == u].set_index(["strength", "documents"]) for u in ("privloc", "random"))
        both = ours.index.intersection(rand.index)
        for strength, part in both:
            a, b = ours.loc[(strength, part)], rand.loc[(strength, part)]
            rows.append({"method": method, "strength": strength, "documents": part,
                         "leak_any_ours": a["leak_any"], "leak_any_random": b["leak_any"],
                         "d_leak_any": a["leak_any"] - b["leak_any"],
                         "d_candidates": a["leak_candidates"] - b["leak_candidates"],
                         "ppl_ours": a["ppl_change_pct"], "ppl_random": b["ppl_change_pct"]})
    return pd.DataFrame(rows)


def chance(table: pd.DataFrame) -> float:
    return float(np.nanmean(table["leak_candidates_chance"]))


# One colour per removal; our units drawn bold with circles, matched random units thin with crosses.
COLORS = {"deactivate": OKABE_ITO[4], "edit": OKABE_ITO[5], "edit-margin": OKABE_ITO[0], "overwrite": OKABE_ITO[6],
          "unlearn": OKABE_ITO[2], "rank-edit": "#882255", "npo": "#44AA99"}  # the last two from Tol's muted set
UNIT_STYLE = {"privloc": dict(lw=2, marker="o", alpha=1.0), "random": dict(lw=1, marker="x", alpha=0.7),
              "all": dict(lw=2, marker="D", alpha=1.0), "own": dict(lw=1.5, marker="s", alpha=1.0)}


def _curves(table: pd.DataFrame):
    for (method, units), d in table[table["method"].isin(list(COLORS))].groupby(["method", "units"], sort=False):
        yield method, units, d


def _name(method: str, units: str) -> str:
    where = {"all": "every weight", "own": "its own choice of MLP units"}
    return f"{method}, {where.get(units, units + ' units')}"


def plot_tradeoff(table: pd.DataFrame, title: str, budget: int):
    """leak_any and the candidate attack alone against the perplexity change: one curve per removal (its
    strengths), solid on the learned documents and dashed on the held-out ones; the floor and chance drawn."""
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8), sharey=True)
    base = table[table["method"] == "original"]
    floor = _floor(table)
    for ax, metric, name in zip(axes, ("leak_any", "leak_candidates"), ("leak_any", "candidate ranking"),
                                strict=True):
        for method, units, d in _curves(table):
            for part, ls in (("learned documents", "-"), ("held-out documents", "--")):
                here = d[d["documents"] == part]
                ax.plot(here["ppl_change_pct"], here[metric], ls=ls, color=COLORS[method], ms=5,
                        mfc=COLORS[method] if ls == "-" else "white", **UNIT_STYLE[units],
                        label=_name(method, units) if ls == "-" else None)
        ax.scatter([0] * len(base), base[metric], color="black", marker="X", s=40, zorder=1, label="original")  # under the curves: a removal that changes nothing sits on it
        if len(floor):
            ax.scatter(floor["ppl_change_pct"], floor[metric], color="grey", marker="*", s=80, zorder=3,
                       label=f"{floor['method'].iloc[0]} (never saw the PII)")
        ax.axhline(chance(table), color="grey", lw=1, ls=":", label="chance B/(K+1)")
        ax.axvline(5, color="grey", lw=0.6, ls="-.")
        ax.set_xscale("symlog", linthresh=10)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:+g}" if x else "0"))
        ax.set(xlabel="non-PII perplexity change (%)", title=name, ylim=(-0.03, 1.03))
    axes[0].set_ylabel(f"share of memorised PII found (B = {budget})")
    axes[1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                   title="solid: learned documents\ndashed: held-out", title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _floor(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table["method"].isin(["original", "deactivate", *EDITS])]


def closest(table: pd.DataFrame, max_ppl_change: float = 5.0):
    """The removal and strength nearest to holding at most `max_ppl_change` % perplexity: the smallest excess,
    over its worse document part, of leak_any above the floor or of the bottom tail above chance (a removal
    that buries the truth is not near). ((method, units, strength), leak_any minus the floor per part,
    leak_any per part), or None."""
    floor = _floor(table).set_index("documents")["leak_any"]
    here = table[table["method"].isin(list(COLORS)) & (table["ppl_change_pct"] <= max_ppl_change)]
    if not len(floor) or not len(here):
        return None
    here = here.assign(gap=here["leak_any"] - here["documents"].map(floor))
    excess = np.maximum(here["gap"], here["leak_candidates_low"] - here["leak_candidates_chance"])
    worst = here.assign(excess=excess).groupby(["method", "units", "strength"], sort=False)["excess"].max()
    if worst.isna().all():
        return None
    best = worst.idxmin()
    rows = here.set_index(["method", "units", "strength"]).loc[[best]].set_index("documents")
    parts = ("learned documents", "held-out documents")
    return best, [float(rows.loc[p, "gap"]) for p in parts], [float(rows.loc[p, "leak_any"]) for p in parts]


def findings(table: pd.DataFrame, kind: str, budget: int, tolerance: float = 0.05,
             max_ppl_change: float = 5.0) -> list[str]:
    """'What we found' for one victim kind, from its comparison table."""
    verdict = table.assign(ok=holds(table, tolerance, max_ppl_change))
    verdict = verdict[verdict["method"].isin(list(COLORS))]
    both = verdict.groupby(["method", "units", "strength"], sort=False)["ok"].all()
    ok = both[both].index.tolist()
    top = strongest(table)
    floor = _floor(table)
    lines = [f"**{kind}.** Chance for the candidate attack is {chance(table):.2f} (B = {budget})"
             + (f"; the {floor['method'].iloc[0]} model, which never saw the PII, leaks "
                + " / ".join(f"{x:.2f}" for x in floor["leak_any"]) + " (`leak_any`, learned / held-out documents)."
                if len(floor) else ".")]
    for method, units, d in _curves(top):
        learned, held = (d[d["documents"] == p].iloc[0] for p in ("learned documents", "held-out documents"))
        lines.append(
            f"- {_name(method, units)} ({learned['strength']}): greedy {learned['leak_greedy']:.2f} / "
            f"{held['leak_greedy']:.2f}, candidates {learned['leak_candidates']:.2f} / {held['leak_candidates']:.2f}, "
            f"bottom tail {learned['leak_candidates_low']:.2f} / {held['leak_candidates_low']:.2f}, `leak_any` "
            f"{learned['leak_any']:.2f} / {held['leak_any']:.2f} (learned / held-out documents), perplexity "
            f"{learned['ppl_change_pct']:+.1f}%, {learned['seconds']:.0f} s"
            + (f" after a localisation of {learned['localisation_seconds']:.0f} s." if units == "privloc" else "."))
    criterion = (f"`leak_any` within {tolerance} of the floor, the bottom tail within {tolerance} of chance and at "
                 f"most +{max_ppl_change:.0f}% perplexity, on the learned and the held-out documents alike")
    if ok:
        lines.append(f"- Holds ({criterion}): " + "; ".join(f"{_name(m, u)} ({s})" for m, u, s in ok) + ".")
    else:
        lines.append(f"- No removal holds ({criterion}).")
    near = closest(table, max_ppl_change)
    if near is not None:
        (method, units, strength), gaps, leaks = near
        lines.append(f"- Closest at most +{max_ppl_change:.0f}% perplexity: {_name(method, units)} ({strength}), "
                     f"`leak_any` {leaks[0]:.2f} / {leaks[1]:.2f}, {gaps[0]:+.2f} / {gaps[1]:+.2f} from the floor "
                     "(learned / held-out documents).")
    helps = units_help(table)
    if len(helps):
        mean = helps.groupby("method")["d_leak_any"].mean()
        lines.append("- Our units against matched random ones (mean difference in `leak_any`, negative: ours remove "
                     "more): " + ", ".join(f"{m} {d:+.2f}" for m, d in mean.items()) + ".")
    return lines
