"""A user's own model and data for the command line: load, check and refuse with one clear line.

Every check runs before anything is written, so a refused command leaves no trace; outputs are built in a
temporary folder beside the target and renamed into place when complete (as the artifact cache does).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import families
from .data import DATASETS, DataError, check_source, load_split, span_kinds

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


class InputError(Exception):
    """Bad input from the command line: the message is the one line the user sees."""


@dataclass
class Data:
    source: str
    train: list[dict]
    valid: list[dict]
    enc_train: object
    enc_valid: object


def model_folder(path: str, allow_download: bool = False) -> str:
    """`path` if it is a loadable model folder (or, with downloads allowed, a hub name), else InputError."""
    folder = Path(path).expanduser()
    if not folder.exists():
        if allow_download and "/" in path and not path.startswith((".", "/", "~")):
            return path  # a hub name such as "openai-community/gpt2"
        raise InputError(f"model folder {path} does not exist")
    if not folder.is_dir():
        raise InputError(f"--model {path} is a file: expected a folder saved with save_pretrained")
    config = folder / "config.json"
    if not config.is_file():
        raise InputError(f"{path} holds no model: no config.json (save the model with save_pretrained)")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{config} is not valid JSON ({error})") from None
    # A model type no family describes is refused up front rather than deep inside the masker.
    if model_type not in families.known_model_types():
        raise InputError(f"{path} is a {model_type!r} model; privloc can gate {', '.join(families.known_model_types())}")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"{path} has no tokenizer beside the model (save it there with save_pretrained)")
    return str(folder.resolve())


def load_model(path: str, device):
    """The model (eval mode, on `device`) and its tokenizer, with the special tokens privloc needs."""
    from transformers.utils import logging

    from .model import load_model as load_checkpoint
    from .pipeline import pretrained_tokenizer

    logging.disable_progress_bar()  # a bar for loading weights that take a fraction of a second
    try:
        model = load_checkpoint(path)
    except (FileNotFoundError, OSError) as error:
        raise InputError(f"could not load the model in {path}: {error}") from None
    return model.to(device).eval(), pretrained_tokenizer(path)


def fingerprint(model) -> str:
    """A hash of every weight: a mask records the model it was learned on, and mitigate checks it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here (use --device auto or cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def data_source(source: str) -> str:
    """A built-in corpus name, hf:<name> or an absolute dataset folder (an hf: corpus is fetched by load_data,
    from the local Hugging Face cache unless downloads are allowed)."""
    try:
        source = check_source(source)
    except DataError as error:
        raise InputError(str(error)) from None
    if source in DATASETS or source.startswith("hf:"):
        return source
    folder = Path(source).resolve()
    for split in ("train", "valid"):
        if not (folder / f"{split}.jsonl").is_file():
            raise InputError(f"dataset folder {source} has no {split}.jsonl (it needs train.jsonl and valid.jsonl)")
    return str(folder.resolve())


def records(source: str, profile: str = "default") -> tuple[list[dict], list[dict]]:
    """The train and valid records of a checked source; a built-in name gives the corpus `profile` trains its
    victim on (cached by the pipeline, as for the notebooks), a folder its JSONL records (SPEC S8)."""
    try:
        if source in DATASETS:
            from .pipeline import corpus

            data = corpus(source, profile)
            return data.train, data.valid
        return load_split(source, "train"), load_split(source, "valid")
    except DataError as error:
        raise InputError(str(error)) from None


def checked_records(source: str, profile: str = "default") -> tuple[list[dict], list[dict]]:
    """The records of both splits, refused when there is nothing to attack (checked before a model is loaded)."""
    train, valid = records(source, profile)
    if not train or not valid:
        raise InputError(f"dataset {source} has an empty {'train' if not train else 'valid'}.jsonl")
    if not any(r["spans"] for r in train):
        raise InputError(f"dataset {source} has no PII spans in train.jsonl: nothing to audit "
                         "(each record lists its PII as \"spans\"; README, 'Your own data')")
    if "assoc" not in {k for r in train for k in span_kinds(r)}:
        raise InputError(f"dataset {source} has no memorisable PII: no span repeats an attribute of a data subject "
                         "already named in its document (give spans a \"subject\" that recurs)")
    return train, valid


def encode(source: str, train: list[dict], valid: list[dict], tokenizer, max_len: int) -> Data:
    """Both splits encoded with the model's own tokenizer."""
    from .tokenizer import encode_records

    return Data(source, train, valid, encode_records(tokenizer, train, max_len), encode_records(tokenizer, valid, max_len))


def output_folder(path: str, overwrite: bool) -> Path:
    """The folder a command will write, refused if it exists and `overwrite` is off (checked before any work)."""
    out = Path(path).expanduser().resolve()
    if out.exists() and not overwrite:
        raise InputError(f"output folder {path} exists: pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {path} is a file, not a folder")
    if not out.parent.is_dir():
        raise InputError(f"cannot create {path}: its parent folder {out.parent} does not exist")
    return out


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A temporary sibling of `out` to write into, renamed to `out` (replacing it) only if the block succeeds."""
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
