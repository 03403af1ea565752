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
    images = torch.arange(4000.0).view(4000, 1)
    out = pool.query(images).ravel()
    swapped = out != images.ravel()  # an older fake: a -1 or an image earlier in this batch
    assert 0.45 < swapped.float().mean() < 0.55
    assert (out[swapped] < images.ravel()[swapped]).all()  # what comes back is always older
    # a swapped-in image replaced a stored one; the others never entered the pool
    kept = set(pool.state().ravel().tolist()) - {-1.0}
    assert kept and kept <= set(images.ravel()[swapped].tolist())


def _one_at_a_time(size: int, batches: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The reference pool (CycleGAN's): each image on its own, in order."""
    torch.manual_seed(5)
    pool = ImagePool(size)
    out = [torch.cat([pool.query(image[None]) for image in batch]) for batch in batches]
    return out, pool.state()


@pytest.mark.parametrize("size, batch", [(1, 6), (3, 4), (5, 16)])
def test_a_batched_query_equals_its_images_queried_one_at_a_time(size: int, batch: int) -> None:
    """Images of one batch that draw the same slot: the later one is stored and gets the earlier one back, as
    if queried in turn. The earlier form wrote both with one index_put_ and returned the slot's old image to both."""
    batches = [torch.arange(i * batch, (i + 1) * batch, dtype=torch.float32).view(batch, 1) for i in range(40)]
    torch.manual_seed(5)
    pool = ImagePool(size)
    together = [pool.query(b) for b in batches]
    alone, state = _one_at_a_time(size, batches)
    for a, b in zip(together, alone, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(pool.state(), state)


def test_image_pool_gives_the_same_images_run_after_run_on_several_threads() -> None:
    """The issue-43 race: large images written to one slot by several images of a batch (pool size 1) on two
    threads left a different image, or a mix of two, in the pool from one run to the next."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = []
        for _ in range(3):
            torch.manual_seed(0)
            pool = ImagePool(1)
            out = torch.stack([pool.query(torch.rand(16, 3, 48, 48)) for _ in range(20)])
            runs.append((out, pool.state()))
    finally:
        torch.set_num_threads(threads)
    for out, state in runs[1:]:
        assert torch.equal(out, runs[0][0]) and torch.equal(state, runs[0][1])


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
