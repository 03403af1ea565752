"""cyclegan_state: the image pool mixes old fakes in; a resume is refused only for settings that change the model."""

from __future__ import annotations

import pytest
import torch

from da_seg.errors import DataError
from da_seg.translators.cyclegan import CycleGAN
from da_seg.translators.cyclegan_state import ImagePool, check_resumable


def test_image_pool() -> None:
    torch.manual_seed(0)
    pool = ImagePool(size=2)
    first = torch.arange(2.0).view(2, 1)
    assert torch.equal(pool.query(first), first)  # filling: returned as they come
    seen = torch.cat([pool.query(torch.full((1, 1), 10.0 + i)) for i in range(40)]).ravel()
    assert set(seen.tolist()) >= {0.0, 1.0}  # old fakes come back
    assert (seen >= 10).any()
    stored = pool.state()
    assert stored is not None and len(stored) == 2  # the pool keeps its size
    assert set(stored.ravel().tolist()) <= {0.0, 1.0, *(10.0 + i for i in range(40))}
    assert torch.equal(ImagePool(0).query(first), first)


def test_image_pool_returns_old_fakes_half_the_time_and_stores_what_it_returns_not() -> None:
    torch.manual_seed(0)
    pool = ImagePool(size=50)
    pool.query(torch.full((50, 1), -1.0))  # full of -1
    out = pool.query(torch.arange(4000.0).view(4000, 1)).ravel()
    swapped = out == -1
    assert 0.45 < swapped.float().mean() < 0.55
    # a swapped-in image replaced a stored one; the others never entered the pool
    kept = set(pool.state().ravel().tolist()) - {-1.0}
    assert kept and kept <= set(torch.arange(4000.0)[swapped].tolist())


def test_image_pool_resumes_its_images_and_a_batch_straddling_the_fill() -> None:
    pool = ImagePool(size=3)
    pool.query(torch.tensor([[1.0], [2.0]]))
    again = ImagePool(size=3)
    again.restore(pool.state(), torch.device("cpu"))
    torch.manual_seed(1)
    a = pool.query(torch.tensor([[3.0], [4.0]]))
    torch.manual_seed(1)
    b = again.query(torch.tensor([[3.0], [4.0]]))
    assert torch.equal(a, b) and torch.equal(pool.state(), again.state())
    assert a[0].item() == 3.0 and 3.0 in pool.state()  # the third image filled the last slot


def test_resumable_settings_may_change(tmp_path) -> None:
    saved = CycleGAN(width=2, blocks=1, epochs=4).config
    longer = CycleGAN(width=2, blocks=1, epochs=8, decay_epochs=4, log_every=1, sample_every=0).config
    check_resumable(saved, longer, tmp_path)  # no error


def test_other_settings_are_named(tmp_path) -> None:
    saved = CycleGAN(width=2, blocks=1, cycle_loss="mse").config
    other = CycleGAN(width=4, blocks=1, cycle_loss={"mse": 1, "ssim": 1}).config
    with pytest.raises(DataError, match=r"other settings \(cycle_loss, width\); use another workdir"):
        check_resumable(saved, other, tmp_path)
