"""Experiment: does re-estimating a trained segmenter's batch-norm statistics on the unlabelled CT (AdaBN) help?

Why: a segmenter trained on SynCT normalises every layer with SynCT statistics; real CT that differs in contrast
shifts them (Li et al. 2016, "Revisiting Batch Normalization For Practical Domain Adaptation"). This script measures
it post hoc on a finished `daseg study`: for each seed it takes each named method's trained segmenter from the
study's cached stages (through `train_methods`), and scores on the labelled evaluation targets (mean Dice over the
structures, on the prepared grid, the model's inference defaults) the segmenter as trained
(``plain``), adapted over unaugmented shuffled target batches (``adabn``) and adapted through the segmenter's
training augmentation (``adabn_aug``, what the ``adabn`` baseline does). With ``--teacher`` it also trains, the
pipeline's way, a self-training student on the SynCT plus the ``adabn_aug`` SynCT segmenter's CT pseudo-labels
(``st_adabn_teacher``). Results: one JSON line per (seed, method, variant, case) in ``--out``; means on stdout.

Usage:
    python benchmarks/adabn_posthoc.py benchmarks/studies/cardiac_3seeds_confident.toml --run-dir runs/cardiac_3seeds \
        [--methods synct self_training domain_randomisation oracle] [--seeds 0 1 2] [--teacher] [--out adabn.jsonl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from da_seg.augment import build_augmentation
from da_seg.metrics.segmentation import dice
from da_seg.pipeline import train_methods
from da_seg.pipeline.methods import fit_segmenter
from da_seg.segmentation import adapt_batch_norm
from da_seg.study import load_study, study_run


def mean_dice(model, cases) -> list[float]:
    """Per case: the mean Dice over the structures present in its reference mask."""
    scores = []
    for case in cases:
        labels = model.segment(case.image)
        present = [k for k in np.unique(case.mask) if k > 0]
        scores.append(float(np.mean([dice(labels == k, case.mask == k) for k in present])))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--methods", nargs="+", default=["synct", "self_training", "domain_randomisation", "oracle"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher", action="store_true", help="also self-train from the adapted SynCT segmenter")
    parser.add_argument("--out", type=Path, default=Path("adabn.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = load_study(args.study)
    with args.out.open("w") as out:
        for seed in args.seeds:
            up, tag = study_run(spec, args.run_dir, seed)
            config = up.config
            targets = [c.image for c in up.dataset.target]
            augment = build_augmentation(config.segmentation.augment)
            methods = train_methods(up, tag=tag)  # the study's trained models, from its stages
            trained = {m.name.split("@")[0]: m.model for m in methods}
            variants = {}
            for method in args.methods:
                model = trained[method]
                torch.manual_seed(seed)
                variants[method] = {
                    "plain": model,
                    "adabn": adapt_batch_norm(model, targets, seed=seed),
                    "adabn_aug": adapt_batch_norm(model, targets, augment, seed=seed),
                }
            if args.teacher:
                teacher = variants["synct"]["adabn_aug"]
                pseudo = [(c.image, teacher.segment(c.image).astype(np.uint8)) for c in up.dataset.target]
                cases = [(c.image, c.mask) for c in up.synct_train] + pseudo
                workdir = args.out.parent / f"{args.out.stem}_student_s{seed}"
                variants["self_training"] = {
                    **variants.get("self_training", {}),
                    "st_adabn_teacher": fit_segmenter(up, config.segmentation, cases, workdir, progress=False),
                }
            for method, models in variants.items():
                for name, model in models.items():
                    scores = mean_dice(model, up.dataset.evaluation)
                    for case, score in zip(up.dataset.evaluation, scores, strict=True):
                        row = {"seed": seed, "method": method, "variant": name, "case": case.id, "dice": score}
                        out.write(json.dumps(row) + "\n")
                    zeros = sum(s == 0 for s in scores)
                    print(seed, method, name, f"{np.mean(scores):.4f}", "zeros", zeros, flush=True)


if __name__ == "__main__":
    main()
