"""2.5D slice stacks: slice z with ``context`` neighbours each side as channels, edges replicated.

Volumes are preloaded once into a `SliceBank` (one tensor on the training device); a training step gathers its
batch by index, so no step reads a file or loops over pixels in Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def neighbour_index(depth: int, context: int) -> np.ndarray:
    """``(depth, 2c+1)`` slice indices ``z-c .. z+c`` clamped to ``[0, depth-1]`` (edge replication)."""
    offsets = np.arange(-context, context + 1)
    return np.clip(np.arange(depth)[:, None] + offsets[None, :], 0, depth - 1)


def stack_25d(array: np.ndarray | Tensor, context: int) -> np.ndarray | Tensor:
    """Every slice of a ``(z, H, W)`` volume as a 2.5D stack.

    Shape:
        ``(z, H, W)`` -> ``(z, 2c+1, H, W)``; ``context=0`` gives ``(z, 1, H, W)`` (plain 2D).
    """
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    index = neighbour_index(array.shape[0], context)
    if isinstance(array, Tensor):
        return array[torch.as_tensor(index, device=array.device)]
    return array[index]


def spread(n: int, k: int | None) -> np.ndarray:
    """At most ``k`` evenly spaced indices in ``[0, n)`` (all of them when ``k`` is None or ``n <= k``)."""
    if k is None or n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


class SliceBank:
    """All slices of several ``(z, H, W)`` volumes (same H, W) on one device, gathered as 2.5D batches.

    Args:
        images: normalised volumes, each ``(z_i, H, W)``.
        masks: label maps of the same shapes (integers, 0 = background), or None.
        context: neighbours each side; they never cross into another volume.
        device: where the bank lives (the training device).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray] | None = None,
        context: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if not images:
            raise ValueError("SliceBank needs at least one volume")
        shapes = {im.shape[1:] for im in images}
        if len(shapes) != 1:
            raise ValueError(f"all volumes need the same in-plane size, got {sorted(shapes)}")
        if masks is not None and [m.shape for m in masks] != [im.shape for im in images]:
            raise ValueError("masks must have the same shapes as their images")
        self.context = context
        self.device = torch.device(device)
        starts = np.cumsum([0] + [im.shape[0] for im in images])
        neighbours = np.concatenate(
            [neighbour_index(im.shape[0], context) + s for im, s in zip(images, starts[:-1], strict=True)]
        )
        self.images = torch.as_tensor(np.concatenate(images).astype(np.float32), device=self.device)
        self.masks = (
            None if masks is None else torch.as_tensor(np.concatenate(masks).astype(np.uint8), device=self.device)
        )
        self.neighbours = torch.as_tensor(neighbours, device=self.device)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor | None]:
        """Images ``(B, 2c+1, H, W)`` float32 and masks ``(B, 1, H, W)`` uint8 (or None) for slice ``index``."""
        index = index.to(self.device)
        images = self.images[self.neighbours[index]]
        masks = None if self.masks is None else self.masks[index].unsqueeze(1)
        return images, masks
