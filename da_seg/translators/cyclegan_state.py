"""What a CycleGAN fit carries between iterations and across a resume, apart from the four networks.

`ImagePool` keeps old fakes for the discriminators, `FitState` bundles everything `fit` saves in ``last/state.pt``
(optimizers, pools, RNG, gradient scaler), `read_back` turns queued device losses into floats, and
`check_resumable` refuses to resume a workdir trained with other settings.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from da_seg.errors import DataError
from da_seg.training import AdamUpdate

# Settings a resumed run may change: lengthening ``epochs`` continues the schedule, the rest only touch output.
RESUMABLE = frozenset(
    {"epochs", "decay_epochs", "sample_every", "keep_checkpoints", "checkpoint_every", "log_every", "translate_batch"}
)


class ImagePool:
    """The last ``size`` generated images; the discriminator sees a mix of old and new fakes (Shrivastava et al.).

    Each query image is stored while the pool fills; afterwards, with probability 1/2 it replaces a random stored
    image and that older image is returned instead. The pool is one tensor on the images' device and a query is a
    few batched tensor ops with the device's random stream: no per-image Python loop and no read-back to the host,
    so a compiled training step can hold it.

    A batched query gives exactly what querying its images one at a time would (with the same random draws): when
    two images of a batch draw the same slot, the later one is stored and returns the earlier one. Why it matters:
    an earlier form wrote both into the slot in one ``index_put_``, and with several threads the CPU kernel's
    writes raced, so which image (or which mix of the two) stayed in the pool changed from run to run, and with
    it every later update (issue 43: the README job's Dice 0.725 vs 0.659 on one machine).
    """

    def __init__(self, size: int = 50) -> None:
        self.size = size
        self.buffer: Tensor | None = None  # (size + 1, C, H, W): the pool and a scratch slot, made at the first query
        self.count: Tensor | None = None  # images stored so far (0-d, on the device)

    def query(self, images: Tensor) -> Tensor:
        images = images.detach().float()  # the generator's graph is freed after its step
        if self.size <= 0:
            return images
        if self.buffer is None or self.buffer.shape[1:] != images.shape[1:]:
            self.reserve(images)
        n = len(images)
        order = torch.arange(n, device=images.device)
        position = self.count + order
        filling = position < self.size
        draw = torch.rand(n, device=images.device)
        swap = ~filling & (draw < 0.5)
        writes = filling | swap
        # given draw < 0.5, floor(2 * size * draw) is a uniform slot
        slot = torch.where(filling, position, (2 * self.size * draw).long().clamp(max=self.size - 1))
        same = (slot[:, None] == slot[None, :]) & writes[:, None] & writes[None, :]  # (n, n): same slot, both write
        before = same & (order[None, :] < order[:, None])  # [i, j]: j wrote i's slot earlier in this batch
        overwritten = (same & (order[None, :] > order[:, None])).any(dim=1)  # a later image takes i's slot
        previous = torch.where(before, order[None, :], -1).amax(dim=1) if n else order
        shape = (-1, *[1] * (images.dim() - 1))
        old = torch.where((previous >= 0).view(shape), images[previous.clamp(min=0)], self.buffer[slot])
        # one writer per slot, so the write has one outcome; the rest go to the scratch slot ``size``, never read
        self.buffer.index_put_((torch.where(writes & ~overwritten, slot, self.size),), images)
        self.count.copy_(torch.clamp(self.count + n, max=self.size))
        return torch.where(swap.view(shape), old, images)

    def reserve(self, like: Tensor) -> None:
        """Allocate the (empty) pool for images shaped like ``like``, in float32: before a compiled step first runs."""
        self.buffer = torch.zeros((self.size + 1, *like.shape[1:]), dtype=torch.float32, device=like.device)
        self.count = torch.zeros((), dtype=torch.long, device=like.device)

    def state(self) -> Tensor | None:
        if self.buffer is None or self.count is None or int(self.count) == 0:
            return None
        return self.buffer[: int(self.count)].cpu()

    def restore(self, images: Tensor | None, device: torch.device) -> None:
        self.buffer = self.count = None
        if images is not None and len(images):
            self.reserve(images.to(device))
            self.buffer[: len(images)] = images.to(device)
            self.count.fill_(len(images))


@dataclass
class FitState:
    """What a resumed `CycleGAN.fit` needs besides the weights: optimizers, image pools, RNG, scaler. The learning
    rate is not kept: `set_lr` sets each epoch's from the schedule, so a lengthened schedule applies on resume."""

    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    pool_a: ImagePool
    pool_b: ImagePool
    generator: torch.Generator
    scaler: torch.amp.GradScaler
    adam: dict[str, AdamUpdate] | None = None  # "g", "d": how the steps update opt_g, opt_d (None: fp16)
    required = ("epoch", "opt_g", "opt_d", "pool_a", "pool_b", "generator", "torch_rng", "scaler")  # in state.pt

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "pool_a": self.pool_a.state(),
            "pool_b": self.pool_b.state(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            "scaler": self.scaler.state_dict(),
        }

    def set_lr(self, lr: float) -> None:
        """Both optimizers' learning rate (and the device copy the steps read, `AdamUpdate`)."""
        for opt in (self.opt_g, self.opt_d):
            opt.param_groups[0]["lr"] = lr
        if self.adam is not None:
            self.adam["g"].lr.fill_(lr)  # shared by both

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Restore ``state`` (a checkpoint's ``sched_g``/``sched_d``, from versions that kept them, are ignored)."""
        for name in ("opt_g", "opt_d", "scaler"):
            getattr(self, name).load_state_dict(state[name])
        self.pool_a.restore(state["pool_a"], device)
        self.pool_b.restore(state["pool_b"], device)
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None:  # the pools and the augmentation draw on the GPU's stream
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def read_back(pending: list[dict[str, Tensor]], name: str = "cyclegan") -> list[dict[str, float]]:
    """The losses of several iterations as floats, in one device-to-host copy; a non-finite one is an error."""
    keys = list(pending[0])
    rows = torch.stack([torch.stack([losses[k] for k in keys]) for losses in pending]).tolist()
    out = [dict(zip(keys, row, strict=True)) for row in rows]
    for losses in out:
        if not all(math.isfinite(v) for v in losses.values()):
            raise DataError(f"{name}: a loss became non-finite ({losses}); lower lr or use precision fp32")
    return out


def check_resumable(saved: dict[str, Any], config: dict[str, Any], workdir: Path) -> None:
    """Raise `DataError` naming the settings (outside `RESUMABLE`) in which ``saved`` and ``config`` differ."""

    def plain(cfg: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps({k: v for k, v in cfg.items() if k not in RESUMABLE}, default=str))

    old, new = plain(saved), plain(config)
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if diff:
        settings = ", ".join(diff)
        raise DataError(f"{workdir}: checkpoint was trained with other settings ({settings}); use another workdir")
