"""Extent matching: the slices of each target volume (CT) that hold the source images' (MR) anatomy.

A prostate MR covers 8-10 cm along the body; a planning CT 30-40 cm, abdomen to thighs. Trained on whole CTs, the
translator learns the abdomen's slices too and the segmenters find their "prostate" wherever the CT looks most
like the SynCT (on a real CT: the bladder, issue 41). With ``data.extent`` set, every target-domain volume on the
common grid is cut to the slab that corresponds to the MR's field of view before the translator or a segmenter sees
it; masks are still written on the whole CT grid, empty outside the slab (`da_seg.data.Domain.restore`).

Extent matchers are registered in `EXTENTS` (``register_extents`` hook). Each is a callable
``matcher(case, references, spacing_zyx) -> (start, stop)``: the slice range of the prepared target ``case`` on the
common grid, given ``references`` (prepared source images, ``(z, H, W)`` in [-1, 1]) and the grid's spacing. Two are
built in (ours):

* ``mutual_information``: slides the source images along the target's body axis and keeps the offset where the
  mutual information of their intensities is highest (summed over a few source images), plus a margin. Mutual
  information is the usual similarity of images from two modalities: it needs no CT labels and no translator;
* ``box``: a slab given in millimetres of the target's patient z coordinate (LPS, superior positive), the fallback
  where the CTs share a frame of reference and the automatic match fails;
* ``whole``: every slice, as without ``data.extent`` (the baseline of a study's grid).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from da_seg.data import PreparedCase
from da_seg.errors import ConfigError, DataError
from da_seg.hookspecs import hookimpl


class ExtentNotAppliedWarning(UserWarning):
    """A model trained on slabs cut by ``data.extent`` segments a whole image (`daseg predict`): the source images
    the slab was matched against are not saved with the model."""


BINS = 32
"""Intensity bins of the joint histogram (on [-1, 1])."""


def _bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Values in [-1, 1] as bin indices ``0 .. bins - 1``."""
    return np.clip(((values + 1.0) * 0.5 * bins).astype(np.int64), 0, bins - 1)


def _binned_information(ia: np.ndarray, ib: np.ndarray, bins: int) -> float:
    """Mutual information (nats) of two equally long arrays of bin indices, from their joint histogram."""
    joint = np.bincount(ia * bins + ib, minlength=bins * bins).reshape(bins, bins).astype(np.float64)
    joint /= max(joint.sum(), 1.0)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int = BINS) -> float:
    """Mutual information (nats) of two equally long arrays of values in [-1, 1], from their joint histogram."""
    return _binned_information(_bins(a, bins), _bins(b, bins), bins)


@dataclass(frozen=True)
class MutualInformation:
    """The target slab where the source images' intensities tell most about the target's (mutual information).

    Args:
        margin_mm: kept on each side of the matched slab, so a match a slice or two off still holds the anatomy.
        references: how many source images (the first, in name order) are matched; their scores are summed, so
            one unusual subject does not decide.
        stride: in-plane subsampling of the voxels scored (speed; the match is along the body axis).
    """

    margin_mm: float = 15.0
    references: int = 4
    stride: int = 2

    def __post_init__(self) -> None:
        if self.margin_mm < 0 or self.references < 1 or self.stride < 1:
            raise ConfigError(
                f"extent mutual_information: margin_mm >= 0, references >= 1 and stride >= 1 (got {self.margin_mm}, "
                f"{self.references}, {self.stride})"
            )

    def profile(self, image: np.ndarray, references: list[np.ndarray]) -> np.ndarray:
        """The summed mutual information at every start slice where the shortest reference fits inside ``image``
        (at least as long as it).

        Each reference is scored only on its own field of view (voxels above its padding, -1), so an MR's padding
        around a small field of view counts for nothing."""
        refs = references[: self.references]
        length = min(r.shape[0] for r in refs)
        scores = np.zeros(image.shape[0] - length + 1)
        s = self.stride
        target = _bins(image[:, ::s, ::s], BINS)
        for ref in refs:
            ref = ref[:length, ::s, ::s]
            inside = ref > -1.0 + 1e-3
            values = _bins(ref[inside], BINS)  # once per reference, not once per offset
            for k in range(len(scores)):
                scores[k] += _binned_information(values, target[k : k + length][inside], BINS)
        return scores

    def __call__(
        self, case: PreparedCase, references: list[np.ndarray], spacing_zyx: tuple[float, float, float]
    ) -> tuple[int, int]:
        if not references:
            raise DataError("extent matching needs source images to match against; none were given")
        slices = case.image.shape[0]
        length = min(r.shape[0] for r in references[: self.references])
        if slices <= length:
            return 0, slices
        start = int(np.argmax(self.profile(case.image, references)))
        margin = round(self.margin_mm / spacing_zyx[0])
        return max(0, start - margin), min(slices, start + length + margin)


@dataclass(frozen=True)
class Box:
    """A slab given in the target's patient z coordinate (mm, LPS: superior positive), ``z_mm = [low, high]``."""

    z_mm: tuple[float, float]

    def __post_init__(self) -> None:
        low, high = self.z_mm
        if not high > low:
            raise ConfigError(f"extent box: z_mm = [low, high] with high > low, got {list(self.z_mm)}")

    def __call__(
        self, case: PreparedCase, references: list[np.ndarray], spacing_zyx: tuple[float, float, float]
    ) -> tuple[int, int]:
        grid = case.grid
        z = grid.origin[2] + np.arange(grid.shape[0]) * grid.spacing[2] * grid.direction[8]
        inside = np.flatnonzero((z >= self.z_mm[0]) & (z <= self.z_mm[1]))
        if inside.size == 0:
            raise DataError(
                f"case {case.id}: data.extent box z_mm {list(self.z_mm)} misses the image (its slices lie at "
                f"{z.min():.1f} .. {z.max():.1f} mm); give a box inside every target image"
            )
        return int(inside[0]), int(inside[-1]) + 1


def crop_slices(case: PreparedCase, region: tuple[int, int]) -> PreparedCase:
    """``case`` cut to slices ``[start, stop)`` of its common grid; `Domain.restore` puts them back in place."""
    start, stop = region
    if not 0 <= start < stop <= case.image.shape[0]:
        raise DataError(f"case {case.id}: slice range {list(region)} is outside its {case.image.shape[0]} slices")
    before = case.z_range[0] if case.z_range else 0
    mask = None if case.mask is None else case.mask[start:stop]
    return replace(case, image=case.image[start:stop], mask=mask, z_range=(before + start, before + stop))


def match_extent(
    matcher: Any, cases: list[PreparedCase], references: list[np.ndarray], spacing_zyx: tuple[float, float, float]
) -> list[PreparedCase]:
    """Every case cut to the slab ``matcher`` finds in it."""
    return [crop_slices(case, matcher(case, references, spacing_zyx)) for case in cases]


def extent_line(name: str, cases: list[PreparedCase]) -> str:
    """One log line: how much of the target images extent matching kept, and where (the first few cases)."""
    kept = [(c.id, c.z_range, c.grid.shape[0]) for c in cases if c.z_range]
    if not kept:
        return f"extent ({name}): no target image to cut"
    share = np.median([(stop - start) / total for _, (start, stop), total in kept])
    where = ", ".join(f"{i} [{a}, {b}) of {n}" for i, (a, b), n in kept[:3]) + (" ..." if len(kept) > 3 else "")
    return f"extent ({name}): target images cut to the slices that hold the source anatomy ({share:.0%} kept): {where}"


def whole(case: PreparedCase, references: list[np.ndarray], spacing_zyx: tuple[float, float, float]) -> tuple[int, int]:
    """Every slice: no cut (the baseline a study compares a matcher against)."""
    return 0, case.image.shape[0]


def mutual_information_matcher(margin_mm: float = 15.0, references: int = 4, stride: int = 2) -> MutualInformation:
    """Registered as ``mutual_information``."""
    return MutualInformation(float(margin_mm), int(references), int(stride))


def box_matcher(z_mm: list[float] | tuple[float, float]) -> Box:
    """Registered as ``box``."""
    if len(z_mm) != 2:
        raise ConfigError(f"extent box: z_mm = [low, high] in mm, got {z_mm!r}")
    return Box((float(z_mm[0]), float(z_mm[1])))


@hookimpl
def register_extents(register: Any) -> None:
    register("mutual_information", mutual_information_matcher)
    register("box", box_matcher)
    register("whole", lambda: whole)
