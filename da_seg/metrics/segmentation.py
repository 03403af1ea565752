"""Segmentation metrics in millimetres: Dice, HD95, ASSD, Hausdorff, relative volume difference, centroid distance.

Every metric has the signature ``metric(prediction, reference, spacing_zyx) -> float`` on binary ``(z, y, x)``
masks (any non-zero voxel is foreground) and is registered in `METRICS`. Surface distances are measured between
the surface voxels of the two masks (voxels with a 6-connected background neighbour; the volume border counts as
background) with a Euclidean distance transform that uses the voxel spacing, so they are in mm on anisotropic grids.

Empty masks never give NaN or a crash. The documented values are:

============================  ======  ===============================  ===================================
case                          dice    hd95 / assd / hd / centroid      rvd
============================  ======  ===============================  ===================================
both empty                    1.0     0.0                              0.0
prediction empty only         0.0     diagonal of the volume in mm     -1.0
reference empty only          0.0     diagonal of the volume in mm     predicted voxels (reference := 1)
============================  ======  ===============================  ===================================

The "diagonal of the volume" is ``sqrt(sum((n_i * spacing_i)**2))``, the largest distance two points of the
image can have: the worst possible surface distance, so a missed structure is penalised, never silently dropped.

Example:
    >>> import numpy as np
    >>> a = np.zeros((4, 8, 8), np.uint8); a[1:3, 2:6, 2:6] = 1
    >>> dice(a, a, (2.0, 1.0, 1.0))
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from da_seg.hookspecs import hookimpl

Spacing = Sequence[float]


def _binary(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask) != 0


def _check(prediction: np.ndarray, reference: np.ndarray, spacing_zyx: Spacing) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = _binary(prediction), _binary(reference)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} shapes differ")
    if len(spacing_zyx) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing_zyx)} does not match a {pred.ndim}D mask")
    return pred, ref


def volume_diagonal(shape: Sequence[int], spacing_zyx: Spacing) -> float:
    """Length in mm of the diagonal of a grid of ``shape`` voxels: the value for a surface distance to nothing."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing_zyx, strict=True))))


def surface(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with at least one 6-connected background neighbour (volume border = background)."""
    mask = _binary(mask)
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)
    return mask & ~eroded


def surface_distances(
    prediction: np.ndarray, reference: np.ndarray, spacing_zyx: Spacing
) -> tuple[np.ndarray, np.ndarray] | None:
    """Distances in mm from each prediction surface voxel to the reference surface, and the other way round.

    Returns None when either mask is empty (the callers return their documented values).
    """
    pred, ref = _check(prediction, reference, spacing_zyx)
    if not pred.any() or not ref.any():
        return None
    sp, sr = surface(pred), surface(ref)
    to_ref = ndimage.distance_transform_edt(~sr, sampling=spacing_zyx)
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing_zyx)
    return to_ref[sp], to_pred[sr]


def _empty_distance(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Spacing) -> float:
    return 0.0 if not pred.any() and not ref.any() else volume_diagonal(pred.shape, spacing_zyx)


def dice(prediction: np.ndarray, reference: np.ndarray, spacing_zyx: Spacing = (1.0, 1.0, 1.0)) -> float:
    """3D Dice ``2|P∩R| / (|P| + |R|)``; 1.0 when both are empty, 0.0 when only one is (spacing is unused)."""
    pred, ref = _check(prediction, reference, spacing_zyx)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(pred, ref).sum() / total)


def hd95(prediction: np.ndarray, reference: np.ndarray, spacing_zyx: Spacing) -> float:
    """95th percentile of the symmetric surface distances in mm (both directions pooled, as in MedPy).

    Empty masks: 0.0 when both are empty, the volume diagonal in mm when one is.
    """
    d = surface_distances(prediction, reference, spacing_zyx)
    if d is None:
        return _empty_distance(_binary(prediction), _binary(reference), spacing_zyx)
    return float(np.percentile(np.concatenate(d), 95))


def hausdorff(prediction: np.ndarray, reference: np.ndarray, spacing_zyx: Spacing) -> float:
    """Hausdorff distance (the maximum surface distance, HD100) in mm; empty masks as `hd95`."""
    d = surface_distances(prediction, reference, spacing_zyx)
    if d is None:
        return _empty_distance(_binary(prediction), _binary(reference), spacing_zyx)
    return float(max(d[0].max(), d[1].max()))


def assd(prediction: np.ndarray, reference: np.ndarray, spacing_zyx: Spacing) -> float:
    """Average symmetric surface distance in mm: the mean of all surface distances of both directions.

    Empty masks: 0.0 when both are empty, the volume diagonal in mm when one is.
    """
    d = surface_distances(prediction, reference, spacing_zyx)
    if d is None:
        return _empty_distance(_binary(prediction), _binary(reference), spacing_zyx)
    return float(np.concatenate(d).mean())


def rvd(prediction: np.ndarray, reference: np.ndarray, spacing_zyx: Spacing = (1.0, 1.0, 1.0)) -> float:
    """Relative volume difference ``(|P| - |R|) / |R|`` (signed: > 0 over-segments).

    Empty masks: 0.0 when both are empty; with an empty reference the denominator is taken as one voxel, so the
    value is the number of predicted voxels (finite, and growing with the false-positive volume).
    """
    pred, ref = _check(prediction, reference, spacing_zyx)
    p, r = int(pred.sum()), int(ref.sum())
    if p == 0 and r == 0:
        return 0.0
    return float((p - r) / max(r, 1))


def centroid_distance(prediction: np.ndarray, reference: np.ndarray, spacing_zyx: Spacing) -> float:
    """Distance in mm between the two masks' centres of mass: whether a mask lies on the right organ at all (a mask
    on the bladder instead of the prostate is centimetres off, issue 41). Empty masks as `hd95`."""
    pred, ref = _check(prediction, reference, spacing_zyx)
    if not pred.any() or not ref.any():
        return _empty_distance(pred, ref, spacing_zyx)
    scale = np.asarray(spacing_zyx, dtype=float)
    offset = np.mean(np.nonzero(pred), axis=1) * scale - np.mean(np.nonzero(ref), axis=1) * scale
    return float(np.linalg.norm(offset))


DEFAULT_METRICS: tuple[str, ...] = ("dice", "hd95", "assd", "rvd", "centroid")


def evaluate_case(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing_zyx: Spacing,
    metrics: Sequence[str] = DEFAULT_METRICS,
    labels: Sequence[int] | Mapping[int, str] | None = None,
) -> dict[str, float]:
    """All ``metrics`` for every structure of two label maps.

    Args:
        prediction, reference: label maps ``(z, y, x)`` (0 background, 1..K structures).
        spacing_zyx: voxel size in mm in array order.
        metrics: registered metric names.
        labels: label values to score, or ``{value: name}``; default: every non-zero value in either map.

    Returns:
        ``{metric: value}`` when one structure is scored, else ``{"<name>_<metric>": value}`` with ``name`` the
        label's name (or its value) followed by ``{metric: mean over the structures}``, so that summaries and
        figures reading ``dice`` or ``hd95`` work for any number of structures.
    """
    from da_seg.registry import METRICS

    prediction, reference = np.asarray(prediction), np.asarray(reference)
    if labels is None:
        values = sorted((set(np.unique(prediction).tolist()) | set(np.unique(reference).tolist())) - {0}) or [1]
        labels = {int(v): str(int(v)) for v in values}
    elif not isinstance(labels, Mapping):
        labels = {int(v): str(int(v)) for v in labels}
    functions = {m: METRICS.get(m) for m in metrics}
    single = len(labels) == 1
    row: dict[str, float] = {}
    for value, name in labels.items():
        pred, ref = prediction == value, reference == value
        for metric, fn in functions.items():
            row[metric if single else f"{name}_{metric}"] = float(fn(pred, ref, tuple(spacing_zyx)))
    if not single:
        for metric in functions:
            row[metric] = float(np.mean([row[f"{name}_{metric}"] for name in labels.values()]))
    return row


def summarise(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """``{column: (mean, sd)}`` over the numeric columns of per-case rows (sample sd, 0.0 for one case)."""
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                columns.setdefault(key, []).append(float(value))
    return {key: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0) for key, v in columns.items()}


def format_summary(summary: Mapping[str, tuple[float, float]], digits: int = 3) -> dict[str, str]:
    """``{column: "mean ± sd"}`` for reports."""
    return {k: f"{m:.{digits}f} ± {s:.{digits}f}" for k, (m, s) in summary.items()}


def write_cases_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write one row per case (columns: the union of keys, in first-seen order) to ``path``."""
    from da_seg.tables import write_csv

    return write_csv(path, rows)


@hookimpl
def register_metrics(register) -> None:
    register("dice", dice)
    register("hd95", hd95)
    register("assd", assd)
    register("hd", hausdorff)
    register("rvd", rvd)
    register("centroid", centroid_distance)
