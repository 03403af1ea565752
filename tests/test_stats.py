"""Statistics layer: against scipy.stats on known inputs, hand-computed effects and Holm, seeded bootstrap."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy import stats

from da_seg.stats import (
    bootstrap_ci,
    compare_methods,
    comparison_section,
    friedman,
    holm,
    mann_whitney,
    spearman,
    wilcoxon_paired,
)

VALUES = [0.71, 0.80, 0.65, 0.90, 0.77, 0.84, 0.69, 0.73]


def test_bootstrap_matches_scipy_percentile_bootstrap_and_is_seeded() -> None:
    mean, low, high = bootstrap_ci(VALUES, confidence=0.95, n_resamples=2000, seed=7)
    ref = stats.bootstrap(
        (np.array(VALUES),), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(7)
    )
    assert mean == pytest.approx(np.mean(VALUES))
    assert (low, high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=1e-12)
    assert bootstrap_ci(VALUES, seed=7) == bootstrap_ci(VALUES, seed=7)
    assert bootstrap_ci(VALUES, seed=7) != bootstrap_ci(VALUES, seed=8)
    assert low < mean < high


def test_bootstrap_degenerate_inputs() -> None:
    assert bootstrap_ci([0.5]) == (0.5, 0.5, 0.5)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(VALUES, confidence=95)


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, 1*0.04 = .02 .03 .06 .04 -> running max
        ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
        ([0.5, 0.6], [1.0, 1.0]),  # 2*0.5 = 1.0 caps, 0.6 is raised to the running max
        ([0.02, math.nan, 0.01], [0.02, math.nan, 0.02]),  # NaN kept, m = 2
        ([], []),
    ],
)
def test_holm_hand_computed(p: list[float], expected: list[float]) -> None:
    assert holm(p) == pytest.approx(expected, nan_ok=True)


def test_wilcoxon_matches_scipy_with_rank_biserial_effect() -> None:
    a = [5.0, 3.0, 9.0, 10.0, 7.0]
    b = [4.0, 5.0, 6.0, 6.0, 7.0]  # differences 1, -2, 3, 4, 0
    result = wilcoxon_paired(a, b)
    ref = stats.wilcoxon(a, b)
    assert (result.statistic, result.p_value) == pytest.approx((ref.statistic, ref.pvalue))
    assert result.statistic == 2.0  # R- = rank of |-2| among 1, 2, 3, 4
    assert result.effect_size == pytest.approx((8 - 2) / 10)  # (R+ - R-) / (R+ + R-)
    assert wilcoxon_paired(b, a).effect_size == pytest.approx(-0.6)


def test_wilcoxon_all_differences_zero_is_p_one() -> None:
    result = wilcoxon_paired([0.8, 0.7, 0.9], [0.8, 0.7, 0.9])
    assert (result.statistic, result.p_value, result.effect_size) == (0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="equal lengths"):
        wilcoxon_paired([1.0, 2.0], [1.0])


def test_mann_whitney_matches_scipy_with_rank_biserial_effect() -> None:
    a, b = [3.0, 5.0, 7.0], [1.0, 2.0, 4.0, 6.0]
    result = mann_whitney(a, b)
    ref = stats.mannwhitneyu(a, b, alternative="two-sided")
    assert (result.statistic, result.p_value) == pytest.approx((ref.statistic, ref.pvalue))
    assert result.statistic == 9.0  # pairs with a > b: 2 + 3 + 4
    assert result.effect_size == pytest.approx(2 * 9 / 12 - 1)
    assert mann_whitney([1.0, 2.0], [3.0, 4.0]).effect_size == -1.0


def test_friedman_matches_scipy_and_kendalls_w() -> None:
    table = {"x": [0.7, 0.6, 0.8, 0.75], "y": [0.72, 0.65, 0.79, 0.8], "z": [0.9, 0.7, 0.85, 0.9]}
    result = friedman(table)
    ref = stats.friedmanchisquare(*table.values())
    assert (result.statistic, result.p_value) == pytest.approx((ref.statistic, ref.pvalue))
    # Identical ranking in every case: chi2 = n (k - 1) = 8, Kendall's W = 1.
    perfect = friedman({"a": [1, 2, 3, 4], "b": [2, 3, 4, 5], "c": [3, 4, 5, 6]})
    assert (perfect.statistic, perfect.effect_size) == pytest.approx((8.0, 1.0))
    assert friedman({"a": [1, 2], "b": [1, 2], "c": [1, 2]}).p_value == 1.0
    with pytest.raises(ValueError, match="at least 3 methods"):
        friedman({"a": [1, 2], "b": [2, 3]})


def _rows() -> list[dict]:
    rng = np.random.default_rng(1)
    rows = []
    for method, shift in (("synct", 0.1), ("no_adaptation", -0.3), ("histogram", 0.0)):
        for i in range(8):
            rows.append({"method": method, "test": "CT", "case": f"ct{i}", "dice": 0.6 + shift + rng.normal(0, 0.03)})
    for i in range(5):  # other cases: compared unpaired
        rows.append({"method": "oracle", "test": "CT", "case": f"other{i}", "dice": 0.85 + rng.normal(0, 0.02)})
    rows.append({"method": "synct", "test": "SynCT", "case": "mr0", "dice": 0.9})  # another test set
    rows.append({"method": "synct", "test": "CT", "case": "ct9", "hd95": 3.0})  # no dice: skipped
    return rows


def test_compare_methods_tables() -> None:
    result = compare_methods(_rows(), "dice", test="CT")
    summary = {r["method"]: r for r in result["summary"]}
    assert set(summary) == {"synct", "no_adaptation", "histogram", "oracle"}
    synct = [r["dice"] for r in _rows() if r["method"] == "synct" and r["test"] == "CT" and "dice" in r]
    assert summary["synct"]["n"] == 8
    assert summary["synct"]["mean"] == pytest.approx(np.mean(synct))
    assert (summary["synct"]["ci_low"], summary["synct"]["ci_high"]) == pytest.approx(bootstrap_ci(synct)[1:])
    kinds = {(r["a"], r["b"]): r["test"] for r in result["pairwise"]}
    assert kinds[("synct", "no_adaptation")] == "wilcoxon"
    assert kinds[("synct", "oracle")] == "mann-whitney"
    assert len(kinds) == 6
    assert [r["p_holm"] for r in result["pairwise"]] == pytest.approx(holm([r["p_raw"] for r in result["pairwise"]]))
    synct_vs_none = next(r for r in result["pairwise"] if r["b"] == "no_adaptation" and r["a"] == "synct")
    assert synct_vs_none["effect"] == 1.0
    fried = result["friedman"]
    assert sorted(fried["methods"]) == ["histogram", "no_adaptation", "synct"]
    assert fried["n"] == 8


def test_compare_methods_refuses_mixed_test_sets() -> None:
    rows = [{"method": "a", "test": t, "case": "c", "dice": 0.5} for t in ("CT", "MR")]
    with pytest.raises(ValueError, match="pass test="):
        compare_methods(rows)


def test_rendering_and_csv(tmp_path) -> None:
    from da_seg.tables import to_html, to_markdown, write_csv

    result = compare_methods(_rows(), "dice", test="CT")
    md = to_markdown(result["summary"], ["method", "n", "mean"])
    assert md.splitlines()[0] == "| method | n | mean |"
    assert f"| synct | 8 | {result['summary'][0]['mean']:.3f} |" in md
    assert to_markdown([{"p": 1e-5, "x": math.nan}]).splitlines()[2] == "| 1.0e-05 | — |"
    assert "<th>method</th>" in to_html(result["summary"]) and "<td>synct</td>" in to_html(result["summary"])
    path = write_csv(tmp_path / "t" / "pairwise.csv", result["pairwise"])
    with path.open() as f:
        read = list(csv.DictReader(f))
    assert len(read) == 6 and float(read[0]["p_holm"]) == result["pairwise"][0]["p_holm"]
    title, md, page = comparison_section(result)
    assert title == "Statistics: dice on CT"
    assert "Friedman over synct, no_adaptation, histogram on 8 shared cases" in md
    assert "95% percentile-bootstrap" in md and "Kendall&#x27;s W" in page


def test_spearman_matches_scipy_and_nan_when_constant() -> None:
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert spearman(x, y) == pytest.approx(1 - 6 * (1 + 1 + 1 + 1) / (5 * 24))
    assert math.isnan(spearman(x, [1.0] * 5))
