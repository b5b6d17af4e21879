"""Every numbered notebook runs end to end in the smoke profile, writing only to temporary folders."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def smoke_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("smoke")
    old = os.environ.get("PRIVLOC_CACHE")
    os.environ["PRIVLOC_CACHE"] = str(base / "cache")
    yield base
    if old is None:
        os.environ.pop("PRIVLOC_CACHE")
    else:
        os.environ["PRIVLOC_CACHE"] = old


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_runs_in_smoke_profile(notebook, smoke_dirs):
    import papermill

    figures = smoke_dirs / "figures"
    papermill.execute_notebook(
        str(notebook), str(smoke_dirs / notebook.name), cwd=str(notebook.parent), kernel_name="python3",
        parameters={"profile": "smoke", "figures_dir": str(figures)}, progress_bar=False,
    )
    # `make html` exports the executed copy; the page must load nothing from the network (tests/test_html.py).
    from privloc.tools.html import export, remote_references

    (page,) = export([smoke_dirs / notebook.name], smoke_dirs / "html")
    assert not remote_references(page.read_text(encoding="utf-8"))
    committed = ROOT / "figures"
    assert not any(p.stat().st_mtime > smoke_dirs.stat().st_mtime for p in committed.glob("*")), \
        "a smoke run wrote into the committed figures/"
