"""Experiment: what each self-training round changes on the real CT (post hoc, on a finished study).

Why: with three members and BCE + Dice, a second and third round raised the prostate CT Dice a little each
(benchmarks/RESULTS.md, "More self-training rounds"). This shows where: for one seed, the SynCT segmenter (round 0,
the first teacher) and each round's student on the labelled evaluation CTs, per case Dice and predicted / true
volume, and a figure of the cases at their widest organ slice (truth green, prediction red).

One study file per number of rounds (1, 2, ...), all read from one run directory that holds every round's stage (a
round's stage key does not depend on how many rounds follow, so the three-round study's directory serves all).

Usage:
    python benchmarks/self_training_rounds.py benchmarks/studies/prostate_3seeds_members_bce_dice{,_r2,_r3}.toml \
        --run-dir runs/prostate_3seeds_members_dice_r3 --seed 1 --figure docs/img/self_training_rounds_s1.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from da_seg.metrics.segmentation import dice
from da_seg.pipeline import train_methods
from da_seg.study import load_study, study_run


def round_models(studies: list[str], run_dir: Path, seed: int) -> tuple[object, dict[str, object]]:
    """The evaluation cases and {"SynCT (teacher)": model, "round 1": model, ...} from the studies' cached stages."""
    models: dict[str, object] = {}
    for rounds, study in enumerate(studies, start=1):
        up, tag = study_run(load_study(study), run_dir, seed)
        methods = {m.name.split("@")[0]: m.model for m in train_methods(up, tag=tag)}
        models.setdefault("SynCT (teacher)", methods["synct"])
        models[f"round {rounds}"] = methods["self_training"]
    return up.dataset.evaluation, models


def figure(cases, labels: dict[str, list[np.ndarray]], scores: dict[str, list[float]], path: Path, n: int) -> None:
    """One row per case (the n the teacher did worst on), one column per model; CT window -150..150 HU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teacher = next(iter(scores.values()))
    rows = sorted(range(len(cases)), key=lambda i: teacher[i])[:n]
    fig, axes = plt.subplots(len(rows), len(labels), figsize=(2.3 * len(labels), 2.4 * len(rows)), squeeze=False)
    for r, i in enumerate(rows):
        z = int(np.argmax((cases[i].mask > 0).sum((1, 2))))
        for c, name in enumerate(labels):
            ax = axes[r, c]
            ax.imshow(cases[i].image[z], cmap="gray", vmin=-0.3, vmax=0.3)
            ax.contour(cases[i].mask[z] == 1, colors="lime", linewidths=0.7)
            if labels[name][i][z].any():
                ax.contour(labels[name][i][z] == 1, colors="r", linewidths=0.7)
            ax.set_title(f"{name}, {cases[i].id}: {scores[name][i]:.2f}", fontsize=7)
            ax.axis("off")
    fig.suptitle("CT prostate: truth (green), prediction (red); Dice of the whole volume", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", help="study files for 1, 2, ... rounds")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--cases", type=int, default=3, help="rows of the figure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases, models = round_models(args.studies, args.run_dir, args.seed)
    labels = {name: [m.segment(c.image) for c in cases] for name, m in models.items()}
    scores = {
        name: [float(dice(lab == 1, c.mask == 1)) for lab, c in zip(ls, cases, strict=True)]
        for name, ls in labels.items()
    }
    for name, ls in labels.items():
        volume = [float((lab == 1).sum() / max((c.mask == 1).sum(), 1)) for lab, c in zip(ls, cases, strict=True)]
        print(f"{name:16s} Dice {np.mean(scores[name]):.4f}  per case", " ".join(f"{s:.2f}" for s in scores[name]))
        print(f"{'':16s} predicted / true volume", " ".join(f"{v:.2f}" for v in volume))
    if args.figure:
        figure(cases, labels, scores, args.figure, args.cases)


if __name__ == "__main__":
    main()
