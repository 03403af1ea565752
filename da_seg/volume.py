"""`Volume`: a 3D array with its physical geometry, and SimpleITK I/O that keeps that geometry.

Inside the toolkit arrays are ``(z, y, x)`` (slice, row, column) as SimpleITK's ``GetArrayFromImage`` gives them;
``spacing``, ``origin`` and ``direction`` are in SimpleITK's physical ``(x, y, z)`` order, so a Volume written back
is bit-for-bit the geometry it was read with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from da_seg.errors import DataError

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass
class Volume:
    """An image or mask: ``array`` ``(z, y, x)`` plus geometry in SimpleITK's ``(x, y, z)`` order.

    Attributes:
        array: voxel values, ``(z, y, x)``.
        spacing: voxel size in mm, ``(x, y, z)``.
        origin: physical position of voxel (0, 0, 0), ``(x, y, z)`` mm.
        direction: 3x3 direction cosines, row-major, 9 floats.
        meta: free-form provenance (source path, modality, ...); not written to files.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise DataError(f"a Volume needs a 3D array (z, y, x), got shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        self.direction = tuple(float(d) for d in self.direction)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.array.shape  # type: ignore[return-value]

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array order, for distance computations on ``array``."""
        return self.spacing[::-1]  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, **meta: Any) -> Volume:
        """Same geometry, new voxels (e.g. a mask or a translated image)."""
        if array.shape != self.array.shape:
            raise DataError(f"new array shape {array.shape} differs from the volume's {self.array.shape}")
        return replace(self, array=array, meta={**self.meta, **meta})

    def same_geometry(self, other: Volume, tol: float = 1e-4) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    # -- SimpleITK bridge ---------------------------------------------------------------------------------------
    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, **meta: Any) -> Volume:
        if image.GetDimension() != 3:
            raise DataError(f"{meta.get('path', 'image')}: expected a 3D volume, got {image.GetDimension()}D")
        return cls(
            array=sitk.GetArrayFromImage(image),
            spacing=image.GetSpacing(),
            origin=image.GetOrigin(),
            direction=image.GetDirection(),
            meta=meta,
        )


def _check_path(path: Path) -> None:
    if not path.exists():
        raise DataError(f"file not found: {path}")
