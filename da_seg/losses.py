"""Losses, registered in `LOSSES`. Each factory returns a callable ``loss(prediction, target) -> scalar tensor``.

Segmentation losses take logits ``(B, C, H, W)`` and targets of the same shape in {0, 1}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from da_seg.hookspecs import hookimpl


class DiceLoss(nn.Module):
    """Soft Dice loss ``1 - 2|P∩T| / (|P| + |T|)`` on sigmoid probabilities, averaged over batch and classes.

    Shape:
        logits, target: ``(B, C, H, W)``; returns a scalar.
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        prob = torch.sigmoid(logits.float())
        target = target.float()
        dims = (2, 3)
        inter = (prob * target).sum(dims)
        denom = prob.sum(dims) + target.sum(dims)
        return (1 - (2 * inter + self.smooth) / (denom + self.smooth)).mean()


class BCELoss(nn.Module):
    """Binary cross-entropy on logits (the paper's segmentation loss); ``pos_weight`` up-weights the foreground."""

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        self.pos_weight = pos_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=weight)


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCE + dice_weight * Dice``."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.bce, self.dice = BCELoss(), DiceLoss()
        self.bce_weight, self.dice_weight = bce_weight, dice_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.bce_weight * self.bce(logits, target) + self.dice_weight * self.dice(logits, target)


def mse() -> nn.Module:
    """Mean squared error (the CycleGAN paper's cycle-loss baseline)."""
    return nn.MSELoss()


def l1() -> nn.Module:
    """Mean absolute error (CycleGAN's default cycle loss)."""
    return nn.L1Loss()


@hookimpl
def register_losses(register) -> None:
    register("bce", BCELoss)
    register("dice", DiceLoss)
    register("bce_dice", BCEDiceLoss)
    register("mse", mse)
    register("l1", l1)
