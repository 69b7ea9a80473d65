"""A grid's result rows as CSV (written atomically, read back typed), and their mean and range over seeds.

The sweep (prompt length x init x seed) and the comparison (model x method x seed) both append a row per run
and rewrite the table whole, so a stopped grid leaves a table a reader can trust and a rerun can go on from.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from ..prompts.checkpoint import atomic_write

FLOATS = ("accuracy", "f1", "exact_match", "loss", "seconds")  # column name endings


def write_csv(results: Sequence[dict], target: Path, columns: Sequence[str]) -> None:
    """All rows, written atomically (a reader sees the old table or the new one)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    writer.writerows(results)
    atomic_write(target, buffer.getvalue().encode())


def read_csv(source: Path, integers: Sequence[str]) -> list[dict]:
    """The rows, with the `integers` columns as int and the scores and times (see FLOATS) as float."""
    with open(source, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            if key in integers:
                row[key] = int(value)
            elif key.endswith(FLOATS) and value != "":
                row[key] = float(value)
    return rows


def mean_and_range(groups: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[float]]:
    """Per group (one point's seeds): the mean, the lowest and the highest value."""
    return [sum(g) / len(g) for g in groups], [min(g) for g in groups], [max(g) for g in groups]


def format_table(results: Sequence[dict], columns: Sequence[str], markdown: bool = False) -> str:
    """Rows as an aligned text table for people (scores to 3 decimals; a missing cell left blank), or as a
    Markdown table (`markdown`) to paste into a report."""
    cells = [list(columns)] + [[_cell(row.get(column, "")) for column in columns] for row in results]
    if markdown:
        lines = [cells[0], ["---"] * len(columns), *cells[1:]]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells)


def _cell(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
