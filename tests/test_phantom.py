"""Phantom building blocks: the layout writer (which seeds go where) and the geometry helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from da_seg.errors import DataError
from da_seg.phantom import PhantomImage, ellipsoid, grid_coords, smooth_noise, volume_at, write_layout
from da_seg.volume import read_volume


def _render(modality: float):
    """A fake renderer: a 2x3x4 volume filled with the subject seed's low bits (+ modality offset)."""

    def render(seed: int) -> PhantomImage:
        image = volume_at(np.full((2, 3, 4), seed % 100_000 + modality, np.float32), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        mask = volume_at(np.ones((2, 3, 4), np.uint8), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        return PhantomImage(image, mask, mask)

    return render


def _value(path: Path) -> float:
    return float(read_volume(path).array.flat[0])


def test_write_layout_folders_names_and_pairing(tmp_path: Path) -> None:
    write_layout(tmp_path, _render(0.0), _render(0.5), n_source=2, n_target=3, n_evaluation=1, n_target_labelled=1,
                 paired=True, seed=7)  # fmt: skip
    names = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.nii.gz"))
    assert names == [
        "evaluation/images/eval_000.nii.gz",
        "evaluation/labels/eval_000.nii.gz",
        "paired_target/images/mr_000.nii.gz",
        "paired_target/images/mr_001.nii.gz",
        "source/images/mr_000.nii.gz",
        "source/images/mr_001.nii.gz",
        "source/labels/mr_000.nii.gz",
        "source/labels/mr_001.nii.gz",
        "target/images/ct_000.nii.gz",
        "target/images/ct_001.nii.gz",
        "target/images/ct_002.nii.gz",
        "target_labelled/images/ctl_000.nii.gz",
        "target_labelled/labels/ctl_000.nii.gz",
    ]
    for name in ("mr_000", "mr_001"):  # the paired CT is the same subject rendered in the target modality
        source = _value(tmp_path / f"source/images/{name}.nii.gz")
        assert _value(tmp_path / f"paired_target/images/{name}.nii.gz") == source + 0.5
    offsets = {"source": 0.0, "target": 0.5, "evaluation": 0.5, "target_labelled": 0.5}
    subjects = [_value(p) - offsets[p.parts[-3]] for p in tmp_path.glob("*/images/*.nii.gz") if p.parts[-3] in offsets]
    assert len(subjects) == 7 and len(set(subjects)) == 7  # no two folders share a subject


def test_write_layout_is_deterministic_and_refuses_a_file(tmp_path: Path) -> None:
    for run in ("a", "b"):
        write_layout(tmp_path / run, _render(0.0), _render(0.5), n_source=1, n_target=1, n_evaluation=1, seed=3)
    for path in (tmp_path / "a").rglob("*.nii.gz"):
        assert _value(path) == _value(tmp_path / "b" / path.relative_to(tmp_path / "a"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        write_layout(tmp_path / "file", _render(0.0), _render(0.5), n_source=1, n_target=1, n_evaluation=0)


def test_grid_helpers() -> None:
    z, y, x = grid_coords((3, 2, 5), (2.0, 1.0, 0.5), (10.0, 0.0, -4.0))
    assert z.ravel().tolist() == [-6.0, -4.0, -2.0] and y.ravel().tolist() == [-0.5, 0.5]
    assert x.ravel().tolist() == [9.0, 9.5, 10.0, 10.5, 11.0]
    inside = ellipsoid(x, y, z, (10.0, 0.0, -4.0), (1.0, 1.0, 1.5)) < 1
    assert inside.shape == (3, 2, 5) and inside[1].sum() == 2 * 3 and not inside[0].any() and not inside[2].any()
    volume = volume_at(np.zeros((3, 2, 5)), (2.0, 1.0, 0.5), (10.0, 0.0, -4.0))
    assert volume.origin == (9.0, -0.5, -6.0) and volume.spacing == (0.5, 1.0, 2.0)
    noise = smooth_noise(np.random.default_rng(0), (8, 8, 8), 1.0)
    assert noise.dtype == np.float32 and abs(float(noise.std()) - 1) < 1e-3
