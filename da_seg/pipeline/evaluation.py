"""Scoring the trained methods on the labelled target images, SynCT fidelity, and the report's statistics and panels."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from da_seg.data import PreparedCase
from da_seg.files import read_json, write_json
from da_seg.geometry import resample_to
from da_seg.metrics.segmentation import evaluate_case
from da_seg.pipeline.stages import fingerprint
from da_seg.pipeline.upstream import SYNCT_TEST
from da_seg.registry import METRICS
from da_seg.tables import write_csv
from da_seg.task import Task
from da_seg.volume import read_volume, write_volume

if TYPE_CHECKING:
    from da_seg.pipeline.dataset import Dataset
    from da_seg.pipeline.upstream import Method, Upstream


def statistics_sections(rows: list[dict[str, Any]], task: Task, folder: Path) -> list[tuple[str, str, str]]:
    """Bootstrap CIs and Holm-adjusted paired tests between methods on the labelled target images (also as CSV)."""
    from da_seg.stats import compare_methods, comparison_section

    target_rows = [r for r in rows if r["test"] == task.target_modality]
    if len({r["method"] for r in target_rows}) < 2:
        return []
    comparison = compare_methods(target_rows, "dice", test=task.target_modality)
    write_csv(folder / "stats_summary.csv", comparison["summary"])
    write_csv(folder / "stats_pairwise.csv", comparison["pairwise"])
    return [comparison_section(comparison)]


def predict_targets(up: Upstream, methods: list[Method], folder: Path, cases: list[PreparedCase]) -> list[dict]:
    """Segment ``cases`` (target-domain images) with every method and write each mask as NIfTI on its image's
    original grid: ``folder/<method>/<case>.nii.gz``. The model's saved defaults (threshold, post-processing) apply,
    exactly as in `da_seg.segmentation.predict_file`, so ``daseg predict`` on the same file writes the same mask.

    Returns one row per mask (``method``, ``case``, ``image``, ``mask`` paths relative to ``folder``, ``seconds``),
    also written to ``folder/index.json`` and ``index.csv``.
    """
    domain, files = up.dataset.target_domain, up.dataset.ct_files
    rows: list[dict[str, Any]] = []
    for method in methods:
        for case in cases:
            start = time.perf_counter()
            mask = domain.restore(method.model.segment(case.image), case, mask=True)
            seconds = time.perf_counter() - start
            out = write_volume(mask, folder / method.name / f"{case.id}.nii.gz", mask=True)
            image = files.get(case.id)
            rows.append(
                {
                    "method": method.name,
                    "case": case.id,
                    "image": str(image) if image else "",
                    "mask": str(out.relative_to(folder)),
                    "seconds": seconds,
                }
            )
    write_json(folder / "index.json", rows)
    write_csv(folder / "index.csv", rows)
    return rows


def evaluate_methods(
    up: Upstream, methods: list[Method], folder: Path, predictions: Path | None = None
) -> list[dict[str, Any]]:
    """Per-case metrics: every method on the labelled target images, scored from the masks written on their
    original grids, plus the in-domain rows of the paper's Table 1 (SynCT-trained on held-out SynCT subjects,
    source-trained on held-out source ones; out-of-fold with cross-validation).

    ``predictions`` is a folder `predict_targets` filled for the evaluation cases; without it they are segmented
    into ``folder/predictions``.
    """
    task, dataset = up.task, up.dataset
    if predictions is None:
        predictions = folder / "predictions"
        index = predict_targets(up, methods, predictions, dataset.evaluation)
    else:
        index = read_json(predictions / "index.json")
    seconds = {(r["method"], r["case"]): r["seconds"] for r in index}
    rows: list[dict[str, Any]] = []
    for method in methods:
        for case in dataset.evaluation:
            mask = read_volume(predictions / method.name / f"{case.id}.nii.gz")
            reference = read_volume(dataset.evaluation_labels[case.id])
            scores = evaluate_case(mask.array, reference.array, reference.spacing_zyx, labels=label_map(task))
            rows.append(
                {
                    "method": method.name,
                    "train": method.train_on,
                    "test": task.target_modality,
                    "case": case.id,
                    **scores,
                    "seconds": seconds[(method.name, case.id)],
                }
            )
    for method in methods:
        for fold, (model, cases) in enumerate(method.tests):
            for case in cases:
                scores = evaluate_case(
                    model.segment(case.image), case.mask, dataset.source_domain.spacing_zyx, labels=label_map(task)
                )
                row = {"method": method.name, "train": method.train_on, "test": method.test_on, "case": case.id}
                rows.append(row | ({"fold": fold} if len(method.tests) > 1 else {}) | scores)
    return rows


def folds_section(methods: list[Method]) -> list[tuple[str, str, str]]:
    """Per-fold facts of cross-validated methods: subjects used to train, to choose the checkpoint and to test, and
    the Dice on the latter two (pooled out-of-fold metrics are in Table 1)."""
    from da_seg.tables import to_html, to_markdown

    rows = [
        {
            "method": m.name,
            "fold": f["fold"],
            "train": len(f["train"]),
            "validation": len(f["validation"]),
            "test": len(f["test"]),
            "validation Dice": f["validation_dice"],
            "test Dice": f["test_dice"],
        }
        for m in methods
        for f in m.model.info.get("folds", [])
    ]
    if not rows:
        return []
    note = (
        "Each fold chose its checkpoint on validation subjects drawn from its own training subjects and was then "
        "scored once on its test subjects; the target images are segmented by the mean probability of the folds' "
        "models. Dice here: threshold 0.5, no post-processing."
    )
    return [("Cross-validation folds", note + "\n\n" + to_markdown(rows), f"<p>{note}</p>" + to_html(rows))]


def calibration_section(methods: list[Method], task: Task, voxel_ml: float) -> list[tuple[str, str, str]]:
    """Each calibrated method's thresholds and the volumes behind them (`segmentation.calibrate`), in mL."""
    from da_seg.tables import to_html, to_markdown

    names = list(label_map(task).values())
    rows = [
        {
            "method": m.name,
            "structure": name,
            "threshold": float(np.ravel(c["threshold"])[k]),
            "source labels (mL)": c["source_volumes"][k] * voxel_ml,
            "target at 0.5 (mL)": c["target_volumes_at_half"][k] * voxel_ml,
            "target calibrated (mL)": c["target_volumes"][k] * voxel_ml,
        }
        for m in methods
        if (c := m.model.info.get("calibration"))
        for k, name in enumerate(names)
    ]
    if not rows:
        return []
    note = (
        "segmentation.calibrate = 'source_volume' (ours): each method's threshold was set where its mean predicted "
        "volume over the unlabelled target images meets the labelled source's mean volume (means over images)."
    )
    return [("Threshold calibration", note + "\n\n" + to_markdown(rows), f"<p>{note}</p>" + to_html(rows))]


def paper_test_section(rows: list[dict[str, Any]], task: Task) -> list[tuple[str, str, str]]:
    """The paper's one statistical claim, checked on this run: the SynCT-trained segmenter's Dice on held-out SynCT
    and on real target images do not differ (the paper: p > 0.05). Two independent sets of cases, so a two-sided
    Mann-Whitney U test (our choice of test; the paper does not name its own)."""
    from da_seg.stats import mann_whitney
    from da_seg.tables import mean_sd

    synct = [r["dice"] for r in rows if r["method"] == "synct" and r["test"] == SYNCT_TEST]
    real = [r["dice"] for r in rows if r["method"] == "synct" and r["test"] == task.target_modality]
    if len(synct) < 2 or len(real) < 2:
        return []
    test = mann_whitney(synct, real)
    verdict = "no significant difference (p > 0.05)" if test.p_value > 0.05 else "a significant difference (p <= 0.05)"
    text = (
        f"The paper reports that its SynCT-trained 2.5D Res-U-Net reached Dice values on the SynCT and the real CT "
        f"test sets with no statistical difference (p > 0.05). This run, segmenter `synct`: Dice on held-out "
        f"{SYNCT_TEST} {mean_sd(synct)} (n = {len(synct)}) vs the evaluation {task.target_modality} "
        f"{mean_sd(real)} (n = {len(real)}); two-sided Mann-Whitney U = {test.statistic:.1f}, "
        f"p = {test.p_value:.3g}, rank-biserial r = {test.effect_size:+.2f}: {verdict}."
    )
    title = f"The paper's test: Dice on {SYNCT_TEST} vs on {task.target_modality}"
    return [(title, text, f"<p>{html.escape(text)}</p>")]


def label_map(task: Task) -> dict[int, str]:
    """Mask value -> structure name (value ``i + 1`` is ``task.labels[i]``)."""
    return {i + 1: name for i, name in enumerate(task.labels)}


def write_metrics(folder: Path, rows: list[dict[str, Any]]) -> None:
    write_json(folder / "metrics.json", rows)
    write_csv(folder / "metrics.csv", rows)


def fidelity_pair(dataset: Dataset, synct_dir: Path, case: PreparedCase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A paired subject's SynCT and true target image in target units on the SynCT's grid, and the voxels fidelity
    is scored on (inside the body and the common grid's crop)."""
    # compare on the source grid: the true target image usually covers a larger field of view
    synct = read_volume(synct_dir / f"{case.id}.nii.gz")
    truth = resample_to(read_volume(dataset.paired_target[case.id]), synct)
    # only where a SynCT was synthesised: the common grid's in-plane crop of the source image
    inside = dataset.target_domain.restore(np.ones(case.image.shape, np.uint8), case, mask=True).array > 0
    return synct.array, truth.array, (truth.array > -400) & inside


def synct_fidelity(up: Upstream) -> list[dict[str, Any]]:
    """SynCT vs the true target image of the same subject (paired phantoms), in target units, inside the body."""
    dataset = up.dataset
    if not dataset.paired_target:
        return []

    def work(folder: Path) -> None:
        rows = []
        for case in dataset.source_train + dataset.source_test:
            if case.id not in dataset.paired_target:
                continue
            synct, truth, body = fidelity_pair(dataset, up.synct_dir, case)
            row = {"case": case.id}
            for name in ("mae_hu", "mean_error_hu", "psnr", "ssim"):
                row[name] = float(METRICS.get(name)(synct, truth, mask=body))
            rows.append(row)
        write_json(folder / "fidelity.json", rows)

    folder = up.stages.run("fidelity", fingerprint(up.synct_key, dataset.stamp("paired_target")), work)
    return read_json(folder / "fidelity.json")


def report_examples(dataset: Dataset, synct_test: list[PreparedCase], methods: list[Method]) -> dict[str, Any]:
    """Arrays for Fig. 2 style panels: a source slice, its SynCT, and a target slice with the predicted contours
    (and the reference, when the image is labelled: an evaluation image first, else the first image segmented)."""
    out: dict[str, Any] = {}
    if synct_test:
        case = dataset.source_test[0]
        z = int(np.argmax(case.mask.reshape(case.mask.shape[0], -1).sum(1)))
        out["source"] = (case.image[z], synct_test[0].image[z], case.mask[z])
    cases = dataset.evaluation or dataset.cases_to_segment()
    if cases and methods:
        case = cases[0]
        preds = {m.name: m.model.segment(case.image) for m in methods}
        shown = case.mask if case.mask is not None else next(iter(preds.values()))
        z = int(np.argmax(shown.reshape(shown.shape[0], -1).sum(1)))
        truth = case.mask[z] if case.mask is not None else None
        out["target"] = (case.image[z], truth, {name: p[z] for name, p in preds.items()})
        out["target_case"] = case.id
    return out
