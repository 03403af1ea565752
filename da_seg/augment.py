"""Augmentations built on kornia.augmentation, registered in `AUGMENTATIONS`, composed by `build_augmentation`.

Each registered factory returns one ``kornia.augmentation`` module or a list of them. Factories whose geometry depends
on the image size (crops resized back) take a ``size=(H, W)`` argument that `build_augmentation` fills in from the
batch, so a config names only what a user chooses::

    source_augment = [{name = "random_ratio_crop", min_ratio = 0.5}, {name = "rotation", degrees = 10}, "flip"]
    target_augment = [{name = "centre_crop", ratio = 0.5}]

The composition is ``kornia.augmentation.AugmentationSequential(..., data_keys=["input", "mask"])``: geometric ops
move the mask with the image (nearest resampling), intensity ops leave it alone, and everything runs on the batch's
device. The paper (sections 3 and 4) augments the CycleGAN's data with random crops of ratio 1 to 0.5 (read here as
the side ratio; the crop is resized back), rotation and flipping, after cropping CT by 50% around the centre to
remove air and the table; it names neither the rotation angle nor the flip axis.

When every spec names one of our geometric ops (``random_ratio_crop``, ``rotation``, ``flip``, ``centre_crop``),
optionally followed by ``gaussian_noise``, and the registry still maps those names to the factories below (a plugin
may override one), the call is fused instead, because the pipeline draws parameters per module on the host and warps
once per module (~2000 aten ops a call): all uniform numbers of the batch come from one ``torch.rand`` on its device,
each op becomes a matrix (one batched ``kornia.geometry.transform.get_affine_matrix2d`` call), the matrices are
multiplied in spec order, and images (bilinear) and masks (nearest) are each warped once by
``kornia.geometry.transform.warp_affine``. kornia's functions can do all of it, so the conventions (rotation sense and
centre, corner-aligned crops) stay theirs; the price is ~270 aten ops per kornia call, which a hand-written
``F.affine_grid``/``F.grid_sample`` would save. No ``.item()``, no branch on tensor values: ``torch.compile`` can trace
the call with ``fullgraph=True``. An output ``crop`` is one more translation in the same warp.

The fused distributions are the kornia modules', with three differences: a ``random_ratio_crop`` with ``p < 1`` is
decided per image (kornia decides for the whole batch); after a crop, a rotation brings in the image around the crop
rather than ``fill`` (no intermediate image is cut) and each pixel is interpolated once, not once per op; masks follow
the image's corner-aligned mapping, where kornia's ``Resize`` rounds mask edges slightly differently.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import kornia.augmentation as K
import torch
from kornia.geometry.transform import get_affine_matrix2d, warp_affine
from torch import Tensor, nn

from da_seg.errors import ConfigError
from da_seg.hookspecs import hookimpl
from da_seg.registry import AUGMENTATIONS

Size = tuple[int, int]
AugmentSpec = str | Mapping[str, Any]


def random_ratio_crop(size: Size, min_ratio: float = 0.5, max_ratio: float = 1.0, p: float = 1.0) -> nn.Module:
    """Crop a random region with the image's aspect ratio and resize it back to ``size`` (the paper's random crop).

    The crop's area fraction is drawn uniformly from ``[min_ratio², max_ratio²]`` (kornia's ``scale``), so each
    side is ``sqrt(area fraction)`` of the image side, in ``[min_ratio, max_ratio]``; the position is uniform.
    """
    if not 0 < min_ratio <= max_ratio <= 1:
        raise ConfigError(f"need 0 < min_ratio <= max_ratio <= 1, got {min_ratio}, {max_ratio}")
    aspect = size[1] / size[0]
    return K.RandomResizedCrop(
        size=tuple(size), scale=(min_ratio**2, max_ratio**2), ratio=(aspect, aspect), p=p, cropping_mode="resample"
    )


def rotation(degrees: float | tuple[float, float] = 10.0, p: float = 0.5) -> nn.Module:
    """Rotate by an angle uniform in ``[-degrees, degrees]`` (or in ``[low, high]`` for a pair) about the centre."""
    return K.RandomRotation(degrees=degrees, p=p)


def flip(horizontal: bool = True, vertical: bool = False, p: float = 0.5) -> list[nn.Module]:
    """Left-right and/or up-down flips, each applied with probability ``p``.

    A left-right flip swaps left and right: leave it out for lateralised structures (left/right organs, heart
    chambers), e.g. ``segmentation.augment`` without ``flip`` (docs/config.md).
    """
    ops: list[nn.Module] = []
    if horizontal:
        ops.append(K.RandomHorizontalFlip(p=p))
    if vertical:
        ops.append(K.RandomVerticalFlip(p=p))
    return ops


def centre_crop(size: Size, ratio: float = 0.5) -> list[nn.Module]:
    """Keep the central ``ratio`` of each side and resize back to ``size`` (the paper crops CT by 50%)."""
    if not 0 < ratio <= 1:
        raise ConfigError(f"centre_crop ratio must be in (0, 1], got {ratio}")
    crop = (max(1, round(size[0] * ratio)), max(1, round(size[1] * ratio)))
    return [K.CenterCrop(size=crop), K.Resize(size=tuple(size))]


def gaussian_noise(std: float = 0.02, p: float = 0.5) -> nn.Module:
    """Additive Gaussian noise on the image only (an intensity op: masks are untouched)."""
    return K.RandomGaussianNoise(mean=0.0, std=std, p=p)


def _fused_ops(specs: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]] | None:
    """Each spec's name and arguments (defaults filled in) when the fused path can run the list, else None.

    It can when every name is still registered to our own factory (a plugin may override one) and the intensity op
    comes last. Ops that never fire (``p = 0``, a flip of neither axis) are dropped, so they cost nothing.
    """
    ours = {f.__name__: f for f in (random_ratio_crop, rotation, flip, centre_crop, gaussian_noise)}
    ops: list[tuple[str, dict[str, Any]]] = []
    noise = False
    for spec in specs:
        name, factory = spec["name"], AUGMENTATIONS.get(spec["name"])
        if ours.get(name) is not factory or (noise and name != "gaussian_noise"):
            return None
        noise = name == "gaussian_noise"
        params = inspect.signature(factory).parameters
        AUGMENTATIONS.build(spec, **({"size": (8, 8)} if "size" in params else {}))  # the kornia path's checks
        args = {n: p.default for n, p in params.items() if n != "size"}
        args.update({k: v for k, v in spec.items() if k != "name" and v is not None})
        if args.get("p", 1.0) > 0 and (name != "flip" or args["horizontal"] or args["vertical"]):
            ops.append((name, args))
    return ops


Column = Tensor | float


def _stretch(start: Column, length: Column, full: int) -> tuple[Column, Column]:
    """Shift and scale (``get_affine_matrix2d``'s, about the centre) that stretch pixels ``start`` to
    ``start + length - 1`` over ``0`` to ``full - 1``, as kornia's resample crops map corner pixel centres."""
    span = length - 1
    scale = max(full - 1, 1) / (span.clamp_min(1) if isinstance(span, Tensor) else max(span, 1))
    centre = (full - 1) / 2
    return scale * (centre - start) - centre, scale


def _op_columns(name: str, args: dict[str, Any], draws: Iterator[Tensor], size: tuple[int, int]) -> list[Column]:
    """One op as ``get_affine_matrix2d`` arguments ``[tx, ty, sx, sy, clockwise degrees]``, per image ``(B,)``."""
    h, w = size
    p = args.get("p", 1.0)
    if name == "random_ratio_crop":  # RandomResizedCrop's draw: rounded sides of the image's aspect, integer corner
        keep, area, ux, uy = (next(draws) < p), next(draws), next(draws), next(draws)
        side = (args["min_ratio"] ** 2 + area * (args["max_ratio"] ** 2 - args["min_ratio"] ** 2)).sqrt()
        cw = torch.where(keep, (side * w).round().clamp(1, w), w)
        ch = torch.where(keep, (side * h).round().clamp(1, h), h)
        tx, sx = _stretch(torch.minimum((ux * (w - cw + 1)).floor(), w - cw), cw, w)
        ty, sy = _stretch(torch.minimum((uy * (h - ch + 1)).floor(), h - ch), ch, h)
        return [tx, ty, sx, sy, 0.0]
    if name == "rotation":  # kornia's RandomRotation turns counter-clockwise, get_affine_matrix2d clockwise
        degrees = args["degrees"]
        low, high = (-degrees, degrees) if isinstance(degrees, int | float) else degrees
        keep, angle = next(draws) < p, next(draws)
        return [0.0, 0.0, 1.0, 1.0, -(low + angle * (high - low)) * keep]
    if name == "flip":  # a mirror is a scale of -1 about the centre
        sx = torch.where(next(draws) < p, -1.0, 1.0) if args["horizontal"] else 1.0
        sy = torch.where(next(draws) < p, -1.0, 1.0) if args["vertical"] else 1.0
        return [0.0, 0.0, sx, sy, 0.0]
    if name == "centre_crop":  # kornia's CenterCrop corner, then Resize (corners aligned)
        cw, ch = max(1, round(w * args["ratio"])), max(1, round(h * args["ratio"]))
        (tx, sx), (ty, sy) = _stretch(int(w / 2 - cw / 2), cw, w), _stretch(int(h / 2 - ch / 2), ch, h)
        return [tx, ty, sx, sy, 0.0]
    raise AssertionError(f"not a geometric op: {name}")


def _compose(columns: list[list[Column]], size: tuple[int, int], ones: Tensor) -> Tensor:
    """The ops' matrices from one batched ``get_affine_matrix2d`` call, composed in spec order.

    Shape:
        ``ones`` ``(B,)``; returns ``(B, 3, 3)`` from source to output pixels.
    """
    h, w = size
    const = {0.0: ones * 0, 1.0: ones}
    centre = [ones * ((w - 1) / 2), ones * ((h - 1) / 2)]  # every op turns and scales about the image centre
    flat = [c if isinstance(c, Tensor) else const[c] if c in const else ones * c for cols in columns for c in cols]
    table = torch.stack([t for i in range(0, len(flat), 5) for t in (*flat[i : i + 5], *centre)])  # (ops * 7, B)
    table = table.view(len(columns), 7, -1).transpose(1, 2).reshape(-1, 7)  # (ops * B, 7), op-major
    mats = get_affine_matrix2d(table[:, 0:2], table[:, 5:7], table[:, 2:4], table[:, 4]).view(len(columns), -1, 3, 3)
    matrix = mats[0]
    for later in mats[1:]:  # the first op's matrix acts first
        matrix = later @ matrix
    return matrix


def _draws(name: str, args: dict[str, Any]) -> int:
    """How many uniform numbers per image one op takes from the shared draw."""
    if name == "flip":
        return int(args["horizontal"]) + int(args["vertical"])
    return {"random_ratio_crop": 4, "rotation": 2, "centre_crop": 0, "gaussian_noise": 1}[name]


def _window(draw: Tensor, size: int, crop: int) -> Tensor:
    """The output crop's integer offset along one axis: inside the image, or placing a smaller image in the window."""
    slack = abs(size - crop)
    return min(0, size - crop) + (draw * (slack + 1)).floor().clamp(max=slack)


class Augmentation:
    """A composed augmentation: ``aug(images, masks, crop) -> (images, masks)`` on the batch's device.

    Built by `build_augmentation`. Built-in geometric specs run fused (one draw, one matrix, one warp: see the module
    docstring; `fused` says whether); anything else runs a kornia pipeline, built once per image size
    (size-dependent factories get ``size``). Images are shifted by ``-fill`` while warped so that pixels rotated or
    cropped in from outside take the value ``fill`` (-1, the background of normalised images) instead of zero.
    Two augmentations with equal ``specs`` and ``fill`` draw from the same distribution and compare equal, so a
    caller may augment two domains' batches in one call.

    Shape:
        images ``(B, C, H, W)`` float; masks ``(B, 1, H, W)`` integer labels or None. Outputs keep dtypes and, without
        ``crop``, shapes; ``crop=S`` returns a random ``S x S`` window (padded with ``fill``, masks with 0).
    """

    def __init__(self, specs: Sequence[AugmentSpec], fill: float = -1.0) -> None:
        self.specs = [{"name": s} if isinstance(s, str) else dict(s) for s in specs]
        for spec in self.specs:
            AUGMENTATIONS.get(spec.get("name", ""))  # fail early on an unknown name, with close matches
        self.fill = fill
        self._ops = _fused_ops(self.specs) if self.specs else None
        self._pipelines: dict[tuple[int, int, bool], K.AugmentationSequential] = {}
        self._crops: dict[tuple[int, int], K.RandomCrop] = {}

    @property
    def fused(self) -> bool:
        """Whether calls take the fused path (built-in geometric ops, noise last), not a kornia pipeline."""
        return self._ops is not None

    def __bool__(self) -> bool:
        return bool(self.specs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Augmentation) and (self.specs, self.fill) == (other.specs, other.fill)

    __hash__ = None  # type: ignore[assignment]  # mutable specs: equal by value, not hashable

    def __repr__(self) -> str:
        return f"Augmentation({self.specs})"

    def modules(self, size: Size) -> list[nn.Module]:
        """The kornia modules for images of ``size``, in order."""
        ops: list[nn.Module] = []
        for spec in self.specs:
            name = spec["name"]
            accepts_size = "size" in inspect.signature(AUGMENTATIONS.get(name)).parameters
            built = AUGMENTATIONS.build(spec, size=tuple(size)) if accepts_size else AUGMENTATIONS.build(spec)
            ops.extend(built if isinstance(built, (list, tuple)) else [built])
        return ops

    def _pipeline(self, size: Size, with_mask: bool) -> K.AugmentationSequential:
        key = (*size, with_mask)
        if key not in self._pipelines:
            keys = ["input", "mask"] if with_mask else ["input"]
            self._pipelines[key] = K.AugmentationSequential(*self.modules(size), data_keys=keys)
        return self._pipelines[key]

    def __call__(
        self, images: Tensor, masks: Tensor | None = None, crop: int | None = None
    ) -> tuple[Tensor, Tensor | None]:
        if self._ops is not None:
            return self._fused(images, masks, crop)
        if self.specs:
            pipe = self._pipeline((int(images.shape[-2]), int(images.shape[-1])), masks is not None)
            dtype = images.dtype
            x = images.float() - self.fill
            if masks is None:  # translator batches: no mask to warp
                images = (pipe(x) + self.fill).to(dtype)
            else:
                x, m = pipe(x, masks.float())
                images, masks = (x + self.fill).to(dtype), m.round().to(masks.dtype)
        return (images, masks) if crop is None else self._random_crop(images, masks, crop)

    def _random_crop(self, images: Tensor, masks: Tensor | None, crop: int) -> tuple[Tensor, Tensor | None]:
        """kornia's ``RandomCrop`` after the pipeline; images and masks as channels of one tensor, so they agree."""
        channels = images.shape[1]
        key = (crop, channels + (masks is not None))
        if key not in self._crops:
            fill = [float(self.fill)] * channels + [0.0] * (masks is not None)
            self._crops[key] = K.RandomCrop((crop, crop), pad_if_needed=True, fill=fill)
        if masks is None:
            return self._crops[key](images.float()).to(images.dtype), None
        both = self._crops[key](torch.cat([images.float(), masks.float()], dim=1))
        return both[:, :channels].to(images.dtype), both[:, channels:].round().to(masks.dtype)

    def _fused(self, images: Tensor, masks: Tensor | None, crop: int | None) -> tuple[Tensor, Tensor | None]:
        """Draw every op's parameters at once, compose one matrix per image and warp once (module docstring)."""
        ops = self._ops or []
        b, _, h, w = images.shape
        geometric = [(name, args) for name, args in ops if name != "gaussian_noise"]
        out_size = (h, w) if crop is None else (crop, crop)
        warp = bool(geometric) or out_size != (h, w)
        n_draws = sum(_draws(name, args) for name, args in ops) + 2 * (crop is not None)
        draws = iter(torch.rand(b, n_draws, device=images.device).unbind(1))  # the batch's only uniform draw
        if warp:
            columns = [_op_columns(name, args, draws, (h, w)) for name, args in geometric]
            if crop is not None:
                columns.append([-_window(next(draws), w, crop), -_window(next(draws), h, crop), 1.0, 1.0, 0.0])
            matrix = _compose(columns, (h, w), images.new_ones(b, dtype=torch.float32))
            x = warp_affine(images.float() - self.fill, matrix[:, :2], out_size) + self.fill
            if masks is not None:
                m = warp_affine(masks.float(), matrix[:, :2], out_size, mode="nearest")
                masks = m.round().to(masks.dtype)
        else:
            x = images.float()
        for name, args in ops:
            if name == "gaussian_noise":  # kornia's RandomGaussianNoise: N(0, std) per pixel, with p per image
                keep = (next(draws) < args["p"]).float().view(b, 1, 1, 1)
                x = x + torch.randn_like(x) * (args["std"] * keep)
        return x.to(images.dtype), masks


def build_augmentation(specs: Sequence[AugmentSpec] | None, *, fill: float = -1.0) -> Augmentation:
    """Compose registered augmentations from config specs (``{"name": ..., **kwargs}`` or a bare name).

    An empty list (or None) gives the identity. The result is called as ``aug(images, masks)`` with masks optional.

    Example:
        >>> aug = build_augmentation([{"name": "rotation", "degrees": 10}, {"name": "flip", "p": 0.5}])
        >>> images, masks = aug(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    """
    return Augmentation(list(specs or []), fill=fill)


@hookimpl
def register_augmentations(register) -> None:
    register("random_ratio_crop", random_ratio_crop)
    register("rotation", rotation)
    register("flip", flip)
    register("centre_crop", centre_crop)
    register("gaussian_noise", gaussian_noise)
