"""2.5D stacking: channels z-c..z+c with edges replicated; a SliceBank never mixes volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from da_seg.slices import SliceBank, stack_25d


def volume(depth: int, value_offset: float = 0.0) -> np.ndarray:
    """Slice z holds the value z + offset everywhere, so channels reveal which slice they came from."""
    return np.broadcast_to((np.arange(depth, dtype=np.float32) + value_offset)[:, None, None], (depth, 2, 3)).copy()


def test_context_zero_is_plain_2d() -> None:
    out = stack_25d(volume(4), 0)
    assert out.shape == (4, 1, 2, 3)
    assert out[:, 0, 0, 0].tolist() == [0, 1, 2, 3]


def test_context_slices_with_edge_replication() -> None:
    out = stack_25d(volume(4), 2)
    assert out.shape == (4, 5, 2, 3)
    assert out[0, :, 0, 0].tolist() == [0, 0, 0, 1, 2]
    assert out[2, :, 0, 0].tolist() == [0, 1, 2, 3, 3]
    assert out[3, :, 0, 0].tolist() == [1, 2, 3, 3, 3]


def test_tensor_input_stays_a_tensor() -> None:
    out = stack_25d(torch.as_tensor(volume(3)), 1)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 3, 2, 3)
    assert out[1, :, 0, 0].tolist() == [0, 1, 2]


def test_negative_context_is_refused() -> None:
    with pytest.raises(ValueError, match="context"):
        stack_25d(volume(3), -1)


def test_slice_bank_batches_never_cross_volumes(device: torch.device) -> None:
    images = [volume(3, 0), volume(2, 100)]
    masks = [np.full((3, 2, 3), 1, np.uint8), np.full((2, 2, 3), 2, np.uint8)]
    bank = SliceBank(images, masks, context=1, device=device)
    assert len(bank) == 5
    x, y = bank.batch(torch.tensor([2, 3]))
    assert x.shape == (2, 3, 2, 3) and x.dtype == torch.float32
    assert y is not None and y.shape == (2, 1, 2, 3) and y.dtype == torch.uint8
    assert x[0, :, 0, 0].tolist() == [1, 2, 2]  # last slice of volume 0: replicated, not volume 1's first
    assert x[1, :, 0, 0].tolist() == [100, 100, 101]
    assert y[:, 0, 0, 0].tolist() == [1, 2]


def test_slice_bank_without_masks_and_bad_inputs() -> None:
    bank = SliceBank([volume(2)], context=0)
    assert bank.batch(torch.tensor([1]))[1] is None
    with pytest.raises(ValueError, match="in-plane"):
        SliceBank([volume(2), np.zeros((2, 4, 4), np.float32)])
    with pytest.raises(ValueError, match="same shapes"):
        SliceBank([volume(2)], [np.zeros((3, 2, 3), np.uint8)])
    with pytest.raises(ValueError, match="at least one"):
        SliceBank([])
