"""What a CycleGAN fit carries between iterations and across a resume, apart from the four networks.

`ImagePool` keeps old fakes for the discriminators, `FitState` bundles everything `fit` saves in ``last/state.pt``
(optimizers, schedules, pools, RNG, gradient scaler), `read_back` turns queued device losses into floats, and
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

# Settings a resumed run may change: lengthening ``epochs`` continues the schedule, the rest only touch output.
RESUMABLE = frozenset(
    {"epochs", "decay_epochs", "sample_every", "keep_checkpoints", "checkpoint_every", "log_every", "translate_batch"}
)


class ImagePool:
    """The last ``size`` generated images; the discriminator sees a mix of old and new fakes (Shrivastava et al.).

    Each query image is stored while the pool fills; afterwards, with probability 1/2 it replaces a random stored
    image and that older image is returned instead.
    """

    def __init__(self, size: int = 50) -> None:
        self.size = size
        self.images: list[Tensor] = []

    def query(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if self.size <= 0:
            return images.detach()  # the generator's graph is freed after its step
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=generator).item() < 0.5:
                i = int(torch.randint(len(self.images), (), generator=generator))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state(self) -> Tensor | None:
        return torch.stack(self.images).cpu() if self.images else None

    def restore(self, images: Tensor | None, device: torch.device) -> None:
        self.images = [] if images is None else [im.to(device) for im in images]


@dataclass
class FitState:
    """What a resumed `CycleGAN.fit` needs besides the weights: optimizers, schedules, image pools, RNG, scaler."""

    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler
    pool_a: ImagePool
    pool_b: ImagePool
    generator: torch.Generator
    scaler: torch.amp.GradScaler

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "pool_a": self.pool_a.state(),
            "pool_b": self.pool_b.state(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device, lr_factor: float) -> None:
        """Restore ``state``; the learning rate is recomputed (``lr_factor``: the schedule may have been lengthened)."""
        for name in ("opt_g", "opt_d", "sched_g", "sched_d", "scaler"):
            getattr(self, name).load_state_dict(state[name])
        for sched in (self.sched_g, self.sched_d):
            for group, base in zip(sched.optimizer.param_groups, sched.base_lrs, strict=True):
                group["lr"] = base * lr_factor
        self.pool_a.restore(state["pool_a"], device)
        self.pool_b.restore(state["pool_b"], device)
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])


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
