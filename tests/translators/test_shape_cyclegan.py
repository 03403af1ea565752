"""shape_cyclegan: the segmentation term is the segmenter's loss on SynCT, reaches the MR -> CT generator, skips
unlabelled slices, and a resumed fit equals a straight one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from da_seg.errors import DataError
from da_seg.losses import build_loss
from da_seg.registry import TRANSLATORS
from da_seg.translators import load_translator
from da_seg.translators.adversarial import UNLABELLED

TINY = {
    "name": "shape_cyclegan",
    "width": 4,
    "blocks": 1,
    "disc_width": 4,
    "disc_layers": 2,
    "iterations_per_epoch": 2,
    "segmenter": {"name": "resunet25d", "base": 4, "depth": 2},
}


def _masks(source: list[np.ndarray]) -> list[np.ndarray]:
    return [(v > 0.5).astype(np.uint8) for v in source]  # the bright centre of each disc


def _weights(model) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, net in model.networks.items() for k, v in net.state_dict().items()}


def test_segmentation_term_is_the_segmenters_loss_on_the_translation() -> None:
    torch.manual_seed(0)
    model = TRANSLATORS.build(TINY)
    real_a, real_b = torch.rand(2, 1, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1
    mask = (torch.rand(2, 1, 16, 16) > 0.5).to(torch.uint8)
    terms, fake_b, _ = model.generator_losses(real_a, real_b, mask)
    expected = build_loss("bce")(model.seg(fake_b), mask.float())
    assert terms["segmentation"].item() == pytest.approx(expected.item(), rel=1e-6)
    model.networks["g_ab"].zero_grad()
    terms["segmentation"].backward()
    grads = [p.grad for p in model.g_ab.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum().item() for g in grads) > 0  # the labels shape the MR -> CT generator
    assert all(p.grad is None for p in model.g_ba.parameters())


def test_unlabelled_slices_add_no_segmentation_loss() -> None:
    model = TRANSLATORS.build(TINY)
    unlabelled = torch.full((2, 1, 16, 16), UNLABELLED, dtype=torch.uint8)
    terms, _, _ = model.generator_losses(torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16), unlabelled)
    assert terms["segmentation"].item() == 0.0


def test_classes_come_from_the_task_and_the_segmenter_is_saved(unpaired, tmp_path) -> None:
    source, target = unpaired
    model = TRANSLATORS.build({**TINY, "epochs": 1})
    model.fit(source, target, source_masks=[_masks(source)[0], None], classes=2, seed=1)
    assert model.jointly_trained()["classes"] == 2 and model.seg(torch.zeros(1, 1, 16, 16)).shape[1] == 2
    model.save(tmp_path / "model")
    back = load_translator(tmp_path / "model")
    assert all(
        torch.equal(a, b) for a, b in zip(back.seg.state_dict().values(), model.seg.state_dict().values(), strict=True)
    )
    assert np.allclose(back.translate(source[0]), model.translate(source[0]), atol=1e-6)


def test_fit_needs_labels(unpaired) -> None:
    source, target = unpaired
    with pytest.raises(DataError, match="source label maps"):
        TRANSLATORS.build({**TINY, "epochs": 1}).fit(source, target)
    with pytest.raises(DataError, match="1 source label maps for 2"):
        TRANSLATORS.build({**TINY, "epochs": 1}).fit(source, target, source_masks=_masks(source)[:1])


def test_resume_after_a_kill_gives_the_weights_of_a_straight_fit(unpaired, tmp_path) -> None:
    source, target = unpaired
    spec, masks = {**TINY, "decay_epochs": 0, "pool_size": 1}, _masks(source)
    straight = TRANSLATORS.build({**spec, "epochs": 3}).fit(source, target, source_masks=masks, seed=3)
    TRANSLATORS.build({**spec, "epochs": 2}).fit(source, target, source_masks=masks, workdir=tmp_path, seed=3)
    resumed = TRANSLATORS.build({**spec, "epochs": 3}).fit(source, target, source_masks=masks, workdir=tmp_path, seed=3)
    a, b = _weights(straight), _weights(resumed)
    assert set(a) == set(b) and any(k.startswith("seg.") for k in a)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
