"""Data sets on disk and their preprocessing onto the task's common grid.

A data folder holds ``images/`` and (when labelled) ``labels/`` whose entries match by name, in any format
`read_volume` reads (a DICOM series is a sub-folder), or a ``manifest.csv`` with columns ``image,label`` (paths
relative to the folder). `Domain.prepare` brings a volume onto the common grid: canonical orientation -> resample to
the task spacing -> intensity to [-1, 1] -> crop/pad in-plane around the grid's or the body's centre;
`Domain.restore` undoes it, back onto the original file's grid. `da_seg.prepared.load_prepared` keeps the prepared
arrays in an on-disk cache, so a second run reads ``.npy`` files instead of DICOM. See docs/data.md.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from da_seg.errors import DataError
from da_seg.geometry import crop_or_pad, geometry_only, resample, resample_to, resampled_shape, to_canonical, uncrop
from da_seg.volume import FILE_SUFFIXES, Volume, check_fits, volume_id, volume_suffix

MANIFEST = "manifest.csv"
MIN_INPLANE = 4
"""Fewest in-plane pixels a volume may cover on the common grid (fewer: a line or a point, not an image)."""
MIN_SLICES = 2
"""Fewest slices a volume of a run may have on the common grid: the 2.5D networks read each slice with its
neighbours (``context`` each side), and a single slice has none (its stack would repeat it ``2c+1`` times), as in
a DICOM series, which `da_seg.volume.read_volume` refuses with fewer than 2 files."""


class EmptyMaskWarning(UserWarning):
    """A labelled training case whose mask has no foreground voxel."""


class BlankImageWarning(UserWarning):
    """An image whose voxels all hold one value: blank, or exported wrongly."""


@dataclass(frozen=True)
class Case:
    """One subject on disk: an image (file or DICOM folder) and, when labelled, its mask file."""

    id: str
    image: Path
    label: Path | None = None
    binary: bool = False


@dataclass
class PreparedCase:
    """A case on the common grid, ready for the networks.

    Attributes:
        id: case name (file name without format suffix).
        image: ``(z, H, W)`` float32 in [-1, 1].
        mask: ``(z, H, W)`` uint8 labels, or None.
        original: the source file's grid (array is a zero-cost placeholder).
        grid: the resampled, canonical grid before the in-plane crop/pad (placeholder array).
        stats: the intensity preset's per-volume statistics (MR percentiles), for `Domain.restore`.
        offset_hw: where the in-plane crop was centred, in pixels from the grid's centre (body centring).
        constant: the source image's one value when every voxel holds it (a blank image), else None.
        z_range: the slices ``[start, stop)`` of ``grid`` that ``image`` holds when extent matching cut it
            (`da_seg.extent`), else None (all of them).
    """

    id: str
    image: np.ndarray
    mask: np.ndarray | None
    original: Volume
    grid: Volume
    stats: dict[str, float] = field(default_factory=dict)
    offset_hw: tuple[int, int] = (0, 0)
    constant: float | None = None
    z_range: tuple[int, int] | None = None


class Domain:
    """The common grid of a task for one modality: spacing, in-plane size and intensity preset.

    Args:
        spacing_zyx: target spacing in mm, ``(z, y, x)``.
        size_hw: in-plane size after the crop/pad.
        intensity: an intensity preset (``forward``/``inverse``/``fit``/``padding_value``).
        centre: where the crop is centred: ``"grid"`` (the volume's centre) or ``"body"`` (the body's centroid,
            `body_offset`). A CT's field of view is centred on the scanner table, an MR's on the organ, so centring
            on the grid puts the same anatomy tens of pixels apart in the two domains, and a CycleGAN then learns to
            move anatomy instead of translating it; centring both on the body lines them up.
        extent: the ``data.extent`` spec the run cut its target images with (`da_seg.extent`), kept so that a
            saved model can say that it was trained on slabs; `prepare` itself does not cut.
    """

    CENTRES = ("grid", "body")

    def __init__(
        self,
        spacing_zyx: tuple[float, float, float],
        size_hw: tuple[int, int],
        intensity: Any,
        centre: str = "grid",
        extent: dict[str, Any] | None = None,
    ) -> None:
        if centre not in self.CENTRES:
            raise DataError(f"crop centre must be one of {self.CENTRES}, got {centre!r}")
        self.spacing_zyx = tuple(float(s) for s in spacing_zyx)
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self.intensity = intensity
        self.centre = centre
        self.extent = dict(extent) if extent else None

    @property
    def grid_settings(self) -> dict[str, Any]:
        """What the prepared arrays depend on (the prepared cache's key): not ``extent``, which cuts them later."""
        intensity = getattr(self.intensity, "settings", repr(self.intensity))
        settings = {"spacing_zyx": list(self.spacing_zyx), "size_hw": list(self.size_hw), "intensity": intensity}
        return settings | ({"centre": self.centre} if self.centre != "grid" else {})  # older keys stay valid

    @property
    def settings(self) -> dict[str, Any]:
        """Everything that rebuilds this domain (`from_settings`; saved beside trained models)."""
        return self.grid_settings | ({"extent": self.extent} if self.extent else {})

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Domain:
        """Rebuild a domain from `settings` (saved beside trained models so they can prepare raw files)."""
        from da_seg.registry import INTENSITIES

        try:
            return cls(
                tuple(settings["spacing_zyx"]),
                tuple(settings["size_hw"]),
                INTENSITIES.build(dict(settings["intensity"])),
                settings.get("centre", "grid"),
                settings.get("extent"),
            )
        except (KeyError, TypeError) as err:
            raise DataError(f"saved data domain is incomplete ({err}); retrain the model in the pipeline") from None

    def prepare(self, volume: Volume, mask: Volume | None = None, *, id: str | None = None) -> PreparedCase:
        """Canonical orientation -> resample (linear; mask nearest) -> normalise -> crop/pad to ``size_hw``
        around the grid's centre or the body's (``centre``).

        The intensity preset's optional ``check(array, source)`` sees the raw values first, so a CT not in HU or an
        MR/CT swap is refused (`DataError` naming the file) before anything is trained on it.

        Shape:
            image ``(z', H, W)`` float32 in [-1, 1]; mask ``(z', H, W)`` uint8 or None.
        """
        source = str(volume.meta.get("path", id or "volume"))
        check = getattr(self.intensity, "check", None)
        if callable(check):
            check(volume.array, source)
        canonical = to_canonical(volume)
        z, h, w = resampled_shape(canonical, self.spacing_zyx)
        if min(h, w) < MIN_INPLANE:
            raise DataError(
                f"{source}: covers only {h} x {w} pixels in-plane on the common grid ({volume.shape[2]} x "
                f"{volume.shape[1]} voxels of {volume.spacing[0]:g} x {volume.spacing[1]:g} mm at "
                f"{self.spacing_zyx[1]:g} mm); the networks need at least {MIN_INPLANE}: check the file's spacing "
                "or give the whole image"
            )
        check_fits((z, *self.size_hw), f"{source} cropped to data.size {list(self.size_hw)}", "use a smaller data.size")
        grid = resample(canonical, self.spacing_zyx)
        correct = getattr(self.intensity, "correct", None)
        grid = correct(grid) if callable(correct) else grid  # e.g. an MR bias field divided out
        stats = self.intensity.fit(grid.array)
        normalised = self.intensity.forward(grid.array, stats)
        padding = self.intensity.padding_value
        offset = body_offset(normalised, padding) if self.centre == "body" else (0, 0)
        image = crop_or_pad(normalised, self.size_hw, padding, offset)
        prepared_mask = None
        if mask is not None:
            resampled = resample_to(to_canonical(mask), grid, mask=True)
            prepared_mask = crop_or_pad(resampled.array.astype(np.uint8), self.size_hw, 0, offset)
        name = id or volume_id(Path(str(volume.meta.get("path", "case"))))
        return PreparedCase(
            name, image.astype(np.float32), prepared_mask, geometry_only(volume), geometry_only(grid), stats, offset
        )

    def restore(self, array: np.ndarray, case: PreparedCase, *, mask: bool) -> Volume:
        """Bring an array on the common grid back onto ``case``'s original grid (and units, for images).

        Shape:
            ``(z', H, W)`` -> the original file's ``(z, y, x)``.
        """
        slices = case.image.shape[0] if case.z_range else case.grid.shape[0]
        if array.shape[0] != slices or tuple(array.shape[1:]) != self.size_hw:
            raise DataError(f"case {case.id}: array {array.shape} is not on the common grid {(slices, *self.size_hw)}")
        hw = case.grid.shape[1:]
        if case.z_range:  # extent matching kept these slices: the rest of the grid holds nothing
            fill = 0 if mask else self.intensity.padding_value
            start, stop = case.z_range
            around = ((start, case.grid.shape[0] - stop), (0, 0), (0, 0))
            array = np.pad(np.asarray(array), around, constant_values=fill)
        if mask:
            on_grid = case.grid.with_array(uncrop(np.asarray(array).astype(np.uint8), hw, 0, case.offset_hw))
            return resample_to(on_grid, case.original, mask=True)
        values = uncrop(np.asarray(array, dtype=np.float32), hw, self.intensity.padding_value, case.offset_hw)
        on_grid = case.grid.with_array(self.intensity.inverse(values, case.stats or None))
        return resample_to(on_grid, case.original)

    def __repr__(self) -> str:
        return (
            f"Domain(spacing_zyx={self.spacing_zyx}, size_hw={self.size_hw}, intensity={self.intensity!r}, "
            f"centre={self.centre!r})"
        )


def body_offset(image: np.ndarray, background: float) -> tuple[int, int]:
    """In-plane offset (pixels, from the grid's centre) of the body's centroid in a normalised ``(z, H, W)`` volume.

    The body is the largest connected region a little above the background level (CT: -400 HU in the default
    window), opened so that thin things (the table's shell, coil cables) detach from it. A volume with no body
    keeps the grid's centre.
    """
    body = ndimage.binary_opening(image > background + 0.2, np.ones((1, 3, 3), bool), iterations=2)
    labels, count = ndimage.label(body)
    if count == 0:
        return (0, 0)
    sizes = ndimage.sum_labels(body, labels, range(1, count + 1))
    _, y, x = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    return (round(float(y.mean()) - (image.shape[1] - 1) / 2), round(float(x.mean()) - (image.shape[2] - 1) / 2))


# -- finding cases ----------------------------------------------------------------------------------------------
def _entries(folder: Path) -> dict[str, Path]:
    """Volume files and DICOM sub-folders of ``folder`` by case id (hidden files and .raw/.zraw data skipped)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not (path.is_dir() or volume_suffix(path)):
            continue
        if path.is_symlink():
            _check_link(path)
        key = volume_id(path)
        if key in found:
            raise DataError(f"{folder}: two entries for case '{key}' ({found[key].name}, {path.name}); keep one")
        found[key] = path
    return found


def _check_link(path: Path) -> None:
    """A symlinked entry must lead to a file or a folder that does not contain it (no loop, not dangling)."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise DataError(f"{path}: a symlink loop or a broken link; remove it or point it at the image") from None
    folder = path.parent.resolve()
    if target.is_dir() and (target == folder or target in folder.parents):
        raise DataError(f"{path}: links back to {target}, a folder that contains it (a symlink loop); remove it")


def _from_manifest(folder: Path, manifest: Path, labelled: bool, binary: bool) -> list[Case]:
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        need = {"image", "label"} if labelled else {"image"}
        if not need <= columns:
            raise DataError(f"{manifest}: needs columns {', '.join(sorted(need))}, has {', '.join(sorted(columns))}")
        cases = []
        for row_number, row in enumerate(reader, start=2):
            image = folder / row["image"].strip()
            label = folder / row["label"].strip() if labelled and (row.get("label") or "").strip() else None
            if labelled and label is None:
                raise DataError(f"{manifest}, line {row_number}: image {image.name} has no label")
            for path in (image, label):
                if path is not None and not path.exists():
                    raise DataError(f"{manifest}, line {row_number}: file not found: {path}")
            cases.append(Case(volume_id(image), image, label, binary))
    if not cases:
        raise DataError(f"{manifest}: lists no cases")
    return cases


def find_cases(folder: str | Path, *, labelled: bool, binary: bool = False) -> list[Case]:
    """The cases of a data folder (``images/`` + ``labels/`` by matching names, or ``manifest.csv``).

    Args:
        folder: the data folder.
        labelled: every image needs a label (and every label an image).
        binary: masks must hold only 0 and 1 (checked when loaded).

    Raises:
        DataError: missing or empty folder, an image without label or a label without image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}; fix the path in the config's [data] table")
    if (folder / MANIFEST).is_file():
        return _from_manifest(folder, folder / MANIFEST, labelled, binary)
    images_dir = folder / "images"
    if not images_dir.is_dir():
        raise DataError(f"{folder}: needs an images/ folder (or {MANIFEST}); see docs/data.md")
    images = _entries(images_dir)
    if not images:
        raise DataError(
            f"{images_dir}: no volumes found; put the images there ({', '.join(FILE_SUFFIXES)} or DICOM folders)"
        )
    if not labelled:
        return [Case(k, p, None, binary) for k, p in images.items()]
    labels_dir = folder / "labels"
    if not labels_dir.is_dir():
        raise DataError(f"{folder}: labelled data needs a labels/ folder next to images/")
    labels = _entries(labels_dir)
    if missing := sorted(set(images) - set(labels)):
        more = " ..." * (len(missing) > 5)
        raise DataError(
            f"{labels_dir}: no label for image(s) {', '.join(missing[:5])}{more}; add a label with the image's file "
            "name or move the image out"
        )
    if orphans := sorted(set(labels) - set(images)):
        more = " ..." * (len(orphans) > 5)
        raise DataError(
            f"{images_dir}: no image for label(s) {', '.join(orphans[:5])}{more}; add the image or move the label out"
        )
    return [Case(k, images[k], labels[k], binary) for k in images]


def check_mask(mask: Volume, image: Volume, case: Case) -> np.ndarray:
    """The mask as uint8 after checking it against its image; DataError naming the label file otherwise."""
    label = case.label
    if not mask.same_geometry(image, tol=1e-2):
        differs = [
            f"{what} {fmt(mask)} vs {fmt(image)}"
            for what, fmt in (
                ("size", lambda v: list(v.shape[::-1])),
                ("spacing", lambda v: np.round(v.spacing, 3).tolist()),
                ("origin", lambda v: np.round(v.origin, 2).tolist()),
                ("direction", lambda v: np.round(v.direction, 3).tolist()),
            )
            if fmt(mask) != fmt(image)
        ] or ["geometry within 0.01 of each other"]
        raise DataError(
            f"{label}: geometry differs from its image {case.image.name} ({'; '.join(differs)}); "
            "resample the label onto its image's grid"
        )
    values = np.unique(mask.array)
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise DataError(f"{label}: mask has non-integer values {values[:6].tolist()}; save integer labels")
    allowed = {0, 1} if case.binary else set(range(256))
    if bad := sorted({float(v) for v in values} - allowed):
        what = "a binary task needs 0 and 1 only" if case.binary else "labels must be 0..255"
        raise DataError(f"{label}: mask values {values[:10].tolist()} ({what}; offending {bad[:5]}); relabel it")
    array = mask.array.astype(np.uint8)
    if not array.any():
        warnings.warn(f"{label}: mask is empty (no foreground voxel)", EmptyMaskWarning, stacklevel=3)
    elif image.array.min() == image.array.max():
        raise DataError(
            f"{case.image}: the image is constant (every voxel {image.array.flat[0]}) but its label marks "
            f"{int(np.count_nonzero(array))} voxels; the image is blank or was exported wrongly: export it again"
        )
    return array
