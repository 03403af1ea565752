"""Losses: Eq. 1 (LSGAN) and Eq. 2-3 (SSIM) on hand-computed inputs, SSIM against scikit-image, weighted sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from da_seg.errors import ConfigError
from da_seg.losses import LSGANLoss, SSIMLoss, WeightedSum, build_loss, ssim_map
from da_seg.registry import LOSSES

C1, C2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2  # L = 2 for images in [-1, 1]


def test_registered() -> None:
    assert {"bce", "dice", "bce_dice", "mse", "l1", "lsgan", "ssim", "weighted_sum"} <= set(LOSSES.names())


def test_lsgan_discriminator_is_eq1() -> None:
    # m = 2 real outputs, n = 4 fake outputs: (1/m) sum (D(real)-1)^2 + (1/n) sum D(fake)^2
    real = torch.tensor([1.0, 0.5])  # (0 + 0.25) / 2 = 0.125
    fake = torch.tensor([0.0, 0.5, 1.0, -1.0])  # (0 + 0.25 + 1 + 1) / 4 = 0.5625
    assert LSGANLoss().discriminator(real, fake).item() == pytest.approx(0.125 + 0.5625)


def test_lsgan_generator_and_call() -> None:
    fake = torch.tensor([[0.0, 0.5], [1.0, 3.0]])  # (1 + 0.25 + 0 + 4) / 4
    gan = LOSSES.create("lsgan")
    assert gan.generator(fake).item() == pytest.approx(1.3125)
    assert gan(fake, 0.0).item() == pytest.approx((0 + 0.25 + 1 + 9) / 4)


def test_lsgan_is_fp32_under_bf16_autocast() -> None:
    x = torch.tensor([1.001, 0.999], dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = LSGANLoss().generator(torch.tensor([0.5, 0.25]))
    assert out.dtype == torch.float32 and out.item() == pytest.approx((0.25 + 0.5625) / 2)
    assert LSGANLoss()(x, 1.0).dtype == torch.float32


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # constant images: sigma = 0, so Eq. 3 is the luminance term times (C2 / C2)
        (0.2, 0.6, (2 * 0.2 * 0.6 + C1) / (0.2**2 + 0.6**2 + C1)),
        (0.5, 0.0, C1 / (0.25 + C1)),
        (-0.3, -0.3, 1.0),
    ],
)
def test_ssim_eq3_on_constant_images(a: float, b: float, expected: float) -> None:
    x, y = torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b)
    assert ssim_map(x, y).shape == (1, 1, 6, 6)  # 'valid': 16 - 11 + 1
    assert torch.allclose(ssim_map(x, y), torch.tensor(expected), atol=1e-6)
    assert SSIMLoss()(x, y).item() == pytest.approx(1 - expected, abs=1e-6)


def test_ssim_shift_keeps_the_structure_term() -> None:
    # y = x + d: variances and covariance are equal, so the structure factor is 1 and only luminance remains.
    torch.manual_seed(0)
    x = torch.rand(1, 1, 11, 11) - 0.5
    d = 0.4
    mu = (x * torch.outer(*[torch.tensor(_gauss())] * 2)).sum()
    expected = (2 * mu * (mu + d) + C1) / (mu**2 + (mu + d) ** 2 + C1)
    assert ssim_map(x, x + d).item() == pytest.approx(expected.item(), abs=1e-5)


def _gauss() -> list[float]:
    w = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    return (w / w.sum()).tolist()


@pytest.mark.parametrize("shape", [(32, 32), (24, 41), (64, 48)])
def test_ssim_matches_skimage(shape: tuple[int, int]) -> None:
    # skimage filters the reflect-padded image, then averages the SSIM map over the interior whose windows lie
    # inside the image; our 'valid' map is exactly that interior, so the means must agree.
    rng = np.random.default_rng(sum(shape))
    for _ in range(3):
        a = rng.uniform(-1, 1, shape)
        b = np.clip(0.7 * a + rng.normal(0, 0.4, shape), -1, 1)
        ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2)
        ours = 1 - SSIMLoss(data_range=2.0)(torch.tensor(a)[None, None].float(), torch.tensor(b)[None, None].float())
        assert ours.item() == pytest.approx(ref, abs=1e-4)


def test_ssim_zero_for_identical_and_batched_channels() -> None:
    x = torch.rand(3, 2, 20, 20) * 2 - 1
    assert SSIMLoss()(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert SSIMLoss(padding="reflect")(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert ssim_map(x, x.flip(-1), padding="reflect").shape == x.shape


def test_ssim_gradient_and_fp32_under_autocast() -> None:
    x = (torch.rand(2, 1, 16, 16) * 2 - 1).requires_grad_()
    y = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = SSIMLoss()(x.to(torch.bfloat16), y)
    assert loss.dtype == torch.float32
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_ssim_rejects_small_images() -> None:
    with pytest.raises(ValueError, match="at least 11x11"):
        SSIMLoss()(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize(
    "spec",
    [{"mse": 2.0, "l1": 0.5}, ["l1", {"name": "mse", "weight": 2.0}, {"name": "l1", "weight": -0.5}]],
    ids=["table", "list"],
)
def test_weighted_sum(spec) -> None:
    x, y = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]])  # mse = 6/4, l1 = 4/4
    assert build_loss(spec)(x, y).item() == pytest.approx(2.0 * 1.5 + 0.5 * 1.0)


def test_build_loss_forms() -> None:
    x, y = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    assert build_loss("mse")(x, y).item() == pytest.approx(((x - y) ** 2).mean().item())
    assert isinstance(build_loss({"name": "ssim", "data_range": 1.0}), SSIMLoss)
    combo = build_loss({"mse": 1.0, "ssim": 1.0})
    assert isinstance(combo, WeightedSum) and combo.names == ["mse", "ssim"]
    assert combo(x, y).item() == pytest.approx(((x - y) ** 2).mean().item() + SSIMLoss()(x, y).item(), abs=1e-6)
    with pytest.raises(ConfigError, match="did you mean"):
        build_loss({"mse": 1.0, "sim": 1.0})
    with pytest.raises(ConfigError, match="numbers"):
        build_loss({"mse": "a lot"})


def test_softmax_losses_by_hand() -> None:
    assert {"ce", "softmax_dice", "ce_dice"} <= set(LOSSES.names())
    # three classes, equal logits: CE = log 3 whatever the true class
    target = torch.zeros(1, 3, 1, 1)
    target[0, 0] = 1.0
    assert LOSSES.build("ce")(torch.zeros(1, 3, 1, 1), target).item() == pytest.approx(np.log(3))
    # background + one structure, two pixels, p = 0.5 everywhere; the structure holds pixel 0:
    # Dice = (2 * 0.5 + 1) / (0.5 + 0.5 + 1 + 1) = 2/3 (background left out), CE = log 2
    logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]])
    assert LOSSES.build("softmax_dice")(logits, target).item() == pytest.approx(1 / 3)
    assert LOSSES.build("ce_dice")(logits, target).item() == pytest.approx(np.log(2) + 1 / 3)
    # confident and right: both near 0
    good = torch.tensor([[[[-20.0, 20.0]], [[20.0, -20.0]]]])
    assert LOSSES.build("ce_dice")(good, target).item() == pytest.approx(0.0, abs=1e-6)


def test_ce_class_weights_and_fp32_under_bf16() -> None:
    logits = torch.tensor([[[[2.0]], [[0.0]]]]).repeat(2, 1, 1, 1)
    target = torch.tensor([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]])
    per_pixel = [np.log(1 + np.exp(-2.0)), np.log(1 + np.exp(2.0))]
    weighted = LOSSES.build({"name": "ce", "weight": [1.0, 3.0]})(logits, target).item()
    assert weighted == pytest.approx((1 * per_pixel[0] + 3 * per_pixel[1]) / 2)  # mean over the 2 pixels
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = LOSSES.build("ce_dice")(logits.bfloat16(), target)
    assert loss.dtype == torch.float32
