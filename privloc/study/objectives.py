"""Which suppression objective Algorithm 1 should use: every variant at one budget, judged by the attack suite.

A variant is a PII loss (localize.pii_loss) and a choice of targets: the first token of each memorised span
(the token recalled from the context) or every token of it. All run at the profile's target share, so they
are compared at an equal neuron budget; notebook 09 tabulates them and `choose` picks one by a stated rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from privloc.config import Profile
from privloc.method.attacks import sample_spans
from privloc.method.decoding import device_of
from privloc.method.mitigate import masked
from privloc.study import pipeline
from privloc.study.state_attacks import candidate_sets, state_row

# name -> LocalizeConfig fields. The first is the objective of the paper (and of earlier versions here).
VARIANTS: dict[str, dict] = {
    "first-token unlikelihood": {"loss": "unlikelihood", "first_token": True},
    "first-token margin": {"loss": "margin", "first_token": True},
    "every-token unlikelihood": {"loss": "unlikelihood", "first_token": False},
    "every-token margin": {"loss": "margin", "first_token": False},
    "every-token neg-CE": {"loss": "neg_ce", "first_token": False},
    "every-token max-entropy": {"loss": "entropy", "first_token": False},
}

LEAKS = ("leak_greedy", "leak_beam", "leak_sample", "leak_candidates", "leak_any", "leak_logit_lens")


def tuning_variants(cfg) -> dict[str, dict]:
    """More optimisation for the objective of `cfg` (a LocalizeConfig), relative to its settings: more steps, a
    lighter keep term, a wider margin, a larger learning rate. Does the chosen loss only need more of a push?"""
    base = {"loss": cfg.loss, "first_token": cfg.first_token}
    longer, lighter = round(cfg.steps * 8 / 3), cfg.lambda_keep / 5
    return {
        "as in the profile": base,
        f"{longer} steps": {**base, "steps": longer},
        f"lambda_keep {lighter:g}": {**base, "lambda_keep": lighter},
        f"margin_rank {cfg.margin_rank * 5}": {**base, "margin_rank": cfg.margin_rank * 5},
        f"lr {cfg.lr * 2:g}, {cfg.steps * 2} steps": {**base, "lr": cfg.lr * 2, "steps": cfg.steps * 2},
        f"lambda_keep {lighter:g}, {longer} steps": {**base, "lambda_keep": lighter, "steps": longer},
    }


def variant_of(cfg) -> str | None:
    """The name of the variant a LocalizeConfig runs, or None if it is none of them."""
    return next((name for name, fields in VARIANTS.items()
                 if all(getattr(cfg, k) == value for k, value in fields.items())), None)


def variant_rows(source: str, profile: Profile, variants: dict[str, dict] | None = None,
                 progress: bool = True) -> pd.DataFrame:
    """One row per variant on the victim of `source`: its mask's counts, perplexity and every attack at the budget.

    Masks and attack states are cached, so the variant the profile runs by default is read back from
    notebook 03's run. The first row is the victim itself.
    """
    variants = VARIANTS if variants is None else variants
    v = pipeline.victim(source, profile, progress=progress)
    original = state_row(v, profile=profile)
    rows = [{"variant": "original", **original}]
    for name, fields in tqdm(variants.items(), desc=f"objectives ({source})", disable=not progress, leave=False):
        loc = pipeline.localization(source, profile, progress=progress, **fields)
        last = loc.history[-1]
        rows.append({"variant": name, **fields, "n_neurons": loc.n_closed,
                     "expected_closed": last["expected_closed"], "exactly_closed": last["n_closed"],
                     **state_row(v, profile, loc.closed_ids(), loc.masker.components)})
    table = pd.DataFrame(rows).assign(dataset=source)
    table["ppl_change_pct"] = 100 * (table["ppl_nonpii"] / original["ppl_nonpii"] - 1)
    return table


def choose(table: pd.DataFrame, max_ppl_change_pct: float = 5.0, tie: float = 0.01) -> pd.DataFrame:
    """Rank the variants of `variant_rows` tables (any number of datasets) by the selection rule.

    A variant is eligible when non-PII perplexity rises by at most `max_ppl_change_pct` on every dataset. The
    eligible ones are ranked by mean `leak_any`; variants within `tie` of the best are ranked among themselves
    by the mean of the two generating attacks (`leak_beam`, `leak_sample`), which is what an attacker without
    a candidate list gets. Returns one row per variant, best first, with `eligible` and `rank`.
    """
    ours = table[table["variant"] != "original"]
    means = ours.groupby("variant", sort=False)[list(LEAKS)].mean()
    means["worst_ppl_change_pct"] = ours.groupby("variant", sort=False)["ppl_change_pct"].max()
    means["eligible"] = means["worst_ppl_change_pct"] <= max_ppl_change_pct
    means["generating"] = means[["leak_beam", "leak_sample"]].mean(axis=1)
    pool = means[means["eligible"]]
    best_any = pool["leak_any"].min() if len(pool) else float("nan")
    means["tied_on_any"] = means["eligible"] & (means["leak_any"] <= best_any + tie)
    # Inside the tied group leak_any's differences are within the tie, so only the generating attacks decide.
    means["_any"] = means["leak_any"].where(~means["tied_on_any"], 0.0)
    ranked = means.sort_values(["eligible", "tied_on_any", "_any", "generating"],
                               ascending=[False, False, True, True]).drop(columns="_any")
    ranked["rank"] = range(1, len(ranked) + 1)
    return ranked.reset_index()


def likelihood_gap(v, profile: Profile, neuron_ids=None, components=None, n_spans: int = 40) -> dict:
    """Where the candidate attack's evidence sits: the truth's log-likelihood minus the mean of its candidates',
    split into the span's first token and the rest (nats, mean over the first `n_spans` search spans).

    A mask that only demotes the first token leaves the rest's gap: the span is still spelled from memory
    once begun, and a candidate list, which scores whole strings, still finds it.
    """
    enc = v.corpus.enc_train
    sets = candidate_sets(v, profile.attack)
    first, rest = [], []
    with masked(v.model, neuron_ids, components), torch.no_grad():
        for i in sample_spans(enc, profile.attack.pass_spans, profile.attack.seed)[:n_spans]:
            span = enc.spans[i]
            prefix, truth = enc.input_ids[span.doc, : span.tok_start], enc.input_ids[span.doc, span.tok_start: span.tok_end]
            others = sets.for_span(i, span.category, span.text, truth.tolist())
            seqs = torch.stack([torch.cat([prefix, torch.as_tensor(s)]) for s in [truth.tolist(), *others]])
            logp = v.model(seqs.to(device_of(v.model))).logits.log_softmax(-1).cpu()
            n = len(prefix)
            tokens = logp[:, n - 1: -1].gather(-1, seqs[:, n:, None]).squeeze(-1)  # [1 + K, span length]
            gap = tokens[0] - tokens[1:].mean(0)
            first.append(float(gap[0]))
            rest.append(float(gap[1:].sum()))
    return {"gap_first_token": float(np.mean(first)), "gap_rest": float(np.mean(rest)), "n_spans": len(first)}


def findings(ranked: pd.DataFrame, table7: pd.DataFrame, gaps: pd.DataFrame, tuning: pd.DataFrame,
             datasets: list[str], default_variant: str | None) -> list[str]:
    """Notebook 09's "What we found": the chosen objective, what the candidate list still finds and why."""
    best = ranked.iloc[0]
    first = ranked.set_index("variant").loc["first-token unlikelihood"]
    lines = [
        f"- Chosen by the rule: **{best['variant']}** (mean over datasets: `leak_any` {best['leak_any']:.3f}, beam "
        f"{best['leak_beam']:.3f}, sample {best['leak_sample']:.3f}, candidates {best['leak_candidates']:.3f}, greedy "
        f"{best['leak_greedy']:.3f}; worst perplexity change {best['worst_ppl_change_pct']:+.1f}%). The paper's "
        f"first-token unlikelihood: `leak_any` {first['leak_any']:.3f}, beam {first['leak_beam']:.3f}, sample "
        f"{first['leak_sample']:.3f}, greedy {first['leak_greedy']:.3f}.",
        (f"- The profile's default objective (`LocalizeConfig.loss`, `first_token`) is **{default_variant}**, "
         + ("the one this run chooses." if default_variant == best["variant"] else
            f"**not** the one this run chooses ({best['variant']}): the default was set from an earlier run; "
            "rerun with the other to compare.")),
    ]
    excluded = ranked[~ranked["eligible"]]
    if len(excluded):
        lines.append("- Excluded for perplexity: " + ", ".join(
            f"{r['variant']} ({r['worst_ppl_change_pct']:+.1f}%)" for _, r in excluded.iterrows()) + ".")
    original = table7[table7.variant == "original"].set_index("dataset")
    floor = table7[table7.variant != "original"].groupby("dataset")["leak_candidates"].min()
    before = ", ".join(f"{d} {original.loc[d, 'leak_candidates']:.2f}" for d in datasets)
    lines.append("- The candidate attack is the one no variant defeats: its lowest leakage per dataset is "
                 + ", ".join(f"{d} {floor[d]:.2f}" for d in datasets) + f" (original: {before}).")
    g = gaps.groupby("variant", sort=False)[["gap_first_token", "gap_rest"]].mean()
    lines.append(
        "- Why: the truth's advantage over its candidates, first token / rest of the span, mean over datasets (nats): "
        + "; ".join(f"{name} {r['gap_first_token']:.1f} / {r['gap_rest']:.1f}" for name, r in g.iterrows())
        + ".")
    chosen_gap = g.loc[best["variant"]]
    share_rest = chosen_gap["gap_rest"] / (chosen_gap["gap_first_token"] + chosen_gap["gap_rest"])
    lines.append(
        f"- After the chosen mask the truth is still e^{chosen_gap['gap_first_token'] + chosen_gap['gap_rest']:.0f} times as "
        f"likely as an average candidate, {100 * share_rest:.0f}% of it from the tokens after the first: "
        + ("once begun, the span is still spelled from memory, and a candidate list scores whole strings."
           if share_rest > 0.5 else "most of it is the first token still."))
    tried = tuning[tuning.variant != "original"]
    lowest = tried.loc[tried.groupby("dataset")["leak_any"].idxmin()]
    as_profile = tried[tried.variant == "as in the profile"].set_index("dataset")["leak_any"]
    lines.append(
        "- A harder push (Table 7b): the lowest `leak_any` of the default objective's tuning per dataset is "
        + "; ".join(f"{r['dataset']} {r['leak_any']:.2f} ({r['variant']}, perplexity {r['ppl_change_pct']:+.1f}%; "
                    f"{as_profile[r['dataset']]:.2f} as in the profile)" for _, r in lowest.iterrows())
        + f". Beam search goes down to {tried['leak_beam'].min():.2f} and sampling to {tried['leak_sample'].min():.2f}; "
        f"the candidate list stays at {tried['leak_candidates'].min():.2f} or more.")
    return lines
