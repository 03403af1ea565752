"""Cases prepared on the common grid (`prepare_case`) and their on-disk cache (`load_prepared`): a second run with
the same files and grid reads only `.npy` arrays."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from da_seg.data import (
    MIN_SLICES,
    BlankImageWarning,
    Case,
    Domain,
    EmptyMaskWarning,
    PreparedCase,
    check_mask,
)
from da_seg.errors import DataError
from da_seg.volume import Volume, read_volume

CACHE_VERSION = 1


def file_stamp(path: Path | None) -> Any:
    """A file's (or a DICOM folder's files') identity: resolved path, and each file's name, mtime and size."""
    if path is None:
        return None
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return [str(path.resolve()), [(f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.is_file()]]


def cache_key(case: Case, domain: Domain) -> str:
    """Changes when a file (path, mtime, size), the domain settings or the cache format change."""
    payload = {
        "v": CACHE_VERSION,
        "image": file_stamp(case.image),
        "label": file_stamp(case.label),
        "binary": case.binary,
    }
    text = json.dumps({**payload, "domain": domain.grid_settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _geometry(volume: Volume) -> dict[str, Any]:
    return {
        "shape": list(volume.shape),
        "spacing": volume.spacing,
        "origin": volume.origin,
        "direction": volume.direction,
    }


def _placeholder(geometry: dict[str, Any]) -> Volume:
    shape = tuple(geometry["shape"])
    return Volume(
        np.broadcast_to(np.zeros((), np.uint8), shape), geometry["spacing"], geometry["origin"], geometry["direction"]
    )


def _save(folder: Path, prepared: PreparedCase) -> None:
    try:
        _write_prepared(folder, prepared)
    except OSError as err:  # a full disk or read-only cache: one line naming the folder
        from da_seg.files import os_error

        raise (os_error(err, folder) or err) from None


def _write_prepared(folder: Path, prepared: PreparedCase) -> None:
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "image.npy", prepared.image)
    if prepared.mask is not None:
        np.save(tmp / "mask.npy", prepared.mask)
    meta = {
        "id": prepared.id,
        "original": _geometry(prepared.original),
        "grid": _geometry(prepared.grid),
        "stats": prepared.stats,
        "offset_hw": list(prepared.offset_hw),
    } | ({"constant": prepared.constant} if prepared.constant is not None else {})
    (tmp / "case.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(folder, ignore_errors=True)  # a damaged folder under this key
    try:
        os.replace(tmp, folder)
    except OSError as err:
        # another process (a study part of another seed) wrote the same key in the meantime: the same data, keep it
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) or _load(folder) is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _load(folder: Path) -> PreparedCase | None:
    try:
        meta = json.loads((folder / "case.json").read_text())
        image = np.load(folder / "image.npy")
        mask = np.load(folder / "mask.npy") if (folder / "mask.npy").exists() else None
    except (OSError, ValueError, KeyError):
        return None
    offset = tuple(meta.get("offset_hw", (0, 0)))
    original, grid = _placeholder(meta["original"]), _placeholder(meta["grid"])
    return PreparedCase(meta["id"], image, mask, original, grid, meta["stats"], offset, meta.get("constant"))


def _warn_blank(case: Case, value: float) -> None:
    message = f"{case.image}: the image is constant (every voxel {value:g}); it is blank or was exported wrongly"
    warnings.warn(message, BlankImageWarning, stacklevel=3)


def _check_slices(case: Case, prepared: PreparedCase, domain: Domain) -> None:
    """Refuse a volume with fewer than `MIN_SLICES` slices on the common grid (a single slice saved as 3D)."""
    depth = prepared.image.shape[0]
    if depth < MIN_SLICES:
        original = prepared.original
        raise DataError(
            f"{case.image}: only {depth} slice on the common grid ({' x '.join(map(str, original.shape[::-1]))} "
            f"voxels of {' x '.join(f'{s:g}' for s in original.spacing)} mm, at {domain.spacing_zyx[0]:g} mm "
            f"slices); the 2.5D networks read each slice with its neighbours, so a volume needs at least "
            f"{MIN_SLICES}: give the whole volume, not one slice (or a finer data.spacing)"
        )


def prepare_case(case: Case, domain: Domain) -> PreparedCase:
    """Read one case (checking its mask) and put it on ``domain``'s grid; a constant (blank) image is warned about
    (`BlankImageWarning`), and refused when its label marks voxels."""
    image = read_volume(case.image)
    mask = None
    if case.label is not None:
        label = read_volume(case.label)
        mask = label.with_array(check_mask(label, image, case))
    prepared = domain.prepare(image, mask, id=case.id)
    if image.array.size and image.array.min() == image.array.max():
        prepared.constant = float(image.array.flat[0])
        _warn_blank(case, prepared.constant)
    return prepared


def load_prepared(cases: list[Case], domain: Domain, cache_dir: str | Path | None = None) -> list[PreparedCase]:
    """Prepare every case, reusing ``cache_dir/<key>/`` (``image.npy``, ``mask.npy``, ``case.json``) when fresh.

    The key covers the files (path, mtime, size) and the domain settings, so an edited file or another grid is
    prepared again; a second run with the same data reads only ``.npy`` files. A cached case warns as its files did
    (an empty mask, a blank image).

    Raises:
        DataError: a file is unreadable or inconsistent, or a volume has fewer than `MIN_SLICES` slices on the grid.
    """
    prepared = []
    for case in cases:
        folder = None if cache_dir is None else Path(cache_dir) / f"{case.id}-{cache_key(case, domain)}"
        cached = _load(folder) if folder is not None and folder.is_dir() else None
        if cached is None:
            fresh = prepare_case(case, domain)
            _check_slices(case, fresh, domain)
            if folder is not None:
                _save(folder, fresh)
            prepared.append(fresh)
            continue
        _check_slices(case, cached, domain)
        if cached.mask is not None and case.label is not None and not cached.mask.any():
            warnings.warn(f"{case.label}: mask is empty (no foreground voxel)", EmptyMaskWarning, stacklevel=2)
        if cached.constant is not None:
            _warn_blank(case, cached.constant)
        prepared.append(cached)
    return prepared
