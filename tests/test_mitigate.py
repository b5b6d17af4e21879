import numpy as np
import pytest
import torch
import transformers
from helpers import logits

from privloc.method.masking import COMPONENTS, NeuronMasker
from privloc.method.mitigate import deactivate, masked


def spread_ids(masker, per_cell=2, seed=0):
    """A few ids in every (layer, component) cell."""
    rng = np.random.default_rng(seed)
    return np.concatenate([
        [masker.neuron_id(ly, c, u) for u in rng.choice(size, per_cell, replace=False)]
        for ly in range(masker.n_layer) for c, size in masker.component_sizes.items()
    ])


def no_hooks(model):
    return all(not (m._forward_hooks or m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("components", [COMPONENTS, ("attn.k", "mlp.in")])
def test_deactivated_copy_reloads_as_plain_gpt2_and_matches_the_hard_mask(model, ids, tmp_path, components):
    masker = NeuronMasker(model, components)
    closed = spread_ids(masker)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    edited = deactivate(model, closed, components)
    edited.save_pretrained(tmp_path)
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()

    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"original weight {k} changed"
    assert no_hooks(model) and no_hooks(reloaded)
    masker.set_hard(closed)
    with masker:
        hooked = logits(model, ids)
    assert not torch.allclose(hooked, logits(model, ids), atol=1e-3), "closing the units should matter"
    torch.testing.assert_close(logits(reloaded, ids), hooked, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits(edited, ids), hooked, atol=1e-5, rtol=0)


def test_deactivate_does_not_carry_an_attached_masker(model, ids):
    reference = logits(model, ids)
    with NeuronMasker(model).applied(mode="hard") as masker:
        masker.set_hard(np.arange(masker.n_neurons))
        edited = deactivate(model, [])
        # Checked while the masker is attached: a carried hook would close every unit of the copy.
        assert torch.equal(logits(edited, ids), reference)
        assert no_hooks(edited)


def test_deactivate_rejects_bad_ids(model):
    with pytest.raises(ValueError):
        deactivate(model, [10**6])


def test_masked_closes_the_units_and_restores_exactly(model, ids):
    reference = logits(model, ids)
    flags = [p.requires_grad for p in model.parameters()]
    closed = spread_ids(NeuronMasker(model), seed=1)
    with masked(model, closed) as inside:
        assert inside is model
        during = logits(model, ids)
    torch.testing.assert_close(during, logits(deactivate(model, closed), ids), atol=1e-5, rtol=0)
    assert not torch.allclose(during, reference, atol=1e-3)
    assert torch.equal(logits(model, ids), reference)
    assert no_hooks(model)
    assert [p.requires_grad for p in model.parameters()] == flags
