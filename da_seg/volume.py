"""`Volume`: a 3D array with its physical geometry, and SimpleITK I/O that keeps that geometry.

Inside the toolkit arrays are ``(z, y, x)`` (slice, row, column) as SimpleITK's ``GetArrayFromImage`` gives them;
``spacing``, ``origin`` and ``direction`` are in SimpleITK's physical ``(x, y, z)`` order, so a Volume written back
is bit-for-bit the geometry it was read with.
"""

from __future__ import annotations

import locale
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from da_seg.errors import DataError
from da_seg.itk_output import quietly

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


def memory_limit() -> int:
    """Bytes one array may take: half of this machine's physical memory (8 GiB where that is unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, ValueError, OSError):
        return 8 << 30


def check_fits(shape: tuple[int, ...], what: str, fix: str, bytes_per_voxel: int = 4) -> None:
    """Refuse (before allocating) an array of ``shape`` that cannot fit in memory: `DataError` naming ``what``
    (the file or grid) and ``fix`` (what to change)."""
    need = int(np.prod([int(n) for n in shape], dtype=object)) * bytes_per_voxel
    if need > memory_limit():
        grid = " x ".join(str(int(n)) for n in shape)
        raise DataError(
            f"{what}: a {grid} voxel grid needs {need / 2**30:.1f} GiB, more than fits in memory "
            f"({memory_limit() / 2**30:.1f} GiB, half of this machine's); {fix}"
        )


def _check_path(path: Path) -> None:
    if not path.exists():
        raise DataError(f"file not found: {path}")


# -- reading and writing ------------------------------------------------------------------------------------------
FILE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def volume_suffix(path: Path) -> str:
    """The format suffix of ``path`` (``.nii.gz`` counts as one), or ``""`` for a folder / unknown name."""
    name = path.name.lower()
    return next((s for s in FILE_SUFFIXES if name.endswith(s)), "")


def volume_id(path: Path) -> str:
    """The case name of a volume file or DICOM folder: the file name without its format suffix."""
    suffix = volume_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DataError(f"{folder}: folder holds no DICOM series (give a volume file or a DICOM series folder)")
    # several series in one folder: take the one with the most files (the main acquisition)
    files = max((reader.GetGDCMSeriesFileNames(str(folder), s) for s in series), key=len)
    if len(files) < 2:
        raise DataError(f"{folder}: the DICOM series has {len(files)} file; a 3D volume needs at least 2 slices")
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    saved = locale.setlocale(locale.LC_ALL)  # GDCM may switch the process locale to "C"; keep the user's
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # uneven slices: ITK's warning becomes our DataError below
    try:
        image = reader.Execute()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)
        locale.setlocale(locale.LC_ALL, saved)
    _check_slice_positions(folder, reader, files)
    return image


def _check_slice_positions(folder: Path, reader: sitk.ImageSeriesReader, files: tuple[str, ...]) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing or duplicated slice): ITK only warns and
    takes one spacing for the whole volume, so every slice after the gap would sit at the wrong depth."""
    try:
        row_col = [float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")]
        positions = np.array(
            [[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")] for i in range(len(files))]
        )
    except (RuntimeError, ValueError):
        return  # no position tags: nothing to check
    if len(row_col) != 6 or positions.shape != (len(files), 3) or len(files) < 3:
        return
    depth = positions @ np.cross(row_col[:3], row_col[3:])
    gaps = np.diff(depth)
    usual = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - usual)))
    if abs(gaps[worst] - usual) > max(0.05 * abs(usual), 0.01):
        raise DataError(
            f"{folder}: DICOM slice positions are not evenly spaced: {abs(gaps[worst]):.2f} mm between "
            f"{Path(files[worst]).name} and {Path(files[worst + 1]).name}, {abs(usual):.2f} mm elsewhere (a slice is "
            "missing or duplicated); export the complete series"
        )


NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 / float64


def _nifti_payload(header: bytes) -> tuple[int, int, str | None] | None:
    """``(vox_offset, data bytes, float dtype or None)`` from a NIfTI-1 or NIfTI-2 header; None if not NIfTI."""
    for order in "<>":
        size = np.frombuffer(header[:4], f"{order}i4")[0]
        if size == 348 and len(header) >= 348:
            dims = np.frombuffer(header[40:56], f"{order}i2").astype(np.int64)
            datatype = int(np.frombuffer(header[70:72], f"{order}i2")[0])
            bitpix = int(np.frombuffer(header[72:74], f"{order}i2")[0])
            offset = int(np.frombuffer(header[108:112], f"{order}f4")[0])
        elif size == 540 and len(header) >= 540:
            dims = np.frombuffer(header[16:80], f"{order}i8")
            datatype = int(np.frombuffer(header[12:14], f"{order}i2")[0])
            bitpix = int(np.frombuffer(header[14:16], f"{order}i2")[0])
            offset = int(np.frombuffer(header[168:176], f"{order}i8")[0])
        else:
            continue
        n = int(np.prod(dims[1 : 1 + int(dims[0])])) if 0 < dims[0] <= 7 else 0
        floats = NIFTI_FLOATS.get(datatype)
        return max(offset, int(size)), n * bitpix // 8, order + floats if floats else None
    return None


def _kind(magic: bytes) -> str:
    """What a file's first bytes say it is, for messages."""
    known = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"II*\x00": "a TIFF image"}
    kind = next((k for m, k in known.items() if magic.startswith(m)), None)
    if kind is None and len(magic) == 4 and 348 in (int.from_bytes(magic, "little"), int.from_bytes(magic, "big")):
        kind = "an uncompressed NIfTI"
    return kind or "not a NIfTI"


def _check_nifti(path: Path) -> None:
    """Read a NIfTI's voxel bytes once more, because ITK is silent on two things that turn data into garbage.

    A truncated file reads without error (the missing voxels are undefined) and NaN voxels read as 0. Here the
    payload length is compared with the header's promise and float voxels are checked for NaN/inf.
    """
    import gzip
    import zlib

    with open(path, "rb") as handle:
        magic = handle.read(4)
    gzipped = magic[:2] == b"\x1f\x8b"
    if path.name.lower().endswith(".gz") != gzipped:
        what = "gzip-compressed" if gzipped else _kind(magic)
        raise DataError(
            f"{path}: the file is {what} but named {volume_suffix(path)}; rename it to match its format "
            "(.nii.gz is a gzip-compressed NIfTI, .nii an uncompressed one) or export it again"
        )
    opener = gzip.open if gzipped else open
    bad = have = nbytes = 0
    try:
        with opener(path, "rb") as handle:
            payload = _nifti_payload(handle.read(540))
            if payload is None:
                raise DataError(
                    f"{path}: not a NIfTI file ({_kind(magic)}); give it its real suffix or export it again"
                )
            offset, nbytes, floats = payload
            handle.seek(offset)
            step = 1 << 24
            while have < nbytes and (chunk := handle.read(min(step, nbytes - have))):
                have += len(chunk)
                if floats and len(chunk) % int(floats[-1]) == 0:
                    bad += int((~np.isfinite(np.frombuffer(chunk, floats))).sum())
    except (EOFError, OSError, zlib.error):
        have = -1
    if have < nbytes:
        raise DataError(
            f"{path}: the file is truncated or damaged (its header promises {nbytes} bytes of voxels); "
            "copy or export it again"
        )
    if bad:
        raise DataError(f"{path}: {bad} voxels are NaN or infinite; replace them (e.g. by the background) and save")


def _read_image(path: Path) -> sitk.Image:
    if path.is_dir():
        return _read_dicom_series(path)
    header = sitk.ImageFileReader()
    header.SetFileName(str(path))
    header.ReadImageInformation()
    size = (*header.GetSize(), header.GetNumberOfComponents())
    check_fits(size, str(path), "the header's image size is wrong or the file is not a single 3D volume")
    return sitk.ReadImage(str(path))


def read_volume(path: str | Path) -> Volume:
    """Read a 3D image or mask: NIfTI, MHA/MHD, NRRD, or a folder holding one DICOM series.

    Raises:
        DataError: naming the file when it is missing, unreadable, not 3D (2D or 4D), multi-component, or holds
            NaN/inf voxels.
    """
    path = Path(path)
    _check_path(path)
    try:
        image = quietly(path, lambda: _read_image(path))
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "ERROR" in line), lines[-1] if lines else "unknown reason")
        raise DataError(
            f"{path}: cannot read the image; it is damaged, truncated or not a supported format "
            f"({reason[:160]}); copy or export it again"
        ) from None
    if volume_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: {image.GetNumberOfComponentsPerPixel()} components per voxel; need a scalar image")
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:  # a 3D volume stored with a singleton 4th axis
        image = image[:, :, :, 0]
        dim = 3
    if dim != 3:
        raise DataError(
            f"{path}: expected a 3D volume, got a {dim}D image of size {image.GetSize()}; give one 3D volume per file"
        )
    volume = Volume.from_sitk(image, path=str(path))
    if volume.array.dtype.kind == "f" and not np.isfinite(volume.array).all():
        bad = int((~np.isfinite(volume.array)).sum())
        raise DataError(f"{path}: {bad} voxels are NaN or infinite; replace them (e.g. by the background) and save")
    return volume


def write_volume(volume: Volume, path: str | Path, *, mask: bool = False) -> Path:
    """Write ``volume`` with its geometry; ``mask=True`` stores uint8 labels.

    The file appears atomically (written to a temporary name with the same extension in the same folder, then
    renamed), so an interrupted run never leaves a half-written volume. ``.mhd`` (two files) is written in place.
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if not suffix:
        raise DataError(f"{path}: unknown volume format; use one of {', '.join(FILE_SUFFIXES)}")
    array = volume.array
    if mask:
        if np.issubdtype(array.dtype, np.floating):
            array = np.rint(array)
        array = array.astype(np.uint8)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    image = Volume(np.ascontiguousarray(array), volume.spacing, volume.origin, volume.direction).to_sitk()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".mhd":
        sitk.WriteImage(image, str(path), useCompression=True)
        return path
    tmp = path.with_name(f".{volume_id(path)}.{os.getpid()}.tmp{suffix}")
    try:
        sitk.WriteImage(image, str(tmp), useCompression=suffix != ".nii", compressionLevel=1)
        os.replace(tmp, path)
    except RuntimeError as err:
        raise DataError(f"{path}: cannot write the image ({str(err).strip().splitlines()[-1][:200]})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def is_volume_folder(path: Path) -> bool:
    """True for a folder of volumes (or one with ``images/``), False for a file or a DICOM series folder."""
    return path.is_dir() and ((path / "images").is_dir() or any(volume_suffix(p) for p in path.iterdir()))


def input_output_pairs(inputs: Path, output: Path) -> list[tuple[Path, Path]]:
    """What `predict` and `translate` write where: ``(inputs, output)`` for one file or DICOM series, or
    ``(volume, output/<case>.nii.gz)`` for every volume of a folder (or of its ``images/``); checked by
    `check_outputs` before anything is written."""
    if not inputs.exists():
        raise DataError(f"input not found: {inputs}")
    if not is_volume_folder(inputs):
        pairs = [(inputs, output)]
    else:
        folder = inputs / "images" if (inputs / "images").is_dir() else inputs
        files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (volume_suffix(p) or p.is_dir()))
        if not files:
            raise DataError(f"{inputs}: no image files found")
        pairs = [(f, output / f"{volume_id(f)}.nii.gz") for f in files]
    check_outputs(pairs)
    return pairs


def check_outputs(pairs: list[tuple[Path, Path]]) -> None:
    """Refuse ``(input, output)`` writes that would overwrite an input (or write into a DICOM input folder), or
    that would put two inputs' results into one file, before anything is written.

    Raises:
        DataError: naming the output and the input it would destroy.
    """
    inputs = [Path(i).resolve() for i, _ in pairs]
    written: dict[Path, Path] = {}
    for source, output in pairs:
        target = Path(output).resolve()
        for inp in inputs:
            same = target == inp or (target.exists() and inp.exists() and os.path.samefile(target, inp))
            if same or inp in target.parents:
                raise DataError(
                    f"{output}: would overwrite the input {inp}; write the output (-o) to another file or folder"
                )
        if target in written:
            raise DataError(
                f"{output}: the inputs {written[target].name} and {Path(source).name} would both be written there; "
                "rename one of them"
            )
        written[target] = Path(source)
