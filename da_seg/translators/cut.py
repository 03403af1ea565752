"""The ``cut`` translator: contrastive unpaired translation (CUT; Park et al. ECCV 2020).

One generator and one PatchGAN discriminator, no inverse generator and no cycle. Content is kept by the PatchNCE
loss: a patch of the translation, seen through the generator's own encoder and a small MLP head per layer, must be
closer to the source patch at the same place than to the other patches of the same image (an InfoNCE loss with
temperature ``temperature`` over ``patches`` sampled locations per layer). With ``nce_identity`` the same loss is
applied to target images passed through the generator (CUT's default; FastCUT switches it off), so the generator
learns to leave target-like images alone. LSGAN adversarial loss and Adam (lr 2e-4, betas 0.5/0.999), as in CUT.

Our choices: the encoder taps are the outputs of the ResNet generator's layers ``nce_layers`` (CUT's 0, 4, 8, 12, 16:
the padded input, the two stride-2 convolutions and residual blocks; indices past the encoder are refused), the
heads are trained by the generator's Adam, and 2.5D stacks (``context > 0``) are translated like the CycleGAN's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from da_seg.augment import AugmentSpec
from da_seg.errors import ConfigError
from da_seg.padding import pad_to_multiple
from da_seg.training import autocast
from da_seg.translators.adversarial import AdversarialTranslator
from da_seg.translators.cyclegan_state import FitState
from da_seg.translators.networks import PatchDiscriminator, ResnetGenerator, init_weights

CUT_LAYERS = (0, 4, 8, 12, 16)


def encode(generator: ResnetGenerator, x: Tensor, layers: Sequence[int]) -> list[Tensor]:
    """The outputs of the generator body's layers ``layers`` for input ``x`` (padded as the generator pads it)."""
    y, _ = pad_to_multiple(x, generator.multiple, centre=True)
    features = []
    for i, layer in enumerate(generator.body):
        y = layer(y)
        if i in layers:
            features.append(y)
        if i >= max(layers):
            break
    return features


def patch_nce(query: Tensor, key: Tensor, temperature: float = 0.07) -> Tensor:
    """InfoNCE over patches of the same image: row i of ``query`` should match row i of ``key`` among all rows.

    Shape:
        query, key: ``(B, N, D)`` L2-normalised patch embeddings (``key`` detached); returns a scalar.
    """
    positive = (query * key).sum(dim=-1, keepdim=True)  # (B, N, 1)
    negative = query @ key.transpose(1, 2)  # (B, N, N): each patch against every patch of its image
    eye = torch.eye(query.shape[1], dtype=torch.bool, device=query.device)
    negative = negative.masked_fill(eye, -10.0)  # the positive pair is not its own negative (CUT's value)
    logits = torch.cat([positive, negative], dim=-1).flatten(0, 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=query.device))


class CUT(AdversarialTranslator):
    """Contrastive unpaired translation; arguments are config keys of ``translator = {name = "cut"}``.

    Args:
        width, blocks: ResNet generator base width and residual blocks.
        disc_width, disc_layers: PatchGAN base width and stride-2 layers.
        image_size, batch_size, epochs, iterations_per_epoch, lr, betas, decay_epochs, context, source_augment,
        target_augment, sample_every, keep_checkpoints, checkpoint_every, log_every, translate_batch, ema,
            tta_flip, upsample: as in `CycleGAN` (``upsample = "resize"``: no checkerboard).
        nce_weight: weight of the PatchNCE loss (CUT's lambda_NCE).
        nce_identity: also apply PatchNCE to target images through the generator (CUT: yes; FastCUT: no).
        nce_layers: generator layers whose outputs the PatchNCE loss compares (default: CUT's 0, 4, 8, 12, 16,
            those the generator's encoder has).
        patches: locations sampled per layer and image.
        temperature: InfoNCE temperature (CUT's 0.07).
        head_width: width of the two-layer MLP head per layer.
    """

    name = "cut"
    saved = ("g_ab",)

    def __init__(
        self,
        width: int = 16,
        blocks: int = 6,
        disc_width: int = 16,
        disc_layers: int = 3,
        image_size: int | None = None,
        batch_size: int = 1,
        epochs: int = 10,
        iterations_per_epoch: int | None = None,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        decay_epochs: int | None = None,
        nce_weight: float = 1.0,
        nce_identity: bool = True,
        nce_layers: Sequence[int] | None = None,
        patches: int = 256,
        temperature: float = 0.07,
        head_width: int = 256,
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
        upsample: str = "transposed",
    ) -> None:
        self._setup({k: v for k, v in locals().items() if k not in ("self", "__class__")})
        encoder = 10 + blocks  # pad, conv, norm, relu, 2 x (conv, norm, relu), the residual blocks
        if nce_layers is None:  # CUT's taps, those this (shallower) generator has
            nce_layers = [i for i in CUT_LAYERS if i < encoder]
        self.config["nce_layers"] = list(nce_layers)
        if patches < 2 or temperature <= 0:
            raise ConfigError(f"cut: patches must be >= 2 and temperature > 0, got {patches}, {temperature}")
        channels = 2 * context + 1
        self.g_ab = ResnetGenerator(channels, channels, width, blocks, upsample)
        if not nce_layers or any(not 0 <= i < encoder for i in nce_layers):
            raise ConfigError(f"cut: nce_layers must lie in the encoder, 0..{encoder - 1}, got {list(nce_layers)}")
        self.d_b = PatchDiscriminator(channels, disc_width, disc_layers)
        with torch.no_grad():
            sizes = [f.shape[1] for f in encode(self.g_ab, torch.zeros(1, channels, 16, 16), nce_layers)]
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(c, head_width), nn.ReLU(), nn.Linear(head_width, head_width)) for c in sizes
        )
        for net in (self.g_ab, self.d_b):
            init_weights(net)

    @property
    def networks(self) -> dict[str, nn.Module]:
        return {"g_ab": self.g_ab, "d_b": self.d_b, "heads": self.heads}

    def initialise(self) -> None:
        """CUT's N(0, 0.02) init for the generator and discriminator and the heads' linear layers."""
        for net in (self.g_ab, self.d_b):
            init_weights(net)
        for module in self.heads.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        return [*self.g_ab.parameters(), *self.heads.parameters()], list(self.d_b.parameters())

    def nce_loss(self, source: Tensor, translated: Tensor) -> Tensor:
        """PatchNCE between an image and its translation, averaged over the ``nce_layers``."""
        cfg = self.config
        g_ab = self.networks["g_ab"]  # the plain module: its layers are called one by one
        keys = encode(g_ab, source, cfg["nce_layers"])
        queries = encode(g_ab, translated, cfg["nce_layers"])
        total = torch.zeros((), device=source.device)
        for head, k, q in zip(self.heads, keys, queries, strict=True):
            h, w = k.shape[-2:]
            ids = torch.randperm(h * w, device=k.device)[: cfg["patches"]]
            k = F.normalize(head(k.flatten(2)[:, :, ids].transpose(1, 2).float()), dim=-1)
            q = F.normalize(head(q.flatten(2)[:, :, ids].transpose(1, 2).float()), dim=-1)
            total = total + patch_nce(q, k.detach(), cfg["temperature"])
        return total / len(keys)

    def train_step(
        self, real_a: Tensor, real_b: Tensor, state: FitState, mask_a: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Generator (adversarial + PatchNCE [+ identity PatchNCE]), then the discriminator (LSGAN)."""
        cfg = self.config
        with autocast(self.device, self.precision):
            g_ab = self.net("g_ab")
            fake_b = g_ab(real_a)
            adv = self.gan.generator(self.d_b(fake_b))
            nce = self.nce_loss(real_a, fake_b)
            identity = torch.zeros((), device=self.device)
            if cfg["nce_identity"]:
                identity = self.nce_loss(real_b, g_ab(real_b))
                nce = (nce + identity) / 2
            total = adv + cfg["nce_weight"] * nce
        self.update(state, "g", total)
        with autocast(self.device, self.precision):
            loss_d = self.discriminate("d_b", real_b, state.pool_b.query(fake_b))
        self.update(state, "d", loss_d)
        values: dict[str, Any] = {"g": total, "adv": adv, "nce": nce, "nce_identity": identity, "d": loss_d}
        return {k: v.detach().float() for k, v in values.items()}
