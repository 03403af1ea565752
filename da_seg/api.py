"""The operations behind the CLI, importable and composable from Python."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from da_seg.augment import build_augmentation
from da_seg.config import Config, load_config
from da_seg.errors import ConfigError
from da_seg.plugins import load_plugins
from da_seg.registry import INTENSITIES, LOSSES, SEGMENTERS, TASKS, TRANSLATORS
from da_seg.task import Task


def as_config(config: Config | str | Path) -> Config:
    """Accept a `Config` or a TOML path; load the plugins the config names."""
    if not isinstance(config, Config):
        config = load_config(config)
    load_plugins(config.plugins)
    return config


def get_task(config: Config) -> Task:
    """The registered task the config names."""
    task = TASKS.create(config.task)
    if not isinstance(task, Task):
        raise ConfigError(f"task '{config.task}' did not build a da_seg.task.Task (got {type(task).__name__})")
    return task


@dataclass
class Components:
    """Everything a config builds before any data is read (what ``daseg validate`` checks)."""

    task: Task
    source_intensity: Any
    target_intensity: Any
    translator: Any
    segmenter: Any
    loss: Any
    augmentations: list[Any]


def build_components(config: Config | str | Path) -> Components:
    """Build every component the config names, without reading data or training."""
    config = as_config(config)
    task = get_task(config)
    seg = config.segmentation
    size = tuple(config.data.size or task.size)
    with config_key("data.source_intensity"):
        source_intensity = INTENSITIES.build(config.data.source_intensity or task.source_intensity)
    with config_key("data.target_intensity"):
        target_intensity = INTENSITIES.build(config.data.target_intensity or task.target_intensity)
    with config_key("translator"):
        translator = TRANSLATORS.build(config.translator)
    with config_key("segmentation.model"):
        segmenter = SEGMENTERS.build(seg.model, in_channels=2 * seg.context + 1, classes=task.classes)
    with config_key("segmentation.loss"):
        loss = LOSSES.build(seg.loss)
    with config_key("segmentation.augment"):
        augmentations = build_augmentation(seg.augment).modules(size)
    return Components(task, source_intensity, target_intensity, translator, segmenter, loss, augmentations)


@contextmanager
def config_key(key: str) -> Iterator[None]:
    """Prefix a component error with the config key it came from (``segmentation.model: unknown segmenter ...``)."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None


def validate(config: Config | str | Path) -> Components:
    """Check a config end to end (keys, values, every component name and argument); returns what it built."""
    return build_components(config)
