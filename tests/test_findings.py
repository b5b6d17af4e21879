"""The "What we found" bullets of the notebooks, composed from small hand-built tables."""

from types import SimpleNamespace

import numpy as np
import pandas as pd

from privloc.study import findings, ground_truth, objectives
from privloc.study.analysis import layer_summary


def test_data_prep_counts_documents_tokens_and_assoc_occurrences():
    data = SimpleNamespace(train=[{}] * 5, valid=[{}] * 2, tokenizer=list(range(300)),
                           enc_train=SimpleNamespace(attention_mask=np.ones((5, 7))))
    counts = pd.DataFrame({"EMAIL": [3, 4], "PHONE": [1, 2]}, index=["assoc", "copy"])
    (line,) = findings.data_prep({"enron": data}, {"enron": counts})
    assert "**enron**: 5 training / 2 validation documents, 35 training tokens, vocabulary 300" in line
    assert "4 `assoc` PII occurrences (the memorisation targets) out of 10." in line


def test_memorization_names_each_victim_and_the_hardest_category():
    rows = [{"dataset": "enron", "em_assoc": 0.912, "train_seconds": 41.6, "ppl_nonpii": 12.345,
             "ppl_vs_best_pct": 1.25, "em_EMAIL": 0.95, "em_PHONE": 0.40},
            {"dataset": "echr", "em_assoc": 0.5, "train_seconds": 30.0, "ppl_nonpii": 9.0,
             "ppl_vs_best_pct": -0.5, "em_EMAIL": 0.85, "em_PHONE": 0.20}]
    lines = findings.memorization(rows, pd.DataFrame(rows))
    assert lines[0].startswith("- **enron**: `assoc` exact match **0.91** after 42 s of training")
    assert "perplexity 12.35 (+1.2% vs. its best during training)" in lines[0]
    assert "(-0.5% vs." in lines[1]
    assert "hardest category to memorise is `PHONE` (mean exact match 0.30)" in lines[2]


def test_layers_components_counts_layers_reached_and_the_mlp_share():
    shares = pd.DataFrame({"dataset": ["enron"] * 2 + ["echr"] * 2, "seed": 0, "layer": [0, 1, 0, 1],
                           "count": [3, 1, 4, 0], "share": [0.75, 0.25, 1.0, 0.0]})
    components = pd.DataFrame({"dataset": ["enron", "enron", "echr", "echr"],
                               "component": ["mlp.in", "attn.q", "mlp.in", "attn.q"],
                               "count": [3, 1, 2, 2], "size": [100, 50, 100, 50]})
    neurons_by_run = {("enron", 0): [], ("echr", 0): []}
    all_layers, mlp = findings.layers_components(components, shares, layer_summary(shares), neurons_by_run, 2)
    assert "enron seed 0 2/2, echr seed 0 1/2" in all_layers
    assert "some of our runs do not reach every layer." in all_layers
    assert "layer 0: 0.88 ± 0.12, layer 1: 0.12 ± 0.12" in all_layers
    assert "MLP components: echr 50%, enron 75%." in mlp
    assert "enron 3.00%" in mlp and "enron 2.00%" in mlp


def test_injection_findings_compare_our_recall_with_the_best_other_method():
    table3 = pd.DataFrame({"method": ["privloc", "random", "activation"], "recall": [0.6, 0.04, 0.3],
                           "recall_std": [0.05, 0.01, 0.1], "random_level": [0.04] * 3,
                           "em_injected_after": [0.1, 0.9, 0.5], "em_original_after": [0.8, 0.9, 0.7],
                           "ppl_change_pct": [2.5, 0.1, 1.0], "leak_any_injected_before": [0.97] * 3,
                           "leak_any_injected_after": [0.33, 0.95, 0.6]})
    runs = pd.DataFrame({"seed": [0, 0, 1, 1], "em_injected_before": [0.92, 0.92, 0.96, 0.96]})
    tried = pd.DataFrame({"variant": ["default", "kept"], "recall": [0.6, 0.35]})
    lines = ground_truth.findings(table3, runs, tried, budget=10)
    assert lines[0] == "- The injections reached an exact match of 0.94 on the new facts (min 0.92; target 0.9)."
    assert "**0.60 ± 0.05** against a random level of 0.0400 (15×); the best other method is activation at 0.30" \
        in lines[1]
    assert "an attacker with 10 tries still recovers 0.33" in lines[2] and "+2.5% perplexity" in lines[2]
    assert lines[3].endswith("Met.")
    assert lines[4] == "- Variants on the first injection (recall@|S|): default 0.60, kept 0.35."


def test_objective_findings_report_the_chosen_variant_and_the_candidate_floor():
    def variant_rows(dataset, candidates):
        frame = pd.DataFrame([
            {"variant": "original", "leak_any": 1.0, "leak_beam": 1.0, "leak_sample": 1.0, "ppl_change_pct": 0.0},
            {"variant": "first-token unlikelihood", "leak_any": 0.9, "leak_beam": 0.8, "leak_sample": 0.7,
             "ppl_change_pct": 1.0},
            {"variant": "every-token margin", "leak_any": 0.5, "leak_beam": 0.2, "leak_sample": 0.1,
             "ppl_change_pct": 2.0},
            {"variant": "every-token max-entropy", "leak_any": 0.4, "leak_beam": 0.1, "leak_sample": 0.1,
             "ppl_change_pct": 9.0}])
        return frame.assign(dataset=dataset, leak_greedy=0.3, leak_logit_lens=0.2, leak_candidates=candidates)

    table7 = pd.concat([variant_rows("enron", [0.99, 0.9, 0.8, 0.7]), variant_rows("echr", [0.95, 0.85, 0.75, 0.65])],
                       ignore_index=True)
    ranked = objectives.choose(table7, max_ppl_change_pct=5.0)
    gaps = pd.DataFrame({"dataset": ["enron", "enron"], "variant": ["original", "every-token margin"],
                         "gap_first_token": [4.0, 1.0], "gap_rest": [6.0, 3.0]})
    tuning = pd.DataFrame({"dataset": ["enron", "enron", "enron"],
                           "variant": ["original", "as in the profile", "400 steps"],
                           "leak_any": [1.0, 0.5, 0.45], "ppl_change_pct": [0.0, 2.0, 3.5],
                           "leak_beam": [1.0, 0.2, 0.15], "leak_sample": [1.0, 0.1, 0.05],
                           "leak_candidates": [1.0, 0.8, 0.78]})
    lines = objectives.findings(ranked, table7, gaps, tuning, ["enron", "echr"], "every-token margin")
    assert lines[0].startswith("- Chosen by the rule: **every-token margin** (mean over datasets: `leak_any` 0.500")
    assert "the one this run chooses." in lines[1]
    assert lines[2] == "- Excluded for perplexity: every-token max-entropy (+9.0%)."
    assert "enron 0.70, echr 0.65 (original: enron 0.99, echr 0.95)" in lines[3]
    assert "original 4.0 / 6.0; every-token margin 1.0 / 3.0" in lines[4]
    assert "e^4 times" in lines[5] and "75% of it" in lines[5]
    assert "enron 0.45 (400 steps, perplexity +3.5%; 0.50 as in the profile)" in lines[6]
    assert "candidate list stays at 0.78 or more" in lines[6]
