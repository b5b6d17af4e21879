"""Tables for a reader: the Markdown shows the chosen columns with ± where values vary, the CSV keeps them all."""

import json

import pandas as pd
import pytest

from privloc.study.report import MAX_SHOWN, readable, save_table


def frame() -> pd.DataFrame:
    return pd.DataFrame({"method": ["original", "privloc"], "n_neurons": [0, 230], "leak_any": [1.0, 0.96667],
                         "leak_any_std": [0.0, 0.02], "ppl_change_pct": [0.0, -12.345], "n_sets": [1, 3]})


def test_readable_merges_the_spread_and_rounds():
    out = readable(frame(), ["method", "n_neurons", "leak_any", "ppl_change_pct"])
    assert list(out.columns) == ["method", "n_neurons", "leak_any", "ppl_change_pct"]
    assert out["leak_any"].tolist() == ["1.000", "0.967 ± 0.020"]
    assert out["n_neurons"].tolist() == ["0", "230"]
    assert out["ppl_change_pct"].tolist() == ["0.000", "-12.3"]


def test_save_table_keeps_every_column_in_the_csv(tmp_path):
    save_table(frame(), tmp_path, "t", "A caption.", "00_x.ipynb", "smoke", shown=["method", "leak_any"])
    assert list(pd.read_csv(tmp_path / "t.csv").columns) == list(frame().columns)
    md = (tmp_path / "t.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("|"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["method", "leak_any"]
    assert "(t.csv)" in md


def test_save_table_refuses_a_table_too_wide_to_read(tmp_path):
    with pytest.raises(ValueError, match="at most"):
        save_table(frame(), tmp_path, "t", "c", "n", "smoke", shown=[f"c{i}" for i in range(MAX_SHOWN + 1)])


def test_a_published_notebook_keeps_results_and_drops_progress_and_paths(tmp_path):
    from privloc.tools.publish import publish

    executed = {"cells": [{"cell_type": "code", "metadata": {"papermill": {"duration": 1.0}, "tags": ["x"]},
                           "source": "x", "outputs": [
                               {"output_type": "stream", "name": "stderr", "text": "train 10%|█ \r"},
                               {"output_type": "stream", "name": "stdout", "text": "0.97\n"},
                               {"output_type": "display_data", "data": {"text/plain": "fig"}, "metadata": {}}]}],
                "metadata": {"papermill": {"duration": 12.5, "input_path": "/home/me/privloc/notebooks/x.ipynb",
                                           "parameters": {"profile": "default", "figures_dir": "/home/me/f"}}},
                "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(executed))
    copy = json.loads(publish(path, tmp_path / "docs").read_text())
    outputs = copy["cells"][0]["outputs"]
    assert [o["output_type"] for o in outputs] == ["stream", "display_data"] and outputs[0]["name"] == "stdout"
    assert copy["cells"][0]["metadata"] == {"tags": ["x"]}
    assert copy["metadata"]["privloc"] == {"duration_seconds": 12.5, "parameters": {"profile": "default"}}
    assert "/home/me" not in json.dumps(copy)
