"""Benchmark: segmenter (and CycleGAN) training speed per precision/layout mode, inference per CT volume, data wait.

All modes run side by side in ONE process and are interleaved round by round (mode A step, mode B step, ...), so a
change in the machine's load hits every mode alike and the ratios stay fair on a shared machine.

- Segmenter training step at 256x256 (batch ``--batch``, 2.5D context 1 = 3 channels, BCE, Adam) for resunet25d
  (the paper's Res-U-Net, default base 16 / depth 4) and smp Unet/resnet34, in fp32 NCHW, bf16 NCHW, fp32
  channels_last and bf16 channels_last (``--compile`` adds torch.compile). The median step time per mode is
  reported with slices/s and the speed-up over fp32 NCHW eager.
- CycleGAN iteration at 128x128 (ResNet 6 blocks, ngf/ndf 16, batch 1) through `CycleGAN.fit`, same modes.
- FLOPs per training step (``torch.utils.flop_counter.FlopCounterMode``) and achieved GFLOP/s next to a measured
  fp32/bf16 matmul rate.
- Data wait: time to gather a batch from a `SliceBank` and augment it with the default Kornia pipeline, as a share of
  the whole step (gather + augment + train) in the fastest mode.
- Inference: `TrainedSegmenter.predict` on a (100, 512, 512) volume with resunet25d, in the chosen default mode
  (bf16 + channels_last) and fp32 NCHW (the latter on ``--fp32-slices`` slices, scaled to 100: fp32 would take
  minutes on a shared CPU).
- Peak memory: ``resource.getrusage`` max RSS (CPU) or ``torch.cuda.max_memory_allocated`` (GPU).

Usage:
    python benchmarks/segmenter_speed.py [--rounds 3] [--batch 8] [--threads N] [--device cpu] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from da_seg.augment import build_augmentation
from da_seg.config import SegmentationConfig
from da_seg.registry import LOSSES, TRANSLATORS
from da_seg.segmentation import TrainedSegmenter, build_segmenter, targets
from da_seg.slices import SliceBank
from da_seg.training import autocast, grad_scaler, to_layout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cyclegan_speed import matmul_gflops

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MODES = {  # name: (precision, channels_last, compile)
    "fp32 NCHW": ("fp32", False, False),
    "bf16 NCHW": ("bf16", False, False),
    "fp32 channels_last": ("fp32", True, False),
    "bf16 channels_last": ("bf16", True, False),
}
MODELS = {
    "resunet25d (base 16, depth 4)": {"name": "resunet25d"},
    "smp Unet/resnet34": {"name": "smp", "arch": "Unet", "encoder": "resnet34"},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _bank(device: torch.device, size: int = 256) -> SliceBank:
    rng = np.random.default_rng(0)
    images = [np.tanh(rng.normal(0, 0.6, (24, size, size))).astype(np.float32) for _ in range(2)]
    masks = [(im > 0.4).astype(np.uint8) for im in images]
    return SliceBank(images, masks, context=1, device=device)


class SegmenterStep:
    """One real training step (the same pieces `train_segmenter` uses) in one precision/layout mode."""

    def __init__(self, spec: dict, mode: tuple[str, bool, bool], device: torch.device, batch: int) -> None:
        self.precision, self.channels_last, compile_ = mode
        torch.manual_seed(0)
        model = build_segmenter(spec, context=1).to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if compile_ else model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.loss = LOSSES.build({"name": "bce"})
        self.scaler = grad_scaler(device, self.precision)
        self.device = device
        g = torch.Generator().manual_seed(0)
        self.x = torch.tanh(torch.randn(batch, 3, 256, 256, generator=g)).to(device)
        self.y = (self.x[:, 1:2] > 0.4).to(torch.uint8)

    def __call__(self, images: torch.Tensor | None = None, masks: torch.Tensor | None = None) -> None:
        images = self.x if images is None else images
        masks = self.y if masks is None else masks
        with autocast(self.device, self.precision):
            loss = self.loss(self.model(to_layout(images, self.channels_last)), targets(masks, 1))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        _sync(self.device)


def interleaved(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each step, timed round-robin after one untimed warm-up call each."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            tic = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - tic)
    return {k: statistics.median(v) for k, v in times.items()}


def step_flops(step: SegmenterStep) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


class CycleGANStep:
    """One CycleGAN iteration at 128x128 (ResNet 6 blocks, ngf/ndf 16, ``batch`` slices) through `CycleGAN.fit`."""

    def __init__(self, mode: tuple[str, bool, bool], device: torch.device, batch: int = 1) -> None:
        self.precision, self.channels_last, self.compile = mode
        rng = np.random.default_rng(0)
        self.a = [np.tanh(rng.normal(0, 0.5, (8, 128, 128))).astype(np.float32)]
        self.b = [np.tanh(rng.normal(0, 0.5, (8, 128, 128))).astype(np.float32)]
        self.device = device
        self.batch = batch

    def fit(self, iterations: int) -> float:
        model = TRANSLATORS.build(
            {
                "name": "cyclegan",
                "blocks": 6,
                "width": 16,
                "disc_width": 16,
                "epochs": 1,
                "batch_size": self.batch,
                "iterations_per_epoch": iterations,
                "sample_every": 0,
                "keep_checkpoints": 0,
            }
        )
        tic = time.perf_counter()
        model.fit(
            self.a,
            self.b,
            device=self.device,
            precision=self.precision,
            channels_last=self.channels_last,
            compile=self.compile,
        )
        return time.perf_counter() - tic


def cyclegan_rates(device: torch.device, rounds: int, batch: int = 1) -> dict[str, float]:
    """Seconds per CycleGAN iteration per mode: (fit of 4 iterations - fit of 1) / 3, median over rounds."""
    steps = {name: CycleGANStep(mode, device, batch) for name, mode in MODES.items()}
    for s in steps.values():
        s.fit(1)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for name, s in steps.items():
            times[name].append((s.fit(4) - s.fit(1)) / 3)
    return {k: statistics.median(v) for k, v in times.items()}


def data_wait(device: torch.device, batch: int, train: SegmenterStep, rounds: int) -> tuple[float, float]:
    """(seconds to gather + augment a batch, seconds of the whole step) with the default augmentation."""
    bank = _bank(device)
    augment = build_augmentation(SegmentationConfig().augment)
    g = torch.Generator().manual_seed(0)
    gather, total = [], []
    for i in range(rounds + 1):
        tic = time.perf_counter()
        images, masks = augment(*bank.batch(torch.randperm(len(bank), generator=g)[:batch]))
        _sync(device)
        mid = time.perf_counter()
        train(images, masks)
        if i:  # first round is warm-up
            gather.append(mid - tic)
            total.append(time.perf_counter() - tic)
    return statistics.median(gather), statistics.median(total)


def inference_seconds(device: torch.device, precision: str, channels_last: bool, slices: int) -> float:
    torch.manual_seed(0)
    model = build_segmenter({"name": "resunet25d"}, context=1).to(device).eval()
    seg = TrainedSegmenter(
        model, {"name": "resunet25d"}, 1, device=device, precision=precision, channels_last=channels_last
    )
    volume = np.tanh(np.random.default_rng(0).normal(0, 0.5, (slices, 512, 512))).astype(np.float32)
    seg.predict(volume[:2])  # warm-up (weights converted, kernels chosen)
    _sync(device)
    tic = time.perf_counter()
    seg.predict(volume)
    _sync(device)
    return time.perf_counter() - tic


def peak_memory_mib(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB GPU (max allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process max RSS)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per mode (median)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cyclegan-batch", type=int, nargs="+", default=[1], help="CycleGAN batch sizes to time")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile modes")
    parser.add_argument("--fp32-slices", type=int, default=10, help="slices for the fp32 inference estimate")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "smp", "cyclegan", "inference"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile:
        MODES["bf16 channels_last compiled"] = ("bf16", True, True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    start = time.perf_counter()
    load0 = os.getloadavg()[0]
    lines = [
        f"## Segmenter speed, precision and layout ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"`python benchmarks/segmenter_speed.py {' '.join(sys.argv[1:])}` — {name}, {os.cpu_count()} cores, "
        f"{device.type}, torch {torch.__version__}, {torch.get_num_threads()} torch threads, load average "
        f"{load0:.1f} at start (the machine was shared with other jobs). All modes in one process, interleaved "
        f"round by round, median of {args.rounds} steps after a warm-up step.",
        "",
    ]
    mm32, mm16 = matmul_gflops(device, torch.float32), matmul_gflops(device, torch.bfloat16)
    lines += [f"Matmul 2048^2 (best of 10): fp32 {mm32:.1f} GFLOP/s, bf16 {mm16:.1f} GFLOP/s.", ""]
    print(lines[-2], flush=True)

    if "train" not in args.skip:
        lines += [
            f"Training step, batch {args.batch}, 3 x 256 x 256, BCE, Adam:",
            "",
            "| model | mode | s/step | slices/s | speed-up vs fp32 NCHW | GFLOP/step | GFLOP/s | % of matmul |",
            "|---|---|---|---|---|---|---|---|",
        ]
    fastest: SegmenterStep | None = None
    flops_resunet = 0
    for label, spec in MODELS.items() if "train" not in args.skip else ():
        if "smp" in args.skip and spec["name"] == "smp":
            continue
        steps = {mode: SegmenterStep(spec, cfg, device, args.batch) for mode, cfg in MODES.items()}
        flops = step_flops(SegmenterStep(spec, MODES["fp32 NCHW"], device, args.batch))
        flops_resunet = flops_resunet or flops
        seconds = interleaved(steps, args.rounds)
        for mode, s in seconds.items():
            rate = flops / s / 1e9
            peak = mm16 if MODES[mode][0] == "bf16" else mm32
            row = (
                f"| {label} | {mode} | {s:.3f} | {args.batch / s:.1f} | {seconds['fp32 NCHW'] / s:.2f}x | "
                f"{flops / 1e9:.1f} | {rate:.1f} | {100 * rate / peak:.0f}% |"
            )
            lines.append(row)
            print(row, flush=True)
        if fastest is None:
            fastest = steps[min(seconds, key=seconds.get)]
    lines.append("")

    if fastest is not None:
        gather, total = data_wait(device, args.batch, fastest, args.rounds)
        lines += [
            f"Data wait (resunet25d, {fastest.precision}{' channels_last' if fastest.channels_last else ''}): "
            f"gather from a SliceBank + default Kornia augmentation {gather * 1e3:.0f} ms of a {total * 1e3:.0f} ms "
            f"step = **{100 * gather / total:.1f}%** (target < 5%).",
            "",
        ]
        print(lines[-2], flush=True)

    cyclegan_batches = [] if "cyclegan" in args.skip else args.cyclegan_batch
    for cyclegan_batch in cyclegan_batches:
        cg = cyclegan_rates(device, args.rounds, cyclegan_batch)
        lines += [
            f"CycleGAN iteration, ResNet 6 blocks, ngf/ndf 16, 128x128, batch {cyclegan_batch}, through "
            "`CycleGAN.fit` ((fit of 4 iterations - fit of 1) / 3):",
            "",
            "| mode | s/it | it/s | speed-up vs fp32 NCHW |",
            "|---|---|---|---|",
        ]
        for mode, s in cg.items():
            lines.append(f"| {mode} | {s:.3f} | {1 / s:.2f} | {cg['fp32 NCHW'] / s:.2f}x |")
            print(lines[-1], flush=True)
        lines.append("")

    if "inference" not in args.skip:
        probe = build_segmenter({"name": "resunet25d"}, context=1).to(device).eval()
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            probe(torch.zeros(1, 3, 512, 512, device=device))
        fast = inference_seconds(device, "bf16", True, 100)
        slow = inference_seconds(device, "fp32", False, args.fp32_slices) * 100 / args.fp32_slices
        lines += [
            "Inference, `TrainedSegmenter.predict` on a (100, 512, 512) volume, resunet25d (base 16, depth 4), "
            f"batch 16 (2 on CPU), {counter.get_total_flops() / 1e9:.1f} GFLOP per slice forward:",
            "",
            "| mode | s per volume |",
            "|---|---|",
            f"| bf16 channels_last (100 slices) | {fast:.1f} |",
            f"| fp32 NCHW ({args.fp32_slices} slices, x{100 // args.fp32_slices}) | {slow:.1f} |",
            "",
        ]
        print("\n".join(lines[-4:]), flush=True)

    lines += [
        f"Peak memory: {peak_memory_mib(device)}. FLOPs per resunet25d training step: {flops_resunet / 1e9:.1f} "
        f"GFLOP (batch {args.batch}; 0 when training was skipped). Wall time {time.perf_counter() - start:.0f} s, "
        f"load average at end {os.getloadavg()[0]:.1f}.",
        "",
    ]
    print("\n".join(lines))
    if not args.no_write:
        with RESULTS.open("a") as f:
            f.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
