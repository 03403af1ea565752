"""Losses, registered in `LOSSES`. Each factory returns a callable ``loss(prediction, target) -> scalar tensor``.

Segmentation losses take logits ``(B, C, H, W)`` and targets of the same shape in {0, 1}: ``bce``, ``dice`` and
``bce_dice`` apply a sigmoid per channel (binary, or one channel per structure); ``ce``, ``softmax_dice`` and
``ce_dice`` a softmax over background + K structures (``C = K + 1``, background first). Image losses (``mse``,
``l1``, ``ssim``) compare two images ``(B, C, H, W)``; ``lsgan`` is the adversarial loss of the paper's Eq. 1.
Losses compute in float32 even under bf16/fp16 autocast. `build_loss` turns a config value (a name, a table or a
weighted sum such as ``{mse = 1.0, ssim = 1.0}``) into one loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from da_seg.errors import ConfigError
from da_seg.hookspecs import hookimpl
from da_seg.registry import LOSSES


class DiceLoss(nn.Module):
    """Soft Dice loss ``1 - 2|P∩T| / (|P| + |T|)`` on sigmoid probabilities, averaged over batch and classes.

    Shape:
        logits, target: ``(B, C, H, W)``; returns a scalar.
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        prob = torch.sigmoid(logits.float())
        target = target.float()
        dims = (2, 3)
        inter = (prob * target).sum(dims)
        denom = prob.sum(dims) + target.sum(dims)
        return (1 - (2 * inter + self.smooth) / (denom + self.smooth)).mean()


class BCELoss(nn.Module):
    """Binary cross-entropy on logits (the paper's segmentation loss); ``pos_weight`` up-weights the foreground."""

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        self.pos_weight = pos_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=weight)


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCE + dice_weight * Dice``."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.bce, self.dice = BCELoss(), DiceLoss()
        self.bce_weight, self.dice_weight = bce_weight, dice_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.bce_weight * self.bce(logits, target) + self.dice_weight * self.dice(logits, target)


class CELoss(nn.Module):
    """Softmax cross-entropy over background + K structures (``multiclass = "softmax"``).

    Targets are one-hot (or soft) class probabilities with the background in channel 0, the layout
    `da_seg.segmentation.targets` gives in softmax mode; ``weight`` optionally weights the classes (length K + 1;
    each pixel's loss is multiplied by its class's weight, then averaged over pixels).

    Shape:
        logits, target: ``(B, K + 1, H, W)``; returns a scalar.
    """

    softmax = True

    def __init__(self, weight: Sequence[float] | None = None) -> None:
        super().__init__()
        self.weight = None if weight is None else [float(w) for w in weight]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        weight = None if self.weight is None else torch.tensor(self.weight, device=logits.device)
        return F.cross_entropy(logits.float(), target.float(), weight=weight)


class SoftmaxDiceLoss(nn.Module):
    """Soft Dice on softmax probabilities, per image and structure, averaged (background left out by default).

    Shape:
        logits, target: ``(B, K + 1, H, W)``, background in channel 0; returns a scalar.
    """

    softmax = True

    def __init__(self, smooth: float = 1.0, include_background: bool = False) -> None:
        super().__init__()
        self.smooth, self.include_background = smooth, include_background

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        prob = torch.softmax(logits.float(), dim=1)
        target = target.float()
        if not self.include_background:
            prob, target = prob[:, 1:], target[:, 1:]
        inter = (prob * target).sum((2, 3))
        denom = prob.sum((2, 3)) + target.sum((2, 3))
        return (1 - (2 * inter + self.smooth) / (denom + self.smooth)).mean()


class CEDiceLoss(nn.Module):
    """``ce_weight * CE + dice_weight * softmax Dice``, the usual multi-class segmentation loss (nnU-Net's)."""

    softmax = True

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.ce, self.dice = CELoss(), SoftmaxDiceLoss()
        self.ce_weight, self.dice_weight = ce_weight, dice_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.ce_weight * self.ce(logits, target) + self.dice_weight * self.dice(logits, target)


def mse() -> nn.Module:
    """Mean squared error (the paper's default cycle loss, section 3; its SSIM loss replaces it)."""
    return nn.MSELoss()


def l1() -> nn.Module:
    """Mean absolute error (CycleGAN's default cycle loss)."""
    return nn.L1Loss()


def _fp32(device: torch.device) -> Any:
    """Autocast off: losses are computed in float32 whatever the surrounding precision."""
    return torch.autocast(device_type=device.type, enabled=False)


class LSGANLoss(nn.Module):
    """Least-squares GAN loss (Mao et al.), the paper's Eq. 1.

    ``loss(prediction, target)`` is ``mean((D(x) - target)^2)`` with ``target`` 1 for real, 0 for fake.
    `discriminator` gives Eq. 1, ``mean((D(real) - 1)^2) + mean(D(fake)^2)`` (each mean over its own batch, the
    ``1/m`` and ``1/n`` of the paper, and over the patch outputs); `generator` gives ``mean((D(fake) - 1)^2)``.

    Shape:
        discriminator outputs of any shape (PatchGAN: ``(B, 1, h, w)``); returns a scalar.

    Example:
        >>> gan = LSGANLoss()
        >>> gan.discriminator(torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.5])).item()  # (0 + 0.25)/2 + 0.25/2
        0.25
    """

    def forward(self, prediction: Tensor, target: float | Tensor) -> Tensor:
        with _fp32(prediction.device):
            return ((prediction.float() - target) ** 2).mean()

    def discriminator(self, real: Tensor, fake: Tensor) -> Tensor:
        """Eq. 1: push D(real) to 1 and D(fake) to 0."""
        return self(real, 1.0) + self(fake, 0.0)

    def generator(self, fake: Tensor) -> Tensor:
        """The generator's side: push D(G(x)) to 1."""
        return self(fake, 1.0)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (the SSIM window is its outer product)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return (w / w.sum()).float()


def gaussian_blur(x: Tensor, size: int = 11, sigma: float = 1.5) -> Tensor:
    """Separable Gaussian (`gaussian_window`) over each channel, without padding (pad first for a full-size map).

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, H - size + 1, W - size + 1)``.
    """
    channels = x.shape[1]
    g = gaussian_window(size, sigma).to(x.device, x.dtype)
    x = F.conv2d(x, g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(x, g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)


def ssim_map(
    x: Tensor, y: Tensor, data_range: float = 2.0, window: int = 11, sigma: float = 1.5, padding: str = "valid"
) -> Tensor:
    """Local SSIM (Eq. 3) at every pixel, per channel, with Gaussian-weighted means, variances and covariance.

    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with ``L = data_range``; variances are population (biased) moments.
    ``padding="valid"`` keeps only pixels whose whole window lies inside the image (no invented border values;
    its mean equals ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``, which also crops the border before averaging); ``"reflect"`` gives a
    full-size map from a reflect-padded image.

    Shape:
        x, y: ``(B, C, H, W)``, H and W >= ``window`` for ``"valid"``; returns ``(B, C, H', W')``.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    if padding not in ("valid", "reflect"):
        raise ValueError(f"ssim padding must be 'valid' or 'reflect', got {padding!r}")
    with _fp32(x.device):
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # float64 stays (metrics in HU)
        x, y = x.to(dtype), y.to(dtype)
        if padding == "reflect":
            pad = window // 2
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
            y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
        elif min(x.shape[-2:]) < window:
            raise ValueError(f"ssim with padding='valid' needs images of at least {window}x{window}")

        # Moments of the images minus their means: (co)variances are shift-invariant, and centring keeps
        # E[x^2] - mu^2 from cancelling catastrophically in float32 on bright, flat regions.
        x0, y0 = x.mean(dim=(2, 3), keepdim=True), y.mean(dim=(2, 3), keepdim=True)
        xc, yc = x - x0, y - y0
        stats = gaussian_blur(torch.cat([xc, yc, xc * xc, yc * yc, xc * yc], dim=0), window, sigma).chunk(5, dim=0)
        m_x, m_y, xx, yy, xy = stats
        var_x, var_y, cov = xx - m_x**2, yy - m_y**2, xy - m_x * m_y
        mu_x, mu_y = m_x + x0, m_y + y0
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


class SSIMLoss(nn.Module):
    """The paper's SSIM cycle loss, Eq. 2: the mean over pixels of ``1 - SSIM(p)`` (Eq. 3 with an 11x11 Gaussian
    window, sigma 1.5). 0 for identical images; ``data_range`` is 2 for images in [-1, 1]. See `ssim_map`.

    Shape:
        prediction, target: ``(B, C, H, W)``; returns a scalar.
    """

    def __init__(self, data_range: float = 2.0, window: int = 11, sigma: float = 1.5, padding: str = "valid") -> None:
        super().__init__()
        self.data_range, self.window, self.sigma, self.padding = data_range, window, sigma, padding

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        s = ssim_map(prediction, target, self.data_range, self.window, self.sigma, self.padding)
        return (1 - s).mean()


class WeightedSum(nn.Module):
    """``sum_i weight_i * loss_i(prediction, target)``: e.g. the cycle loss ``{mse = 1.0, ssim = 1.0}``.

    Args:
        terms: ``{name: weight}``, or a list of names / tables ``{name = "ssim", weight = 0.5, ...kwargs}``.
    """

    def __init__(self, terms: Mapping[str, float] | Sequence[str | Mapping[str, Any]]) -> None:
        super().__init__()
        if isinstance(terms, Mapping):
            items = [({"name": n}, float(w)) for n, w in terms.items()]
        else:
            items = []
            for t in terms:
                spec = {"name": t} if isinstance(t, str) else dict(t)
                items.append((spec, float(spec.pop("weight", 1.0))))
        if not items:
            raise ConfigError("a weighted loss needs at least one term, e.g. {mse = 1.0, ssim = 1.0}")
        self.names = [spec["name"] for spec, _ in items]
        self.weights = [w for _, w in items]
        self.losses = nn.ModuleList([_as_module(LOSSES.build(spec)) for spec, _ in items])

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return sum(w * loss(prediction, target) for w, loss in zip(self.weights, self.losses, strict=True))

    def __repr__(self) -> str:
        return " + ".join(f"{w:g}*{n}" for n, w in zip(self.names, self.weights, strict=True))


class _Wrapped(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return self.fn(prediction, target)


def _as_module(loss: Any) -> nn.Module:
    return loss if isinstance(loss, nn.Module) else _Wrapped(loss)


def build_loss(spec: str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]]) -> nn.Module:
    """A loss from a config value.

    ``"mse"`` or ``{name = "ssim", data_range = 2.0}`` build one registered loss; a table without ``name``
    (``{mse = 1.0, ssim = 1.0}``) or a list of names/tables (each with an optional ``weight``) builds a `WeightedSum`.
    """
    if isinstance(spec, str):
        return _as_module(LOSSES.build(spec))
    if isinstance(spec, Mapping):
        if "name" in spec:
            return _as_module(LOSSES.build(spec))
        bad = [k for k, v in spec.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v)]
        if bad:
            raise ConfigError(f"loss weights must be numbers, got {', '.join(f'{k}={spec[k]!r}' for k in bad)}")
        return WeightedSum(spec)
    if isinstance(spec, Sequence):
        return WeightedSum(list(spec))
    raise ConfigError(f"cannot build a loss from {spec!r}; use a name, a table or {{mse = 1.0, ssim = 1.0}}")


@hookimpl
def register_losses(register) -> None:
    register("bce", BCELoss)
    register("dice", DiceLoss)
    register("bce_dice", BCEDiceLoss)
    register("ce", CELoss)
    register("softmax_dice", SoftmaxDiceLoss)
    register("ce_dice", CEDiceLoss)
    register("mse", mse)
    register("l1", l1)
    register("lsgan", LSGANLoss)
    register("ssim", SSIMLoss)
    register("weighted_sum", WeightedSum)
