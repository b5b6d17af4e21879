"""The `privloc` command as a user drives it: train → audit → localize → mitigate → audit the copy, and every
bad input refused with one line, a non-zero exit and nothing written."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import refused, write_tiny_corpus

from privloc.command import cli
from privloc.config import get_profile

ROOT = Path(__file__).resolve().parents[1]


def privloc(*args, cwd):
    """Run `python -m privloc` in a child as a user would; the checkout comes first on its path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "privloc", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_train_audit_localize_mitigate_and_audit_the_copy(tmp_path):
    write_tiny_corpus(tmp_path / "corpus", n_subjects=6, docs_per_subject=6)
    ok(privloc("train", "--data", "corpus", "--out", "model", "--steps", "150", "--device", "cpu", cwd=tmp_path))
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json"} <= {
        p.name for p in (tmp_path / "model").iterdir()}

    audit = ok(privloc("audit", "--model", "model", "--data", "corpus", "--spans", "40", "--out", "audit",
                       "--device", "cpu", cwd=tmp_path))
    assert "leak_any" in audit.stdout and "exposure" in audit.stdout
    for name in ("report.md", "report.json", "attacks.png", "categories.png", "budget.png"):
        assert (tmp_path / "audit" / name).stat().st_size > 0, name
    before = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert set(before["leakage"]) >= {"greedy", "beam", "sample", "candidates", "logit_lens", "any"}
    assert before["n_search_spans"] == 40 and before["n_pass_spans"] == before["n_assoc_spans"] > 40
    assert set(before["per_category"]) == {"PHONE", "DATE", "EMAIL"}
    assert before["perplexity"]["ppl_nonpii"] > 1 and before["exposure"]["exposure"] > before["exposure"]["exposure_chance"]
    assert before["leakage"]["greedy"] > 0.5, "the tiny model should have memorised its PII"
    assert "## Recovered examples" in (tmp_path / "audit" / "report.md").read_text() and before["examples"]
    assert before["pii_redacted"] and no_pii_in(tmp_path / "audit", tmp_path / "corpus") > 0

    ok(privloc("localize", "--model", "model", "--data", "corpus", "--steps", "60", "--out", "mask", "--device", "cpu",
               cwd=tmp_path))
    summary = json.loads((tmp_path / "mask" / "summary.json").read_text())
    assert {"mask.json", "mask.safetensors", "summary.md"} <= {p.name for p in (tmp_path / "mask").iterdir()}
    assert summary["n_neurons"] == sum(summary["per_layer"].values()) == sum(summary["per_component"].values()) > 0

    mitigated = ok(privloc("mitigate", "--model", "model", "--mask", "mask", "--spans", "40", "--out", "copy",
                           "--device", "cpu", cwd=tmp_path))
    assert "->" in mitigated.stdout
    card = (tmp_path / "copy" / "README.md").read_text()
    assert f"{summary['n_neurons']} of {summary['n_gated']} gated units" in card and "| leak_any |" in card
    removed = json.loads((tmp_path / "copy" / "removed_neurons.json").read_text())
    assert len(removed["ids"]) == summary["n_neurons"]

    # The copy needs no privloc: a child without it on the path loads it with plain transformers.
    load = ("import sys, transformers; m = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]); "
            "t = transformers.AutoTokenizer.from_pretrained(sys.argv[1]); print(type(m).__name__, len(t))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    loaded = subprocess.run([sys.executable, "-I", "-c", load, str(tmp_path / "copy")], env=env,
                            capture_output=True, text=True, timeout=300, cwd="/")
    assert loaded.returncode == 0 and loaded.stdout.startswith("GPT2LMHeadModel"), loaded.stderr[-2000:]

    ok(privloc("audit", "--model", "copy", "--data", "corpus", "--spans", "40", "--out", "audit-copy",
               "--device", "cpu", cwd=tmp_path))
    after = json.loads((tmp_path / "audit-copy" / "report.json").read_text())
    assert after["n_search_spans"] == before["n_search_spans"]
    for attack in ("greedy", "beam", "sample"):
        assert after["leakage"][attack] < before["leakage"][attack], attack
    assert after["leakage"]["any"] <= before["leakage"]["any"]
    # The card's "after" column is the same audit as the one run on the saved copy.
    assert json.loads((tmp_path / "copy" / "audit.json").read_text())["after"]["leakage"] == after["leakage"]
    # The copy is meant to be shared: no PII value of the data and no local path in any of its files.
    assert no_pii_in(tmp_path / "copy", tmp_path / "corpus") > 0
    for file in (tmp_path / "copy").iterdir():
        assert str(tmp_path).encode() not in file.read_bytes(), file.name


def no_pii_in(folder, corpus):
    """Assert that no file of `folder` holds a PII value of the dataset `corpus`; the number of values checked."""
    from privloc.command.redact import pii_strings
    from privloc.corpora.data import read_jsonl

    values = pii_strings([*read_jsonl(corpus / "train.jsonl"), *read_jsonl(corpus / "valid.jsonl")])
    for file in folder.iterdir():
        data = file.read_bytes()
        for value in values:
            assert value.encode() not in data, f"{file.name} holds the PII value {value!r}"
    return len(values)


# --- bad input: one line, non-zero exit, nothing written -------------------------------------------------------


@pytest.mark.parametrize("case", ["missing", "no-config", "no-tokenizer", "unknown-type"])
def test_a_bad_model_folder_is_refused(case, folders, capsys, tmp_path, monkeypatch):
    expected = {"missing": "does not exist", "no-config": "no config.json", "no-tokenizer": "no tokenizer",
                "unknown-type": "'bert' model; privloc can gate gpt2, gpt_neo, gpt_neox, llama, mistral, qwen2"}[case]
    for command in ("audit", "localize"):
        refused(capsys, tmp_path, monkeypatch, command, "--model", str(folders / case), "--data",
                str(folders / "corpus"), "--out", "out", match=expected)
    refused(capsys, tmp_path, monkeypatch, "mitigate", "--model", str(folders / case), "--mask",
            str(folders / "mask-model"), "--out", "out", match=expected)


def test_bad_data_is_refused(folders, capsys, tmp_path, monkeypatch):
    model = str(folders / "model")
    refused(capsys, tmp_path, monkeypatch, "audit", "--model", model, "--data", str(folders / "no-spans"),
            "--out", "out", match="no PII spans")
    refused(capsys, tmp_path, monkeypatch, "localize", "--model", model, "--data", str(folders / "missing"),
            "--out", "out", match="unknown dataset")
    refused(capsys, tmp_path, monkeypatch, "localize", "--model", model, "--data", str(folders / "corpus"),
            "--categories", "EMAIL,SSN", "--out", "out", match="unknown PII categories SSN")


def test_an_hf_dataset_while_offline_says_how_to_allow_downloads(folders, capsys, tmp_path, monkeypatch):
    err = refused(capsys, tmp_path, monkeypatch, "audit", "--model", str(folders / "model"), "--data",
                  "hf:privloc-test/no-such-dataset", "--out", "out", match="--allow-download")
    assert "OfflineModeIsEnabled" not in err


def test_a_mask_of_another_model_is_refused(folders, capsys, tmp_path, monkeypatch):
    model = str(folders / "model")
    refused(capsys, tmp_path, monkeypatch, "mitigate", "--model", model, "--mask", str(folders / "mask-other"),
            "--out", "out", match="learned on another model")
    refused(capsys, tmp_path, monkeypatch, "mitigate", "--model", model, "--mask", str(folders / "mask-deeper"),
            "--out", "out", match="does not fit this gpt2 model with 1 layers × 16: n_layer is 2")
    refused(capsys, tmp_path, monkeypatch, "mitigate", "--model", model, "--mask", str(folders / "corpus"),
            "--out", "out", match="no mask at")
    refused(capsys, tmp_path, monkeypatch, "mitigate", "--model", model, "--mask", str(folders / "mask-model"),
            "--top-k", "100000", "--out", "out", match="--top-k 100000")


def test_a_folder_privloc_did_not_write_is_never_replaced(folders, capsys, tmp_path, monkeypatch):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    for argv in (("audit", "--model", str(folders / "model"), "--data", str(folders / "corpus")),
                 ("mitigate", "--model", str(folders / "model"), "--mask", str(folders / "mask-model")),
                 ("train", "--data", str(folders / "corpus"))):
        for flags in ((), ("--overwrite",)):
            refused(capsys, tmp_path, monkeypatch, *argv, "--out", "taken", *flags, match="privloc did not write it")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_is_refused(folders, capsys, tmp_path, monkeypatch):
    refused(capsys, tmp_path, monkeypatch, "audit", "--model", str(folders / "model"), "--data",
            str(folders / "corpus"), "--device", "cuda", match="no CUDA device")


def test_the_console_script_refuses_in_one_line_and_helps(folders, tmp_path):
    result = privloc("localize", "--model", str(folders / "no-config"), "--data", str(folders / "corpus"),
                     cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("privloc localize: error:") and not list(tmp_path.iterdir())
    for command in ("audit", "localize", "mitigate", "train"):
        text = ok(privloc(command, "--help", cwd=tmp_path)).stdout
        assert "--device" in text and "--seed" in text and "--overwrite" in text, command
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"privloc": "privloc.command.cli:main"}


def test_the_pipeline_says_how_to_allow_an_hf_download(monkeypatch, tmp_path):
    from privloc.corpora.data import DataError
    from privloc.study import pipeline

    monkeypatch.setenv("PRIVLOC_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="HF_DATASETS_OFFLINE=0") as error:
        pipeline.corpus("hf:privloc-test/no-such-dataset", get_profile("smoke"))
    assert "OfflineModeIsEnabled" not in str(error.value)


@pytest.mark.parametrize("family", ["gpt_neo", "gpt_neox", "llama"])
def test_every_family_is_audited_localised_and_mitigated(family, folders, tmp_path, monkeypatch):
    # The commands read sizes through the family description, not GPT-2's config names (n_positions, n_layer).
    import torch
    import transformers

    from privloc.config import ModelConfig
    from privloc.method.model import build_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folders / "model"))
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=1, n_embd=16, n_head=2, n_positions=128, architecture=family), tokenizer)
    model.save_pretrained("model")
    tokenizer.save_pretrained("model")
    corpus = str(folders / "corpus")
    common = ["--device", "cpu", "--profile", "smoke"]
    assert cli.main(["audit", "--model", "model", "--data", corpus, "--spans", "10", "--out", "audit", *common]) == 0
    assert json.loads(Path("audit/report.json").read_text())["leakage"]["any"] >= 0
    assert cli.main(["localize", "--model", "model", "--data", corpus, "--steps", "5", "--out", "mask", *common]) == 0
    assert cli.main(["mitigate", "--model", "model", "--mask", "mask", "--spans", "10", "--out", "copy", *common]) == 0
    copy = transformers.AutoModelForCausalLM.from_pretrained("copy")
    assert copy.config.model_type == model.config.model_type


def test_the_pretrained_profile_sizes_the_audit_for_a_large_model():
    from privloc.command.commands import _attack_config
    from privloc.config import PRETRAINED

    args = cli.resolve_profile(cli.build_parser().parse_args(["audit", "--model", "m", "--data", "echr", "--out", "o",
                                                              "--profile", "pretrained"]))
    cfg = _attack_config(args)
    assert cfg.autocast == "bfloat16" and cfg.pass_spans == PRETRAINED.attack.pass_spans
    assert cfg.search_spans < (cfg.pass_spans or 10**9)
