"""Run a command and record its peak memory: `python -m privloc.tools.peak OUT.json -- COMMAND ...`.

The Makefile wraps each papermill call with it, so that `make bench` can report the peak resident memory
of every notebook's kernel (a child of papermill) without touching the notebooks. A notebook may run
processes side by side (notebook 02 trains victims in parallel workers), so the peak is the larger of the
largest single process (exact, from the kernel) and the largest sum over the whole process tree (sampled
every 50 ms while the command runs; shared library pages counted once).

The record also keeps when the run started, its wall seconds and how many cached artifacts existed before it, so
that `make bench` can tell a `make figures` from a clean state (`make clean`) from one that found work done.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from privloc.artifacts import atomic_write_text, cache_root


def children_peak_mib() -> float:
    """Largest resident set size among the waited-for children and their descendants, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux


def _tree_resident_mib(process: psutil.Process) -> float:
    """Resident memory of a process tree, counting the pages of shared libraries once.

    Processes side by side map the same libraries (torch alone is hundreds of MiB), and summing resident
    sizes would count those pages once per process. So: each process's private part (resident minus
    file-backed shared pages) plus the largest shared part. Proportional set sizes would be exact, but
    reading them walks every page table of the target under its memory lock: sampled this often, it made
    notebooks 06 and 07 a quarter and a half slower.
    """
    private, shared = 0, 0
    for p in [process, *process.children(recursive=True)]:
        try:
            info = p.memory_info()
        except psutil.Error:  # exited between the listing and the reading
            continue
        own_shared = getattr(info, "shared", 0)
        private += info.rss - own_shared
        shared = max(shared, own_shared)
    return (private + shared) / 2**20


def cached_entries(root: Path | None = None) -> int:
    """How many cache folders (artifacts/<kind>/<name>) exist: 0 in a clean state."""
    root = cache_root() if root is None else root
    return sum(1 for _ in root.glob("*/*")) if root.is_dir() else 0


def run_sampling(command: list[str], interval: float = 0.05) -> tuple[int, float]:
    """Run `command`; return its exit code and the largest total resident memory of its process tree (MiB)."""
    child = subprocess.Popen(command)
    peak, done = 0.0, threading.Event()

    def sample() -> None:
        nonlocal peak
        process = psutil.Process(child.pid)
        while not done.wait(interval):
            try:
                peak = max(peak, _tree_resident_mib(process))
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = child.wait()
    done.set()
    sampler.join()
    return code, peak


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m privloc.tools.peak OUT.json -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    out, command = Path(argv[0]), argv[2:]
    before, started = cached_entries(), time.time()
    code, tree_peak = run_sampling(command)
    if code == 0:  # a failed run leaves no record, so a stale number is never mistaken for a new one
        single = children_peak_mib()
        atomic_write_text(out, json.dumps({"peak_mib": round(max(single, tree_peak), 1),
                                           "single_process_peak_mib": round(single, 1), "command": command,
                                           "started": round(started, 1), "seconds": round(time.time() - started, 1),
                                           "cached_entries_before": before}))
    return code


if __name__ == "__main__":
    sys.exit(main())
