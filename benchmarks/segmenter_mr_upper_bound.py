"""Benchmark: the MR -> MR upper bound. A segmenter trained on phantom MR with its masks, tested on held-out MR.

The paper's MRI-to-MRI upper bound is a Dice of 0.90; on the pelvic phantom the issue asks for >= 0.85. Subjects
are split by subject (never by slice): ``--n-train`` for training (of which ``val_fraction`` choose the best
checkpoint) and ``--n-test`` held out. Dice is measured in 3D on the common grid after thresholding and
largest-component post-processing, and the result is appended to benchmarks/RESULTS.md with the machine and date.

Run: ``python benchmarks/segmenter_mr_upper_bound.py`` (about 5 minutes of CPU time on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from da_seg.config import SegmentationConfig
from da_seg.data import Domain, find_cases
from da_seg.metrics.segmentation import evaluate_case, format_summary, summarise
from da_seg.prepared import load_prepared
from da_seg.registry import INTENSITIES
from da_seg.segmentation import train_segmenter

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=12)
    parser.add_argument("--n-test", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--model", default="resunet25d", help="registered segmenter name")
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--loss", default="bce_dice")
    parser.add_argument("--context", type=int, default=1)
    parser.add_argument("--spacing", type=float, nargs=3, default=(3.0, 2.0, 2.0), help="(z, y, x) mm")
    parser.add_argument("--size", type=int, nargs=2, default=(80, 80))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()

    from prostate_mr2ct.phantom import write_phantom

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tic = time.perf_counter()
        write_phantom(tmp / "data", n_source=args.n_train + args.n_test, n_target=1, n_evaluation=1, seed=args.seed)
        domain = Domain(tuple(args.spacing), tuple(args.size), INTENSITIES.build("mr_percentile"))
        cases = load_prepared(find_cases(tmp / "data" / "source", labelled=True), domain)
        data_s = time.perf_counter() - tic
        train = [(c.image, c.mask) for c in cases[: args.n_train]]
        test = cases[args.n_train :]
        settings = SegmentationConfig(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, context=args.context, loss={"name": args.loss}
        )
        spec = {"name": args.model, **({"base": args.base} if args.model == "resunet25d" else {})}
        tic = time.perf_counter()
        model = train_segmenter(
            spec, train, settings, workdir=tmp / "model", device=args.device, seed=args.seed, domain=domain
        )
        train_s = time.perf_counter() - tic
        rows = []
        for case in test:
            row = evaluate_case(model.segment(case.image), case.mask, domain.spacing_zyx)
            rows.append({"case": case.id, **row})
            print(case.id, {k: round(v, 3) for k, v in row.items()})
    summary = format_summary(summarise(rows))
    dice = [r["dice"] for r in rows]
    history = model.info["history"]
    print(f"Dice {summary['dice']} (min {min(dice):.3f}); HD95 {summary['hd95']} mm; ASSD {summary['assd']} mm")
    print(f"data {data_s:.0f} s, training {train_s:.0f} s, best epoch {model.info['epoch']}")
    if args.no_write:
        return
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, " + (
        torch.cuda.get_device_name() if model.device.type == "cuda" else "CPU"
    )
    per_case = ", ".join(f"{r['case']} {r['dice']:.3f}" for r in rows)
    lines = [
        "",
        f"## Segmenter MR -> MR upper bound ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"`python benchmarks/segmenter_mr_upper_bound.py` — {machine}.",
        f"Phantom MR (prostate_mr2ct), {args.n_train} training subjects (20% of them validation for the best "
        f"checkpoint), {args.n_test} held-out subjects; grid {tuple(args.spacing)} mm, {tuple(args.size)} px; "
        f"`{spec}`, context {args.context} ({2 * args.context + 1} slices), loss {args.loss}, {args.epochs} epochs, "
        f"batch {args.batch_size}, Adam {args.lr:g}, default augmentation; seed {args.seed}.",
        "",
        "| metric (held-out MR) | mean ± sd |",
        "|---|---|",
        *(f"| {k}{' (mm)' if k in ('hd95', 'assd') else ''} | {v} |" for k, v in summary.items()),
        "",
        f"Per case Dice: {per_case}. Best validation Dice "
        f"{model.info['best_val_dice']:.3f} at epoch {model.info['epoch']}; training loss "
        f"{history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}. Time: data {data_s:.0f} s, training {train_s:.0f} s. "
        f"Target: Dice >= 0.85 (paper's MRI-to-MRI upper bound 0.90): "
        f"{'met' if np.mean(dice) >= 0.85 else 'NOT met'}.",
    ]
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
