import json
import re
import shutil

import nbformat
import pytest
import torch

from privloc.tools import bench, bench_notebooks
from privloc.tools.check import compare_tables, main

TABLE = "dataset,method,n_neurons,em_assoc,train_seconds\nechr,original,0,0.9,12.5\nechr,privloc,42,0.25,13.0\n"


def tables(tmp_path, expected: str, actual: str | None, name="table1_mitigation.csv"):
    exp, act = tmp_path / "expected", tmp_path / "actual"
    exp.mkdir()
    act.mkdir()
    (exp / name).write_text(expected)
    if actual is not None:
        (act / name).write_text(actual)
    return exp, act


def test_identical_tables_match(tmp_path, capsys):
    exp, act = tables(tmp_path, TABLE, TABLE)
    assert compare_tables(exp, act) == []
    assert main([str(exp), str(act)]) == 0
    assert "all 1 tables match" in capsys.readouterr().out


def test_float_within_tolerance_matches(tmp_path):
    assert compare_tables(*tables(tmp_path, TABLE, TABLE.replace("0.25", "0.2500000001"))) == []


def test_float_outside_tolerance_names_file_row_and_column(tmp_path):
    lines = compare_tables(*tables(tmp_path, TABLE, TABLE.replace("0.25", "0.26")))
    assert len(lines) == 1
    assert "table1_mitigation.csv" in lines[0] and "row 1" in lines[0] and "em_assoc" in lines[0]
    assert "privloc" in lines[0]  # the row's dataset and method say which row it is


def test_count_off_by_one_differs(tmp_path):
    lines = compare_tables(*tables(tmp_path, TABLE, TABLE.replace(",42,", ",43,")))
    assert len(lines) == 1 and "n_neurons" in lines[0] and "42" in lines[0] and "43" in lines[0]


def test_text_nan_and_wall_clock_columns(tmp_path):
    expected = "dataset,mrr,train_seconds\nechr,,1.0\n"
    assert compare_tables(*tables(tmp_path, expected, "dataset,mrr,train_seconds\nechr,,9.0\n")) == []
    lines = compare_tables(tmp_path / "expected", tmp_path / "actual", ignore=())
    assert len(lines) == 1 and "train_seconds" in lines[0]
    (tmp_path / "actual" / "table1_mitigation.csv").write_text("dataset,mrr,train_seconds\nenron,0.5,1.0\n")
    assert len(compare_tables(tmp_path / "expected", tmp_path / "actual")) == 2


def test_missing_file_columns_or_rows(tmp_path):
    exp, act = tables(tmp_path, TABLE, None)
    lines = compare_tables(exp, act)
    assert len(lines) == 1 and "table1_mitigation.csv" in lines[0] and "missing" in lines[0]
    assert main([str(exp), str(act)]) == 1
    (act / "table1_mitigation.csv").write_text(TABLE.replace("em_assoc", "em"))
    assert len(compare_tables(exp, act)) == 1
    (act / "table1_mitigation.csv").write_text(TABLE.rsplit("echr", 1)[0])
    assert "rows" in compare_tables(exp, act)[0]


def test_empty_reference_is_not_a_match(tmp_path):
    assert len(compare_tables(tmp_path, tmp_path)) == 1


TINY = bench.Shape(n_layer=1, n_embd=16, n_head=2, vocab=50, batch=2, seq=12)


@pytest.fixture(scope="module")
def measured():
    ratio = bench.step_ratio(TINY, repeats=2, warmup=1, progress=False)
    table = bench.scaling(layers=(1,), widths=(16,), shape=TINY, repeats=2, warmup=1, progress=False)
    return ratio, table


def fake_build(folder, runs, start=1_000_000.0, gap=5.0, cached_first=0):
    """Executed notebooks with the records privloc.tools.peak writes: `runs` maps a name to its seconds."""
    folder.mkdir()
    for i, (name, seconds) in enumerate(runs.items()):
        nbformat.write(nbformat.v4.new_notebook(), folder / f"{name}.ipynb")
        record = {"peak_mib": 100.0 + i, "started": start, "seconds": seconds,
                  "cached_entries_before": cached_first if i == 0 else 3}
        (folder / f"{name}.peak.json").write_text(json.dumps(record))
        start += seconds + gap
    return folder


def test_report_states_the_two_headline_lines(tmp_path, measured):
    ratio, table = measured
    assert ratio["ratio"] > 0 and ratio["train_ms"] > 0
    assert list(table.columns) == ["layers", "width", "neurons", "ms_per_step", "us_per_neuron_step"]
    assert table.neurons[0] == 9 * 16  # q, k, v, o and mlp.out: d each; mlp.in: 4d
    text = bench.render(bench.machine(), ratio, None, table)
    assert re.search(r"^localization_step_over_train_step = \d+\.\d\d$", text, re.M)
    assert "| 1 | 16 | 144 |" in text


def test_make_figures_minutes_is_the_wall_time_of_one_run_and_says_whether_it_was_clean(tmp_path):
    stems = ["01_a", "02_b"]
    build = fake_build(tmp_path / "clean", {"01_a": 12.0, "02_b": 43.0, "07_c": 60.0})
    runs = bench_notebooks.records(build, [*stems, "07_c", "08_d"])
    assert list(runs) == ["01_a", "02_b", "07_c"]
    text = "\n".join(bench_notebooks.render(runs, stems, {"07_c": "c", "08_d": "d"}, "b", None))
    assert re.search(r"^make_figures_minutes = 1\.0$", text, re.M)  # 12 s + 5 s gap + 43 s
    assert "from a clean state" in text and "| `make c` | 07_c | 1.0 | 102 |" in text and "| 08_d | not run |" in text
    warm = bench_notebooks.records(fake_build(tmp_path / "warm", {"01_a": 12.0, "02_b": 43.0}, cached_first=4), stems)
    text = "\n".join(bench_notebooks.render(warm, stems, {}, "b", None))
    assert re.search(r"^make_figures_minutes = 1\.0 \(not from a clean state\)$", text, re.M)
    # A notebook re-executed long after the others: no total.
    apart = bench_notebooks.records(fake_build(tmp_path / "apart", {"01_a": 12.0, "02_b": 43.0}, gap=3600), stems)
    assert re.search(r"^make_figures_minutes = n/a$", "\n".join(bench_notebooks.render(apart, stems, {}, "b", None)),
                     re.M)


def test_report_without_executed_notebooks_says_so(tmp_path):
    # A notebook that never ran would make the total an underestimate.
    runs = bench_notebooks.records(fake_build(tmp_path / "build", {"01_a": 12.0}), ["01_a", "02_b"])
    text = "\n".join(bench_notebooks.render(runs, ["01_a", "02_b"], {}, "build", None))
    assert re.search(r"^make_figures_minutes = n/a$", text, re.M) and "02_b" in text


def test_report_is_written_atomically_where_asked(tmp_path, monkeypatch):
    step_ratio, scaling = bench.step_ratio, bench.scaling
    monkeypatch.setattr(bench, "step_ratio", lambda **kw: step_ratio(TINY, 1, 0, False))
    monkeypatch.setattr(bench_notebooks, "noop_make", lambda repo: None)
    monkeypatch.setattr(bench, "peak_memory", lambda steps: {"steps": steps, "before_mib": 1.0, "peak_mib": 2.0})
    monkeypatch.setattr(bench, "scaling", lambda **kw: scaling((1,), (16,), TINY, 1, 0, False))
    out = tmp_path / "figures" / "bench.md"
    text = bench.run(out, quick=True, build_dir=tmp_path / "none", repo=tmp_path)
    assert out.read_text() == text and "2 MiB" in text and "make_figures_minutes = n/a" in text


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_noop_make_is_timed_only_when_up_to_date(tmp_path):
    (tmp_path / "Makefile").write_text("figures: out\nout:\n\ttouch out\n")
    stale = bench_notebooks.noop_make(tmp_path)
    assert stale["up_to_date"] is False and stale["seconds"] is None
    assert not (tmp_path / "out").exists()  # asking must not build
    (tmp_path / "out").touch()
    fresh = bench_notebooks.noop_make(tmp_path)
    assert fresh["up_to_date"] is True and 0 <= fresh["seconds"] < 5


def test_synthetic_corpus_has_targets_under_every_target_rule():
    enc = bench._synthetic_corpus(TINY, n_docs=4)
    first, every = enc.target_mask(("assoc",), first_token=True), enc.target_mask(("assoc",))
    assert first.any() and torch.equal(first, every)  # one-token spans: every PII token starts its span


def test_peak_records_a_childs_memory_and_the_report_shows_it(tmp_path):
    import sys

    from privloc.tools import peak

    out = tmp_path / "build" / "01_a.peak.json"
    # The child holds ~200 MiB, far above what a bare interpreter needs.
    code = peak.main([str(out), "--", sys.executable, "-c", "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"])
    assert code == 0 and json.loads(out.read_text())["peak_mib"] > 150
    assert peak.main([str(tmp_path / "fail.peak.json"), "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert not (tmp_path / "fail.peak.json").exists()  # a failed run leaves no number behind
    assert peak.main(["only-one-arg"]) == 2
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "build" / "01_a.ipynb")
    runs = bench_notebooks.records(tmp_path / "build", ["01_a"])
    assert runs["01_a"]["seconds"] >= 0 and runs["01_a"]["cached_entries_before"] >= 0
    text = "\n".join(bench_notebooks.render(runs, ["01_a"], {}, "build", None))
    assert f"| 01_a | 0.0 | {runs['01_a']['peak_mib']:.0f} |" in text


def test_peak_adds_up_processes_that_run_side_by_side(tmp_path):
    import json
    import subprocess
    import sys

    hold = "import time; b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    script = (f"import subprocess, sys; ps = [subprocess.Popen([sys.executable, '-c', {hold!r}]) for _ in range(2)]; "
              "[p.wait() for p in ps]")
    out = tmp_path / "02_b.peak.json"
    # In a process of its own, as the Makefile runs it: this test process's earlier children do not count.
    subprocess.run([sys.executable, "-m", "privloc.tools.peak", str(out), "--", sys.executable, "-c", script], check=True)
    record = json.loads(out.read_text())
    assert record["single_process_peak_mib"] < 250 < record["peak_mib"]


def test_attack_times_read_the_cached_suite_runs(tmp_path):
    from privloc.artifacts import write_json
    from privloc.tools.bench_attacks import attack_times, render_attack_times

    assert attack_times(tmp_path) is None
    for i, seconds in enumerate((2.0, 4.0, 9.0)):
        write_json(tmp_path / "attacks" / "echr" / f"k{i}" / "attacks.json", {"seconds": seconds, "per_span": {}})
    write_json(tmp_path / "attacks" / "echr" / "b0" / "beam.json", {"seconds": 1.5, "found": []})
    times = attack_times(tmp_path)
    assert times == {"echr": {"states": 3, "median_s": 4.0, "max_s": 9.0, "sweep_beams": 1,
                              "sweep_beam_median_s": 1.5}}
    text = "\n".join(render_attack_times(times))
    assert "| echr | 3 | 4.0 | 9.0 | 1 | 1.5 |" in text
    assert "attack_suite_seconds_per_state_max = 9.0" in text


def test_pretrained_bench_adds_the_cached_fine_tuning_to_a_run_that_read_it():
    from privloc.tools import bench_pretrained

    tunings = [{"corpus": "echr", "key": "k", "epochs": 4, "steps": 220, "train_seconds": 1500.0,
                "wall_seconds": 1800.0, "em_assoc": 0.95}]
    runs = [{"seconds": 40.0, "parts": {"token_pass": 10.0, "candidates": 20.0}},
            {"seconds": 60.0, "parts": {"token_pass": 12.0, "candidates": 30.0}}]
    stages = {"set-up": 5.0, "Memorisation per epoch": 10.0, "Where the privacy neurons sit": 600.0}
    text = "\n".join(bench_pretrained.render(stages, tunings, runs))
    # The run read the victim from the cache (10 s against a 30-min build): the clean figure adds the build.
    assert re.search(r"^make_pretrained_minutes_clean = 40\.1 ", text, re.M)
    assert "pretrained_attack_suite_seconds_per_state_max = 60.0" in text and "candidates 25.0" in text
    built = {**stages, "Memorisation per epoch": 1810.0}
    assert re.search(r"^make_pretrained_minutes_clean = 40\.2$", "\n".join(bench_pretrained.render(built, tunings, runs)),
                     re.M)
    assert "No fine-tuned pretrained victim" in "\n".join(bench_pretrained.render(stages, [], []))
