"""da_seg: transfer segmentation labels from one imaging modality to another.

MR masks -> CycleGAN synthetic CT -> a 2.5D segmenter trained on SynCT -> masks on real CT.
The public API is re-exported here; see docs/python_api.md.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from da_seg.api import Components, build_components, get_task, validate
from da_seg.config import Config, load_config, parse_config
from da_seg.errors import ConfigError, DasegError, DataError
from da_seg.hookspecs import hookimpl
from da_seg.plugins import component_table, load_plugins
from da_seg.registry import (
    AUGMENTATIONS,
    EXTENTS,
    INTENSITIES,
    LOSSES,
    METRICS,
    SEGMENTERS,
    TASKS,
    TRANSLATORS,
    Registry,
)
from da_seg.task import Task
from da_seg.volume import Volume, read_volume, write_volume

if TYPE_CHECKING:
    from da_seg.pipeline import RunResult


def run_pipeline(config: Config | str, *, resume: bool = False, force: bool = False) -> RunResult:
    """Run ``daseg run`` from Python (see `da_seg.pipeline.run_pipeline`); a path is loaded as TOML."""
    from da_seg.pipeline import run_pipeline as run

    return run(config if isinstance(config, Config) else load_config(config), resume=resume, force=force)


try:
    __version__ = version("da_seg")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "AUGMENTATIONS",
    "EXTENTS",
    "INTENSITIES",
    "LOSSES",
    "METRICS",
    "SEGMENTERS",
    "TASKS",
    "TRANSLATORS",
    "Components",
    "Config",
    "ConfigError",
    "DasegError",
    "DataError",
    "Registry",
    "Task",
    "Volume",
    "__version__",
    "build_components",
    "component_table",
    "get_task",
    "hookimpl",
    "load_config",
    "load_plugins",
    "parse_config",
    "read_volume",
    "run_pipeline",
    "validate",
    "write_volume",
]
