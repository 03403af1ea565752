"""What every trainer shares to compute: device, precision, seeding, determinism, memory layout, the optimiser.

Beside it, one module per other concern: `da_seg.files` (atomic JSON), `da_seg.checkpoints`, `da_seg.progress`
(bars and scalar logs), `da_seg.distributed` (torchrun), `da_seg.provenance` (versions).
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from da_seg.distributed import wrap_ddp
from da_seg.errors import ConfigError


def resolve_device(device: str = "auto", key: str = "runtime.device") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; an unknown or unavailable device is a `ConfigError` naming ``key``
    (``runtime.device`` in a config, ``--device`` on the command line)."""
    import re

    from da_seg.config import DEVICE_HELP, DEVICE_PATTERN

    if not isinstance(device, str) or not re.fullmatch(DEVICE_PATTERN, device):
        raise ConfigError(f"{key} = {device!r}: {DEVICE_HELP}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key} = '{device}' but no CUDA GPU is available; use 'auto' or 'cpu'")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"{key} = '{device}' but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key} = 'mps' but Apple's MPS backend is not available here; use 'auto' or 'cpu'")
    return dev


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 in hardware (AVX-512 BF16 or AMX), where bf16 autocast measured 1.6-2.4x
    faster (benchmarks/RESULTS.md); elsewhere bf16 is emulated and buys nothing. ``cpuinfo``: the text of
    /proc/cpuinfo (read when None; off Linux, torch's own check decides)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpuinfo = f.read()
        except OSError:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: torch.device) -> str:
    """``runtime.precision``; ``"auto"`` picks what the benchmarks measured fastest at equal quality per device:
    bf16 on CPUs with native bf16, fp32 on other CPUs, and fp32 on CUDA and MPS (on an H200, bf16 made the
    CycleGAN no faster and the segmenter slower than fp32 channels_last: RESULTS.md, "First GPU check")."""
    native = device.type != "cpu" or cpu_has_native_bf16()
    if precision == "bf16" and not native:
        warnings.warn(
            "runtime.precision = 'bf16' on a CPU without bf16 kernels (AVX-512 BF16 or AMX): it is emulated, and a "
            "CycleGAN step ran 8.6x slower than in fp32 on such a CPU (benchmarks/RESULTS.md); 'auto' picks fp32 here",
            stacklevel=2,
        )
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and native else "fp32"


def autocast(device: torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` (``fp32`` = off, ``bf16`` on CPU or GPU, ``fp16`` on GPU only)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("runtime.precision = 'fp16' needs a CUDA GPU; use 'bf16' on the CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a CPU generator for sampling that does not disturb the others."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Ask torch for deterministic kernels (``runtime.deterministic``), or give back the fast defaults.

    CPU training is reproducible without it; on a GPU, cuDNN autotuning and atomics-based kernels (e.g. the
    backward passes of reflection padding, bilinear upsampling and scatter/index_add) differ run to run. Ops
    without a deterministic kernel warn instead of failing (``warn_only``), so a run never stops for it.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS creates its handle
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False


# -- distributed (torchrun) -----------------------------------------------------------------------------------


def prepare_module(module: nn.Module, device: torch.device, channels_last: bool = False, compile: bool = False):
    """Layout, DDP and compilation for a training network: ``(plain module, module to call in training)``.

    ``channels_last`` converts the weights to NHWC (inputs are converted by `to_layout`); ``compile`` wraps the
    (DDP) module in ``torch.compile``. The plain module shares the parameters and is what gets saved.
    """
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    train = wrap_ddp(module, device)
    if compile:
        train = torch.compile(train)
    return module, train


def to_layout(x: Tensor, channels_last: bool) -> Tensor:
    """``x`` in NHWC memory (same shape) when ``channels_last``; unchanged otherwise."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The loss scaler fp16 training needs on a GPU (a disabled pass-through for fp32 and bf16)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def adam(params: Any, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam with the fused kernel on CPU and CUDA: one C++ loop over all tensors instead of a Python loop per
    tensor (a CycleGAN's four networks hold ~90 tensors: ~9 ms -> ~2 ms per step on a 2-core CPU)."""
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") for p in params) or None
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused)


class WeightAverage:
    """An exponential moving average of a module's weights, kept in a copy of the module (ours to offer for the GAN
    generators: Yazici et al. 2019, "The unusual effectiveness of averaging in GAN training"; a generator's late
    updates chase its discriminator, their average is steadier). After update ``t`` (0-based) the copy holds
    ``d * copy + (1 - d) * weights`` with ``d = min(decay, (1 + t) / (10 + t))``, so the random initial weights
    fade within the first updates; the count comes from the caller, so a resumed fit continues the same sequence.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.check(decay, "a weight average's decay")
        self.module = copy.deepcopy(module).requires_grad_(False).eval()
        self.decay = decay

    @staticmethod
    def check(decay: float, what: str) -> None:
        """`ConfigError` unless ``0 < decay < 1`` (``what``: the setting, in the message)."""
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"{what} must lie in (0, 1), e.g. 0.999, got {decay}")

    @torch.no_grad()
    def update(self, module: nn.Module, t: int) -> None:
        d = min(self.decay, (1 + t) / (10 + t))
        pairs = list(zip(_tensors(self.module), _tensors(module), strict=True))
        floats = [(ours, theirs) for ours, theirs in pairs if ours.is_floating_point()]
        torch._foreach_lerp_([ours for ours, _ in floats], [theirs.detach() for _, theirs in floats], 1.0 - d)
        for ours, theirs in pairs:
            if not ours.is_floating_point():  # integer buffers (a norm's batch count): the latest value
                ours.copy_(theirs)


def _tensors(module: nn.Module) -> list[Tensor]:
    """A module's parameters, then its buffers, in registration order."""
    return [*module.parameters(), *module.buffers()]


# -- the compiled training step -------------------------------------------------------------------------------


class AdamUpdate:
    """The update of a `torch.optim.Adam` (one parameter group), applied by the training steps themselves.

    Why not ``opt.step()``: it always breaks a ``torch.compile`` graph, and dynamo guards every value of an
    optimizer's param groups (each new learning rate would recompile the step); eagerly on a CPU, torch's fused
    Adam also increments one step counter per parameter, a loop of ~460 dispatched operators per CycleGAN
    iteration. Here all parameters share one step counter (they always step together), ``lr`` is a 0-d tensor
    on the device (the schedule fills in a value, the graph stays), and `step` runs torch's fused kernel eagerly
    or torch's "capturable" multi-tensor formulation inside a compiled step (no weight decay, no amsgrad).

    The state lives in ``opt.state`` in torch's own format (moments and a step tensor per parameter, all the
    same tensor here), so ``opt.state_dict()`` saves it and a resume loads it; build this after loading.
    """

    def __init__(self, opt: torch.optim.Adam, lr: Tensor) -> None:
        (group,) = opt.param_groups
        self.params: list[Tensor] = list(group["params"])
        device = self.params[0].device
        counts = {float(opt.state[p]["step"]) for p in self.params if opt.state[p]}
        if len(counts) > 1:
            raise ValueError(f"Adam state with different step counts {sorted(counts)}: not one group's")
        self.count = torch.full((), counts.pop() if counts else 0.0, dtype=torch.float32, device=device)
        for p in self.params:
            state = opt.state[p]
            state.setdefault("exp_avg", torch.zeros_like(p, memory_format=torch.preserve_format))
            state.setdefault("exp_avg_sq", torch.zeros_like(p, memory_format=torch.preserve_format))
            state["step"] = self.count
        self.exp_avgs = [opt.state[p]["exp_avg"] for p in self.params]
        self.exp_avg_sqs = [opt.state[p]["exp_avg_sq"] for p in self.params]
        self.beta1, self.beta2 = group["betas"]
        self.eps, self.lr = group["eps"], lr

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor | None]) -> None:
        """Update with ``grads`` (one per parameter); a parameter whose gradient is None is left alone, as torch's
        Adam does, though the shared counter still advances (its bias correction runs ahead: ours)."""
        used = [i for i, g in enumerate(grads) if g is not None]
        params, grads = [self.params[i] for i in used], [grads[i] for i in used]
        exp_avgs, exp_avg_sqs = [self.exp_avgs[i] for i in used], [self.exp_avg_sqs[i] for i in used]
        self.count.add_(1)
        if not torch.compiler.is_compiling() and self.count.device.type in ("cpu", "cuda"):
            torch._fused_adam_(
                params, grads, exp_avgs, exp_avg_sqs, [], [self.count] * len(params), lr=self.lr,
                beta1=self.beta1, beta2=self.beta2, weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False,
            )  # fmt: skip
            return
        torch._foreach_lerp_(exp_avgs, grads, 1 - self.beta1)
        torch._foreach_mul_(exp_avg_sqs, self.beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - self.beta2)
        step_size = self.lr / (1 - self.beta1**self.count)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, torch.sqrt(1 - self.beta2**self.count))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_div_(denom, -step_size)
        torch._foreach_addcdiv_(params, exp_avgs, denom)  # p - lr * m_hat / (sqrt(v_hat) + eps)


def optimise(
    loss: Tensor,
    opt: torch.optim.Adam,
    update: AdamUpdate | None,
    scaler: torch.amp.GradScaler,
    all_reduce: bool = False,
) -> None:
    """One step of ``opt``'s parameters from ``loss``, as every trainer's step takes it: gradients for those
    parameters only (`torch.autograd.grad`, which a compiled step can trace; backward under torchrun, where DDP
    averages them during backward), then ``update`` (`AdamUpdate`). ``update`` None (fp16) steps torch's optimizer
    through the loss scaler instead."""
    params = opt.param_groups[0]["params"] if update is None else update.params
    if update is None:
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward(inputs=params)
        scaler.step(opt)
        return
    if all_reduce:
        loss.backward(inputs=params)
        grads = [p.grad for p in params]
        for p in params:
            p.grad = None
    else:
        grads = list(torch.autograd.grad(loss, params, allow_unused=True))
    update.step(grads)


def compiles_whole_step(compile: bool | str, precision: str, distributed: bool, capturable: bool = True) -> bool:
    """Whether ``runtime.compile`` compiles a trainer's whole step (`compile_step`) rather than its networks: not
    under torchrun (DDP needs backward), not with fp16 (the loss scaler steps on the host), and not for a step that
    reads a tensor's value on the host (``capturable`` False)."""
    return bool(compile) and capturable and not distributed and precision != "fp16"


def compile_step(step: Callable[..., Any], device: torch.device, compile: bool | str = True) -> Callable[..., Any]:
    """``torch.compile`` a whole training step as one graph (``fullgraph=True``: a graph break is an error, not a
    silent fallback). Gradients inside it come from ``torch.autograd.grad``, which dynamo traces only with its
    ``trace_autograd_ops`` switch. On CUDA the inductor backend replays the step as a CUDA graph
    (``mode="reduce-overhead"``). ``compile`` is ``runtime.compile``: True for inductor, or a backend's name
    (e.g. ``"aot_eager"`` in tests)."""
    import torch._dynamo

    backend = compile if isinstance(compile, str) else "inductor"
    torch._dynamo.config.trace_autograd_ops = True
    mode = "reduce-overhead" if device.type == "cuda" and backend == "inductor" else None
    return torch.compile(step, fullgraph=True, backend=backend, mode=mode)
