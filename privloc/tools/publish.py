"""Copy an executed notebook where a reader finds it: `python -m privloc.tools.publish EXECUTED.ipynb DEST_DIR`.

`make figures` (and each other notebook target) runs the committed sources, which hold no outputs, with
papermill; the default profile's executed copies are published to docs/notebooks/ so that the results and
"What we found" can be read without running anything. The copy keeps every output a reader wants (tables,
figures, text) and leaves out what only the machine that ran it needs: progress bars and warnings (stderr
streams) and papermill's record of local paths and timing per cell.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from privloc.artifacts import atomic_write_text


def readable_copy(notebook: dict) -> dict:
    """`notebook` (nbformat JSON) without stderr streams and without papermill's per-cell metadata."""
    out = dict(notebook)
    cells = []
    for cell in notebook["cells"]:
        cell = dict(cell)
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", [])
                               if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
        meta = {k: v for k, v in cell.get("metadata", {}).items() if k not in ("papermill", "execution")}
        cell["metadata"] = meta
        cells.append(cell)
    out["cells"] = cells
    meta = dict(notebook.get("metadata", {}))
    papermill = meta.pop("papermill", {})
    # The run's parameters stay (they say what was run); its paths and environment do not.
    meta["privloc"] = {"duration_seconds": papermill.get("duration"),
                       "parameters": {k: v for k, v in papermill.get("parameters", {}).items()
                                      if not k.endswith("_dir")}}
    out["metadata"] = meta
    return out


def publish(executed: str | Path, dest: str | Path) -> Path:
    executed = Path(executed)
    target = Path(dest) / executed.name
    notebook = json.loads(executed.read_text())
    atomic_write_text(target, json.dumps(readable_copy(notebook), indent=1, ensure_ascii=False) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m privloc.tools.publish EXECUTED.ipynb DEST_DIR", file=sys.stderr)
        return 2
    print(f"published {publish(*args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
