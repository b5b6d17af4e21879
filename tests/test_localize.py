"""Algorithm 1 on a tiny model: the loop closes gates that carry the PII, and the selection rules hold."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_model

from privloc.config import LocalizeConfig, TrainConfig
from privloc.method.baselines import pii_log_likelihood
from privloc.method.localize import localize, pii_loss
from privloc.method.mitigate import masked
from privloc.method.model import train_victim

BASE = LocalizeConfig(steps=60, batch_size=4, lambda_keep=1.0, first_token=False)


@pytest.fixture(scope="module")
def memorising(enc):
    """The tiny model after 100 training steps on the tiny corpus: its PII tokens are predicted, so there is
    something to remove (the random tiny model gives them p ~ 0.02)."""
    model = tiny_model()
    train_victim(model, enc, TrainConfig(steps=100, batch_size=4, lr=3e-2, warmup=5), progress=False)
    return model


def test_first_token_keeps_one_target_per_span(enc):
    every = enc.target_mask(("assoc",))
    first = enc.target_mask(("assoc",), first_token=True)
    assert (first & ~every).sum() == 0
    # tiny_corpus has three contiguous PII blocks: one first token each.
    assert int(first.sum()) == 3 and int(every.sum()) == 7
    assert first[0, 3] and not first[0, 4]  # the EMAIL block at tokens 4-6 is predicted from position 3


@pytest.mark.parametrize("cfg", [replace(BASE, target_share=0.05), replace(BASE, target_share=None, lambda_0=0.5),
                                 replace(BASE, target_share=0.05, autocast="bfloat16")],
                         ids=["share", "lambda", "bf16"])
def test_loop_closes_gates_that_lower_the_pii_likelihood(memorising, enc, cfg):
    model = memorising
    before = {n: p.clone() for n, p in model.state_dict().items()}
    pii = enc.target_mask(cfg.kinds, first_token=cfg.first_token)
    loc = localize(model, enc, cfg, progress=False)
    ids = loc.closed_ids()
    assert 0 < len(ids) < loc.masker.n_neurons
    if cfg.target_share is not None:
        assert len(ids) == round(cfg.target_share * loc.masker.n_neurons)
        assert np.array_equal(np.sort(loc.masker.top_k(len(ids))), ids)
    else:
        assert np.array_equal(ids, loc.masker.closed_ids())
    original = pii_log_likelihood(model, enc, pii)
    with masked(model, ids, loc.masker.components):
        after = pii_log_likelihood(model, enc, pii)
    assert original > -3.0 and after < original - 2.0  # the memorised PII's summed log-likelihood falls
    # Only log α was trained: every weight is bit-identical, and nothing stays attached.
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    assert all(not (m._forward_hooks or m._forward_pre_hooks) for m in model.modules())
    assert [h["step"] for h in loc.history] == list(range(1, cfg.steps + 1))


def test_pii_loss_is_the_stable_unlikelihood():
    logits = torch.tensor([[30.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    targets = torch.tensor([0, 2])
    p = torch.softmax(logits.double(), -1)[torch.arange(2), targets]
    expected = (-torch.log1p(-p)).mean()
    assert torch.isclose(pii_loss(logits, targets).double(), expected, rtol=1e-4)
    assert torch.isfinite(pii_loss(torch.tensor([[80.0, 0.0]]), torch.tensor([0])))
    with pytest.raises(ValueError, match="unknown PII loss"):
        pii_loss(logits, targets, kind="nope")


def test_second_keep_corpus(model, enc):
    cfg = replace(BASE, steps=8, target_share=0.05)
    plain = localize(model, enc, cfg, progress=False)
    # keep_batch_size = 0 ignores the second corpus: the same draws, the same gates.
    ignored = localize(model, enc, replace(cfg, keep_batch_size=0), progress=False, enc_keep=enc)
    assert torch.equal(plain.masker.gates.log_alpha, ignored.masker.gates.log_alpha)
    used = localize(model, enc, replace(cfg, keep_batch_size=2), progress=False, enc_keep=enc)
    assert not torch.equal(plain.masker.gates.log_alpha, used.masker.gates.log_alpha)
    assert len(used.closed_ids()) == round(0.05 * used.masker.n_neurons)


def test_keep_corpus_alone(model, enc):
    cfg = replace(BASE, steps=8, target_share=0.05, keep_batch=False)
    with pytest.raises(ValueError, match="nothing to keep"):
        localize(model, enc, cfg, progress=False)
    with pytest.raises(ValueError, match="nothing to keep"):
        localize(model, enc, replace(cfg, keep_batch_size=0), progress=False, enc_keep=enc)
    alone = localize(model, enc, replace(cfg, keep_batch_size=2), progress=False, enc_keep=enc)
    both = localize(model, enc, replace(cfg, keep_batch_size=2, keep_batch=True), progress=False, enc_keep=enc)
    assert not torch.equal(alone.masker.gates.log_alpha, both.masker.gates.log_alpha)
    history = pd.DataFrame(alone.history)
    assert history["loss_keep"].notna().all() and len(alone.closed_ids()) == round(0.05 * alone.masker.n_neurons)


@pytest.mark.parametrize("target", [0.01, 0.02, 0.04, 0.08])
def test_projection_holds_the_expected_closed_share_at_the_target(memorising, enc, target):
    cfg = replace(BASE, steps=30, target_share=target, share_control="projection")
    loc = localize(memorising, enc, cfg, progress=False)
    assert all(abs(h["expected_closed_share"] - target) < 1e-4 for h in loc.history)
    expected = float(loc.masker.gates.p_closed().sum())
    assert expected == pytest.approx(target * loc.masker.n_neurons, rel=1e-3)
    assert loc.n_closed == round(target * loc.masker.n_neurons)


def test_an_unknown_share_control_is_refused(memorising, enc):
    with pytest.raises(ValueError, match="share_control"):
        localize(memorising, enc, replace(BASE, steps=1, share_control="fixed"), progress=False)


@pytest.mark.parametrize("kind", ["margin", "entropy"])
def test_the_new_suppression_losses_are_zero_only_when_nothing_is_left_to_find(kind):
    logits = torch.tensor([[5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    targets = torch.tensor([0, 0])
    per_row = [pii_loss(logits[i:i + 1], targets[i:i + 1], kind, margin_rank=2) for i in range(2)]
    assert per_row[0] > per_row[1]
    if kind == "entropy":
        assert per_row[1].item() == pytest.approx(0.0, abs=1e-6)  # a uniform prediction says nothing
