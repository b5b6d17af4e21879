"""Tokenizer, label projection, config presets, artifact cache, victim training and the set-up files."""

import time
from pathlib import Path

import pytest
import torch

from privloc import artifacts
from privloc.config import ModelConfig, TrainConfig, get_profile
from privloc.method.model import build_model, load_model, train_victim
from privloc.method.tokenizer import encode_records, load_tokenizer, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["Dear Ann Lee, call me at 713-555-0142 tomorrow.", "Ann Lee lives at 42 Oak Street, Springfield."] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


def test_tokenizer_round_trip_and_digits(tokenizer, tmp_path):
    text = "Call 713-555-0142, Ann."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    digit_tokens = [t for t in tokenizer.convert_ids_to_tokens(ids) if any(ch.isdigit() for ch in t)]
    assert all(len(t) == 1 for t in digit_tokens) and len(digit_tokens) == 10
    tokenizer.save_pretrained(str(tmp_path))
    reloaded = load_tokenizer(tmp_path)
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids
    assert reloaded.pad_token_id == tokenizer.pad_token_id and reloaded.bos_token_id == tokenizer.bos_token_id


def test_load_tokenizer_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_tokenizer(tmp_path / "nope")


def test_token_labels_follow_spans(tokenizer):
    text = "Dear Ann Lee, call me at 713-555-0142 tomorrow. Ann Lee again."
    record = {"text": text, "spans": [
        {"start": 5, "end": 12, "category": "PERSON", "subject": "s1"},
        {"start": 25, "end": 37, "category": "PHONE", "subject": "s1"},
        {"start": 48, "end": 55, "category": "PERSON", "subject": "s1"},
    ]}
    enc = encode_records(tokenizer, [record])
    assert [s.kind for s in enc.spans] == ["intro", "assoc", "copy"]
    for index, span in enumerate(enc.spans):
        positions = (enc.span_id[0] == index).nonzero().flatten().tolist()
        assert positions == list(range(span.tok_start, span.tok_end))
        decoded = tokenizer.decode(enc.input_ids[0, span.tok_start: span.tok_end]).strip()
        assert decoded == span.text
    phone = enc.spans[1]
    assert (enc.category[0, phone.tok_start: phone.tok_end] == 3).all()  # PHONE is CATEGORIES[2]
    assert enc.input_ids[0, 0] == tokenizer.bos_token_id
    assert int(enc.category.ne(0).sum()) == sum(s.tok_end - s.tok_start for s in enc.spans)
    targets = enc.target_mask(("assoc",))
    assert targets.sum() == phone.tok_end - phone.tok_start
    assert targets[0, phone.tok_start - 1] and not targets[0, phone.tok_start - 2]
    sub = enc.select([0])
    assert torch.equal(sub.input_ids, enc.input_ids) and len(sub.spans) == 3


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        get_profile("fast")
    assert get_profile("smoke").with_seed(3).train.seed == 3


def test_config_key_stable_and_sensitive():
    assert artifacts.config_key(TrainConfig()) == artifacts.config_key(TrainConfig())
    assert artifacts.config_key(TrainConfig()) != artifacts.config_key(TrainConfig(steps=1))


def test_cached_dir_is_atomic(tmp_path):
    def broken(folder):
        (folder / "half").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        artifacts.cached_dir("thing", "k", broken, root=tmp_path)
    assert not (tmp_path / "thing" / "k").exists()
    assert not [p for p in (tmp_path / "thing").iterdir()]
    calls = []

    def build(folder):
        calls.append(1)
        (folder / "value.txt").write_text("42")

    first = artifacts.cached_dir("thing", "k", build, root=tmp_path)
    second = artifacts.cached_dir("thing", "k", build, root=tmp_path)
    assert first == second and (first / "value.txt").read_text() == "42" and calls == [1]


def test_tiny_model_memorises_a_repeated_secret(tokenizer):
    from privloc.method.metrics import leakage

    text = "Dear Ann Lee, call me at 713-555-0142 tomorrow."
    record = {"text": text, "spans": [{"start": 5, "end": 12, "category": "PERSON", "subject": "s1"},
                                      {"start": 25, "end": 37, "category": "PHONE", "subject": "s1"}]}
    enc = encode_records(tokenizer, [record] * 8)
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=1, n_embd=32, n_head=2, n_positions=64), tokenizer)
    before = leakage(model, enc)["em_assoc"]
    history = train_victim(model, enc, TrainConfig(steps=60, batch_size=4, lr=1e-2, warmup=5, eval_every=30),
                           evaluate=lambda m: {"em": leakage(m, enc)["em_assoc"]}, progress=False)
    assert before == 0.0
    assert history[-1]["em"] == 1.0 and [h["step"] for h in history] == [30, 60]


def test_missing_model_path_fails_fast(tmp_path):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "no_model_here")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)
    assert time.perf_counter() - start < 5


def test_pretrained_round_trip(tokenizer, tmp_path):
    model = build_model(ModelConfig(n_layer=1, n_embd=16, n_head=2, n_positions=32), tokenizer)
    model.save_pretrained(str(tmp_path))
    reloaded = build_model(ModelConfig(pretrained=str(tmp_path)), tokenizer)
    ids = torch.tensor([[1, 5, 7, 9]])
    assert torch.equal(model(ids).logits, reloaded(ids).logits)


def test_pipeline_accepts_a_jsonl_folder_and_refuses_unknown_names(tmp_path, monkeypatch):
    from privloc.corpora.data import DataError, write_jsonl
    from privloc.corpora.synthetic import generate
    from privloc.study import pipeline

    monkeypatch.setenv("PRIVLOC_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "my_corpus"
    write_jsonl(generate("enron", "train", seed=3, n_subjects=3, docs_per_subject=2, n_oneoff_docs=1),
                folder / "train.jsonl")
    write_jsonl(generate("enron", "valid", seed=3, n_subjects=2, docs_per_subject=1, n_oneoff_docs=1),
                folder / "valid.jsonl")
    data = pipeline.corpus(str(folder), get_profile("smoke"))
    assert data.name == "my_corpus" and len(data.train) == 7 and len(data.enc_valid) == 3
    assert pipeline.corpus(str(folder), get_profile("smoke")).path == data.path  # cached
    with pytest.raises(DataError, match="unknown dataset 'enronn'"):
        pipeline.corpus("enronn", get_profile("smoke"))
    assert not (tmp_path / "cache" / "corpus" / "enronn").exists()


def test_length_grouped_batches_cover_each_epoch_and_cut_padding():
    from privloc.method.model import length_grouped_batches

    lengths = torch.randint(20, 200, (100,), generator=torch.Generator().manual_seed(1))
    batches = length_grouped_batches(lengths, 8, torch.Generator().manual_seed(0), group=4)
    epoch = [next(batches) for _ in range(12)]  # 100 rows: 12 full batches, 4 rows dropped
    rows = torch.cat(epoch)
    assert all(len(b) == 8 for b in epoch) and len(rows.unique()) == 96
    again = length_grouped_batches(lengths, 8, torch.Generator().manual_seed(0), group=4)
    assert all(torch.equal(b, next(again)) for b in epoch)
    padded = sum(int(lengths[b].max()) * len(b) for b in epoch)
    plain = torch.randperm(100, generator=torch.Generator().manual_seed(0))[:96].view(12, 8)
    assert padded < sum(int(lengths[b].max()) * len(b) for b in plain)
    small = length_grouped_batches(lengths[:5], 8, torch.Generator().manual_seed(0))
    assert sorted(next(small).tolist()) == list(range(5))


def test_victims_trained_side_by_side_equal_those_trained_here(tmp_path, monkeypatch):
    from privloc.study import pipeline

    monkeypatch.setenv("PRIVLOC_CACHE", str(tmp_path / "parallel"))
    pipeline.prepare_victims(["echr"], get_profile("smoke"), scrubbed=["echr"], workers=2, progress=False)
    cached = sorted(p.name for p in (tmp_path / "parallel" / "victim").iterdir())
    assert cached == ["echr", "echr-scrubbed"]
    side_by_side = pipeline.victim("echr", get_profile("smoke"), progress=False)
    monkeypatch.setenv("PRIVLOC_CACHE", str(tmp_path / "here"))
    threads = torch.get_num_threads()
    here = pipeline.victim("echr", get_profile("smoke"), progress=False)
    assert torch.get_num_threads() == threads  # the one-thread training gives the threads back
    a, b = side_by_side.model.state_dict(), here.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert side_by_side.history[-1]["em_assoc"] == here.history[-1]["em_assoc"]


def test_a_notebook_profile_keeps_the_profile_where_a_parameter_is_none():
    from privloc.config import get_profile, notebook_profile

    base = get_profile("smoke")
    p = notebook_profile("smoke", 3, n_localization_seeds=None, ig_steps=0)
    assert p.study.n_localization_seeds == base.study.n_localization_seeds
    assert p.study.ig_steps == 0  # 0 is a value, not "use the default"
    assert p.localize.seed == p.train.seed == p.data.seed == 3
    with pytest.raises(ValueError, match="not a StudyConfig field"):
        notebook_profile("smoke", 0, n_localisation_seeds=2)
