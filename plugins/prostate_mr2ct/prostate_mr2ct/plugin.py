"""Hook implementations: the `prostate_mr2ct` task (and, with the data layer, the `daseg phantom` command)."""

from __future__ import annotations

from da_seg import Task, hookimpl


def prostate_mr2ct() -> Task:
    """Prostate on T2 MR -> CT; CT windowed to soft tissue (-500..500 HU) as in the paper."""
    return Task(
        name="prostate_mr2ct",
        source_modality="MR",
        target_modality="CT",
        labels=("prostate",),
        source_intensity={"name": "mr_percentile", "lower": 0.5, "upper": 99.5},
        target_intensity={"name": "ct_window", "low": -500.0, "high": 500.0},
        spacing=(3.0, 1.0, 1.0),
        size=(256, 256),
        description="prostate, T2 MR -> CT (reference plugin)",
    )


@hookimpl
def register_tasks(register) -> None:
    register("prostate_mr2ct", prostate_mr2ct)
