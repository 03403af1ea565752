"""Benchmark: CycleGAN training speed on this machine (issue 4 acceptance).

Training iterations per second (batch 1) for the paper-size CycleGAN (ResNet generator with 9 blocks, width 64,
PatchGAN width 64, 256x256) and a small CPU configuration (6 blocks, width 16, 128x128), in fp32 and bf16. Each
configuration trains through the public API (`CycleGAN.fit`, 2 epochs of a few iterations; the rate comes from the
second epoch's line in ``log.jsonl``, so start-up is excluded). FLOPs per iteration are counted with
``torch.utils.flop_counter.FlopCounterMode`` over one training iteration (both generators, both discriminators,
forward and backward), and the achieved GFLOP/s is set next to a measured fp32 (and bf16) matmul rate.

Usage:
    python benchmarks/cyclegan_speed.py [--iterations 2] [--device cpu] [--threads N] [--skip-large]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from da_seg.registry import TRANSLATORS

CONFIGS = {
    "resnet9-w64-256": {"blocks": 9, "width": 64, "disc_width": 64, "size": 256},
    "resnet6-w16-128": {"blocks": 6, "width": 16, "disc_width": 16, "size": 128},
}


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """Best-of-``repeats`` rate of an ``n x n`` matmul (2 n^3 FLOPs)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        _sync(device)
        tic = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - tic)
    return 2 * n**3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _volumes(size: int, depth: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.tanh(rng.normal(0, 0.5, (depth, size, size))).astype(np.float32)]


def _model(cfg: dict, epochs: int, iterations: int):
    return TRANSLATORS.build(
        {
            "name": "cyclegan",
            "blocks": cfg["blocks"],
            "width": cfg["width"],
            "disc_width": cfg["disc_width"],
            "epochs": epochs,
            "decay_epochs": 0,
            "iterations_per_epoch": iterations,
            "sample_every": 0,
            "keep_checkpoints": 0,
            "log_every": 0,
            "checkpoint_every": 10**6,
        }
    )


def flops_per_iteration(cfg: dict, device: torch.device) -> int:
    source, target = _volumes(cfg["size"], 2, 0), _volumes(cfg["size"], 2, 1)
    with FlopCounterMode(display=False) as counter:
        _model(cfg, 1, 1).fit(source, target, device=device)
    return counter.get_total_flops()


def iterations_per_second(cfg: dict, device: torch.device, precision: str, iterations: int) -> float:
    source, target = _volumes(cfg["size"], 4, 0), _volumes(cfg["size"], 4, 1)
    with tempfile.TemporaryDirectory() as work:
        _model(cfg, 2, iterations).fit(source, target, workdir=Path(work), device=device, precision=precision)
        epochs = [json.loads(x) for x in (Path(work) / "log.jsonl").read_text().splitlines()]
    return [e for e in epochs if e["kind"] == "epoch"][-1]["it_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per configuration (epoch 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-large", action="store_true", help="only the 128x128 configuration")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(
        f"machine: {name}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    mm32 = matmul_gflops(device, torch.float32)
    mm16 = matmul_gflops(device, torch.bfloat16)
    print(f"matmul 2048^2: fp32 {mm32:.1f} GFLOP/s, bf16 {mm16:.1f} GFLOP/s")
    rows = []
    for label, cfg in CONFIGS.items():
        if args.skip_large and cfg["size"] > 128:
            continue
        flops = flops_per_iteration(cfg, device)
        for precision in ("fp32", "bf16"):
            tic = time.perf_counter()
            rate = iterations_per_second(cfg, device, precision, args.iterations)
            achieved = flops * rate / 1e9
            peak = mm32 if precision == "fp32" else mm16
            rows.append((label, precision, rate, flops / 1e9, achieved, achieved / peak))
            print(
                f"{label} {precision}: {rate:.3f} it/s, {flops / 1e9:.1f} GFLOP/it, {achieved:.1f} GFLOP/s "
                f"({100 * achieved / peak:.0f}% of matmul) [{time.perf_counter() - tic:.0f} s]",
                flush=True,
            )
    print("\n| config | precision | it/s | GFLOP/it | GFLOP/s | % of matmul |")
    print("|---|---|---|---|---|---|")
    for label, precision, rate, gflop, achieved, frac in rows:
        print(f"| {label} | {precision} | {rate:.3f} | {gflop:.1f} | {achieved:.1f} | {100 * frac:.0f}% |")


if __name__ == "__main__":
    main()
