"""Padding to a multiple of a network's stride, shared by the segmenters and the CycleGAN generators."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def pad_to_multiple(x: Tensor, multiple: int, centre: bool = False) -> tuple[Tensor, tuple[slice, slice]]:
    """Replicate-pad ``x`` so H and W are multiples of ``multiple``: at the bottom/right, or evenly on both sides
    (``centre``, the CycleGAN generators' way). Returns the padded tensor and the (H, W) slices that crop an output
    of the padded size back to the input's.

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, H', W')`` with ``H' = ceil(H / multiple) * multiple`` (same for W).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    top, left = (ph // 2, pw // 2) if centre else (0, 0)
    if ph or pw:
        x = F.pad(x, (left, pw - left, top, ph - top), mode="replicate")
    return x, (slice(top, top + h), slice(left, left + w))


class PadToMultiple(nn.Module):
    """Runs ``net`` on an input padded to a multiple of ``multiple`` and crops the logits back to the input size.

    Any (H, W) then works, so inference never has to know the network's stride.
    """

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: Tensor) -> Tensor:
        x, (rows, cols) = pad_to_multiple(x, self.multiple)
        return self.net(x)[..., rows, cols]
