"""The command never destroys a user's files, never republishes their PII and never ends in a traceback.

Each refusal is one line on stderr, a non-zero exit and nothing written or removed (helpers.refused).
"""

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import refused

from privloc.command import cli, outputs
from privloc.command.redact import pii_strings, redact, redact_known


@pytest.fixture
def work(folders, tmp_path, monkeypatch):
    """A working directory holding inputs/model, inputs/corpus and inputs/mask (copies), and a home folder."""
    inputs = tmp_path / "inputs"
    for name, source in (("model", "model"), ("corpus", "corpus"), ("mask", "mask-model")):
        shutil.copytree(folders / source, inputs / name)
    mask = json.loads((inputs / "mask" / "mask.json").read_text())
    mask["meta"] = {**mask["meta"], "model": str(inputs / "model"), "data": str(inputs / "corpus")}
    (inputs / "mask" / "mask.json").write_text(json.dumps(mask))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


AUDIT = ("audit", "--model", "inputs/model", "--data", "inputs/corpus", "--spans", "4", "--device", "cpu")
MITIGATE = ("mitigate", "--model", "inputs/model", "--mask", "inputs/mask", "--spans", "4", "--device", "cpu")


def run(monkeypatch, cwd, *argv):
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return cli.main(list(argv))


@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)])
@pytest.mark.parametrize(("out", "match"), [
    ("inputs/model", "is the model of this run"), ("inputs/corpus", "is the data of this run"),
    ("inputs", "holds the model of this run"), (".", "is the working directory"),
    ("..", "holds the working directory"), ("~", "is your home folder")])
def test_out_is_never_an_input_a_folder_holding_one_the_working_directory_or_home(
        out, match, overwrite, work, capsys, monkeypatch):
    refused(capsys, work, monkeypatch, *AUDIT, "--out", out, *overwrite, match=match)


@pytest.mark.parametrize(("out", "match"), [("inputs/model", "is the model of this run"),
                                            ("inputs/mask", "is the mask of this run")])
def test_mitigate_never_writes_over_its_model_or_mask(out, match, work, capsys, monkeypatch):
    refused(capsys, work, monkeypatch, *MITIGATE, "--out", out, "--overwrite", match=match)


def test_overwrite_replaces_an_earlier_output_of_privloc_and_nothing_else(work, capsys, monkeypatch):
    assert run(monkeypatch, work, *AUDIT, "--out", "report") == 0
    first = (work / "report" / "report.json").read_text()
    assert json.loads((work / "report" / outputs.MARKER).read_text())["command"] == "audit"
    refused(capsys, work, monkeypatch, *AUDIT, "--out", "report", match="pass --overwrite to replace it")
    (work / "report" / "note.txt").write_text("added by the user after the run")
    assert run(monkeypatch, work, *AUDIT, "--out", "report", "--overwrite", "--seed", "1") == 0
    assert json.loads((work / "report" / "report.json").read_text())["attack_config"]["seed"] == 1
    assert (work / "report" / "report.json").read_text() != first and not (work / "report" / "note.txt").exists()
    assert not [p for p in work.iterdir() if p.name.startswith(".")], "the swap left something behind"


def test_a_second_run_on_the_same_out_is_refused_while_the_first_works(work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    with outputs.claim("report", False, "audit"):  # the first run, still working
        refused(capsys, work, monkeypatch, *AUDIT, "--out", "report", match=f"another privloc run (pid {os.getpid()})")
    # A lock left by a run that was killed (its process is gone) does not block the next one.
    (work / ".later.privloc-lock").write_text("999999999")
    assert run(monkeypatch, work, *AUDIT, "--out", "later") == 0
    assert not (work / ".later.privloc-lock").exists()


class Killed(BaseException):
    """Stands for a kill: nothing after it runs, not even the claim's clean-up."""


def _kill_at(monkeypatch, module, name, calls):
    """Make the `calls`-th call of module.<name> during a claim's finish stop the process, as a kill would."""
    real, count = getattr(module, name), {"n": 0}

    def dying(*args, **kwargs):
        count["n"] += 1
        if count["n"] == calls:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, dying)
    monkeypatch.setattr(outputs.Claim, "__exit__", lambda self, kind, *rest: kind is None and self._finish())


def _killed_while_replacing(work, monkeypatch, module, name, calls):
    with outputs.claim("out", False, "audit") as staging:
        (staging / "v").write_text("old")
    with monkeypatch.context() as patch:
        _kill_at(patch, module, name, calls)
        with pytest.raises(Killed), outputs.claim("out", True, "audit") as staging:
            (staging / "v").write_text("new")
    (work / ".out.privloc-lock").write_text("999999999")  # the killed process is gone


def test_a_kill_between_moving_the_old_output_aside_and_the_new_one_in_loses_nothing(work, monkeypatch):
    monkeypatch.chdir(work)
    monkeypatch.setattr(outputs, "_renameat2", lambda *args: False)  # a file system without atomic exchange
    _killed_while_replacing(work, monkeypatch, os, "rename", 2)
    assert not (work / "out").exists() and list(work.glob(".out.privloc-old-*"))
    claim = outputs.claim("out", True, "audit")
    with claim as staging:  # the next run puts the old output back before anything else
        assert (work / "out" / "v").read_text() == "old"
        (staging / "v").write_text("newer")
    assert (work / "out" / "v").read_text() == "newer" and any("restored" in n for n in claim.notes)
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


def test_a_kill_after_the_atomic_swap_leaves_the_new_output_and_the_next_run_cleans_up(work, monkeypatch):
    monkeypatch.chdir(work)
    _killed_while_replacing(work, monkeypatch, shutil, "rmtree", 1)
    assert (work / "out" / "v").read_text() == "new" and list(work.glob(".out.privloc-partial-*"))
    claim = outputs.claim("out", True, "audit")
    with claim:
        pass
    assert any("interrupted run" in n for n in claim.notes)
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


def test_an_interrupted_run_keeps_the_old_output_and_cleans_up(work, capsys, monkeypatch):
    from privloc.command import inputs

    assert run(monkeypatch, work, *AUDIT, "--out", "report") == 0
    before = (work / "report" / "report.json").read_text()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(inputs, "load_model", interrupted)
    capsys.readouterr()
    assert run(monkeypatch, work, *AUDIT, "--out", "report", "--overwrite") == 130
    err = capsys.readouterr().err
    assert err.strip() == "privloc audit: interrupted; nothing was written"
    assert (work / "report" / "report.json").read_text() == before
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


def test_an_unwritable_out_is_refused_before_any_work(work, capsys, monkeypatch):
    refused(capsys, work, monkeypatch, *AUDIT, "--out", "/proc/privloc-report", match="cannot write")
    (work / "afile").write_text("x")
    refused(capsys, work, monkeypatch, *AUDIT, "--out", "afile", match="--out afile is a file")


def test_outputs_follow_the_users_umask(work, monkeypatch):
    assert run(monkeypatch, work, *AUDIT, "--out", "report") == 0
    assert (work / "report").stat().st_mode & 0o777 == 0o777 & ~outputs.UMASK
    for file in (work / "report").iterdir():
        assert file.stat().st_mode & 0o777 == 0o666 & ~outputs.UMASK, file.name


def test_broken_inputs_are_one_line(work, capsys, monkeypatch):
    weights = work / "inputs" / "model" / "model.safetensors"
    data = weights.read_bytes()
    for broken in (data[: len(data) // 2], b""):
        weights.write_bytes(broken)
        refused(capsys, work, monkeypatch, *AUDIT, "--out", "r", match="could not load the model")
    weights.write_bytes(data)
    lines = (work / "inputs" / "corpus" / "train.jsonl").read_bytes().splitlines(keepends=True)
    (work / "inputs" / "corpus" / "train.jsonl").write_bytes(b"".join(lines[:2]) + b'{"text": "caf\xe9"}\n')
    refused(capsys, work, monkeypatch, *AUDIT, "--out", "r", match="line 3: not UTF-8 text (byte 0xe9")
    (work / "inputs" / "corpus" / "train.jsonl").write_text("")
    refused(capsys, work, monkeypatch, "train", "--data", "inputs/corpus", "--out", "m", match="empty train.jsonl")
    for flag, value in (("--max-len", "1"), ("--lr", "nan"), ("--lr", "inf"), ("--budget", "2.5")):
        command = ("audit", "--model", "y") if flag == "--budget" else ("train",)
        err = refused(capsys, work, monkeypatch, *command, "--data", "x", "--out", "m", flag, value, match=flag)
        assert "usage" not in err
    mask = json.loads((work / "inputs" / "mask" / "mask.json").read_text())
    (work / "inputs" / "mask" / "mask.json").write_text(json.dumps({**mask, "meta": [1, 2]}))
    refused(capsys, work, monkeypatch, *MITIGATE, "--out", "c", match="its \"meta\" is a list, not an object")


def _long_corpus(folder, source, lead_words, every):
    """The corpus with `lead_words` words put before every `every`-th training document."""
    lines = (source / "train.jsonl").read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        record = json.loads(line)
        if i % every == 0:
            lead = "Nothing to see here. " * lead_words
            record = {**record, "text": lead + record["text"],
                      "spans": [{**s, "start": s["start"] + len(lead), "end": s["end"] + len(lead)}
                                for s in record["spans"]]}
        out.append(json.dumps(record))
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(out) + "\n")
    shutil.copy(source / "valid.jsonl", folder / "valid.jsonl")


def test_pii_beyond_the_context_is_counted_and_refused_only_when_none_is_left(work, capsys, monkeypatch):
    _long_corpus(work / "far", work / "inputs" / "corpus", 60, 1)
    for command in ("audit", "localize"):
        refused(capsys, work, monkeypatch, command, "--model", "inputs/model", "--data", "far", "--out", "r",
                match="lies within the first 128 tokens of its document")
    _long_corpus(work / "half", work / "inputs" / "corpus", 60, 2)
    assert run(monkeypatch, work, *AUDIT[:4], "half", "--spans", "2", "--out", "r") == 0
    assert "memorisable PII spans lie beyond the first 128 tokens" in capsys.readouterr().out


def test_silent_surprises_are_said(work, capsys, monkeypatch):
    localize = ("localize", "--model", "inputs/model", "--data", "inputs/corpus", "--out", "m")
    refused(capsys, work, monkeypatch, *localize, "--share", "1e-9", match="selects no neuron")
    refused(capsys, work, monkeypatch, *localize, "--categories", ",", match="names no category")
    refused(capsys, work, monkeypatch, *MITIGATE[:4], "nope", "--out", "c", match="no mask at nope: no such folder")
    err = refused(capsys, work, monkeypatch, "audit", "--data", "x", "--out", "m", match="--model")
    assert "usage" not in err
    # A mask whose data moved says where the path came from.
    shutil.move(work / "inputs" / "corpus", work / "moved")
    refused(capsys, work, monkeypatch, *MITIGATE, "--out", "c", match="came from the mask inputs/mask")


def test_the_built_in_name_is_said_when_a_folder_shadows_it(work, capsys, monkeypatch):
    from privloc.command import inputs

    (work / "enron").mkdir()
    monkeypatch.chdir(work)
    assert inputs.data_source("enron") == "enron"
    assert "the built-in corpus enron; write ./enron for the folder" in capsys.readouterr().out


def test_redaction_keeps_the_shape_only():
    assert redact("jane.doe@mail.com") == "j***.***@****.***"
    assert redact("+1 555-0100") == "+# ###-####"
    records = [{"text": "Call Jane Doe at 555-0100.", "spans": [
        {"start": 5, "end": 13, "category": "PERSON"}, {"start": 17, "end": 25, "category": "PHONE"}]}]
    assert pii_strings(records) == ["555-0100", "Jane Doe"]  # longest first, then in order
    assert redact_known("Jane Doe: 555-0100", pii_strings(records)) == "J*** ***: 5##-####"


def test_the_encoding_finds_the_same_tokens_as_a_full_scan(folders):
    from transformers import AutoTokenizer

    from privloc.method.tokenizer import encode_records

    tokenizer = AutoTokenizer.from_pretrained(str(folders / "model"))
    records = [json.loads(line) for line in (folders / "corpus" / "train.jsonl").read_text().splitlines()]
    text, spans = "", []
    for record in records * 20:  # one long document with hundreds of spans
        spans += [{**s, "start": s["start"] + len(text), "end": s["end"] + len(text)} for s in record["spans"]]
        text += record["text"]
    fast = encode_records(tokenizer, [{"text": text, "spans": spans}], max_len=100_000)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert len(fast.spans) == len(spans) > 200
    for info, span in zip(fast.spans, spans, strict=True):
        covered = [i + 1 for i, (s, e) in enumerate(offsets) if s < span["end"] and span["start"] < e]
        assert (info.tok_start, info.tok_end) == (covered[0], covered[-1] + 1)


def test_a_mitigated_copy_names_no_local_path(folders):
    from privloc.command.redact import public_report, source_label

    assert source_label(str(Path("/home/someone/data/clients"))) == "clients" and source_label("echr") == "echr"
    report = {"model": "/home/someone/model", "model_fingerprint": "ab", "data": "/home/someone/data",
              "examples": [{"true_pii": "x"}], "leakage": {"any": 1.0}}
    assert public_report(report) == {"data": "data", "leakage": {"any": 1.0}}


def test_a_folder_swapped_in_during_the_run_is_not_replaced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with outputs.claim("out", False, "audit"):
        pass
    with pytest.raises(FileExistsError, match="privloc did not write"):
        with outputs.claim("out", True, "audit"):
            shutil.rmtree("out")
            (tmp_path / "out").mkdir()
            (tmp_path / "out" / "theirs.txt").write_text("a user's file")
    assert (tmp_path / "out" / "theirs.txt").read_text() == "a user's file"


def test_leftovers_of_another_output_are_not_taken_for_this_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    other = tmp_path / ".abc.privloc-partial-1"
    other.mkdir()
    with outputs.claim("a*", False, "audit"):
        pass
    assert other.exists()


def test_only_privlocs_own_marked_leftovers_are_removed_beside_an_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    users = [tmp_path / ".out.privloc-notes", tmp_path / ".out.privloc-partial-7"]  # no marker: not privloc's
    for folder in users:
        folder.mkdir()
        (folder / "mine.txt").write_text("a user's file")
    (tmp_path / ".out.privloc-old-8").write_text("a user's file, not a folder")
    with outputs.claim("out", False, "audit"):
        pass
    assert all((folder / "mine.txt").read_text() == "a user's file" for folder in users)
    assert (tmp_path / ".out.privloc-old-8").read_text() == "a user's file, not a folder"
