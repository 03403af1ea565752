"""Extent matching (`da_seg.extent`, ``data.extent``): a long CT cut to the slab that holds the MR's anatomy, found
without CT labels, and the masks still written on the whole CT grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from da_seg import EXTENTS, load_config
from da_seg.config import parse_config
from da_seg.data import Domain, PreparedCase
from da_seg.errors import ConfigError, DataError
from da_seg.extent import crop_slices, mutual_information
from da_seg.registry import INTENSITIES
from da_seg.volume import Volume, read_volume


def _blobs(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth random structure in [-1, 1] (a stand-in for anatomy)."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.normal(size=shape), (1.5, 3, 3))
    return np.clip(field / (3 * field.std()), -0.99, 0.99).astype(np.float32)


def _case(image: np.ndarray, spacing_z: float = 3.0, origin_z: float = 0.0) -> PreparedCase:
    grid = Volume(np.zeros(image.shape, np.uint8), (2.0, 2.0, spacing_z), (0.0, 0.0, origin_z))
    return PreparedCase("ct_x", image, (image > 0.5).astype(np.uint8), grid, grid)


def test_mutual_information_is_high_for_remapped_copies_and_low_for_unrelated_values() -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, 20000)
    inverted = -a  # another modality: the same structure, other intensities (bone bright on CT, dark on MR)
    assert mutual_information(a, inverted) > 2.0
    assert mutual_information(a, rng.uniform(-1, 1, 20000)) < 0.1


def test_mutual_information_finds_the_slab_that_holds_the_references_anatomy() -> None:
    """A 90-slice 'CT' holds an MR's anatomy, intensities inverted, at slices 40-59; elsewhere other structure."""
    rng = np.random.default_rng(1)
    mr = _blobs(rng, (20, 32, 32))
    mr[:, :, :4] = -1.0  # the MR's padding outside its field of view counts for nothing
    ct = _blobs(rng, (90, 32, 32))
    ct[40:60] = -mr + 0.05 * rng.normal(size=mr.shape).astype(np.float32)
    matcher = EXTENTS.build({"name": "mutual_information", "margin_mm": 6.0, "references": 1})
    assert matcher(_case(ct), [mr], (3.0, 2.0, 2.0)) == (38, 62)  # the slab and 6 mm (2 slices) each side
    assert matcher(_case(ct[:15]), [mr], (3.0, 2.0, 2.0)) == (0, 15)  # a CT shorter than the MR: all of it
    assert EXTENTS.build({"name": "whole"})(_case(ct), [mr], (3.0, 2.0, 2.0)) == (0, 90)  # a study's baseline


def test_a_box_in_millimetres_picks_the_slices_between_its_ends() -> None:
    matcher = EXTENTS.build({"name": "box", "z_mm": [-30.0, 0.0]})
    case = _case(np.zeros((40, 8, 8), np.float32), spacing_z=3.0, origin_z=-60.0)  # slices at -60, -57, ..., 57 mm
    assert matcher(case, [], (3.0, 2.0, 2.0)) == (10, 21)
    with pytest.raises(DataError, match=r"case ct_x: data.extent box z_mm \[100.0, 200.0\] misses the image"):
        EXTENTS.build({"name": "box", "z_mm": [100, 200]})(case, [], (3.0, 2.0, 2.0))
    with pytest.raises(ConfigError, match="high > low"):
        EXTENTS.build({"name": "box", "z_mm": [5, -5]})


def test_a_cut_case_is_restored_onto_the_whole_grid_empty_outside_the_slab() -> None:
    domain = Domain((3.0, 2.0, 2.0), (8, 8), INTENSITIES.build({"name": "ct_window"}))
    image = np.linspace(-1, 1, 20 * 64, dtype=np.float32).reshape(20, 8, 8)
    grid = Volume(np.zeros((20, 8, 8), np.uint8), (2.0, 2.0, 3.0))
    case = PreparedCase("ct_y", image, None, grid, grid)
    cut = crop_slices(crop_slices(case, (5, 15)), (2, 6))  # cuts compose: slices 7-10 of the grid
    assert cut.z_range == (7, 11) and np.array_equal(cut.image, image[7:11])
    restored = domain.restore(np.ones((4, 8, 8), np.uint8), cut, mask=True).array
    assert restored.shape == (20, 8, 8)
    assert restored[7:11].all() and not restored[:7].any() and not restored[11:].any()
    with pytest.raises(DataError, match="not on the common grid"):
        domain.restore(np.ones((20, 8, 8), np.uint8), cut, mask=True)


def test_extent_unset_leaves_older_configs_fingerprints_alone_and_a_bad_one_is_refused() -> None:
    config = parse_config({"task": "prostate_mr2ct"})
    assert "extent" not in config.data.model_dump(mode="json")
    with pytest.raises(ConfigError, match="extent"):
        EXTENTS.build({"name": "mutual_information", "margin_mm": -1})
    with pytest.raises(ConfigError, match="unknown extent 'atlas'"):
        EXTENTS.build({"name": "atlas"})


def test_a_run_with_extent_matching_writes_masks_on_the_whole_ct_empty_outside_the_slab(
    tmp_path: Path, tiny_config, tiny_phantom_data: Path
) -> None:
    from da_seg.pipeline import run_pipeline

    box = {"name": "box", "z_mm": [-40.0, 40.0]}
    config = load_config(tiny_config(tmp_path, "extent", baselines="[]"), {"data.extent": box})
    result = run_pipeline(config)
    written = sorted((result.run_dir / "predictions" / "synct").glob("*.nii.gz"))
    assert written
    for path in written:
        mask = read_volume(path)
        z = mask.origin[2] + np.arange(mask.shape[0]) * mask.spacing[2]
        outside = (z < -40.0 - 3.0) | (z > 40.0 + 3.0)  # a resampled slice's width of slack at the slab's ends
        assert outside.any() and not mask.array[outside].any()
    from da_seg.extent import ExtentNotAppliedWarning
    from da_seg.segmentation import predict_file

    ct = sorted((tiny_phantom_data / "evaluation/images").glob("*.nii.gz"))[0]
    with pytest.warns(ExtentNotAppliedWarning, match="trained on CT slabs cut by data.extent \\(box\\)"):
        predict_file(result.run_dir / "seg_synct" / "model", ct, tmp_path / "again.nii.gz")
