"""The artifact cache: every dataset, tokenizer, checkpoint and mask lives in a folder keyed by its config.

A folder is built under a temporary name and renamed into place only when complete, so an interrupted
run never leaves something a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

COMPLETE = ".complete"


def cache_root() -> Path:
    """$PRIVLOC_CACHE, else `artifacts/` at the repository root (or the working directory if not in a checkout)."""
    if os.environ.get("PRIVLOC_CACHE"):
        return Path(os.environ["PRIVLOC_CACHE"])
    repo = Path(__file__).resolve().parents[1]
    base = repo if (repo / "pyproject.toml").exists() else Path.cwd()
    return base / "artifacts"


def _plain(obj: Any) -> Any:
    if is_dataclass(obj):
        return _plain(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in sorted(obj.items())}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def config_key(*parts: Any) -> str:
    """A short stable hash of JSON-able configs (dataclasses allowed)."""
    text = json.dumps(_plain(list(parts)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_plain(obj), indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def is_cached(kind: str, key: str, root: Path | None = None) -> bool:
    """Whether the complete folder `<root>/<kind>/<key>` exists (an interrupted build does not count)."""
    return ((root or cache_root()) / kind / key / COMPLETE).exists()


def cached_dir(kind: str, key: str, build: Callable[[Path], None], root: Path | None = None) -> Path:
    """Return the complete folder `<root>/<kind>/<key>`, calling `build(tmp_folder)` first if it is missing."""
    final = (root or cache_root()) / kind / key
    if is_cached(kind, key, root):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}."))
    try:
        build(tmp)
        (tmp / COMPLETE).write_text("")
        if final.exists():  # an incomplete leftover from an interrupted run
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
