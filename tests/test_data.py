"""Data folders, the common-grid preprocessing and its inverse, the prepared cache, and data errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import da_seg.prepared as prepared
from da_seg.data import BlankImageWarning, Case, Domain, EmptyMaskWarning, find_cases
from da_seg.errors import DataError
from da_seg.intensity import CTWindow, MRPercentile
from da_seg.prepared import load_prepared
from da_seg.volume import Volume, read_volume, write_volume


def ellipsoid_case(shape=(8, 40, 48), spacing=(1.5, 1.5, 4.0), value=40.0) -> tuple[Volume, Volume]:
    """A CT-like image (-1000 outside, ``value`` inside) and its mask."""
    z, y, x = np.indices(shape)
    inside = ((x - 24) / 12) ** 2 + ((y - 20) / 9) ** 2 + ((z - 4) / 2.6) ** 2 < 1
    image = np.where(inside, value, -1000).astype(np.int16)
    geometry = {"spacing": spacing, "origin": (-30.0, 12.0, 5.0), "direction": (-1, 0, 0, 0, -1, 0, 0, 0, 1)}
    return Volume(image, **geometry), Volume(inside.astype(np.uint8), **geometry)


def make_folder(root: Path, names=("a", "b"), labelled=True, suffix=".nii.gz") -> Path:
    for name in names:
        image, mask = ellipsoid_case()
        write_volume(image, root / "images" / f"{name}{suffix}")
        if labelled:
            write_volume(mask, root / "labels" / f"{name}{suffix}", mask=True)
    return root


# -- layout -----------------------------------------------------------------------------------------------------
def test_find_cases_matches_names_across_formats(tmp_path: Path) -> None:
    make_folder(tmp_path, ("a",), suffix=".nii.gz")
    make_folder(tmp_path, ("b",), suffix=".mha")
    (tmp_path / "images" / ".hidden.nii.gz").write_text("ignored")
    cases = find_cases(tmp_path, labelled=True, binary=True)
    assert [(c.id, c.image.name, c.label.name, c.binary) for c in cases] == [
        ("a", "a.nii.gz", "a.nii.gz", True),
        ("b", "b.mha", "b.mha", True),
    ]
    assert [c.label for c in find_cases(tmp_path, labelled=False)] == [None, None]


def test_manifest_lists_cases(tmp_path: Path) -> None:
    make_folder(tmp_path / "files", ("x", "y"))
    (tmp_path / "manifest.csv").write_text("image,label\nfiles/images/x.nii.gz,files/labels/x.nii.gz\n")
    cases = find_cases(tmp_path, labelled=True)
    assert [(c.id, c.image, c.label) for c in cases] == [
        ("x", tmp_path / "files/images/x.nii.gz", tmp_path / "files/labels/x.nii.gz")
    ]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "data folder not found"),
        (lambda root: root.mkdir(), "needs an images/ folder"),
        (lambda root: (root / "images").mkdir(parents=True), r"images: no volumes found"),
        (lambda root: make_folder(root, labelled=False), "needs a labels/ folder"),
        (lambda root: (make_folder(root), (root / "labels/b.nii.gz").unlink()), r"no label for image\(s\) b"),
        (lambda root: (make_folder(root), (root / "images/a.nii.gz").unlink()), r"no image for label\(s\) a"),
        (lambda root: (root.mkdir(), (root / "manifest.csv").write_text("image\nq.nii.gz\n")), "needs columns"),
        (
            lambda root: (root.mkdir(), (root / "manifest.csv").write_text("image,label\nq.nii.gz,r.nii.gz\n")),
            r"line 2: file not found: .*q\.nii\.gz",
        ),
    ],
)
def test_layout_errors_name_the_problem(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message):
        find_cases(root, labelled=True)


def test_non_binary_mask_reports_its_values(tmp_path: Path) -> None:
    make_folder(tmp_path, ("a",))
    _, mask = ellipsoid_case()
    write_volume(mask.with_array(mask.array * 2), tmp_path / "labels/a.nii.gz", mask=True)
    cases = find_cases(tmp_path, labelled=True, binary=True)
    with pytest.raises(DataError, match=r"labels/a\.nii\.gz: mask values \[0, 2\]"):
        load_prepared(cases, Domain((4.0, 2.0, 2.0), (32, 32), CTWindow()))


def test_mask_geometry_mismatch_names_the_label(tmp_path: Path) -> None:
    make_folder(tmp_path, ("a",))
    _, mask = ellipsoid_case(spacing=(1.0, 1.5, 4.0))
    write_volume(mask, tmp_path / "labels/a.nii.gz", mask=True)
    with pytest.raises(DataError, match=r"labels/a\.nii\.gz: geometry differs from its image a\.nii\.gz"):
        load_prepared(find_cases(tmp_path, labelled=True), Domain((4.0, 2.0, 2.0), (32, 32), CTWindow()))


def test_empty_mask_warns(tmp_path: Path) -> None:
    make_folder(tmp_path, ("a",))
    _, mask = ellipsoid_case()
    write_volume(mask.with_array(np.zeros_like(mask.array)), tmp_path / "labels/a.nii.gz", mask=True)
    with pytest.warns(EmptyMaskWarning, match=r"a\.nii\.gz: mask is empty"):
        load_prepared(find_cases(tmp_path, labelled=True), Domain((4.0, 2.0, 2.0), (32, 32), CTWindow()))


def _slab(depth: int, spacing_z: float) -> Volume:
    """A CT-like body section ``depth`` slices deep."""
    _, y, x = np.indices((depth, 40, 48))
    inside = ((x - 24) / 12) ** 2 + ((y - 20) / 9) ** 2 < 1
    return Volume(np.where(inside, 40, -1000).astype(np.int16), spacing=(1.5, 1.5, spacing_z))


@pytest.mark.parametrize(
    ("depth", "spacing_z", "shown"),
    [(1, 4.0, "48 x 40 x 1 voxels of 1.5 x 1.5 x 4 mm"), (2, 1.5, "48 x 40 x 2 voxels of 1.5 x 1.5 x 1.5 mm")],
    ids=["one-slice", "one-slice-on-the-grid"],
)
def test_a_single_slice_volume_is_refused_before_anything_trains(
    tmp_path: Path, depth: int, spacing_z: float, shown: str
) -> None:
    """Issue 43: a 3D file holding one slice was accepted; the 2.5D networks need each slice's neighbours."""
    write_volume(_slab(depth, spacing_z), tmp_path / "images/t0.nii.gz")
    write_volume(_slab(2, 4.0), tmp_path / "images/t1.nii.gz")  # two slices: enough
    cases = find_cases(tmp_path, labelled=False)
    domain = Domain((4.0, 2.0, 2.0), (32, 32), CTWindow())
    message = rf"{tmp_path / 'images/t0.nii.gz'}: only 1 slice on the common grid \({shown}, at 4 mm slices\)"
    with pytest.raises(DataError, match=message + r"; the 2\.5D networks .* at least 2: give the whole volume"):
        load_prepared(cases, domain, tmp_path / "cache")
    assert load_prepared(cases[1:], domain)[0].image.shape[0] == 2


def test_a_blank_image_warns_naming_the_file_also_from_the_cache(tmp_path: Path) -> None:
    """Issue 43: an unlabelled image whose voxels are all equal (blank, or exported wrongly) passed in silence."""
    blank = _slab(4, 4.0)
    write_volume(blank.with_array(np.full_like(blank.array, -1000)), tmp_path / "images/t0.nii.gz")
    write_volume(_slab(4, 4.0), tmp_path / "images/t1.nii.gz")
    cases = find_cases(tmp_path, labelled=False)
    domain = Domain((4.0, 2.0, 2.0), (32, 32), CTWindow())
    for _ in range(2):  # prepared, then read from the cache
        with pytest.warns(BlankImageWarning) as caught:
            load_prepared(cases, domain, tmp_path / "cache")
        assert [str(w.message) for w in caught] == [
            f"{tmp_path / 'images/t0.nii.gz'}: the image is constant (every voxel -1000); it is blank or was "
            "exported wrongly"
        ]


def test_two_processes_preparing_the_same_case_at_once_both_go_on(tmp_path: Path, monkeypatch) -> None:
    """Study parts split by seed prepare the same cases into one cache: the process that renames second finds the
    first one's folder (same key, same data) and keeps it; it once failed with 'Directory not empty'."""
    make_folder(tmp_path / "data", ("a",))
    cases = find_cases(tmp_path / "data", labelled=True)
    domain = Domain((4.0, 2.0, 2.0), (32, 32), CTWindow())
    theirs = load_prepared(cases, domain, tmp_path / "their_cache")[0]
    their_folder = next((tmp_path / "their_cache").iterdir())
    rename = os.replace

    def they_finish_first(src, dst):  # the other process renames between our clean-up and our rename
        shutil.copytree(their_folder, dst)
        rename(src, dst)

    monkeypatch.setattr(os, "replace", they_finish_first)
    ours = load_prepared(cases, domain, tmp_path / "cache")[0]
    monkeypatch.undo()
    np.testing.assert_array_equal(ours.image, theirs.image)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [their_folder.name]  # nothing temporary left
    again = load_prepared(cases, domain, tmp_path / "cache")[0]
    np.testing.assert_array_equal(again.mask, theirs.mask)


# -- prepare / restore --------------------------------------------------------------------------------------------
def test_prepare_puts_image_and_mask_on_the_common_grid() -> None:
    image, mask = ellipsoid_case()  # 48 x 40 x 8 voxels of 1.5 x 1.5 x 4 mm
    case = Domain((2.0, 3.0, 3.0), (16, 32), CTWindow()).prepare(image, mask, id="e")
    # z: 8 * 4 / 2 = 16 slices; y: 40 * 1.5 / 3 = 20 rows cropped to 16; x: 48 * 1.5 / 3 = 24 padded to 32
    assert case.image.shape == (16, 16, 32) and case.mask.shape == (16, 16, 32)
    assert case.image.dtype == np.float32 and case.mask.dtype == np.uint8
    assert case.image.min() == -1.0 and case.image.max() == pytest.approx(40 / 500, abs=1e-4)
    assert case.image[:, :, :4].max() == -1.0  # padding is "air"
    assert case.grid.shape == (16, 20, 24) and case.original.shape == image.shape
    assert set(np.unique(case.mask)) == {0, 1}


def test_restore_brings_a_mask_back_onto_the_original_grid() -> None:
    image, mask = ellipsoid_case()
    domain = Domain((2.0, 0.75, 0.75), (96, 96), CTWindow())  # finer than the file: nothing is lost
    case = domain.prepare(image, mask, id="e")
    back = domain.restore(case.mask, case, mask=True)
    assert back.same_geometry(image) and back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, mask.array)


def test_restore_inverts_intensity_and_orientation() -> None:
    image, _ = ellipsoid_case()
    domain = Domain((4.0, 1.5, 1.5), (40, 48), CTWindow())  # same spacing: only orientation and window change
    case = domain.prepare(image)
    back = domain.restore(case.image, case, mask=False)
    assert back.same_geometry(image)
    np.testing.assert_allclose(back.array, np.clip(image.array, -500, 500), atol=1e-3)


def test_restore_refuses_an_array_off_the_grid() -> None:
    image, _ = ellipsoid_case()
    domain = Domain((4.0, 1.5, 1.5), (40, 48), CTWindow())
    case = domain.prepare(image, id="e")
    with pytest.raises(DataError, match="case e: array"):
        domain.restore(np.zeros((3, 40, 48)), case, mask=False)


def test_real_ct_prepare_and_restore(real_data: Path) -> None:
    path = real_data / "pelvis_ct/totalsegmentator_example_ct.nii.gz"
    ct = read_volume(path)  # 122 x 101 x 112 voxels of 3 mm, direction diag(-1, -1, 1)
    coarse = Domain((3.0, 2.0, 2.0), (96, 96), CTWindow())
    case = load_prepared([Case("ct", path)], coarse)[0]
    assert case.image.shape == (112, 96, 96) and -1 <= case.image.min() < case.image.max() <= 1
    assert coarse.restore(case.image, case, mask=False).same_geometry(ct)
    # on the file's own spacing only orientation, window and crop act, so the restore is exact inside the crop
    same = Domain((3.0, 3.0, 3.0), (64, 64), CTWindow())
    case = same.prepare(ct, id="ct")
    back = same.restore(case.image, case, mask=False)
    kept = same.restore(np.ones_like(case.image, dtype=np.uint8), case, mask=True).array.astype(bool)
    assert back.same_geometry(ct) and kept.sum() == 112 * 64 * 64
    np.testing.assert_allclose(back.array[kept], np.clip(ct.array[kept], -500, 500), atol=1e-3)
    assert (back.array[~kept] == -500).all()  # outside the crop: the window's "air"


def test_mr_restore_uses_the_cases_own_percentiles() -> None:
    image, _ = ellipsoid_case()
    mr = image.with_array((image.array.astype(np.float32) + 1000) * 0.37)
    domain = Domain((4.0, 1.5, 1.5), (40, 48), MRPercentile(0.0, 100.0))
    case = domain.prepare(mr)
    assert case.stats == pytest.approx({"low": 0.0, "high": 1040 * 0.37})
    domain.intensity.fit(np.zeros(5))  # another volume in between must not matter
    np.testing.assert_allclose(domain.restore(case.image, case, mask=False).array, mr.array, atol=1e-2)


def off_centre_ct() -> tuple[Volume, Volume]:
    """A CT whose body (an ellipse) lies 12 rows anterior and 6 columns left of the grid's centre, with a thin
    bright "table shell" behind it; mask: a disc at the body's centre."""
    _, y, x = np.indices((6, 64, 64))
    body = ((y - 19.5) / 10) ** 2 + ((x - 37.5) / 14) ** 2 < 1
    disc = ((y - 19.5) / 3) ** 2 + ((x - 37.5) / 3) ** 2 < 1
    image = np.where(body, 40, -1000)
    image[:, 50, 4:60] = 350  # the table's shell: thin, far from the body
    geometry = {"spacing": (2.0, 2.0, 2.0), "origin": (0.0, 0.0, 0.0), "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}
    return Volume(image.astype(np.int16), **geometry), Volume(disc.astype(np.uint8), **geometry)


def test_body_centred_crop_puts_the_body_in_the_middle_and_restore_undoes_it() -> None:
    image, mask = off_centre_ct()
    grid_centred = Domain((2.0, 2.0, 2.0), (32, 32), CTWindow()).prepare(image, mask, id="g")
    body_centred = Domain((2.0, 2.0, 2.0), (32, 32), CTWindow(), centre="body").prepare(image, mask, id="b")
    assert grid_centred.offset_hw == (0, 0)
    assert body_centred.offset_hw == (-12, 6)  # the table's shell did not pull the centroid
    for case, centre in ((grid_centred, (15.5 - 12, 15.5 + 6)), (body_centred, (15.5, 15.5))):
        _, y, x = np.nonzero(case.mask)
        assert (y.mean(), x.mean()) == pytest.approx(centre, abs=0.5)
    domain = Domain((2.0, 2.0, 2.0), (32, 32), CTWindow(), centre="body")
    back = domain.restore(body_centred.mask, body_centred, mask=True)
    np.testing.assert_array_equal(back.array, mask.array)
    values = domain.restore(body_centred.image, body_centred, mask=False).array
    np.testing.assert_allclose(values[mask.array == 1], 40, atol=1e-3)


def test_body_centre_is_saved_with_the_domain_and_checked() -> None:
    domain = Domain((2.0, 2.0, 2.0), (32, 32), CTWindow(), centre="body")
    assert Domain.from_settings(domain.settings).centre == "body"
    assert "centre" not in Domain((2.0, 2.0, 2.0), (32, 32), CTWindow()).settings  # older models' settings
    assert Domain.from_settings(Domain((2.0, 2.0, 2.0), (32, 32), CTWindow()).settings).centre == "grid"
    with pytest.raises(DataError, match="crop centre must be one of"):
        Domain((2.0, 2.0, 2.0), (32, 32), CTWindow(), centre="organ")


def test_an_empty_volume_keeps_the_grid_centre() -> None:
    air = Volume(np.full((4, 20, 20), -1000, np.int16), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert Domain((2.0, 2.0, 2.0), (16, 16), CTWindow(), centre="body").prepare(air, id="air").offset_hw == (0, 0)


# -- cache ------------------------------------------------------------------------------------------------------
def test_second_run_reads_the_cache_not_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path / "data")
    domain = Domain((4.0, 2.0, 2.0), (32, 32), CTWindow())
    cases = find_cases(tmp_path / "data", labelled=True)
    first = load_prepared(cases, domain, tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2

    def no_reading(path):  # a second run must not touch the image files
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(prepared, "read_volume", no_reading)
    second = load_prepared(cases, domain, tmp_path / "cache")
    for a, b in zip(first, second, strict=True):
        assert a.id == b.id
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert b.original.same_geometry(a.original) and b.grid.same_geometry(a.grid)
    restored = domain.restore(second[0].mask, second[0], mask=True)
    assert restored.shape == (8, 40, 48)
    # another grid, or a changed file, is prepared again
    with pytest.raises(AssertionError, match="read"):
        load_prepared(cases, Domain((4.0, 2.0, 2.0), (32, 32), CTWindow(-150, 350)), tmp_path / "cache")
    os.utime(cases[0].image, ns=(1, 1))
    with pytest.raises(AssertionError, match=r"read .*a\.nii\.gz"):
        load_prepared(cases, domain, tmp_path / "cache")


def test_cache_keeps_the_body_centred_crop_offset(tmp_path: Path) -> None:
    image, mask = off_centre_ct()
    write_volume(image, tmp_path / "data/images/c.nii.gz")
    write_volume(mask, tmp_path / "data/labels/c.nii.gz")
    domain = Domain((2.0, 2.0, 2.0), (32, 32), CTWindow(), centre="body")
    cases = find_cases(tmp_path / "data", labelled=True)
    first = load_prepared(cases, domain, tmp_path / "cache")[0]
    second = load_prepared(cases, domain, tmp_path / "cache")[0]  # from the cache
    assert first.offset_hw == second.offset_hw == (-12, 6)
    np.testing.assert_array_equal(domain.restore(second.mask, second, mask=True).array, mask.array)
    grid = Domain((2.0, 2.0, 2.0), (32, 32), CTWindow())
    assert load_prepared(cases, grid, tmp_path / "cache")[0].offset_hw == (0, 0)  # another key, prepared again
