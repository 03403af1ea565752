"""How a run's SynCT draws the labelled structure: contrast to its surroundings and texture inside, against the true
CT of the same phantom subject (post hoc on finished run or study folders).

Why: the translators that gave the most faithful SynCT in HU (no random-ratio crop, the window's bone tail) gave
segmenters that did worse on real CT (benchmarks/RESULTS.md). This asks what differs inside the prostate: per SynCT
folder, the mean over the paired subjects of (structure mean - mean of a 3-pixel in-plane shell around it, inside the
body), the standard deviation inside the structure, and the MAE inside the structure, in the shell and in the body,
for the SynCT and the true CT. Uses the fidelity stage's voxels (`fidelity_pair`) and the MR labels on the SynCT's
grid.

Usage:
    python benchmarks/synct_structure_texture.py runs/prostate_3seeds_best_crop05 runs/prostate_3seeds_best_tail_nocrop
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage
from synct_error_bands import run_dataset  # the same run data as the error-band benchmark

from da_seg.pipeline.dataset import Dataset
from da_seg.pipeline.evaluation import fidelity_pair

IN_PLANE = np.ones((1, 3, 3), bool)  # dilate within each axial slice


def scores(dataset: Dataset, synct_dir: Path) -> np.ndarray:
    """Per subject: contrast (SynCT, true), sd inside (SynCT, true), MAE inside, in the shell, in the body."""
    rows = []
    for case in dataset.source_train + dataset.source_test:
        if case.id not in dataset.paired_target or case.mask is None:
            continue
        synct, truth, body = fidelity_pair(dataset, synct_dir, case)
        inside = dataset.target_domain.restore(case.mask.astype(np.uint8), case, mask=True).array > 0
        shell = ndimage.binary_dilation(inside, IN_PLANE, iterations=3) & ~inside & body
        rows.append(
            [
                synct[inside].mean() - synct[shell].mean(),
                truth[inside].mean() - truth[shell].mean(),
                synct[inside].std(),
                truth[inside].std(),
                np.abs(synct[inside] - truth[inside]).mean(),
                np.abs(synct[shell] - truth[shell]).mean(),
                np.abs(synct[body] - truth[body]).mean(),
            ]
        )
    return np.asarray(rows, np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders (synct/) or study folders (synct-*/)")
    args = parser.parse_args()
    print("SynCT folder | MAE body | contrast SynCT / true | sd inside SynCT / true | MAE inside / shell (HU)")
    for run in args.runs:
        dataset = run_dataset(run)  # once per run: a study's SynCT folders share its data
        for synct_dir in sorted(d for d in run.glob("synct*") if d.is_dir()):
            r = scores(dataset, synct_dir).mean(axis=0)
            print(
                f"{run.name}/{synct_dir.name} | {r[6]:.1f} | {r[0]:+.1f} / {r[1]:+.1f} | {r[2]:.1f} / {r[3]:.1f} | "
                f"{r[4]:.1f} / {r[5]:.1f}"
            )


if __name__ == "__main__":
    main()
