"""Markdown tables for the maintainer reports (figures/bench.md)."""

from __future__ import annotations


def table(columns: list[str], rows: list[list]) -> list[str]:
    """The lines of a Markdown table; each cell is written as str() gives it."""
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])
