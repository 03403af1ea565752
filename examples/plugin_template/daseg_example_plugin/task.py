"""A task: a modality pair with its labels, intensity presets, common grid and a phantom data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from da_seg import Task
from da_seg.phantom import PhantomImage, ellipsoid, grid_coords, smooth_noise, volume_at, write_layout

SHAPE_ZYX = (10, 40, 40)  # voxels, array order [z, y, x]
SPACING_ZYX = (6.0, 5.0, 5.0)  # mm, array order; a Volume's spacing is (x, y, z): (5.0, 5.0, 6.0)
CENTRE_XYZ = (0.0, 0.0, 0.0)  # mm, patient coordinates (x, y, z)


def render(seed: int, modality: str) -> PhantomImage:
    """One subject (the anatomy comes from ``seed`` alone) in ``"MR"`` (arbitrary units) or ``"CT"`` (HU)."""
    rng = np.random.default_rng(seed)
    z, y, x = grid_coords(SHAPE_ZYX, SPACING_ZYX, CENTRE_XYZ)  # broadcastable [z, y, x] coordinates in mm
    body = ellipsoid(x, y, z, (0.0, 0.0, 0.0), (80.0, 60.0, 50.0)) < 1
    organ = body & (ellipsoid(x, y, z, rng.uniform(-10, 10, 3), rng.uniform(25, 35, 3)) < 1)
    texture = smooth_noise(rng, SHAPE_ZYX, 2.0)
    if modality == "MR":  # arbitrary units: organ 600, tissue 300, air 0
        image = np.where(organ, 600.0, np.where(body, 300.0, 0.0)) + body * 20 * texture
    else:  # HU: organ 100, tissue 0, air -1000
        image = np.where(organ, 100.0, np.where(body, 0.0, -1000.0)) + body * 10 * texture
    mask = organ.astype(np.uint8)  # label value 1 is Task.labels[0]
    return PhantomImage(
        image=volume_at(image.astype(np.float32), SPACING_ZYX, CENTRE_XYZ),
        mask=volume_at(mask, SPACING_ZYX, CENTRE_XYZ),
        tissues=volume_at(body.astype(np.uint8) + mask, SPACING_ZYX, CENTRE_XYZ),
    )


def write_phantom(
    out: Path,
    *,
    n_source: int,
    n_target: int,
    n_evaluation: int,
    n_target_labelled: int,
    paired: bool,
    seed: int,
) -> None:
    """The documented data layout under ``out`` (source/, target/, evaluation/, ...), written by da_seg."""
    write_layout(
        out,
        lambda s: render(s, "MR"),
        lambda s: render(s, "CT"),
        n_source=n_source,
        n_target=n_target,
        n_evaluation=n_evaluation,
        n_target_labelled=n_target_labelled,
        paired=paired,
        seed=seed,
    )


def example_mr2ct() -> Task:
    """MR -> CT of one ellipsoidal organ, on a coarse grid that trains in seconds on a CPU."""
    return Task(
        name="example_mr2ct",
        source_modality="MR",
        target_modality="CT",
        labels=("organ",),
        source_intensity={"name": "example_minmax"},  # this plugin's preset
        target_intensity={"name": "ct_window", "low": -200.0, "high": 200.0},  # a built-in one
        spacing=SPACING_ZYX,
        size=(32, 32),
        phantom=write_phantom,
        description="one ellipsoidal organ, MR -> CT (the plugin walk-through's phantom)",
    )
