"""Scoring the trained methods on the real target images, SynCT fidelity, and the report's statistics and panels."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from da_seg.data import PreparedCase
from da_seg.metrics.segmentation import evaluate_case
from da_seg.registry import METRICS
from da_seg.segmentation import TrainedSegmenter
from da_seg.stats import write_csv
from da_seg.task import Task
from da_seg.training import read_json, write_json
from da_seg.volume import read_volume, resample_to, write_volume

if TYPE_CHECKING:  # run.py imports this module
    from da_seg.pipeline.dataset import Dataset
    from da_seg.pipeline.run import Method, Upstream


def statistics_sections(rows: list[dict[str, Any]], task: Task, folder: Path) -> list[tuple[str, str, str]]:
    """Bootstrap CIs and Holm-adjusted paired tests between methods on the real target images (also as CSV)."""
    from da_seg.stats import compare_methods, comparison_section

    target_rows = [r for r in rows if r["test"] == task.target_modality]
    if len({r["method"] for r in target_rows}) < 2:
        return []
    comparison = compare_methods(target_rows, "dice", test=task.target_modality)
    write_csv(folder / "stats_summary.csv", comparison["summary"])
    write_csv(folder / "stats_pairwise.csv", comparison["pairwise"])
    return [comparison_section(comparison)]


def _segment(seg: Any, model: TrainedSegmenter, image: np.ndarray) -> np.ndarray:
    return model.segment(image, threshold=seg.threshold, largest_component=seg.largest_component, tta_flip=seg.tta_flip)


def evaluate_methods(up: Upstream, methods: list[Method], folder: Path) -> list[dict[str, Any]]:
    """Per-case metrics: every method on the real target images (original grid, masks written as NIfTI), plus the
    in-domain rows of the paper's Table 1 (SynCT-trained on SynCT test subjects, source-trained on source ones)."""
    task, dataset, seg = up.task, up.dataset, up.config.segmentation
    rows: list[dict[str, Any]] = []
    for method in methods:
        out = folder / "predictions" / method.name
        for case in dataset.evaluation:
            start = time.perf_counter()
            pred = _segment(seg, method.model, case.image)
            mask = dataset.target_domain.restore(pred, case, mask=True)
            seconds = time.perf_counter() - start
            write_volume(mask, out / f"{case.id}.nii.gz", mask=True)
            reference = read_volume(dataset.evaluation_labels[case.id])
            scores = evaluate_case(mask.array, reference.array, reference.spacing_zyx, labels=label_map(task))
            rows.append(
                {
                    "method": method.name,
                    "train": method.train_on,
                    "test": task.target_modality,
                    "case": case.id,
                    **scores,
                    "seconds": seconds,
                }
            )
    in_domain = {"synct": (up.synct_test, "SynCT"), "no_adaptation": (dataset.source_test, task.source_modality)}
    for method in methods:
        base = method.name.split("@")[0]
        if base not in in_domain:
            continue
        cases, test_name = in_domain[base]
        for case in cases:
            pred = _segment(seg, method.model, case.image)
            scores = evaluate_case(pred, case.mask, dataset.source_domain.spacing_zyx, labels=label_map(task))
            rows.append({"method": method.name, "train": method.train_on, "test": test_name, "case": case.id, **scores})
    return rows


def label_map(task: Task) -> dict[int, str]:
    """Mask value -> structure name (value ``i + 1`` is ``task.labels[i]``)."""
    return {i + 1: name for i, name in enumerate(task.labels)}


def write_metrics(folder: Path, rows: list[dict[str, Any]]) -> None:
    write_json(folder / "metrics.json", rows)
    write_csv(folder / "metrics.csv", rows)


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
            # compare on the source grid: the true target image usually covers a larger field of view
            synct = read_volume(up.synct_dir / f"{case.id}.nii.gz")
            truth = resample_to(read_volume(dataset.paired_target[case.id]), synct)
            # only where a SynCT was synthesised: the common grid's in-plane crop of the source image
            inside = dataset.target_domain.restore(np.ones(case.image.shape, np.uint8), case, mask=True).array > 0
            body = (truth.array > -400) & inside
            row = {"case": case.id}
            for name in ("mae_hu", "mean_error_hu", "psnr", "ssim"):
                row[name] = float(METRICS.get(name)(synct.array, truth.array, mask=body))
            rows.append(row)
        write_json(folder / "fidelity.json", rows)

    folder = up.stages.run("fidelity", up.synct_key, work)
    return read_json(folder / "fidelity.json")


def report_examples(dataset: Dataset, synct_test: list[PreparedCase], methods: list[Method]) -> dict[str, Any]:
    """Arrays for Fig. 2 style panels: a source slice, its SynCT, and a real target slice with contours."""
    out: dict[str, Any] = {}
    if synct_test:
        case = dataset.source_test[0]
        z = int(np.argmax(case.mask.reshape(case.mask.shape[0], -1).sum(1)))
        out["source"] = (case.image[z], synct_test[0].image[z], case.mask[z])
    if dataset.evaluation:
        case = dataset.evaluation[0]
        z = int(np.argmax(case.mask.reshape(case.mask.shape[0], -1).sum(1)))
        preds = {m.name: m.model.segment(case.image[max(0, z - 3) : z + 4])[min(z, 3)] for m in methods}
        out["target"] = (case.image[z], case.mask[z], preds)
    return out
