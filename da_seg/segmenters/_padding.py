"""Pad-to-multiple wrapper shared by the segmenters: encoders halve the size ``depth`` times."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Replicate-pad ``x`` at the bottom/right so H and W are multiples of ``multiple``; returns the original (H, W).

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, H', W')`` with ``H' = ceil(H / multiple) * multiple`` (same for W).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


class PadToMultiple(nn.Module):
    """Runs ``net`` on an input padded to a multiple of ``multiple`` and crops the logits back to the input size.

    Any (H, W) then works, so inference never has to know the network's stride.
    """

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: Tensor) -> Tensor:
        x, (h, w) = pad_to_multiple(x, self.multiple)
        return self.net(x)[..., :h, :w]
