import numpy as np
import pytest
import torch
from helpers import tiny_model

from privloc.method.baselines import (
    activation_contrast,
    activation_contrast_scores,
    integrated_gradients,
    integrated_gradients_scores,
    pii_log_likelihood,
    random_matched,
    random_ranking,
)
from privloc.method.masking import NeuronMasker
from privloc.method.mitigate import masked


@pytest.fixture(scope="module")
def pii(enc):
    return enc.target_mask(("assoc",))


def no_hooks(model):
    return all(not (m._forward_hooks or m._forward_pre_hooks) for m in model.modules())


def assert_ranking(ranking, n):
    assert isinstance(ranking, np.ndarray) and ranking.shape == (n,)
    assert np.issubdtype(ranking.dtype, np.integer)
    assert np.array_equal(np.sort(ranking), np.arange(n))


# ---- random ---------------------------------------------------------------------------------------------

def test_random_ranking_is_a_seeded_permutation():
    assert_ranking(random_ranking(100, seed=3), 100)
    assert np.array_equal(random_ranking(100, 3), random_ranking(100, 3))
    assert not np.array_equal(random_ranking(100, 3), random_ranking(100, 4))


@pytest.mark.parametrize("components", [None, ("attn.v", "mlp.in")])
def test_random_matched_keeps_the_count_of_every_layer_and_component(model, components):
    masker = NeuronMasker(model) if components is None else NeuronMasker(model, components)
    rng = np.random.default_rng(0)
    reference = rng.choice(masker.n_neurons, 25, replace=False)
    picked = random_matched(masker, reference, seed=1)
    assert len(picked) == len(np.unique(picked)) == 25
    assert masker.counts(picked).equals(masker.counts(reference))
    assert np.array_equal(picked, random_matched(masker, reference, seed=1))
    assert not np.array_equal(picked, random_matched(masker, reference, seed=2))
    assert len(random_matched(masker, [], seed=0)) == 0


# ---- activation contrast --------------------------------------------------------------------------------

def test_activation_contrast_is_a_deterministic_ranking(model, enc, pii):
    masker = NeuronMasker(model)
    ranking = activation_contrast(model, enc, masker, pii, batch_size=3)
    assert_ranking(ranking, masker.n_neurons)
    assert np.array_equal(ranking, activation_contrast(model, enc, masker, pii, batch_size=3))
    assert no_hooks(model)
    # Batching only regroups the sums; the float32 activations themselves may round differently in another
    # batch shape (the BLAS picks its kernel by shape), by ~1e-7.
    np.testing.assert_allclose(activation_contrast_scores(model, enc, masker, pii, batch_size=1),
                               activation_contrast_scores(model, enc, masker, pii, batch_size=16), atol=1e-6)


def test_activation_contrast_ignores_an_attached_mask(model, enc, pii):
    masker = NeuronMasker(model)
    plain = activation_contrast_scores(model, enc, masker, pii)
    with masker.applied():
        masker.set_hard(np.arange(masker.n_neurons))
        assert np.array_equal(activation_contrast_scores(model, enc, masker, pii), plain)
        assert masker.mode == "hard"


@pytest.mark.parametrize("layer, component, unit", [(1, "mlp.out", 3), (0, "mlp.in", 5), (1, "attn.k", 2)])
@pytest.mark.parametrize("at_pii", [True, False])
def test_activation_contrast_finds_a_unit_forced_on_pii_positions(model, enc, pii, layer, component, unit, at_pii):
    masker = NeuronMasker(model)
    block, d = model.transformer.h[layer], masker.n_embd
    module, pre, column = {"mlp.out": (block.mlp.c_proj, False, unit), "mlp.in": (block.mlp.c_proj, True, unit),
                           "attn.k": (block.attn.c_attn, False, d + unit)}[component]
    rows = pii.any(1).nonzero().flatten()
    where = (pii if at_pii else enc.nonpii_mask())[rows]

    def force(x):
        x = x.clone()
        x[:, : where.shape[1], column] += 50.0 * where[:, : x.shape[1]].to(x.dtype)
        return x

    # Registered before the baseline's own hooks, so they see the forced value. One batch: rows line up.
    handle = (module.register_forward_pre_hook(lambda m, args: (force(args[0]),)) if pre
              else module.register_forward_hook(lambda m, args, out: force(out)))
    try:
        ranking = activation_contrast(model, enc, masker, pii, batch_size=16)
    finally:
        handle.remove()
    target = masker.neuron_id(layer, component, unit)
    assert ranking[0 if at_pii else -1] == target


def test_bad_inputs_are_refused(model, enc, pii):
    masker = NeuronMasker(model)
    with pytest.raises(ValueError, match="no target"):
        activation_contrast(model, enc, masker, torch.zeros_like(pii))
    with pytest.raises(ValueError, match="shape"):
        integrated_gradients(model, enc, masker, pii[:, :-1])
    with pytest.raises(ValueError, match="neurons"):
        activation_contrast(model, enc, NeuronMasker(tiny_model(n_layer=3)), pii)
    with pytest.raises(ValueError):
        random_matched(masker, [masker.n_neurons], seed=0)


# ---- integrated gradients -------------------------------------------------------------------------------

def test_integrated_gradients_is_a_deterministic_ranking_and_leaves_the_model_as_it_was(model, enc, pii):
    masker = NeuronMasker(model, ("attn.q", "mlp.in"))
    flags = [p.requires_grad for p in model.parameters()]
    ranking = integrated_gradients(model, enc, masker, pii, steps=3, batch_size=2)
    assert_ranking(ranking, masker.n_neurons)
    assert np.array_equal(ranking, integrated_gradients(model, enc, masker, pii, steps=3, batch_size=2))
    assert no_hooks(model) and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    # Batching only regroups the gradient sums.
    np.testing.assert_allclose(integrated_gradients_scores(model, enc, masker, pii, steps=3, batch_size=1),
                               integrated_gradients_scores(model, enc, masker, pii, steps=3, batch_size=8),
                               rtol=1e-4, atol=1e-4)


def test_integrated_gradients_completeness(model, enc, pii):
    """IG axiom: the attributions add up to logL(all gates open) − logL(all gates closed)."""
    masker = NeuronMasker(model)
    scores = integrated_gradients_scores(model, enc, masker, pii, steps=64)
    open_ = pii_log_likelihood(model, enc, pii)
    with masked(model, np.arange(masker.n_neurons)):
        closed = pii_log_likelihood(model, enc, pii)
    gap = open_ - closed
    assert abs(gap) > 1.0, "the check needs a model where the gates matter"
    # A 64-step Riemann sum is close here (measured: 0.05% off); the tolerance leaves room for other models.
    assert scores.sum() == pytest.approx(gap, rel=0.02)


def test_activation_contrast_with_a_contrast_corpus(model, enc, pii):
    masker = NeuronMasker(model)
    plain = activation_contrast_scores(model, enc, masker, pii)
    with_corpus = activation_contrast_scores(model, enc, masker, pii, batch_size=2, enc_contrast=enc)
    assert not np.allclose(plain, with_corpus)
    # Batching only regroups the sums, on the contrast corpus too (up to float32 rounding, as above).
    np.testing.assert_allclose(with_corpus, activation_contrast_scores(model, enc, masker, pii, batch_size=16,
                                                                       enc_contrast=enc), atol=1e-6)
    assert_ranking(activation_contrast(model, enc, masker, pii, enc_contrast=enc), masker.n_neurons)
    assert no_hooks(model)
