"""Experiment: why a segmenter trained on SynCT misses part of the real CT's organ, and what helps (post hoc).

Why: on the prostate phantom the SynCT segmenters predict 0.55-1.3 of the true CT volume per case (mostly less),
against 0.9-1.1 for the oracle. Three looks at a finished `daseg study` (its cached stages, through
`train_methods`), for each seed, on the labelled evaluation CTs (Dice of label 1, the model's threshold and
component rule):

``contrast``: the mean intensity inside each mask minus that in a 3-pixel ring around it (in-plane), and the
standard deviation inside, for the SynCT training cases, the real evaluation CTs and the MR (normalised units:
1.0 = 500 HU for CT); ``--figure`` draws a few of each.

``homogenise``: a segmenter trained on the SynCT plus a copy whose every structure is replaced by its mean
intensity + a random shift + noise (``homogenised``; ours to try: the real CT's organ is homogeneous where the
SynCT keeps the MR's zonal pattern), beside a control trained on the SynCT twice (``duplicated``: the same number
of updates).

``members``: ``--members K`` segmenters on the same SynCT, seeds ``seed * 1000 + i`` (member 0: the study's own
model), each alone and their running mean probability (``ens2`` ... ``ensK``).

``student``: the study's SynCT segmenter labels the unlabelled CT, and ``segmentation.members`` students train on
those pseudo-labelled CTs alone (``target_only``; ours to try: self-training's student also sees the SynCT, whose
organ keeps the MR's zonal pattern), beside the study's ``self_training`` (SynCT + pseudo-labelled CT).

Results: one JSON line per (seed, variant) with the per-case Dice in ``--out``; means on stdout.

Usage:
    python benchmarks/synct_gap_posthoc.py members benchmarks/studies/prostate_3seeds_two_way.toml \
        --run-dir runs/prostate_3seeds --seeds 0 --members 5 --out members.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from da_seg.metrics.segmentation import dice
from da_seg.pipeline import train_methods
from da_seg.pipeline.methods import fit_segmenter
from da_seg.segmentation import SegmenterEnsemble, probabilities_to_labels
from da_seg.study import load_study, study_run


def contrast(cases) -> tuple[float, float]:
    """Mean over cases of (mean inside - mean of the in-plane 3-pixel ring) and of the std inside the mask."""
    gaps, spreads = [], []
    for case in cases:
        inside = case.mask > 0
        ring = np.stack([ndimage.binary_dilation(s, iterations=3) for s in inside]) & ~inside
        gaps.append(case.image[inside].mean() - case.image[ring].mean())
        spreads.append(case.image[inside].std())
    return float(np.mean(gaps)), float(np.mean(spreads))


def figure(up, path: Path, n: int = 4) -> None:
    """SynCT, real CT and MR at each case's widest organ slice, mask contour in red (CT window -150..150 HU)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("SynCT", up.synct_train), ("real CT", up.dataset.evaluation), ("MR", up.dataset.source_train)]
    fig, axes = plt.subplots(len(rows), n, figsize=(2.4 * n, 2.5 * len(rows)))
    for r, (name, cases) in enumerate(rows):
        for j, case in enumerate(cases[:n]):
            z = int(np.argmax((case.mask > 0).sum((1, 2))))
            window = {} if name == "MR" else {"vmin": -0.3, "vmax": 0.3}
            axes[r, j].imshow(case.image[z], cmap="gray", **window)
            axes[r, j].contour(case.mask[z] > 0, colors="r", linewidths=0.6)
            axes[r, j].set_title(f"{name} {case.id}", fontsize=8)
            axes[r, j].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def homogenised(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, noise: float = 0.04) -> np.ndarray:
    """Every structure replaced by its mean + a shift in [-0.03, 0.03] + Gaussian noise (0.04 ~ 20 HU, the CT's)."""
    out = image.copy()
    for k in np.unique(mask[mask > 0]):
        inside = mask == k
        out[inside] = out[inside].mean() + rng.uniform(-0.03, 0.03) + rng.normal(0, noise, inside.sum())
    return out


def dice_per_case(probabilities: list[np.ndarray], cases, rule: str) -> list[float]:
    labels = [probabilities_to_labels(p, 0.5, True, False, rule) for p in probabilities]
    return [float(dice(lab == 1, c.mask == 1)) for lab, c in zip(labels, cases, strict=True)]


def run_seed(args, spec, seed: int, out) -> None:
    up, tag = study_run(spec, args.run_dir, seed)
    config = up.config
    if args.look == "contrast":
        for name, cases in [("SynCT", up.synct_train), ("CT", up.dataset.evaluation), ("MR", up.dataset.source_train)]:
            gap, spread = contrast(cases)
            print(seed, name, f"inside - ring {gap:+.4f}, std inside {spread:.4f}", flush=True)
            out.write(json.dumps({"seed": seed, "domain": name, "gap": gap, "std_inside": spread}) + "\n")
        if args.figure:
            figure(up, args.figure.with_name(f"{args.figure.stem}_s{seed}{args.figure.suffix}"))
        return
    methods = {m.name.split("@")[0]: m.model for m in train_methods(up, tag=tag)}
    synct = methods["synct"]
    rule = synct.defaults.get("component_rule", "largest")
    pairs = [(c.image, c.mask) for c in up.synct_train]
    work = args.out.parent / f"{args.out.stem}_s{seed}"
    if args.look == "homogenise":
        rng = np.random.default_rng(seed)
        models = {
            "homogenised": fit_segmenter(
                up, config.segmentation, pairs + [(homogenised(i, m, rng), m) for i, m in pairs], work / "h", False
            ),
            "duplicated": fit_segmenter(up, config.segmentation, pairs + pairs, work / "d", False),
        }
    elif args.look == "student":
        pseudo = [(c.image, synct.segment(c.image).astype(np.uint8)) for c in up.dataset.target]
        members = [
            fit_segmenter(up, config.segmentation, pseudo, work / f"t{i}", False, i)
            for i in range(config.segmentation.members)
        ]
        models = {"self_training": methods["self_training"], "synct": synct, "target_only": SegmenterEnsemble(members)}
    else:
        models = {"member0": synct}
        for i in range(1, args.members):  # seeds seed * 1000 + i: this screen ran before `segmentation.members`
            member = seed * 999 + i
            models[f"member{i}"] = fit_segmenter(up, config.segmentation, pairs, work / f"m{i}", False, member)
    probabilities = {name: [m.predict(c.image) for c in up.dataset.evaluation] for name, m in models.items()}
    if args.look == "members":
        stack = list(probabilities.values())
        for k in range(2, len(stack) + 1):
            probabilities[f"ens{k}"] = [np.mean(ps, 0) for ps in zip(*stack[:k], strict=True)]
    elif args.look == "homogenise":
        probabilities["study synct"] = [synct.predict(c.image) for c in up.dataset.evaluation]
    for name, probs in probabilities.items():
        scores = dice_per_case(probs, up.dataset.evaluation, rule)
        out.write(json.dumps({"seed": seed, "variant": name, "dice": scores}) + "\n")
        print(seed, name, f"{np.mean(scores):.4f}", "zeros", sum(s == 0 for s in scores), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("look", choices=["contrast", "homogenise", "members", "student"])
    parser.add_argument("study")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--figure", type=Path, help="contrast: also a PNG per seed (name gets _s<seed>)")
    parser.add_argument("--out", type=Path, default=Path("synct_gap.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = load_study(args.study)
    with args.out.open("w") as out:
        for seed in args.seeds:
            run_seed(args, spec, seed, out)


if __name__ == "__main__":
    main()
