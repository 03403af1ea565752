"""Adapting a trained segmenter to the target domain without labels: batch-norm statistics of the target images.

A network trained on SynCT normalises each layer with the mean and variance it saw on SynCT. Real CT that differs
from the SynCT in contrast or texture shifts those statistics, and every later layer sees inputs off the
distribution it learnt. Re-estimating the batch-norm statistics on the unlabelled target images (AdaBN: Li et al.,
"Revisiting Batch Normalization For Practical Domain Adaptation", 2016) moves each layer back to it; the weights
stay as trained. Offering it as a method here, and taking the statistics over augmented shuffled target slices,
are our choices.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from da_seg.errors import ConfigError, DataError
from da_seg.segmentation.inference import TrainedSegmenter
from da_seg.slices import SliceBank
from da_seg.training import autocast, to_layout

Augment = Callable[[Tensor], tuple[Tensor, Any]]
"""Called as ``augment(images)``; returns ``(images, ...)``, as `da_seg.augment.Augmentation` does."""


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batch_norm(
    segmenter: TrainedSegmenter, images: Sequence[np.ndarray], augment: Augment | None = None, seed: int = 0
) -> TrainedSegmenter:
    """A copy of ``segmenter`` whose batch-norm running statistics are those of the slices of ``images``.

    The slices go through once, shuffled across volumes into batches of the segmenter's training batch size and
    through ``augment`` (the training augmentation) when given: the statistics are taken the way training took the
    source's, so only the domain differs. Each statistic is the plain average of its per-batch values
    (``momentum=None``). The weights, the original segmenter and its inference defaults are unchanged. ``images``
    are ``(z, H, W)`` volumes prepared like the ones it will segment (the target domain's grid and window).

    Raises:
        ConfigError: the network has no batch-norm layer (e.g. ``norm = "instance"``): nothing to adapt.
        DataError: no images, or one is not a ``(z, H, W)`` volume.
    """
    if not images:
        raise DataError("adapt_batch_norm needs at least one target image")
    if any(image.ndim != 3 for image in images):
        raise DataError(f"adapt_batch_norm needs (z, H, W) volumes, got shapes {[i.shape for i in images]}")
    model = copy.deepcopy(segmenter.model)
    norms = _batch_norms(model)
    if not norms:
        raise ConfigError(
            "this segmenter has no batch-norm layer to adapt (instance norm adapts per image already); "
            "drop the 'adabn' baseline or use norm = 'batch'"
        )
    momenta = [norm.momentum for norm in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over every batch
        norm.train()
    device = segmenter.device
    bank = SliceBank(list(images), context=segmenter.context, device=device)
    batch = max(2, segmenter.batch_size)
    order = torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed)).to(device)
    for start in range(0, len(bank) - 1, batch):  # a last single slice has no batch variance: left out
        x, _ = bank.batch(order[start : start + batch])
        if augment is not None:
            x, _ = augment(x)
        with autocast(device, segmenter.precision):
            model(to_layout(x, segmenter.channels_last))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()
    return replace(segmenter, model=model, info={**segmenter.info, "adapted_batch_norm": len(images)})
