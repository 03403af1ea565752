"""The operations behind the CLI, importable and composable from Python."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from da_seg.augment import build_augmentation
from da_seg.config import Config, load_config
from da_seg.errors import ConfigError
from da_seg.plugins import load_plugins
from da_seg.registry import INTENSITIES, LOSSES, SEGMENTERS, TASKS, TRANSLATORS
from da_seg.task import Task
from da_seg.translators.base import require_reversible


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
        if "two_way" in config.baselines:
            require_reversible(translator)
    with config_key("segmentation.model"):
        segmenter = SEGMENTERS.build(seg.model, in_channels=2 * seg.context + 1, classes=_classes(config, task))
    with config_key("segmentation.loss"):
        loss = LOSSES.build(seg.loss)
    with config_key("segmentation.augment"):
        augmentations = build_augmentation(seg.augment).modules(size)
    return Components(task, source_intensity, target_intensity, translator, segmenter, loss, augmentations)


def _classes(config: Config, task: Task) -> int:
    """The segmenter's output channels: one per structure, and the background first with softmax."""
    return task.classes + (config.segmentation.multiclass == "softmax")


@contextmanager
def config_key(key: str) -> Iterator[None]:
    """Prefix a component error with the config key it came from (``segmentation.model: unknown segmenter ...``)."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None


def validate(config: Config | str | Path) -> Components:
    """Check a config end to end (keys, values, every component name and argument) and run the segmenter, the loss
    and the augmentations once on a dummy batch of the configured size (`check_forward`); returns what it built."""
    config = as_config(config)
    components = build_components(config)
    check_forward(config, components)
    return components


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def check_forward(config: Config, components: Components) -> None:
    """One forward pass, no training: the segmenter on a dummy batch ``(1, 2 * context + 1, H, W)`` (``H, W`` from
    ``data.size`` or the task's size), the loss on its output, the augmentations on the batch and a mask.

    A component that fails, or returns the wrong shape or dtype, is a `ConfigError` of one line naming its config key
    and what it returned, so ``daseg validate`` catches it before any data is read or anything trains.

    Shape:
        segmenter: ``(1, 2c+1, H, W)`` float32 in [-1, 1] -> logits ``(1, classes, H, W)`` floating point, with
        ``classes`` the task's structures (one more, the background, for ``multiclass = "softmax"``).
    """
    from da_seg.volume import check_fits

    seg = config.segmentation
    height, width = tuple(config.data.size or components.task.size)
    # the dummy batch is one stack of slices cropped to data.size: refuse a size that cannot fit before allocating
    check_fits(
        (2 * seg.context + 1, height, width),
        f"one slice stack cropped to data.size {[height, width]}",
        "use a smaller data.size",
    )
    classes = _classes(config, components.task)
    generator = torch.Generator().manual_seed(0)
    batch = torch.rand((1, 2 * seg.context + 1, height, width), generator=generator) * 2 - 1
    expected = (1, classes, height, width)
    name = seg.model.get("name")
    net = components.segmenter
    was_training = getattr(net, "training", False)
    try:
        if isinstance(net, torch.nn.Module):
            net.eval()
        with torch.no_grad():
            logits = net(batch)
    except Exception as err:  # any failure of a plugin's forward is the config's problem to report
        raise ConfigError(
            f"segmentation.model: segmenter '{name}' failed on a dummy batch {tuple(batch.shape)} "
            f"({type(err).__name__}: {err})"
        ) from None
    finally:
        if isinstance(net, torch.nn.Module):
            net.train(was_training)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected or not logits.is_floating_point():
        raise ConfigError(
            f"segmentation.model: segmenter '{name}' maps a batch {tuple(batch.shape)} to {_describe(logits)}; "
            f"it must return floating-point logits of shape {expected} (B, classes, H, W)"
        )
    target = torch.zeros(expected)
    try:
        loss = components.loss(logits, target)
    except Exception as err:
        raise ConfigError(
            f"segmentation.loss: loss '{seg.loss.get('name')}' failed on logits and targets of shape {expected} "
            f"({type(err).__name__}: {err})"
        ) from None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        raise ConfigError(
            f"segmentation.loss: loss '{seg.loss.get('name')}' returned {_describe(loss)}; it must return a "
            f"floating-point scalar tensor"
        )
    _check_augmentation(seg.augment, batch)


def _check_augmentation(specs: list[Any], batch: torch.Tensor) -> None:
    mask = torch.zeros((batch.shape[0], 1, *batch.shape[2:]), dtype=torch.uint8)
    names = ", ".join(str(s.get("name")) for s in specs)
    try:
        with torch.random.fork_rng(devices=[]):  # kornia draws from torch's global generator: leave it as it was
            images, masks = build_augmentation(specs)(batch, mask)
    except Exception as err:
        raise ConfigError(
            f"segmentation.augment: [{names}] failed on a batch {tuple(batch.shape)} ({type(err).__name__}: {err})"
        ) from None
    if tuple(images.shape) != tuple(batch.shape) or masks is None or tuple(masks.shape) != tuple(mask.shape):
        raise ConfigError(
            f"segmentation.augment: [{names}] changed the batch's shape {tuple(batch.shape)} to "
            f"{tuple(images.shape)} (masks {None if masks is None else tuple(masks.shape)}); augmentations must keep it"
        )
