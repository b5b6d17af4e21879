"""`privloc train --base` fine-tunes a pretrained folder; a built-in name is a model folder for every command;
`keep_blocks` slices a pretrained model into a smaller one of its family."""

import json

import torch
import transformers

from privloc.command import cli, inputs
from privloc.config import ModelConfig
from privloc.method.model import build_model, keep_blocks, load_model


def test_train_fine_tunes_a_pretrained_folder(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--base", str(folders / "model"), "--data", str(folders / "corpus"), "--out", "tuned",
            "--steps", "2", "--device", "cpu"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "validation cast, never seen" in out
    training = json.loads((tmp_path / "tuned" / "training.json").read_text())
    assert training["base"] == str(folders / "model") and training["config"]["autocast"] == "bfloat16"
    assert (training["config"]["batch_size"], training["config"]["lr"]) == (8, 3e-4)
    tuned = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "tuned"))
    base = transformers.AutoModelForCausalLM.from_pretrained(str(folders / "model"))
    assert not torch.equal(tuned.lm_head.weight, base.lm_head.weight), "two steps must move the weights"
    assert str(folders) not in (tmp_path / "tuned" / "config.json").read_text(), "the base model's local path"


def test_epochs_set_the_steps_of_a_fine_tuning(folders):
    from argparse import Namespace

    from privloc.command.commands import _train_config

    args = Namespace(base="x", steps=None, epochs=3, batch_size=None, lr=None, seed=0)
    assert _train_config(args, n_docs=20).steps == 3 * 3  # ceil(20 / 8) steps an epoch
    args.steps = 5
    assert _train_config(args, n_docs=20).steps == 5


def test_a_built_in_name_is_a_model_folder():
    from privloc.method import pretrained

    assert inputs.model_folder("smollm2-135m") == str(pretrained.folder("smollm2-135m"))


def test_keep_blocks_gives_a_plain_smaller_model(folders, tmp_path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folders / "model"))
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=3, n_embd=16, n_head=2, n_positions=64, architecture="llama"), tokenizer)
    ids = torch.tensor([[1, 2, 3, 4]])
    sliced = keep_blocks(model, 1)
    sliced.save_pretrained(str(tmp_path / "sliced"))
    again = load_model(tmp_path / "sliced")
    assert again.config.num_hidden_layers == 1 and len(again.model.layers) == 1
    assert torch.equal(again(ids).logits, sliced(ids).logits)
