"""Where a run's SynCT error sits: its MAE split by the true CT's HU band (post hoc on finished run folders).

Why: the pipeline reports one MAE per subject (`da_seg.pipeline.evaluation.synct_fidelity`). To know which lever
could lower it, one needs to know which tissue carries it: fat and muscle (where the phantom's scanner noise sets a
floor), or bone, part of which the CT window (-500..500 HU) cuts off whatever the translator does. This reads a run's
`synct/*.nii.gz`, takes the fidelity stage's own voxels (`fidelity_pair`: the true CT resampled to the SynCT's grid,
inside the body and the common grid's crop) and prints, per band: the share of voxels, the band's MAE and signed
error, and its contribution to the overall MAE (they add up to it). ``--window-floor`` adds the contribution the
window alone costs: the true CT clipped to the window against itself.

Usage:
    python benchmarks/synct_error_bands.py runs/scr_ref runs/scr_crop10 [--window-floor]

Needs runs with the phantom's paired mode (the examples' default); results in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from da_seg.api import get_task
from da_seg.config import Config
from da_seg.pipeline.dataset import Dataset, prepare_dataset, resolve_data
from da_seg.pipeline.evaluation import fidelity_pair

BANDS = [(-400, -150), (-150, -30), (-30, 30), (30, 100), (100, 250), (250, 500), (500, None)]


def run_dataset(run: Path) -> Dataset:
    """A finished run's prepared data, rebuilt from its config.json (from the run's cache when it has one)."""
    config = Config.model_validate(json.loads((run / "config.json").read_text()))
    task = get_task(config)
    return prepare_dataset(config, task, resolve_data(config, task), config.data.cache or run / "cache")


def voxels(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(SynCT, true CT) in HU at the voxels the fidelity stage averages over, all subjects together."""
    dataset = run_dataset(run)
    synct, truth = [], []
    for case in dataset.source_train + dataset.source_test:
        if case.id in dataset.paired_target:
            s, t, body = fidelity_pair(dataset, run / "synct", case)
            synct.append(s[body])
            truth.append(t[body])
    return np.concatenate(synct).astype(np.float64), np.concatenate(truth).astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished run folders (with synct/ and config.json)")
    parser.add_argument("--window-floor", action="store_true", help="also the true CT clipped to -500..500 HU")
    args = parser.parse_args()
    for run in args.runs:
        synct, truth = voxels(run)
        error = synct - truth
        print(f"{run}: MAE {np.abs(error).mean():.1f} HU, mean error {error.mean():+.1f} HU, {error.size} voxels")
        print("  true HU band   | voxels | MAE    | error  | adds to MAE | SynCT median")
        for low, high in BANDS:
            band = (truth >= low) & (truth < (np.inf if high is None else high))
            if not band.any():
                continue
            contribution = np.abs(error[band]).sum() / error.size
            name = f"{low}..{high}" if high is not None else f">= {low}"
            print(
                f"  {name:<14} | {band.mean():6.3f} | {np.abs(error[band]).mean():6.1f} | {error[band].mean():+6.1f} "
                f"| {contribution:11.1f} | {np.median(synct[band]):7.1f}"
            )
        if args.window_floor:
            clipped = np.abs(np.clip(truth, -500, 500) - truth).mean()
            print(f"  the window alone (true CT clipped to -500..500): {clipped:.1f} HU")


if __name__ == "__main__":
    main()
