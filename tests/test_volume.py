"""Volume I/O keeps geometry (NIfTI, MHA, NRRD, DICOM series, real oblique ProstateX), resampling, crop/pad."""

from __future__ import annotations

import locale
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from da_seg.errors import DataError
from da_seg.geometry import crop_or_pad, resample, resample_to, to_canonical, uncrop
from da_seg.volume import Volume, read_volume, write_volume


def rotation_x(degrees: float) -> tuple[float, ...]:
    a = np.deg2rad(degrees)
    return tuple(np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]).ravel())


@pytest.fixture
def oblique() -> Volume:
    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    return Volume(array, spacing=(0.7, 0.8, 3.0), origin=(-12.5, 30.25, 7.0), direction=rotation_x(20))


def assert_same_geometry(a: Volume, b: Volume) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing, b.spacing, atol=1e-5)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-4)
    np.testing.assert_allclose(a.direction, b.direction, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"])
def test_round_trip_keeps_geometry_and_values(tmp_path: Path, oblique: Volume, suffix: str) -> None:
    path = write_volume(oblique, tmp_path / f"case{suffix}")
    back = read_volume(path)
    assert_same_geometry(back, oblique)
    np.testing.assert_array_equal(back.array, oblique.array)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_mask_is_written_as_uint8(tmp_path: Path, oblique: Volume) -> None:
    mask = oblique.with_array((oblique.array % 3 == 0).astype(np.float64))
    back = read_volume(write_volume(mask, tmp_path / "m.nii.gz", mask=True))
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, mask.array)


def write_dicom_series(volume: Volume, folder: Path) -> None:
    """A minimal but valid CT series: one file per slice with position, orientation and spacing tags."""
    folder.mkdir()
    image = volume.to_sitk()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = volume.direction
    orientation = "\\".join(
        str(v) for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
    )
    saved = locale.setlocale(locale.LC_ALL)  # GDCM's writer switches the process locale to "C"; undo that after
    try:
        _write_slices(image, writer, orientation, volume, folder)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(image, writer, orientation, volume, folder) -> None:
    for z in range(image.GetDepth()):
        slice_ = image[:, :, z]
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.1.2.{z + 1}",
            "0020|0037": orientation,
            "0020|0032": "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, z))),
            "0020|0013": str(z + 1),
            "0018|0050": str(volume.spacing[2]),
            "0028|0030": f"{volume.spacing[1]}\\{volume.spacing[0]}",
        }
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(slice_)


def test_dicom_series_written_by_simpleitk_reads_back_with_geometry(tmp_path: Path, oblique: Volume) -> None:
    write_dicom_series(oblique, tmp_path / "series")
    back = read_volume(tmp_path / "series")
    assert_same_geometry(back, oblique)
    np.testing.assert_array_equal(back.array, oblique.array)


def test_real_prostatex_series_keeps_oblique_geometry_on_write_back(real_data: Path, tmp_path: Path) -> None:
    series = read_volume(real_data / "prostatex_t2_dicom/ProstateX-0000_t2_tra")
    assert series.shape == (19, 384, 384)
    np.testing.assert_allclose(series.spacing, (0.5, 0.5, 3.0), atol=1e-5)
    direction = np.reshape(series.direction, (3, 3))
    assert abs(np.degrees(np.arccos(direction[1, 1]))) > 10  # oblique about x, as the README says
    for suffix in (".nii.gz", ".mha", ".nrrd"):
        back = read_volume(write_volume(series, tmp_path / f"t2{suffix}"))
        assert_same_geometry(back, series)
        np.testing.assert_array_equal(back.array, series.array)


def test_to_canonical_flips_axes_of_a_diag_minus_one_direction() -> None:
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    volume = Volume(array, (1.0, 2.0, 3.0), (10.0, 20.0, 30.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    canonical = to_canonical(volume)
    np.testing.assert_allclose(canonical.direction, np.eye(3).ravel())
    np.testing.assert_array_equal(canonical.array, array[:, ::-1, ::-1])
    # the first voxel is now the old last one in x and y: origin x = 10 - 3 * 1, y = 20 - 2 * 2
    np.testing.assert_allclose(canonical.origin, (7.0, 16.0, 30.0))


def test_resample_keeps_physical_extent() -> None:
    volume = Volume(np.zeros((10, 20, 30), np.float32), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))
    out = resample(volume, (4.0, 2.0, 3.0))  # (z, y, x)
    assert out.shape == (5, 10, 10)
    # outer edge at -0.5 * old spacing stays: new first centre at -0.5 + 1.5, -0.5 + 1.0, -1.0 + 2.0
    np.testing.assert_allclose(out.origin, (1.0, 0.5, 1.0))


def test_mask_resampled_finer_and_back_keeps_every_voxel() -> None:
    rng = np.random.default_rng(0)
    mask = (rng.random((6, 16, 16)) > 0.6).astype(np.uint8)
    volume = Volume(mask, spacing=(1.0, 1.0, 3.0), origin=(3.0, -4.0, 5.0), direction=rotation_x(15))
    fine = resample(volume, (1.0, 0.5, 0.5), mask=True)
    assert fine.shape == (18, 32, 32) and fine.array.dtype == np.uint8
    back = resample_to(fine, volume, mask=True)
    np.testing.assert_array_equal(back.array, mask)


def test_mask_resampled_coarser_and_back_keeps_a_smooth_shape() -> None:
    # a prostate-sized ellipsoid (40 x 30 x 30 mm) on a fine MR grid, to a 3 x 2 x 2 mm grid and back
    z, y, x = np.mgrid[:16, :100, :100] * np.array([2.5, 0.5, 0.5])[:, None, None, None]
    ball = ((((x - 25) / 20) ** 2 + ((y - 24) / 15) ** 2 + ((z - 19) / 15) ** 2) < 1).astype(np.uint8)
    volume = Volume(ball, spacing=(0.5, 0.5, 2.5))
    back = resample_to(resample(volume, (3.0, 2.0, 2.0), mask=True), volume, mask=True)
    dice = 2 * (back.array & ball).sum() / (back.array.sum() + ball.sum())
    assert dice > 0.9


def test_resample_to_a_reference_with_another_direction_lands_on_its_grid() -> None:
    ct = Volume(np.zeros((4, 5, 6), np.float32), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    ct.array[1, 2, 3] = 100.0
    canonical = to_canonical(ct)
    back = resample_to(canonical, ct)
    assert back.same_geometry(ct)
    np.testing.assert_allclose(back.array, ct.array, atol=1e-4)


@pytest.mark.parametrize("size", [(4, 6), (8, 12), (5, 9), (3, 3)])
def test_crop_or_pad_and_uncrop_invert_each_other(size: tuple[int, int]) -> None:
    array = np.arange(2 * 6 * 8, dtype=np.float32).reshape(2, 6, 8) + 1
    out = crop_or_pad(array, size, -1.0)
    assert out.shape == (2, *size)
    back = uncrop(out, (6, 8), -1.0)
    kept = back != -1.0
    np.testing.assert_array_equal(back[kept], array[kept])  # everything that survived is in its old place
    if size[0] >= 6 and size[1] >= 8:
        np.testing.assert_array_equal(back, array)


def test_crop_or_pad_is_centred() -> None:
    array = np.zeros((1, 4, 4))
    array[0, 1:3, 1:3] = 1
    np.testing.assert_array_equal(crop_or_pad(array, (2, 2), 0)[0], np.ones((2, 2)))
    padded = crop_or_pad(array, (6, 6), 9)
    assert padded[0, 0].tolist() == [9] * 6 and padded[0, 2:4, 2:4].sum() == 4


@pytest.mark.parametrize("offset", [(0, 0), (1, -2), (-3, 3), (5, 7)])
@pytest.mark.parametrize("size", [(4, 6), (8, 12), (5, 9)])
def test_offset_window_moves_with_the_offset_and_uncrop_puts_it_back(
    size: tuple[int, int], offset: tuple[int, int]
) -> None:
    array = np.arange(2 * 6 * 8, dtype=np.float32).reshape(2, 6, 8) + 1
    out = crop_or_pad(array, size, -1.0, offset)
    assert out.shape == (2, *size)
    # pixel (i, j) of the window is pixel (i, j) + the centred window's start + offset of the array, or padding
    y0, x0 = (np.argwhere(crop_or_pad(array, size, -1.0)[0] == array[0, 3, 4])[0] - (3, 4)) * -1 + offset
    for i in range(size[0]):
        for j in range(size[1]):
            inside = 0 <= i + y0 < 6 and 0 <= j + x0 < 8
            assert out[1, i, j] == (array[1, i + y0, j + x0] if inside else -1.0)
    back = uncrop(out, (6, 8), -1.0, offset)
    kept = back != -1.0
    np.testing.assert_array_equal(back[kept], array[kept])  # everything that survived is in its old place
    assert kept.sum() == (out != -1.0).sum()


# -- errors ---------------------------------------------------------------------------------------------------------
def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.nii\.gz"):
        read_volume(tmp_path / "nope.nii.gz")


def test_corrupt_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"this is not a NIfTI file")
    with pytest.raises(DataError, match=r"broken\.nii\.gz"):
        read_volume(path)


def test_2d_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.int16)), str(path))
    with pytest.raises(DataError, match=r"slice.nii.gz: expected a 3D volume, got a 2D"):
        read_volume(path)


def test_4d_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 6), np.int16), isVector=False), str(path))
    with pytest.raises(DataError, match=r"dynamic.nii.gz: expected a 3D volume, got a 4D"):
        read_volume(path)


def test_nan_voxels_are_refused(tmp_path: Path) -> None:
    array = np.zeros((3, 4, 5), np.float32)
    array[1, 2, 3] = np.nan
    array[0, 0, 0] = np.inf
    path = write_volume(Volume(array), tmp_path / "nan.mha")
    with pytest.raises(DataError, match=r"nan.mha: 2 voxels are NaN or infinite"):
        read_volume(path)


def test_empty_folder_is_not_a_dicom_series(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DICOM series"):
        read_volume(tmp_path / "empty")


def test_unknown_suffix_on_write(tmp_path: Path, oblique: Volume) -> None:
    with pytest.raises(DataError, match=r"out.png: unknown volume format"):
        write_volume(oblique, tmp_path / "out.png")


def _folder_named_like_a_file(tmp_path: Path) -> Path:
    (tmp_path / "ct_001.nii.gz").mkdir()
    return tmp_path / "ct_001.nii.gz"


def _mhd_without_its_data(tmp_path: Path) -> Path:
    path = write_volume(Volume(np.zeros((3, 4, 5), np.int16)), tmp_path / "ct.mhd")
    (data,) = [p for p in tmp_path.iterdir() if p.suffix in (".raw", ".zraw")]
    data.unlink()
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [(_folder_named_like_a_file, "no DICOM series"), (_mhd_without_its_data, "cannot read the image")],
    ids=["empty-folder", "mhd-without-data"],
)
def test_itk_prints_nothing_before_our_error(tmp_path: Path, capfd: pytest.CaptureFixture, make, message) -> None:
    """Issue 43: ITK's own lines (``WARNING: In .../itkGDCMSeriesFileNames.cxx, line 101``, ``MetaImage: Read: Cannot
    open data file``) reached the C-level stderr before da_seg's one-line error."""
    path = make(tmp_path)
    capfd.readouterr()
    with pytest.raises(DataError, match=message):
        read_volume(path)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
