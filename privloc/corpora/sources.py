"""Where a corpus comes from: a synthetic dataset, a folder of JSONL records, or a Hugging Face corpus.

Every source yields records of the one format `privloc.corpora.data` defines and checks (docs/method.md, "Record format
of a corpus"); this module only finds and reads them. It sits above both `data` and `synthetic`, which need
nothing from it.
"""

from __future__ import annotations

import os
from pathlib import Path

from privloc.corpora import synthetic
from privloc.corpora.data import DATASETS, SPLITS, DataError, read_jsonl, regex_tag

_HF_VALID_SPLITS = ("validation", "valid", "dev", "test")


def load_split(source: str, split: str, **gen_kwargs) -> list[dict]:
    """Records of one split of a dataset.

    ``source`` is a synthetic dataset name (``gen_kwargs`` go to the generator), a folder holding
    ``train.jsonl`` and ``valid.jsonl``, or ``hf:<name>[:<config>]``. A synthetic name wins over a
    folder of the same name; write ``./enron`` for the folder. ``gen_kwargs`` are ignored by the other
    sources, so one configuration can serve any source.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected 'train' or 'valid'")
    source = check_source(source)
    if source in DATASETS:
        return synthetic.generate(source, split, **gen_kwargs)
    if source.startswith("hf:"):
        return _load_hf(source, split)
    split_file = Path(source) / f"{split}.jsonl"
    if not split_file.is_file():
        raise DataError(
            f"folder '{source}' has no {split}.jsonl (a dataset folder holds train.jsonl and valid.jsonl)"
        )
    return read_jsonl(split_file)


def check_source(source) -> str:
    """`source` as a string if it names a dataset: a synthetic name, an existing folder or hf:<name>."""
    source = os.fspath(source)
    if source in DATASETS or source.startswith("hf:") or Path(source).is_dir():
        return source
    raise DataError(
        f"unknown dataset '{source}': expected one of {', '.join(DATASETS)}, "
        "a folder with train.jsonl/valid.jsonl, or hf:<name>"
    )


def _load_hf(source: str, split: str) -> list[dict]:
    name, _, config = source[len("hf:"):].partition(":")
    if not name:
        raise DataError(f"'{source}' names no dataset: expected hf:<name>[:<config>]")
    import datasets  # heavy and only needed for this source

    try:
        corpus = datasets.load_dataset(name, config or None)
    except ConnectionError as error:
        # datasets says "Couldn't reach ... (OfflineModeIsEnabled)" without saying how to allow the download.
        if datasets.config.HF_HUB_OFFLINE or datasets.config.HF_DATASETS_OFFLINE:
            raise DataError(
                f"'{source}' is not in the local Hugging Face cache and downloads are off (HF_HUB_OFFLINE=1 and "
                "HF_DATASETS_OFFLINE=1 are privloc's default): set HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0, or "
                "pass --allow-download to the privloc command"
            ) from None
        raise DataError(f"could not download '{source}': {error}") from None
    wanted = ("train",) if split == "train" else _HF_VALID_SPLITS
    available = [s for s in wanted if s in corpus]
    if not available:
        raise DataError(f"'{source}' has no {' or '.join(wanted)} split (it has: {', '.join(corpus)})")
    table = corpus[available[0]]
    if "text" not in table.column_names:
        raise DataError(f"'{source}' has no 'text' column (columns: {', '.join(table.column_names)})")
    return [
        {"text": text, "spans": regex_tag(text), "style": name}
        for text in table["text"]
        if isinstance(text, str) and text.strip()
    ]
