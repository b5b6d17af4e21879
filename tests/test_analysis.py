import itertools
import math
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest

from privloc.study import analysis as an

# 2 layers of [attn.q: 4 units | mlp.in: 8 units]: ids 0-3 and 12-15 are attn.q, 4-11 and 16-23 mlp.in.
LAYOUT = an.Layout(2, ("attn.q", "mlp.in"), {"attn.q": 4, "mlp.in": 8})
A = np.array([0, 1, 4, 5, 6, 16])  # layer 0: q 2, in 3; layer 1: in 1
B = np.array([12, 13, 14, 15, 20, 21])  # layer 1: q 4, in 2


@pytest.fixture(autouse=True)
def _agg():
    plt.switch_backend("Agg")
    yield
    plt.close("all")


def test_layout_table_and_checks():
    t = LAYOUT.table([17, 3, 3])
    assert t["id"].tolist() == [3, 17]
    assert t["layer"].tolist() == [0, 1]
    assert t["component"].tolist() == ["attn.q", "mlp.in"]
    assert t["unit"].tolist() == [3, 1]
    assert LAYOUT.n_neurons == 24 and len(LAYOUT.table()["id"]) == 24
    with pytest.raises(ValueError):
        LAYOUT.check([24])
    with pytest.raises(TypeError):
        LAYOUT.check([1.5])
    assert LAYOUT.check([]).size == 0


def test_layout_from_masker_matches_masker_numbering():
    fake = SimpleNamespace(n_layer=2, components=("attn.q", "mlp.in"), component_sizes={"attn.q": 4, "mlp.in": 8})
    layout = an.Layout.from_masker(fake)
    assert layout == LAYOUT
    masking = pytest.importorskip("privloc.method.masking")
    theirs = masking.NeuronMasker.neuron_table(fake)
    ours = layout.table()
    assert np.array_equal(theirs["layer"], ours["layer"])
    assert np.array_equal(np.array(layout.components)[theirs["component"]], ours["component"].astype(str))
    assert np.array_equal(theirs["unit"], ours["unit"])


def test_layer_component_counts():
    df = an.layer_component_counts(LAYOUT, A)
    assert list(df.columns) == ["layer", "component", "count", "size", "fraction"]
    assert df["count"].tolist() == [2, 3, 0, 1]
    assert df["size"].tolist() == [4, 8, 4, 8]
    assert np.allclose(df["fraction"], [0.5, 0.375, 0.0, 0.125])
    # A masker-like object works wherever a Layout does.
    fake = SimpleNamespace(n_layer=2, components=["attn.q", "mlp.in"], component_sizes={"attn.q": 4, "mlp.in": 8})
    assert an.layer_component_counts(fake, A)["count"].tolist() == [2, 3, 0, 1]


def test_layer_shares_and_summary():
    shares = an.layer_shares({"a": A, "b": B}, LAYOUT)
    assert shares.groupby("dataset")["share"].sum().tolist() == pytest.approx([1.0, 1.0])
    a = shares[shares["dataset"] == "a"]
    assert a["count"].tolist() == [5, 1]
    assert a["share"].tolist() == pytest.approx([5 / 6, 1 / 6])
    summary = an.layer_summary(shares)
    assert summary["mean_share"].tolist() == pytest.approx([5 / 12, 7 / 12])
    assert summary["std_share"].tolist() == pytest.approx([5 / 12, 5 / 12])
    assert summary["mean_count"].tolist() == pytest.approx([2.5, 3.5])
    empty = an.layer_shares({"none": []}, LAYOUT)
    assert empty["share"].isna().all() and empty["count"].sum() == 0
    # (dataset, seed) keys: one run per key, pooled by layer_summary, styled by dataset.
    seeded = an.layer_shares({("a", 0): A, ("a", 1): B}, LAYOUT)
    assert seeded["dataset"].unique().tolist() == ["a"] and seeded["seed"].tolist() == [0, 0, 1, 1]
    assert an.layer_summary(seeded)["mean_share"].tolist() == pytest.approx([5 / 12, 7 / 12])


def test_component_summary():
    df = an.component_summary({"a": A, "b": B}, LAYOUT).set_index(["dataset", "component"])
    assert df.loc[("a", "attn.q")].tolist() == pytest.approx([2, 8, 0.25, 2 / 6])
    assert df.loc[("a", "mlp.in")].tolist() == pytest.approx([4, 16, 0.25, 4 / 6])
    assert df.loc[("b", "attn.q")].tolist() == pytest.approx([4, 8, 0.5, 4 / 6])
    assert df.loc[("b", "mlp.in")].tolist() == pytest.approx([2, 16, 0.125, 2 / 6])


def test_jaccard_and_matrix():
    assert an.jaccard([0, 1, 2], [1, 2, 3]) == 0.5
    assert an.jaccard([1, 1, 2], {2}) == 0.5
    assert an.jaccard(A, B) == 0.0
    assert math.isnan(an.jaccard([], []))
    m = an.jaccard_matrix({"x": [0, 1, 2], "y": [1, 2, 3], "z": [9]})
    assert np.allclose(m.to_numpy(), [[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]])
    assert list(m.index) == list(m.columns) == ["x", "y", "z"]


def test_jaccard_chance_exact_by_enumeration():
    n, a, b = 6, 2, 3
    values = [len(set(x) & set(y)) / len(set(x) | set(y))
              for x in itertools.combinations(range(n), a) for y in itertools.combinations(range(n), b)]
    assert an.jaccard_chance(a, b, n) == pytest.approx(np.mean(values), abs=1e-12)


def test_jaccard_chance_monte_carlo():
    rng, n, a, b, draws = np.random.default_rng(0), 40, 8, 12, 20_000
    masks = []
    for size in (a, b):
        chosen = rng.random((draws, n)).argsort(axis=1)[:, :size]
        mask = np.zeros((draws, n), dtype=bool)
        np.put_along_axis(mask, chosen, True, axis=1)
        masks.append(mask)
    inter = (masks[0] & masks[1]).sum(axis=1)
    assert an.jaccard_chance(a, b, n) == pytest.approx(np.mean(inter / (a + b - inter)), abs=0.01)


def test_jaccard_chance_edges_and_large_n():
    assert an.jaccard_chance(5, 0, 10) == 0.0
    assert math.isnan(an.jaccard_chance(0, 0, 10))
    assert an.jaccard_chance(10, 4, 10) == pytest.approx(0.4)  # A is everything: J = |B| / N
    expected = 500 * 800 / 110_000
    assert an.jaccard_chance(500, 800, 110_000) == pytest.approx(expected / (1300 - expected), rel=0.05)
    with pytest.raises(ValueError):
        an.jaccard_chance(11, 2, 10)
    m = an.jaccard_chance_matrix({"x": [0, 1], "y": [2, 3, 4]}, 6)
    assert m.loc["x", "y"] == pytest.approx(an.jaccard_chance(2, 3, 6))
    assert m.loc["y", "x"] == m.loc["x", "y"]


BEFORE = {"EMAIL": 1.0, "PHONE": 0.8, "DATE": 0.0}
AFTER = {("EMAIL", "EMAIL"): 0.1, ("EMAIL", "PHONE"): 0.8, ("EMAIL", "DATE"): 0.0,
         ("PHONE", "EMAIL"): 0.9, ("PHONE", "PHONE"): 0.2, ("PHONE", "DATE"): 0.0}


def test_transfer_matrix_and_specificity():
    m = an.transfer_matrix(BEFORE, AFTER)
    assert list(m.index) == ["EMAIL", "PHONE"] and list(m.columns) == ["EMAIL", "PHONE", "DATE"]
    assert m.loc["EMAIL"].tolist()[:2] == pytest.approx([0.9, 0.0])
    assert m.loc["PHONE"].tolist()[:2] == pytest.approx([0.1, 0.75])
    assert m["DATE"].isna().all()
    spec = an.diagonal_specificity(m)
    assert spec["diagonal"] == pytest.approx(0.825)
    assert spec["off_diagonal"] == pytest.approx(0.05)
    assert spec["ratio"] == pytest.approx(16.5)
    assert spec["gap"] == pytest.approx(0.775)
    worse = an.transfer_matrix({"EMAIL": 1.0, "PHONE": 1.0}, {("EMAIL", "EMAIL"): 0.5, ("EMAIL", "PHONE"): 1.2})
    assert math.isnan(an.diagonal_specificity(worse)["ratio"])
    with pytest.raises(ValueError):
        an.transfer_matrix({"EMAIL": 1.0}, {("EMAIL", "PHONE"): 0.5})


def _labelled(ax):
    return ax.get_xlabel() and ax.get_ylabel()


def test_plots_return_labelled_figures():
    per = {"enron": A, "echr": B, "mine": [0, 23]}
    fig = an.plot_layer_distribution(an.layer_shares(per, LAYOUT))
    assert isinstance(fig, plt.Figure) and _labelled(fig.axes[0])

    fig = an.plot_components(an.component_summary(per, LAYOUT))
    assert len(fig.axes) == 2 and all(_labelled(ax) for ax in fig.axes)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["attn.q", "mlp.in"]

    sets = {"EMAIL": [0, 1, 2], "PHONE": [1, 2, 3], "DATE": []}
    matrices = {"enron": an.jaccard_matrix(sets), "echr": an.jaccard_matrix(sets)}
    fig = an.plot_similarity(matrices, {"enron": an.jaccard_chance_matrix(sets, 24)})
    assert _labelled(fig.axes[0]) and "chance" in fig.axes[0].get_title()
    assert an.plot_similarity(matrices, None).axes[1].get_title() == "echr"

    fig = an.plot_transfer(an.transfer_matrix(BEFORE, AFTER), "enron")
    ax = fig.axes[0]
    assert _labelled(ax) and ax.get_title() == "enron"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["deactivated: EMAIL", "deactivated: PHONE"]
    assert ax.get_xticklabels()[0].get_text() == "measured: EMAIL"
    fig.canvas.draw()  # renders annotations and NaN cells without error
