"""Training a segmenter on 2.5D slices (`train_segmenter`) and k-fold cross-validation (`cross_validate`).
See `da_seg.segmentation`."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from da_seg.checkpoints import load_checkpoint, load_state, save_checkpoint
from da_seg.config import SegmentationConfig
from da_seg.distributed import barrier, dist_info, is_main, shard
from da_seg.errors import ConfigError, DataError
from da_seg.files import read_json
from da_seg.metrics.segmentation import dice
from da_seg.progress import ScalarLog, progress_bar
from da_seg.registry import AUGMENTATIONS, LOSSES, SEGMENTERS, component_errors
from da_seg.segmentation.inference import COMPONENT, Case, TrainedSegmenter, build_segmenter
from da_seg.slices import SliceBank
from da_seg.training import (
    AdamUpdate,
    adam,
    autocast,
    compile_step,
    compiles_whole_step,
    grad_scaler,
    optimise,
    prepare_module,
    resolve_device,
    seed_everything,
    to_layout,
)

READ_BACK_EVERY = 10  # training steps between loss read-backs (each one waits for the GPU)
STATE_KEYS = ("optimizer", "epoch", "best", "generator", "torch_rng")
"""What `train_segmenter` saves in ``last/state.pt`` and reads back on resume."""


# -- training ---------------------------------------------------------------------------------------------------
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
    compile: bool | str = False,
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
        compile: ``torch.compile`` the whole training step (``runtime.compile``; a string names a backend other
            than inductor, e.g. ``"aot_eager"`` in tests).

    Under torchrun (`da_seg.distributed.init_distributed`) every rank trains a DDP replica: all ranks draw the same
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
        defaults=settings.inference_defaults(),
        multiclass=multiclass,
        channels_last=channels_last,
    )
    identity = {"model": spec, "context": context, "classes": classes}
    if multiclass != "sigmoid":  # older checkpoints have no such key: they are sigmoid ones
        identity["multiclass"] = multiclass
    log = ScalarLog(workdir / "log.jsonl")
    start, best = 0, -1.0
    state = load_state(workdir / "last", required=STATE_KEYS)
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

    whole_step = compiles_whole_step(compile, precision, dist.distributed)  # else the network alone
    model, train_model = prepare_module(model, device, channels_last, bool(compile) and not whole_step)
    if dist.distributed:  # same initial weights (DDP broadcasts rank 0's), different augmentations per rank
        torch.manual_seed(seed + 7919 * dist.rank)
    scaler = grad_scaler(device, precision)
    update = None if precision == "fp16" else AdamUpdate(optimizer, torch.tensor(settings.lr, device=device))

    def learn(images: Tensor, masks: Tensor) -> Tensor:
        """One update; no host synchronisation inside (the loss comes back as a device tensor)."""
        with autocast(device, precision):
            loss = loss_fn(train_model(to_layout(images, channels_last)), targets(masks, classes, multiclass))
        optimise(loss, optimizer, update, scaler, dist.distributed)
        return loss.detach().float()

    def step(index: Tensor) -> Tensor:
        """Gather the slices (on the device), augment them and learn from them."""
        return learn(*augment(*bank.batch(index)))

    if whole_step:  # from slice indices to updated weights in one graph (one CUDA graph replay on a GPU), unless
        # the augmentation is a kornia pipeline, which does not trace whole: then it runs before the compiled update
        traceable = augment.fused or not augment
        compiled = compile_step(step if traceable else learn, device, compile)
        step = compiled if traceable else lambda index: compiled(*augment(*bank.batch(index)))
    batches = _batches(len(bank), global_batch, generator)
    bar = progress_bar(transient=True)
    bar.disable = not (progress and main)
    components = (
        (SEGMENTERS, spec["name"], model),
        (LOSSES, settings.loss["name"], loss_fn),
        *((AUGMENTATIONS, s["name"], augment) for s in augment.specs),
    )
    with bar, component_errors("training", *components):  # a component's exception names it and its plugin
        task = bar.add_task("segmenter", total=settings.epochs * iters, completed=start * iters, status="")
        for epoch in range(start, settings.epochs):
            model.train()
            tic, losses = time.perf_counter(), []
            for it in range(iters):
                losses.append(step(shard(next(batches)).to(device)))
                scaler.update()
                if it % READ_BACK_EVERY == 0 or it == iters - 1:  # one device-to-host copy per so many steps
                    bar.update(task, status=f"epoch {epoch + 1} loss {float(losses[-1]):.4f}")
                bar.update(task, advance=1)
            scores: dict[str, float] = {"epoch": epoch + 1, "loss": float(torch.stack(losses).mean())}
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
    """One fold of `cross_validate`, by case index into its ``cases``.

    Attributes:
        fold: the fold's number.
        train_cases: the cases the network learnt from.
        val_cases: the inner validation cases that chose its checkpoint (drawn from the fold's training subjects).
        test_cases: the held-out fold it reports; they never influence training or the choice of checkpoint.
        val_dice: the kept checkpoint's Dice on ``val_cases``.
        test_dice: its Dice on ``test_cases`` (threshold 0.5, no post-processing, as the validation).
        model_dir: the kept model.
    """

    fold: int
    train_cases: list[int]
    val_cases: list[int]
    test_cases: list[int]
    val_dice: float
    test_dice: float
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
    """k-fold cross-validation by case (the paper reports 6 folds); fold ``i`` trains in ``workdir/fold<i>``.

    Each fold holds out its test cases entirely: its checkpoint is chosen on an inner validation split
    (``settings.val_fraction``) of its own training cases, and only then is it scored on the held-out fold, so the
    reported Dice is not inflated by selection. ``train_kwargs`` go to `train_segmenter` (device, precision, seed,
    classes, domain, ...). A summary is written to ``workdir/folds.json``.
    """
    from da_seg.files import write_json

    settings = settings or SegmentationConfig()
    workdir = Path(workdir)
    seed = train_kwargs.get("seed", 0)
    groups = fold_indices(len(cases), folds, seed)
    if min(len(cases) - len(g) for g in groups) < 2:
        raise DataError(
            f"{folds}-fold cross-validation of {len(cases)} cases leaves a fold fewer than 2 training cases (one to "
            "learn from, one to choose its checkpoint); use fewer folds"
        )
    results = []
    for i, held_out in enumerate(groups):
        rest = [j for j in range(len(cases)) if j not in held_out]
        inner_train, inner_val = split_cases(len(rest), settings.val_fraction, seed + i)
        train_idx, val_idx = [rest[j] for j in inner_train], [rest[j] for j in inner_val]
        trained = train_segmenter(
            model_spec,
            [cases[j] for j in train_idx],
            settings,
            workdir=workdir / f"fold{i}",
            val_cases=[cases[j] for j in val_idx],
            **train_kwargs,
        )
        results.append(
            FoldResult(
                i,
                train_idx,
                val_idx,
                held_out,
                float(trained.info["best_val_dice"]),
                validation_dice(trained, [cases[j] for j in held_out]),
                workdir / f"fold{i}" / "model",
            )
        )
    write_json(workdir / "folds.json", [r.__dict__ for r in results])
    return results
