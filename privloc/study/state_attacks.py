"""The attack suite on the pipeline's victims: candidate sets per corpus, cached results per model state.

A model state is a victim with a set of neurons switched off. Several notebooks attack the same states (the
localisation check of notebook 03 and Table 1 of notebook 06), so each state's per-span results are cached
as JSON under a key of the victim, the neuron set, the documents and the attack settings.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from privloc import artifacts, devices
from privloc.config import AttackConfig, Profile
from privloc.corpora.data import CATEGORIES
from privloc.method.attacks import AttackResult, attack_suite, beam_attack, exposure_table
from privloc.method.candidates import CandidateSets, candidate_pool
from privloc.method.metrics import perplexity
from privloc.method.mitigate import masked
from privloc.study.pipeline import Victim, victim
from privloc.study.workers import run_jobs


@cache
def _pool(size: int, seed: int) -> dict[str, list[str]]:
    return candidate_pool(CATEGORIES, size, seed)


_SETS: dict[tuple, CandidateSets] = {}


def candidate_sets(v: Victim, cfg: AttackConfig) -> CandidateSets:
    """The length-matched candidate sets of the victim's tokenizer, one per corpus and setting in a process
    (they keep the pool's tokenizations; the pool itself is shared by every corpus)."""
    key = (str(v.corpus.path), cfg.pool_size, cfg.n_candidates, cfg.seed)
    if key not in _SETS:
        _SETS[key] = CandidateSets(v.corpus.tokenizer, _pool(cfg.pool_size, cfg.seed), cfg.n_candidates, cfg.seed)
    return _SETS[key]


def plain_ids(neuron_ids) -> list[int] | None:
    return None if neuron_ids is None else np.sort(np.asarray(neuron_ids, dtype=np.int64)).tolist()


def _state(v: Victim, label: str, split: str, ids, components, doc_rows, cfg: AttackConfig) -> list:
    """What a cached suite run is keyed by (with the beam widths run alongside)."""
    return [v.path.name, label, split, ids, list(components or ()), doc_rows, cfg]


def _attack_quietly(source: str, scrubbed: bool, profile: Profile, ids, components, widths) -> None:
    attack(victim(source, profile, progress=False, scrubbed=scrubbed), profile, ids, components, beam_widths=widths)


def prepare(profile: Profile, states: list[tuple[Victim, object, object]], beam_widths: tuple[int, ...] | None = None,
            progress: bool = True) -> None:
    """Attack every (victim, neuron ids, components) state the cache lacks, side by side on a CPU (study.workers).

    attack() and state_row() then read the results back. Only the victims' own states on their training
    documents are prepared this way (no `rows`, `model`, `enc` or `split`).
    """
    cfg = profile.attack
    if not profile.study.side_by_side:
        return
    jobs = []
    for v, neuron_ids, components in states:
        ids = plain_ids(neuron_ids)
        widths = (cfg.budget,) if beam_widths is None else tuple(sorted(set(beam_widths)))
        state = _state(v, "", "train", ids, components, None, cfg)
        keys = [artifacts.config_key(*state, tuple(w for w in widths if w == cfg.budget))]
        keys += [artifacts.config_key(*state, "beam", w) for w in widths if w != cfg.budget]
        if not v.source:
            raise ValueError("this victim was not made by pipeline.victim(): attack it in this process")
        if not all(artifacts.is_cached(f"attacks/{v.corpus.name}", key) for key in keys):
            jobs.append((_attack_quietly, (v.source, v.scrubbed, profile, ids, components, beam_widths), {}))
    run_jobs(jobs, devices.main_device(states[0][0].model).type == "cpu" if states else True, "model states",
             progress)


def attack(v: Victim, profile: Profile, neuron_ids=None, components=None, rows=None,
           beam_widths: tuple[int, ...] | None = None, model=None, label: str = "", split: str = "train",
           enc=None) -> AttackResult:
    """The attack suite on the victim with `neuron_ids` switched off (none: the victim itself), cached.

    `beam_widths` are the beam searches run: the budget's by default, none with `()`.
    `split="valid"` attacks the validation split's cast, which the victim never saw (the calibration's
    unseen PII); `enc` another encoded corpus (e.g. injected facts); `rows` limits the attacked spans to
    those documents (held-out contexts); `model` attacks another model on the victim's corpus (e.g. the
    scrubbed reference). With `model` or `enc`, `label` must name them for the cache.
    """
    cfg = profile.attack
    widths = (cfg.budget,) if beam_widths is None else tuple(sorted(set(beam_widths)))
    ids, doc_rows = plain_ids(neuron_ids), None if rows is None else sorted(int(r) for r in rows)
    if (model is not None or enc is not None) and not label:
        raise ValueError("attacking another model or corpus than the victim's needs a label that names them")
    if split not in ("train", "valid"):
        raise ValueError(f"split must be 'train' or 'valid', not {split!r}")
    corpus = enc if enc is not None else v.corpus.enc_train if split == "train" else v.corpus.enc_valid
    # The budget's beam search belongs to the suite's run; other widths (the budget sweep) are cached one by one
    # beside it, so a sweep reuses the state's suite run instead of repeating it.
    core_widths = tuple(w for w in widths if w == cfg.budget)
    state = _state(v, label, split, ids, components, doc_rows, cfg)
    target = v.model if model is None else model

    def build(folder: Path) -> None:
        with masked(target, ids, components):
            result = attack_suite(target, corpus, candidate_sets(v, cfg), cfg, rows=doc_rows,
                                  beam_widths=core_widths)
        artifacts.write_json(folder / "attacks.json", {
            "seconds": result.seconds, "parts": result.parts, "victim": v.path.name,
            "per_span": result.per_span.reset_index().to_dict(orient="list")})

    path = artifacts.cached_dir(f"attacks/{v.corpus.name}", artifacts.config_key(*state, core_widths), build)
    info = artifacts.read_json(path / "attacks.json")
    frame = pd.DataFrame(info["per_span"]).set_index("span")
    seconds = info["seconds"]  # of the run that built the entry, not of reading it back
    search = frame.index[frame["in_search"]].tolist()
    for width in (w for w in widths if w not in core_widths):
        def build_beam(folder: Path, width=width) -> None:
            start = time.perf_counter()
            with masked(target, ids, components):
                found = beam_attack(target, corpus, search, width, cfg.autocast)
            artifacts.write_json(folder / "beam.json", {"seconds": time.perf_counter() - start,
                                                        "found": [bool(x) for x in found]})

        key = artifacts.config_key(*state, "beam", width)
        beam = artifacts.read_json(artifacts.cached_dir(f"attacks/{v.corpus.name}", key, build_beam) / "beam.json")
        frame[f"beam_{width}"] = pd.Series(beam["found"], index=search)
        seconds += beam["seconds"]
    for col in [c for c in frame if c.startswith("beam_")]:
        frame[col] = frame[col].astype("boolean")
    return AttackResult(frame, cfg, seconds, info.get("parts", {}))


def state_row(v: Victim, profile: Profile, neuron_ids=None, components=None,
              model=None, label: str = "") -> dict:
    """One row of Table 1: every attack at the budget, exact match per category and non-PII perplexity.

    Exact match (`em_assoc`, `em_<CATEGORY>`) is greedy extraction over the suite's pass spans: every eligible
    assoc span by default (`AttackConfig.pass_spans`), so it equals notebook 02's metric.
    """
    target = v.model if model is None else model
    with masked(target, neuron_ids, components):
        row = perplexity(target, v.corpus.enc_valid, autocast=profile.attack.autocast)
    result = attack(v, profile, neuron_ids, components, model=model, label=label)
    frame = result.per_span
    row["em_assoc"] = float(frame["greedy"].mean())
    for category in CATEGORIES:
        here = frame.loc[frame["category"] == category, "greedy"]
        row[f"em_{category}"] = float(here.mean()) if len(here) else float("nan")
    row.update(result.summary())
    row["attack_seconds"] = result.seconds
    return row


# The columns of Table 5 a reader compares (its Markdown); the CSV keeps every one.
CALIBRATION_SHOWN = ["dataset", "case", "category", "n_spans", "exposure", "exposure_chance", "gap_bits", "at_chance",
                     "mrr", "mrr_chance"]

CALIBRATION_CASES = {
    "memorised": "original victim, training cast (what it memorised)",
    "unseen": "original victim, validation cast (PII it never saw)",
    "scrubbed": "scrubbed victim, training cast (a model that never saw any PII)",
    "base": "pretrained base model before fine-tuning, training cast (it never saw these people)",
}


def calibration(v: Victim, profile: Profile, scrubbed: Victim | None = None,
                tolerance: float = 0.5, base=None) -> pd.DataFrame:
    """Table 5: exposure and MRR of memorised PII, of unseen PII and of the scrubbed victim, beside chance.

    `base`, a model that never saw the training cast (a pretrained victim's base model), adds the case "base".
    Only the candidate attack matters here, so no beam search runs, and every span of the pass sample is
    ranked (`calibration_spans`: more per category than the suite's `search_spans`). `at_chance` says whether exposure is
    within `tolerance` bits of its chance value.
    """
    spans = profile.attack.calibration_spans
    wide = replace(profile, attack=replace(profile.attack, pass_spans=spans, search_spans=spans))
    results = {"memorised": attack(v, profile=wide, beam_widths=()),
               "unseen": attack(v, profile=wide, beam_widths=(), split="valid")}
    if scrubbed is not None:
        results["scrubbed"] = attack(v, profile=wide, beam_widths=(), model=scrubbed.model, label="scrubbed")
    if base is not None:
        results["base"] = attack(v, profile=wide, beam_widths=(), model=base, label="base")
    rows = []
    for case, result in results.items():
        ranked = result.per_span.dropna(subset=["cand_rank"])
        for category in ["all", *[c for c in CATEGORIES if (ranked["category"] == c).any()]]:
            part = ranked if category == "all" else ranked[ranked["category"] == category]
            stats = exposure_table(part)
            rows.append({"case": case, "description": CALIBRATION_CASES[case], "category": category,
                         "n_spans": len(part), **stats,
                         "gap_bits": stats["exposure"] - stats["exposure_chance"]})
    table = pd.DataFrame(rows)
    table["at_chance"] = np.where(table["case"] == "memorised", "—",
                                  np.where(table["gap_bits"].abs() <= tolerance, "yes", "no"))
    return table
