import copy
import math

import numpy as np
import pytest
import torch
from helpers import logits, tiny_model

from privloc.method.masking import COMPONENTS, HardConcrete, NeuronMasker


def no_hooks(model):
    return all(not (m._forward_hooks or m._forward_pre_hooks) for m in model.modules())


# ---- HardConcrete (D2) --------------------------------------------------------------------------

def gates_at(values):
    hc = HardConcrete(len(values))
    with torch.no_grad():
        hc.log_alpha.copy_(torch.tensor(values))
    return hc


def test_hardconcrete_known_values():
    hc = gates_at([0.0, 3.0, -3.0])
    p_closed, p_open = hc.p_closed().detach(), hc.p_open_exact().detach()
    assert p_closed[0].item() == pytest.approx(0.168, abs=1e-3)
    assert p_open[0].item() == pytest.approx(0.168, abs=1e-3)
    assert 1 - p_closed[1].item() == pytest.approx(0.990, abs=1e-3)
    assert 1 - p_closed[2].item() == pytest.approx(0.198, abs=1e-3)
    det = hc.deterministic().detach()
    assert det[0].item() == pytest.approx(0.5)
    assert det[1].item() == 1.0 and det[2].item() == 0.0


def test_hardconcrete_monte_carlo():
    values = [0.0, 3.0, -3.0, 1.0]
    n = 200_000
    hc = gates_at([v for v in values for _ in range(n)])
    with torch.no_grad():
        z = hc.sample(torch.Generator().manual_seed(0)).view(len(values), n)
        p_closed, p_open = gates_at(values).p_closed(), gates_at(values).p_open_exact()
    assert torch.allclose((z == 0).float().mean(1), p_closed, atol=0.01)
    assert torch.allclose((z == 1).float().mean(1), p_open, atol=0.01)
    assert z[0].mean().item() == pytest.approx(0.5, abs=0.01)


def test_hardconcrete_sample_is_differentiable():
    hc = gates_at([0.0, 0.5, -0.5, 1.0])
    hc.sample(torch.Generator().manual_seed(0)).sum().backward()
    assert hc.log_alpha.grad is not None and torch.isfinite(hc.log_alpha.grad).all()
    assert hc.log_alpha.grad.abs().sum() > 0


# ---- hooks (D1) ----------------------------------------------------------------------------------

def zeroed_copy(model, component, layer, units):
    """The reference for a closed gate: the unit's weight column and bias set to zero."""
    ref = copy.deepcopy(model)
    block = ref.transformer.h[layer]
    d = model.config.n_embd
    shift = {"attn.q": 0, "attn.k": d, "attn.v": 2 * d}.get(component, 0)
    conv = {"attn.o": block.attn.c_proj, "mlp.in": block.mlp.c_fc, "mlp.out": block.mlp.c_proj}.get(
        component, block.attn.c_attn)
    cols = torch.tensor(units) + shift
    with torch.no_grad():
        conv.weight[:, cols] = 0.0
        conv.bias[cols] = 0.0
    return ref


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_open_and_closed(model, ids, component):
    base = logits(model, ids)
    masker = NeuronMasker(model, components=(component,))
    assert masker.n_neurons == 2 * masker.component_sizes[component]
    with masker.applied("deterministic"):
        assert torch.equal(logits(model, ids), base)
    units = [0, 3, 5]
    masker.set_hard([masker.neuron_id(1, component, u) for u in units])
    with masker:
        masked = logits(model, ids)
    expected = logits(zeroed_copy(model, component, 1, units), ids)
    assert not torch.allclose(masked, base, atol=1e-6)
    assert torch.allclose(masked, expected, atol=1e-6)
    assert no_hooks(model)


def test_all_components_open_is_bit_identical(model, ids):
    base = logits(model, ids)
    masker = NeuronMasker(model)
    for mode in ("off", "deterministic", "hard"):
        with masker.applied(mode):
            assert torch.equal(logits(model, ids), base)
    assert masker.mode == "deterministic" and not masker.attached and no_hooks(model)


def test_off_mode_returns_output_object_unchanged(model):
    masker = NeuronMasker(model, mode="off")
    conv = model.transformer.h[0].attn.c_proj
    seen = {}
    handle = conv.register_forward_hook(lambda m, a, out: seen.setdefault("inner", out))
    with masker:
        x = torch.randn(1, 2, 16)
        out = conv(x)
    handle.remove()
    assert out is seen["inner"]


def test_detach_restores_model(model, ids):
    base = logits(model, ids)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.lm_head.weight.requires_grad_(True)
    model.transformer.h[0].ln_1.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    masker = NeuronMasker(model)
    masker.set_hard(range(0, masker.n_neurons, 3))
    with masker:
        assert not no_hooks(model)
        assert not any(p.requires_grad for p in model.parameters())
        assert not torch.equal(logits(model, ids), base)
    assert no_hooks(model)
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(logits(model, ids), base)
    model.transformer.h[0].ln_1.weight.requires_grad_(True)


def test_sample_mode_one_draw_per_forward_and_gradients(model, ids):
    masker = NeuronMasker(model, init_log_alpha=0.0, mode="sample")
    masker.generator = torch.Generator().manual_seed(0)
    draws = []
    with masker:
        handle = model.register_forward_hook(lambda m, a, out: draws.append(masker._z_ext.detach().clone()))
        loss = model(ids).logits.float().pow(2).mean()
        model(ids)
        handle.remove()
        loss.backward()
    assert not torch.equal(draws[0], draws[1])
    grad = masker.gates.log_alpha.grad
    assert grad is not None and grad.abs().sum() > 0
    # Same seed, same draw: the gates of a forward do not depend on how many hooks read them.
    masker.generator = torch.Generator().manual_seed(0)
    with masker.applied("sample"):
        again = model(ids).logits
    assert torch.allclose(again.float().pow(2).mean(), loss.detach())


def test_mode_validation(model):
    masker = NeuronMasker(model)
    with pytest.raises(ValueError, match="mode"):
        masker.mode = "soft"
    with pytest.raises(ValueError, match="components"):
        NeuronMasker(model, components=("mlp.hidden",))
    with pytest.raises(ValueError, match="range"):
        masker.set_hard([masker.n_neurons])


# ---- ids and selection (D4) ----------------------------------------------------------------------

def test_neuron_table_layout(model):
    masker = NeuronMasker(model, components=("mlp.in", "attn.q"))
    t = masker.neuron_table()
    assert masker.component_sizes == {"mlp.in": 64, "attn.q": 16}
    assert masker.n_neurons == 2 * (64 + 16) == len(t["layer"])
    assert masker.neuron_id(1, "attn.q", 5) == 80 + 64 + 5
    i = masker.neuron_id(1, "attn.q", 5)
    assert (t["layer"][i], masker.components[t["component"][i]], t["unit"][i]) == (1, "attn.q", 5)
    assert np.all(np.diff(t["layer"]) >= 0)


def test_selection_and_counts(model):
    masker = NeuronMasker(model, components=("attn.o", "mlp.out"))
    la = torch.full((masker.n_neurons,), 3.0)
    la[[40, 7, 20, 50]] = torch.tensor([-5.0, -4.0, -4.0, 0.0])
    with torch.no_grad():
        masker.gates.log_alpha.copy_(la)
    assert masker.closed_ids().tolist() == [7, 20, 40]
    assert masker.ranking()[:5].tolist() == [40, 7, 20, 50, 0]
    assert masker.top_k(2).tolist() == [40, 7]
    assert sorted(masker.ranking().tolist()) == list(range(masker.n_neurons))
    with pytest.raises(ValueError):
        masker.top_k(masker.n_neurons + 1)
    df = masker.counts(masker.closed_ids())
    # ids 7 and 20 are layer 0 (attn.o, mlp.out); 40 is layer 1 attn.o.
    assert df.loc[0, "attn.o"] == 1 and df.loc[0, "mlp.out"] == 1 and df.loc[1, "attn.o"] == 1
    assert df.loc["total", "attn.o"] == 2 and df.loc[0, "total"] == 2 and df.loc["total", "total"] == 3


# ---- persistence ---------------------------------------------------------------------------------

def test_save_load_round_trip(model, tmp_path):
    masker = NeuronMasker(model)
    with torch.no_grad():
        masker.gates.log_alpha.normal_()
    masker.save(tmp_path / "mask", meta={"dataset": "enron"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.json", "mask.safetensors"]
    other = NeuronMasker(model)
    assert other.load(tmp_path / "mask") == {"dataset": "enron"}
    assert torch.equal(other.gates.log_alpha, masker.gates.log_alpha)
    loaded = NeuronMasker.from_file(model, tmp_path / "mask.safetensors")
    assert torch.equal(loaded.gates.log_alpha, masker.gates.log_alpha)


@pytest.mark.parametrize("kind, match", [
    ("width", "n_embd"), ("depth", "n_layer"), ("components", "components"),
])
def test_load_refuses_mismatch(model, tmp_path, kind, match):
    source = {"width": lambda: NeuronMasker(tiny_model(n_embd=32)),
              "depth": lambda: NeuronMasker(tiny_model(n_layer=3)),
              "components": lambda: NeuronMasker(model, components=("mlp.in",))}[kind]()
    source.save(tmp_path / "m")
    target = NeuronMasker(model, init_log_alpha=1.5)
    with pytest.raises(ValueError, match=match):
        target.load(tmp_path / "m")
    assert torch.equal(target.gates.log_alpha, torch.full((target.n_neurons,), 1.5))


def test_load_refuses_missing_or_corrupt(model, tmp_path):
    masker = NeuronMasker(model, init_log_alpha=1.5)
    with pytest.raises(FileNotFoundError, match="not found"):
        masker.load(tmp_path / "absent")
    masker.save(tmp_path / "m")
    (tmp_path / "m.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt"):
        masker.load(tmp_path / "m")
    masker.save(tmp_path / "n")
    (tmp_path / "n.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        masker.load(tmp_path / "n")
    assert torch.equal(masker.gates.log_alpha, torch.full((masker.n_neurons,), 1.5))
    assert not math.isnan(masker.gates.log_alpha.sum().item())
