"""Soak check: many tiny `daseg run`s one after another in one process must not grow its memory.

A long study or a notebook runs the pipeline again and again in one Python process; a reference kept to a model,
a tensor or an open file per run would make it grow until it dies. This runs ``--runs`` (default 20) complete
tiny pipelines (data -> CycleGAN -> SynCT -> two segmenters -> evaluation -> report) on a small synthetic data set,
records the resident set size (RSS) after each, and checks that after the warm-up runs it grows by no more than
``--max-growth`` (5%). The result is appended to benchmarks/RESULTS.md with the machine and the date.

Run: ``python benchmarks/soak.py`` (about 2-5 minutes on 2 CPU cores); exit code 1 when the memory grew too much.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from da_seg import load_config
from da_seg.pipeline import run_pipeline
from da_seg.volume import Volume, write_volume

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SHAPE = (12, 48, 48)  # (z, y, x)
SPACING = (3.0, 3.0, 4.0)  # (x, y, z) mm

CONFIG = """
task = "prostate_mr2ct"
seed = 0
output = "{output}"
baselines = ["no_adaptation"]

[data]
source = "{root}/source"
target = "{root}/target"
evaluation = "{root}/evaluation"
spacing = [4.0, 3.0, 3.0]
size = [48, 48]
cache = "{root}/cache"

[translator]
name = "cyclegan"
width = 4
blocks = 1
disc_width = 4
batch_size = 2
epochs = 1
iterations_per_epoch = 2

[segmentation]
model = {{ name = "resunet25d", base = 4, depth = 2 }}
epochs = 1
batch_size = 8

[runtime]
device = "cpu"
"""


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc; psutil elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss / 2**20


def _subject(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An elliptic body with a prostate-like blob: (MR, CT in HU, mask)."""
    z, y, x = np.indices(SHAPE, dtype=np.float32)
    cy, cx = 23.5 + rng.normal(0, 1.5, 2)
    body = ((y - cy) / 18) ** 2 + ((x - cx) / 21) ** 2 < 1
    r = rng.uniform(4, 6)
    mask = ((z - 6) / 3.5) ** 2 + ((y - cy - 4) / r) ** 2 + ((x - cx) / r) ** 2 < 1
    noise = rng.normal(0, 1, SHAPE).astype(np.float32)
    mr = np.clip(body * 350.0 + mask * 250.0 + 20 * noise, 0, None)
    ct = np.where(body, 40.0, -1000.0) + mask * 15.0 + 8 * noise
    return mr.astype(np.float32), ct.astype(np.int16), mask.astype(np.uint8)


def write_data(root: Path, seed: int = 0) -> None:
    """4 labelled MR, 3 CT, 2 labelled evaluation CT; different subjects in each folder."""
    rng = np.random.default_rng(seed)
    for folder, count in (("source", 4), ("target", 3), ("evaluation", 2)):
        for i in range(count):
            mr, ct, mask = _subject(rng)
            image = mr if folder == "source" else ct
            write_volume(Volume(image, SPACING), root / folder / "images" / f"{folder}{i}.nii.gz")
            if folder != "target":
                write_volume(Volume(mask, SPACING), root / folder / "labels" / f"{folder}{i}.nii.gz", mask=True)


def soak(runs: int, warmup: int, work: Path) -> tuple[list[float], list[float]]:
    """Run the tiny pipeline ``runs`` times; returns (RSS MiB after each run, seconds per run)."""
    write_data(work / "data")
    config = work / "soak.toml"
    config.write_text(CONFIG.format(output=work / "runs", root=work / "data"))
    rss, seconds = [], []
    for i in range(runs):
        start = time.perf_counter()
        result = run_pipeline(load_config(config, {"name": f"soak{i:02d}"}))
        seconds.append(time.perf_counter() - start)
        stages = ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
        shutil.rmtree(result.run_dir)  # outputs are not what is measured
        del result
        gc.collect()
        rss.append(rss_mib())
        print(f"run {i + 1:2d}/{runs}: {seconds[-1]:5.1f} s ({stages}), RSS {rss[-1]:7.1f} MiB", flush=True)
    return rss, seconds


def report(rss: list[float], seconds: list[float], warmup: int, max_growth: float) -> tuple[str, bool]:
    base = rss[warmup - 1]
    growth = (rss[-1] - base) / base
    peak = (max(rss[warmup:]) - base) / base
    ok = growth <= max_growth and peak <= max_growth
    cpu = platform.processor() or platform.machine()
    lines = [
        "",
        f"## Soak: {len(rss)} tiny runs in one process ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {platform.node()}, {cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__} on CPU "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}. "
        "Command: `python benchmarks/soak.py`.",
        "Each run: 4 MR + 3 CT + 2 evaluation CT (12 x 48 x 48), CycleGAN width 4 for 2 iterations, Res-U-Net base 4 "
        "for 1 epoch (SynCT and no-adaptation), evaluation and report.",
        "",
        "| after run | " + " | ".join(str(i + 1) for i in range(len(rss))) + " |",
        "|---|" + "---|" * len(rss),
        "| RSS (MiB) | " + " | ".join(f"{r:.0f}" for r in rss) + " |",
        "| seconds | " + " | ".join(f"{s:.1f}" for s in seconds) + " |",
        "",
        f"RSS after the {warmup} warm-up runs {base:.0f} MiB; after run {len(rss)} {rss[-1]:.0f} MiB: growth "
        f"{growth:+.1%}, peak {peak:+.1%} (limit {max_growth:.0%}) -> **{'pass' if ok else 'FAIL'}**. "
        f"Total {sum(seconds):.0f} s.",
        "",
    ]
    return "\n".join(lines), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="runs before the baseline RSS is taken")
    parser.add_argument("--max-growth", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-append", action="store_true", help="print the result, do not touch RESULTS.md")
    args = parser.parse_args()
    if not 1 <= args.warmup < args.runs:
        parser.error("need 1 <= --warmup < --runs")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="daseg-soak-") as tmp:
        rss, seconds = soak(args.runs, args.warmup, Path(tmp))
    text, ok = report(rss, seconds, args.warmup, args.max_growth)
    print(text)
    if not args.no_append:
        with RESULTS.open("a") as handle:
            handle.write(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
