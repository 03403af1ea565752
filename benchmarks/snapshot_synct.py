"""Experiment: train the SynCT segmenter on the SynCT of several generator snapshots instead of the last one.

Why: each snapshot of a CycleGAN's last epochs draws a somewhat different CT for the same MR (the adversarial game
does not settle); a segmenter that sees several of them cannot lean on one snapshot's rendering of the organ, which
real CT may not share (ours to try). Post hoc on a finished `daseg study`: for each seed the source training
subjects are translated by every kept snapshot (``translator work/epoch_*``), and a segmenter trains the pipeline's
way on all of them with ``segmentation.epochs`` divided by the number of snapshots (about the same number of
updates; ``--epochs`` sets them). Scored like `benchmarks/two_way_posthoc.py`: mean Dice over structures on the
labelled evaluation CTs, prepared grid, the study's inference defaults, against the study's own SynCT segmenter
(``last``).
Caveat: the validation split that picks the best epoch holds snapshots of subjects that also train.

Usage:
    python benchmarks/snapshot_synct.py benchmarks/studies/prostate_3seeds_two_way.toml --run-dir runs/prostate_3seeds
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from adabn_posthoc import mean_dice  # benchmarks/ is on sys.path when this runs as a script

from da_seg.pipeline import train_methods
from da_seg.pipeline.methods import fit_segmenter
from da_seg.study import load_study, study_run
from da_seg.translators import load_translator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("snapshot_synct"))
    parser.add_argument("--out", type=Path, default=Path("snapshot_synct.jsonl"))
    parser.add_argument("--epochs", type=int, help="segmenter epochs (default: the config's / the snapshots)")
    parser.add_argument("--last", type=int, default=0, help="use only the last N snapshots (0: all kept)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = load_study(args.study)
    with args.out.open("w") as out:
        for seed in args.seeds:
            up, tag = study_run(spec, args.run_dir, seed)
            config = up.config
            last = next(m.model for m in train_methods(up, baselines=False, tag=tag))
            snapshots = sorted((up.translator_dir / "work").glob("epoch_*"))[-args.last :]
            cases = []
            for snapshot in snapshots:
                translator = load_translator(snapshot)
                cases += [(translator.translate(c.image), c.mask) for c in up.dataset.source_train]
            epochs = args.epochs or max(1, config.segmentation.epochs // len(snapshots))
            seg = config.segmentation.model_copy(update={"epochs": epochs})
            model = fit_segmenter(up, seg, cases, args.work / f"s{seed}", progress=False)
            for name, m in (("last", last), (f"snapshots{len(snapshots)}_epochs{epochs}", model)):
                scores = mean_dice(m, up.dataset.evaluation)
                for case, score in zip(up.dataset.evaluation, scores, strict=True):
                    out.write(json.dumps({"seed": seed, "variant": name, "case": case.id, "dice": score}) + "\n")
                print(seed, name, f"{np.mean(scores):.4f}", "zeros", sum(s == 0 for s in scores), flush=True)


if __name__ == "__main__":
    main()
