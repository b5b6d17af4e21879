"""Cached pipeline steps shared by the notebooks: corpus + tokenizer, then the victim model.

Each step loads its artifact when the cache holds one for the same config, and builds it otherwise, so any
notebook can run alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from privloc import artifacts, devices
from privloc.config import Profile
from privloc.corpora.data import CATEGORIES, DATASETS, non_pii_text, read_jsonl, scrub, write_jsonl
from privloc.corpora.sources import check_source, load_split
from privloc.corpora.synthetic import GENERATOR
from privloc.method import pretrained
from privloc.method.localize import Localization, localize
from privloc.method.masking import NeuronMasker
from privloc.method.metrics import ASSOC_ONLY, leakage, perplexity
from privloc.method.mitigate import masked
from privloc.method.model import build_model, load_model, pick_device, train_victim
from privloc.method.tokenizer import Encoded, encode_records, load_tokenizer, train_tokenizer
from privloc.study.holdout import holdout_rows
from privloc.study.workers import cores, run_jobs, threads


@dataclass
class Corpus:
    name: str
    path: Path
    train: list[dict]
    valid: list[dict]
    tokenizer: object
    enc_train: Encoded
    enc_valid: Encoded


@dataclass
class Victim:
    corpus: Corpus
    model: torch.nn.Module
    history: list[dict]
    path: Path
    train_seconds: float
    source: str = ""  # what victim() was asked for: a worker process rebuilds the victim from it
    scrubbed: bool = False


def _source_id(source: str) -> str:
    """Names stay names; a folder is identified by its absolute path and the files' modification times."""
    if source in DATASETS or source.startswith("hf:"):
        return source
    folder = Path(source).resolve()
    stamps = [int((folder / f"{split}.jsonl").stat().st_mtime) for split in ("train", "valid")
              if (folder / f"{split}.jsonl").exists()]
    return f"{folder}:{stamps}"


def corpus(source: str, profile: Profile) -> Corpus:
    """The train/valid records and their tokenizer (see tokenizer_texts for what it is trained on), cached."""
    cfg = profile.data
    source = check_source(source)  # before anything is created in the cache

    def build(folder: Path) -> None:
        train = load_split(source, "train", seed=cfg.seed, n_subjects=cfg.n_subjects,
                           docs_per_subject=cfg.docs_per_subject, n_oneoff_docs=cfg.n_oneoff_docs)
        valid = load_split(source, "valid", seed=cfg.seed, n_subjects=cfg.n_valid_subjects,
                           docs_per_subject=cfg.valid_docs_per_subject, n_oneoff_docs=cfg.n_valid_subjects)
        write_jsonl(train, folder / "train.jsonl")
        write_jsonl(valid, folder / "valid.jsonl")
        if profile.model.pretrained:
            tokenizer = pretrained_tokenizer(profile.model.pretrained)
        else:
            tokenizer = train_tokenizer(tokenizer_texts(source, train, profile), vocab_size=cfg.vocab_size)
        tokenizer.save_pretrained(str(folder / "tokenizer"))

    generator = GENERATOR if source in DATASETS else None
    key = artifacts.config_key(_source_id(source), cfg, profile.model.pretrained, "tokenizer of another cast",
                               generator)
    path = artifacts.cached_dir(f"corpus/{Path(source).name}", key, build)
    tokenizer = load_tokenizer(path / "tokenizer")
    train, valid = read_jsonl(path / "train.jsonl"), read_jsonl(path / "valid.jsonl")
    return Corpus(
        Path(source).name, path, train, valid, tokenizer,
        encode_records(tokenizer, train, cfg.max_len), encode_records(tokenizer, valid, cfg.max_len),
    )


# Seed offset of the synthetic corpus the tokenizer is trained on: the same style, another cast.
TOKENIZER_SEED_OFFSET = 10_000


def tokenizer_texts(source: str, train: list[dict], profile: Profile) -> Iterable[str]:
    """The text a from-scratch tokenizer for `source` is trained on: never the private strings themselves.

    A tokenizer trained on the training split has merges for its cast's PII, so the true values tokenize
    shorter than any candidate of the same format and win a likelihood ranking whoever scores them, a model
    that never saw them included. For a synthetic dataset the tokenizer learns from a corpus of the same style
    and size with another cast (as GPT-2's tokenizer never saw the data it is fine-tuned on); for a user's
    corpus, from its training text with the PII spans left out.
    """
    cfg = profile.data
    if source in DATASETS:
        return [r["text"] for r in load_split(
            source, "train", seed=cfg.seed + TOKENIZER_SEED_OFFSET, n_subjects=cfg.n_subjects,
            docs_per_subject=cfg.docs_per_subject, n_oneoff_docs=cfg.n_oneoff_docs)]
    return non_pii_text(train)


def pretrained_tokenizer(name_or_path: str):
    """A hub/local tokenizer (or a built-in model's, privloc.method.pretrained) with the special tokens privloc expects
    (GPT-2 has no pad token)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pretrained.resolve(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    return tokenizer


def assoc_categories(data: Corpus) -> list[str]:
    """The PII categories that have memorisable (`assoc`) occurrences in the training split, in canonical order."""
    present = {s.category for s in data.enc_train.spans if s.kind == "assoc"}
    return [c for c in CATEGORIES if c in present]


def memorisation_metrics(model, data: Corpus, batch_size: int = 32, kinds: Sequence[str] = ASSOC_ONLY,
                         valid_cast: bool = False, autocast: str | None = None) -> dict:
    """Leakage on the training split (what was memorised) and perplexity on validation (general LM).

    Only `assoc` occurrences are scored unless `kinds` says otherwise (see metrics.leakage). `valid_cast` adds
    `em_assoc_valid`, the exact match of the validation cast's assoc spans, which the model never saw: what
    it gets right there it guessed, not recalled (a pretrained model can guess more than one from scratch).
    `autocast` ("bfloat16") runs the passes in that precision (metrics.score_tokens); None: fp32.
    """
    report = leakage(model, data.enc_train, batch_size=batch_size, kinds=kinds, autocast=autocast)
    report.pop("per_span", None)
    if valid_cast:
        report["em_assoc_valid"] = leakage(model, data.enc_valid, batch_size=batch_size, kinds=kinds,
                                           autocast=autocast)["em_assoc"]
    return {**report, **perplexity(model, data.enc_valid, batch_size=batch_size, autocast=autocast)}


def _victim_folder(data: Corpus, profile: Profile, scrubbed: bool) -> tuple[str, str]:
    key = artifacts.config_key(data.path.name, profile.model.cache_key(), profile.train.cache_key(),
                               "scrubbed" if scrubbed else "")
    return f"victim/{data.name}{'-scrubbed' if scrubbed else ''}", key


def victim(source: str, profile: Profile, progress: bool = True, scrubbed: bool = False) -> Victim:
    """The model trained on `source` under `profile`, with its training history, cached.

    `scrubbed=True` trains the same model on the corpus with every PII span replaced by its category tag:
    the training-time reference of Table 1. Either way the returned victim is evaluated on the real corpus.
    """
    data = corpus(source, profile)
    device = pick_device(profile.device)

    def build(folder: Path) -> None:
        torch.manual_seed(profile.train.seed)
        model = build_model(profile.model, data.tokenizer)
        train_enc = data.enc_train
        if scrubbed:
            train_enc = encode_records(data.tokenizer, scrub(data.train), profile.data.max_len)
        # The scrubbed reference only needs its final metrics: evaluating it along the way would cost a pass
        # over the corpus every `eval_every` steps.
        train_cfg = replace(profile.train, eval_every=profile.train.steps) if scrubbed else profile.train
        start = time.perf_counter()
        with threads(profile.train.threads if device.type == "cpu" else None):
            # A pretrained victim's history also scores the validation cast: its guessing is not zero.
            # The evaluations run in the training's precision (fp32 for the small victims).
            history = train_victim(model, train_enc, train_cfg, lambda m: memorisation_metrics(
                m, data, valid_cast=bool(profile.model.pretrained), autocast=profile.train.autocast), device, progress)
        model.to("cpu").save_pretrained(str(folder / "model"))
        data.tokenizer.save_pretrained(str(folder / "model"))
        artifacts.write_json(folder / "history.json", {
            "history": history, "wall_seconds": time.perf_counter() - start,
            "train_seconds": history[-1]["train_seconds"], "profile": profile.to_dict(),
        })

    path = artifacts.cached_dir(*_victim_folder(data, profile, scrubbed), build)
    info = artifacts.read_json(path / "history.json")
    model = devices.place(load_model(path / "model"), device).eval()
    return Victim(data, model, info["history"], path, info["train_seconds"], source, scrubbed)


def _train_quietly(source: str, profile: Profile, scrubbed: bool) -> None:
    victim(source, profile, progress=False, scrubbed=scrubbed)


def prepare_victims(sources: Sequence[str], profile: Profile, scrubbed: Sequence[str] = (),
                    workers: int | None = None, progress: bool = True) -> None:
    """Train every victim of `sources` (and the scrubbed references of `scrubbed`) that the cache lacks.

    On a CPU the trainings run side by side in separate processes (study.workers; each trains on
    `profile.train.threads` threads); a victim's weights are the same either way. On a GPU they run one after
    the other in this process. Afterwards `victim()` loads them from the cache.
    """
    # Each corpus is built here, once, rather than by two workers at the same time.
    data = {source: corpus(source, profile) for source in dict.fromkeys([*sources, *scrubbed])}
    jobs = [(s, False) for s in sources] + [(s, True) for s in scrubbed]
    todo = [(_train_quietly, (s, profile, is_scrubbed), {}) for s, is_scrubbed in jobs
            if not artifacts.is_cached(*_victim_folder(data[s], profile, is_scrubbed))]
    per_job = profile.train.threads or torch.get_num_threads()
    run_jobs(todo, pick_device(profile.device).type == "cpu", "victims", progress,
             workers or max(1, cores() // per_job))


def localization(source: str, profile: Profile, categories: tuple[str, ...] | None = None,
                 progress: bool = True, **overrides) -> Localization:
    """Algorithm 1 on the victim of `source` (optionally restricted to PII `categories`), cached as a mask file.

    `overrides` replace fields of the profile's LocalizeConfig (e.g. seed=1, steps=50). With `holdout` set,
    the gates learn on the documents `holdout.holdout_rows` leaves in (`holdout_split` gives both parts).
    """
    v = victim(source, profile, progress=progress)
    cfg, categories, key = _mask_key(v, profile, categories, overrides)

    def build(folder: Path) -> None:
        enc = v.corpus.enc_train
        if cfg.holdout:
            enc = enc.select(holdout_rows(enc, cfg.holdout, cfg.seed)[0].tolist())
        loc = localize(v.model, enc, cfg, categories, progress=progress)
        loc.masker.save(folder / "mask", meta={"history": loc.history, "seconds": loc.seconds,
                                               "categories": categories, "config": asdict(cfg)})

    path = artifacts.cached_dir(f"mask/{v.corpus.name}", key, build)
    masker = NeuronMasker.from_file(v.model, path / "mask")
    meta = artifacts.read_json(path / "mask.json")["meta"]
    return Localization(masker, meta["history"], meta["seconds"], cfg, categories)


def _mask_key(v: Victim, profile: Profile, categories, overrides: dict):
    cfg = replace(profile.localize, **overrides)
    categories = tuple(categories) if categories else None
    return cfg, categories, artifacts.config_key(v.path.name, cfg, categories)


def _localize_quietly(source: str, profile: Profile, kwargs: dict) -> None:
    localization(source, profile, progress=False, **kwargs)


def seeded(sources: Sequence[str], profile: Profile, **overrides) -> list[tuple[str, dict]]:
    """The localisations localizations() runs for each source: one per seed of the profile."""
    base = overrides.pop("seed", profile.localize.seed)
    return [(source, {**overrides, "seed": base + i}) for source in sources
            for i in range(profile.study.n_localization_seeds)]


def prepare_localizations(profile: Profile, requests: Sequence[tuple[str, dict]], progress: bool = True) -> None:
    """Run every requested localisation (source, localization() keywords) the cache lacks, side by side on a
    CPU (study.workers); localization() then reads them back. The victims must be trained already."""
    if not profile.study.side_by_side:
        return
    jobs = []
    for source, kwargs in requests:
        v = victim(source, profile, progress=False)
        overrides = {k: val for k, val in kwargs.items() if k != "categories"}
        _, _, key = _mask_key(v, profile, kwargs.get("categories"), overrides)
        if not artifacts.is_cached(f"mask/{v.corpus.name}", key):
            jobs.append((_localize_quietly, (source, profile, dict(kwargs)), {}))
    run_jobs(jobs, pick_device(profile.device).type == "cpu", "localisations", progress)


def holdout_split(data: Corpus, loc: Localization) -> tuple[list[int], list[int]]:
    """(learned, held-out) training rows of a localisation with `holdout`: documents of the same people."""
    if not loc.config.holdout:
        raise ValueError("this localisation learned on every document: it has no held-out rows")
    learned, held_out = holdout_rows(data.enc_train, loc.config.holdout, loc.config.seed)
    return learned.tolist(), held_out.tolist()


def localizations(source: str, profile: Profile, progress: bool = True,
                  **overrides) -> list[Localization]:
    """Algorithm 1 under each of the profile's `n_localization_seeds` seeds (base seed, base + 1, ...), cached."""
    return [localization(source, profile, progress=progress, **kwargs)
            for _, kwargs in seeded([source], profile, **overrides)]


def deactivation_effect(v: Victim, neuron_ids, components, autocast: str | None = None) -> dict:
    """Memorisation metrics of the victim with `neuron_ids` switched off (hard mask, no copy)."""
    with masked(v.model, neuron_ids, components):
        return memorisation_metrics(v.model, v.corpus, autocast=autocast)
