"""A segmenter: a ``torch.nn.Module`` from ``in_channels`` and ``classes`` to per-pixel logits."""

from __future__ import annotations

from torch import Tensor, nn


class TinyFCN(nn.Module):
    """Three 3x3 conv layers.

    Shape:
        ``(B, in_channels, H, W)`` float in [-1, 1] -> logits ``(B, classes, H, W)``, the same ``H, W``.
    """

    def __init__(self, in_channels: int, classes: int = 1, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
