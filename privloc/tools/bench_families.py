"""The bench's per-family part: localisation step / training step for each architecture family."""

from __future__ import annotations

from dataclasses import replace

from privloc.method.families import families

RATIO_TARGET = 1.1


def family_ratios(step_ratio, shape, repeats: int, warmup: int, progress: bool = True) -> dict[str, dict]:
    """`bench.step_ratio` on a model of each family of `shape`'s sizes."""
    return {name: step_ratio(shape=replace(shape, architecture=name), repeats=repeats, warmup=warmup,
                             progress=progress)
            for name in families()}


def render(ratios: dict[str, dict] | None) -> list[str]:
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
    return lines
