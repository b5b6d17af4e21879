"""Editing the privacy neurons' weights instead of zeroing them (privloc.method.removal)."""

import numpy as np
import pytest
import torch
from helpers import tiny_corpus, tiny_model

from privloc.method.masking import COMPONENTS, NeuronMasker
from privloc.method.mitigate import deactivate
from privloc.method.removal import EditConfig, edit_path, edit_units, unit_weight_masks


def _pii_logprob(model, enc):
    with torch.no_grad():
        logp = model(enc.input_ids, attention_mask=enc.attention_mask).logits[:, :-1].log_softmax(-1)
    pii = enc.target_mask(("assoc",))[:, : logp.shape[1]]
    return logp.gather(-1, enc.input_ids[:, 1:, None]).squeeze(-1)[pii].sum().item()


def test_the_unit_masks_cover_exactly_what_deactivation_zeroes():
    model = tiny_model()
    ids = np.array([0, 3, 20, 40, 70])
    masks = unit_weight_masks(model, ids, COMPONENTS)
    zeroed = deactivate(model, ids, COMPONENTS)
    for (name, p), q in zip(model.named_parameters(), zeroed.parameters(), strict=True):
        changed = (p != q).float()
        if p in masks:
            assert torch.equal(changed, masks[p] * (p != 0).float()), name
        else:
            assert not changed.any(), name


def test_an_edit_moves_only_the_units_and_lowers_the_memorised_pii():
    model, enc = tiny_model(seed=3), tiny_corpus()
    ids = np.random.default_rng(0).choice(len(NeuronMasker(model).ranking()), 24, replace=False)
    # The tiny model has memorised nothing, so p(PII) is small and unlikelihood has next to no gradient: the
    # clipped negative cross-entropy pushes the same tokens down from any starting point.
    cfg = EditConfig(steps=30, batch_size=2, lr=1e-2, keep_weight=0.1, loss="neg_ce")
    edited = edit_units(model, enc, ids, COMPONENTS, cfg, progress=False)
    masks = unit_weight_masks(model, ids, COMPONENTS)
    for p, q in zip(model.parameters(), edited.parameters(), strict=True):
        outside = (p != q) & ~(masks[p].bool() if p in masks else torch.zeros_like(p, dtype=torch.bool))
        assert not outside.any()
    assert any((p != q).any() for p, q in zip(model.parameters(), edited.parameters(), strict=True))
    assert _pii_logprob(edited, enc) < _pii_logprob(model, enc) - 1.0
    # Every weight: the unconstrained reference moves more than the units alone.
    everything = edit_units(model, enc, None, COMPONENTS, cfg, progress=False)
    assert _pii_logprob(everything, enc) < _pii_logprob(model, enc) - 1.0
    assert all(not p.requires_grad for p in edited.parameters())


def test_the_path_of_one_edit_holds_each_strength_it_passes_through():
    model, enc = tiny_model(seed=3), tiny_corpus()
    ids = np.arange(0, 288, 12)
    cfg = EditConfig(steps=6, batch_size=2, lr=1e-2, loss="neg_ce")
    path = edit_path(model, enc, ids, COMPONENTS, cfg, at=(3, 6))
    assert sorted(path) == [3, 6]
    alone = edit_units(model, enc, ids, COMPONENTS, cfg, progress=False)
    assert 0 < path[3].seconds <= path[6].seconds
    for p, q, r in zip(path[6].model.parameters(), alone.parameters(), path[3].model.parameters(), strict=True):
        assert torch.equal(p, q)
        assert not r.requires_grad
    assert any(not torch.equal(p, r) for p, r in zip(path[6].model.parameters(), path[3].model.parameters(),
                                                      strict=True))


def test_substitution_replaces_each_subjects_value_alike_within_a_document():
    from privloc.corpora.data import substitute

    text = "Ann Lee met Bob. Ann Lee called 555-1234 on 1 May."
    record = {"text": text, "spans": [
        {"start": 0, "end": 7, "category": "PERSON", "subject": "s1"},
        {"start": 17, "end": 24, "category": "PERSON", "subject": "s1"},
        {"start": 32, "end": 40, "category": "PHONE", "subject": "s1"},
        {"start": 44, "end": 49, "category": "DATE", "subject": None}]}
    (new,) = substitute([record], {"PERSON": ["Zed Quill"], "PHONE": ["999-000-1111"]}, np.random.default_rng(0))
    got = [new["text"][s["start"]: s["end"]] for s in new["spans"]]
    assert got == ["Zed Quill", "Zed Quill", "999-000-1111", "1 May"]
    assert new["text"] == "Zed Quill met Bob. Zed Quill called 999-000-1111 on 1 May."


def test_npo_starts_at_its_neutral_value_and_lowers_the_memorised_pii():
    from privloc.method.model import next_token_logits
    from privloc.method.removal import _npo_loss

    model, enc = tiny_model(seed=3), tiny_corpus()
    ids, attention = enc.input_ids[:4], enc.attention_mask[:4]
    pii = enc.target_mask(("assoc",))[:4]
    with torch.no_grad():
        logits = next_token_logits(model, ids, attention, pii)
    # Against itself the log-ratio is 0 for every document: -(2/β) log σ(0) = (2/β) log 2.
    loss = _npo_loss(model, logits, ids, attention, pii, ids[:, 1:], 0.5, None, ids.device)
    assert loss.item() == pytest.approx(4 * np.log(2), rel=1e-5)
    cfg = EditConfig(steps=20, batch_size=2, lr=1e-2, keep_weight=0.1, loss="npo")
    edited = edit_units(model, enc, None, COMPONENTS, cfg, progress=False)
    assert _pii_logprob(edited, enc) < _pii_logprob(model, enc) - 1.0
