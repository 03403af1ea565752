"""CycleGAN networks: shapes on any slice size, tanh range, the PatchGAN's 70x70 receptive field."""

from __future__ import annotations

import pytest
import torch

from da_seg.errors import ConfigError
from da_seg.translators.networks import (
    PatchDiscriminator,
    ResnetGenerator,
    UnetGenerator,
    build_generator,
    init_weights,
)


@pytest.mark.parametrize("size", [(32, 32), (30, 45), (17, 16)])
@pytest.mark.parametrize(
    "net", [ResnetGenerator(3, 3, width=4, blocks=2), UnetGenerator(3, 3, width=4, depth=3)], ids=["resnet", "unet"]
)
def test_generators_keep_the_shape(net, size, device) -> None:
    x = torch.rand(2, 3, *size, device=device) * 2 - 1
    y = net.to(device)(x)
    assert y.shape == x.shape and y.device == x.device
    assert y.abs().max() <= 1


def test_resnet_generator_has_cyclegan_size() -> None:
    # CycleGAN's resnet_9blocks with 3 channels in and out has 11,378,179 parameters (ngf 64, instance norm).
    assert sum(p.numel() for p in ResnetGenerator(3, 3, 64, 9).parameters()) == 11_378_179


def test_patchgan_sees_70x70_patches() -> None:
    net = PatchDiscriminator(1, width=2, layers=3)
    # Instance norm mixes every pixel through its statistics; the receptive field is the convolutions' geometry.
    for i, m in enumerate(net.model):
        if isinstance(m, torch.nn.GroupNorm):  # instance norm, one channel per group
            net.model[i] = torch.nn.Identity()
    x = torch.zeros(1, 1, 128, 128, requires_grad=True)
    out = net(x)
    assert out.shape == (1, 1, 14, 14)
    out[0, 0, 7, 7].backward()
    rows, cols = torch.nonzero(x.grad[0, 0]).unbind(1)
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


def test_build_generator_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="resnet"):
        build_generator("transformer", 1, 4, 2, 3)


def _checkerboard(net: torch.nn.Module) -> float:
    """Share of the output's energy (mean removed, borders cut) at the period-2 frequencies (H/2 or W/2 of the
    spectrum) for a smooth input, a broad Gaussian blob: where a stride-2 transposed convolution's uneven overlap
    shows. Fixed initial weights (seed 0)."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    blob = torch.exp(-((yy - 30) ** 2 + (xx - 34) ** 2) / (2 * 12.0**2)) * 1.2 - 0.6
    torch.manual_seed(0)
    init_weights(net)
    with torch.no_grad():
        out = net.eval()(blob[None, None])[0, 0, 8:-8, 8:-8]
    power = torch.fft.fft2(out - out.mean()).abs() ** 2
    n = power.shape[-1] // 2
    return float((power[n, :].sum() + power[:, n].sum() - power[n, n]) / power.sum())


@pytest.mark.parametrize("kind", ["resnet", "unet"])
def test_resize_upsampling_removes_the_checkerboard(kind: str) -> None:
    """Issue 41: the SynCT showed a regular checkerboard texture. For a smooth input the transposed convolutions put
    a fifth to two fifths of the output's variation at the period-2 frequencies (0.21 resnet, 0.41 unet, measured),
    resize-convolution about a thousandth."""
    transposed = _checkerboard(build_generator(kind, 1, 8, 2, 3, "transposed"))
    resize = _checkerboard(build_generator(kind, 1, 8, 2, 3, "resize"))
    assert transposed > 0.1 and resize < 0.01, (transposed, resize)


def test_upsampling_is_checked_and_keeps_shapes() -> None:
    with pytest.raises(ConfigError, match="upsample must be one of"):
        build_generator("resnet", 1, 4, 1, 3, "bilinear-ish")
    for kind in ("resnet", "unet"):
        net = build_generator(kind, 3, 4, 1, 3, "resize")
        assert net(torch.zeros(2, 3, 37, 50)).shape == (2, 3, 37, 50)
