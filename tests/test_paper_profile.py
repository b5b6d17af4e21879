"""The paper profile's code path (a pretrained GPT-2 from a folder, device chosen automatically) on CPU.

The real run needs the hub's `gpt2` and a GPU; here a tiny GPT-2 and tokenizer saved locally stand in.
"""

from dataclasses import replace

import torch

from privloc.config import ModelConfig, get_profile
from privloc.corpora.synthetic import generate
from privloc.method.model import build_model
from privloc.method.tokenizer import train_tokenizer
from privloc.study import pipeline


def test_paper_profile_path_with_a_local_pretrained_model(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVLOC_CACHE", str(tmp_path / "cache"))
    texts = [r["text"] for r in generate("echr", "train", seed=0, n_subjects=6, docs_per_subject=2)]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    folder = tmp_path / "local-gpt2"
    build_model(ModelConfig(n_layer=2, n_embd=32, n_head=2, n_positions=160), tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    paper = get_profile("paper")
    smoke = get_profile("smoke")
    profile = replace(smoke, name="paper-local", model=replace(paper.model, pretrained=str(folder)),
                      device=paper.device)
    assert profile.device == "auto"
    v = pipeline.victim("echr", profile, progress=False)
    assert v.model.config.n_layer == 2 and v.model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert len(v.corpus.tokenizer) == len(tokenizer)  # the pretrained model's own tokenizer, not a new one
    loc = pipeline.localization("echr", profile, progress=False)
    assert loc.masker.n_neurons == 2 * (3 * 32 + 32 + 4 * 32 + 32)
