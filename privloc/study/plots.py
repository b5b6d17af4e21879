"""Plotting helpers shared by the notebooks. Colours: the Okabe-Ito palette (colour-blind safe), with
distinct markers and line styles so that every figure also reads in grey-scale print."""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

from privloc.corpora.data import CATEGORIES, span_kinds
from privloc.method.attacks import BLACK_BOX

OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
CATEGORY_COLOR = dict(zip(CATEGORIES, OKABE_ITO, strict=False))
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1))]
DATASET_STYLE = {"enron": 0, "echr": 1, "yelp_health": 2}


def style(index: int) -> dict:
    """Colour, marker and line style of the index-th series."""
    return {"color": OKABE_ITO[index % len(OKABE_ITO)], "marker": MARKERS[index % len(MARKERS)],
            "linestyle": LINESTYLES[index % len(LINESTYLES)]}


# The methods of the mitigation figures, each a colour that stays apart from the others in print and for
# colour-blind readers (no two blues, no pale yellow), with its own marker and dash.
METHOD_COLORS = {"original": "#000000", "privloc": "#D55E00", "random": "#E69F00", "random_uniform": "#8C8C8C",
                 "activation": "#0072B2", "integrated_gradients": "#009E73", "scrubbed": "#CC79A7"}


def method_style(method: str, index: int) -> dict:
    """Colour, marker and line style of a method's series (a method not listed: the index-th style)."""
    out = style(index)
    if method in METHOD_COLORS:
        out["color"] = METHOD_COLORS[method]
    return out


def setup() -> None:
    plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
                         "font.size": 10, "svg.hashsalt": "privloc", "pdf.compression": 6})


def highlight_html(record: dict) -> str:
    """A document as HTML with every PII span coloured by category and labelled with its kind."""
    pieces, cursor = [], 0
    text = record["text"]
    for span, kind in zip(record["spans"], span_kinds(record), strict=True):
        pieces.append(html.escape(text[cursor: span["start"]]))
        color = CATEGORY_COLOR.get(span["category"], "#999999")
        value = html.escape(text[span["start"]: span["end"]])
        pieces.append(
            f'<span style="background:{color}55;border-bottom:2px solid {color}" '
            f'title="{span["category"]} / {kind}">{value}<sub style="font-size:70%">'
            f'{span["category"]}·{kind}</sub></span>'
        )
        cursor = span["end"]
    pieces.append(html.escape(text[cursor:]))
    return '<pre style="white-space:pre-wrap;font-size:90%">' + "".join(pieces) + "</pre>"


def memorisation_curves(histories: dict[str, list[dict]], categories=CATEGORIES):
    """Exact match of `assoc` PII per category over training steps, one panel per dataset."""
    fig, axes = plt.subplots(1, len(histories), figsize=(4.2 * len(histories), 3.4), sharey=True, squeeze=False)
    for ax, (name, history) in zip(axes[0], histories.items(), strict=True):
        frame = pd.DataFrame(history)
        for i, category in enumerate(categories):
            column = f"em_{category}"
            if column in frame and frame[column].notna().any():
                ax.plot(frame["step"], frame[column], label=category, markersize=4, **style(i))
        ax.plot(frame["step"], frame["em_assoc"], color="black", linewidth=2.5, label="all assoc")
        ax.set_title(name)
        ax.set_xlabel("training step")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("extraction exact match (fraction)")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def gate_grid(masker, closed_ids=None, title: str = "", width: int = 32):
    """Fig. 1: every gate of one trained mask, a panel per (layer, component); privacy neurons stand out.

    Each panel lays the component's units out row by row, `width` per row; colour is the probability that
    the gate is open, 1 − P(closed), and the privacy neurons (`closed_ids`, by default the gates whose
    deterministic value is 0) are drawn at 0.
    """
    from matplotlib.colors import LinearSegmentedColormap

    gates = 1 - masker.gates.p_closed().detach().cpu().numpy()
    closed_ids = masker.closed_ids() if closed_ids is None else closed_ids
    gates[np.asarray(closed_ids, dtype=np.int64)] = 0.0
    table = masker.neuron_table()
    components = masker.components
    # Dark = closed, pale = open: survives grey-scale printing; orange tint marks the privacy neurons.
    cmap = LinearSegmentedColormap.from_list("gate", ["#D55E00", "#F0E0C0", "#F7F7F7"])
    heights = [max(masker.component_sizes[c] // width, 1) for c in components]
    fig, axes = plt.subplots(masker.n_layer, len(components), figsize=(1.9 * len(components), 1.0 * masker.n_layer + 0.8),
                             gridspec_kw={"width_ratios": [1] * len(components)}, squeeze=False)
    image = None
    for layer in range(masker.n_layer):
        for j, component in enumerate(components):
            ax = axes[layer][j]
            values = gates[(table["layer"] == layer) & (table["component"] == j)]
            image = ax.imshow(values.reshape(heights[j], -1), cmap=cmap, vmin=0, vmax=1, aspect="auto",
                              interpolation="nearest")
            closed = int((values == 0).sum())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{closed}/{values.size} closed", fontsize=7, labelpad=1)
            if layer == 0:
                ax.set_title(component, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=axes, fraction=0.02, pad=0.01, label="P(gate open); privacy neurons at 0")
    return fig


def history_curves(histories: dict[str, list[dict]]):
    """Loss terms and closed-gate count over localisation steps, one line per dataset."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for i, (name, history) in enumerate(histories.items()):
        frame = pd.DataFrame(history)
        kw = {**style(i), "markevery": max(1, len(frame) // 8), "markersize": 4, "label": name}
        axes[0].plot(frame["step"], frame["loss_pii"], **kw)
        axes[1].plot(frame["step"], frame["loss_keep"], **kw)
        # Older mask files hold only the count of exactly-closed gates.
        axes[2].plot(frame["step"], frame.get("expected_closed", frame["n_closed"]), **kw)
    for ax, label in zip(axes, ["L_pii: −log(1 − p) on PII targets (nats)", "L_keep: CE on non-PII targets (nats)",
                                "expected closed gates, Σ P(closed)"], strict=True):
        ax.set_xlabel("localisation step")
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def sensitivity_curves(curve: pd.DataFrame, baseline: dict):
    """Fig. 5: greedy exact match, leak_any (where attacked), perplexity against k, and the trade-off."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for i, (method, frame) in enumerate(curve.groupby("method", sort=False)):
        kw = {**method_style(method, i), "markersize": 5, "label": method}
        axes[0].plot(frame["share_pct"], frame["em_assoc"], **kw)
        attacked = frame.dropna(subset=["leak_any"]) if "leak_any" in frame else frame.iloc[:0]
        axes[1].plot(attacked["share_pct"], attacked["leak_any"], **kw)
        axes[2].plot(frame["share_pct"], frame["ppl_nonpii"], **kw)
        # Perplexity need not grow with k (switching a few units off can lower it), so a line through the budgets
        # in k order would double back: each budget is a point, labelled with its share.
        axes[3].scatter(frame["ppl_nonpii"], frame["em_assoc"], color=kw["color"], marker=kw["marker"], s=22)
        for _, r in frame.iloc[[0, -1]].iterrows():
            axes[3].annotate(f"{r['share_pct']:.2g}%", (r["ppl_nonpii"], r["em_assoc"]), fontsize=7,
                             xytext=(3, 3), textcoords="offset points", color=kw["color"])
    for ax in axes[:3]:
        ax.set_xscale("log")
        ax.set_xlabel("neurons switched off (% of gated units, log scale)")
    axes[0].axhline(baseline["em_assoc"], color="grey", linestyle=":", label="original")
    if "leak_any" in baseline:
        axes[1].axhline(baseline["leak_any"], color="grey", linestyle=":")
    # The full range, and the same k axis as the exact-match panel: a zoomed axis would make a 0.01 change
    # look like a fall.
    axes[1].set_ylim(-0.03, 1.03)
    axes[1].set_xlim(axes[0].get_xlim())
    axes[2].axhline(baseline["ppl_nonpii"], color="grey", linestyle=":")
    axes[3].scatter([baseline["ppl_nonpii"]], [baseline["em_assoc"]], color="grey", marker="*", s=80, zorder=3)
    # Perplexity can explode for some methods at large k: a log axis keeps the small changes visible.
    axes[2].set_yscale("log")
    axes[3].set_xscale("log")
    # A log axis over less than a decade has no major tick to label, and its minor-tick labels crowd into
    # each other: a few evenly chosen, plainly written ticks read better. Over several decades (a control that
    # breaks the model) the log axis's own powers of ten do.
    ppl = pd.concat([curve["ppl_nonpii"], pd.Series([baseline["ppl_nonpii"]])])
    if ppl.max() / ppl.min() < 10:
        for axis in (axes[2].yaxis, axes[3].xaxis):
            axis.set_major_locator(MaxNLocator(nbins=5))
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
    axes[0].set_ylabel("greedy exact match (fraction)")
    axes[1].set_ylabel("leak_any: found by some attack (fraction)")
    axes[2].set_ylabel("non-PII validation perplexity (log scale)")
    axes[3].set_xlabel("non-PII validation perplexity (log scale)")
    axes[3].set_ylabel("greedy exact match (fraction)")
    axes[3].set_title("privacy–utility, one point per budget (lower left is better)", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def attack_budget(table: pd.DataFrame, attacks=("beam", "sample", "candidates", "logit_lens", "any"),
                  n_candidates: int | None = None):
    """Fig. 7: leakage against the attack budget B, one row of panels per dataset and one panel per attack.

    Greedy decoding has no budget (its value is the B = 1 point of every other attack), so it has no panel.
    With `n_candidates` (K) the candidate panel draws chance, B/(K+1): the truth's rank among K others is
    uniform for a model that never saw it.
    """
    datasets = list(dict.fromkeys(table["dataset"]))
    budgets = sorted(set(table["budget"]))
    fig, axes = plt.subplots(len(datasets), len(attacks), figsize=(2.6 * len(attacks), 2.4 * len(datasets)),
                             sharex=True, sharey=True, squeeze=False)
    for r, name in enumerate(datasets):
        here = table[table["dataset"] == name]
        for c, attack in enumerate(attacks):
            ax = axes[r, c]
            for i, (method, frame) in enumerate(here.groupby("method", sort=False)):
                ax.plot(frame["budget"], frame[f"leak_{attack}"], **method_style(method, i), markersize=4,
                        label=method)
            if attack == "candidates" and n_candidates:
                ax.plot(budgets, [b / (n_candidates + 1) for b in budgets], color="grey", linewidth=3, alpha=0.4,
                        label=f"chance B/(K+1), K = {n_candidates}")
            ax.set_xscale("log")
            ax.set_xticks(budgets, [str(b) for b in budgets])
            ax.minorticks_off()
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title("leak_any (black-box)" if attack == "any" else attack, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{name}\nleakage (fraction)")
            if r == len(datasets) - 1:
                ax.set_xlabel("budget B")
    # One legend for the whole figure: not every dataset has every method (the scrubbed victim).
    labels = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labels.setdefault(label, handle)
    fig.legend(labels.values(), labels.keys(), fontsize=8, loc="upper center", ncol=min(len(labels), 4),
               bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return fig


def injection_recall(runs: pd.DataFrame):
    """Fig. 6: recall@|S| per method (mean bar, one point per injection), random level dotted."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    methods = list(dict.fromkeys(runs["method"]))
    for i, method in enumerate(methods):
        values = runs.loc[runs.method == method, "recall"]
        ax.bar(i, values.mean(), color=OKABE_ITO[i % len(OKABE_ITO)], hatch=["", "//", "..", "xx"][i % 4],
               edgecolor="black", alpha=0.85)
        ax.scatter([i] * len(values), values, color="black", marker=MARKERS[i % len(MARKERS)], zorder=3, s=18)
    ax.axhline(runs["random_level"].mean(), color="grey", linestyle=":", label="random level |S|/N")
    ax.set_xticks(range(len(methods)), methods, rotation=15)
    ax.set_ylabel("recall@|S| of planted neurons (fraction)")
    ax.set_xlabel("localisation method")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def objective_bars(table: pd.DataFrame, attacks=(*BLACK_BOX, "any")):
    """Fig. 8: leakage per attack for each objective variant (bars), one panel per dataset; the non-PII
    perplexity change is written above each group."""
    datasets = list(dict.fromkeys(table["dataset"]))
    variants = list(dict.fromkeys(table["variant"]))
    fig, axes = plt.subplots(len(datasets), 1, figsize=(1.35 * len(variants) + 1.5, 2.5 * len(datasets)),
                             sharex=True, squeeze=False)
    width = 0.8 / len(attacks)
    for ax, name in zip(axes[:, 0], datasets, strict=True):
        here = table[table["dataset"] == name].set_index("variant").loc[variants]
        x = np.arange(len(variants))
        for i, attack in enumerate(attacks):
            ax.bar(x + (i - (len(attacks) - 1) / 2) * width, here[f"leak_{attack}"], width,
                   color=OKABE_ITO[i], hatch=["", "//", "..", "xx", ""][i % 5], edgecolor="white",
                   label="leak_any (black-box)" if attack == "any" else attack)
        for xi, change in zip(x, here["ppl_change_pct"], strict=True):
            ax.text(xi, 1.04, f"ppl {change:+.1f}%", ha="center", fontsize=7)
        ax.set_ylim(0, 1.15)
        ax.set_ylabel(f"{name}\nleakage (fraction)")
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xticks(np.arange(len(variants)), [v.replace(" ", "\n", 1) for v in variants], fontsize=8)
    axes[0, 0].legend(fontsize=8, ncol=len(attacks), loc="lower center", bbox_to_anchor=(0.5, 1.08), frameon=False)
    fig.tight_layout()
    return fig
