"""What notebook 11 concludes from its table (privloc.study.removal_study)."""

import pandas as pd
import pytest

from privloc.study.removal_verdict import findings, holds, units_help

PARTS = ("learned documents", "held-out documents")


def _row(method, units, strength, documents, leak_any, low=0.1, ppl=0.0):
    return {"method": method, "units": units, "strength": strength, "documents": documents, "leak_any": leak_any,
            "leak_candidates": leak_any, "leak_candidates_low": low, "leak_candidates_chance": 0.099,
            "leak_greedy": 0.0, "ppl_change_pct": ppl, "seconds": 1.0,
            "localisation_seconds": 60.0 if units == "privloc" else 0.0}


def _table():
    rows = []
    for part in PARTS:
        rows += [_row("original", "—", "—", part, 1.0),
                 _row("edit", "privloc", "100 steps", part, 0.12, ppl=3.0),  # holds: 0.12 <= 0.09 + 0.05
                 _row("edit", "random", "100 steps", part, 0.60, ppl=3.0),
                 _row("overwrite", "privloc", "100 steps", part, 0.10, low=0.5),  # buries the truth
                 _row("unlearn", "all", "100 steps", part, 0.09, ppl=12.0),  # too costly
                 _row("scrubbed", "—", "—", part, 0.09)]
    return pd.DataFrame(rows)


def test_a_removal_holds_only_near_the_floor_with_both_tails_at_chance_and_little_cost():
    table = _table()
    held = table[holds(table)]
    assert set(zip(held["method"], held["units"], strict=True)) == {("edit", "privloc"), ("scrubbed", "—")}


def test_our_units_against_random_ones_and_the_sentence_that_says_so():
    table = _table()
    diff = units_help(table)
    assert list(diff["method"]) == ["edit", "edit"]
    assert diff["d_leak_any"].tolist() == pytest.approx([-0.48, -0.48])
    text = "\n".join(findings(table, "small victim", 10))
    assert "on the learned and the held-out documents alike): edit, privloc units (100 steps)." in text
    assert "edit -0.48" in text
    # Within +5% perplexity, the privloc edit is nearest the floor (0.12 against 0.09 on both parts).
    assert "Closest at most +5% perplexity: edit, privloc units (100 steps), `leak_any` 0.12 / 0.12, +0.03 / +0.03" \
        in text
