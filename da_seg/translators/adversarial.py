"""The training loop every adversarial translator shares (`AdversarialTranslator`): CycleGAN, its shape-consistent
variant and CUT differ only in their networks and in what one training step computes.

Slices are sampled from volumes preloaded on the training device (`SliceBank`), augmented there with kornia
(`build_augmentation`, per domain; both domains in one call when their specs match) and optionally cropped to
``image_size`` (in the same warp). A subclass defines `networks` (every module trained and checkpointed),
`parameter_groups` (generator side, discriminator side: one Adam each) and `train_step`; `fit` does the rest:
seeding, optimizers and the learning-rate schedule (constant, then linear decay to zero over the last
``decay_epochs`` epochs, CycleGAN's), image pools, checkpoints, resume, logs and sample grids. With ``tta_flip``
(ours) a source volume translates as the mean of its translation and that of its left-right mirror, mirrored back.

``workdir`` (optional) receives: ``last/`` (weights of all networks, optimizers, image pools and RNG
state: `fit` resumes from it and continues from the saved epoch), ``epoch_NNNN/`` snapshots (the newest
``keep_checkpoints``; each loads with `load_translator`), ``log.jsonl`` (scalars) and ``samples/epoch_NNNN.png``
(rows of source | translated [| reconstructed source]).

Under torchrun every rank trains DDP replicas: all ranks draw the same seeded global batch of ``world *
batch_size`` slices and each takes its share ``[rank::world]``; gradients are averaged, so a step equals one process
on the global batch. Rank 0 alone writes ``workdir``.
"""

from __future__ import annotations

import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from da_seg.augment import build_augmentation
from da_seg.checkpoints import load_checkpoint, load_state, save_checkpoint
from da_seg.config import mirrors_left_right
from da_seg.distributed import barrier, dist_info, is_main, shard
from da_seg.errors import ConfigError, DataError
from da_seg.files import read_json
from da_seg.losses import LSGANLoss
from da_seg.progress import ScalarLog, progress_bar
from da_seg.provenance import package_version
from da_seg.slices import SliceBank, spread, stack_25d
from da_seg.training import (
    AdamUpdate,
    WeightAverage,
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
from da_seg.translators.base import META, check_volume
from da_seg.translators.cyclegan_state import FitState, ImagePool, check_resumable, read_back
from da_seg.translators.networks import init_weights

UNLABELLED = 255
"""Mask value of source volumes given without labels (``source_masks`` entry None); their slices carry no label."""


class AdversarialTranslator(ABC):
    """Base of the GAN translators; ``self.config`` holds the constructor's arguments (JSON-ready).

    Subclasses set ``name``, ``saved`` (the networks `save` keeps for `translate`; ``g_ab`` is the source -> target
    generator) and ``uses_labels`` (True: `fit` gives `train_step` the source masks), and call `_setup`.
    """

    name = "adversarial"
    saved: tuple[str, ...] = ("g_ab",)
    uses_labels = False
    capturable = True  # `train_step` never reads a tensor's value on the host: ``compile`` may trace it whole

    def _setup(self, config: dict[str, Any]) -> None:
        """Check and keep the shared settings: epochs, decay, batch size, context, augmentation, crop."""
        epochs, decay = config["epochs"], config.get("decay_epochs")
        if epochs < 1 or config["batch_size"] < 1 or config["width"] < 1 or config["context"] < 0:
            raise ConfigError(f"{self.name}: epochs, batch_size and width must be >= 1 and context >= 0")
        decay = epochs // 2 if decay is None else decay
        if not 0 <= decay <= epochs:
            raise ConfigError(f"decay_epochs must be in [0, epochs={epochs}], got {decay}")
        if config.get("ema") is not None:
            WeightAverage.check(config["ema"], f"{self.name} ema")
        if config.get("tta_flip") and not mirrors_left_right(config["source_augment"]):
            raise ConfigError(f"{self.name} tta_flip needs a left-right flip in source_augment (mirrored input)")
        if config["image_size"] is not None and config["image_size"] < 1:
            raise ConfigError(f"{self.name} image_size must be >= 1, got {config['image_size']}")
        config["betas"] = list(config["betas"])
        for key in ("source_augment", "target_augment"):
            config[key] = [s if isinstance(s, str) else dict(s) for s in config[key]]
        self.config: dict[str, Any] = config
        self.epochs, self.decay_epochs, self.context = epochs, decay, config["context"]
        self.source_augment = build_augmentation(config["source_augment"])
        self.target_augment = build_augmentation(config["target_augment"])
        self.gan = LSGANLoss()
        self.device = torch.device("cpu")
        self.precision = "fp32"
        self.channels_last = False
        self.epoch = 0  # epochs trained so far
        self._train_nets: dict[str, nn.Module] = {}  # DDP/compiled wrappers, set while `fit` runs
        self._all_reduce = False  # under torchrun while `fit` runs: gradients by backward, for DDP
        self.averages: dict[str, WeightAverage] = {}  # ``ema``: the `saved` networks' weight averages, from `fit`

    # -- what a subclass defines ------------------------------------------------------------------------------
    @property
    @abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """Every module `fit` trains and checkpoints, by attribute name."""

    @abstractmethod
    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(generator-side, discriminator-side) parameters; each gets its own Adam."""

    @abstractmethod
    def train_step(
        self, real_a: Tensor, real_b: Tensor, state: FitState, mask_a: Tensor | None = None
    ) -> dict[str, Tensor]:
        """One update of every network; returns detached device losses (read back every ``log_every`` steps)."""

    def initialise(self) -> None:
        """Fresh initial weights (CycleGAN's N(0, 0.02) init); `fit` calls it right after seeding."""
        for net in self.networks.values():
            init_weights(net)

    # -- shared -----------------------------------------------------------------------------------------------
    def net(self, name: str) -> nn.Module:
        """The module to call in `train_step`: its DDP/compiled wrapper while `fit` runs, else the plain one."""
        return self._train_nets.get(name, self.networks[name])

    def update(self, state: FitState, side: str, loss: Tensor) -> None:
        """One optimizer step of the generator side (``"g"``) or the discriminator side (``"d"``) from ``loss``.

        Only that side's parameters receive gradients (`da_seg.training.optimise`), so nothing needs freezing.
        """
        opt = state.opt_g if side == "g" else state.opt_d
        optimise(loss, opt, None if state.adam is None else state.adam[side], state.scaler, self._all_reduce)

    def discriminate(self, name: str, real: Tensor, fake: Tensor) -> Tensor:
        """The LSGAN discriminator loss (Eq. 1) of discriminator ``name``; real and fake images go through it in
        one batch when their shapes match (its instance norms see each image alone, so the scores are the same)."""
        net = self.net(name)
        if real.shape != fake.shape:
            return self.gan.discriminator(net(real), net(fake))
        score_real, score_fake = net(torch.cat([real, fake.to(real.dtype)])).chunk(2)
        return self.gan.discriminator(score_real, score_fake)

    def to(self, device: torch.device | str) -> AdversarialTranslator:
        self.device = torch.device(device)
        for net in self.networks.values():
            net.to(self.device)
        return self

    def lr_factor(self, epoch: int) -> float:
        """Learning-rate multiplier in epoch ``epoch`` (0-based): 1, then linear decay reaching 0 after the end."""
        constant = self.epochs - self.decay_epochs
        return 1.0 - max(0, epoch + 1 - constant) / (self.decay_epochs + 1)

    def fit(
        self,
        source: Sequence[np.ndarray],
        target: Sequence[np.ndarray],
        *,
        workdir: Path | None = None,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        seed: int = 0,
        channels_last: bool = False,
        compile: bool | str = False,
        source_masks: Sequence[np.ndarray | None] | None = None,
    ) -> AdversarialTranslator:
        """Train on unpaired source and target volumes; ``channels_last`` and ``compile`` are the runtime switches
        (``compile``: True compiles the whole training step with inductor, `compile_step`; a string names another
        ``torch.compile`` backend, e.g. ``"aot_eager"`` in tests).

        ``source_masks`` (one label map or None per source volume) reach `train_step` when ``uses_labels``.
        """
        if not source or not target:
            raise DataError(f"{self.name}: fit needs at least one source and one target volume")
        dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
        self.to(dev)
        self.precision = precision
        cfg = self.config
        generator = seed_everything(seed)
        self.initialise()  # fit trains from scratch (or resumes below): seeded initial weights
        source = [check_volume(v) for v in source]
        masks = _label_maps(source, source_masks, self.name) if self.uses_labels else None
        bank_a = SliceBank(source, masks, context=self.context, device=dev)
        bank_b = SliceBank([check_volume(v) for v in target], context=self.context, device=dev)
        smallest = min(
            cfg["image_size"] or min(bank_a.images.shape[-2:]), cfg["image_size"] or min(bank_b.images.shape[-2:])
        )
        if smallest < 3 * 2 ** cfg["disc_layers"]:
            raise ConfigError(
                f"{self.name}: training images of {smallest} pixels are too small for a PatchGAN with disc_layers="
                f"{cfg['disc_layers']}; use images of at least {3 * 2 ** cfg['disc_layers']} pixels or fewer layers"
            )
        iterations = cfg["iterations_per_epoch"] or max(1, max(len(bank_a), len(bank_b)) // cfg["batch_size"])
        main, dist = is_main(), dist_info()
        gen_params, disc_params = self.parameter_groups()
        opt_g = adam(gen_params, lr=cfg["lr"], betas=tuple(cfg["betas"]))
        opt_d = adam(disc_params, lr=cfg["lr"], betas=tuple(cfg["betas"]))
        pool = cfg.get("pool_size", 0)
        state = FitState(opt_g, opt_d, ImagePool(pool), ImagePool(pool), generator, grad_scaler(dev, precision))
        workdir = None if workdir is None else Path(workdir)
        log = None if workdir is None or not main else ScalarLog(workdir / "log.jsonl")
        samples = bank_a.batch(torch.as_tensor(spread(len(bank_a), 4), device=dev))[0]

        start = 0
        if cfg.get("ema") is not None:
            self.averages = {k: WeightAverage(self.networks[k], cfg["ema"]) for k in self.saved}
        if workdir is not None and (workdir / "last" / META).exists():
            start = self._resume(workdir / "last", state)
        self.channels_last = channels_last
        whole_step = compiles_whole_step(compile, precision, dist.distributed, self.capturable)  # else the networks
        for name, net in self.networks.items():
            plain, self._train_nets[name] = prepare_module(net, dev, channels_last, bool(compile) and not whole_step)
            setattr(self, name, plain)
        self._all_reduce = dist.distributed
        if precision != "fp16":
            lr = torch.tensor(opt_g.param_groups[0]["lr"], device=dev)  # one schedule for both optimizers
            state.adam = {"g": AdamUpdate(opt_g, lr), "d": AdamUpdate(opt_d, lr)}
        step = self.train_step
        if whole_step:
            step = compile_step(self.train_step, dev, compile)
        if dist.distributed:  # same weights (DDP broadcasts rank 0's), different augmentations per rank
            torch.manual_seed(seed + 7919 * dist.rank)

        size = cfg["image_size"]
        together = self.source_augment == self.target_augment and self.source_augment.fused

        def batch(bank: SliceBank) -> tuple[Tensor, Tensor | None]:
            return bank.batch(shard(torch.randint(len(bank), (cfg["batch_size"] * dist.world,), generator=generator)))

        def sample() -> tuple[Tensor, Tensor | None, Tensor]:
            """Augmented (and cropped) source slices, their labels, target slices; one warp for both domains
            when their augmentations are the same fused one (`da_seg.augment`) and their slices have one size."""
            (a, labels), (b, _) = batch(bank_a), batch(bank_b)
            if together and a.shape[1:] == b.shape[1:]:
                masks = None if labels is None else torch.cat([labels, labels.new_zeros((len(b), *labels.shape[1:]))])
                images, masks = self.source_augment(torch.cat([a, b]), masks, crop=size)
                a, b, labels = images[: len(a)], images[len(a) :], None if masks is None else masks[: len(a)]
            else:
                a, labels = self.source_augment(a, labels, crop=size)
                b, _ = self.target_augment(b, crop=size)
            return to_layout(a, channels_last), labels, to_layout(b, channels_last)

        progress = progress_bar(transient=True)
        progress.disable = not main
        with progress:
            task = progress.add_task(self.name, total=(self.epochs - start) * iterations, status="")
            for epoch in range(start, self.epochs):
                lr = cfg["lr"] * self.lr_factor(epoch)
                state.set_lr(lr)
                for net in self.networks.values():  # the sample grids leave them in eval mode
                    net.train()
                sums: dict[str, float] = {}
                pending: list[dict[str, Tensor]] = []
                tic = time.perf_counter()
                for it in range(iterations):
                    real_a, mask_a, real_b = sample()
                    if whole_step and pool and state.pool_a.buffer is None:  # the compiled step finds its pools made
                        state.pool_a.reserve(real_b)  # fake_a = g_ba(real_b)
                        state.pool_b.reserve(real_a)
                    pending.append(step(real_a, real_b, state, mask_a))
                    for name, average in self.averages.items():
                        average.update(self.networks[name], epoch * iterations + it)
                    state.scaler.update()  # fp16's loss scale, on the host: outside the step
                    logged = bool(cfg["log_every"]) and it % cfg["log_every"] == 0
                    if logged or it == iterations - 1:  # read the losses back only here: one GPU sync, not seven
                        for losses in read_back(pending, self.name):
                            for k, v in losses.items():
                                sums[k] = sums.get(k, 0.0) + v
                        pending = []
                        if log is not None and logged:
                            log.write(kind="iteration", epoch=epoch + 1, iteration=it, **losses)
                        status = " ".join(f"{k} {v:.3f}" for k, v in losses.items() if k in ("g", "d", "cycle"))
                        progress.update(task, status=status)
                    progress.update(task, advance=1, description=f"{self.name} {epoch + 1}/{self.epochs}")
                self.epoch = epoch + 1
                means = {k: v / iterations for k, v in sums.items()}
                seconds = time.perf_counter() - tic
                if log is not None:
                    log.write(
                        kind="epoch", epoch=self.epoch, lr=lr, seconds=seconds, it_per_s=iterations / seconds, **means
                    )
                if workdir is not None and main:
                    self._checkpoint(workdir, state, samples)
        barrier()  # rank 0 has written its checkpoints
        self._train_nets = {}
        for net in self.networks.values():
            net.eval()
        return self

    # -- checkpoints ------------------------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {
            "component": self.name,
            "config": self.config,
            "epoch": self.epoch,
            "precision": self.precision,
            "versions": {"da_seg": package_version("da_seg") or "?", "torch": torch.__version__},
        }

    def _checkpoint(self, workdir: Path, state: FitState, samples: Tensor) -> None:
        cfg = self.config
        last = self.epoch == self.epochs
        if self.epoch % max(1, cfg["checkpoint_every"]) == 0 or last:
            save_checkpoint(workdir / "last", self._resumable(), self._meta(), state=state.state_dict(self.epoch))
            if cfg["keep_checkpoints"] > 0:
                save_checkpoint(workdir / f"epoch_{self.epoch:04d}", self.translating(), self._meta())
                snapshots = sorted(workdir.glob("epoch_[0-9][0-9][0-9][0-9]"))
                for old in snapshots[: -cfg["keep_checkpoints"]]:
                    shutil.rmtree(old, ignore_errors=True)
        if cfg["sample_every"] and (self.epoch % cfg["sample_every"] == 0 or last):
            self.sample_grid(samples, workdir / "samples" / f"epoch_{self.epoch:04d}.png")

    def _resume(self, last: Path, fit_state: FitState) -> int:
        check_resumable(read_json(last / META).get("config", {}), self.config, last)
        load_checkpoint(last, self._resumable(), component=self.name, map_location=self.device)
        state = load_state(last, required=FitState.required)
        if state is None:
            raise DataError(f"{last}: no optimizer state (state.pt) to resume from; delete the folder to start over")
        fit_state.load_state_dict(state, self.device)
        self.epoch = int(state["epoch"])
        return self.epoch

    def _resumable(self) -> dict[str, nn.Module]:
        """What ``workdir/last`` holds: every network and, with ``ema``, each average as ``<name>_average``."""
        return self.networks | {f"{k}_average": a.module for k, a in self.averages.items()}

    def translating(self) -> dict[str, nn.Module]:
        """`networks` with each weight average (``ema``) in place of its network: what translates and is saved."""
        return self.networks | {k: a.module for k, a in self.averages.items()}

    def save(self, directory: Path) -> None:
        """The networks `translate` needs (``saved``; their averages with ``ema``) with the config in ``meta.json``."""
        networks = self.translating()
        save_checkpoint(Path(directory), {k: networks[k] for k in self.saved}, self._meta())

    @classmethod
    def load(cls, directory: Path, device: torch.device | str = "cpu") -> AdversarialTranslator:
        directory = Path(directory)
        meta = read_json(directory / META)
        config = dict(meta.get("config", {}))
        config["betas"] = tuple(config.get("betas", (0.5, 0.999)))
        try:
            model = cls(**config)
        except TypeError as err:
            raise DataError(f"{directory}: meta.json config does not fit this version of {cls.name} ({err})") from None
        model.to(device)
        load_checkpoint(directory, {k: model.networks[k] for k in cls.saved}, component=cls.name, map_location=device)
        model.epoch = int(meta.get("epoch", 0))
        model.precision = meta.get("precision", "fp32")
        for net in model.networks.values():
            net.eval()
        return model

    # -- inference --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def translate_slices(self, images: Tensor, direction: str = "ab") -> Tensor:
        """Generator output for a batch of 2.5D stacks, in float32 in [-1, 1] (``"ba"`` needs a ``g_ba``).

        Shape:
            ``(B, 2c+1, H, W)`` -> ``(B, 2c+1, H, W)``.
        """
        net = self.translating()["g_ab" if direction == "ab" else "g_ba"]
        net.eval()
        with autocast(self.device, self.precision):
            return net(images.to(self.device)).float().clamp(-1, 1)

    def translate(self, volume: np.ndarray) -> np.ndarray:
        return self.translate_volume(volume, "ab")

    def translate_volume(self, volume: np.ndarray, direction: str = "ab") -> np.ndarray:
        """A whole ``(z, H, W)`` volume through one generator, slice by slice (``"ba"`` needs a ``g_ba``)."""
        array, batch, c = check_volume(volume), self.config["translate_batch"], self.context

        def one(images: np.ndarray) -> np.ndarray:
            stacks = torch.as_tensor(stack_25d(np.ascontiguousarray(images), c))
            out = [
                self.translate_slices(stacks[i : i + batch], direction)[:, c].cpu()
                for i in range(0, len(stacks), batch)
            ]
            return torch.cat(out).numpy().astype(np.float32)

        flip = self.config.get("tta_flip") and direction == "ab"  # only g_ab is known to have seen mirrored input
        return (one(array) + one(array[..., ::-1])[..., ::-1]) / 2 if flip else one(array)

    def sample_grid(self, images: Tensor, path: Path) -> None:
        """PNG with one row per slice: source | translated [| reconstructed source, when there is a ``g_ba``]."""
        from PIL import Image

        columns = [images.float(), self.translate_slices(images)]
        if "g_ba" in self.networks:
            columns.append(self.translate_slices(columns[1], "ba"))
        c = self.context
        rows = [torch.cat([col[i, c].cpu() for col in columns], dim=1) for i in range(len(images))]
        grid = ((torch.cat(rows, dim=0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path)


def _label_maps(source: list[np.ndarray], masks: Sequence[np.ndarray | None] | None, name: str) -> list[np.ndarray]:
    """One uint8 label map per source volume; volumes without labels are filled with `UNLABELLED`."""
    if masks is None or all(m is None for m in masks):
        raise DataError(f"{name}: needs the source label maps (source_masks); none were given")
    if len(masks) != len(source):
        raise DataError(f"{name}: {len(masks)} source label maps for {len(source)} source volumes")
    out = []
    for image, mask in zip(source, masks, strict=True):
        if mask is not None and np.shape(mask) != image.shape:
            raise DataError(f"{name}: a label map of shape {np.shape(mask)} for a volume of shape {image.shape}")
        out.append(np.full(image.shape, UNLABELLED, np.uint8) if mask is None else np.asarray(mask, np.uint8))
    return out
