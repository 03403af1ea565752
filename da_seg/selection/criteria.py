"""The label-free criteria (registered ``selectors``): translator criteria score a CycleGAN snapshot from
held-out source cases and unlabelled target volumes, segmenter criteria a trained segmenter from unlabelled
target volumes. See `da_seg.selection` for what each measures."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from da_seg.errors import ConfigError, DataError
from da_seg.hookspecs import hookimpl
from da_seg.metrics.segmentation import dice
from da_seg.registry import SEGMENTERS
from da_seg.slices import spread, stack_25d
from da_seg.training import adam

TRANSLATOR, SEGMENTER = "translator", "segmenter"
Case = tuple[np.ndarray, np.ndarray]
SNAPSHOT = re.compile(r"epoch_(\d{4})$")


class Selector(Protocol):
    """What a registered selector factory returns."""

    name: str
    kind: str  # "translator" or "segmenter"
    higher_is_better: bool

    def score(self, candidate: Any, **data: Any) -> float:
        """Translator selectors take ``source`` (cases) and ``target`` (volumes); segmenter ones ``target``."""
        ...


# -- helpers ----------------------------------------------------------------------------------------------------
def _stacks(volumes: Sequence[np.ndarray], context: int, max_slices: int | None) -> Tensor:
    """2.5D stacks of every slice of ``volumes``, at most ``max_slices`` of them evenly spaced.

    Shape:
        ``[(z_i, H, W)]`` -> ``(N, 2c+1, H, W)``.
    """
    if not volumes:
        raise DataError("a selector needs at least one volume")
    stacks = np.concatenate([stack_25d(np.asarray(v, np.float32), context) for v in volumes])
    return torch.as_tensor(stacks[spread(len(stacks), max_slices)])


def _slices(volumes: Sequence[np.ndarray], max_slices: int | None) -> np.ndarray:
    """Central slices of ``volumes`` concatenated, at most ``max_slices`` evenly spaced: ``(N, H, W)``."""
    array = np.concatenate([np.asarray(v, np.float32) for v in volumes])
    return array[spread(len(array), max_slices)]


def _needs_generators(translator: Any, name: str) -> None:
    if not callable(getattr(translator, "translate_slices", None)):
        raise ConfigError(
            f"selector '{name}' needs a translator with both generators (translate_slices(stacks, 'ab'/'ba'), like "
            f"cyclegan); '{getattr(translator, 'name', type(translator).__name__)}' has none: use kid or proxy_dice"
        )


def _batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch: int = 16) -> Tensor:
    return torch.cat([fn(x[i : i + batch]).float().cpu() for i in range(0, len(x), batch)])


def _mean_abs_cycle(translator: Any, stacks: Tensor, first: str, second: str) -> float:
    c = stacks.shape[1] // 2

    def cycle(x: Tensor) -> Tensor:
        return translator.translate_slices(translator.translate_slices(x, first), second)

    return float((_batched(cycle, stacks)[:, c] - stacks[:, c]).abs().mean())


# -- translator criteria ----------------------------------------------------------------------------------------
class CycleError:
    """Held-out cycle error ``mean |G_ba(G_ab(a)) - a|`` (and the target -> source -> target cycle), in [-1, 1] units.

    Args:
        directions: ``"both"`` averages the source and the target cycles; ``"source"`` uses only ``a -> b -> a``.
        max_slices: evenly spaced slices per domain (bounds the cost).
    """

    name, kind, higher_is_better = "cycle_error", TRANSLATOR, False

    def __init__(self, directions: str = "both", max_slices: int | None = 64) -> None:
        if directions not in ("both", "source"):
            raise ConfigError(f"directions must be 'both' or 'source', got '{directions}'")
        self.directions, self.max_slices = directions, max_slices

    def score(self, candidate: Any, source: Sequence[Case], target: Sequence[np.ndarray] = (), **_: Any) -> float:
        _needs_generators(candidate, self.name)
        context = int(getattr(candidate, "context", 0))
        errors = [_mean_abs_cycle(candidate, _stacks([im for im, _ in source], context, self.max_slices), "ab", "ba")]
        if self.directions == "both" and len(target):
            errors.append(_mean_abs_cycle(candidate, _stacks(list(target), context, self.max_slices), "ba", "ab"))
        return float(np.mean(errors))


class IdentityError:
    """Identity error ``mean |G_ab(b) - b|`` and ``|G_ba(a) - a|``, averaged (lower is better).

    Args:
        max_slices: evenly spaced slices per domain.
    """

    name, kind, higher_is_better = "identity_error", TRANSLATOR, False

    def __init__(self, max_slices: int | None = 64) -> None:
        self.max_slices = max_slices

    def score(self, candidate: Any, source: Sequence[Case], target: Sequence[np.ndarray], **_: Any) -> float:
        _needs_generators(candidate, self.name)
        context = int(getattr(candidate, "context", 0))
        errors = []
        for volumes, direction in (([im for im, _ in source], "ba"), (list(target), "ab")):
            stacks = _stacks(volumes, context, self.max_slices)
            out = _batched(lambda x, d=direction: candidate.translate_slices(x, d), stacks)
            errors.append(float((out[:, context] - stacks[:, context]).abs().mean()))
        return float(np.mean(errors))


class RandomFeatures(nn.Module):
    """A fixed convolutional feature extractor with seeded random weights (no training, no download).

    Three 3x3 conv + ReLU layers (``width``, ``2 width``, ``4 width`` channels; 2x2 average pooling between them).
    The feature of an image is, for every layer, each channel's spatial mean and standard deviation: ``14 width``
    numbers describing intensities and textures at three scales.

    Shape:
        ``(B, 1, H, W)`` -> ``(B, 14 width)``.
    """

    def __init__(self, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        chans = [1, width, 2 * width, 4 * width]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in itertools.pairwise(chans))
        with torch.no_grad():
            for conv in self.convs:
                fan_in = conv.in_channels * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                conv.bias.zero_()
        self.requires_grad_(False).eval()

    def forward(self, x: Tensor) -> Tensor:
        feats = []
        for i, conv in enumerate(self.convs):
            if i:
                x = F.avg_pool2d(x, 2)
            x = F.relu(conv(x))
            feats += [x.mean((-2, -1)), x.std((-2, -1))]
        return torch.cat(feats, dim=1)


def kid_from_features(x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel ``k(u, v) = (u.v / d + 1)^3`` (the KID of Binkowski et al.).

    Shape:
        ``x``: ``(m, d)``, ``y``: ``(n, d)``, with ``m, n >= 2``.
    """
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    m, n, d = x.shape[0], y.shape[0], x.shape[1]
    if m < 2 or n < 2:
        raise DataError(f"KID needs at least 2 samples per set, got {m} and {n}")
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.mean())


class KID:
    """KID between translated source slices and real target slices on `RandomFeatures` (lower is better).

    Args:
        size: slices are resized (bilinear, antialiased) to ``size`` x ``size`` before the features.
        width: base width of the random network.
        max_slices: evenly spaced slices per domain.
        seed: of the random network's weights (the same seed scores every checkpoint alike).
    """

    name, kind, higher_is_better = "kid", TRANSLATOR, False

    def __init__(self, size: int = 64, width: int = 16, max_slices: int | None = 256, seed: int = 0) -> None:
        self.size, self.max_slices = size, max_slices
        self.net = RandomFeatures(width, seed)

    @torch.no_grad()
    def features(self, slices: np.ndarray) -> Tensor:
        """``(N, H, W)`` slices in [-1, 1] -> ``(N, 14 width)`` features."""
        x = torch.as_tensor(np.asarray(slices, np.float32))[:, None]
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return _batched(self.net, x, 64).double()

    def score(self, candidate: Any, source: Sequence[Case], target: Sequence[np.ndarray], **_: Any) -> float:
        synct = [candidate.translate(im) for im, _ in source]
        return kid_from_features(
            self.features(_slices(synct, self.max_slices)), self.features(_slices(list(target), self.max_slices))
        )


def _half_split(volumes: list[np.ndarray], masks: list[np.ndarray]) -> tuple[tuple, tuple]:
    """Cases with even index train, odd index test; a single case is split along z into halves."""
    if len(volumes) >= 2:
        return (volumes[::2], masks[::2]), (volumes[1::2], masks[1::2])
    (v,), (m,) = volumes, masks
    half = max(1, v.shape[0] // 2)
    if v.shape[0] < 2:
        raise DataError("proxy_dice needs two source cases or one with at least 2 slices")
    return ([v[:half]], [m[:half]]), ([v[half:]], [m[half:]])


class ProxyDice:
    """Dice of a tiny 2D segmenter trained on one half of the SynCT and tested on the other half (higher is better).

    Args:
        model: the segmenter component table (any registered segmenter; 1 input channel, 1 class).
        steps, batch_size, lr: Adam training of the proxy (BCE + soft Dice on foreground vs background).
        size: slices are resized to ``size`` x ``size`` (images bilinear, masks nearest).
        shift: shift every training batch circularly by a random offset. Without it a proxy trained on SynCT that
            lost the anatomy still scores by learning where structures usually are (a position prior).
        seed: seeds initialisation and batch order, so every checkpoint gets the same proxy training.
    """

    name, kind, higher_is_better = "proxy_dice", TRANSLATOR, True

    def __init__(
        self,
        model: Mapping[str, Any] | str | None = None,
        steps: int = 200,
        batch_size: int = 16,
        lr: float = 3e-3,
        size: int = 48,
        shift: bool = True,
        seed: int = 0,
    ) -> None:
        self.model = (
            dict(model) if isinstance(model, Mapping) else model or {"name": "resunet25d", "base": 4, "depth": 2}
        )
        self.steps, self.batch_size, self.lr, self.size, self.seed = steps, batch_size, lr, size, seed
        self.shift = shift

    def _tensors(self, volumes: list[np.ndarray], masks: list[np.ndarray]) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(np.concatenate(volumes).astype(np.float32))[:, None]
        y = torch.as_tensor((np.concatenate(masks) > 0).astype(np.float32))[:, None]
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return x, F.interpolate(y, size=(self.size, self.size), mode="nearest")

    def score(self, candidate: Any, source: Sequence[Case], target: Sequence[np.ndarray] = (), **_: Any) -> float:
        synct = [np.asarray(candidate.translate(im), np.float32) for im, _ in source]
        (train_x, train_y), (test_x, test_y) = (
            self._tensors(list(v), list(m)) for v, m in _half_split(synct, [np.asarray(m) for _, m in source])
        )
        torch_state = torch.get_rng_state()
        torch.manual_seed(self.seed)
        try:
            net = SEGMENTERS.build(self.model, in_channels=1, classes=1)
        finally:
            torch.set_rng_state(torch_state)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a net this small runs fastest on one CPU thread (and never oversubscribes)
        try:
            return self._train_and_test(net, train_x, train_y, test_x, test_y)
        finally:
            torch.set_num_threads(threads)

    def _train_and_test(
        self, net: nn.Module, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor
    ) -> float:
        generator = torch.Generator().manual_seed(self.seed)
        optimizer = adam(net.parameters(), lr=self.lr)
        net.train()
        for _ in range(self.steps):
            index = torch.randint(len(train_x), (self.batch_size,), generator=generator)
            images, target_y = train_x[index], train_y[index]
            if self.shift:  # a random circular shift per batch: a position prior alone cannot score
                dy, dx = (int(v) for v in torch.randint(self.size, (2,), generator=generator))
                images, target_y = images.roll((dy, dx), (-2, -1)), target_y.roll((dy, dx), (-2, -1))
            logits = net(images)
            prob = torch.sigmoid(logits)
            soft_dice = 1 - (2 * (prob * target_y).sum() + 1) / (prob.sum() + target_y.sum() + 1)
            loss = F.binary_cross_entropy_with_logits(logits, target_y) + soft_dice
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            pred = _batched(lambda x: torch.sigmoid(net(x)), test_x, 64) >= 0.5
        return dice(pred[:, 0].numpy(), test_y[:, 0].numpy() > 0)


# -- segmenter criteria -----------------------------------------------------------------------------------------
def _probabilities(segmenter: Any, volume: np.ndarray) -> np.ndarray:
    """``(K, z, H, W)`` per-structure probabilities (a leading axis of 1 in the binary case)."""
    prob = np.asarray(segmenter.predict(np.asarray(volume, np.float32)), np.float32)
    return prob[None] if prob.ndim == 3 else prob


class MeanEntropy:
    """Mean binary entropy (nats) of the predicted probabilities over all voxels and structures (lower is better)."""

    name, kind, higher_is_better = "mean_entropy", SEGMENTER, False

    def score(self, candidate: Any, target: Sequence[np.ndarray], **_: Any) -> float:
        values = []
        for volume in target:
            p = np.clip(_probabilities(candidate, volume).astype(np.float64), 1e-7, 1 - 1e-7)
            values.append(-(p * np.log(p) + (1 - p) * np.log(1 - p)))
        return float(np.mean(np.concatenate([v.ravel() for v in values])))


class FlipAgreement:
    """Mean Dice between each volume's labels and the mirrored-back labels of its mirror image (higher is better).

    A structure found in neither scores 0, not 1: whole target scans contain the structures, and a segmenter that
    finds nothing must not win by agreeing with itself.

    Args:
        axis: the flipped axis of ``(z, H, W)``: -1 mirrors left-right.
        threshold: probability threshold of the labels.
    """

    name, kind, higher_is_better = "flip_agreement", SEGMENTER, True

    def __init__(self, axis: int = -1, threshold: float = 0.5) -> None:
        self.axis, self.threshold = axis, threshold

    def score(self, candidate: Any, target: Sequence[np.ndarray], **_: Any) -> float:
        scores = []
        for volume in target:
            volume = np.asarray(volume, np.float32)
            plain = _probabilities(candidate, volume) >= self.threshold
            mirrored = np.ascontiguousarray(np.flip(volume, self.axis))
            back = np.flip(_probabilities(candidate, mirrored) >= self.threshold, self.axis)
            scores += [dice(plain[k], back[k]) if plain[k].any() or back[k].any() else 0.0 for k in range(len(plain))]
        return float(np.mean(scores))


def snd_from_features(features: np.ndarray | Tensor, temperature: float = 0.05) -> float:
    """Soft neighbourhood density (Saito et al. 2021) of ``(N, d)`` features: L2-normalise, cosine similarities
    without self-pairs, softmax over each row at ``temperature``, mean row entropy (nats)."""
    f = F.normalize(torch.as_tensor(features, dtype=torch.float64), dim=1)
    if f.shape[0] < 2:
        raise DataError("SND needs at least 2 samples")
    sim = f @ f.T
    sim.fill_diagonal_(-math.inf)
    p = torch.softmax(sim / temperature, dim=1)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(1)
    return float(entropy.mean())


class SoftNeighbourhoodDensity:
    """SND on per-voxel class-probability features of 3x3 neighbourhoods (higher is better); see the module doc.

    Args:
        samples: voxels drawn (uniformly, seeded) over all target volumes.
        temperature: of the softmax over similarities (Saito et al. use 0.05).
        seed: of the voxel sampling (fixed so every checkpoint is scored on the same voxels).
    """

    name, kind, higher_is_better = "soft_neighbourhood_density", SEGMENTER, True

    def __init__(self, samples: int = 1024, temperature: float = 0.05, seed: int = 0) -> None:
        self.samples, self.temperature, self.seed = samples, temperature, seed

    def features(self, probabilities: np.ndarray) -> np.ndarray:
        """``(K, z, H, W)`` probabilities -> ``(z*H*W, 9 (K+1))`` neighbourhood features (edges replicated)."""
        p = torch.as_tensor(probabilities, dtype=torch.float32)
        background = 1 - p.max(0, keepdim=True).values
        classes = torch.cat([background, p]).transpose(0, 1)  # (z, K+1, H, W)
        padded = F.pad(classes, (1, 1, 1, 1), mode="replicate")
        patches = F.unfold(padded, 3)  # (z, (K+1) 9, H W)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1]).numpy()

    def score(self, candidate: Any, target: Sequence[np.ndarray], **_: Any) -> float:
        feats = np.concatenate([self.features(_probabilities(candidate, v)) for v in target])
        rng = np.random.default_rng(self.seed)
        index = rng.choice(len(feats), size=min(self.samples, len(feats)), replace=False)
        return snd_from_features(feats[index], self.temperature)


@hookimpl
def register_selectors(register) -> None:
    register("cycle_error", CycleError)
    register("identity_error", IdentityError)
    register("kid", KID)
    register("proxy_dice", ProxyDice)
    register("mean_entropy", MeanEntropy)
    register("flip_agreement", FlipAgreement)
    register("soft_neighbourhood_density", SoftNeighbourhoodDensity)
