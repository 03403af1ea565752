"""The ``cyclegan`` translator: unpaired MR -> synthetic CT (the paper's step 1, section 2.2; Zhu et al. 2017).

Two generators (``g_ab``: source -> target, ``g_ba``: target -> source) and two PatchGAN discriminators are trained
with the LSGAN loss of the paper's Eq. 1, a cycle-consistency loss (``mse``, the paper's default; ``l1``,
CycleGAN's default; ``ssim``, the paper's Eq. 2-3; or a weighted sum such as ``{mse = 1, ssim = 1}``) and an
optional identity loss. Fakes shown to the discriminators come from a pool of the last ``pool_size`` generated
images. Adam (lr 2e-4, the paper's; betas 0.5/0.999, CycleGAN's); the learning rate is constant, then decays
linearly to zero over the last ``decay_epochs`` epochs (CycleGAN's schedule; the paper states none).

Beyond the paper (ours to offer, each off by default): a structure-consistency loss (``structure_loss``, e.g.
``"mind"`` or ``"ngf"``, weighted by ``structure_weight``) compares a modality-independent descriptor of each image
with that of its translation, so the generators must keep edges where they are (the structure-constrained CycleGAN
of Yang et al. 2018); `da_seg.translators.shape_cyclegan` adds a jointly trained segmenter.

With ``context > 0`` both generators map a 2.5D stack of ``2c+1`` slices to a stack, so the cycle and identity
losses stay defined; the central slice is the translation. The training loop (sampling, augmentation, checkpoints,
resume, torchrun) is `da_seg.translators.adversarial.AdversarialTranslator`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from da_seg.augment import AugmentSpec
from da_seg.losses import build_loss
from da_seg.training import autocast
from da_seg.translators.adversarial import AdversarialTranslator
from da_seg.translators.cyclegan_state import FitState
from da_seg.translators.networks import PatchDiscriminator, build_generator, init_weights

LossSpec = str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]]


class CycleGAN(AdversarialTranslator):
    """Unpaired source -> target translation; all arguments are config keys of ``translator = {name = "cyclegan"}``.

    Args:
        generator: ``"resnet"`` (``blocks`` residual blocks) or ``"unet"`` (``unet_depth`` levels).
        upsample: the generators' upsampling: ``"transposed"`` (CycleGAN's) or ``"resize"`` (ours: nearest then
            convolution, no checkerboard; `da_seg.translators.networks`).
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
        structure_loss: a loss comparing each image with its translation across modalities (``"mind"``,
            ``"ngf"``; `da_seg.losses`), added for both generators; None switches it off.
        structure_weight: its weight.
        ema: decay of an exponential moving average of the generators' weights (e.g. 0.999; ours, Yazici et al.
            2019), which then translates and is saved; None translates with the last weights.
        tta_flip: translate each source volume as the mean of its translation and that of its left-right mirror,
            mirrored back (ours; needs a left-right flip in ``source_augment``; `translate_back` stays plain).
            Training is unchanged.
    """

    name = "cyclegan"
    saved = ("g_ab", "g_ba")

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
        ema: float | None = None,
        tta_flip: bool = False,
        structure_loss: LossSpec | None = None,
        structure_weight: float = 1.0,
        upsample: str = "transposed",
    ) -> None:
        self._setup({k: v for k, v in locals().items() if k not in ("self", "__class__")})
        self.cycle = build_loss(cycle_loss)
        self.structure = None if structure_loss is None else build_loss(structure_loss)
        channels = 2 * context + 1
        self.g_ab = build_generator(generator, channels, width, blocks, unet_depth, upsample)
        self.g_ba = build_generator(generator, channels, width, blocks, unet_depth, upsample)
        self.d_a = PatchDiscriminator(channels, disc_width, disc_layers)
        self.d_b = PatchDiscriminator(channels, disc_width, disc_layers)
        for net in (self.g_ab, self.g_ba, self.d_a, self.d_b):
            init_weights(net)

    @property
    def networks(self) -> dict[str, nn.Module]:
        return {"g_ab": self.g_ab, "g_ba": self.g_ba, "d_a": self.d_a, "d_b": self.d_b}

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        return [*self.g_ab.parameters(), *self.g_ba.parameters()], [*self.d_a.parameters(), *self.d_b.parameters()]

    def translate_back(self, volume: np.ndarray) -> np.ndarray:
        """A target-domain volume to the source domain (``g_ba``: real CT -> synthetic MR): `ReversibleTranslator`."""
        return self.translate_volume(volume, "ba")

    def loss_weights(self) -> dict[str, float]:
        """Weight of each generator loss term in ``g`` (a subclass adds its own terms' weights)."""
        cfg = self.config
        return {
            "adv": 1.0,
            "cycle": cfg["cycle_weight"],
            "identity": cfg["identity_weight"],
            "structure": cfg["structure_weight"] if self.structure is not None else 0.0,
        }

    def generator_losses(
        self, real_a: Tensor, real_b: Tensor, mask_a: Tensor | None = None
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The generators' loss terms, unweighted (`loss_weights` weighs them into ``g``), and the two fakes
        (``fake_b``, ``fake_a``). Runs inside autocast; a subclass adds its own terms to the returned dict.
        """
        g_ab, g_ba = self.net("g_ab"), self.net("g_ba")
        fake_b = g_ab(real_a)
        rec_a = g_ba(fake_b)
        fake_a = g_ba(real_b)
        rec_b = g_ab(fake_a)
        # the plain discriminators: a DDP replica would wait for gradients that never come (they are frozen here)
        terms = {
            "adv": self.gan.generator(self.d_b(fake_b)) + self.gan.generator(self.d_a(fake_a)),
            "cycle": self.cycle(rec_a, real_a) + self.cycle(rec_b, real_b),
            "identity": torch.zeros((), device=self.device),
        }
        if self.config["identity_weight"]:
            terms["identity"] = (g_ab(real_b).float() - real_b).abs().mean() + (
                g_ba(real_a).float() - real_a
            ).abs().mean()
        if self.structure is not None:
            terms["structure"] = self.structure(fake_b, real_a) + self.structure(fake_a, real_b)
        return terms, fake_b, fake_a

    def train_step(
        self, real_a: Tensor, real_b: Tensor, state: FitState, mask_a: Tensor | None = None
    ) -> dict[str, Tensor]:
        """One CycleGAN iteration: generators (adversarial + cycle + identity + extras), then both discriminators
        (Eq. 1) on real images and on fakes from the pools. Returns the detached losses on the device; `fit` reads
        them back every ``log_every`` iterations, so the host keeps queueing GPU work instead of waiting for each
        loss. No host synchronisation happens inside: with ``runtime.compile`` the whole step is one graph.
        """
        with autocast(self.device, self.precision):
            terms, fake_b, fake_a = self.generator_losses(real_a, real_b, mask_a)
            weights = self.loss_weights()
            total = terms["adv"] + weights["cycle"] * terms["cycle"]
            for name, term in terms.items():  # identity, structure and a subclass's terms, when switched on
                if name not in ("adv", "cycle") and weights[name]:
                    total = total + weights[name] * term
        self.update(state, "g", total)
        with autocast(self.device, self.precision):
            loss_b = self.discriminate("d_b", real_b, state.pool_b.query(fake_b))
            loss_a = self.discriminate("d_a", real_a, state.pool_a.query(fake_a))
        self.update(state, "d", loss_a + loss_b)
        values = {"g": total, **terms, "d": loss_a + loss_b, "d_a": loss_a, "d_b": loss_b}
        return {k: v.detach().float() for k, v in values.items()}
