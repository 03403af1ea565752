"""A segmentation loss: ``loss(logits, target) -> scalar tensor``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al., 2017): binary cross-entropy scaled by ``(1 - p_t) ** gamma``, so the easy
    background pixels count less.

    Shape:
        logits and target ``(B, C, H, W)``, target in {0, 1}; returns a scalar.
    """

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = logits.float(), target.float()  # float32 even under bf16 autocast
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_t = torch.exp(-bce)  # the probability given to the true class
        return ((1 - p_t) ** self.gamma * bce).mean()
