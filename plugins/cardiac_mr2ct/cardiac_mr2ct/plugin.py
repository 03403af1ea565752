"""Hook implementations: the `cardiac_mr2ct` task (six cardiac structures, bSSFP MR -> contrast CT)."""

from __future__ import annotations

from typing import Any

from cardiac_mr2ct.phantom import STRUCTURES, write_phantom
from da_seg import Task, hookimpl


def cardiac_mr2ct() -> Task:
    """Cardiac bSSFP MR -> contrast-enhanced CT, as in MM-WHS; CT windowed to -200..800 HU.

    The window keeps what matters for the heart: fat (-100 HU) and myocardium (~100 HU) apart, contrast blood
    (250-450 HU) well inside it, lungs and air clipped to -1 and dense bone to +1. The common grid (4 mm slices,
    1.5 mm in-plane, 160 x 160 = 240 mm field of view) holds the whole heart and the ascending aorta; a CPU example
    can coarsen it (``data.spacing = [4.0, 2.5, 2.5]``, ``data.size = [72, 72]``).
    """
    return Task(
        name="cardiac_mr2ct",
        source_modality="MR",
        target_modality="CT",
        labels=STRUCTURES,
        source_intensity={"name": "mr_percentile", "lower": 0.5, "upper": 99.5},
        target_intensity={"name": "ct_window", "low": -200.0, "high": 800.0},
        spacing=(4.0, 1.5, 1.5),
        size=(160, 160),
        phantom=write_phantom,
        description="whole heart (6 structures), bSSFP MR -> contrast CT (thorax phantom included)",
    )


@hookimpl
def register_tasks(register: Any) -> None:
    register("cardiac_mr2ct", cardiac_mr2ct)
