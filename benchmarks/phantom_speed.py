"""Benchmark: time to write the pelvic phantom (issue 3 acceptance: 24 MR + 24 CT subjects under 1 minute, 2 cores).

Also reports, per CT subject, the prostate vs adjacent-muscle contrast the phantom is meant to keep small.

Usage:
    python benchmarks/phantom_speed.py [--n 24] [--out /tmp/phantom_bench]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from prostate_mr2ct.phantom import ADJACENT_MUSCLES, PROSTATE_TISSUES, phantom_subject, write_phantom
from scipy import ndimage


def contrast(seed: int) -> tuple[float, float]:
    """CT |mean prostate - mean adjacent muscle| (HU) and MR separation (|mean diff| / pooled sd), eroded regions."""
    out = []
    for modality in ("CT", "MR"):
        rendered = phantom_subject(seed, modality)
        tissues = rendered.tissues.array
        prostate = np.isin(tissues, PROSTATE_TISSUES)
        distance = ndimage.distance_transform_edt(~prostate, sampling=rendered.tissues.spacing_zyx)
        muscle = ndimage.binary_erosion(np.isin(tissues, ADJACENT_MUSCLES)) & (distance < 20)
        image = rendered.image.array.astype(float)
        a, b = image[ndimage.binary_erosion(prostate)], image[muscle]
        diff = abs(a.mean() - b.mean())
        out.append(diff if modality == "CT" else diff / np.sqrt((a.var() + b.var()) / 2))
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="MR subjects and CT subjects (each)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="phantom_bench_"))
    start = time.perf_counter()
    write_phantom(out, n_source=args.n, n_target=args.n, n_evaluation=0, n_target_labelled=0, paired=False, seed=0)
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    print(f"{args.n} MR + {args.n} CT subjects written in {seconds:.1f} s ({size:.0f} MiB NIfTI) to {out}")
    values = np.array([contrast(seed) for seed in range(8)])
    ct = values[:, 0]
    print(f"CT |prostate - adjacent muscle| HU over 8 subjects: mean {ct.mean():.1f}, max {ct.max():.1f}")
    print(f"MR separation (|mean diff| / pooled sd): min {values[:, 1].min():.2f}, mean {values[:, 1].mean():.2f}")
    if args.out is None:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
