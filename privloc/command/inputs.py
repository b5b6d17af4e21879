"""A user's own model and data for the command line: load, check and refuse with one clear line.

Every check runs before anything is written, so a refused command leaves no trace; outputs are claimed and
written by outputs.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from privloc.config import Profile
from privloc.corpora.data import DATASETS, DataError, span_kinds
from privloc.corpora.sources import check_source, load_split
from privloc.method import families, pretrained

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
    """`path` if it is a loadable model folder (or, with downloads allowed, a hub name), the converted folder of a
    built-in pretrained name (privloc.method.pretrained, e.g. smollm2-135m), else InputError."""
    if pretrained.is_builtin(path):
        shadowed = f"; write ./{path} for the folder of that name" if Path(path).is_dir() else ""
        print(f"model: the built-in pretrained model {path}{shadowed}")
        try:
            return str(pretrained.folder(path))
        except pretrained.MissingPretrained as error:
            raise InputError(str(error)) from None
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

    from privloc.method.model import load_model as load_checkpoint
    from privloc.study.pipeline import pretrained_tokenizer

    logging.disable_progress_bar()  # a bar for loading weights that take a fraction of a second
    logging.set_verbosity_error()  # transformers' deprecation notices are for developers, not among our bars
    try:
        model = load_checkpoint(path)
    except Exception as error:  # noqa: BLE001 - a truncated file, a bad config: any of them is the user's input
        text = " ".join(str(error).split()) or type(error).__name__
        raise InputError(f"could not load the model in {path} ({type(error).__name__}: {text})") from None
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


def data_source(source: str, origin: str = "--data") -> str:
    """A built-in corpus name, hf:<name> or an absolute dataset folder (an hf: corpus is fetched by load_data,
    from the local Hugging Face cache unless downloads are allowed). A bare built-in name means the built-in
    corpus even where a folder of that name exists (write ./enron for the folder); the run says which."""
    try:
        source = check_source(source)
    except DataError as error:
        if origin != "--data":
            raise InputError(f"{error} (the path came from {origin}: pass --data to give the data's new place)")\
                from None
        raise InputError(str(error)) from None
    if source in DATASETS:
        shadowed = f"; write ./{source} for the folder of that name" if Path(source).is_dir() else ""
        print(f"data: the built-in corpus {source}{shadowed}")
        return source
    if source.startswith("hf:"):
        return source
    folder = Path(source).resolve()
    for split in ("train", "valid"):
        if not (folder / f"{split}.jsonl").is_file():
            raise InputError(f"dataset folder {source} has no {split}.jsonl (it needs train.jsonl and valid.jsonl)")
    print(f"data: the folder {folder}")
    return str(folder)


def records(source: str, profile: Profile) -> tuple[list[dict], list[dict]]:
    """The train and valid records of a checked source; a built-in name gives the corpus `profile` trains its
    victim on (cached by the pipeline, as for the notebooks), a folder its JSONL records (docs/method.md,
    "Record format of a corpus")."""
    try:
        if source in DATASETS:
            from privloc.study.pipeline import corpus

            data = corpus(source, profile)
            return data.train, data.valid
        return load_split(source, "train"), load_split(source, "valid")
    except DataError as error:
        raise InputError(str(error)) from None


def checked_records(source: str, profile: Profile) -> tuple[list[dict], list[dict]]:
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
    """Both splits encoded with the model's own tokenizer; memorisable spans beyond the model's context are
    counted and said, and the run refused only when none is left."""
    from privloc.method.tokenizer import encode_records

    # A bar only where encoding takes a while (a few seconds per million characters).
    long = sum(len(r["text"]) for r in (*train, *valid)) > 2_000_000
    enc_train = encode_records(tokenizer, train, max_len, progress=long)
    wanted = sum(k == "assoc" for r in train for k in span_kinds(r))
    kept = sum(s.kind == "assoc" for s in enc_train.spans)
    if kept == 0:
        raise InputError(f"none of the {wanted} memorisable PII spans of {source} lies within the first {max_len} "
                         "tokens of its document (the model's context): nothing to attack")
    if kept < wanted:
        print(f"note: {wanted - kept} of {wanted} memorisable PII spans lie beyond the first {max_len} tokens of "
              f"their document (the model's context) and are left out; {kept} remain")
    return Data(source, train, valid, enc_train, encode_records(tokenizer, valid, max_len, progress=long))


def mask_base(path: str) -> Path:
    """The `<base>` of <base>.json/.safetensors: a folder holding mask.json, or a path to one of the files."""
    p = Path(path).expanduser()
    if not p.exists() and not p.with_name(p.name + ".json").exists():
        raise InputError(f"no mask at {path}: no such folder (give a folder written by `privloc localize`)")
    if p.is_dir():
        p = p / "mask"
    elif p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    for suffix in (".json", ".safetensors"):
        if not p.with_name(p.name + suffix).is_file():
            raise InputError(f"no mask at {path}: expected a folder written by `privloc localize` "
                                 f"(it has no {p.name + suffix})")
    return p


def mask_meta(base: Path) -> dict:
    try:
        meta = json.loads(base.with_name(base.name + ".json").read_text()).get("meta", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise InputError(f"corrupt mask header {base}.json: {error}") from None
    if not isinstance(meta, dict):
        raise InputError(f"corrupt mask header {base}.json: its \"meta\" is a {type(meta).__name__}, not an "
                             "object")
    return meta
