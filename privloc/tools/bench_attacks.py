"""The attack suite's cost per model state, read from the cached runs of the last `make figures`.

Each cached suite run (privloc.study.state_attacks.attack) records how long it took when it was built: one model state
(a victim with a set of neurons switched off) on one corpus, `pass_spans` spans for the teacher-forced
attacks and `search_spans` for beam search and candidate ranking. The budget sweep's extra beam searches
are cached apart and reported apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privloc.artifacts import cache_root, read_json
from privloc.tools.markdown import table


def attack_times(root: Path | None = None) -> dict[str, dict[str, float]] | None:
    """Per corpus: count, median and maximum seconds of the suite's runs, and of the sweep's beam searches."""
    base = (root or cache_root()) / "attacks"
    if not base.is_dir():
        return None
    out = {}
    for corpus in sorted(p for p in base.iterdir() if p.is_dir()):
        suite = [read_json(f)["seconds"] for f in corpus.glob("*/attacks.json")]
        beams = [read_json(f)["seconds"] for f in corpus.glob("*/beam.json")]
        if suite:
            out[corpus.name] = {"states": len(suite), "median_s": float(np.median(suite)),
                                "max_s": float(np.max(suite)), "sweep_beams": len(beams),
                                "sweep_beam_median_s": float(np.median(beams)) if beams else float("nan")}
    return out or None


def render_attack_times(times: dict | None) -> list[str]:
    lines = ["## The attack suite per model state", ""]
    if not times:
        return lines + ["No cached attack runs found (run `make figures` first).", ""]
    lines += ["Seconds of one run of the whole suite (greedy, closed-form sampling and the logit lens from one "
              "teacher-forced pass; beam search and candidate ranking) on one model state, as recorded when "
              "`make figures` built it (target ≤ 10 s); the budget sweep's beam searches at the other widths "
              "are extra runs.", "",
              ]
    lines += table(["corpus", "states", "median s", "max s", "sweep beam runs", "their median s"],
                   [[name, t["states"], f"{t['median_s']:.1f}", f"{t['max_s']:.1f}", t["sweep_beams"],
                     f"{t['sweep_beam_median_s']:.1f}"] for name, t in times.items()])
    worst = max(t["max_s"] for t in times.values())
    return lines + ["", f"attack_suite_seconds_per_state_max = {worst:.1f}", ""]
