"""What made a result: the components a config uses with the plugin and package that provide each, package
versions, the git revision. Written to every run's ``provenance.json`` and shown in its report."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

CORE_PACKAGES = ("da_seg", "torch", "kornia", "segmentation-models-pytorch", "timm", "SimpleITK", "numpy", "pluggy")


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution (``"da_seg"``, ``"torch"``, a plugin's package), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def environment() -> dict[str, str]:
    """Python, platform and the core packages' versions."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    out |= {name: v for name in CORE_PACKAGES if (v := package_version(name)) is not None}
    return out


def git_revision() -> str | None:
    """The da_seg source tree's commit, when it is a git checkout."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def components(config: Any) -> list[dict[str, Any]]:
    """Every registered component ``config`` uses, by config key: its kind, name, plugin, package and version.

    Example row: ``{"key": "translator", "kind": "translator", "name": "cyclegan", "plugin": "da_seg.translators",
    "package": "da_seg", "version": "0.1.0"}``.
    """
    from da_seg.api import get_task
    from da_seg.plugins import component_origin
    from da_seg.registry import AUGMENTATIONS, INTENSITIES, LOSSES, SEGMENTERS, TASKS, TRANSLATORS

    task = get_task(config)
    seg = config.segmentation
    used = [
        ("task", TASKS, config.task),
        ("translator", TRANSLATORS, config.translator["name"]),
        ("segmentation.model", SEGMENTERS, seg.model["name"]),
        ("segmentation.loss", LOSSES, seg.loss["name"]),
        *((f"segmentation.augment[{i}]", AUGMENTATIONS, a["name"]) for i, a in enumerate(seg.augment)),
        ("data.source_intensity", INTENSITIES, (config.data.source_intensity or task.source_intensity)["name"]),
        ("data.target_intensity", INTENSITIES, (config.data.target_intensity or task.target_intensity)["name"]),
    ]
    rows = []
    for key, registry, name in used:
        origin = component_origin(registry, name)
        version = package_version(origin["package"]) if origin["package"] else None
        rows.append({"key": key, "kind": registry.kind, "name": name, **origin, "version": version})
    return rows
