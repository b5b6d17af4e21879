"""Where the privacy neurons lie and how the sets of different PII categories relate (Figs. 2-4).

Everything works on sets of global neuron ids (numpy integer arrays) and a `Layout` that maps an id to
its layer, component and unit with the same layer-major numbering as `NeuronMasker` (docs/method.md,
"Which units are gated").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize

from privloc.study.plots import DATASET_STYLE, MARKERS, OKABE_ITO

# Same names and order as masking.COMPONENTS; repeated so that analysis never imports torch.
COMPONENT_ORDER = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.in", "mlp.out")
HATCHES = ["", "//", "..", "xx", "\\\\", "oo"]


def _distinct(ids) -> np.ndarray:
    return np.unique(np.asarray(ids if isinstance(ids, np.ndarray) else list(ids)).reshape(-1))


@dataclass
class Layout:
    """Neuron numbering: layer-major blocks, each holding its components in `components` order."""

    n_layer: int
    components: tuple[str, ...]
    component_sizes: dict[str, int]

    @classmethod
    def from_masker(cls, masker) -> Layout:
        return cls(int(masker.n_layer), tuple(masker.components), {c: int(masker.component_sizes[c])
                                                                    for c in masker.components})

    @property
    def sizes(self) -> np.ndarray:
        return np.array([self.component_sizes[c] for c in self.components], dtype=np.int64)

    @property
    def n_neurons(self) -> int:
        return int(self.sizes.sum()) * self.n_layer

    def check(self, ids) -> np.ndarray:
        """The distinct ids as int64, or an error naming the problem."""
        arr = _distinct(ids)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"neuron ids must be integers, got dtype {arr.dtype}")
        if arr.size and (arr[0] < 0 or arr[-1] >= self.n_neurons):
            raise ValueError(f"neuron ids must lie in [0, {self.n_neurons}), got [{arr[0]}, {arr[-1]}]")
        return arr.astype(np.int64)

    def _codes(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        starts = np.concatenate([[0], np.cumsum(self.sizes)])
        layer, offset = np.divmod(ids, starts[-1])
        comp = np.searchsorted(starts[1:], offset, side="right")
        return layer, comp, offset - starts[comp]

    def table(self, ids=None) -> dict[str, np.ndarray]:
        """Layer, component name and unit of each id (of every neuron when `ids` is None)."""
        ids = np.arange(self.n_neurons) if ids is None else self.check(ids)
        layer, comp, unit = self._codes(ids)
        return {"id": ids, "layer": layer, "component": np.array(self.components, dtype=object)[comp],
                "unit": unit}


def as_layout(layout) -> Layout:
    return layout if isinstance(layout, Layout) else Layout.from_masker(layout)


def layer_component_counts(layout, ids) -> pd.DataFrame:
    """One row per layer and component, zeros included: count, size (units there) and fraction."""
    layout = as_layout(layout)
    layer, comp, _ = layout._codes(layout.check(ids))
    n_comp = len(layout.components)
    grid = np.bincount(layer * n_comp + comp, minlength=layout.n_layer * n_comp)
    size = np.tile(layout.sizes, layout.n_layer)
    return pd.DataFrame({"layer": np.repeat(np.arange(layout.n_layer), n_comp),
                         "component": np.tile(np.array(layout.components, dtype=object), layout.n_layer),
                         "count": grid, "size": size, "fraction": grid / size})


def layer_shares(per_dataset: dict, layout) -> pd.DataFrame:
    """Per run and layer: count and share of that run's privacy neurons (NaN if it has none).

    Keys name the runs: a dataset name, or a (dataset, seed) pair when a dataset has several seeds.
    """
    frames = []
    for key, ids in per_dataset.items():
        name, seed = key if isinstance(key, tuple) else (key, None)
        df = layer_component_counts(layout, ids).groupby("layer", as_index=False)["count"].sum()
        total = df["count"].sum()
        df["share"] = df["count"] / total if total else np.nan
        frames.append(df.assign(dataset=name, seed=seed)[["dataset", "seed", "layer", "count", "share"]])
    return pd.concat(frames, ignore_index=True)


def layer_summary(shares: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over runs (datasets, seeds) per layer of `layer_shares` output. The std is the population
    one (ddof=0): it describes the runs at hand and is 0, not undefined, for a single run."""
    g = shares.groupby("layer")
    out = pd.DataFrame({"mean_share": g["share"].mean(), "std_share": g["share"].std(ddof=0),
                        "mean_count": g["count"].mean(), "std_count": g["count"].std(ddof=0),
                        "n_runs": g["share"].count()})
    return out.reset_index()


def component_summary(per_dataset: dict, layout) -> pd.DataFrame:
    """Per dataset and component, summed over layers: count, size, fraction of the size, and share of
    the dataset's privacy neurons (NaN if it has none)."""
    frames = []
    for name, ids in per_dataset.items():
        df = layer_component_counts(layout, ids).groupby("component", sort=False, as_index=False)[
            ["count", "size"]].sum()
        df["fraction"] = df["count"] / df["size"]
        total = df["count"].sum()
        df["share"] = df["count"] / total if total else np.nan
        frames.append(df.assign(dataset=name)[["dataset", "component", "count", "size", "fraction", "share"]])
    return pd.concat(frames, ignore_index=True)


def jaccard(a, b) -> float:
    """|A ∩ B| / |A ∪ B| of the distinct ids; NaN when both are empty (undefined)."""
    a, b = _distinct(a), _distinct(b)
    union = len(np.union1d(a, b))
    return len(np.intersect1d(a, b, assume_unique=True)) / union if union else math.nan


def jaccard_matrix(sets: dict) -> pd.DataFrame:
    names = list(sets)
    values = [[jaccard(sets[r], sets[c]) for c in names] for r in names]
    return pd.DataFrame(values, index=pd.Index(names), columns=pd.Index(names))


def _log_comb(n: int, k: np.ndarray) -> np.ndarray:
    lg = np.vectorize(math.lgamma, otypes=[float])
    return math.lgamma(n + 1) - lg(k + 1) - lg(n - k + 1)


def jaccard_chance(size_a: int, size_b: int, n_total: int) -> float:
    """Expected Jaccard of two independent uniformly random sets of sizes a and b out of N, exactly.

    |A ∩ B| = k is hypergeometric, P(k) = C(a,k) C(N-a,b-k) / C(N,b), and then J = k / (a + b - k), so
    E[J] = Σ_k P(k) k / (a + b - k). Log-gamma keeps the binomials finite for large N; NaN when a = b = 0.
    """
    a, b, n = int(size_a), int(size_b), int(n_total)
    if not (0 <= a <= n and 0 <= b <= n):
        raise ValueError(f"set sizes must lie in [0, {n}], got {a} and {b}")
    if a + b == 0:
        return math.nan
    k = np.arange(max(0, a + b - n), min(a, b) + 1)
    log_p = _log_comb(a, k) + _log_comb(n - a, b - k) - math.lgamma(n + 1) + math.lgamma(b + 1) + math.lgamma(n - b + 1)
    p = np.exp(log_p - log_p.max())
    # Renormalising absorbs the rounding of the log-gamma sums; the exact probabilities sum to 1.
    return float(np.sum(p / p.sum() * k / (a + b - k)))


def jaccard_chance_matrix(sets: dict, n_total: int) -> pd.DataFrame:
    """`jaccard_chance` for every pair's set sizes (the diagonal too: two random sets of that size)."""
    names = list(sets)
    sizes = {k: len(_distinct(v)) for k, v in sets.items()}
    values = [[jaccard_chance(sizes[r], sizes[c], n_total) for c in names] for r in names]
    return pd.DataFrame(values, index=pd.Index(names), columns=pd.Index(names))


def offdiag_mean(matrix: pd.DataFrame) -> float:
    """Mean of a square matrix's off-diagonal cells (NaN cells ignored)."""
    values = matrix.to_numpy(dtype=float)
    return float(np.nanmean(values[~np.eye(len(values), dtype=bool)])) if len(values) > 1 else float("nan")


def transfer_matrix(em_before: dict, em_after: dict) -> pd.DataFrame:
    """Relative leakage drop: row = category whose neurons are deactivated, column = category measured,
    cell = (em_before[col] - em_after[(row, col)]) / em_before[col]; NaN where em_before[col] is 0 or the
    pair was not measured. Categories keep the order of `em_before`."""
    rows = [c for c in em_before if any(r == c for r, _ in em_after)]
    rows += [r for r, _ in em_after if r not in rows]
    cols = [c for c in em_before if any(m == c for _, m in em_after)]
    missing = sorted({m for _, m in em_after} - set(em_before))
    if missing:
        raise ValueError(f"em_before lacks the measured categories {missing}")
    values = [[(em_before[c] - em_after[(r, c)]) / em_before[c] if (r, c) in em_after and em_before[c] else np.nan
               for c in cols] for r in rows]
    return pd.DataFrame(values, index=pd.Index(rows, name="deactivated"), columns=pd.Index(cols, name="measured"))


def diagonal_specificity(matrix: pd.DataFrame) -> dict:
    """Mean drop on the diagonal (own category) and off it, their ratio and gap. The ratio is only
    meaningful for a positive off-diagonal mean (NaN otherwise); the gap is always defined."""
    same = np.equal.outer(matrix.index.to_numpy(dtype=object), matrix.columns.to_numpy(dtype=object))
    values = matrix.to_numpy(dtype=float)
    diag, off = values[same], values[~same]
    d = float(np.nanmean(diag)) if np.isfinite(diag).any() else math.nan
    o = float(np.nanmean(off)) if np.isfinite(off).any() else math.nan
    return {"diagonal": d, "off_diagonal": o, "ratio": d / o if o > 0 else math.nan, "gap": d - o}


def plot_layer_distribution(layer_df: pd.DataFrame):
    """Fig. 2: mean share per layer over runs (bars, std error bars), each run's shares (markers, one style
    per dataset) and the mean count per layer above each bar."""
    summary = layer_summary(layer_df)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    x = summary["layer"].to_numpy()
    ax.bar(x, summary["mean_share"], yerr=summary["std_share"], width=0.6, color="#DDDDDD", edgecolor="black",
           capsize=4, label="mean ± std over runs")
    names = list(dict.fromkeys(layer_df["dataset"]))
    for i, name in enumerate(names):
        d, j = layer_df[layer_df["dataset"] == name], DATASET_STYLE.get(name, len(DATASET_STYLE) + i)
        # A small horizontal offset per dataset keeps coinciding points apart.
        offset = (i - (len(names) - 1) / 2) * 0.12
        ax.scatter(d["layer"] + offset, d["share"], marker=MARKERS[j % len(MARKERS)], s=30, zorder=3,
                   color=OKABE_ITO[j % len(OKABE_ITO)], edgecolor="black", linewidth=0.5, label=name)
    top = (summary["mean_share"] + summary["std_share"].fillna(0)).fillna(0)
    # Counts sit at the foot of the bars, where no run's marker can cover them.
    for xi, c in zip(x, summary["mean_count"], strict=True):
        ax.annotate(f"{c:.0f}" if float(c).is_integer() else f"{c:.1f}", (xi, 0), textcoords="offset points",
                    xytext=(0, 3), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xlabel("layer")
    ax.set_ylabel("share of privacy neurons (fraction)")
    ax.set_ylim(0, max(1e-3, float(np.nanmax([top.max(), layer_df["share"].max()]))) * 1.2)
    ax.set_title("privacy neurons per layer (numbers: mean count)", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_components(component_df: pd.DataFrame):
    """Fig. 3: per component and dataset, counts (left) and the fraction of the component's units (right)."""
    present = set(component_df["component"])
    comps = [c for c in COMPONENT_ORDER if c in present] + sorted(present - set(COMPONENT_ORDER))
    names = list(dict.fromkeys(component_df["dataset"]))
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    width, x = 0.8 / len(names), np.arange(len(comps))
    for ax, column, label in [(axes[0], "count", "privacy neurons (count)"),
                              (axes[1], "fraction", "fraction of the component's units")]:
        for i, name in enumerate(names):
            d = component_df[component_df["dataset"] == name].set_index("component").reindex(comps)
            j = DATASET_STYLE.get(name, len(DATASET_STYLE) + i)
            ax.bar(x + (i - (len(names) - 1) / 2) * width, d[column].fillna(0), width,
                   color=OKABE_ITO[j % len(OKABE_ITO)], edgecolor="black", hatch=HATCHES[i % len(HATCHES)],
                   label=name)
        ax.set_xticks(x, comps)
        ax.set_xlabel("component")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _heatmap(ax, frame: pd.DataFrame, cmap, norm, fmt: str):
    values = frame.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm)
    for (r, c), v in np.ndenumerate(values):
        if np.isnan(v):
            ax.text(c, r, "n/a", ha="center", va="center", fontsize=8, color="black")
            continue
        red, green, blue, _ = cmap(norm(v))
        # Dark text on light cells and vice versa, judged by perceived luminance.
        ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
        ax.text(c, r, format(v, fmt), ha="center", va="center", fontsize=8, color=ink)
    return image


def plot_similarity(matrices: dict, chance: dict | None = None):
    """Fig. 4: Jaccard similarity of the per-category privacy-neuron sets, one heatmap per dataset, with
    the mean off-diagonal chance level (independent random sets of the same sizes) under each title."""
    cmap, norm = plt.get_cmap("cividis"), Normalize(0, 1)
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices) + 0.9, 4.4), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (name, frame) in zip(axes[0], matrices.items(), strict=True):
        image = _heatmap(ax, frame, cmap, norm, ".2f")
        ax.set_xticks(range(frame.shape[1]), frame.columns, rotation=45, ha="right")
        ax.set_yticks(range(frame.shape[0]), frame.index)
        ax.set_xlabel("PII category")
        subtitle = ""
        if chance is not None and name in chance:
            c = chance[name].to_numpy(dtype=float)
            off = c[~np.eye(*c.shape, dtype=bool)]
            level = np.nanmean(off) if np.isfinite(off).any() else math.nan
            subtitle = f"\nchance ≈ {level:.3f} (random sets, mean)"
        ax.set_title(name + subtitle, fontsize=10)
    axes[0][0].set_ylabel("PII category")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="Jaccard similarity")
    return fig


def plot_transfer(matrix: pd.DataFrame, title: str = ""):
    """Fig. 4b: relative drop of each measured category's exact match after deactivating one category's
    privacy neurons. A diverging map centred at 0; signed annotations keep it readable in grey-scale."""
    finite = np.abs(matrix.to_numpy(dtype=float))
    vmax = max(1e-9, float(np.nanmax(finite))) if np.isfinite(finite).any() else 1.0
    cmap, norm = plt.get_cmap("PuOr"), Normalize(-vmax, vmax)
    n_row, n_col = matrix.shape
    fig, ax = plt.subplots(figsize=(1.1 * n_col + 3.6, 0.7 * n_row + 2.0), layout="constrained")
    image = _heatmap(ax, matrix, cmap, norm, "+.2f")
    ax.set_xticks(range(n_col), [f"measured: {c}" for c in matrix.columns], rotation=30, ha="right")
    ax.set_yticks(range(n_row), [f"deactivated: {r}" for r in matrix.index])
    ax.set_xlabel("category whose leakage is measured")
    ax.set_ylabel("category whose neurons are deactivated")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="relative drop in exact match\n(fraction; > 0: leakage falls)")
    return fig
