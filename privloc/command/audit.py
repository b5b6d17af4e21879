"""`privloc audit`: the attack suite of the notebooks on any model and dataset, written up as a report folder.

The numbers come from the functions notebooks 03 and 06 use (attacks.attack_suite, attacks.summarize,
metrics.perplexity); this module only gathers them into report.json, report.md and a few plots.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from privloc.config import AttackConfig
from privloc.corpora.data import CATEGORIES
from privloc.method.attacks import ATTACKS, _success, attack_suite, budget_sweep, summarize
from privloc.method.candidates import CandidateSets, candidate_pool
from privloc.study.completions import greedy_completion, prompt_tail

EXPOSURE_KEYS = ("exposure", "exposure_chance", "exposure_max", "mrr", "mrr_chance", "n_ranked")
DESCRIPTIONS = {
    "greedy": "greedy decoding from the true prefix reproduces the span",
    "beam": "the span is among the B beams of a B-beam search",
    "sample": "the span is among B top-k samples (k = {top_k}; exact expectation)",
    "candidates": "the span ranks ≤ B among {n_candidates} same-category candidates of its length",
    "logit_lens": "white-box: every token is in the top B of some layer's logit lens",
    "any": "at least one black-box attack (greedy, beam, sample, candidates) recovers it",
}


def _clean(value):
    """JSON has no NaN: a number that could not be measured (e.g. no span of a category) becomes null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _leakage(summary: dict) -> dict:
    attacks = [a for a in ATTACKS if f"leak_{a}" in summary] + ["any"]
    return {a: summary[f"leak_{a}"] for a in attacks} | {"candidates_chance": summary["leak_candidates_chance"]}


def _examples(model, tokenizer, enc, frame: pd.DataFrame, budget: int, n: int) -> list[dict]:
    """Up to `n` recovered spans, one category after the other so that they mix."""
    # The sampler counts as finding a span when its B draws succeed with probability at least 1/2.
    success = _success(frame, budget).loc[frame["in_search"], list(ATTACKS)]
    rows = [(i, [a for a, v in r.items() if v >= 0.5]) for i, r in success.iterrows()]
    queues = {c: [(i, f) for i, f in rows if f and frame.at[i, "category"] == c] for c in CATEGORIES}
    picked = []
    while len(picked) < n and any(queues.values()):
        for c in CATEGORIES:
            if queues[c] and len(picked) < n:
                picked.append(queues[c].pop(0))
    out = []
    for i, found in picked:
        span = enc.spans[i]
        out.append({"category": span.category, "prompt": prompt_tail(tokenizer, enc, span), "true_pii": span.text,
                    "greedy_completion": greedy_completion(model, tokenizer, enc, span), "found_by": found})
    return out


def run(model, tokenizer, data, cfg: AttackConfig, n_examples: int = 5, progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """Every number of the audit of `model` on `data` (own.Data), and the per-span attack results."""
    from privloc.method.metrics import perplexity

    start = time.perf_counter()
    sets = CandidateSets(tokenizer, candidate_pool(CATEGORIES, cfg.pool_size, cfg.seed), cfg.n_candidates, cfg.seed)
    result = attack_suite(model, data.enc_train, sets, cfg, progress=progress)
    frame = result.per_span
    summary = summarize(frame, cfg.budget)
    per_category = {}
    for c in CATEGORIES:
        part = frame[frame["category"] == c]
        if len(part):
            s = summarize(part, cfg.budget)
            per_category[c] = {"n_spans": len(part), "n_search_spans": s["n_search_spans"],
                               "exact_match": float(part["greedy"].mean()), **_leakage(s),
                               **{k: s[k] for k in ("exposure", "mrr")}}
    report = {
        "data": data.source, "budget": cfg.budget, "attack_config": asdict(cfg),
        "n_train_docs": len(data.train), "n_valid_docs": len(data.valid),
        "n_assoc_spans": sum(s.kind == "assoc" for s in data.enc_train.spans),
        "n_pass_spans": summary["n_pass_spans"], "n_search_spans": summary["n_search_spans"],
        "leakage": _leakage(summary), "exact_match": float(frame["greedy"].mean()),
        "per_category": per_category,
        "exposure": {k: summary[k] for k in EXPOSURE_KEYS},
        "perplexity": perplexity(model, data.enc_valid),
        "budget_sweep": budget_sweep(frame, sorted({*cfg.sweep, cfg.budget})).drop(columns="beam").to_dict("records"),
        "examples": _examples(model, tokenizer, data.enc_train, frame, cfg.budget, n_examples),
        "attack_seconds": result.seconds,
    }
    report["seconds"] = time.perf_counter() - start
    return _clean(report), frame


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def summary_rows(report: dict) -> list[list[str]]:
    rows = [[f"leak_{a}", _fmt(v)] for a, v in report["leakage"].items() if a != "candidates_chance"]
    exposure = report["exposure"]
    rows += [["exposure (bits)", f"{_fmt(exposure['exposure'], 2)} (chance {_fmt(exposure['exposure_chance'], 2)})"],
             ["MRR", f"{_fmt(exposure['mrr'])} (chance {_fmt(exposure['mrr_chance'])})"],
             ["perplexity, non-PII", _fmt(report["perplexity"]["ppl_nonpii"], 2)]]
    return rows


def summary_table(report: dict) -> str:
    from tabulate import tabulate

    return tabulate(summary_rows(report), headers=[f"B = {report['budget']}", "value"], tablefmt="simple")


def _plots(report: dict, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    leak = {a: v for a, v in report["leakage"].items() if a != "candidates_chance" and v is not None}
    # Horizontal bars: the attack names are long and would run together under vertical ones.
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(leak) + 1))
    names = [a.replace("_", " ") for a in leak][::-1]
    ax.barh(names, list(leak.values())[::-1], color="#0072B2")
    for y, value in enumerate(list(leak.values())[::-1]):
        ax.text(min(value, 1) + 0.01, y, f"{value:.2f}", va="center", fontsize=8)
    ax.axvline(report["leakage"]["candidates_chance"], color="grey", ls="--", lw=1, label="candidates at chance")
    ax.set(xlim=(0, 1.12), xlabel="share of spans recovered", title=f"leakage per attack, B = {report['budget']}")
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(folder / "attacks.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    cats = report["per_category"]
    fig, ax = plt.subplots(figsize=(6, 3))
    width = 0.38
    for k, (key, color) in enumerate((("greedy", "#E69F00"), ("any", "#D55E00"))):
        ax.bar([i + (k - 0.5) * width for i in range(len(cats))], [cats[c][key] or 0 for c in cats], width,
               label=f"leak_{key}", color=color)
    ax.set_xticks(range(len(cats)), list(cats))
    ax.set(ylim=(0, 1.05), ylabel="share of spans recovered", title="leakage per PII category")
    ax.legend(fontsize=8)
    fig.savefig(folder / "categories.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    sweep = pd.DataFrame(report["budget_sweep"])
    fig, ax = plt.subplots(figsize=(6, 3))
    # Distinct markers and dashes, drawn widest first: lines that coincide (candidates under "any") stay visible.
    styles = ["-", "--", "-.", ":", (0, (3, 1, 1, 1)), (0, (5, 2))]
    markers = ["o", "s", "^", "D", "v", "x"]
    columns = [c for c in sweep if c != "budget"]
    for k, column in enumerate(columns):
        ax.plot(sweep["budget"], sweep[column], marker=markers[k % 6], ls=styles[k % 6], lw=2.6 - 0.3 * k,
                label=column.removeprefix("leak_").replace("_", " "), alpha=0.85)
    ax.set(xscale="log", ylim=(0, 1.05), xlabel="attacker budget B (tries)", ylabel="share recovered",
           title="leakage against the attacker's budget")
    ax.legend(fontsize=7, ncol=3)
    fig.savefig(folder / "budget.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return ["attacks.png", "categories.png", "budget.png"]


def markdown(report: dict, plots: list[str]) -> str:
    from tabulate import tabulate

    cfg = report["attack_config"]
    lines = [f"# privloc audit: {report['model']}", "",
             f"Data: `{report['data']}` ({report['n_train_docs']} training documents, {report['n_assoc_spans']} "
             f"memorisable PII occurrences). Attacker budget B = {report['budget']}; the one-pass attacks scored "
             f"{report['n_pass_spans']} spans, beam search and candidates the first {report['n_search_spans']}.", "",
             "## What was measured", "",
             "Every memorised (`assoc`) PII occurrence — an attribute of a data subject already named in the "
             "document — is attacked from the document's true prefix. A span counts as recovered when:", ""]
    lines += [f"- `{a}`: {d.format(**cfg)}" for a, d in DESCRIPTIONS.items()]
    lines += ["", "## Leakage per attack", "",
              tabulate(summary_rows(report), headers=["measure", "value"], tablefmt="github"), "",
              f"Greedy exact match over every scored span: {_fmt(report['exact_match'])}. The candidate attack "
              f"would recover {_fmt(report['leakage']['candidates_chance'])} by chance.", "",
              "## Per PII category", ""]
    # leak_greedy is the greedy exact match; beam, candidates and `any` rest on the n_search_spans.
    keys = ["n_spans", "n_search_spans", *[k for k in report["leakage"] if k != "candidates_chance"], "exposure",
            "mrr"]
    table = [[c, *[_fmt(v.get(k)) for k in keys]] for c, v in report["per_category"].items()]
    lines += [tabulate(table, headers=["category", *keys], tablefmt="github"), "",
              "`n_spans` spans per category are scored by greedy, sampling and the logit lens; beam search, "
              "candidates and `any` by the first `n_search_spans` of them.", "", "## Recovered examples", ""]
    if report.get("pii_redacted", True):
        lines += ["PII is redacted (first character and format kept); `privloc audit --show-pii` prints it in "
                  "full.", ""]
    if report["examples"]:
        # A pipe inside a cell would split it.
        table = [[str(x).replace("|", "\\|") for x in (e["category"], e["prompt"], e["true_pii"],
                                                        e["greedy_completion"], ", ".join(e["found_by"]))]
                 for e in report["examples"]]
        lines.append(tabulate(table, headers=["category", "prompt (end)", "true PII", "greedy completion",
                                              "found by"], tablefmt="github"))
    else:
        lines.append("No span was recovered by any attack.")
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", f"Every number is also in `report.json`. Attacks took {report['attack_seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


def write(report: dict, folder: Path) -> None:
    from privloc.artifacts import atomic_write_text, write_json

    plots = _plots(report, folder)
    write_json(folder / "report.json", report)
    atomic_write_text(folder / "report.md", markdown(report, plots))
