"""Experiment: the threshold a finished study's segmenters would get from `segmentation.calibrate` (post hoc).

Why: on the prostate phantom the SynCT segmenters predicted 0.66-1.34 of the MR labels' mean prostate volume on the
unlabelled CT at threshold 0.5, the oracle 1.02-1.08. This screen took each model of a finished study (its cached
stages, through `train_methods`), chose the threshold with `match_source_volume` on the unlabelled CTs, and scored
both thresholds on the labelled evaluation CTs, before `segmentation.calibrate` was built into the pipeline (where
the self-training teacher's pseudo-labels are calibrated too, which this screen cannot show).

Results: one JSON line per (seed, method) with the per-case Dice at 0.5 and at the calibrated threshold in ``--out``;
means on stdout.

Usage:
    python benchmarks/calibration_posthoc.py benchmarks/studies/prostate_6seeds_members_bce_dice_r2.toml \
        --run-dir runs/prostate_6seeds_members_dice_r2 --seeds 0 1 2 3 4 5 --out calibration.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from da_seg.metrics.segmentation import dice
from da_seg.pipeline import train_methods
from da_seg.segmentation import match_source_volume, mean_volumes
from da_seg.study import load_study, study_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--methods", nargs="+", default=["synct", "self_training", "oracle"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for seed in args.seeds:
        up, tag = study_run(load_study(args.study), args.run_dir, seed)
        models = {m.name.split("@")[0]: m.model for m in train_methods(up, tag=tag)}
        source = [c.mask for c in up.dataset.source_train + up.dataset.source_test]
        wanted = mean_volumes(source, up.task.classes)
        for name in args.methods:
            model = models[name]
            calibration = match_source_volume(model, [c.image for c in up.dataset.target], wanted)
            row = {"seed": seed, "method": name, **calibration.__dict__}
            for column, threshold in (("dice_at_half", 0.5), ("dice_calibrated", calibration.threshold)):
                cases = up.dataset.evaluation
                row[column] = [dice(model.segment(c.image, threshold=threshold) == 1, c.mask == 1) for c in cases]
            print(
                f"seed {seed} {name}: threshold {calibration.threshold}, target/source volume at 0.5 "
                f"{calibration.target_volumes_at_half[0] / wanted[0]:.2f}, Dice {np.mean(row['dice_at_half']):.3f} "
                f"-> {np.mean(row['dice_calibrated']):.3f}",
                flush=True,
            )
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
