"""Compare two finished studies method by method, paired over their common (seed, evaluation case) pairs.

Why: a study's own table tests its variations against each other, but a change upstream of every method (here the
translator's crop) is easiest to run as two studies side by side, one CPU thread each. This reads both studies'
``study/rows.json`` and, for every method the two share, prints per-seed mean Dice, the mean, the median of the
per-seed ratios to each study's own oracle, and the Wilcoxon signed-rank test (``da_seg.stats.wilcoxon_paired``) of
B against A over the pairs; then each study's SynCT MAE per translator and seed (``study/fidelity.json``).

``--pair A_METHOD:B_METHOD`` (repeatable) compares a method of A with a differently named one of B instead, e.g. the
paper's SynCT segmenter with a study's best method.

Usage:
    python benchmarks/paired_studies.py runs/prostate_3seeds_best_crop05 runs/prostate_3seeds_best_crop08 [--test CT]
    python benchmarks/paired_studies.py runs/prostate_3seeds_reference runs/prostate_3seeds_best_crop05 \
        --pair translator=cyclegan:self_training
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from da_seg.stats import wilcoxon_paired
from da_seg.study import per_run_means


def _by_case(rows: list[dict], method: str, test: str) -> dict[tuple[int, str], float]:
    return {(r["seed"], r["case"]): r["dice"] for r in rows if r["method"] == method and r["test"] == test}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="the first study's run folder")
    parser.add_argument("b", type=Path, help="the second study's run folder")
    parser.add_argument("--test", default="CT", help="the evaluation test set's name in the rows (default CT)")
    parser.add_argument(
        "--pair", action="append", default=[], metavar="A_METHOD:B_METHOD", help="compare differently named methods"
    )
    args = parser.parse_args()
    rows = {name: json.loads((name / "study" / "rows.json").read_text()) for name in (args.a, args.b)}
    oracle = {name: per_run_means(r, "oracle", args.test) for name, r in rows.items()}
    methods = [m for m in dict.fromkeys(r["method"] for r in rows[args.a]) if m in {r["method"] for r in rows[args.b]}]
    pairs = [tuple(p.split(":", 1)) for p in args.pair] or [(m, m) for m in methods]
    for pair in pairs:
        a, b = (_by_case(rows[name], method, args.test) for name, method in zip((args.a, args.b), pair, strict=True))
        shared = set(a) & set(b)
        common = sorted(shared)
        if not common:
            continue
        print(f"## {' vs '.join(dict.fromkeys(pair))} ({len(common)} pairs)")
        for name, method in zip((args.a, args.b), pair, strict=True):
            means = per_run_means([r for r in rows[name] if (r["seed"], r["case"]) in shared], method, args.test)
            ratios = [v / oracle[name][s] for s, v in means.items() if oracle[name].get(s)]
            ratio = f"{np.median(ratios):.3f}" if ratios else "-"
            per_seed = ", ".join(f"{v:.3f}" for v in means.values())
            print(f"{name.name}: per seed {per_seed}; mean {np.mean(list(means.values())):.3f}; / oracle {ratio}")
        result = wilcoxon_paired([b[k] for k in common], [a[k] for k in common])
        higher = sum(b[k] > a[k] for k in common)
        print(f"B vs A: higher in {higher}/{len(common)}, p = {result.p_value:.2g}, effect {result.effect_size:+.2f}")
    for name in (args.a, args.b):
        per_seed = name / "study" / "fidelity.json"  # written by `daseg study`; `--resume` adds it to older studies
        if not per_seed.exists():
            raise SystemExit(f"{per_seed} is missing: run `daseg study STUDY.toml --resume` once (nothing retrains)")
        maes = ", ".join(
            f"{r['variation']} seed {r['seed']}: {r['synct_mae_hu']:.1f}" for r in json.loads(per_seed.read_text())
        )
        print(f"{name.name}: SynCT MAE (HU) {maes}")


if __name__ == "__main__":
    main()
