"""Building blocks for a task's phantom: grids in patient millimetres, ellipsoids, smooth noise, and the writer of the
documented data layout, so a plugin's phantom is only its anatomy and its two renderings.

A phantom subject is drawn from one seed; each modality renders the same anatomy on its own grid. `write_layout`
decides which seeds go where (``source``, ``target``, ``evaluation``, ``target_labelled``, ``paired_target``), so
subjects of different folders never share an anatomy and the same arguments always write the same files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from da_seg.errors import ConfigError, DataError
from da_seg.volume import Volume, write_volume


@dataclass
class PhantomImage:
    """A rendered subject: the image, its label mask and the tissue map it was drawn from (for tests and figures)."""

    image: Volume
    mask: Volume
    tissues: Volume


def grid_coords(shape: Sequence[int], spacing_zyx: Sequence[float], centre_xyz: Sequence[float]) -> list[np.ndarray]:
    """Broadcastable physical coordinates ``[z, y, x]`` (mm) of the voxel centres of a grid centred at
    ``centre_xyz``; broadcasting them keeps a whole volume's coordinates out of memory."""
    axes = []
    for axis, (n, s) in enumerate(zip(shape, spacing_zyx, strict=True)):
        values = (np.arange(n) - (n - 1) / 2) * s + centre_xyz[2 - axis]
        view = [1, 1, 1]
        view[axis] = n
        axes.append(values.reshape(view).astype(np.float32))
    return axes


def ellipsoid(a, b, c, centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Normalised radius of points ``(a, b, c)`` (any frame): < 1 inside the axis-aligned ellipsoid."""
    return ((a - centre[0]) / radii[0]) ** 2 + ((b - centre[1]) / radii[1]) ** 2 + ((c - centre[2]) / radii[2]) ** 2


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation (texture, bias fields, flow)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return field / (field.std() + 1e-6)


def volume_at(array: np.ndarray, spacing_zyx: Sequence[float], centre_xyz: Sequence[float]) -> Volume:
    """``array`` as a `Volume` whose grid is centred at ``centre_xyz`` (mm), axis-aligned."""
    shape = np.asarray(array.shape)
    spacing_xyz = np.asarray(spacing_zyx[::-1], float)
    origin = np.asarray(centre_xyz, float) - (shape[::-1] - 1) / 2 * spacing_xyz
    return Volume(array, tuple(spacing_xyz), tuple(origin))


Render = Callable[[int], PhantomImage]


def write_layout(
    out: str | Path,
    render_source: Render,
    render_target: Render,
    *,
    n_source: int,
    n_target: int,
    n_evaluation: int,
    n_target_labelled: int = 0,
    paired: bool = False,
    seed: int = 0,
    recorded: Mapping[str, Any] | None = None,
) -> None:
    """Write a phantom data set in the documented layout (NIfTI) under ``out``.

    ``render_source(subject_seed)`` / ``render_target(subject_seed)`` render one subject in each modality. Written:
    ``source/{images,labels}/mr_NNN``, ``target/images/ct_NNN`` (other subjects, unpaired),
    ``evaluation/{images,labels}/eval_NNN``, ``target_labelled/{images,labels}/ctl_NNN`` (when
    ``n_target_labelled > 0``) and, with ``paired``, ``paired_target/images/mr_NNN``: the source subjects rendered
    in the target modality under the same names. ``recorded``: settings the renderers were built with (a task's
    preset, e.g. ``{"realism": "clinical"}``), kept in the folder's marker beside the counts and the seed.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; give a folder for the phantom")
    if seed < 0 or min(n_source, n_target, n_evaluation, n_target_labelled) < 0:
        raise ConfigError(f"phantom seed and subject counts must be >= 0, got seed {seed}")
    settings = {
        "n_source": n_source,
        "n_target": n_target,
        "n_evaluation": n_evaluation,
        "n_target_labelled": n_target_labelled,
        "paired": paired,
        "seed": seed,
    } | dict(recorded or {})
    _claim(out, settings)
    groups = [("source", "mr", n_source), ("target", "ct", n_target), ("evaluation", "eval", n_evaluation)]
    groups.append(("target_labelled", "ctl", n_target_labelled))
    streams = np.random.SeedSequence(seed).spawn(len(groups))
    for (folder, prefix, count), stream in zip(groups, streams, strict=True):
        seeds = [int(s.generate_state(1)[0]) for s in stream.spawn(count)]
        for index, subject_seed in enumerate(seeds):
            name = f"{prefix}_{index:03d}"
            if folder == "source":
                _write(out / "source", name, render_source(subject_seed), labels=True)
                if paired:
                    _write(out / "paired_target", name, render_target(subject_seed), labels=False)
            else:
                _write(out / folder, name, render_target(subject_seed), labels=folder != "target")
    (out / PHANTOM_MARKER).write_text(json.dumps(settings))


PHANTOM_MARKER = "phantom.json"
"""The settings a phantom folder was written with; `write_layout` writes only into an empty folder or one whose
marker holds the same settings (the same files again), so it never mixes two data sets or touches other data."""


def _claim(out: Path, settings: dict[str, object]) -> None:
    marker = out / PHANTOM_MARKER
    if out.is_dir() and any(out.iterdir()):
        try:
            previous = {k: v for k, v in json.loads(marker.read_text()).items() if k != "complete"}
        except (OSError, ValueError, AttributeError):
            previous = None
        if previous is None:
            raise DataError(
                f"{out}: folder is not empty and holds no phantom ({PHANTOM_MARKER}); give an empty or new folder"
            )
        if previous != settings:
            raise DataError(
                f"{out}: holds a phantom written with other settings ({previous}); give an empty or new folder "
                "(a phantom is only rewritten with the same settings)"
            )
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**settings, "complete": False}))  # write_layout rewrites it when every file is there


def _write(folder: Path, name: str, rendered: PhantomImage, labels: bool) -> None:
    write_volume(rendered.image, folder / "images" / f"{name}.nii.gz")
    if labels:
        write_volume(rendered.mask, folder / "labels" / f"{name}.nii.gz", mask=True)
