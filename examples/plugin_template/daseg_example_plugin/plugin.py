"""Hook implementations. da_seg calls each ``register_*`` hook with a ``register(name, factory)`` callback."""

from __future__ import annotations

import kornia.augmentation as K
from torch import Tensor, nn

from da_seg import hookimpl


class TinyFCN(nn.Module):
    """Three 3x3 conv layers: (B, in_channels, H, W) -> logits (B, classes, H, W)."""

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


def example_blur(max_sigma: float = 1.0, p: float = 0.5) -> nn.Module:
    """Random Gaussian blur of the image (masks are left alone by kornia's intensity ops)."""
    return K.RandomGaussianBlur(kernel_size=(5, 5), sigma=(0.1, max_sigma), p=p)


@hookimpl
def register_segmenters(register) -> None:
    register("tiny_fcn", TinyFCN)


@hookimpl
def register_augmentations(register) -> None:
    register("example_blur", example_blur)
