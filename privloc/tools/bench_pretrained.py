"""The pretrained study's cost (notebook 10, `make pretrained`), read from what its last run left behind.

- each stage's seconds: papermill records every cell's duration in the executed notebook; a stage is the code
  under one "## " heading of the notebook;
- the fine-tuning: the victim's history.json records the wall time of its training and evaluations, taken when
  it was built (a notebook run that found the victim cached spent only seconds on that stage);
- the attack suite per model state: every cached suite run of the pretrained victim records its seconds and
  each attack's share.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from privloc.artifacts import cache_root, read_json

NOTEBOOK = "10_pretrained"
SUITE_TARGET_S = 90


def stage_seconds(executed: Path) -> dict[str, float] | None:
    """Seconds per stage of an executed notebook 10 (None if it was not run)."""
    if not executed.exists():
        return None
    stages: dict[str, float] = {}
    stage = "set-up"
    for cell in json.loads(executed.read_text())["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and text.startswith("## "):
            stage = text.splitlines()[0][3:].strip()
        elif cell["cell_type"] == "code":
            seconds = cell.get("metadata", {}).get("papermill", {}).get("duration") or 0.0
            stages[stage] = stages.get(stage, 0.0) + seconds
    return stages


def fine_tunings(root: Path) -> list[dict]:
    """The pretrained victims in the cache: corpus, key, epochs, seconds of training and of the whole build."""
    out = []
    for history in sorted((root / "victim").glob("*/*/history.json")):
        info = read_json(history)
        if not info["profile"]["model"].get("pretrained"):
            continue
        epochs = len(info["history"])
        out.append({"corpus": history.parent.parent.name, "key": history.parent.name, "epochs": epochs,
                    "steps": info["history"][-1]["step"], "train_seconds": info["train_seconds"],
                    "wall_seconds": info["wall_seconds"], "em_assoc": info["history"][-1]["em_assoc"]})
    return out


def suite_runs(root: Path, victim_keys: set[str]) -> list[dict]:
    """Every cached attack-suite run on one of `victim_keys`: its seconds and each attack's seconds."""
    runs = []
    for record in sorted((root / "attacks").glob("*/*/attacks.json")):
        info = read_json(record)
        if info.get("victim") in victim_keys:
            runs.append({"seconds": info["seconds"], "parts": info.get("parts", {})})
    return runs


def render(stages: dict[str, float] | None, tunings: list[dict], runs: list[dict]) -> list[str]:
    lines = ["## The pretrained study (`make pretrained`, notebook 10)", ""]
    if not tunings:
        return lines + ["No fine-tuned pretrained victim in the cache (run `make pretrained`).", ""]
    lines += ["Fine-tuning, timed when each victim was built (training steps; with the evaluation after each "
              "epoch):", "", "| corpus | epochs | steps | train min | with evaluations min | final assoc exact match |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {t['corpus']} | {t['epochs']} | {t['steps']} | {t['train_seconds'] / 60:.1f} | "
              f"{t['wall_seconds'] / 60:.1f} | {t['em_assoc']:.3f} |" for t in tunings]
    lines += [""]
    fine_tune = sum(t["wall_seconds"] for t in tunings)
    if stages is None:
        lines += ["Notebook 10 has not been executed in this build folder.", ""]
    else:
        lines += ["Each stage of the last notebook run (papermill's cell times):", "", "| stage | seconds |",
                  "|---|---|"]
        lines += [f"| {name} | {sec:.0f} |" for name, sec in stages.items()]
        rest = sum(stages.values())
        # The fine-tuning is built in the memorisation stage; a run that found it cached read it in seconds.
        memo = next((sec for name, sec in stages.items() if name.lower().startswith("memorisation")), 0.0)
        cached = memo < 0.5 * fine_tune
        clean = rest - memo + fine_tune if cached else rest
        lines += ["", f"Total of that run: {rest / 60:.1f} min"
                  + (f" (the fine-tuned victim was read from the cache; its build took {fine_tune / 60:.1f} min)."
                     if cached else ", the fine-tuning included."),
                  "", f"make_pretrained_minutes_clean = {clean / 60:.1f}"
                  + (" (the run's stages plus the victim's recorded build time)" if cached else ""), ""]
    if runs:
        seconds = np.array([r["seconds"] for r in runs])
        parts: dict[str, list[float]] = {}
        for r in runs:
            for name, sec in r["parts"].items():
                parts.setdefault(name, []).append(sec)
        lines += [f"The attack suite on the pretrained victim: {len(runs)} model states, median "
                  f"{np.median(seconds):.0f} s, max {seconds.max():.0f} s (target ≤ {SUITE_TARGET_S} s). Median "
                  "seconds per attack: " + ", ".join(f"{k} {np.median(v):.1f}" for k, v in parts.items()) + ".",
                  "", f"pretrained_attack_suite_seconds_per_state_max = {seconds.max():.1f}", ""]
    return lines


def report(build_dir: str | Path = "build/default", root: Path | None = None) -> list[str]:
    root = root or cache_root()
    tunings = fine_tunings(root)
    runs = suite_runs(root, {t["key"] for t in tunings})
    return render(stage_seconds(Path(build_dir) / f"{NOTEBOOK}.ipynb"), tunings, runs)
