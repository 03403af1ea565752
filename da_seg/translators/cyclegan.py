"""The ``cyclegan`` translator: unpaired MR -> synthetic CT (the paper's step 1, section 2.2; Zhu et al. 2017).

Two generators (``g_ab``: source -> target, ``g_ba``: target -> source) and two PatchGAN discriminators are trained
with the LSGAN loss of the paper's Eq. 1, a cycle-consistency loss (``mse``, the paper's default; ``l1``,
CycleGAN's default; ``ssim``, the paper's Eq. 2-3; or a weighted sum such as ``{mse = 1, ssim = 1}``) and an
optional identity loss. Fakes shown to the discriminators come from a pool of the last ``pool_size`` generated
images. Adam (lr 2e-4, the paper's; betas 0.5/0.999, CycleGAN's); the learning rate is constant, then decays
linearly to zero over the last ``decay_epochs`` epochs (CycleGAN's schedule; the paper states none).

Slices are sampled from volumes preloaded on the training device (`SliceBank`), augmented there with kornia
(`build_augmentation`, per domain) and optionally cropped to ``image_size``. With ``context > 0`` both generators map
a 2.5D stack of ``2c+1`` slices to a stack, so the cycle and identity losses stay defined; the central slice is the
translation.

``workdir`` (optional) receives: ``last/`` (weights of all four networks, optimizer, scheduler, image pool and RNG
state: `fit` resumes from it and continues from the saved epoch), ``epoch_NNNN/`` snapshots (the newest
``keep_checkpoints``; each loads with `load_translator`), ``log.jsonl`` (scalars) and ``samples/epoch_NNNN.png``
(rows of source | translated | reconstructed source).

Under torchrun every rank trains DDP replicas of the four networks: all ranks draw the same seeded global batch of
``world * batch_size`` slices and each takes its share ``[rank::world]``; gradients are averaged, so a step equals
one process on the global batch. Rank 0 alone writes ``workdir``; an epoch keeps its number of steps (each step
sees ``world`` times more slices).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import numpy as np
import torch
from torch import Tensor, nn

from da_seg.augment import AugmentSpec, build_augmentation
from da_seg.checkpoints import load_checkpoint, load_state, save_checkpoint
from da_seg.distributed import barrier, dist_info, is_main, shard
from da_seg.errors import ConfigError, DataError
from da_seg.files import read_json
from da_seg.losses import LSGANLoss, build_loss
from da_seg.progress import ScalarLog, progress_bar
from da_seg.provenance import package_version
from da_seg.slices import SliceBank, spread, stack_25d
from da_seg.training import adam, autocast, grad_scaler, prepare_module, resolve_device, seed_everything, to_layout
from da_seg.translators.base import META, check_volume
from da_seg.translators.cyclegan_state import FitState, ImagePool, check_resumable, read_back
from da_seg.translators.networks import PatchDiscriminator, build_generator, init_weights

LossSpec = str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]]
GENERATORS = ("g_ab", "g_ba")
NETWORKS = ("g_ab", "g_ba", "d_a", "d_b")


class CycleGAN:
    """Unpaired source -> target translation; all arguments are config keys of ``translator = {name = "cyclegan"}``.

    Args:
        generator: ``"resnet"`` (``blocks`` residual blocks) or ``"unet"`` (``unet_depth`` levels).
        width: generator base width (ngf); 64 in the CycleGAN paper, 16 keeps CPU runs short.
        blocks: residual blocks (6 for 128x128, 9 for 256x256 in CycleGAN).
        unet_depth: stride-2 levels of the U-Net generator.
        disc_width, disc_layers: PatchGAN base width (ndf) and stride-2 layers (3 gives 70x70 patches).
        image_size: square training crop taken after augmentation; None trains on whole slices.
        batch_size, epochs: slices per step, epochs of ``iterations_per_epoch`` steps (default: the larger domain's
            slice count divided by ``batch_size``).
        lr, betas: Adam settings for generators and discriminators.
        decay_epochs: epochs of linear decay to 0 at the end (default half of ``epochs``).
        cycle_loss: ``"mse"``, ``"l1"``, ``"ssim"`` or weights like ``{"mse": 1, "ssim": 1}`` (see `build_loss`).
        cycle_weight: lambda of the cycle loss (both directions).
        identity_weight: weight of the L1 identity loss ``|G_ab(b) - b| + |G_ba(a) - a|``; 0 switches it off.
        pool_size: fakes kept for the discriminators (0 = none).
        context: neighbouring slices each side fed to the generators (2.5D); 0 = plain 2D.
        source_augment, target_augment: augmentation specs per domain (`da_seg.augment`).
        sample_every: epochs between PNG sample grids in ``workdir/samples`` (0 = never).
        keep_checkpoints: ``epoch_NNNN`` snapshots kept in ``workdir`` (0 = only ``last``).
        checkpoint_every: epochs between checkpoints.
        log_every: iterations between per-iteration lines in ``log.jsonl`` (epoch means are always written).
        translate_batch: slices per forward pass in `translate`.
    """

    name = "cyclegan"

    def __init__(
        self,
        generator: str = "resnet",
        width: int = 16,
        blocks: int = 6,
        unet_depth: int = 6,
        disc_width: int = 16,
        disc_layers: int = 3,
        image_size: int | None = None,
        batch_size: int = 1,
        epochs: int = 10,
        iterations_per_epoch: int | None = None,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        decay_epochs: int | None = None,
        cycle_loss: LossSpec = "mse",
        cycle_weight: float = 10.0,
        identity_weight: float = 0.0,
        pool_size: int = 50,
        context: int = 0,
        source_augment: Sequence[AugmentSpec] = (),
        target_augment: Sequence[AugmentSpec] = (),
        sample_every: int = 1,
        keep_checkpoints: int = 5,
        checkpoint_every: int = 1,
        log_every: int = 10,
        translate_batch: int = 8,
    ) -> None:
        config = {k: v for k, v in locals().items() if k != "self"}  # first line: locals() holds just the arguments
        if epochs < 1 or batch_size < 1 or width < 1 or context < 0:
            raise ConfigError("epochs, batch_size and width must be >= 1 and context >= 0")
        decay = epochs // 2 if decay_epochs is None else decay_epochs
        if not 0 <= decay <= epochs:
            raise ConfigError(f"decay_epochs must be in [0, epochs={epochs}], got {decay}")
        # JSON-ready, as saved in meta.json and compared on resume.
        config["betas"] = list(betas)
        for key in ("source_augment", "target_augment"):
            config[key] = [s if isinstance(s, str) else dict(s) for s in config[key]]
        self.config: dict[str, Any] = config
        self.epochs, self.decay_epochs, self.context = epochs, decay, context
        self.cycle = build_loss(cycle_loss)
        self.source_augment = build_augmentation(source_augment)
        self.target_augment = build_augmentation(target_augment)
        channels = 2 * context + 1
        self.g_ab = build_generator(generator, channels, width, blocks, unet_depth)
        self.g_ba = build_generator(generator, channels, width, blocks, unet_depth)
        self.d_a = PatchDiscriminator(channels, disc_width, disc_layers)
        self.d_b = PatchDiscriminator(channels, disc_width, disc_layers)
        for net in self.networks.values():
            init_weights(net)
        self.device = torch.device("cpu")
        self.precision = "fp32"
        self.channels_last = False
        self.epoch = 0  # epochs trained so far
        self._train_nets: dict[str, nn.Module] = {}  # DDP/compiled wrappers used by `_step` (set by `fit`)

    @property
    def networks(self) -> dict[str, nn.Module]:
        return {"g_ab": self.g_ab, "g_ba": self.g_ba, "d_a": self.d_a, "d_b": self.d_b}

    def to(self, device: torch.device | str) -> CycleGAN:
        self.device = torch.device(device)
        for net in self.networks.values():
            net.to(self.device)
        return self

    # -- training ---------------------------------------------------------------------------------------------
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
        compile: bool = False,
    ) -> CycleGAN:
        """Train on unpaired source and target volumes; ``channels_last`` and ``compile`` are the runtime switches."""
        if not source or not target:
            raise DataError("cyclegan: fit needs at least one source and one target volume")
        dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
        self.to(dev)
        self.precision = precision
        cfg = self.config
        generator = seed_everything(seed)
        for net in self.networks.values():  # fit trains from scratch (or resumes below): seeded initial weights
            init_weights(net)
        bank_a = SliceBank([check_volume(v) for v in source], context=self.context, device=dev)
        bank_b = SliceBank([check_volume(v) for v in target], context=self.context, device=dev)
        smallest = min(
            cfg["image_size"] or min(bank_a.images.shape[-2:]), cfg["image_size"] or min(bank_b.images.shape[-2:])
        )
        if smallest < 3 * 2 ** cfg["disc_layers"]:
            raise ConfigError(
                f"cyclegan: training images of {smallest} pixels are too small for a PatchGAN with disc_layers="
                f"{cfg['disc_layers']}; use images of at least {3 * 2 ** cfg['disc_layers']} pixels or fewer layers"
            )
        iterations = cfg["iterations_per_epoch"] or max(1, max(len(bank_a), len(bank_b)) // cfg["batch_size"])
        crop = None if cfg["image_size"] is None else _crop(cfg["image_size"])
        gen_params = [*self.g_ab.parameters(), *self.g_ba.parameters()]
        opt_g = adam(gen_params, lr=cfg["lr"], betas=tuple(cfg["betas"]))
        opt_d = adam([*self.d_a.parameters(), *self.d_b.parameters()], lr=cfg["lr"], betas=tuple(cfg["betas"]))
        state = FitState(
            opt_g,
            opt_d,
            torch.optim.lr_scheduler.LambdaLR(opt_g, self.lr_factor),
            torch.optim.lr_scheduler.LambdaLR(opt_d, self.lr_factor),
            ImagePool(cfg["pool_size"]),
            ImagePool(cfg["pool_size"]),
            generator,
            grad_scaler(dev, precision),
        )
        gan = LSGANLoss()
        main, dist = is_main(), dist_info()
        workdir = None if workdir is None else Path(workdir)
        log = None if workdir is None or not main else ScalarLog(workdir / "log.jsonl")
        samples = bank_a.batch(torch.as_tensor(spread(len(bank_a), 4), device=dev))[0]

        start = 0
        if workdir is not None and (workdir / "last" / META).exists():
            start = self._resume(workdir / "last", state)
        self.channels_last = channels_last
        for name, net in self.networks.items():
            plain, self._train_nets[name] = prepare_module(net, dev, channels_last, compile)
            setattr(self, name, plain)
        if dist.distributed:  # same weights (DDP broadcasts rank 0's), different augmentations per rank
            torch.manual_seed(seed + 7919 * dist.rank)

        def sample(bank: SliceBank, augment: Any) -> Tensor:
            index = shard(torch.randint(len(bank), (cfg["batch_size"] * dist.world,), generator=generator))
            images, _ = augment(bank.batch(index)[0])
            return to_layout(images if crop is None else crop(images), channels_last)

        progress = progress_bar(transient=True)
        progress.disable = not main
        with progress:
            task = progress.add_task("cyclegan", total=(self.epochs - start) * iterations, status="")
            for epoch in range(start, self.epochs):
                sums: dict[str, float] = {}
                pending: list[dict[str, Tensor]] = []
                tic = time.perf_counter()
                for it in range(iterations):
                    real_a = sample(bank_a, self.source_augment)
                    real_b = sample(bank_b, self.target_augment)
                    pending.append(self._step(real_a, real_b, gan, state))
                    logged = bool(cfg["log_every"]) and it % cfg["log_every"] == 0
                    if logged or it == iterations - 1:  # read the losses back only here: one GPU sync, not seven
                        for losses in read_back(pending):
                            for k, v in losses.items():
                                sums[k] = sums.get(k, 0.0) + v
                        pending = []
                        if log is not None and logged:
                            log.write(kind="iteration", epoch=epoch + 1, iteration=it, **losses)
                        status = " ".join(f"{k} {v:.3f}" for k, v in losses.items() if k in ("g", "d", "cycle"))
                        progress.update(task, status=status)
                    progress.update(task, advance=1, description=f"cyclegan {epoch + 1}/{self.epochs}")
                lr = opt_g.param_groups[0]["lr"]
                state.sched_g.step()
                state.sched_d.step()
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

    def _step(self, real_a: Tensor, real_b: Tensor, gan: LSGANLoss, state: FitState) -> dict[str, Tensor]:
        """One CycleGAN iteration: generators (adversarial + cycle + identity), then both discriminators (Eq. 1).

        Returns the detached losses on the device; `fit` reads them back every ``log_every`` iterations, so the
        host keeps queueing GPU work instead of waiting for each loss.
        """
        cfg = self.config
        opt_g, opt_d, scaler = state.opt_g, state.opt_d, state.scaler
        for net in self.networks.values():
            net.train()
        # The networks to call: DDP/compiled wrappers while `fit` runs (the plain ones otherwise).
        g_ab, g_ba = (self._train_nets.get(k, self.networks[k]) for k in GENERATORS)
        d_a, d_b = (self._train_nets.get(k, self.networks[k]) for k in ("d_a", "d_b"))
        # Generators; the discriminators' parameters are frozen so no gradient is kept for them (and the plain
        # discriminators are called: a DDP replica would wait for gradients that never come).
        self.d_a.requires_grad_(False)
        self.d_b.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            fake_b = g_ab(real_a)
            rec_a = g_ba(fake_b)
            fake_a = g_ba(real_b)
            rec_b = g_ab(fake_a)
            adv = gan.generator(self.d_b(fake_b)) + gan.generator(self.d_a(fake_a))
            cycle = self.cycle(rec_a, real_a) + self.cycle(rec_b, real_b)
            total = adv + cfg["cycle_weight"] * cycle
            identity = torch.zeros((), device=self.device)
            if cfg["identity_weight"]:
                identity = (g_ab(real_b).float() - real_b).abs().mean() + (g_ba(real_a).float() - real_a).abs().mean()
                total = total + cfg["identity_weight"] * identity
        scaler.scale(total).backward()
        scaler.step(opt_g)
        # Discriminators, on real images and on fakes from the pools.
        self.d_a.requires_grad_(True)
        self.d_b.requires_grad_(True)
        opt_d.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            d_b = gan.discriminator(d_b(real_b), d_b(state.pool_b.query(fake_b, state.generator)))
            d_a = gan.discriminator(d_a(real_a), d_a(state.pool_a.query(fake_a, state.generator)))
        scaler.scale(d_a + d_b).backward()
        scaler.step(opt_d)
        scaler.update()
        values = {"g": total, "adv": adv, "cycle": cycle, "identity": identity, "d": d_a + d_b, "d_a": d_a, "d_b": d_b}
        return {k: v.detach().float() for k, v in values.items()}

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
            save_checkpoint(workdir / "last", self.networks, self._meta(), state=state.state_dict(self.epoch))
            if cfg["keep_checkpoints"] > 0:
                save_checkpoint(workdir / f"epoch_{self.epoch:04d}", self.networks, self._meta())
                snapshots = sorted(workdir.glob("epoch_[0-9][0-9][0-9][0-9]"))
                for old in snapshots[: -cfg["keep_checkpoints"]]:
                    shutil.rmtree(old, ignore_errors=True)
        if cfg["sample_every"] and (self.epoch % cfg["sample_every"] == 0 or last):
            self.sample_grid(samples, workdir / "samples" / f"epoch_{self.epoch:04d}.png")

    def _resume(self, last: Path, fit_state: FitState) -> int:
        check_resumable(read_json(last / META).get("config", {}), self.config, last)
        load_checkpoint(last, self.networks, component=self.name, map_location=self.device)
        state = load_state(last)
        if state is None:
            raise DataError(f"{last}: no optimizer state (state.pt) to resume from; delete the folder to start over")
        fit_state.load_state_dict(state, self.device, self.lr_factor(int(state["epoch"])))
        self.epoch = int(state["epoch"])
        return self.epoch

    def save(self, directory: Path) -> None:
        """Generators only (what `translate` needs) with the config in ``meta.json``."""
        save_checkpoint(Path(directory), {k: self.networks[k] for k in GENERATORS}, self._meta())

    @classmethod
    def load(cls, directory: Path, device: torch.device | str = "cpu") -> CycleGAN:
        directory = Path(directory)
        meta = read_json(directory / META)
        config = dict(meta.get("config", {}))
        config["betas"] = tuple(config.get("betas", (0.5, 0.999)))
        try:
            model = cls(**config)
        except TypeError as err:
            raise DataError(f"{directory}: meta.json config does not fit this version of cyclegan ({err})") from None
        model.to(device)
        load_checkpoint(directory, {k: model.networks[k] for k in GENERATORS}, component=cls.name, map_location=device)
        model.epoch = int(meta.get("epoch", 0))
        model.precision = meta.get("precision", "fp32")
        for net in model.networks.values():
            net.eval()
        return model

    # -- inference --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def translate_slices(self, images: Tensor, direction: str = "ab") -> Tensor:
        """Generator output for a batch of 2.5D stacks, in float32 in [-1, 1].

        Shape:
            ``(B, 2c+1, H, W)`` -> ``(B, 2c+1, H, W)``.
        """
        net = self.g_ab if direction == "ab" else self.g_ba
        net.eval()
        with autocast(self.device, self.precision):
            return net(images.to(self.device)).float().clamp(-1, 1)

    def translate(self, volume: np.ndarray) -> np.ndarray:
        array = check_volume(volume)
        stacks = torch.as_tensor(stack_25d(array, self.context))
        out = [
            self.translate_slices(stacks[i : i + self.config["translate_batch"]])[:, self.context].cpu()
            for i in range(0, len(stacks), self.config["translate_batch"])
        ]
        return torch.cat(out).numpy().astype(np.float32)

    def sample_grid(self, images: Tensor, path: Path) -> None:
        """PNG with one row per slice: source | translated | reconstructed source (central slices)."""
        from PIL import Image

        fake = self.translate_slices(images)
        rec = self.translate_slices(fake, "ba")
        c = self.context
        rows = [
            torch.cat([images[i, c].float().cpu(), fake[i, c].cpu(), rec[i, c].cpu()], dim=1)
            for i in range(len(images))
        ]
        grid = ((torch.cat(rows, dim=0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path)


def _crop(size: int) -> nn.Module:
    """Random ``size`` x ``size`` crop per sample (padded with the -1 background when a slice is smaller)."""
    if size < 1:
        raise ConfigError(f"cyclegan image_size must be >= 1, got {size}")
    return K.RandomCrop((size, size), pad_if_needed=True, fill=-1.0)
