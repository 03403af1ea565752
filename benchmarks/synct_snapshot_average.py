"""Does averaging a CycleGAN's last epoch snapshots make a more faithful SynCT? (post hoc on finished runs)

Why: the SynCT's error on the phantom is partly texture the generator invents and that changes from epoch to epoch
(benchmarks/RESULTS.md: the sd inside the prostate is 34-69 HU in the SynCT against 24 HU in the true CT). Averaging
the outputs of the generator's last k snapshots (``work/epoch_*`` in a translator stage folder, in [-1, 1] before
they are restored to HU) averages that texture away where it is not shared. This prints, per translator folder, the
SynCT MAE of each snapshot alone and of the mean of the last k snapshots, scored like the fidelity stage
(`fidelity_pair`: the true CT on the SynCT's grid, inside the body; mean over the paired subjects).

``--flip`` also averages each snapshot's output with that of the left-right mirrored input (the translators train
with left-right flips), mirrored back: the translators' ``tta_flip``. ``--weights`` averages the generators'
weights over the last k snapshots instead (one network, as cheap to run as one snapshot).

Usage:
    python benchmarks/synct_snapshot_average.py runs/prostate_3seeds_best_tail_nocrop [runs/...] [--flip] [--weights]

Needs runs with the phantom's paired mode (the examples' default); results in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from synct_error_bands import run_dataset  # the same run data as the error-band benchmark

from da_seg.data import PreparedCase
from da_seg.metrics.fidelity import mae_hu
from da_seg.pipeline.dataset import Dataset
from da_seg.pipeline.evaluation import fidelity_pair
from da_seg.translators import Translator, load_translator
from da_seg.volume import write_volume


def translate(translator: Translator, image: np.ndarray, flip: bool) -> np.ndarray:
    """The SynCT in [-1, 1]; with ``flip`` through the translator's own ``tta_flip`` (the mean with the translation
    of the left-right mirrored input, mirrored back), the path the pipeline takes."""
    translator.config["tta_flip"] = flip
    return translator.translate(image)


def weight_average(snapshots: list[Path]) -> Translator:
    """The newest snapshot with its generator's weights replaced by their mean over ``snapshots``."""
    models = [load_translator(s) for s in snapshots]
    states = [m.networks["g_ab"].state_dict() for m in models]
    mean = {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) for k, v in states[-1].items()}
    models[-1].networks["g_ab"].load_state_dict(mean)
    return models[-1]


def snapshot_maes(
    run: Path, translator_dir: Path, flip: bool, weights: bool
) -> tuple[list[str], list[float], list[float]]:
    """Snapshot names (oldest first), each one's MAE alone, and the MAE of the mean of the last k (k = 1..n)."""
    dataset = run_dataset(run)
    cases = [c for c in dataset.source_train + dataset.source_test if c.id in dataset.paired_target]
    snapshots = sorted(translator_dir.glob("work/epoch_*"))
    if weights:
        averages = [weight_average(snapshots[-k:]) for k in range(1, len(snapshots) + 1)]
        outputs = [[translate(t, c.image, flip) for c in cases] for t in averages]
        return [s.name for s in snapshots], [], [mae_of(dataset, cases, o) for o in outputs]
    outputs = [[translate(load_translator(s), c.image, flip) for c in cases] for s in snapshots]
    alone = [mae_of(dataset, cases, o) for o in outputs]
    averaged = []
    for k in range(1, len(outputs) + 1):
        mean = [np.mean(per_case, axis=0) for per_case in zip(*outputs[-k:], strict=True)]
        averaged.append(mae_of(dataset, cases, mean))
    return [s.name for s in snapshots], alone, averaged


def mae_of(dataset: Dataset, cases: list[PreparedCase], images: list[np.ndarray]) -> float:
    """The fidelity stage's MAE (mean over the subjects) of SynCT ``images`` in [-1, 1]."""
    with tempfile.TemporaryDirectory() as tmp:
        per_case = []
        for case, image in zip(cases, images, strict=True):
            write_volume(dataset.target_domain.restore(image, case, mask=False), Path(tmp) / f"{case.id}.nii.gz")
            synct, truth, body = fidelity_pair(dataset, Path(tmp), case)
            per_case.append(mae_hu(synct, truth, mask=body))
        return float(np.mean(per_case))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run or study folders (with translator*/work/epoch_*)")
    parser.add_argument("--flip", action="store_true", help="each snapshot's output averaged with the mirrored one")
    parser.add_argument("--weights", action="store_true", help="average the generators' weights, not their outputs")
    args = parser.parse_args()
    for run in args.runs:
        for translator_dir in sorted(d for d in run.glob("translator*") if (d / "work").is_dir()):
            names, alone, averaged = snapshot_maes(run, translator_dir, args.flip, args.weights)
            print(f"{translator_dir}: snapshots {', '.join(names)}")
            if alone:
                print("  alone, oldest first:      " + "  ".join(f"{m:5.1f}" for m in alone))
            what = "weights" if args.weights else "output"
            print(f"  mean {what} of the last k = 1..n: " + "  ".join(f"{m:5.1f}" for m in averaged))


if __name__ == "__main__":
    main()
