"""CycleGAN networks (Zhu et al. 2017, after the authors' pytorch-CycleGAN-and-pix2pix): ResNet and U-Net
generators, and the 70x70 PatchGAN discriminator.

All take and return ``(B, C, H, W)`` images in [-1, 1] (tanh output). Generators pad any input to a multiple of
their total stride (replicating the border) and crop back, so whole slices of any size go through.

``upsample``: ``"transposed"`` (CycleGAN's strided transposed convolutions) or ``"resize"`` (ours to offer: nearest
upsampling by 2, then a 3x3 convolution; Odena et al. 2016, "Deconvolution and checkerboard artifacts"). A
transposed convolution whose kernel does not divide by its stride covers the output pixels unevenly, which leaves a
period-2 checkerboard in the SynCT; resize-convolution covers them evenly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from da_seg.errors import ConfigError
from da_seg.padding import pad_to_multiple


def _norm(channels: int) -> nn.Module:
    """Instance normalisation (CycleGAN's), computed as a group norm with one channel per group: the same
    statistics and no parameters, in one kernel instead of instance_norm's reshapes around a batch norm (~15 vs 6
    dispatched operators forward), and it keeps channels_last tensors channels_last."""
    return nn.GroupNorm(channels, channels, affine=False)


class _PadToMultiple(nn.Module):
    """Runs ``body`` on the input padded to a multiple of ``multiple`` and crops the output back."""

    def __init__(self, body: nn.Module, multiple: int) -> None:
        super().__init__()
        self.body, self.multiple = body, multiple

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        x, (rows, cols) = pad_to_multiple(x, self.multiple, centre=True)
        y = self.body(x)
        return y if y.shape[-2:] == size else y[..., rows, cols]


UPSAMPLING = ("transposed", "resize")


def _upsample(upsample: str, channels_in: int, channels_out: int, kernel: int, padding: int, **extra: int) -> list:
    """Layers that double H and W: a transposed convolution (``kernel``, stride 2, ``padding``, ``extra``) or nearest
    upsampling then a 3x3 convolution (reflection-padded)."""
    if upsample == "transposed":
        return [nn.ConvTranspose2d(channels_in, channels_out, kernel, stride=2, padding=padding, **extra)]
    if upsample == "resize":
        return [
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels_in, channels_out, 3),
        ]
    raise ConfigError(f"upsample must be one of {UPSAMPLING}, got {upsample!r}")


class ResnetBlock(nn.Module):
    """``x + conv-IN-ReLU-conv-IN(x)`` with reflection padding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(_PadToMultiple):
    """c7s1-w, d2w, d4w, ``blocks`` x R4w, u2w, uw, c7s1-out (the CycleGAN generator; 9 blocks for 256x256).

    Shape:
        ``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 64,
        blocks: int = 9,
        upsample: str = "transposed",
    ) -> None:
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, width, 7),
            _norm(width),
            nn.ReLU(True),
        ]
        for i in range(2):  # downsampling
            c = width * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm(2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(width * 4) for _ in range(blocks)]
        for i in range(2):  # upsampling
            c = width * 2 ** (2 - i)
            layers += [*_upsample(upsample, c, c // 2, 3, 1, output_padding=1), _norm(c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        super().__init__(nn.Sequential(*layers), multiple=4)


class _UnetLevel(nn.Module):
    """One U-Net level: down (conv 4x4 s2), the inner levels, up (transposed conv 4x4 s2), skip by concatenation."""

    def __init__(
        self,
        outer: int,
        inner: int,
        sub: nn.Module | None,
        outermost: bool = False,
        out: int = 0,
        upsample: str = "transposed",
    ) -> None:
        super().__init__()
        self.outermost = outermost
        down: list[nn.Module] = [] if outermost else [nn.LeakyReLU(0.2, True)]
        down.append(nn.Conv2d(outer, inner, 4, stride=2, padding=1))
        if not outermost and sub is not None:
            down.append(_norm(inner))
        up_in = inner if sub is None else 2 * inner
        up: list[nn.Module] = [nn.ReLU(True), *_upsample(upsample, up_in, out if outermost else outer, 4, 1)]
        up.append(nn.Tanh() if outermost else _norm(outer))
        self.down, self.sub, self.up = nn.Sequential(*down), sub or nn.Identity(), nn.Sequential(*up)

    def forward(self, x: Tensor) -> Tensor:
        y = self.up(self.sub(self.down(x)))
        return y if self.outermost else torch.cat([x, y], dim=1)


class UnetGenerator(_PadToMultiple):
    """The pix2pix U-Net: ``depth`` stride-2 levels (widths w, 2w, 4w, 8w, 8w, ...), skips by concatenation.

    Shape:
        ``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)``; H, W are padded to a multiple of ``2**depth``.
    """

    def __init__(
        self, in_channels: int = 1, out_channels: int = 1, width: int = 64, depth: int = 7, upsample: str = "transposed"
    ) -> None:
        if depth < 2:
            raise ConfigError(f"unet depth must be >= 2, got {depth}")
        widths = [width * min(2**i, 8) for i in range(depth)]
        level: nn.Module | None = None
        for i in range(depth - 1, 0, -1):
            level = _UnetLevel(widths[i - 1], widths[i], level, upsample=upsample)
        top = _UnetLevel(in_channels, widths[0], level, outermost=True, out=out_channels, upsample=upsample)
        super().__init__(top, multiple=2**depth)


class PatchDiscriminator(nn.Module):
    """PatchGAN: a grid of real/fake scores, each seeing a 70x70 patch with ``layers=3`` (LSGAN: no sigmoid).

    Shape:
        ``(B, in_channels, H, W)`` -> ``(B, 1, H/2**layers - 2, W/2**layers - 2)`` approximately.
    """

    def __init__(self, in_channels: int = 1, width: int = 64, layers: int = 3) -> None:
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        c = width
        for n in range(1, layers + 1):
            c_next = width * min(2**n, 8)
            stride = 2 if n < layers else 1
            seq += [nn.Conv2d(c, c_next, 4, stride=stride, padding=1), _norm(c_next), nn.LeakyReLU(0.2, True)]
            c = c_next
        seq.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*seq)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """CycleGAN's init: conv weights ~ N(0, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_generator(
    kind: str, channels: int, width: int, blocks: int, depth: int, upsample: str = "transposed"
) -> nn.Module:
    """``resnet`` (``blocks`` residual blocks) or ``unet`` (``depth`` levels), ``channels`` in and out."""
    if kind == "resnet":
        return ResnetGenerator(channels, channels, width, blocks, upsample)
    if kind == "unet":
        return UnetGenerator(channels, channels, width, depth, upsample)
    raise ConfigError(f"generator must be 'resnet' or 'unet', got {kind!r}")
