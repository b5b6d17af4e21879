"""Fixtures shared by the masking, mitigation, baseline, localisation and command tests."""

import json

import pytest
import torch
from helpers import tiny_corpus, tiny_model, write_tiny_corpus


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def enc():
    """A hand-labelled tiny corpus (helpers.tiny_corpus)."""
    return tiny_corpus()


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    """A small untrained model folder with its tokenizer, a dataset folder, and a mask of another model."""
    from privloc.command.inputs import fingerprint
    from privloc.config import ModelConfig
    from privloc.method.masking import NeuronMasker
    from privloc.method.model import build_model
    from privloc.method.tokenizer import train_tokenizer

    base = tmp_path_factory.mktemp("folders")
    corpus = write_tiny_corpus(base / "corpus", n_subjects=3, docs_per_subject=2)
    texts = [json.loads(line)["text"] for line in (corpus / "train.jsonl").read_text().splitlines()]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    for name, seed in (("model", 0), ("other", 1)):
        import torch

        torch.manual_seed(seed)
        model = build_model(ModelConfig(n_layer=1, n_embd=16, n_head=2, n_positions=128), tokenizer)
        model.save_pretrained(str(base / name))
        tokenizer.save_pretrained(str(base / name))
        NeuronMasker(model).save(base / f"mask-{name}" / "mask", meta={
            "model_fingerprint": fingerprint(model), "model": str(base / name), "data": str(corpus)})
    deeper = build_model(ModelConfig(n_layer=2, n_embd=16, n_head=2, n_positions=128), tokenizer)
    NeuronMasker(deeper).save(base / "mask-deeper" / "mask", meta={"data": str(corpus)})
    (base / "no-config").mkdir()
    (base / "no-tokenizer").mkdir()
    (base / "no-tokenizer" / "config.json").write_text((base / "model" / "config.json").read_text())
    (base / "unknown-type").mkdir()
    (base / "unknown-type" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    tokenizer.save_pretrained(str(base / "unknown-type"))
    nospans = base / "no-spans"
    nospans.mkdir()
    for split in ("train", "valid"):
        (nospans / f"{split}.jsonl").write_text(json.dumps({"text": "Nothing private here.", "spans": []}) + "\n")
    (base / "taken").mkdir()
    return base
