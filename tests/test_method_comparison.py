"""Equal-budget selection, scrubbing and the off-diagonal mean used by the comparison notebooks."""

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from privloc.config import get_profile
from privloc.corpora.data import scrub
from privloc.method.masking import NeuronMasker
from privloc.study.analysis import offdiag_mean
from privloc.study.method_comparison import matched_top_k


def tiny_masker():
    config = GPT2Config(n_layer=2, n_embd=8, n_head=2, n_positions=16, vocab_size=20)
    return NeuronMasker(GPT2LMHeadModel(config), components=("attn.o", "mlp.in"))


def test_matched_top_k_keeps_cell_counts_and_follows_ranking():
    masker = tiny_masker()  # layer 0: attn.o 0-7, mlp.in 8-39; layer 1: attn.o 40-47, mlp.in 48-79
    reference = np.array([0, 1, 8, 45])  # layer 0: 2 attn.o + 1 mlp.in; layer 1: 1 attn.o
    ranking = np.array([79, 78, 50, 7, 9, 3, 2, 40, 41] + [i for i in range(80) if i not in (79, 78, 50, 7, 9, 3, 2,
                                                                                             40, 41)])
    chosen = matched_top_k(ranking, masker, reference)
    assert chosen.tolist() == [3, 7, 9, 40]  # 79, 78, 50 sit in cells with no budget
    assert masker.counts(chosen).equals(masker.counts(reference))
    assert np.array_equal(matched_top_k(np.arange(80), masker, reference), np.array([0, 1, 8, 40]))


def test_scrub_replaces_spans_with_tags():
    record = {"text": "Ann Lee, 713-555-0142.", "spans": [
        {"start": 9, "end": 21, "category": "PHONE", "subject": "s1"},
        {"start": 0, "end": 7, "category": "PERSON", "subject": "s1"}]}
    (out,) = scrub([record])
    assert out["text"] == "[PERSON], [PHONE]." and out["spans"] == []
    assert record["spans"]  # input untouched


def test_offdiag_mean():
    m = pd.DataFrame([[1.0, 0.2, 0.4], [0.2, 1.0, np.nan], [0.4, np.nan, 1.0]])
    assert abs(offdiag_mean(m) - 0.3) < 1e-12
    assert torch.isnan(torch.tensor(offdiag_mean(pd.DataFrame([[1.0]]))))


def test_penalty_weights_per_neuron_and_per_cell():
    from privloc.method.localize import _penalty_weights

    masker = tiny_masker()  # 2 layers x (attn.o 8 units, mlp.in 32 units)
    neuron = _penalty_weights(masker, "neuron")
    assert torch.allclose(neuron, torch.full((80,), 1 / 80))
    cell = _penalty_weights(masker, "cell")
    assert torch.isclose(cell.sum(), torch.tensor(1.0))
    assert torch.isclose(cell[0], 4 * cell[8])  # an attn.o unit costs as much as four mlp.in units
    with pytest.raises(ValueError, match="unknown penalty"):
        _penalty_weights(masker, "l2")


def test_effect_by_part_switches_off_one_part_at_a_time(tmp_path, monkeypatch):
    from privloc.study import pipeline
    from privloc.study.method_comparison import effect_by_part

    monkeypatch.setenv("PRIVLOC_CACHE", str(tmp_path))
    v = pipeline.victim("echr", get_profile("smoke"), progress=False)
    masker = NeuronMasker(v.model)
    layer0_mlp = [masker.neuron_id(0, "mlp.in", u) for u in range(5)]
    later = [masker.neuron_id(masker.n_layer - 1, "attn.o", u) for u in range(3)]
    sets = {"a": np.array(layer0_mlp + later), "b": np.array(later)}
    # The smoke victim memorises nothing (exact match 0), so the test follows perplexity, which every unit moves.
    metric = "ppl_nonpii"
    effect = {name: pipeline.deactivation_effect(v, ids, masker.components)[metric]
              for name, ids in {"layer0": layer0_mlp, "later": later}.items()}
    original = pipeline.memorisation_metrics(v.model, v.corpus)[metric]
    assert effect["layer0"] != original and effect["later"] != original

    by_layer = effect_by_part(v, masker, sets, by="layer", metric=metric)
    assert list(by_layer.index) == [f"layer {i}" for i in range(masker.n_layer)]
    assert by_layer[("a", "neurons")].tolist() == [5] + [0] * (masker.n_layer - 2) + [3]
    assert by_layer[("a", metric)].tolist() == [effect["layer0"]] + [original] * (masker.n_layer - 2) + [effect["later"]]
    assert by_layer[("b", metric)].tolist() == [original] * (masker.n_layer - 1) + [effect["later"]]

    by_component = effect_by_part(v, masker, sets, by="component", metric=metric)
    assert list(by_component.index) == list(masker.components)
    assert by_component.loc["mlp.in", ("a", metric)] == effect["layer0"]
    assert by_component.loc["attn.o", ("a", "neurons")] == 3 and by_component.loc["attn.o", ("b", metric)] == effect["later"]
    assert by_component.loc["attn.q", ("a", metric)] == original
    with pytest.raises(ValueError, match="layer"):
        effect_by_part(v, masker, sets, by="head")
