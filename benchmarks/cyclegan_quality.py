"""Benchmark: does a small CycleGAN learn MR -> CT on the phantom? (issue 4 acceptance)

Trains a small CycleGAN (64x64 slices, CPU) on the unpaired pelvic phantom (MR of some subjects, CT of others)
and measures SynCT fidelity against each MR subject's own CT (the phantom's paired mode): MAE, mean error, PSNR
and SSIM in HU inside the body (true CT > -400 HU) and the crop, on the MR subject's grid. The acceptance is that
training cuts the MAE-HU of the untrained generator (same seeded initial weights) by at least half. The identity
and histogram-matching translators are measured too, as context.

The SynCT is brought back to HU and to the MR file's grid with the data layer (`Domain.restore`), and the true CT
is resampled onto that grid, so only the MR field of view is compared. CT intensities are windowed to
[-500, 500] HU by the task's preset, so the SynCT cannot exceed that window; the true CT is not clipped.

Usage:
    python benchmarks/cyclegan_quality.py [--seeds 0 1 2 3 4] [--epochs 60] [--no-augment] [--threads 2] [--out DIR]

Each seed draws other phantom subjects and other initial weights, and the outcome depends on the draw, so the
verdict is the median ratio over the seeds. The defaults (3 + 3 subjects, batch 2, SSIM cycle loss, the example's
augmentation in both domains, 6000 updates, bf16) took ~15 min of training per seed with 1 torch thread (two seeds
side by side on 2 cores); results per seed in benchmarks/RESULTS.md. Every epoch's snapshot is evaluated, so the MAE
trajectory is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from prostate_mr2ct.phantom import write_phantom

from da_seg.data import Domain, find_cases
from da_seg.geometry import crop_or_pad, resample_to
from da_seg.prepared import load_prepared
from da_seg.registry import INTENSITIES, METRICS, TASKS, TRANSLATORS
from da_seg.training import resolve_device
from da_seg.translators import load_translator
from da_seg.volume import read_volume

GRID = {"spacing": (3.5, 3.125, 3.125), "size": (64, 64)}  # 200 mm field of view, the phantom MR's
EXAMPLE_AUGMENT = [  # examples/prostate_mr2ct.toml's, per domain
    {"name": "random_ratio_crop", "min_ratio": 0.5},
    {"name": "rotation", "degrees": 10.0},
    {"name": "flip"},
]


FIDELITY = ("mae_hu", "mean_error_hu", "psnr", "ssim")


def against_truth(
    image: np.ndarray, case, target_domain: Domain, paired: Path, metrics: tuple[str, ...] = FIDELITY
) -> dict[str, float]:
    """Fidelity metrics of ``image`` (on the common grid) restored to HU on the MR subject's grid, against the
    subject's true CT resampled there, inside the body (true CT > -400 HU) and the crop (as the pipeline does)."""
    synct = target_domain.restore(image, case, mask=False)
    truth = resample_to(read_volume(paired / "images" / f"{case.id}.nii.gz"), synct)
    inside = target_domain.restore(np.ones(image.shape, np.uint8), case, mask=True).array > 0
    body = (truth.array > -400) & inside
    return {m: METRICS.get(m)(synct.array, truth.array, mask=body) for m in metrics}


def fidelity(translator, cases, target_domain: Domain, paired: Path) -> dict[str, float]:
    """Mean over subjects of the fidelity metrics of ``translator``'s SynCT against the subject's true CT."""
    rows = [against_truth(translator.translate(case.image), case, target_domain, paired) for case in cases]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def on_common_grid(case, target_domain: Domain, paired: Path) -> np.ndarray:
    """The CT in ``paired/images`` named like MR ``case``, taken onto the case's common grid, windowed and cropped
    as the pipeline prepares a CT: what a SynCT of the case would be if it were perfect."""
    ct = resample_to(read_volume(paired / "images" / f"{case.id}.nii.gz"), case.grid).array
    windowed = target_domain.intensity.forward(ct, target_domain.intensity.fit(ct))
    return crop_or_pad(windowed, target_domain.size_hw, target_domain.intensity.padding_value, case.offset_hw)


def window_floor(cases, target_domain: Domain, paired: Path) -> float:
    """MAE HU of a perfect translator: each subject's own CT on the MR case's grid and crop, pushed through the
    window and the restore path."""
    values = [
        against_truth(on_common_grid(c, target_domain, paired), c, target_domain, paired, ("mae_hu",)) for c in cases
    ]
    return float(np.mean([v["mae_hu"] for v in values]))


def run_seed(args: argparse.Namespace, seed: int, out: Path) -> dict[str, float]:
    """Generate seed's phantom subjects, train one CycleGAN from seed's initial weights, print the fidelity table;
    return the untrained and trained MAE HU."""
    tic = time.perf_counter()
    data = out / f"phantom_{args.subjects}_seed{seed}"
    paired = data / "paired_target"
    if not paired.is_dir():
        write_phantom(data, n_source=args.subjects, n_target=args.subjects, n_evaluation=0, paired=True, seed=seed)
    task = TASKS.create("prostate_mr2ct")
    source_domain = Domain(GRID["spacing"], GRID["size"], INTENSITIES.build(task.source_intensity), args.centre)
    target_domain = Domain(GRID["spacing"], GRID["size"], INTENSITIES.build(task.target_intensity), args.centre)
    mr = load_prepared(find_cases(data / "source", labelled=True), source_domain)
    ct = load_prepared(find_cases(data / "target", labelled=False), target_domain)
    print(
        f"\n## seed {seed}\ndata: {len(mr)} MR ({sum(c.image.shape[0] for c in mr)} slices), {len(ct)} CT "
        f"({sum(c.image.shape[0] for c in ct)} slices) on {GRID}, {time.perf_counter() - tic:.0f} s"
    )

    cycle = json.loads(args.cycle_loss) if args.cycle_loss.startswith("{") else args.cycle_loss
    augment = EXAMPLE_AUGMENT if args.augment else []
    spec = {
        "name": "cyclegan",
        "generator": args.generator,
        "width": args.width,
        "blocks": 6,
        "disc_width": args.width,
        "disc_layers": args.disc_layers,
        "epochs": args.epochs,
        "iterations_per_epoch": args.iterations,
        "batch_size": args.batch_size,
        "cycle_loss": cycle,
        "identity_weight": args.identity_weight,
        "lr": args.lr,
        "source_augment": augment,
        "target_augment": augment,
        "sample_every": max(1, args.epochs // 4),
        "keep_checkpoints": args.epochs,  # every epoch's snapshot: the MAE trajectory below
    }
    results = {}
    torch.manual_seed(seed)
    untrained = TRANSLATORS.build(spec)
    results["cyclegan untrained"] = fidelity(untrained, mr, target_domain, paired)
    for name in ("identity", "histogram_matching"):
        baseline = TRANSLATORS.build({"name": name}).fit([c.image for c in mr], [c.image for c in ct])
        results[name] = fidelity(baseline, mr, target_domain, paired)

    tic = time.perf_counter()
    work = out / f"work_seed{seed}"
    shutil.rmtree(work, ignore_errors=True)  # train from scratch, never resume an earlier run
    model = TRANSLATORS.build(spec)
    model.fit(
        [c.image for c in mr],
        [c.image for c in ct],
        workdir=work,
        device=resolve_device(args.device),
        precision=args.precision,
        seed=seed,
    )
    train_s = time.perf_counter() - tic
    updates = args.epochs * args.iterations
    results[f"cyclegan trained ({updates} it)"] = fidelity(model, mr, target_domain, paired)
    log = [json.loads(x) for x in (work / "log.jsonl").read_text().splitlines()]
    last = [r for r in log if r["kind"] == "epoch"][-1]
    print(
        f"training: {updates} iterations in {train_s:.0f} s "
        f"(last epoch {last['it_per_s']:.2f} it/s, g {last['g']:.3f}, cycle {last['cycle']:.3f}, d {last['d']:.3f})"
    )
    print(f"samples: {work / 'samples'}")
    trajectory = {
        int(d.name.split("_")[1]): fidelity(load_translator(d), mr, target_domain, paired)["mae_hu"]
        for d in sorted(work.glob("epoch_[0-9][0-9][0-9][0-9]"))
    }
    print("MAE HU per epoch snapshot: " + ", ".join(f"{e}: {v:.1f}" for e, v in trajectory.items()))

    print("\n| translator | MAE HU | mean error HU | PSNR dB | SSIM |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['mae_hu']:.1f} | {r['mean_error_hu']:+.1f} | {r['psnr']:.2f} | {r['ssim']:.3f} |")
    before = results["cyclegan untrained"]["mae_hu"]
    after = results[f"cyclegan trained ({updates} it)"]["mae_hu"]
    floor = window_floor(mr, target_domain, paired)
    print(f"\nfloor: the true CT through the [-500, 500] HU window and back scores MAE {floor:.1f} HU")
    print(f"seed {seed}: MAE-HU untrained {before:.1f} -> trained {after:.1f} ({after / before:.2f}x)")
    return {"untrained": before, "trained": after, "floor": floor, "train_s": train_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3, help="MR subjects and (other) CT subjects")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--iterations", type=int, default=100, help="iterations per epoch")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--cycle-loss", default="ssim", help='"mse", "l1", "ssim" or JSON weights')
    parser.add_argument("--identity-weight", type=float, default=0.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--generator", default="resnet", help='"resnet" (6 blocks) or "unet"')
    parser.add_argument("--width", type=int, default=16, help="generator and discriminator base width")
    parser.add_argument("--disc-layers", type=int, default=3, help="PatchGAN stride-2 layers (3: 70x70 patches)")
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="both domains: the example's (the paper's) random-ratio crop, rotation and flips",
    )
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--device", default="cpu", help='"cpu", "cuda" or "auto"')
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="one run per seed (phantom subjects and training)"
    )
    parser.add_argument("--centre", default="body", choices=Domain.CENTRES, help="in-plane crop centre of both domains")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 when two runs share 2 cores)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cyclegan_quality_"))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} threads, device {resolve_device(args.device)}, load average {os.getloadavg()[0]:.1f}"
    )
    torch.set_num_threads(args.threads)
    runs = {seed: run_seed(args, seed, out) for seed in args.seeds}

    print("\n| seed | untrained MAE HU | trained MAE HU | ratio | floor HU | training s |")
    print("|---|---|---|---|---|---|")
    for seed, r in runs.items():
        ratio = r["trained"] / r["untrained"]
        row = f"| {seed} | {r['untrained']:.1f} | {r['trained']:.1f} | {ratio:.2f}x | {r['floor']:.1f} |"
        print(f"{row} {r['train_s']:.0f} |")
    ratios = [r["trained"] / r["untrained"] for r in runs.values()]
    median = float(np.median(ratios))
    met = sum(x <= 0.5 for x in ratios)
    verdict = "PASS" if median <= 0.5 else "FAIL"
    print(
        f"\nmedian ratio over {len(ratios)} seed(s) {median:.2f}x, {met} of {len(ratios)} at or below 0.5x: {verdict}"
    )


if __name__ == "__main__":
    main()
