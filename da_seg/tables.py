"""The one place tables and numbers are formatted: markdown, HTML and CSV from plain rows, and ``mean ± sd``.

Rows are dictionaries (one per table row); the columns are their keys in first-seen order unless given. The report,
the statistics layer, studies, benchmarks and the checkpoint audit all write their tables through here.
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """``"0.812 ± 0.041"`` (sample sd; 0 for one value), ``"—"`` for none."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return "—"
    return f"{arr.mean():.{digits}f} ± {arr.std(ddof=1) if arr.size > 1 else 0.0:.{digits}f}"


def rows_from(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """List rows under a header -> plain rows (for tables built column by column)."""
    return [dict(zip(header, row, strict=True)) for row in rows]


# -- plain rows --------------------------------------------------------------------------------------------------
def fmt(value: Any, digits: int = 3) -> str:
    """A cell: floats with ``digits`` decimals (tiny ones in e-notation, NaN as ``—``), None as empty."""
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return "" if value is None else str(value)


def _columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> list[str]:
    return list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))


def to_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """A GitHub markdown table of plain rows (floats with ``digits`` decimals, tiny p-values in e-notation)."""
    keys = _columns(rows, columns)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k), digits) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def to_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """An HTML ``<table>`` of plain rows, escaped, formatted as `to_markdown`."""
    keys = _columns(rows, columns)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(r.get(k), digits))}</td>" for k in keys) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write plain rows as CSV (full precision; the union of keys as header unless ``columns`` is given)."""
    from da_seg.files import atomic_path

    path = Path(path)
    keys = _columns(rows, columns)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()})
    return path


def write_tables(folder: Path, table: list[dict[str, Any]]) -> None:
    """``table.csv`` and ``table.md`` (4 digits) of one table of rows, as `daseg bench` and `daseg study` leave them."""
    write_csv(folder / "table.csv", table)
    (folder / "table.md").write_text(to_markdown(table, digits=4) + "\n")
