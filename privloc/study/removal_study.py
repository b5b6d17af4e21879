"""Notebook 11: which removal of memorised PII holds against the attacker, and do the privacy neurons help it?

Every removal starts from the same victim and the same localisation, one learned on part of each person's
documents (`holdout`), so that each is judged on the documents it was shown and on the other documents of the
same people:

- deactivation (the paper): our top units switched off, at several shares, and matched random units;
- editing: the weights that deactivation would zero re-trained to forget the PII (method.removal), on our units
  and on matched random ones, after several step counts;
- rank editing (method.rank_edit, after REVS): the MLP units that promote the PII's rarest tokens rewritten in
  vocabulary space, chosen among our units, matched random ones, or every MLP unit ("own" choice);
- unlearning: the same objective on every weight (unlikelihood, or NPO), the unconstrained reference;
- the floor: a model that never saw these people's PII (the scrubbed victim, or a pretrained victim's base).

Each removal at each strength is one model state of the attack suite; its rows (both document parts, perplexity,
cost) are cached under `removal/<corpus>` by everything that makes it, so a new strength runs alone.
The verdicts drawn from the table are in removal_verdict.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from privloc import artifacts
from privloc.config import Profile
from privloc.corpora.data import CATEGORIES, substitute
from privloc.corpora.synthetic import sample_values
from privloc.method import baselines
from privloc.method.metrics import perplexity
from privloc.method.mitigate import masked
from privloc.method.rank_edit import rank_edit
from privloc.method.removal import edit_path
from privloc.method.tokenizer import Encoded, encode_records
from privloc.study import state_attacks
from privloc.study.pipeline import Victim, holdout_split

LEAKS = ("leak_greedy", "leak_beam", "leak_sample", "leak_candidates", "leak_candidates_low", "leak_any",
         "leak_logit_lens")
# The Markdown table's columns; the CSV keeps every one.
SHOWN = ["method", "units", "strength", "documents", "leak_greedy", "leak_beam", "leak_candidates",
         "leak_candidates_low", "leak_any", "leak_logit_lens", "ppl_change_pct", "seconds"]
# The removals that change weights: method -> (objective of method.removal, or "rank" for method.rank_edit; the
# units it may change: "all" every weight, "own" the rank edit's own choice among every MLP unit).
EDITS = {"edit": ("unlikelihood", ("privloc", "random")), "edit-margin": ("margin", ("privloc", "random")),
         "overwrite": ("overwrite", ("privloc", "random")), "rank-edit": ("rank", ("privloc", "random", "own")),
         "unlearn": ("unlikelihood", ("all",)), "npo": ("npo", ("all",))}
# Substitute values come from a generator seed the candidate attack's pool (attack seed + 1) never uses.
SUBSTITUTE_SEED_OFFSET = 1000


def with_strengths(profile: Profile, shares=None, edit_steps=None, unlearn_steps=None, rank_demotions=None) -> Profile:
    """`profile` with the notebook's deactivation shares, step counts and rank-edit aims (None keeps the
    profile's)."""
    given = (("shares", shares), ("edit_steps", edit_steps), ("unlearn_steps", unlearn_steps),
             ("rank_demotions", rank_demotions))
    chosen = {k: tuple(v) for k, v in given if v is not None}
    return replace(profile, removal=replace(profile.removal, **chosen)) if chosen else profile


def setting(source: str, profile: Profile, holdout: float, progress: bool = True):
    """(victim, holdout localisation, floor model, floor label) of one victim kind: the scrubbed victim is the
    floor of a small victim, the untouched base model that of a pretrained one."""
    from privloc.method.model import build_model
    from privloc.study.pipeline import localization, victim

    v = victim(source, profile, progress=progress)
    run = localization(source, profile, holdout=holdout, progress=progress)
    if profile.model.pretrained:
        return v, run, build_model(profile.model, None).eval(), "base"
    return v, run, victim(source, profile, progress=progress, scrubbed=True).model, "scrubbed"


def _parts(v: Victim, run) -> dict[str, list[int]]:
    return dict(zip(("learned documents", "held-out documents"), holdout_split(v.corpus, run), strict=True))


def _rows(v: Victim, profile: Profile, parts, ids, components, model=None, label: str = "") -> list[dict]:
    """The attack suite's summary on each document part, with the state's non-PII perplexity."""
    target = v.model if model is None else model
    with masked(target, ids, components):
        ppl = perplexity(target, v.corpus.enc_valid, autocast=profile.attack.autocast)["ppl_nonpii"]
    out = []
    for part, doc_rows in parts.items():
        summary = state_attacks.attack(v, profile, ids, components, rows=doc_rows, model=model, label=label).summary()
        out.append({"documents": part, "n_spans": summary["n_pass_spans"], "ppl_nonpii": ppl,
                    "mrr": summary["mrr"], "leak_candidates_chance": summary["leak_candidates_chance"],
                    **{k: summary[k] for k in LEAKS}})
    return out


def _cached(v: Victim, key: str, make) -> list[dict]:
    def build(folder: Path) -> None:
        artifacts.write_json(folder / "rows.json", {"rows": make()})

    return artifacts.read_json(artifacts.cached_dir(f"removal/{v.corpus.name}", key, build) / "rows.json")["rows"]


def compare(v: Victim, profile: Profile, run, floor=None, floor_label: str = "scrubbed",
            progress: bool = True) -> pd.DataFrame:
    """One row per removal, strength and document part (see the module's docstring); `floor` is a model that
    never saw the PII, named by `floor_label`. `ppl_change_pct` is against the victim's own perplexity."""
    cfg, components, parts = profile.removal, run.masker.components, _parts(v, run)
    ours = run.closed_ids()
    units = {"privloc": ours, "random": baselines.random_matched(run.masker, ours, seed=run.config.seed), "all": None,
             "own": None}
    ranking, n = run.masker.ranking(), run.masker.n_neurons
    rows = [{"method": "original", "units": "—", "strength": "—", "seconds": 0.0, **r}
            for r in _rows(v, profile, parts, None, components)]
    # Our mask's own units at their share; the top of its ranking at the others.
    shares = {**{max(1, round(s * n)): ranking[: max(1, round(s * n))] for s in cfg.shares}, len(ours): ours}
    for k, ids in tqdm(sorted(shares.items()), desc="deactivation", disable=not progress, leave=False):
        rows += [{"method": "deactivate", "units": "privloc", "strength": f"{100 * k / n:.1f}% of units",
                  "seconds": 0.0, **r} for r in _rows(v, profile, parts, ids, components)]
    rows += [{"method": "deactivate", "units": "random", "strength": f"{100 * len(ours) / n:.1f}% of units",
              "seconds": 0.0, **r} for r in _rows(v, profile, parts, units["random"], components)]
    for method in cfg.methods:
        for unit_label in EDITS[method][1]:
            rows += [{"method": method, "units": unit_label, **r}
                     for r in _removal_rows(v, profile, parts, method, unit_label, units[unit_label], components,
                                            progress)]
    if floor is not None:
        rows += [{"method": floor_label, "units": "—", "strength": "—", "seconds": 0.0, **r}
                 for r in _rows(v, profile, parts, None, None, model=floor, label=floor_label)]
    table = pd.DataFrame(rows)
    table["ppl_change_pct"] = 100 * (table["ppl_nonpii"] / table.loc[0, "ppl_nonpii"] - 1)
    # A removal on our units needs the localisation first; `seconds` is the removal's own time.
    table["localisation_seconds"] = np.where(table["units"] == "privloc", run.seconds, 0.0)
    return table


def _edit_corpus(v: Victim, profile: Profile, learned: list[int], loss: str) -> Encoded:
    """The documents an edit trains on: the learned ones, or for "overwrite" copies of them whose PII is
    substituted with fresh values of the same category."""
    if loss != "overwrite":
        return v.corpus.enc_train.select(learned)
    rng = np.random.default_rng(profile.attack.seed + SUBSTITUTE_SEED_OFFSET)
    values = {c: sample_values(c, profile.attack.pool_size, seed=profile.attack.seed + SUBSTITUTE_SEED_OFFSET)
              for c in CATEGORIES}
    records = [v.corpus.train[i] for i in learned] * profile.removal.overwrite_copies
    return encode_records(v.corpus.tokenizer, substitute(records, values, rng), profile.data.max_len)


def _removal_rows(v: Victim, profile: Profile, parts, method: str, unit_label: str, ids, components,
                  progress) -> list[dict]:
    """The rows of one removal on one unit set, each strength cached on its own."""
    cfg, learned = profile.removal, parts["learned documents"]
    loss, which = EDITS[method]
    common = (v.path.name, method, unit_label, state_attacks.plain_ids(ids), list(components))
    if loss == "rank":
        return [r for aim in cfg.rank_demotions
                for r in _rank_edit_rows(v, profile, parts, common, ids, components,
                                         replace(cfg.rank_edit, demote_rank=aim), progress)]
    lr = cfg.unlearn_lr if which == ("all",) and cfg.unlearn_lr else cfg.edit.lr
    edit = replace(cfg.edit, loss=loss, lr=lr)
    extra = (cfg.overwrite_copies,) if loss == "overwrite" else (cfg.npo_beta,) if loss == "npo" else ()
    steps = cfg.unlearn_steps if which == ("all",) and cfg.unlearn_steps else cfg.edit_steps
    keys = {s: artifacts.config_key(*common, edit, (s,), learned, profile.attack, *extra) for s in steps}
    missing = [s for s in steps if not artifacts.is_cached(f"removal/{v.corpus.name}", keys[s])]
    path: dict = {}  # one edit run to the largest missing strength gives every missing one

    def make(s: int) -> list[dict]:
        if not path:
            enc = _edit_corpus(v, profile, learned, loss)
            path.update(edit_path(v.model, enc, ids, components, edit, missing, progress, npo_beta=cfg.npo_beta))
        model, seconds = path.pop(s)
        return [{"strength": f"{s} steps", "seconds": seconds, **r}
                for r in _rows(v, profile, parts, None, None, model=model, label=f"removal {keys[s]} {s}")]
    return [r for s in steps for r in _cached(v, keys[s], lambda s=s: make(s))]


def _rank_edit_rows(v: Victim, profile: Profile, parts, common: tuple, ids, components, edit, progress) -> list[dict]:
    """The rows of one rank edit (`common`: what names the removal and its units, for the cache key)."""
    key = artifacts.config_key(*common, edit, parts["learned documents"], profile.attack)

    def make() -> list[dict]:
        enc = v.corpus.enc_train.select(parts["learned documents"])
        out = rank_edit(v.model, enc, ids, components, edit, progress)
        return [{"strength": f"rank ≥ {edit.demote_rank}", "seconds": out.seconds, "units_edited": out.units, **r}
                for r in _rows(v, profile, parts, None, None, model=out.model, label=f"removal {key}")]
    return _cached(v, key, make)
