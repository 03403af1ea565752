"""Training a 2.5D segmenter and applying it to whole volumes (the paper's step 2, section 2.3).

`train_segmenter` builds any registered segmenter with ``2 * context + 1`` input channels and trains it with Adam and
a registered loss (BCE in the paper) on slices gathered from a `SliceBank`, augmented on the device. Cases (not
slices) are split into training and validation, and the checkpoint with the best validation 3D Dice is kept.
Checkpoints follow the translator's rules: ``workdir/last`` (weights, optimizer state, meta) is rewritten atomically
every epoch and a rerun with the same workdir resumes from it; ``workdir/model`` is the best model, a
self-contained directory that `TrainedSegmenter.load` and `predict_file` read.

``classes = 1`` is the binary case (one sigmoid channel). With ``classes = K > 1`` the network has one sigmoid
channel per structure (label ``k`` is channel ``k - 1``, one-vs-rest, so the same BCE/Dice losses apply) and a voxel
takes the most probable structure when its probability reaches the threshold. With ``multiclass = "softmax"`` the
network has ``K + 1`` channels (background first), is trained with a softmax loss (``ce``, ``softmax_dice``,
``ce_dice``) on one-hot targets, and a voxel takes the argmax class.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from da_seg.config import SegmentationConfig
from da_seg.errors import ConfigError, DataError
from da_seg.metrics.segmentation import dice
from da_seg.registry import LOSSES, SEGMENTERS
from da_seg.slices import SliceBank, neighbour_index
from da_seg.training import (
    ScalarLog,
    adam,
    autocast,
    barrier,
    dist_info,
    grad_scaler,
    is_main,
    load_checkpoint,
    load_state,
    prepare_module,
    progress_bar,
    read_json,
    resolve_device,
    save_checkpoint,
    seed_everything,
    shard,
    to_layout,
)

COMPONENT = "segmenter"
Case = tuple[np.ndarray, np.ndarray]
"""An ``(image, mask)`` pair: image ``(z, H, W)`` float32 in [-1, 1], mask ``(z, H, W)`` uint8 labels."""


# -- inference --------------------------------------------------------------------------------------------------
@dataclass
class TrainedSegmenter:
    """A segmenter with what is needed to apply it: its spec, context, classes and (optionally) its data domain.

    Attributes:
        model: the network, ``(B, 2c+1, H, W) -> (B, classes, H, W)`` logits.
        spec: the component table it was built from (``{"name": "resunet25d", ...}``).
        context: neighbour slices each side.
        classes: output channels (1: binary).
        device: where it runs.
        precision: autocast precision for inference.
        batch_size: slices per forward pass in `predict`.
        domain: the data domain (spacing, size, intensity) images must be prepared in; `predict_file` needs it.
        defaults: inference defaults (``threshold``, ``largest_component``, ``tta_flip``).
        info: training facts kept in meta.json (epochs, best validation Dice, ...).
        multiclass: ``"sigmoid"`` (``classes`` channels) or ``"softmax"`` (``classes + 1``, background first).
        channels_last: run `predict` in NHWC memory layout (faster convolutions on CPU and tensor cores).
    """

    model: nn.Module
    spec: dict[str, Any]
    context: int
    classes: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    batch_size: int = 16
    domain: dict[str, Any] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    multiclass: str = "sigmoid"
    channels_last: bool = False

    def _probabilities(self, logits: Tensor) -> Tensor:
        """Per-structure probabilities ``(B, classes, H, W)``: sigmoid, or softmax without its background."""
        if self.multiclass == "softmax":
            return torch.softmax(logits.float(), dim=1)[:, 1:]
        return torch.sigmoid(logits.float())

    @torch.inference_mode()
    def predict(self, image: np.ndarray, tta_flip: bool = False) -> np.ndarray:
        """Foreground probabilities of every slice (2.5D stacks, in batches; sigmoid, or softmax less background).

        ``tta_flip`` averages with the prediction on the left-right (W) mirrored volume.

        Shape:
            ``(z, H, W)`` -> ``(z, H, W)`` float32 when ``classes == 1``, else ``(classes, z, H, W)``.
        """
        if image.ndim != 3:
            raise DataError(f"predict needs a (z, H, W) volume, got shape {image.shape}")
        self.model.eval()
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        volume = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32), device=self.device)
        neighbours = torch.as_tensor(neighbour_index(volume.shape[0], self.context), device=self.device)
        out = torch.empty((self.classes, *volume.shape), dtype=torch.float32, device=self.device)
        # On CPU, larger batches add no parallelism (oneDNN parallelises within a slice) but push activations out of
        # cache: 512x512 resunet25d took 0.30 s/slice at batch 1-2 and 0.40 s at 16 (docs/performance.md).
        batch = self.batch_size if self.device.type == "cuda" else min(self.batch_size, 2)
        for start in range(0, volume.shape[0], batch):
            x = to_layout(volume[neighbours[start : start + batch]], self.channels_last)
            with autocast(self.device, self.precision):
                prob = self._probabilities(self.model(x))
                if tta_flip:
                    prob = 0.5 * (prob + self._probabilities(self.model(x.flip(-1))).flip(-1))
            out[:, start : start + x.shape[0]] = prob.transpose(0, 1)
        result = out.cpu().numpy()
        return result[0] if self.classes == 1 else result

    def segment(
        self,
        image: np.ndarray,
        threshold: float | None = None,
        largest_component: bool | None = None,
        tta_flip: bool | None = None,
    ) -> np.ndarray:
        """A label map: probability >= ``threshold``, optionally only the largest 3D component of each label.

        Softmax models take the argmax over background and structures (``threshold`` is not used). Unset arguments
        take the model's saved defaults (0.5, largest component on, no TTA unless trained so).

        Shape:
            ``(z, H, W)`` float image -> ``(z, H, W)`` uint8 labels (0 background, 1..classes).
        """
        threshold = self.defaults.get("threshold", 0.5) if threshold is None else threshold
        lcc = self.defaults.get("largest_component", True) if largest_component is None else largest_component
        tta = self.defaults.get("tta_flip", False) if tta_flip is None else tta_flip
        softmax = self.multiclass == "softmax"
        return probabilities_to_labels(self.predict(image, tta_flip=tta), threshold, lcc, softmax=softmax)

    def save(self, directory: str | Path) -> Path:
        """Weights and meta.json (spec, context, classes, domain, defaults) in ``directory``."""
        save_checkpoint(directory, {"model": self.model}, meta=self._meta())
        return Path(directory)

    def _meta(self, **extra: Any) -> dict[str, Any]:
        return {
            "component": COMPONENT,
            "model": self.spec,
            "context": self.context,
            "classes": self.classes,
            "multiclass": self.multiclass,
            "batch_size": self.batch_size,
            "domain": self.domain,
            "defaults": self.defaults,
            **self.info,
            **extra,
        }

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        channels_last: bool = False,
    ) -> TrainedSegmenter:
        """Rebuild the network from meta.json and load its weights (refuses other components' checkpoints).

        ``precision`` and ``channels_last`` choose how `predict` runs (``runtime.precision`` / ``channels_last``).
        """
        directory = Path(directory)
        meta = read_json(directory / "meta.json")
        if meta.get("component") != COMPONENT:
            raise DataError(f"{directory}: not a segmenter model (component '{meta.get('component')}')")
        device = resolve_device(device) if isinstance(device, str) else device
        multiclass = meta.get("multiclass", "sigmoid")
        model = build_segmenter(meta["model"], meta["context"], meta["classes"], multiclass)
        load_checkpoint(directory, {"model": model}, component=COMPONENT, map_location=device)
        known = {"component", "model", "context", "classes", "multiclass", "batch_size", "domain", "defaults"}
        return cls(
            model=model.to(device).eval(),
            spec=meta["model"],
            context=meta["context"],
            classes=meta["classes"],
            device=device,
            precision=precision,
            batch_size=meta.get("batch_size", 16),
            domain=meta.get("domain"),
            defaults=meta.get("defaults") or {},
            info={k: v for k, v in meta.items() if k not in known},
            multiclass=multiclass,
            channels_last=channels_last,
        )


def largest_components(labels: np.ndarray) -> np.ndarray:
    """Keep only the largest 26-connected 3D component of each label (removes isolated false positives)."""
    out = np.zeros_like(labels)
    structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
    for value in np.unique(labels):
        if value == 0:
            continue
        components, n = ndimage.label(labels == value, structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        out[components == sizes.argmax()] = value
    return out


def probabilities_to_labels(
    probabilities: np.ndarray, threshold: float = 0.5, largest_component: bool = True, softmax: bool = False
) -> np.ndarray:
    """``(z, H, W)`` foreground or ``(K, z, H, W)`` per-structure probabilities -> ``(z, H, W)`` uint8 labels.

    ``softmax``: the probabilities are a softmax's structure channels; the background is what they leave
    (``1 - sum``) and each voxel takes the argmax class, without a threshold.
    """
    if softmax:
        structures = probabilities[None] if probabilities.ndim == 3 else probabilities
        background = 1.0 - structures.sum(0, keepdims=True)
        labels = np.concatenate([background, structures]).argmax(0).astype(np.uint8)
    elif probabilities.ndim == 3:
        labels = (probabilities >= threshold).astype(np.uint8)
    else:
        best = probabilities.argmax(0)
        labels = np.where(probabilities.max(0) >= threshold, best + 1, 0).astype(np.uint8)
    return largest_components(labels) if largest_component else labels


# -- training ---------------------------------------------------------------------------------------------------
def build_segmenter(
    spec: Mapping[str, Any] | str, context: int, classes: int = 1, multiclass: str = "sigmoid"
) -> nn.Module:
    """The registered segmenter ``spec`` with ``2 * context + 1`` input channels and ``classes`` outputs (one more,
    the background, for ``multiclass = "softmax"``)."""
    return SEGMENTERS.build(spec, in_channels=2 * context + 1, classes=classes + (multiclass == "softmax"))


def _domain_settings(domain: Any) -> dict[str, Any] | None:
    if domain is None:
        return None
    settings = domain if isinstance(domain, Mapping) else domain.settings
    return dict(settings)


def split_cases(n: int, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Case indices for training and validation (at least one of each when ``n >= 2``; none held out for one)."""
    if n < 2:
        return list(range(n)), []
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    return sorted(order[n_val:]), sorted(order[:n_val])


def targets(masks: Tensor, classes: int, multiclass: str = "sigmoid") -> Tensor:
    """Label maps ``(B, 1, H, W)`` -> float targets ``(B, classes, H, W)`` (foreground, or one channel per label).

    ``multiclass = "softmax"``: one-hot ``(B, classes + 1, H, W)``, background in channel 0.
    """
    if multiclass == "softmax":
        return torch.cat([(masks == k) for k in range(classes + 1)], dim=1).float()
    if classes == 1:
        return (masks > 0).float()
    return torch.cat([(masks == k) for k in range(1, classes + 1)], dim=1).float()


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless batches of slice indices: one random permutation after another, every batch full."""
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def validation_dice(segmenter: TrainedSegmenter, cases: Sequence[Case]) -> float:
    """Mean 3D Dice over cases (and structures) at threshold 0.5, without post-processing."""
    scores = []
    for image, mask in cases:
        labels = segmenter.segment(image, threshold=0.5, largest_component=False, tta_flip=False)
        for k in range(1, segmenter.classes + 1):
            scores.append(dice(labels == k, mask == k))
    return float(np.mean(scores))


def _check_cases(cases: Sequence[Case], what: str) -> None:
    for i, (image, mask) in enumerate(cases):
        if image.ndim != 3 or image.shape != mask.shape:
            raise DataError(f"{what} case {i}: image {image.shape} and mask {mask.shape} must be equal (z, H, W)")


def train_segmenter(
    model_spec: Mapping[str, Any] | str,
    cases: Sequence[Case],
    settings: SegmentationConfig | None = None,
    *,
    workdir: str | Path,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    seed: int = 0,
    classes: int = 1,
    val_cases: Sequence[Case] | None = None,
    iterations_per_epoch: int | None = None,
    domain: Any = None,
    progress: bool = True,
    channels_last: bool = False,
    compile: bool = False,
) -> TrainedSegmenter:
    """Train a segmenter on ``(image, mask)`` cases; returns the best model (also saved in ``workdir/model``).

    Args:
        model_spec: segmenter component table, e.g. ``{"name": "resunet25d", "base": 16}``.
        cases: training cases, images ``(z, H, W)`` in [-1, 1] and masks ``(z, H, W)`` uint8, one in-plane size.
        settings: context, epochs, batch size, lr, loss, augmentations, validation fraction, inference defaults.
        workdir: checkpoints (``last/``, ``model/``) and ``log.jsonl``; an existing ``last/`` is resumed.
        device: ``auto``, ``cpu``, ``cuda``...
        precision: ``fp32``, ``bf16`` or ``fp16`` (GPU) autocast.
        seed: seeds the case split, initialisation, batch order and augmentations.
        classes: network outputs (1: binary foreground; K: one channel per label 1..K).
        val_cases: explicit validation cases; default: ``settings.val_fraction`` of ``cases``, split by case.
        iterations_per_epoch: batches per epoch; default: one pass over the training slices.
        domain: the data domain (a `da_seg.data.Domain` or its ``settings`` dict) saved with the model, so
            `predict_file` can prepare a raw image exactly as the training images were.
        progress: show the rich progress bar.
        channels_last: NHWC memory layout for weights and batches (``runtime.channels_last``).
        compile: ``torch.compile`` the training network (``runtime.compile``).

    Under torchrun (`da_seg.training.init_distributed`) every rank trains a DDP replica: all ranks draw the same
    seeded global batch of ``world * batch_size`` slices and each takes its share ``[rank::world]``, gradients are
    averaged, so a step equals one process on the global batch for a batch-mean loss (``bce``; a Dice term over
    the batch is computed per rank). An epoch is one pass over the slices globally. Rank 0 alone writes the log
    and checkpoints; the others wait for it before loading the result.
    """
    settings = settings or SegmentationConfig()
    spec = {"name": model_spec} if isinstance(model_spec, str) else dict(model_spec)
    device = resolve_device(device) if isinstance(device, str) else device
    workdir = Path(workdir)
    _check_cases(cases, "training")
    if val_cases is None:
        train_idx, val_idx = split_cases(len(cases), settings.val_fraction, seed)
        train, val = [cases[i] for i in train_idx], [cases[i] for i in val_idx]
    else:
        train, val = list(cases), list(val_cases)
        _check_cases(val, "validation")
    if not train:
        raise DataError("train_segmenter needs at least one training case")

    generator = seed_everything(seed)
    context = settings.context
    multiclass = settings.multiclass
    model = build_segmenter(spec, context, classes, multiclass).to(device)
    loss_fn = LOSSES.build(settings.loss)
    if getattr(loss_fn, "softmax", False) and multiclass != "softmax":
        raise ConfigError(
            f"segmentation.loss '{settings.loss.get('name')}' is a softmax loss: set segmentation.multiclass = "
            "'softmax', or use bce / dice / bce_dice"
        )
    from da_seg.augment import build_augmentation

    augment = build_augmentation(settings.augment)
    optimizer = adam(model.parameters(), lr=settings.lr)
    bank = SliceBank([im for im, _ in train], [m for _, m in train], context=context, device=device)
    dist = dist_info()
    global_batch = settings.batch_size * dist.world
    iters = iterations_per_epoch or max(1, math.ceil(len(bank) / global_batch))
    main = is_main()
    segmenter = TrainedSegmenter(
        model=model,
        spec=spec,
        context=context,
        classes=classes,
        device=device,
        precision=precision,
        batch_size=settings.batch_size,
        domain=_domain_settings(domain),
        defaults={
            "threshold": settings.threshold,
            "largest_component": settings.largest_component,
            "tta_flip": settings.tta_flip,
        },
        multiclass=multiclass,
        channels_last=channels_last,
    )
    identity = {"model": spec, "context": context, "classes": classes}
    if multiclass != "sigmoid":  # older checkpoints have no such key: they are sigmoid ones
        identity["multiclass"] = multiclass
    log = ScalarLog(workdir / "log.jsonl")
    start, best = 0, -1.0
    state = load_state(workdir / "last")
    if state is not None:
        meta = read_json(workdir / "last" / "meta.json")
        if {k: meta.get(k) for k in identity} != identity:
            raise DataError(
                f"{workdir}: holds a checkpoint of another segmenter ({meta.get('model')}, context "
                f"{meta.get('context')}); use another workdir or delete it"
            )
        load_checkpoint(workdir / "last", {"model": model}, component=COMPONENT, map_location=device)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start, best = int(state["epoch"]), float(state["best"])

    model, train_model = prepare_module(model, device, channels_last, compile)
    if dist.distributed:  # same initial weights (DDP broadcasts rank 0's), different augmentations per rank
        torch.manual_seed(seed + 7919 * dist.rank)
    scaler = grad_scaler(device, precision)
    batches = _batches(len(bank), global_batch, generator)
    bar = progress_bar(transient=True)
    bar.disable = not (progress and main)
    with bar:
        task = bar.add_task("segmenter", total=settings.epochs * iters, completed=start * iters, status="")
        for epoch in range(start, settings.epochs):
            model.train()
            tic, total = time.perf_counter(), 0.0
            for _ in range(iters):
                images, masks = bank.batch(shard(next(batches)))
                images, masks = augment(images, masks)
                with autocast(device, precision):
                    loss = loss_fn(train_model(to_layout(images, channels_last)), targets(masks, classes, multiclass))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                value = float(loss.detach())
                total += value
                bar.update(task, advance=1, status=f"epoch {epoch + 1} loss {value:.4f}")
            scores: dict[str, float] = {"epoch": epoch + 1, "loss": total / iters}
            if val:
                scores["val_dice"] = validation_dice(segmenter, val)
            scores["seconds"] = time.perf_counter() - tic
            if main:
                log.write(**scores)
            improved = not val or scores["val_dice"] > best
            if improved:
                best = scores.get("val_dice", -1.0)
                segmenter.info = {"epoch": epoch + 1, "best_val_dice": scores.get("val_dice")}
                if main:
                    segmenter.save(workdir / "model")
            if not main:
                continue
            save_checkpoint(
                workdir / "last",
                {"model": model},
                meta={"component": COMPONENT, **identity, "epoch": epoch + 1},
                state={
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    "best": best,
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                },
            )
    barrier()  # rank 0 has written the model
    result = TrainedSegmenter.load(workdir / "model", device=device, precision=precision, channels_last=channels_last)
    result.info["history"] = log.read()
    return result


# -- cross-validation -------------------------------------------------------------------------------------------
@dataclass
class FoldResult:
    """One fold of `cross_validate`: which cases it held out and the validation Dice of its kept checkpoint."""

    fold: int
    train_cases: list[int]
    val_cases: list[int]
    val_dice: float
    model_dir: Path


def fold_indices(n: int, folds: int, seed: int = 0) -> list[list[int]]:
    """``folds`` disjoint groups of case indices covering ``range(n)``, sizes differing by at most one."""
    if not 2 <= folds <= n:
        raise DataError(f"cross-validation needs 2 <= folds <= number of cases, got folds={folds} for {n} cases")
    order = np.random.default_rng(seed).permutation(n)
    return [sorted(part.tolist()) for part in np.array_split(order, folds)]


def cross_validate(
    model_spec: Mapping[str, Any] | str,
    cases: Sequence[Case],
    settings: SegmentationConfig | None = None,
    *,
    folds: int,
    workdir: str | Path,
    **train_kwargs: Any,
) -> list[FoldResult]:
    """k-fold cross-validation by case (the paper uses 6 folds); fold ``i`` trains in ``workdir/fold<i>``.

    Each fold validates on its held-out cases, which also choose its best checkpoint (as in `train_segmenter`).
    ``train_kwargs`` go to `train_segmenter` (device, precision, seed, classes, ...). A summary is written to
    ``workdir/folds.json``.
    """
    from da_seg.training import write_json

    workdir = Path(workdir)
    seed = train_kwargs.get("seed", 0)
    results = []
    groups = fold_indices(len(cases), folds, seed)
    for i, held_out in enumerate(groups):
        train_idx = [j for j in range(len(cases)) if j not in held_out]
        trained = train_segmenter(
            model_spec,
            [cases[j] for j in train_idx],
            settings,
            workdir=workdir / f"fold{i}",
            val_cases=[cases[j] for j in held_out],
            **train_kwargs,
        )
        results.append(
            FoldResult(i, train_idx, held_out, float(trained.info["best_val_dice"]), workdir / f"fold{i}" / "model")
        )
    write_json(workdir / "folds.json", [r.__dict__ for r in results])
    return results


# -- whole files ------------------------------------------------------------------------------------------------
def model_domain(segmenter: TrainedSegmenter) -> Any:
    """The `da_seg.data.Domain` a model was trained in (rebuilt from its meta.json)."""
    from da_seg.data import Domain
    from da_seg.registry import INTENSITIES

    d = segmenter.domain
    if not d or "intensity" not in d or not isinstance(d["intensity"], Mapping):
        raise DataError(
            "this model has no saved data domain (spacing, size, intensity), so raw images cannot be prepared; "
            "train it through the pipeline or pass domain= to train_segmenter"
        )
    return Domain(tuple(d["spacing_zyx"]), tuple(d["size_hw"]), INTENSITIES.build(dict(d["intensity"])))


def predict_file(
    model_dir: str | Path | TrainedSegmenter,
    image_path: str | Path,
    out_path: str | Path,
    *,
    device: str | torch.device = "auto",
    threshold: float | None = None,
    largest_component: bool | None = None,
    tta_flip: bool | None = None,
) -> Path:
    """Segment one image file (or DICOM folder) and write the mask on the input's own grid.

    The image is prepared in the model's domain (canonical orientation, spacing, crop/pad, intensity), segmented
    slice by slice, and the labels are resampled (nearest) back, so the written mask has exactly the input's size,
    spacing, origin and direction. Unset options take the model's saved defaults.
    """
    from da_seg.volume import read_volume, write_volume

    segmenter = model_dir if isinstance(model_dir, TrainedSegmenter) else TrainedSegmenter.load(model_dir, device)
    domain = model_domain(segmenter)
    volume = read_volume(image_path)
    case = domain.prepare(volume)
    labels = segmenter.segment(case.image, threshold, largest_component, tta_flip)
    restored = domain.restore(labels, case, mask=True)
    return write_volume(volume.with_array(restored.array.astype(np.uint8)), out_path, mask=True)


def _inputs(folder: Path) -> list[Path]:
    from da_seg.volume import volume_suffix

    if (folder / "images").is_dir():
        folder = folder / "images"
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (volume_suffix(p) or p.is_dir()))


def is_volume_folder(path: Path) -> bool:
    """True for a folder of volumes (or one with ``images/``), False for a file or a DICOM series folder."""
    from da_seg.volume import volume_suffix

    return path.is_dir() and ((path / "images").is_dir() or any(volume_suffix(p) for p in path.iterdir()))


def predict(
    model_dir: str | Path,
    inputs: str | Path,
    output: str | Path,
    *,
    device: str | torch.device = "auto",
    threshold: float | None = None,
    largest_component: bool | None = None,
    tta_flip: bool | None = None,
) -> list[Path]:
    """`predict_file` for one image, or for every volume in a folder (masks ``<output>/<case>.nii.gz``)."""
    from da_seg.volume import volume_id

    inputs, output = Path(inputs), Path(output)
    if not inputs.exists():
        raise DataError(f"input not found: {inputs}")
    segmenter = TrainedSegmenter.load(model_dir, device)
    options = {"threshold": threshold, "largest_component": largest_component, "tta_flip": tta_flip}
    if not is_volume_folder(inputs):
        return [predict_file(segmenter, inputs, output, **options)]
    files = _inputs(inputs)
    if not files:
        raise DataError(f"{inputs}: no image files found")
    return [predict_file(segmenter, f, output / f"{volume_id(f)}.nii.gz", **options) for f in files]
