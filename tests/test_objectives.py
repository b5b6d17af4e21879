"""The objective variants of notebook 09 and the rule that chooses among them."""

import pandas as pd

from privloc.config import LocalizeConfig, get_profile
from privloc.study.objectives import VARIANTS, choose, tuning_variants, variant_of


def rows(dataset, **variants):
    """A variant_rows-like table: variant -> (leak_any, leak_beam, leak_sample, ppl_change_pct)."""
    out = [{"variant": "original", "dataset": dataset, "leak_any": 1.0, "leak_beam": 1.0, "leak_sample": 1.0,
            "ppl_change_pct": 0.0}]
    for name, (any_, beam, sample, ppl) in variants.items():
        out.append({"variant": name, "dataset": dataset, "leak_any": any_, "leak_beam": beam,
                    "leak_sample": sample, "ppl_change_pct": ppl})
    frame = pd.DataFrame(out)
    for col in ("leak_greedy", "leak_candidates", "leak_logit_lens"):
        frame[col] = 0.5
    return frame


def test_choose_ranks_by_leak_any_then_generating_attacks_among_ties():
    table = pd.concat([
        rows("a", lo=(0.50, 0.9, 0.9, 1.0), tied=(0.505, 0.1, 0.1, 1.0), hi=(0.9, 0.0, 0.0, 1.0)),
        rows("b", lo=(0.50, 0.9, 0.9, 2.0), tied=(0.505, 0.1, 0.1, 2.0), hi=(0.9, 0.0, 0.0, 2.0)),
    ])
    ranked = choose(table, tie=0.01)
    assert ranked["variant"].tolist() == ["tied", "lo", "hi"]  # within the tie, beam and sampling decide
    assert ranked["rank"].tolist() == [1, 2, 3]
    assert choose(table, tie=0.0)["variant"].tolist() == ["lo", "tied", "hi"]


def test_choose_excludes_a_variant_that_costs_perplexity_on_any_dataset():
    table = pd.concat([rows("a", good=(0.2, 0.2, 0.2, 6.0), fair=(0.6, 0.5, 0.5, 1.0)),
                       rows("b", good=(0.2, 0.2, 0.2, 1.0), fair=(0.6, 0.5, 0.5, 1.0))])
    ranked = choose(table, max_ppl_change_pct=5.0).set_index("variant")
    assert not ranked.loc["good", "eligible"] and ranked.loc["fair", "eligible"]
    assert ranked.loc["fair", "rank"] == 1 and ranked.loc["good", "worst_ppl_change_pct"] == 6.0


def test_variants_name_configs_and_the_default_is_one_of_them():
    assert variant_of(get_profile("default").localize) in VARIANTS
    assert variant_of(LocalizeConfig(loss="unlikelihood", first_token=True)) == "first-token unlikelihood"
    assert variant_of(LocalizeConfig(loss="entropy", first_token=True)) is None


def test_tuning_variants_push_the_profile_objective_harder_and_keep_its_loss():
    from dataclasses import replace

    base = LocalizeConfig()
    tuned = {name: replace(base, **fields) for name, fields in tuning_variants(base).items()}
    assert tuned["as in the profile"] == base
    assert all(variant_of(cfg) == variant_of(base) for cfg in tuned.values())
    assert max(cfg.steps for cfg in tuned.values()) > base.steps
    assert min(cfg.lambda_keep for cfg in tuned.values()) < base.lambda_keep
    assert max(cfg.margin_rank for cfg in tuned.values()) > base.margin_rank
    assert len({cfg for cfg in tuned.values()}) == len(tuned), "two tuning variants are the same config"
