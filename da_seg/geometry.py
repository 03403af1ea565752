"""Geometry for the common grid: canonical orientation, resampling (linear; nearest for masks), in-plane crop/pad
and its inverse. Every function keeps a `Volume`'s physical geometry consistent with its array."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from da_seg.volume import (
    Volume,
    check_fits,
)

CANONICAL = "LPS"


def _grid(volume: Volume, pixel: int = sitk.sitkUInt8) -> sitk.Image:
    """An image with ``volume``'s grid (size, spacing, origin, direction) that never copies its array."""
    z, y, x = volume.shape
    image = sitk.Image([int(x), int(y), int(z)], pixel)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    return image


def geometry_only(volume: Volume) -> Volume:
    """``volume``'s grid with a zero-cost placeholder array (for restoring predictions onto it later)."""
    placeholder = np.broadcast_to(np.zeros((), np.uint8), volume.shape)
    return Volume(placeholder, volume.spacing, volume.origin, volume.direction, dict(volume.meta))


def to_canonical(volume: Volume) -> Volume:
    """Permute and flip axes so the array is in the one canonical orientation (LPS, SimpleITK's DICOM default).

    Only axis order and sign change (no interpolation); an oblique acquisition stays oblique by its residual
    rotation, which later resampling respects.
    """
    image = sitk.DICOMOrient(volume.to_sitk(), CANONICAL)
    return Volume.from_sitk(image, **volume.meta)


def _resample(volume: Volume, reference: sitk.Image, mask: bool) -> Volume:
    image = volume.to_sitk()
    if mask:
        out = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    else:
        if volume.array.dtype != np.float32:
            image = sitk.Cast(image, sitk.sitkFloat32)
        background = float(volume.array.min()) if volume.array.size else 0.0
        out = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, background, sitk.sitkFloat32)
    return Volume.from_sitk(out, **volume.meta)


def resampled_shape(volume: Volume, spacing_zyx: tuple[float, float, float]) -> tuple[int, int, int]:
    """The ``(z, y, x)`` shape `resample` gives: the same physical extent at ``spacing_zyx`` (at least 1 voxel)."""
    extent = np.asarray(volume.shape) * np.asarray(volume.spacing_zyx)
    return tuple(int(n) for n in np.maximum(1, np.round(extent / np.asarray(spacing_zyx, dtype=float))))  # type: ignore[return-value]


def resample(volume: Volume, spacing_zyx: tuple[float, float, float], *, mask: bool = False) -> Volume:
    """Resample to ``spacing_zyx`` (mm) keeping the physical extent (the outer voxel edges) and direction.

    Images use linear interpolation (float32 out); masks nearest neighbour (dtype kept).
    """
    new = np.asarray(spacing_zyx[::-1], dtype=float)  # (x, y, z)
    old = np.asarray(volume.spacing)
    new_size = np.asarray(resampled_shape(volume, spacing_zyx)[::-1])
    where = str(volume.meta.get("path", "volume"))
    check_fits(tuple(new_size[::-1]), f"{where} at {list(spacing_zyx)} mm", "use a coarser spacing (data.spacing)")
    direction = np.asarray(volume.direction).reshape(3, 3)
    # first voxel centre moves by half the spacing change so the outer edges stay where they were
    origin = np.asarray(volume.origin) + direction @ ((new - old) / 2)
    reference = sitk.Image([int(s) for s in new_size], sitk.sitkUInt8)
    reference.SetSpacing([float(s) for s in new])
    reference.SetOrigin([float(o) for o in origin])
    reference.SetDirection(volume.direction)
    return _resample(volume, reference, mask)


def resample_to(volume: Volume, reference: Volume, *, mask: bool = False) -> Volume:
    """Resample ``volume`` onto ``reference``'s grid in physical space (any direction; reference's array unused).

    Used to bring a prediction made on the common grid back to the original image's grid. Outside ``volume``
    images get its minimum value, masks 0.
    """
    return _resample(volume, _grid(reference), mask)


def _centred_start(current: int, target: int) -> int:
    """Where a centred window of length ``target`` starts on an axis of length ``current`` (< 0: padding)."""
    return (current - target) // 2 if current >= target else -((target - current) // 2)


def _window(array: np.ndarray, starts: tuple[int, int], size_hw: tuple[int, int], value: float) -> np.ndarray:
    """The ``size_hw`` window of the last two axes starting at ``starts``; what lies outside ``array`` is ``value``."""
    out = np.full((*array.shape[:-2], *size_hw), value, dtype=array.dtype)
    src, dst = [], []
    for start, size, length in zip(starts, size_hw, array.shape[-2:], strict=True):
        lo, hi = max(start, 0), min(start + size, length)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - start, max(hi, lo) - start))
    out[(..., *dst)] = array[(..., *src)]
    return out


def crop_or_pad(
    array: np.ndarray, size_hw: tuple[int, int], value: float, offset_hw: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Crop or pad the last two axes to ``size_hw`` with ``value``, centred on the array's centre moved by
    ``offset_hw`` pixels (``uncrop`` with the same offset inverts it).

    Shape:
        ``(..., H, W)`` -> ``(..., size_hw[0], size_hw[1])``.
    """
    size_hw = (int(size_hw[0]), int(size_hw[1]))
    starts = tuple(
        _centred_start(length, size) + int(offset)
        for length, size, offset in zip(array.shape[-2:], size_hw, offset_hw, strict=True)
    )
    return _window(array, starts, size_hw, value)


def uncrop(
    array: np.ndarray, original_hw: tuple[int, int], value: float, offset_hw: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Undo `crop_or_pad`: put the window back where it was taken from, ``value`` where nothing was kept.

    Shape:
        ``(..., h, w)`` -> ``(..., original_hw[0], original_hw[1])``.
    """
    original_hw = (int(original_hw[0]), int(original_hw[1]))
    starts = tuple(
        -(_centred_start(length, size) + int(offset))
        for length, size, offset in zip(original_hw, array.shape[-2:], offset_hw, strict=True)
    )
    return _window(array, starts, original_hw, value)
