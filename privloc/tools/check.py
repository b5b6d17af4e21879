"""Compare regenerated tables with the committed ones: `python -m privloc.tools.check EXPECTED_DIR ACTUAL_DIR`.

Counts must match exactly, metrics within a tolerance (runs are deterministic on one machine, but BLAS
summation order may differ elsewhere), text exactly. Wall-clock columns are skipped by default: they
never reproduce.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

import numpy as np
import pandas as pd

IGNORE_DEFAULT = ("*seconds",)


def _row_label(df: pd.DataFrame, row: int) -> str:
    # The leading text columns (dataset, method, ...) say which row it is better than an index does.
    keys = []
    for column in df.columns:
        if not pd.api.types.is_string_dtype(df[column]):
            break
        keys.append(str(df[column].iloc[row]))
    return f"row {row}" + (f" ({', '.join(keys)})" if keys else "")


def _same(expected, actual, kind: str, rtol: float, atol: float) -> bool:
    if pd.isna(expected) or pd.isna(actual):
        return bool(pd.isna(expected) and pd.isna(actual))
    if kind == "float":
        return bool(np.isclose(float(actual), float(expected), rtol=rtol, atol=atol))
    if kind == "int":
        return int(expected) == int(actual) and float(actual) == int(actual)
    return str(expected) == str(actual)


def _kind(expected: pd.Series, actual: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(expected) or pd.api.types.is_bool_dtype(actual):
        return "text"
    if pd.api.types.is_integer_dtype(expected) and pd.api.types.is_numeric_dtype(actual):
        return "int"
    if pd.api.types.is_numeric_dtype(expected) and pd.api.types.is_numeric_dtype(actual):
        return "float"
    return "text"


def compare_table(name: str, expected: pd.DataFrame, actual: pd.DataFrame, rtol: float = 1e-6,
                  atol: float = 1e-9, ignore: tuple[str, ...] = IGNORE_DEFAULT) -> list[str]:
    """Difference lines between two tables, one per differing cell (or one for a shape mismatch)."""
    missing = [c for c in expected.columns if c not in actual.columns]
    extra = [c for c in actual.columns if c not in expected.columns]
    if missing or extra:
        return [f"{name}: columns differ: missing {missing}, unexpected {extra}"]
    if len(expected) != len(actual):
        return [f"{name}: {len(expected)} rows expected, {len(actual)} found"]
    lines = []
    for column in expected.columns:
        if any(fnmatch.fnmatch(column, pattern) for pattern in ignore):
            continue
        kind = _kind(expected[column], actual[column])
        for row, (want, got) in enumerate(zip(expected[column], actual[column], strict=True)):
            if not _same(want, got, kind, rtol, atol):
                lines.append(f"{name} {_row_label(expected, row)} column {column}: expected {want!r}, actual {got!r}")
    return lines


def compare_tables(expected_dir, actual_dir, rtol: float = 1e-6, atol: float = 1e-9,
                   ignore: tuple[str, ...] = IGNORE_DEFAULT) -> list[str]:
    """Difference lines for every `*.csv` of `expected_dir` against the same file in `actual_dir`."""
    expected_dir, actual_dir = Path(expected_dir), Path(actual_dir)
    paths = sorted(expected_dir.glob("*.csv"))
    if not paths:
        # An empty reference would otherwise make every run "match".
        return [f"{expected_dir}: no *.csv tables to compare against"]
    lines = []
    for path in paths:
        other = actual_dir / path.name
        if not other.is_file():
            lines.append(f"{path.name}: missing from {actual_dir}")
            continue
        lines += compare_table(path.name, pd.read_csv(path), pd.read_csv(other), rtol, atol, ignore)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m privloc.tools.check", description=__doc__.splitlines()[0])
    parser.add_argument("expected_dir")
    parser.add_argument("actual_dir")
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-9)
    parser.add_argument("--ignore", nargs="*", default=list(IGNORE_DEFAULT), metavar="PATTERN",
                        help="column-name patterns to skip (default: %(default)s); pass none to compare all")
    args = parser.parse_args(argv)
    lines = compare_tables(args.expected_dir, args.actual_dir, args.rtol, args.atol, tuple(args.ignore))
    for line in lines:
        print(line)
    if lines:
        print(f"{len(lines)} difference(s)", file=sys.stderr)
        return 1
    n = len(list(Path(args.expected_dir).glob("*.csv")))
    print(f"all {n} tables match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
