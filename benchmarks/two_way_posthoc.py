"""Experiment: segment the real CT in both directions and average.

Why: the CycleGAN trains a CT -> MR generator too, and the run already has a segmenter trained on the real MR and
its expert masks (the ``no_adaptation`` baseline). Translating each real CT to synthetic MR (SynMR) and segmenting it
with that segmenter is a second, partly independent view of the same CT (the "two-way" idea is ours to try here);
averaging its probabilities with the SynCT segmenter's may cancel errors either view makes alone.

Post hoc on a finished run or study (every model comes from the cached stages through `train_methods`): for each
seed, the labelled evaluation CTs are scored (mean Dice over structures, prepared grid, the SynCT model's
threshold and component rule) by ``synct`` (the paper's method), ``synmr`` (CT -> SynMR -> MR segmenter),
``synct+synmr`` (mean probability, what the ``two_way`` baseline does), ``sqrt(synct*synmr)`` (geometric mean), and
the same with ``self_training`` when the run has it. With ``--teacher`` it also trains, the pipeline's way, a
self-training student on the SynCT plus the CT pseudo-labels of ``synct+synmr`` (``st_two_way``, and
``st_two_way+synmr``).
Results: one JSON line per (seed, variant, case) in ``--out``; means on stdout.

Usage:
    python benchmarks/two_way_posthoc.py examples/prostate_mr2ct_best.toml [--run-dir runs/prostate_mr2ct]
    python benchmarks/two_way_posthoc.py benchmarks/studies/prostate_3seeds_two_way.toml --study \
        --run-dir runs/prostate_3seeds [--seeds 0 1 2] [--out two_way.jsonl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from da_seg.config import load_config
from da_seg.metrics.segmentation import dice
from da_seg.pipeline import Stages, prepare_upstream, train_methods
from da_seg.pipeline.methods import fit_segmenter
from da_seg.segmentation import probabilities_to_labels
from da_seg.slices import stack_25d
from da_seg.study import load_study, study_run


def to_source(translator, volume: np.ndarray, batch: int = 8) -> np.ndarray:
    """A target volume through the translator's inverse generator (``g_ba``): ``(z, H, W)`` -> ``(z, H, W)``."""
    c = translator.context
    stacks = torch.as_tensor(stack_25d(volume.astype(np.float32), c))
    out = [translator.translate_slices(stacks[i : i + batch], "ba")[:, c].cpu() for i in range(0, len(stacks), batch)]
    return torch.cat(out).numpy()


def mean_dice(labels: np.ndarray, mask: np.ndarray) -> float:
    present = [k for k in np.unique(mask) if k > 0]
    return float(np.mean([dice(labels == k, mask == k) for k in present]))


def score_seed(up, tag: str, seed: int, out, teacher: Path | None) -> None:
    config = up.config
    models = {m.name.split("@")[0]: m.model for m in train_methods(up, tag=tag)}
    synct = models["synct"]
    rule = synct.defaults.get("component_rule", "largest")
    threshold = synct.defaults.get("threshold", 0.5)
    softmax = synct.multiclass == "softmax"

    def two_way_labels(image: np.ndarray) -> np.ndarray:
        prob = (synct.predict(image) + models["no_adaptation"].predict(to_source(up.translator, image))) / 2
        return probabilities_to_labels(prob, threshold, True, softmax, rule)

    if teacher is not None:
        pseudo = [(c.image, two_way_labels(c.image)) for c in up.dataset.target]
        cases = [(c.image, c.mask) for c in up.synct_train] + pseudo
        models["st_two_way"] = fit_segmenter(up, config.segmentation, cases, teacher / f"s{seed}", progress=False)
    scores: dict[str, list[float]] = {}
    for case in up.dataset.evaluation:
        p = {
            "synct": synct.predict(case.image),
            "synmr": models["no_adaptation"].predict(to_source(up.translator, case.image)),
        }
        p["synct+synmr"] = (p["synct"] + p["synmr"]) / 2
        p["sqrt(synct*synmr)"] = np.sqrt(p["synct"] * p["synmr"])  # both views must agree
        if "self_training" in models:
            p["self_training"] = models["self_training"].predict(case.image)
            p["self_training+synmr"] = (p["self_training"] + p["synmr"]) / 2
        if "st_two_way" in models:
            p["st_two_way"] = models["st_two_way"].predict(case.image)
            p["st_two_way+synmr"] = (p["st_two_way"] + p["synmr"]) / 2
        for name, prob in p.items():
            labels = probabilities_to_labels(prob, threshold, True, softmax, rule)
            score = mean_dice(labels, case.mask)
            scores.setdefault(name, []).append(score)
            out.write(json.dumps({"seed": seed, "variant": name, "case": case.id, "dice": score}) + "\n")
    for name, values in scores.items():
        print(seed, name, f"{np.mean(values):.4f}", "zeros", sum(v == 0 for v in values), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a run config, or a study file with --study")
    parser.add_argument("--study", action="store_true")
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("two_way.jsonl"))
    parser.add_argument("--teacher", type=Path, help="train st_two_way students in this folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with args.out.open("w") as out:
        if not args.study:
            config = load_config(args.config)
            stages = Stages(args.run_dir or config.output / config.run_name, resume=True)
            score_seed(prepare_upstream(config, stages), "", config.seed, out, args.teacher)
            return
        spec = load_study(args.config)
        for seed in args.seeds:
            up, tag = study_run(spec, args.run_dir, seed)
            score_seed(up, tag, seed, out, args.teacher)


if __name__ == "__main__":
    main()
