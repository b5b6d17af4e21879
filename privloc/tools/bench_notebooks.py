"""The bench's notebook part: how long `make figures` took, whether it started from a clean state, and each notebook.

Each notebook's run is wrapped by `privloc.tools.peak`, which records beside the executed copy when the run
started, its wall seconds, its peak memory and how many cache folders existed before it. A `make figures` is
one run when its notebooks ran back to back; it started from a clean state when the first found no cache
folder. Only then is `make_figures_minutes` a clean-state time, and the report says which it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from itertools import pairwise
from pathlib import Path

from privloc.tools.markdown import table

# Executed notebooks that `make figures` does not run, and the make target of each.
SEPARATE = {"07_injection_benchmark": "injection", "08_architectures": "architectures", "09_objectives": "objectives",
            "10_pretrained": "pretrained", "11_removal": "removal"}
# A notebook that starts more than this long after the previous one ended belongs to another run.
GAP_SECONDS = 120.0


def records(build_dir, stems: list[str]) -> dict[str, dict]:
    """The peak/timing record of each executed notebook in `stems` (absent: not executed or no record)."""
    out = {}
    for stem in stems:
        path, executed = Path(build_dir) / f"{stem}.peak.json", Path(build_dir) / f"{stem}.ipynb"
        if path.exists() and executed.exists():
            out[stem] = json.loads(path.read_text())
            if "seconds" not in out[stem]:  # a record of an older privloc: papermill's own duration
                duration = json.loads(executed.read_text()).get("metadata", {}).get("papermill", {}).get("duration")
                if duration is not None:
                    out[stem]["seconds"] = duration
    return out


def figures_run(runs: dict[str, dict], stems: list[str]) -> dict:
    """Whether the notebooks `stems` ran as one run, from a clean state, and its wall minutes."""
    missing = [s for s in stems if s not in runs or "started" not in runs[s]]
    if missing or not stems:
        return {"complete": False, "missing": missing}
    ordered = [runs[s] for s in stems]
    one_run = all(0 <= b["started"] - (a["started"] + a["seconds"]) <= GAP_SECONDS
                  for a, b in pairwise(ordered))
    end = ordered[-1]["started"] + ordered[-1]["seconds"]
    return {"complete": True, "one_run": one_run, "clean": ordered[0]["cached_entries_before"] == 0,
            "minutes": (end - ordered[0]["started"]) / 60,
            "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime(ordered[0]["started"]))}


def noop_make(repo, profile: str = "default") -> dict | None:
    """Seconds of `make figures` when everything is up to date; not run (it would rebuild) otherwise."""
    # A clean environment: inherited MAKEFLAGS would pass our caller's variables (BUILD, FIGDIR...) along.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    cmd = ["make", "--no-print-directory", "-C", str(repo), "figures", f"PROFILE={profile}"]
    try:
        start = time.perf_counter()
        query = subprocess.run([*cmd, "-q"], env=env, capture_output=True)
        query_seconds = time.perf_counter() - start
        if query.returncode != 0:
            return {"up_to_date": False, "query_seconds": query_seconds, "seconds": None}
        start = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=True)
    except (FileNotFoundError, subprocess.CalledProcessError):
        return None
    return {"up_to_date": True, "query_seconds": query_seconds, "seconds": time.perf_counter() - start}


def render(runs: dict[str, dict], stems: list[str], others: dict[str, str], build_dir: str,
           make: dict | None) -> list[str]:
    """The section on `make figures` (notebooks `stems`) and on the other targets (`others`: stem → target)."""
    lines = ["## `make figures`", ""]
    run = figures_run(runs, stems)
    if not run["complete"]:
        lines += [f"No complete timed run in `{build_dir}` (not executed or without a record: {run['missing']}); "
                  "run `make clean && make figures`.", "", "make_figures_minutes = n/a", ""]
    else:
        state = ("from a clean state (`make clean`: no cached corpus, victim or mask)" if run["clean"] else
                 "with some artifacts already cached, so it understates a run from a clean state")
        if not run["one_run"]:
            state = "not as one run (some notebooks were re-executed later), so no total is given"
        lines += [f"The run of {run['date']} UTC in `{build_dir}`, {state}. Wall time of each notebook "
                  "(papermill, its kernel and the workers it starts) and the peak resident memory of its "
                  "process tree (shared library pages counted once).", ""]
        lines += table(["notebook", "minutes", "peak MiB"],
                       [[s, f"{runs[s]['seconds'] / 60:.1f}", f"{runs[s]['peak_mib']:.0f}"] for s in stems])
        minutes = f"{run['minutes']:.1f}" if run["one_run"] else "n/a"
        lines += ["", f"make_figures_minutes = {minutes}"
                  + ("" if run["clean"] or not run["one_run"] else " (not from a clean state)"), ""]
    if make is None:
        lines += ["The no-op rerun of `make figures` was not measured.", ""]
    elif not make["up_to_date"]:
        lines += [f"`make figures` is not up to date, so its no-op rerun was not timed "
                  f"(`make -q figures` took {make['query_seconds']:.2f} s).", ""]
    else:
        lines += [f"A second `make figures` with everything up to date takes {make['seconds']:.2f} s.", ""]
    lines += ["## The other targets", "",
              "Each reuses the corpora and victims `make figures` cached (and builds them when they are not).", ""]
    rows = [[f"`make {target}`", stem,
             f"{runs[stem]['seconds'] / 60:.1f}" if stem in runs and "seconds" in runs[stem] else "not run",
             f"{runs[stem]['peak_mib']:.0f}" if stem in runs else ""] for stem, target in others.items()]
    return lines + table(["target", "notebook", "minutes", "peak MiB"], rows) + [""]
