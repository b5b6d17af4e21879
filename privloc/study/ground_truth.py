"""The injection benchmark: can a localisation method find neurons we *know* hold a memory? (Table 3, Fig. 6)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from privloc.config import AttackConfig, LocalizeConfig
from privloc.method import baselines
from privloc.method.attacks import attack_suite
from privloc.method.localize import localize
from privloc.method.masking import NeuronMasker
from privloc.method.metrics import ASSOC_ONLY, leakage, perplexity
from privloc.method.mitigate import masked
from privloc.study.injection import Injection, choose_neurons, fresh_facts, inject, random_recall, recall_at_k
from privloc.study.pipeline import Victim
from privloc.study.state_attacks import candidate_sets

METHODS = ("privloc", "random", "activation", "integrated_gradients")


def method_rankings(injection: Injection, components, cfg: LocalizeConfig, ig_steps: int, seed: int,
                    enc_known=None, progress: bool = True) -> dict[str, np.ndarray]:
    """Every method's neuron ranking on the injected facts.

    The targets are the facts' PII. `enc_known` (the victim's own corpus) is what the victim knew before:
    the methods with a contrast side use it there, i.e. Algorithm 1 keeps it (a second keep batch) and
    activation contrast subtracts the mean activation over it. Integrated gradients has no contrast side.
    """
    model, enc = injection.model, injection.enc_facts
    loc = localize(model, enc, replace(cfg, seed=seed), progress=progress, enc_keep=enc_known)
    masker = NeuronMasker(model, components)
    pii = enc.target_mask(cfg.kinds, first_token=cfg.first_token)
    return {
        "privloc": loc.masker.ranking(),
        "random": baselines.random_ranking(masker.n_neurons, seed),
        "activation": baselines.activation_contrast(model, enc, masker, pii, enc_contrast=enc_known),
        "integrated_gradients": baselines.integrated_gradients(model, enc, masker, pii, steps=ig_steps),
    }


def run_injection(v: Victim, seed: int, share: float, cfg: LocalizeConfig, n_subjects: int = 3,
                  docs_per_subject: int = 6, max_steps: int = 300, ig_steps: int = 16, lr: float = 1e-2,
                  keep_weight: float = 1.0, attack: AttackConfig | None = None,
                  progress: bool = True) -> tuple[Injection, pd.DataFrame]:
    """One injection (its own random S and fresh facts), then every method scored against S.

    With `attack`, the attack suite also runs on the injected facts before and after each method's top-|S|
    is switched off (`leak_any_injected_*`).
    """
    components = cfg.components
    masker = NeuronMasker(v.model, components)
    true_ids = choose_neurons(masker, share, seed)
    facts = fresh_facts(v.corpus.name, n_subjects, docs_per_subject, seed=seed, avoid=v.corpus.train)
    injection = inject(v.model, v.corpus.tokenizer, v.corpus.enc_train, facts, true_ids, components,
                       max_steps=max_steps, lr=lr, keep_weight=keep_weight, seed=seed, progress=progress,
                       max_len=v.corpus.enc_train.input_ids.shape[1])
    ppl_before = perplexity(injection.model, v.corpus.enc_valid)["ppl_nonpii"]
    em_original = leakage(injection.model, v.corpus.enc_train, kinds=ASSOC_ONLY)["em_assoc"]
    sets = candidate_sets(v, attack) if attack else None

    def leak_any() -> float:
        if not attack:
            return float("nan")
        return attack_suite(injection.model, injection.enc_facts, sets, attack).summary()["leak_any"]

    leak_before = leak_any()
    rows = []
    rankings = method_rankings(injection, components, cfg, ig_steps, seed, v.corpus.enc_train, progress)
    for method, ranking in rankings.items():
        found = ranking[: len(true_ids)]
        with masked(injection.model, found, components):
            em_injected_after = leakage(injection.model, injection.enc_facts, kinds=ASSOC_ONLY)["em_assoc"]
            em_original_after = leakage(injection.model, v.corpus.enc_train, kinds=ASSOC_ONLY)["em_assoc"]
            leak_after = leak_any()
            ppl_after = perplexity(injection.model, v.corpus.enc_valid)["ppl_nonpii"]
        rows.append({
            "seed": seed, "method": method, "k": len(true_ids), "share": share,
            "recall": recall_at_k(found, true_ids), "random_level": random_recall(len(true_ids), masker.n_neurons),
            "em_injected_before": injection.em_injected, "em_injected_after": em_injected_after,
            "em_original_before": em_original, "em_original_after": em_original_after,
            "leak_any_injected_before": leak_before, "leak_any_injected_after": leak_after,
            "ppl_change_pct": 100 * (ppl_after / ppl_before - 1), "injection_steps": injection.steps,
        })
    return injection, pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 3: mean over injections per method, with the spread of recall."""
    grouped = runs.groupby("method", sort=False)
    table = grouped[["share", "recall", "random_level", "em_injected_after", "em_original_after",
                     "leak_any_injected_before", "leak_any_injected_after", "ppl_change_pct"]].mean()
    table.insert(2, "recall_std", grouped["recall"].std(ddof=0))
    table["n_injections"] = grouped.size()
    return table.reset_index()


def variant_recalls(injection: Injection, cfg: LocalizeConfig, variants: dict[str, dict], seed: int = 0,
                    enc_known=None, progress: bool = True) -> pd.DataFrame:
    """Recall@|S| of Algorithm 1 on one injection under config variants (`label -> overrides`): what else was
    tried. `enc_known` as in `method_rankings`."""
    rows = []
    k = len(injection.neuron_ids)
    for label, overrides in variants.items():
        loc = localize(injection.model, injection.enc_facts, replace(cfg, seed=seed, **overrides), progress=progress,
                       enc_keep=enc_known)
        rows.append({"variant": label, "overrides": ", ".join(f"{key}={val}" for key, val in overrides.items()),
                     "recall": recall_at_k(loc.masker.ranking()[:k], injection.neuron_ids), "seconds": loc.seconds})
    return pd.DataFrame(rows)


def findings(table3: pd.DataFrame, runs: pd.DataFrame, tried: pd.DataFrame, budget: int) -> list[str]:
    """Notebook 07's "What we found": the injections, our recall against the others', and the variants tried."""
    t = table3.set_index("method")
    ours = t.loc["privloc"]
    best_other = t.drop(index="privloc")["recall"].idxmax()
    reached = runs.groupby("seed")["em_injected_before"].first()
    return [
        f"- The injections reached an exact match of {reached.mean():.2f} on the new facts (min {reached.min():.2f}; "
        "target 0.9)" + ("." if reached.min() >= 0.9 else
                         " — **below target: the planted memory is incomplete, so recall is measured against a "
                         "partly failed injection.**"),
        f"- Our mean recall@|S| is **{ours['recall']:.2f} ± {ours['recall_std']:.2f}** against a random level of "
        f"{ours['random_level']:.4f} ({ours['recall'] / ours['random_level']:.0f}×); the best other method is "
        f"{best_other} at {t.loc[best_other, 'recall']:.2f}.",
        f"- Switching our top-|S| off leaves {ours['em_injected_after']:.2f} of the injected facts' exact match "
        f"and {ours['em_original_after']:.2f} of the original PII's, at {ours['ppl_change_pct']:+.1f}% perplexity; "
        f"an attacker with {budget} tries still recovers {ours['leak_any_injected_after']:.2f} of the injected "
        f"facts (`leak_any`, {ours['leak_any_injected_before']:.2f} before).",
        "- Target of this companion: recall ≥ 0.5 and above every baseline. "
        + ("Met." if ours["recall"] >= 0.5 and ours["recall"] >= t.drop(index="privloc")["recall"].max()
           else f"Not met: short by {max(0.5 - ours['recall'], t.drop(index='privloc')['recall'].max() - ours['recall']):.2f}."),
        "- Variants on the first injection (recall@|S|): "
        + ", ".join(f"{r.variant} {r.recall:.2f}" for r in tried.itertuples()) + ".",
    ]
