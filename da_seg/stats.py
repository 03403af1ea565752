"""Statistics for comparing methods on per-case metrics: confidence intervals, tests, corrections, effect sizes.

A study compares few methods on few cases (often 5-30 CT volumes), so everything here is non-parametric:

- `bootstrap_ci`: percentile bootstrap of the mean (seeded: the same inputs give the same interval);
- `wilcoxon_paired` (two methods, the same cases) with the matched-pairs rank-biserial correlation;
- `mann_whitney` (two methods, different cases) with the rank-biserial correlation;
- `friedman` (three or more methods, the same cases) with Kendall's W, followed (in `compare_methods`) by pairwise
  Wilcoxon tests, Holm-adjusted. We chose that over Nemenyi because it needs no table of studentized-range
  quantiles, keeps working with two cases per method, and its per-pair effect sizes read like the two-method case;
- `holm`: Holm's step-down adjustment (Holm 1979), as ``statsmodels.stats.multitest.multipletests(method="holm")``;
- `compare_methods`: all of the above for pipeline metric rows, as plain rows for the report and CSV.

p-values are two-sided. Effect sizes lie in [-1, 1]; positive means the first argument tends to be larger.
"""

from __future__ import annotations

import html
import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from da_seg.tables import fmt, to_html, to_markdown

# scipy.stats is imported inside each function that uses it: it takes seconds to import, and most commands
# (`daseg --help`, `plugins`, `validate`, `predict`) never test anything.


@dataclass(frozen=True)
class TestResult:
    """A test's statistic, two-sided p-value and effect size (see each test for which statistic and effect)."""

    __test__ = False  # not a pytest test class

    statistic: float
    p_value: float
    effect_size: float
    n: int = 0


def _values(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    if array.ndim != 1:
        raise ValueError(f"expected a flat sequence of numbers, got shape {array.shape}")
    return array


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """The mean and its percentile-bootstrap confidence interval ``(mean, low, high)``, by
    ``scipy.stats.bootstrap(method="percentile")`` seeded with ``seed`` (the same inputs give the same interval).
    One value gives a zero-width interval; no values give NaNs.
    """
    from scipy import stats

    array = _values(values)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if array.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(array.mean())
    if array.size == 1:
        return (mean, mean, mean)
    result = stats.bootstrap(
        (array,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return (mean, float(result.confidence_interval.low), float(result.confidence_interval.high))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    Sorted ascending, the i-th smallest (1-based) becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``: the family-wise
    error rate is controlled for any dependence between the tests. NaNs stay NaN and do not count in ``m``.
    """
    p = _values(p_values)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out.tolist()
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out.tolist()


def rank_biserial_paired(a: Sequence[float], b: Sequence[float]) -> float:
    """Matched-pairs rank-biserial correlation ``(R+ - R-) / (R+ + R-)`` of the differences ``a - b``.

    ``R+`` and ``R-`` are the sums of the ranks of ``|a - b|`` (zero differences dropped, ties averaged) over the
    positive and negative differences (Kerby 2014). +1: ``a`` larger in every pair; 0 when all differences are zero.
    """
    from scipy import stats

    d = _values(a) - _values(b)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(d))
    plus, minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((plus - minus) / (plus + minus))


def wilcoxon_paired(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Wilcoxon signed-rank test of paired values (two methods on the same cases, in the same order).

    ``statistic`` and ``p_value`` are those of ``scipy.stats.wilcoxon(a, b)`` (zero differences dropped, exact
    distribution for small samples without ties); ``effect_size`` is `rank_biserial_paired`. When every difference
    is zero there is nothing to test: statistic 0, p = 1.0, effect 0.
    """
    from scipy import stats

    x, y = _values(a), _values(b)
    if x.shape != y.shape:
        raise ValueError(f"paired samples need equal lengths, got {x.size} and {y.size}")
    effect = rank_biserial_paired(x, y)
    if not np.any(x - y):
        return TestResult(0.0, 1.0, 0.0, int(x.size))
    result = stats.wilcoxon(x, y)
    return TestResult(float(result.statistic), float(result.pvalue), effect, int(x.size))


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Mann-Whitney U test of two independent samples (methods evaluated on different cases).

    ``statistic`` is ``U`` of ``a`` from ``scipy.stats.mannwhitneyu(a, b, alternative="two-sided")``;
    ``effect_size`` is the rank-biserial correlation ``2 U / (n_a n_b) - 1`` (+1: every ``a`` exceeds every ``b``).
    An empty sample gives p = NaN.
    """
    from scipy import stats

    x, y = _values(a), _values(b)
    if x.size == 0 or y.size == 0:
        return TestResult(math.nan, math.nan, math.nan, int(x.size + y.size))
    result = stats.mannwhitneyu(x, y, alternative="two-sided")
    u = float(result.statistic)
    return TestResult(u, float(result.pvalue), 2 * u / (x.size * y.size) - 1, int(x.size + y.size))


def _table(table: Mapping[str, Sequence[float]]) -> tuple[list[str], np.ndarray]:
    names = list(table)
    columns = [_values(table[name]) for name in names]
    if len({c.size for c in columns}) > 1:
        raise ValueError(f"every method needs one value per case, got {[c.size for c in columns]}")
    return names, np.stack(columns, axis=1) if columns else np.empty((0, 0))


def friedman(table: Mapping[str, Sequence[float]]) -> TestResult:
    """Friedman test of three or more methods on the same cases (``table``: method -> one value per case).

    ``statistic`` and ``p_value`` are those of ``scipy.stats.friedmanchisquare`` (chi-square with tie correction);
    ``effect_size`` is Kendall's W ``= chi2 / (n (k - 1))`` in [0, 1] (n cases, k methods). When every case ties
    all methods, statistic 0, p = 1.0, W = 0.
    """
    from scipy import stats

    _, values = _table(table)
    n, k = values.shape
    if k < 3:
        raise ValueError(f"the Friedman test needs at least 3 methods, got {k}; use wilcoxon_paired for two")
    if n < 2:
        raise ValueError(f"the Friedman test needs at least 2 cases, got {n}")
    if np.all(values == values[:, :1]):
        return TestResult(0.0, 1.0, 0.0, n)
    result = stats.friedmanchisquare(*values.T)
    chi2 = float(result.statistic)
    return TestResult(chi2, float(result.pvalue), chi2 / (n * (k - 1)), n)


# -- pipeline metric rows ---------------------------------------------------------------------------------------
def _per_method(
    rows: Iterable[Mapping[str, Any]], metric: str, test: str | None, method_key: str, case_key: str
) -> dict[str, dict[Any, float]]:
    grouped: dict[str, dict[Any, float]] = {}
    for row in rows:
        if test is not None and row.get("test") != test:
            continue
        if metric not in row or row[metric] is None:
            continue
        value = float(row[metric])
        if not math.isfinite(value):
            continue
        cases = grouped.setdefault(str(row[method_key]), {})
        case = row.get(case_key, len(cases))
        if case in cases:
            raise ValueError(
                f"method '{row[method_key]}' has two '{metric}' values for case '{case}'; "
                "pass test= to compare one test set at a time"
            )
        cases[case] = value
    return grouped


def compare_methods(
    rows: Iterable[Mapping[str, Any]],
    metric: str = "dice",
    test: str | None = None,
    *,
    method_key: str = "method",
    case_key: str = "case",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Summary, pairwise tests and (for >= 3 methods on the same cases) a Friedman test of per-case metric rows.

    Args:
        rows: per-case rows such as the pipeline's ``metrics.json``: ``{"method", "test", "case", "dice", ...}``.
        metric: the column compared. Non-finite values (an infinite HD95 of an empty prediction) are left out and
            the summary's ``n`` says how many cases remained.
        test: keep only rows whose ``"test"`` equals this (e.g. ``"CT"``); None keeps all rows.
        method_key, case_key: the columns naming the method and the case.
        confidence, n_resamples, seed: of `bootstrap_ci`.

    Returns:
        ``{"metric", "test", "confidence", "n_resamples", "summary", "pairwise", "friedman"}``:

        - ``summary``: one row per method, ``method, n, mean, sd, ci_low, ci_high``;
        - ``pairwise``: one row per pair, ``a, b, test, n_a, n_b, statistic, p_raw, p_holm, effect``; Wilcoxon
          signed-rank when both methods have exactly the same cases, Mann-Whitney otherwise; Holm over all pairs;
        - ``friedman``: None, or ``{"methods", "n", "statistic", "p_value", "kendall_w"}`` over the largest group of
          >= 3 methods sharing the same >= 2 cases.
    """
    grouped = _per_method(rows, metric, test, method_key, case_key)
    summary = []
    for name, cases in grouped.items():
        values = list(cases.values())
        mean, low, high = bootstrap_ci(values, confidence=confidence, n_resamples=n_resamples, seed=seed)
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        summary.append({"method": name, "n": len(values), "mean": mean, "sd": sd, "ci_low": low, "ci_high": high})

    pairwise = []
    for a, b in itertools.combinations(grouped, 2):
        ca, cb = grouped[a], grouped[b]
        if set(ca) == set(cb):
            keys = sorted(ca, key=str)
            result, kind = wilcoxon_paired([ca[k] for k in keys], [cb[k] for k in keys]), "wilcoxon"
        else:
            result, kind = mann_whitney(list(ca.values()), list(cb.values())), "mann-whitney"
        pairwise.append(
            {
                "a": a,
                "b": b,
                "test": kind,
                "n_a": len(ca),
                "n_b": len(cb),
                "statistic": result.statistic,
                "p_raw": result.p_value,
                "effect": result.effect_size,
            }
        )
    for row, adjusted in zip(pairwise, holm([r["p_raw"] for r in pairwise]), strict=True):
        row["p_holm"] = adjusted

    by_cases: dict[frozenset, list[str]] = {}
    for name, cases in grouped.items():
        by_cases.setdefault(frozenset(cases), []).append(name)
    shared = max(by_cases.items(), key=lambda kv: (len(kv[1]), len(kv[0])), default=(frozenset(), []))
    fried = None
    if len(shared[1]) >= 3 and len(shared[0]) >= 2:
        keys = sorted(shared[0], key=str)
        result = friedman({m: [grouped[m][k] for k in keys] for m in shared[1]})
        fried = {
            "methods": list(shared[1]),
            "n": result.n,
            "statistic": result.statistic,
            "p_value": result.p_value,
            "kendall_w": result.effect_size,
        }
    return {
        "metric": metric,
        "test": test,
        "confidence": confidence,
        "n_resamples": n_resamples,
        "summary": summary,
        "pairwise": pairwise,
        "friedman": fried,
    }


def comparison_section(comparison: Mapping[str, Any], title: str | None = None) -> tuple[str, str, str]:
    """A report section ``(title, markdown, html)`` for a `compare_methods` result (``write_report``'s
    ``extra_sections`` takes these)."""
    metric, test = comparison["metric"], comparison["test"]
    title = title or f"Statistics: {metric}" + (f" on {test}" if test else "")
    summary_cols = ["method", "n", "mean", "ci_low", "ci_high"]
    pair_cols = ["a", "b", "test", "n_a", "n_b", "p_raw", "p_holm", "effect"]
    level = round(100 * comparison.get("confidence", 0.95))
    note = (
        f"Mean with its {level}% percentile-bootstrap interval ({comparison.get('n_resamples', 2000)} seeded "
        "resamples). Pairs: Wilcoxon signed-rank on "
        "identical cases, Mann-Whitney otherwise; p-values Holm-adjusted over all pairs; effect: rank-biserial "
        "correlation (positive: a larger)."
    )
    md = [note, "", to_markdown(comparison["summary"], summary_cols)]
    hp = [f"<p>{html.escape(note)}</p>", to_html(comparison["summary"], summary_cols)]
    if comparison["pairwise"]:
        md += ["", to_markdown(comparison["pairwise"], pair_cols)]
        hp.append(to_html(comparison["pairwise"], pair_cols))
    fried = comparison.get("friedman")
    if fried:
        line = (
            f"Friedman over {', '.join(fried['methods'])} on {fried['n']} shared cases: chi2 = "
            f"{fried['statistic']:.3f}, p = {fmt(fried['p_value'], 4)}, Kendall's W = {fried['kendall_w']:.3f}."
        )
        md += ["", line]
        hp.append(f"<p>{html.escape(line)}</p>")
    return title, "\n".join(md), "".join(hp)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation ``scipy.stats.spearmanr(x, y)``; NaN (without scipy's warning) for fewer than
    two points or a constant input, where no ranking exists."""
    from scipy import stats

    a, b = _values(x), _values(y)
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(a, b).statistic)


__all__ = [
    "TestResult",
    "bootstrap_ci",
    "compare_methods",
    "comparison_section",
    "friedman",
    "holm",
    "mann_whitney",
    "rank_biserial_paired",
    "spearman",
    "wilcoxon_paired",
]
