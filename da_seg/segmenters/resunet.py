"""The 2.5D residual U-Net of the paper (section 2.3).

A U-Net (Ronneberger et al., 2015) whose every encoder and decoder level is a residual block (He et al., 2016): two
3x3 convolution-normalisation-activation layers plus an identity (or 1x1 projection) shortcut. The input channels are
``2 * context + 1`` neighbouring slices, so the network sees a little through-plane context at 2D cost.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from da_seg.errors import ConfigError
from da_seg.padding import pad_to_multiple


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ConfigError(f"norm must be 'batch' or 'instance', got {kind!r}")


class ResBlock(nn.Module):
    """``relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``; the shortcut is a 1x1 conv when widths differ.

    Shape:
        ``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            _norm(norm, out_channels),
        )
        self.shortcut = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), _norm(norm, out_channels))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResUNet25D(nn.Module):
    """Residual U-Net over 2.5D slice stacks.

    Args:
        in_channels: ``2 * context + 1`` slices.
        classes: output channels (1: binary, sigmoid; K: one sigmoid channel per structure).
        base: width of the first level; level ``i`` has ``base * 2**i`` channels.
        depth: number of down-sampling steps (the bottleneck is at ``1 / 2**depth`` of the input size).
        norm: ``"batch"`` or ``"instance"``.
        dropout: channel dropout inside each block (0 disables it).

    Shape:
        ``(B, in_channels, H, W)`` -> logits ``(B, classes, H, W)``; any H, W (padded internally to a multiple of
        ``2**depth`` and cropped back).

    Example:
        >>> net = ResUNet25D(in_channels=3, classes=1, base=4, depth=2)
        >>> net(torch.zeros(2, 3, 20, 24)).shape
        torch.Size([2, 1, 20, 24])
    """

    def __init__(
        self,
        in_channels: int = 1,
        classes: int = 1,
        base: int = 16,
        depth: int = 4,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1 or base < 1:
            raise ConfigError(f"depth and base must be >= 1, got depth={depth}, base={base}")
        _norm(norm, 1)  # validate early
        widths = [base * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.stem = ResBlock(in_channels, widths[0], norm, dropout)
        self.down = nn.ModuleList(ResBlock(widths[i], widths[i + 1], norm, dropout) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth))
        self.decode = nn.ModuleList(ResBlock(2 * widths[i], widths[i], norm, dropout) for i in range(depth))
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        x, (rows, cols) = pad_to_multiple(x, 2**self.depth)
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))
        y = skips.pop()
        for i in reversed(range(self.depth)):
            y = self.decode[i](torch.cat([self.up[i](y), skips.pop()], dim=1))
        return self.head(y)[..., rows, cols]


def resunet25d(
    in_channels: int = 1,
    classes: int = 1,
    base: int = 16,
    depth: int = 4,
    norm: str = "batch",
    dropout: float = 0.0,
) -> ResUNet25D:
    """The paper's 2.5D Res-U-Net (registered as ``resunet25d``)."""
    return ResUNet25D(in_channels=in_channels, classes=classes, base=base, depth=depth, norm=norm, dropout=dropout)
