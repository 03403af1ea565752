"""Benchmark: does the fast mode (bf16 autocast + channels_last) train as well as plain fp32 NCHW?

Two short trainings per mode, same seeds, same data, side by side in one process:

- Segmenter on phantom MR with its masks (resunet25d base 8, bce_dice, default augmentation), tested on held-out MR
  subjects: mean 3D Dice. Tolerance: |Dice(fast) - Dice(fp32)| <= 0.03, about the subject-to-subject sd of the MR
  upper bound (0.032 in RESULTS.md), i.e. below what the test set can resolve.
- CycleGAN MR -> CT on the paired phantom (ResNet 6 blocks, ngf/ndf 16), SynCT vs the subject's true CT in HU inside
  the body: MAE-HU. Tolerance: within 10% of fp32's MAE (two fp32 runs with different seeds differ by about that
  much after a few hundred iterations; see RESULTS.md).

Appends a section to benchmarks/RESULTS.md. Usage (about 6-8 minutes on 2 shared cores):
    python benchmarks/precision_quality.py [--threads 1] [--seg-epochs 6] [--gan-iterations 160] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from prostate_mr2ct.phantom import write_phantom

from da_seg.config import SegmentationConfig
from da_seg.data import Domain, find_cases
from da_seg.metrics.segmentation import dice
from da_seg.prepared import load_prepared
from da_seg.registry import INTENSITIES, TASKS, TRANSLATORS
from da_seg.segmentation import train_segmenter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cyclegan_quality import GRID, fidelity

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MODES = {"fp32 NCHW": ("fp32", False), "bf16 channels_last": ("bf16", True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=8, help="phantom MR subjects (and CT subjects)")
    parser.add_argument("--n-test", type=int, default=3)
    parser.add_argument("--seg-epochs", type=int, default=6)
    parser.add_argument("--gan-iterations", type=int, default=160)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start, load0 = time.perf_counter(), os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="precision_quality_"))
    write_phantom(tmp / "data", n_source=args.subjects, n_target=args.subjects, n_evaluation=0, paired=True, seed=0)
    task = TASKS.create("prostate_mr2ct")
    source = Domain(GRID["spacing"], GRID["size"], INTENSITIES.build(task.source_intensity))
    target = Domain(GRID["spacing"], GRID["size"], INTENSITIES.build(task.target_intensity))
    mr = load_prepared(find_cases(tmp / "data" / "source", labelled=True), source)
    ct = load_prepared(find_cases(tmp / "data" / "target", labelled=False), target)
    train, test = mr[: -args.n_test], mr[-args.n_test :]

    settings = SegmentationConfig(
        model={"name": "resunet25d", "base": 8}, epochs=args.seg_epochs, batch_size=8, loss={"name": "bce_dice"}
    )
    rows = []
    for mode, (precision, channels_last) in MODES.items():
        tic = time.perf_counter()
        seg = train_segmenter(
            settings.model,
            [(c.image, c.mask) for c in train],
            settings,
            workdir=tmp / f"seg-{precision}",
            device="cpu",
            precision=precision,
            channels_last=channels_last,
            seed=0,
            progress=False,
        )
        scores = [dice(seg.segment(c.image) == 1, c.mask == 1) for c in test]
        seg_s = time.perf_counter() - tic

        tic = time.perf_counter()
        gan = TRANSLATORS.build(
            {
                "name": "cyclegan",
                "width": 16,
                "blocks": 6,
                "disc_width": 16,
                "batch_size": 2,
                "epochs": 4,
                "iterations_per_epoch": args.gan_iterations // 4,
                "sample_every": 0,
                "keep_checkpoints": 0,
            }
        )
        gan.fit(
            [c.image for c in mr],
            [c.image for c in ct],
            device="cpu",
            precision=precision,
            channels_last=channels_last,
            seed=0,
        )
        fid = fidelity(gan, mr, target, tmp / "data" / "paired_target")
        gan_s = time.perf_counter() - tic
        rows.append((mode, float(np.mean(scores)), float(np.std(scores)), seg_s, fid["mae_hu"], fid["psnr"], gan_s))
        print(rows[-1], flush=True)

    (_, d32, _, s32, m32, _, g32), (_, d16, _, s16, m16, _, g16) = rows
    dice_ok = abs(d16 - d32) <= 0.03
    mae_ok = abs(m16 - m32) <= 0.10 * m32
    name = platform.processor() or platform.machine()
    lines = [
        f"## Precision vs quality: fp32 NCHW vs bf16 channels_last ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"`python benchmarks/precision_quality.py {' '.join(sys.argv[1:])}` — {name}, {os.cpu_count()} cores, CPU, "
        f"torch {torch.__version__}, {args.threads} torch thread(s), load average {load0:.1f} at start (shared "
        f"machine). Phantom seed 0 on {GRID}: segmenter trained on {len(train)} MR subjects (resunet25d base 8, "
        f"bce_dice, {args.seg_epochs} epochs, batch 8, default augmentation), Dice on {len(test)} held-out MR "
        f"subjects; CycleGAN (ResNet 6 blocks, ngf/ndf 16, batch 2, {args.gan_iterations} iterations) on "
        f"{len(mr)} MR + {len(ct)} unpaired CT, MAE/PSNR of the SynCT vs the true CT inside the body.",
        "",
        "| mode | segmenter Dice (held-out MR) | train s | SynCT MAE HU | PSNR dB | train s |",
        "|---|---|---|---|---|---|",
        *[
            f"| {m} | {d:.3f} ± {sd:.3f} | {ss:.0f} | {mae:.1f} | {p:.2f} | {gs:.0f} |"
            for m, d, sd, ss, mae, p, gs in rows
        ],
        "",
        f"Dice difference {d16 - d32:+.3f} (tolerance ±0.03): {'PASS' if dice_ok else 'FAIL'}; MAE-HU ratio "
        f"{m16 / m32:.3f} (tolerance 1 ± 0.10): {'PASS' if mae_ok else 'FAIL'}. Training time ratio fp32/bf16: "
        f"segmenter {s32 / s16:.2f}x, CycleGAN {g32 / g16:.2f}x (includes validation/evaluation). Wall "
        f"{time.perf_counter() - start:.0f} s.",
        "",
    ]
    print("\n".join(lines))
    if not args.no_write:
        with RESULTS.open("a") as f:
            f.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
