"""Every family privloc knows: gates, deactivation, the logit lens, the mask file and dispatched models."""

import copy

import numpy as np
import pytest
import torch
import transformers
from family_models import (
    FAMILIES,
    FakeTokenizer,
    block,
    logits,
    tiny_family_model,
    unit_rows,
    zero_rows,
)

from privloc.config import ModelConfig
from privloc.method import families
from privloc.method.attacks import lens_logits
from privloc.method.masking import COMPONENTS, NeuronMasker
from privloc.method.mitigate import deactivate
from privloc.method.model import build_model, load_model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    return {name: tiny_family_model(name) for name in FAMILIES}


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(1))


def spread_ids(masker, per_cell=2, seed=0):
    rng = np.random.default_rng(seed)
    return np.array([masker.neuron_id(ly, c, int(u)) for ly in range(masker.n_layer)
                     for c, size in masker.component_sizes.items() for u in rng.choice(size, per_cell, replace=False)])


def test_the_four_families_are_known():
    assert FAMILIES == ("gpt2", "gpt_neo", "gpt_neox", "llama")


@pytest.mark.parametrize("name", FAMILIES)
def test_open_gates_are_bit_identical(models, ids, name):
    model = models[name]
    base = logits(model, ids)
    masker = NeuronMasker(model)
    assert masker.family.name == name
    for mode in ("off", "deterministic", "hard"):
        with masker.applied(mode):
            assert torch.equal(logits(model, ids), base)


@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("name", FAMILIES)
def test_a_closed_gate_equals_zeroing_the_units_weights(models, ids, name, component):
    model = models[name]
    masker = NeuronMasker(model, components=(component,))
    units = [0, 3, 5]
    masker.set_hard([masker.neuron_id(1, component, u) for u in units])
    with masker:
        closed = logits(model, ids)
    reference = copy.deepcopy(model)
    for path, rows in unit_rows(model, name, component, units):
        zero_rows(block(reference, name, 1).get_submodule(path), rows)
    expected = logits(reference, ids)
    assert not torch.allclose(closed, logits(model, ids), atol=1e-5), "closing three units should matter"
    torch.testing.assert_close(closed, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_deactivated_copy_reloads_with_plain_transformers(models, ids, tmp_path, name):
    model = models[name]
    masker = NeuronMasker(model)
    closed = spread_ids(masker)
    edited = deactivate(model, closed)
    edited.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    masker.set_hard(closed)
    with masker:
        hooked = logits(model, ids)
    assert not torch.allclose(hooked, logits(model, ids), atol=1e-3)
    torch.testing.assert_close(logits(reloaded, ids), hooked, atol=1e-5, rtol=0)


def test_grouped_query_attention_shapes(models):
    model = models["llama"]
    c = model.config
    assert c.num_key_value_heads < c.num_attention_heads
    sizes = NeuronMasker(model).component_sizes
    head_dim = c.hidden_size // c.num_attention_heads
    assert sizes["attn.q"] == c.num_attention_heads * head_dim == c.hidden_size
    assert sizes["attn.k"] == sizes["attn.v"] == c.num_key_value_heads * head_dim < sizes["attn.q"]
    assert sizes["mlp.in"] == c.intermediate_size
    layer = model.model.layers[0]
    assert layer.self_attn.k_proj.out_features == sizes["attn.k"]
    assert layer.mlp.down_proj.in_features == sizes["mlp.in"]


@pytest.mark.parametrize("name", FAMILIES)
def test_the_logit_lens_at_the_last_layer_is_the_models_output(models, ids, name):
    model = models[name]
    lens = lens_logits(model, ids, torch.ones_like(ids))
    assert len(lens) == model.config.num_hidden_layers
    torch.testing.assert_close(lens[-1], logits(model, ids), atol=1e-5, rtol=0)
    assert not torch.allclose(lens[0], lens[-1], atol=1e-3)


@pytest.mark.parametrize("name", FAMILIES)
def test_from_scratch_victims_of_every_family(name):
    cfg = ModelConfig(n_layer=2, n_embd=32, n_head=4, n_positions=32, architecture=name)
    model = build_model(cfg, FakeTokenizer())
    assert families.of_model(model).name == name
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    assert model.config.vocab_size == 50 and model.config.pad_token_id == 0
    dropouts = {k: v for k, v in model.config.to_dict().items() if "drop" in k and not k.startswith(("classifier", "summary"))}
    assert dropouts and all(v == 0 for v in dropouts.values()), dropouts


def test_gpt2_victims_keep_their_cache_keys():
    # Victims cached before the families were keyed on these fields alone.
    assert set(ModelConfig().cache_key()) == {"n_layer", "n_embd", "n_head", "n_positions", "activation", "pretrained"}
    assert ModelConfig(architecture="llama").cache_key()["architecture"] == "llama"


def test_unknown_architectures_are_refused_with_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="gpt2, gpt_neo, gpt_neox, llama"):
        families.get("opt")
    opt = transformers.OPTForCausalLM(transformers.OPTConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2, word_embed_proj_dim=16))
    with pytest.raises(ValueError, match="'opt'.*gpt2.*gpt_neox.*llama"):
        NeuronMasker(opt)
    opt.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'opt'.*gpt_neo"):
        load_model(tmp_path)


@pytest.mark.parametrize("other, match", [("gpt_neox", "gpt_neox model.*llama model"),
                                          ("sizes", "llama model with 3 layers.*llama model with 2 layers")])
def test_a_mask_of_another_family_or_size_is_refused(models, tmp_path, other, match):
    source = (tiny_family_model("llama", cfg=ModelConfig(n_layer=3, n_embd=32, n_head=4, n_positions=32))
              if other == "sizes" else models[other])
    NeuronMasker(source).save(tmp_path / "mask")
    target = NeuronMasker(models["llama"], init_log_alpha=1.5)
    with pytest.raises(ValueError, match=match):
        target.load(tmp_path / "mask")
    assert torch.equal(target.gates.log_alpha, torch.full((target.n_neurons,), 1.5))


def test_a_mask_file_without_a_family_is_a_gpt2_mask(models, tmp_path):
    import json
    NeuronMasker(models["gpt2"]).save(tmp_path / "m")
    header = json.loads((tmp_path / "m.json").read_text())
    header.pop("family")
    (tmp_path / "m.json").write_text(json.dumps(header))
    NeuronMasker(models["gpt2"]).load(tmp_path / "m")
    with pytest.raises(ValueError, match="gpt2 model.*gpt_neo model"):
        NeuronMasker(models["gpt_neo"]).load(tmp_path / "m")


def _offloading_map(model, name):
    """Every block on the CPU but the last, which is offloaded to disk; the rest on the CPU."""
    blocks_path = families.get(name).blocks
    base = blocks_path.split(".")[0]
    n = model.config.num_hidden_layers
    mapping = {f"{blocks_path}.{i}": "disk" if i == n - 1 else "cpu" for i in range(n)}
    mapping.update({f"{base}.{child}": "cpu" for child, _ in model.get_submodule(base).named_children()
                    if f"{base}.{child}" != blocks_path})
    mapping.update({child: "cpu" for child, _ in model.named_children() if child != base})
    return mapping


@pytest.mark.parametrize("name", ["gpt_neox", "llama"])
def test_a_dispatched_model_with_disk_offload_takes_the_gates(models, ids, tmp_path, name):
    pytest.importorskip("accelerate")
    model = models[name]
    model.save_pretrained(tmp_path / "model")
    dispatched = load_model(tmp_path / "model", device_map=_offloading_map(model, name),
                            offload_folder=str(tmp_path / "offload")).eval()
    assert any(p.device.type == "meta" for p in dispatched.parameters()), "the last block should be offloaded"
    torch.testing.assert_close(logits(dispatched, ids), logits(model, ids), atol=1e-5, rtol=0)
    masker = NeuronMasker(dispatched)
    assert masker.gates.log_alpha.device.type == "cpu"
    assert {d.type for d in masker.site_devices()} == {"cpu"}  # where each hooked module runs, never "meta"
    with masker.applied("deterministic"):
        assert torch.equal(logits(dispatched, ids), logits(model, ids))
    closed = spread_ids(masker)
    masker.set_hard(closed)
    reference = NeuronMasker(model)
    reference.set_hard(closed)
    with masker, reference:
        torch.testing.assert_close(logits(dispatched, ids), logits(model, ids), atol=1e-5, rtol=0)
        lens = lens_logits(dispatched, ids, torch.ones_like(ids))
        torch.testing.assert_close(lens[-1], logits(model, ids), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def facts_setup():
    from privloc.corpora.synthetic import generate
    from privloc.method.tokenizer import encode_records, train_tokenizer
    from privloc.study.injection import fresh_facts

    train = generate("echr", "train", seed=1, n_subjects=2, docs_per_subject=2, n_oneoff_docs=2)
    tokenizer = train_tokenizer([r["text"] for r in train], vocab_size=300)
    facts = fresh_facts("echr", n_subjects=1, docs_per_subject=2, seed=1)
    return tokenizer, encode_records(tokenizer, train, 160), facts


@pytest.mark.parametrize("name", FAMILIES)
def test_injection_changes_only_the_chosen_units_weights(facts_setup, name):
    from privloc.study.injection import choose_neurons, inject

    tokenizer, enc_keep, facts = facts_setup
    cfg = ModelConfig(n_layer=2, n_embd=32, n_head=4, n_positions=160, architecture=name)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer).eval()
    masker = NeuronMasker(model)
    chosen = choose_neurons(masker, share=0.1, seed=0)
    result = inject(model, tokenizer, enc_keep, facts, chosen, max_steps=3, target_em=2.0, eval_every=3,
                    max_len=160, progress=False)
    table = masker.neuron_table()
    allowed = {}
    for i in chosen:
        ly, comp = int(table["layer"][i]), COMPONENTS[table["component"][i]]
        for path, rows in unit_rows(model, name, comp, [int(table["unit"][i])]):
            module = block(model, name, ly).get_submodule(path)
            prefix = next(n for n, m in model.named_modules() if m is module)
            conv = isinstance(module, transformers.pytorch_utils.Conv1D)
            for pname, p in (("weight", module.weight), ("bias", module.bias)):
                if p is not None:
                    mask = allowed.setdefault(f"{prefix}.{pname}", torch.zeros_like(p, dtype=torch.bool))
                    if pname == "bias" or not conv:
                        mask[rows] = True
                    else:
                        mask[:, rows] = True
    new = dict(result.model.named_parameters())
    moved_any = False
    for pname, old in model.named_parameters():
        outside = ~allowed.get(pname, torch.zeros_like(old, dtype=torch.bool))
        assert torch.equal(new[pname][outside], old[outside]), f"{pname} moved outside the chosen units"
        moved_any |= not torch.equal(new[pname], old)
    assert moved_any


@pytest.mark.parametrize("name", FAMILIES)
def test_the_baselines_score_every_unit_of_every_family(models, name):
    from helpers import tiny_corpus

    from privloc.method.baselines import activation_contrast_scores, integrated_gradients_scores

    model, enc = models[name], tiny_corpus()
    masker = NeuronMasker(model)
    pii = enc.target_mask(("assoc",))
    contrast = activation_contrast_scores(model, enc, masker, pii)
    assert contrast.shape == (masker.n_neurons,) and np.isfinite(contrast).all()
    assert (contrast != 0).mean() > 0.5  # every gated site was measured
    ig = integrated_gradients_scores(model, enc, masker, pii, steps=2)
    assert ig.shape == (masker.n_neurons,) and (ig != 0).mean() > 0.5
