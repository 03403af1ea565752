"""cyclegan_state: the image pool mixes old fakes in; a resume is refused only for settings that change the model."""

from __future__ import annotations

import pytest
import torch

from da_seg.errors import DataError
from da_seg.translators.cyclegan import CycleGAN
from da_seg.translators.cyclegan_state import ImagePool, check_resumable


def test_image_pool() -> None:
    gen = torch.Generator().manual_seed(0)
    pool = ImagePool(size=2)
    first = torch.arange(2.0).view(2, 1)
    assert torch.equal(pool.query(first, gen), first)  # filling: returned as they come
    seen = torch.cat([pool.query(torch.full((1, 1), 10.0 + i), gen) for i in range(40)]).ravel()
    assert set(seen.tolist()) >= {0.0, 1.0}  # old fakes come back
    assert len(pool.images) == 2 and (seen >= 10).any()
    assert torch.equal(ImagePool(0).query(first, gen), first)


def test_resumable_settings_may_change(tmp_path) -> None:
    saved = CycleGAN(width=2, blocks=1, epochs=4).config
    longer = CycleGAN(width=2, blocks=1, epochs=8, decay_epochs=4, log_every=1, sample_every=0).config
    check_resumable(saved, longer, tmp_path)  # no error


def test_other_settings_are_named(tmp_path) -> None:
    saved = CycleGAN(width=2, blocks=1, cycle_loss="mse").config
    other = CycleGAN(width=4, blocks=1, cycle_loss={"mse": 1, "ssim": 1}).config
    with pytest.raises(DataError, match=r"other settings \(cycle_loss, width\); use another workdir"):
        check_resumable(saved, other, tmp_path)
