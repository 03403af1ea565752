"""The ``shape_cyclegan`` translator: a CycleGAN whose MR -> CT generator must keep what the labels mark.

A segmenter is trained jointly with the generators on the synthetic CT of labelled source slices, with the source
labels; its loss flows back into ``g_ab`` (Zhang et al. CVPR 2018, "Translating and segmenting multimodal medical
volumes with cycle- and shape-consistency generative adversarial network"; Huo et al. 2018, SynSeg-Net). A
translation that blurs or moves the organ makes the segmenter's task harder, so the generator is pushed to keep it.
The jointly trained segmenter (``seg``) is saved with the generators; the pipeline reports it as the method
``joint`` and segments the target images with it as well.

Our choices: the segmenter sees the generator's output stack (``2 * context + 1`` channels, the translator's
context), uses sigmoid outputs (one per structure), is optimised with the generators' Adam, and only slices of
labelled source volumes contribute (``source_masks`` entries that are None are images without labels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from da_seg.losses import build_loss
from da_seg.registry import SEGMENTERS
from da_seg.translators.adversarial import UNLABELLED
from da_seg.translators.cyclegan import CycleGAN
from da_seg.translators.networks import init_weights

DEFAULT_SEGMENTER = {"name": "resunet25d", "base": 16, "depth": 3}


class ShapeCycleGAN(CycleGAN):
    """CycleGAN (every argument of `CycleGAN`) plus a jointly trained segmenter on its synthetic target images.

    Args:
        segmenter: the segmenter component table (`da_seg.segmenters`), built with the translator's context.
        segmentation_loss: its loss (``"bce"``, ``"bce_dice"``...; `da_seg.losses`).
        segmentation_weight: weight of that loss in the generators' objective.
        classes: segmenter outputs; None takes the task's number of structures when `fit` is given it.
    """

    name = "shape_cyclegan"
    saved = ("g_ab", "g_ba", "seg")
    uses_labels = True
    capturable = False  # the segmentation term looks at which slices carry labels: a host read each step

    def __init__(
        self,
        segmenter: Mapping[str, Any] | None = None,
        segmentation_loss: str | Mapping[str, Any] = "bce",
        segmentation_weight: float = 1.0,
        classes: int | None = None,
        **cyclegan: Any,
    ) -> None:
        super().__init__(**cyclegan)
        spec = dict(segmenter or DEFAULT_SEGMENTER)
        self.config.update(
            segmenter=spec,
            segmentation_loss=segmentation_loss,
            segmentation_weight=segmentation_weight,
            classes=classes,
        )
        self.segmentation = build_loss(segmentation_loss)
        self._build_segmenter(classes or 1)

    def _build_segmenter(self, classes: int) -> None:
        self.seg = SEGMENTERS.build(self.config["segmenter"], in_channels=2 * self.context + 1, classes=classes)
        self.seg.to(self.device)

    @property
    def networks(self) -> dict[str, nn.Module]:
        return {**super().networks, "seg": self.seg}

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        generators, discriminators = super().parameter_groups()
        return [*generators, *self.seg.parameters()], discriminators

    def loss_weights(self) -> dict[str, float]:
        return {**super().loss_weights(), "segmentation": self.config["segmentation_weight"]}

    def initialise(self) -> None:
        """CycleGAN's init for its four networks; the segmenter's own (its layers' ``reset_parameters``)."""
        for net in super().networks.values():
            init_weights(net)
        for module in self.seg.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def fit(
        self,
        source: Sequence[np.ndarray],
        target: Sequence[np.ndarray],
        *,
        source_masks: Sequence[np.ndarray | None] | None = None,
        classes: int | None = None,
        **options: Any,
    ) -> ShapeCycleGAN:
        """`CycleGAN.fit` with the source label maps; ``classes`` (the task's) sizes the segmenter if not set."""
        if self.config["classes"] is None and classes is not None:
            self.config["classes"] = classes
            self._build_segmenter(classes)
        super().fit(source, target, source_masks=source_masks, **options)
        return self

    def generator_losses(
        self, real_a: Tensor, real_b: Tensor, mask_a: Tensor | None = None
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        terms, fake_b, fake_a = super().generator_losses(real_a, real_b, mask_a)
        terms["segmentation"] = torch.zeros((), device=self.device)
        if mask_a is not None:
            labelled = ~(mask_a == UNLABELLED).flatten(1).any(dim=1)
            if bool(labelled.any()):
                masks = mask_a[labelled]
                classes = self.config["classes"] or 1
                wanted = range(1, classes + 1) if classes > 1 else [None]
                target = torch.cat([(masks > 0) if k is None else (masks == k) for k in wanted], dim=1).float()
                logits = self.net("seg")(fake_b[labelled])
                terms["segmentation"] = self.segmentation(logits.float(), target)
        return terms, fake_b, fake_a

    def jointly_trained(self) -> dict[str, Any]:
        """The segmenter trained with the generators, for the pipeline to wrap as a method: the network, its
        component table, context and classes."""
        return {
            "model": self.seg,
            "spec": dict(self.config["segmenter"]),
            "context": self.context,
            "classes": self.config["classes"] or 1,
        }
