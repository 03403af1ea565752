"""Benchmark: host milliseconds and dispatched aten operators per training iteration, with negligible arithmetic.

Why: on the H200 a CycleGAN iteration took ~60 ms whatever the networks' size (docs/performance.md), so the host
(Python, the dispatch of many small kernels, augmentation, image pools) sets the pace. Here the generators and
discriminators are 1 channel wide, so on a GPU the kernels are tiny and the wall time per iteration is the host's
time; the aten operators per iteration say how much the host has to dispatch. On a CPU the wall time still holds
the convolutions' pixel work (a width-1 CycleGAN iteration at 64 x 64 is ~0.1 GFLOP, and 1-channel convolutions
run far below the CPU's peak): compare with ``--size 32`` to see how much of it scales with the pixels.

Loops, batch 4, slices of a few (8, size, size) random volumes in [-1, 1] (size 64 by default), fp32:

- ``CycleGAN.fit``: ResNet generators (6 blocks, width 1), PatchGANs (width 1, 3 layers), SSIM cycle loss, image
  pools, fused Adam; with the augmentation ``AUG`` in both domains and without augmentation.
- ``train_segmenter``: resunet25d base 1 (depth 4), BCE, Adam, NCHW; with its default augmentation and without.
- reference: a plain CycleGAN loop written out below (two ``ResnetGenerator(1, 1, width=1, blocks=6)``, two
  ``PatchDiscriminator(1, 1, 3)``, LSGAN, L1 cycle and identity losses, two ``torch.optim.Adam`` with torch's
  defaults, batches gathered by index; no augmentation, no image pool).

Each loop runs whole (set-up, training, and for the project's trainers their checkpoint and reload) with 1 and with
1 + N iterations, after an untimed warm-up of 1 + N iterations; per-iteration figures are the differences divided by
N, so set-up and one-off costs drop out. Time is taken without the profiler (it slows dispatch down); the operators
are counted in separate runs under ``torch.profiler``: the ``count`` of every event whose name starts with
``aten::``, nested calls included (``aten::conv2d`` and the ``aten::convolution`` it calls count as two).

``--compile`` adds a second table: milliseconds per iteration of the steady state (the second of two epochs of N
iterations, read from the trainers' logs, so compilation in the first epoch drops out) for ``CycleGAN.fit`` with
augmentation and ``train_segmenter`` with its default augmentation, eager and with ``runtime.compile`` (the whole
step compiled by inductor; the CycleGAN samples and augments outside its compiled step, the segmenter inside it),
side by side in one run.

Usage:
    python benchmarks/host_overhead.py [--iterations 20] [--device cpu|cuda] [--size 64] [--threads 1] [--repeats 1]
        [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from da_seg.config import SegmentationConfig
from da_seg.segmentation import train_segmenter
from da_seg.threads import apply_threads
from da_seg.training import resolve_device
from da_seg.translators.cyclegan import CycleGAN
from da_seg.translators.networks import PatchDiscriminator, ResnetGenerator

AUG = [{"name": "random_ratio_crop", "min_ratio": 0.5}, {"name": "rotation", "degrees": 10.0}, {"name": "flip"}]
BATCH = 4
Volumes = list[np.ndarray]


def volumes(count: int, seed: int, size: int) -> Volumes:
    rng = np.random.default_rng(seed)
    return [np.tanh(rng.normal(0, 0.5, (8, size, size))).astype(np.float32) for _ in range(count)]


def cyclegan(
    augment: list, source: Volumes, target: Volumes, device: torch.device, epochs: int = 1, **fit: Any
) -> Callable[[int], None]:
    def run(iterations: int) -> None:
        model = CycleGAN(
            width=1,
            disc_width=1,
            blocks=6,
            cycle_loss="ssim",
            batch_size=BATCH,
            epochs=epochs,
            iterations_per_epoch=iterations,
            source_augment=augment,
            target_augment=augment,
            sample_every=0,
            keep_checkpoints=0,
        )
        model.fit(source, target, device=device, precision="fp32", **fit)

    return run


def segmenter(
    augment: bool, source: Volumes, device: torch.device, epochs: int = 1, **train: Any
) -> Callable[[int], None]:
    settings = SegmentationConfig(epochs=epochs, batch_size=BATCH, **({} if augment else {"augment": []}))
    cases = [(image, (image > 0.4).astype(np.uint8)) for image in source]

    def run(iterations: int) -> None:
        with tempfile.TemporaryDirectory() as workdir:
            train_segmenter(
                {"name": "resunet25d", "base": 1},
                cases,
                settings,
                workdir=workdir,
                device=device,
                precision="fp32",
                val_cases=[],
                iterations_per_epoch=iterations,
                progress=False,
                **train,
            )

    return run


def _lsgan(prediction: Tensor, real: bool) -> Tensor:
    return ((prediction - float(real)) ** 2).mean()


def reference(source: Volumes, target: Volumes, device: torch.device) -> Callable[[int], None]:
    """The textbook CycleGAN iteration (Zhu et al.'s code, simplified), as plain PyTorch."""

    def run(iterations: int) -> None:
        g_ab, g_ba = (ResnetGenerator(1, 1, width=1, blocks=6).to(device) for _ in range(2))
        d_a, d_b = (PatchDiscriminator(1, 1, 3).to(device) for _ in range(2))
        opt_g = torch.optim.Adam([*g_ab.parameters(), *g_ba.parameters()], lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam([*d_a.parameters(), *d_b.parameters()], lr=2e-4, betas=(0.5, 0.999))
        bank_a = torch.as_tensor(np.concatenate(source))[:, None].to(device)
        bank_b = torch.as_tensor(np.concatenate(target))[:, None].to(device)
        for _ in range(iterations):
            real_a = bank_a[torch.randint(len(bank_a), (BATCH,), device=device)]
            real_b = bank_b[torch.randint(len(bank_b), (BATCH,), device=device)]
            _requires_grad((d_a, d_b), False)
            opt_g.zero_grad(set_to_none=True)
            fake_b, fake_a = g_ab(real_a), g_ba(real_b)
            cycle = (g_ba(fake_b) - real_a).abs().mean() + (g_ab(fake_a) - real_b).abs().mean()
            identity = (g_ab(real_b) - real_b).abs().mean() + (g_ba(real_a) - real_a).abs().mean()
            loss_g = _lsgan(d_b(fake_b), True) + _lsgan(d_a(fake_a), True) + 10 * cycle + 5 * identity
            loss_g.backward()
            opt_g.step()
            _requires_grad((d_a, d_b), True)
            opt_d.zero_grad(set_to_none=True)
            loss_d = 0.5 * (_lsgan(d_b(real_b), True) + _lsgan(d_b(fake_b.detach()), False))
            loss_d = loss_d + 0.5 * (_lsgan(d_a(real_a), True) + _lsgan(d_a(fake_a.detach()), False))
            loss_d.backward()
            opt_d.step()

    return run


def _requires_grad(nets: tuple[nn.Module, ...], flag: bool) -> None:
    for net in nets:
        net.requires_grad_(flag)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(run: Callable[[int], None], iterations: int, device: torch.device) -> float:
    _sync(device)
    tic = time.perf_counter()
    run(iterations)
    _sync(device)
    return time.perf_counter() - tic


def aten_ops(run: Callable[[int], None], iterations: int) -> int:
    """aten operator calls torch.profiler records during ``run(iterations)`` (nested calls included)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(iterations)
    return sum(event.count for event in prof.key_averages() if event.key.startswith("aten::"))


def per_iteration(run: Callable[[int], None], n: int, device: torch.device, repeats: int) -> tuple[float, float]:
    """(host ms, aten ops) per iteration: runs of 1 and 1 + n iterations, differenced; times are the repeats' best."""
    run(1 + n)  # warm-up as long as the timed run: after run(1) alone the first loop measured read ~20-40% slow
    short = min(seconds(run, 1, device) for _ in range(repeats))
    long = min(seconds(run, 1 + n, device) for _ in range(repeats))
    ops = aten_ops(run, 1 + n) - aten_ops(run, 1)
    return 1000 * (long - short) / n, ops / n


def steady_ms(kind: str, compile: bool, n: int, source: Volumes, target: Volumes, device: torch.device) -> float:
    """ms per iteration in the second of two epochs of ``n`` iterations (the first one compiles), from the log."""
    with tempfile.TemporaryDirectory() as workdir:
        if kind == "cyclegan":
            cyclegan(AUG, source, target, device, epochs=2, workdir=Path(workdir), compile=compile)(n)
        else:
            settings = SegmentationConfig(epochs=2, batch_size=BATCH)
            cases = [(image, (image > 0.4).astype(np.uint8)) for image in source]
            train_segmenter(
                {"name": "resunet25d", "base": 1}, cases, settings, workdir=workdir, device=device,
                precision="fp32", val_cases=[], iterations_per_epoch=n, progress=False, compile=compile,
            )  # fmt: skip
        epochs = [json.loads(line) for line in (Path(workdir) / "log.jsonl").read_text().splitlines()]
        seconds = [row["seconds"] for row in epochs if row.get("kind", "epoch") == "epoch"]
        return 1000 * seconds[1] / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20, help="N: iterations timed (beyond the first)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", default="1", help="torch CPU threads: a number or 'auto'")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per length; the fastest counts")
    parser.add_argument("--size", type=int, default=64, help="slice size (at least 32: the PatchGAN's 3 layers)")
    parser.add_argument("--compile", action="store_true", help="also the steady state, eager vs runtime.compile")
    args = parser.parse_args()
    source, target = volumes(3, 0, args.size), volumes(3, 1, args.size)
    device = resolve_device(args.device, key="--device")
    threads = apply_threads("auto" if args.threads == "auto" else int(args.threads))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(
        f"{name}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} torch thread(s), load average "
        f"{os.getloadavg()[0]:.1f}; N = {args.iterations}, batch {BATCH}, {args.size} x {args.size}, fp32, width 1",
        flush=True,
    )
    loops = {
        "CycleGAN.fit, augmentation (crop, rotation, flip)": cyclegan(AUG, source, target, device),
        "CycleGAN.fit, no augmentation": cyclegan([], source, target, device),
        "train_segmenter, default augmentation": segmenter(True, source, device),
        "train_segmenter, no augmentation": segmenter(False, source, device),
        "reference CycleGAN loop (plain PyTorch)": reference(source, target, device),
    }
    rows = []
    for label, run in loops.items():
        ms, ops = per_iteration(run, args.iterations, device, args.repeats)
        rows.append((label, ms, ops))
        print(f"{label}: {ms:.1f} ms/iteration, {ops:.0f} aten ops/iteration", flush=True)
    print(f"\n| loop ({device.type}, {args.size} x {args.size}) | host ms/iteration | aten ops/iteration |")
    print("|---|---|---|")
    for label, ms, ops in rows:
        print(f"| {label} | {ms:.1f} | {ops:.0f} |")
    if device.type == "cpu":
        print("\n(on a CPU the milliseconds are wall time and include the convolutions' pixel work; see --size)")
    if not args.compile:
        return
    print(f"\n| steady state ({device.type}, {args.size} x {args.size}) | eager ms/iteration | compiled ms/iteration |")
    print("|---|---|---|")
    for kind, label in (("cyclegan", "CycleGAN.fit, augmentation"), ("segmenter", "train_segmenter, augmentation")):
        eager, compiled = (steady_ms(kind, c, args.iterations, source, target, device) for c in (False, True))
        print(f"| {label} | {eager:.1f} | {compiled:.1f} |", flush=True)


if __name__ == "__main__":
    main()
