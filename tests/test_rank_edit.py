"""Rank editing in vocabulary space (privloc.method.rank_edit)."""

import numpy as np
import pytest
import torch
from helpers import tiny_corpus, tiny_model

from privloc.config import RankEditConfig
from privloc.method.masking import COMPONENTS, NeuronMasker
from privloc.method.rank_edit import UNIT, _layers, _vectors, rank_edit, targets


def test_the_targets_are_the_rarest_tokens_of_each_memorised_span_at_the_positions_that_predict_them():
    enc = tiny_corpus()  # spans: row 0 tokens 4-6, row 1 tokens 8-9, row 3 tokens 2-3
    counts = torch.bincount(enc.input_ids[enc.attention_mask.bool()])
    chosen = targets(enc, 2)
    assert [(row, pos) for row, pos, _ in chosen][2:] == [(1, 7), (1, 8), (2 + 1, 1), (3, 2)]
    first = [pos + 1 for row, pos, _ in chosen if row == 0]
    rarest = sorted((4, 5, 6), key=lambda q: (int(counts[enc.input_ids[0, q]]), q))[:2]
    assert first == sorted(rarest)
    for row, pos, token in chosen:
        assert enc.input_ids[row, pos + 1] == token
    assert len(targets(enc, 1)) == 3


def test_a_rank_edit_rewrites_only_the_mlp_output_vectors_it_reports():
    model, enc = tiny_model(seed=3), tiny_corpus()
    cfg = RankEditConfig(units_per_target=2, layers=1, candidates=8, demote_rank=50)
    out = rank_edit(model, enc, None, COMPONENTS, cfg, progress=False)
    assert out.targets == len(targets(enc, cfg.tokens_per_span)) and out.units > 0 and out.skipped == 0
    layers, _ = _layers(model, None, COMPONENTS)
    projections = {id(layer.module.weight) for layer in layers}
    changed = [(name, p, q) for (name, p), q in zip(model.named_parameters(), out.model.parameters(), strict=True)
               if not torch.equal(p, q)]
    assert changed and all(id(p) in projections for _, p, _ in changed)
    edited_layers, _ = _layers(out.model, None, COMPONENTS)
    moved = 0
    for before, after in zip(layers, edited_layers, strict=True):
        units = torch.arange(len(before.columns))
        diff = (_vectors(before, units) != _vectors(after, units)).any(1)
        moved += int(diff.sum())
    assert moved == out.units
    # The original is untouched.
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), tiny_model(seed=3).parameters(), strict=True))


def test_a_pool_restricts_the_edit_to_its_mlp_units_and_counts_the_others():
    model, enc = tiny_model(seed=3), tiny_corpus()
    layout = NeuronMasker(model)
    table = layout.neuron_table()
    mlp = np.flatnonzero(np.asarray(layout.components)[table["component"]] == UNIT)
    other = np.flatnonzero(np.asarray(layout.components)[table["component"]] != UNIT)
    pool = np.concatenate([mlp[::7], other[:5]])
    cfg = RankEditConfig(units_per_target=3, layers=2, candidates=8, demote_rank=50)
    out = rank_edit(model, enc, pool, COMPONENTS, cfg, progress=False)
    assert out.skipped == 5 and 0 < out.units <= len(mlp[::7])
    layers, _ = _layers(model, None, COMPONENTS)
    edited_layers, _ = _layers(out.model, None, COMPONENTS)
    allowed = {(int(table["layer"][i]), int(table["unit"][i])) for i in mlp[::7]}
    for ly, (before, after) in enumerate(zip(layers, edited_layers, strict=True)):
        units = torch.arange(len(before.columns))
        for u in torch.nonzero((_vectors(before, units) != _vectors(after, units)).any(1)).flatten().tolist():
            assert (ly, u) in allowed
    with pytest.raises(ValueError, match="no MLP unit"):
        rank_edit(model, enc, other[:5], COMPONENTS, cfg, progress=False)


def test_demotion_moves_the_token_below_the_aimed_rank():
    from privloc.method.rank_edit import _demote, _ranks

    torch.manual_seed(0)
    scale = torch.randn(300, 16)
    back = torch.linalg.pinv(scale)
    leverage = (scale * back.T).sum(1)
    vectors = torch.stack([scale[7] * 3, scale[7] * 2 + scale[3] * 0.2])  # both promote token 7 to the top
    assert _ranks(vectors @ scale.T, torch.tensor([7, 7])).tolist() == [1, 1]
    new = _demote(vectors, 7, scale, back, leverage, aim=100, rounds=20)
    assert (_ranks(new @ scale.T, torch.tensor([7, 7])) >= 100).all()
    # Of the moves that lower token 7's score as much, it is the one that moves the other scores least.
    move = new - vectors
    lowered = (move @ scale.T)[:, 7]
    plain = lowered[:, None] * scale[7][None, :] / scale[7].dot(scale[7])  # straight down token 7's own row
    others = torch.arange(300) != 7
    assert torch.allclose((plain @ scale.T)[:, 7], lowered, rtol=1e-4)
    assert (((move @ scale.T)[:, others] ** 2).sum(1) < ((plain @ scale.T)[:, others] ** 2).sum(1)).all()
