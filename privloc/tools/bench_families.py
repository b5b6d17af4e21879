"""The bench's per-family part: localisation step / training step for each architecture family, and the times of
the notebooks that run outside `make figures` (each has its own make target)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from privloc.method.families import families

# Executed notebooks that `make figures` does not run: their time is reported apart from its total.
SEPARATE = {"07_injection_benchmark": "injection", "08_architectures": "architectures", "09_objectives": "objectives",
            "10_pretrained": "pretrained"}
RATIO_TARGET = 1.1


def family_ratios(step_ratio, shape, repeats: int, warmup: int, progress: bool = True) -> dict[str, dict]:
    """`bench.step_ratio` on a model of each family of `shape`'s sizes."""
    return {name: step_ratio(shape=replace(shape, architecture=name), repeats=repeats, warmup=warmup,
                             progress=progress)
            for name in families()}


def separate_durations(build_dir) -> dict[str, float | None]:
    """papermill's recorded seconds of each separate notebook executed in `build_dir` (absent: not run)."""
    out = {}
    for stem in SEPARATE:
        path = Path(build_dir) / f"{stem}.ipynb"
        if path.exists():
            out[stem] = json.loads(path.read_text()).get("metadata", {}).get("papermill", {}).get("duration")
    return out


def render(ratios: dict[str, dict] | None, separate: dict[str, float | None], build_dir: str) -> list[str]:
    lines = ["## Localisation step vs. training step, per architecture family", ""]
    if not ratios:
        lines += ["Not measured.", ""]
    else:
        s = next(iter(ratios.values()))["shape"]
        lines += [f"The same measurement on a model of each family with the same sizes ({s.n_layer} layers × "
                  f"{s.n_embd}, {s.n_head} heads, batch {s.batch} × {s.seq}; target ≤ {RATIO_TARGET}).", "",
                  "| family | train ms | localise ms | ratio |", "|---|---|---|---|"]
        lines += [f"| {name} | {r['train_ms']:.1f} | {r['localize_ms']:.1f} | {r['ratio']:.2f} |"
                  for name, r in ratios.items()]
        lines += [""] + [f"localization_step_over_train_step_{name} = {r['ratio']:.2f}" for name, r in ratios.items()]
        lines += [""]
    lines += ["## Notebooks outside `make figures`", ""]
    for stem in SEPARATE:
        seconds = separate.get(stem)
        if stem not in separate:
            lines += [f"`{stem}` was not executed in `{build_dir}` (`make {SEPARATE[stem]}`).", ""]
        else:
            lines += [f"{stem}_minutes = {'n/a' if seconds is None else f'{seconds / 60:.1f}'} "
                      f"(`make {SEPARATE[stem]}`)", ""]
    return lines
