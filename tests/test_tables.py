"""The one table writer and number formatter (markdown, HTML, CSV, mean ± sd)."""

from __future__ import annotations

import math

import pytest

from da_seg.tables import fmt, mean_sd, rows_from, to_html, to_markdown


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], "—"), ([0.5], "0.500 ± 0.000"), ([0.5, 0.7], "0.600 ± 0.141"), ([1, 2, 3], "2.000 ± 1.000")],
)
def test_mean_sd(values, expected) -> None:
    assert mean_sd(values) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.12345, "0.123"), (2e-5, "2.0e-05"), (0.0, "0.000"), (math.nan, "—"), (None, ""), (3, "3")],
)
def test_cells(value, expected) -> None:
    assert fmt(value) == expected


def test_list_rows_under_a_header_render_like_plain_rows() -> None:
    rows = rows_from(["method", "Dice"], [["synct", "0.7 ± 0.1"], ["oracle", 0.9]])
    assert to_markdown(rows).splitlines() == [
        "| method | Dice |",
        "|---|---|",
        "| synct | 0.7 ± 0.1 |",
        "| oracle | 0.900 |",
    ]
    assert "<td>0.7 ± 0.1</td>" in to_html(rows) and to_html([{"a": "<b>"}]).count("&lt;b&gt;") == 1
