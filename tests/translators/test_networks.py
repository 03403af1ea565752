"""CycleGAN networks: shapes on any slice size, tanh range, the PatchGAN's 70x70 receptive field."""

from __future__ import annotations

import pytest
import torch

from da_seg.translators.networks import PatchDiscriminator, ResnetGenerator, UnetGenerator, build_generator


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
