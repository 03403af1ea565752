"""Experiment: does averaging the generator's weights over the last translator snapshots transfer labels better?

Why: the label-free selection audit (benchmarks/RESULTS.md) found the CT Dice of a SynCT-trained segmenter moving by
~0.1 from one late CycleGAN snapshot to the next (0.68-0.77); averaging weights over the end of GAN training is a
known way to damp that oscillation (Yazici et al. 2019, "The unusual effectiveness of averaging in GAN training").
This script measures it post hoc on a finished `daseg study`: for each seed it reuses the study's cached data and
translator stages, builds the source -> target generator from the last snapshot, from the mean weights of the last
3 and of the last 5 ``epoch_NNNN`` snapshots (the translator keeps 5 by default), translates the labelled source
training subjects, trains the run's segmenter on each SynCT the way the pipeline does (`train_segmenter`, the
run's seed and settings) and scores it on the labelled evaluation targets (3D Dice, the segmenter's inference
defaults). Results: one JSON line per (seed, variant) on stdout and in ``--out``.

Usage:
    python benchmarks/weight_averaging.py benchmarks/studies/prostate_3seeds.toml --run-dir runs/prostate_3seeds \
        [--seeds 0 1 2] [--out weight_averaging.jsonl]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from da_seg.metrics.segmentation import dice
from da_seg.segmentation import train_segmenter
from da_seg.study import load_study, study_run
from da_seg.translators import load_translator


def averaged_translator(snapshots: list[Path], device: torch.device):
    """The newest snapshot's translator with every saved network's weights replaced by their mean over snapshots."""
    loaded = [load_translator(p, device=device) for p in snapshots]
    translator = loaded[-1]
    for name in translator.saved:
        states = [t.networks[name].state_dict() for t in loaded]
        mean = {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) for k, v in states[-1].items()}
        translator.networks[name].load_state_dict(mean)
    return translator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--run-dir", type=Path, required=True, help="the finished study's run directory")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--out", type=Path, default=Path("weight_averaging.jsonl"))
    args = parser.parse_args()
    spec = load_study(args.study)
    for seed in args.seeds or spec.seeds:
        up, _ = study_run(spec, args.run_dir, seed)
        config = up.config
        snapshots = sorted((up.translator_dir / "work").glob("epoch_[0-9][0-9][0-9][0-9]"))
        seg = config.segmentation
        variants = {"last": snapshots[-1:], "mean_last3": snapshots[-3:], "mean_last5": snapshots[-5:]}
        for variant, chosen in variants.items():
            tic = time.perf_counter()
            translator = averaged_translator(chosen, up.device)
            synct = [(translator.translate(c.image).astype(np.float32), c.mask) for c in up.dataset.source_train]
            model = train_segmenter(
                seg.model, synct, seg, workdir=args.run_dir / "weight_averaging" / f"s{seed}_{variant}",
                device=up.device, precision=config.runtime.precision, seed=config.seed, classes=up.task.classes,
                domain=up.dataset.target_domain, progress=False, channels_last=config.runtime.layout("segmenter"),
            )  # fmt: skip
            scores = [dice(model.segment(c.image) > 0, c.mask > 0) for c in up.dataset.evaluation]
            row = {
                "seed": seed,
                "variant": variant,
                "snapshots": [p.name for p in chosen],
                "ct_dice_mean": float(np.mean(scores)),
                "ct_dice": [round(float(s), 4) for s in scores],
                "seconds": round(time.perf_counter() - tic, 1),
            }
            print(json.dumps(row), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
