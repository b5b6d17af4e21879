"""Run a command and record its peak memory: `python -m privloc.peak OUT.json -- COMMAND ...`.

The Makefile wraps each papermill call with it, so that `make bench` can report the peak resident memory
of every notebook's kernel (a child of papermill) without touching the notebooks.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from .artifacts import atomic_write_text


def children_peak_mib() -> float:
    """Largest resident set size among the waited-for children and their descendants, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m privloc.peak OUT.json -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    out, command = Path(argv[0]), argv[2:]
    code = subprocess.call(command)
    if code == 0:  # a failed run leaves no record, so a stale number is never mistaken for a new one
        atomic_write_text(out, json.dumps({"peak_mib": round(children_peak_mib(), 1), "command": command}))
    return code


if __name__ == "__main__":
    sys.exit(main())
