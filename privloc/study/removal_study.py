"""Notebook 11: which removal of memorised PII holds against the attacker, and do the privacy neurons help it?

Every removal starts from the same victim and the same localisation, one learned on part of each person's
documents (`holdout`), so that each is judged on the documents it was shown and on the other documents of the
same people:

- deactivation (the paper): our top units switched off, at several shares, and matched random units;
- editing: the weights that deactivation would zero re-trained to forget the PII (method.removal), on our units
  and on matched random ones, after several step counts;
- unlearning: the same objective on every weight, the unconstrained reference;
- the floor: a model that never saw these people's PII (the scrubbed victim, or a pretrained victim's base).

Each removal is one model state of the attack suite; its rows (both document parts, perplexity, cost) are cached
under `removal/<corpus>` by everything that makes it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter
from tqdm.auto import tqdm

from privloc import artifacts
from privloc.config import Profile
from privloc.corpora.data import CATEGORIES, substitute
from privloc.corpora.synthetic import sample_values
from privloc.method import baselines
from privloc.method.metrics import perplexity
from privloc.method.mitigate import masked
from privloc.method.removal import edit_path
from privloc.method.tokenizer import Encoded, encode_records
from privloc.study import state_attacks
from privloc.study.pipeline import Victim, holdout_split
from privloc.study.plots import OKABE_ITO

LEAKS = ("leak_greedy", "leak_beam", "leak_sample", "leak_candidates", "leak_candidates_low", "leak_any",
         "leak_logit_lens")
# The Markdown table's columns; the CSV keeps every one.
SHOWN = ["method", "units", "strength", "documents", "leak_greedy", "leak_beam", "leak_candidates",
         "leak_candidates_low", "leak_any", "leak_logit_lens", "ppl_change_pct", "seconds"]
# The re-training removals: method -> (objective of method.removal, the units whose weights it trains).
EDITS = {"edit": ("unlikelihood", ("privloc", "random")), "edit-margin": ("margin", ("privloc", "random")),
         "overwrite": ("overwrite", ("privloc", "random")), "unlearn": ("unlikelihood", ("all",))}
# Substitute values come from a generator seed the candidate attack's pool (attack seed + 1) never uses.
SUBSTITUTE_SEED_OFFSET = 1000


def with_strengths(profile: Profile, shares=None, edit_steps=None) -> Profile:
    """`profile` with the notebook's deactivation shares and edit step counts (None keeps the profile's)."""
    chosen = {k: tuple(v) for k, v in (("shares", shares), ("edit_steps", edit_steps)) if v is not None}
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
    units = {"privloc": ours, "random": baselines.random_matched(run.masker, ours, seed=run.config.seed), "all": None}
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
        loss, which = EDITS[method]
        lr = cfg.unlearn_lr if method == "unlearn" and cfg.unlearn_lr else cfg.edit.lr
        edit = replace(cfg.edit, loss=loss, lr=lr)
        extra = (cfg.overwrite_copies,) if loss == "overwrite" else ()
        for unit_label in which:
            ids = units[unit_label]
            key = artifacts.config_key(v.path.name, method, unit_label, state_attacks.plain_ids(ids), list(components),
                                       edit, cfg.edit_steps, parts["learned documents"], profile.attack, *extra)
            rows += [{"method": method, "units": unit_label, **r}
                     for r in _cached(v, key, lambda ids=ids, key=key, edit=edit: _edited_rows(
                         v, profile, parts, ids, components, edit, key, progress))]
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


def _edited_rows(v, profile, parts, ids, components, edit, key, progress) -> list[dict]:
    cfg = profile.removal
    enc = _edit_corpus(v, profile, parts["learned documents"], edit.loss)
    path = edit_path(v.model, enc, ids, components, edit, cfg.edit_steps, progress)
    rows = []
    for steps, (model, seconds) in path.items():
        rows += [{"strength": f"{steps} steps", "seconds": seconds, **r}
                 for r in _rows(v, profile, parts, None, None, model=model, label=f"removal {key} {steps}")]
    return rows


def holds(table: pd.DataFrame, tolerance: float = 0.05, max_ppl_change: float = 5.0) -> pd.Series:
    """Per row: leak_any within `tolerance` of the floor's on the same documents (or of the candidates' chance
    without a floor), the bottom tail within `tolerance` of chance, at most `max_ppl_change` % perplexity."""
    floor = _floor(table).set_index("documents")["leak_any"]
    level = table["documents"].map(floor) if len(floor) else table["leak_candidates_chance"]
    return ((table["leak_any"] <= level + tolerance)
            & (table["leak_candidates_low"] <= table["leak_candidates_chance"] + tolerance)
            & (table["ppl_change_pct"] <= max_ppl_change))


def strongest(table: pd.DataFrame) -> pd.DataFrame:
    """Each removal at its strongest setting (the last row of each method and units), per document part."""
    return table.groupby(["method", "units", "documents"], sort=False).tail(1).reset_index(drop=True)


def units_help(table: pd.DataFrame) -> pd.DataFrame:
    """Our units against matched random ones, per removal, strength and document part: the difference in
    leak_any and in candidate ranking (negative: ours removes more)."""
    rows = []
    for method in ("deactivate", *(m for m, (_, which) in EDITS.items() if "random" in which)):
        here = table[table["method"] == method]
        ours, rand = (here[here["units"] == u].set_index(["strength", "documents"]) for u in ("privloc", "random"))
        both = ours.index.intersection(rand.index)
        for strength, part in both:
            a, b = ours.loc[(strength, part)], rand.loc[(strength, part)]
            rows.append({"method": method, "strength": strength, "documents": part,
                         "leak_any_ours": a["leak_any"], "leak_any_random": b["leak_any"],
                         "d_leak_any": a["leak_any"] - b["leak_any"],
                         "d_candidates": a["leak_candidates"] - b["leak_candidates"],
                         "ppl_ours": a["ppl_change_pct"], "ppl_random": b["ppl_change_pct"]})
    return pd.DataFrame(rows)


def chance(table: pd.DataFrame) -> float:
    return float(np.nanmean(table["leak_candidates_chance"]))


# One colour per removal; our units drawn bold with circles, matched random units thin with crosses.
COLORS = {"deactivate": OKABE_ITO[4], "edit": OKABE_ITO[5], "edit-margin": OKABE_ITO[0], "overwrite": OKABE_ITO[6],
          "unlearn": OKABE_ITO[2]}
UNIT_STYLE = {"privloc": dict(lw=2, marker="o", alpha=1.0), "random": dict(lw=1, marker="x", alpha=0.7),
              "all": dict(lw=2, marker="D", alpha=1.0)}


def _curves(table: pd.DataFrame):
    for (method, units), d in table[table["method"].isin(list(COLORS))].groupby(["method", "units"], sort=False):
        yield method, units, d


def _name(method: str, units: str) -> str:
    return f"{method}, {'every weight' if units == 'all' else units + ' units'}"


def plot_tradeoff(table: pd.DataFrame, title: str, budget: int):
    """leak_any and the candidate attack alone against the perplexity change: one curve per removal (its
    strengths), solid on the learned documents and dashed on the held-out ones; the floor and chance drawn."""
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8), sharey=True)
    base = table[table["method"] == "original"]
    floor = _floor(table)
    for ax, metric, name in zip(axes, ("leak_any", "leak_candidates"), ("leak_any", "candidate ranking"),
                                strict=True):
        for method, units, d in _curves(table):
            for part, ls in (("learned documents", "-"), ("held-out documents", "--")):
                here = d[d["documents"] == part]
                ax.plot(here["ppl_change_pct"], here[metric], ls=ls, color=COLORS[method], ms=5,
                        mfc=COLORS[method] if ls == "-" else "white", **UNIT_STYLE[units],
                        label=_name(method, units) if ls == "-" else None)
        ax.scatter([0] * len(base), base[metric], color="black", marker="X", s=40, zorder=3, label="original")
        if len(floor):
            ax.scatter(floor["ppl_change_pct"], floor[metric], color="grey", marker="*", s=80, zorder=3,
                       label=f"{floor['method'].iloc[0]} (never saw the PII)")
        ax.axhline(chance(table), color="grey", lw=1, ls=":", label="chance B/(K+1)")
        ax.axvline(5, color="grey", lw=0.6, ls="-.")
        ax.set_xscale("symlog", linthresh=10)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:+g}" if x else "0"))
        ax.set(xlabel="non-PII perplexity change (%)", title=name, ylim=(-0.03, 1.03))
    axes[0].set_ylabel(f"share of memorised PII found (B = {budget})")
    axes[1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                   title="solid: learned documents\ndashed: held-out", title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _floor(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table["method"].isin(["original", "deactivate", *EDITS])]


def findings(table: pd.DataFrame, kind: str, budget: int, tolerance: float = 0.05,
             max_ppl_change: float = 5.0) -> list[str]:
    """'What we found' for one victim kind, from its comparison table."""
    verdict = table.assign(ok=holds(table, tolerance, max_ppl_change))
    verdict = verdict[verdict["method"].isin(list(COLORS))]
    both = verdict.groupby(["method", "units", "strength"], sort=False)["ok"].all()
    ok = both[both].index.tolist()
    top = strongest(table)
    floor = _floor(table)
    lines = [f"**{kind}.** Chance for the candidate attack is {chance(table):.2f} (B = {budget})"
             + (f"; the {floor['method'].iloc[0]} model, which never saw the PII, leaks "
                + " / ".join(f"{x:.2f}" for x in floor["leak_any"]) + " (`leak_any`, learned / held-out documents)."
                if len(floor) else ".")]
    for method, units, d in _curves(top):
        learned, held = (d[d["documents"] == p].iloc[0] for p in ("learned documents", "held-out documents"))
        lines.append(
            f"- {_name(method, units)} ({learned['strength']}): greedy {learned['leak_greedy']:.2f} / "
            f"{held['leak_greedy']:.2f}, candidates {learned['leak_candidates']:.2f} / {held['leak_candidates']:.2f}, "
            f"bottom tail {learned['leak_candidates_low']:.2f} / {held['leak_candidates_low']:.2f}, `leak_any` "
            f"{learned['leak_any']:.2f} / {held['leak_any']:.2f} (learned / held-out documents), perplexity "
            f"{learned['ppl_change_pct']:+.1f}%, {learned['seconds']:.0f} s"
            + (f" after a localisation of {learned['localisation_seconds']:.0f} s." if units == "privloc" else "."))
    criterion = (f"`leak_any` within {tolerance} of the floor, the bottom tail within {tolerance} of chance and at "
                 f"most +{max_ppl_change:.0f}% perplexity, on the learned and the held-out documents alike")
    if ok:
        lines.append(f"- Holds ({criterion}): " + "; ".join(f"{_name(m, u)} ({s})" for m, u, s in ok) + ".")
    else:
        lines.append(f"- No removal holds ({criterion}).")
    helps = units_help(table)
    if len(helps):
        mean = helps.groupby("method")["d_leak_any"].mean()
        lines.append("- Our units against matched random ones (mean difference in `leak_any`, negative: ours remove "
                     "more): " + ", ".join(f"{m} {d:+.2f}" for m, d in mean.items()) + ".")
    return lines
