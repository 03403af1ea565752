"""Hook implementations: da_seg calls each ``register_*`` hook with a ``register(name, factory)`` callback."""

from __future__ import annotations

from da_seg import hookimpl
from daseg_example_plugin.augmentation import example_blur
from daseg_example_plugin.intensity import MinMax
from daseg_example_plugin.loss import FocalLoss
from daseg_example_plugin.metric import sensitivity
from daseg_example_plugin.segmenter import TinyFCN
from daseg_example_plugin.task import example_mr2ct
from daseg_example_plugin.translator import MomentMatching


@hookimpl
def register_segmenters(register) -> None:
    register("tiny_fcn", TinyFCN)


@hookimpl
def register_losses(register) -> None:
    register("example_focal", FocalLoss)


@hookimpl
def register_augmentations(register) -> None:
    register("example_blur", example_blur)


@hookimpl
def register_translators(register) -> None:
    register(MomentMatching.name, MomentMatching)


@hookimpl
def register_metrics(register) -> None:
    register("example_sensitivity", sensitivity)  # a metric is registered as the function itself


@hookimpl
def register_intensities(register) -> None:
    register("example_minmax", MinMax)


@hookimpl
def register_tasks(register) -> None:
    register("example_mr2ct", example_mr2ct)
