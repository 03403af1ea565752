"""Segmentation metrics in mm against SimpleITK and hand-computed cases, including empty masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from da_seg.metrics.segmentation import (
    assd,
    dice,
    evaluate_case,
    format_summary,
    hausdorff,
    hd95,
    rvd,
    summarise,
    volume_diagonal,
    write_cases_csv,
)
from da_seg.registry import METRICS

SPACING_ZYX = (3.0, 0.8, 1.3)  # anisotropic: thick slices, different in-plane sizes


def _image(mask: np.ndarray, spacing_zyx=SPACING_ZYX) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    return image


def _box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = 1
    return m


def _ball(shape, centre, radius_mm, spacing_zyx=SPACING_ZYX) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing_zyx, strict=True))
    return (d2 <= radius_mm**2).astype(np.uint8)


SHAPE = (12, 30, 26)
PAIRS = {
    "disjoint boxes": (_box(SHAPE, (2, 3, 3), (6, 10, 9)), _box(SHAPE, (5, 15, 12), (10, 22, 20))),
    "nested boxes": (_box(SHAPE, (4, 10, 8), (7, 16, 14)), _box(SHAPE, (2, 5, 4), (10, 24, 22))),
    "disjoint balls": (_ball(SHAPE, (4, 8, 7), 6.0), _ball(SHAPE, (7, 20, 17), 7.0)),
    "nested balls": (_ball(SHAPE, (6, 15, 13), 5.0), _ball(SHAPE, (6, 15, 13), 11.0)),
}


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_dice_and_volumes_match_simpleitk_overlap_filter(case: str) -> None:
    a, b = PAIRS[case]
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(_image(b), _image(a))
    assert dice(a, b, SPACING_ZYX) == pytest.approx(f.GetDiceCoefficient(), abs=1e-12)
    # SimpleITK's volume similarity 2(|A|-|B|)/(|A|+|B|) and ours (|A|-|B|)/|B| describe the same two volumes
    va, vb = int(a.sum()), int(b.sum())
    assert rvd(a, b, SPACING_ZYX) == pytest.approx((va - vb) / vb)
    assert 2 * (va - vb) / (va + vb) == pytest.approx(-f.GetVolumeSimilarity())


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_hausdorff_matches_simpleitk_on_anisotropic_spacing(case: str) -> None:
    # For convex shapes that are disjoint or nested, the farthest point lies on a surface, so the surface-based
    # maximum equals SimpleITK's all-voxel Hausdorff distance.
    a, b = PAIRS[case]
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(_image(a), _image(b))
    assert hausdorff(a, b, SPACING_ZYX) == pytest.approx(f.GetHausdorffDistance(), rel=1e-9)
    assert METRICS.get("hd")(a, b, SPACING_ZYX) == hausdorff(a, b, SPACING_ZYX)


def test_two_cubes_a_known_distance_apart() -> None:
    # Two 4-voxel cubes shifted by 10 voxels along x (1.3 mm): every surface voxel of one has its nearest surface
    # voxel of the other exactly 10 - 3 = 7 (near faces) ... 10 (far faces) columns away.
    shape, sp = (8, 8, 24), (2.0, 1.0, 1.3)
    a = _box(shape, (2, 2, 2), (6, 6, 6))
    b = _box(shape, (2, 2, 12), (6, 6, 16))
    assert dice(a, b, sp) == 0.0
    assert hausdorff(a, b, sp) == pytest.approx(10 * 1.3)
    # by x column of a (2..5): nearest b surface column is 12, so distances 10, 9, 8, 7 columns. Surface voxels per
    # column: column 2 (a face: 16 voxels), columns 3, 4 (rings: 12 each), column 5 (face: 16). Same for b mirrored.
    cols = np.repeat([10, 9, 8, 7], [16, 12, 12, 16]) * 1.3
    both = np.concatenate([cols, cols])
    assert assd(a, b, sp) == pytest.approx(both.mean())
    assert hd95(a, b, sp) == pytest.approx(np.percentile(both, 95))
    # the same voxels with twice the x spacing: the distances in mm double
    assert hausdorff(a, b, (2.0, 1.0, 2.6)) == pytest.approx(26.0)
    # their centres are 10 columns apart: 13 mm, whatever their overlap (none here)
    assert METRICS.get("centroid")(a, b, sp) == pytest.approx(13.0)
    assert METRICS.get("centroid")(a, a | b, sp) == pytest.approx(6.5)


def test_identical_and_one_voxel_shift() -> None:
    a = _box((6, 10, 10), (1, 2, 2), (5, 8, 8))
    assert (dice(a, a, SPACING_ZYX), hd95(a, a, SPACING_ZYX), assd(a, a, SPACING_ZYX), rvd(a, a, SPACING_ZYX)) == (
        1.0,
        0.0,
        0.0,
        0.0,
    )
    b = np.roll(a, 1, axis=0)  # one slice (3 mm) deeper
    assert hausdorff(a, b, SPACING_ZYX) == pytest.approx(3.0)
    assert dice(a, b, SPACING_ZYX) == pytest.approx(2 * 3 / 8)


@pytest.mark.parametrize(
    "pred_empty, ref_empty, expected",
    [
        (True, True, {"dice": 1.0, "hd95": 0.0, "assd": 0.0, "hd": 0.0, "rvd": 0.0, "centroid": 0.0}),
        (True, False, {"dice": 0.0, "hd95": "diag", "assd": "diag", "hd": "diag", "rvd": -1.0, "centroid": "diag"}),
        (False, True, {"dice": 0.0, "hd95": "diag", "assd": "diag", "hd": "diag", "rvd": 8.0, "centroid": "diag"}),
    ],
)
def test_empty_masks_give_documented_finite_values(pred_empty, ref_empty, expected) -> None:
    shape, sp = (4, 5, 6), (2.0, 1.0, 0.5)
    full = _box(shape, (1, 1, 1), (3, 3, 3))  # 8 voxels
    empty = np.zeros(shape, np.uint8)
    pred, ref = (empty if pred_empty else full), (empty if ref_empty else full)
    diag = math.sqrt(8**2 + 5**2 + 3**2)
    assert volume_diagonal(shape, sp) == pytest.approx(diag)
    for name, value in expected.items():
        got = METRICS.get(name)(pred, ref, sp)
        assert math.isfinite(got)
        assert got == pytest.approx(diag if value == "diag" else value), name


def test_evaluate_case_multi_label_summary_and_csv(tmp_path) -> None:
    ref = np.zeros((4, 10, 10), np.uint8)
    ref[1:3, 1:4, 1:4] = 1
    ref[1:3, 6:9, 6:9] = 2
    pred = ref.copy()
    pred[pred == 2] = 0  # structure 2 missed
    row = evaluate_case(pred, ref, (1.0, 1.0, 1.0), metrics=("dice", "rvd"), labels={1: "a", 2: "b"})
    assert row == {"a_dice": 1.0, "a_rvd": 0.0, "b_dice": 0.0, "b_rvd": -1.0, "dice": 0.5, "rvd": -0.5}
    assert evaluate_case(pred, ref, (1.0, 1.0, 1.0), metrics=("dice",)) == {"1_dice": 1.0, "2_dice": 0.0, "dice": 0.5}
    assert evaluate_case(ref > 0, ref > 0, (1.0, 1.0, 1.0), metrics=("dice",)) == {"dice": 1.0}
    rows = [{"case": "x", "dice": 0.8}, {"case": "y", "dice": 0.6}]
    summary = summarise(rows)
    assert summary["dice"] == pytest.approx((0.7, math.sqrt(0.02)))
    assert "case" not in summary
    assert format_summary(summary)["dice"] == "0.700 ± 0.141"
    path = write_cases_csv(rows, tmp_path / "cases.csv")
    assert path.read_text().splitlines() == ["case,dice", "x,0.8", "y,0.6"]


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        dice(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)))
