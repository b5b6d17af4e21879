"""The mask file: log α in <path>.safetensors, and in <path>.json the family, the sizes of the model the mask
was learned on and the gated layout, so that a mask is never applied to a model it does not fit."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

# Masks written before families existed name none: they were learned on GPT-2s.
DEFAULT_FAMILY = "gpt2"
# Checked in this order, so that a refusal names the most basic mismatch first.
LAYOUT_KEYS = ("family", "n_layer", "n_embd", "components", "component_sizes", "n_neurons")


def paths(path) -> tuple[Path, Path]:
    p = Path(path)
    base = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    return base.with_name(base.name + ".json"), base.with_name(base.name + ".safetensors")


def _atomic(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(path, header: dict, log_alpha: Tensor, meta: dict | None = None) -> None:
    """Both files, each atomically."""
    jpath, tpath = paths(path)
    text = json.dumps({**header, "meta": meta or {}}, indent=2)
    jpath.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"log_alpha": log_alpha.detach().cpu().contiguous()}
    _atomic(tpath, lambda tmp: save_file(tensors, tmp))
    _atomic(jpath, lambda tmp: Path(tmp).write_text(text))


def read(path) -> tuple[dict, Tensor]:
    jpath, tpath = paths(path)
    for p in (jpath, tpath):
        if not p.is_file():
            raise FileNotFoundError(f"mask file not found: {p}")
    try:
        header = json.loads(jpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupt mask header {jpath}: {err}") from err
    if not isinstance(header, dict) or not isinstance(header.get("components"), list):
        raise ValueError(f"corrupt mask header {jpath}: no component list")
    header.setdefault("family", DEFAULT_FAMILY)
    try:
        log_alpha = load_file(str(tpath)).get("log_alpha")
    except Exception as err:  # safetensors raises its own error types for truncated or garbled files
        raise ValueError(f"corrupt mask tensors {tpath}: {err}") from err
    if log_alpha is None or not log_alpha.is_floating_point() or not torch.isfinite(log_alpha).all():
        raise ValueError(f"corrupt mask tensors {tpath}: missing or non-finite float log_alpha")
    return header, log_alpha


def _describe(header: dict) -> str:
    return f"{header.get('family')} model with {header.get('n_layer')} layers × {header.get('n_embd')}"


def check_fits(path, header: dict, ours: dict) -> None:
    """Refuse a mask whose family, sizes or layout differ from this model's, naming both."""
    for key in LAYOUT_KEYS:
        if header.get(key) != ours[key]:
            raise ValueError(f"mask {path} was learned on a {_describe(header)} and does not fit this "
                             f"{_describe(ours)}: {key} is {header.get(key)!r} in the file but {ours[key]!r} here")
