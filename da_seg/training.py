"""What every trainer shares: device and precision, seeding, atomic checkpoints, progress, scalar logs, torchrun."""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from da_seg.errors import ConfigError, DataError


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


def os_error(err: OSError, path: str | Path) -> DataError | None:
    """A one-line `DataError` for a full disk or a folder that cannot be written, naming the path; else None."""
    import errno

    where = err.filename or path
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(f"disk full while writing {where}: free some space (or choose another 'output'), then rerun")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR):
        return DataError(f"cannot write {where} ({err.strerror}): choose a writable 'output' folder")
    return None


# -- atomic files ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path`` (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); the file may be damaged") from None


# -- checkpoints ----------------------------------------------------------------------------------------------
def save_checkpoint(
    directory: str | Path,
    modules: Mapping[str, nn.Module],
    meta: Mapping[str, Any],
    state: Mapping[str, Any] | None = None,
) -> None:
    """Write ``weights.safetensors`` (all modules, keys ``name.param``), ``meta.json`` and optionally ``state.pt``.

    ``meta`` must say what built the weights (``component`` and its arguments) so `load_checkpoint` can refuse a
    checkpoint of another component. ``state`` holds optimizer/scheduler state for resuming (tensors and plain
    data only, loaded with ``weights_only=True``). Each file is written atomically.
    """
    directory = Path(directory)
    tensors = {
        f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items() for k, v in m.state_dict().items()
    }
    with atomic_path(directory / "weights.safetensors") as tmp:
        save_file(tensors, str(tmp))
    if state is not None:
        with atomic_path(directory / "state.pt") as tmp:
            torch.save(dict(state), tmp)
    write_json(directory / "meta.json", dict(meta))


def load_checkpoint(
    directory: str | Path,
    modules: Mapping[str, nn.Module],
    component: str | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load weights saved by `save_checkpoint` into ``modules``; returns the meta data.

    Refuses (with a `DataError`) a checkpoint written by another component or with other tensor shapes.
    """
    directory = Path(directory)
    meta = read_json(directory / "meta.json")
    if component is not None and meta.get("component") != component:
        raise DataError(
            f"{directory}: checkpoint is for '{meta.get('component')}', not '{component}'; point to the right model"
        )
    weights = directory / "weights.safetensors"
    try:
        tensors = load_file(str(weights), device=str(map_location))
    except FileNotFoundError:
        raise DataError(f"missing file: {weights}") from None
    except Exception as err:
        raise DataError(f"{weights}: unreadable checkpoint ({err})") from None
    for name, module in modules.items():
        prefix = f"{name}."
        sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(sub, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise DataError(
                f"{weights}: weights do not fit '{name}' as configured ({first[1].strip() if len(first) > 1 else err});"
                " was it trained with other settings?"
            ) from None
    return meta


def load_state(directory: str | Path) -> dict[str, Any] | None:
    """Optimizer/scheduler state saved beside a checkpoint, or None (``weights_only=True``: no code runs)."""
    path = Path(directory) / "state.pt"
    if not path.exists():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickle protocols before refusing them
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, or a pickle holding code (never executed with weights_only=True)
        text = str(err).strip() or type(err).__name__
        if "Weights only load failed" in text:
            reason = "a pickle holding more than tensors and plain data; nothing in it was run"
        else:
            reason = text.splitlines()[0].split(". ")[0][:160]
        raise DataError(
            f"{path}: unreadable training state ({reason}); delete it to restart that stage from its weights, "
            "or rerun with --force"
        ) from None


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution (``"da_seg"``, ``"torch"``, a plugin's package), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


# -- progress and logs ----------------------------------------------------------------------------------------
PLAIN_PROGRESS_EVERY = 10.0
"""Seconds between two plain progress lines of one loop (batch-job logs stay short: ~6 lines a minute at most)."""


class PlainProgress:
    """`progress_bar` where the output is not a terminal (``daseg run > log 2>&1``, batch jobs, nohup): rich draws
    nothing there, so this prints the bar's facts as one plain line, at most every `PLAIN_PROGRESS_EVERY` seconds
    per loop and once at its end: ``cyclegan 3/15: 250/1500 (17%), 4.1 it/s, ETA 5m05s, g 1.234 d 0.456``.

    It implements the part of `rich.progress.Progress` the loops use (``add_task``, ``update``, ``disable``, a
    context manager).
    """

    def __init__(self, every: float = PLAIN_PROGRESS_EVERY, stream: Any = None) -> None:
        self.every, self.stream, self.disable = every, stream, False
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        for task_id, task in self._tasks.items():
            if not task["printed_final"] and task["completed"] > task["start"]:
                self._print(task_id, time.perf_counter())

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: Any) -> int:
        task_id = len(self._tasks)
        now = time.perf_counter()
        self._tasks[task_id] = {
            "description": description,
            "total": total,
            "completed": completed,
            "start": completed,
            "started": now,
            "printed": now,
            "printed_final": False,
            "fields": fields,
        }
        return task_id

    def update(self, task_id: int, advance: float = 0, description: str | None = None, **fields: Any) -> None:
        task = self._tasks[task_id]
        task["completed"] += advance
        task["fields"].update(fields)
        if description is not None:
            task["description"] = description
        done = task["total"] is not None and task["completed"] >= task["total"]
        now = time.perf_counter()
        if done or now - task["printed"] >= self.every:
            self._print(task_id, now)
            task["printed_final"] = done

    def _print(self, task_id: int, now: float) -> None:
        if self.disable:
            return
        task = self._tasks[task_id]
        task["printed"] = now
        rate = (task["completed"] - task["start"]) / max(now - task["started"], 1e-9)
        parts = [f"{task['description']}: {task['completed']:.0f}"]
        if task["total"]:
            parts[0] += f"/{task['total']:.0f} ({100 * task['completed'] / task['total']:.0f}%)"
        parts.append(f"{rate:.2f} it/s")
        if task["total"] and rate > 0:
            left = int((task["total"] - task["completed"]) / rate)
            parts.append(f"ETA {left // 60}m{left % 60:02d}s")
        if status := task["fields"].get("status"):
            parts.append(str(status))
        print(", ".join(parts), file=self.stream or sys.stdout, flush=True)


def output_is_terminal() -> bool:
    """Whether rich can draw live progress (a terminal), as rich itself decides."""
    from rich.console import Console

    return Console(stderr=False).is_terminal


def progress_bar(transient: bool = False) -> Progress | PlainProgress:
    """The progress display every long loop uses (description carries the current losses): rich's bar in a
    terminal, `PlainProgress` lines in a log file."""
    if not output_is_terminal():
        return PlainProgress()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        transient=transient,
    )


class ScalarLog:
    """Append-only JSON-lines log of training scalars (one object per line)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **scalars: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(scalars, default=float) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


# -- distributed (torchrun) -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a torchrun job; ``world == 1`` is a plain single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def dist_info() -> DistInfo:
    """The current process group's rank and size (``DistInfo()`` when torch.distributed is not initialised)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return DistInfo()
    return DistInfo(
        torch.distributed.get_rank(), torch.distributed.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    )


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun job described by ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; a no-op without them.

    The backend is NCCL when the process trains on CUDA (each rank takes GPU ``LOCAL_RANK``), else gloo. Called
    once per process (by ``daseg run``); a second call returns the existing group's `DistInfo`.
    """
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1 or not torch.distributed.is_available():
        return DistInfo()
    if torch.distributed.is_initialized():
        return dist_info()
    local = int(os.environ.get("LOCAL_RANK", 0))
    cuda = device != "cpu" and torch.cuda.is_available() and not str(device).startswith("cpu")
    if cuda:
        torch.cuda.set_device(local)
    torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return dist_info()


def local_device(device: torch.device) -> torch.device:
    """A CUDA device pinned to this rank's GPU (``cuda:LOCAL_RANK``) under torchrun; other devices unchanged."""
    info = dist_info()
    if device.type == "cuda" and info.distributed and device.index is None:
        return torch.device("cuda", info.local_rank)
    return device


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that logs and writes files."""
    return dist_info().rank == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist_info().distributed:
        torch.distributed.barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (decisions such as 'resume this stage' must agree); identity alone."""
    if not dist_info().distributed:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def shard(indices: Tensor, rank: int | None = None, world: int | None = None) -> Tensor:
    """This rank's disjoint share ``indices[rank::world]`` of an index list every rank drew identically.

    All ranks draw the same seeded permutation (or global batch) and each keeps every ``world``-th entry, so the
    shares are disjoint and together cover the list; no sampler state has to be exchanged.
    """
    info = dist_info()
    rank = info.rank if rank is None else rank
    world = info.world if world is None else world
    return indices[rank::world]


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel when running distributed, else ``module`` itself.

    On CUDA, BatchNorm layers become SyncBatchNorm first (statistics over the global batch); on CPU/gloo they stay
    per-rank, so a multi-process CPU run only equals a single process when the network uses instance or group
    norm. Gradients are averaged over ranks, so with mean-reduced losses a step equals one process on the global
    batch (``world`` x the per-rank batch).
    """
    if not dist_info().distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return DistributedDataParallel(module, device_ids=[device.index or 0])
    return DistributedDataParallel(module)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain network inside a DDP and/or ``torch.compile`` wrapper."""
    module = getattr(module, "_orig_mod", module)
    module = getattr(module, "module", module) if isinstance(module, nn.parallel.DistributedDataParallel) else module
    return getattr(module, "_orig_mod", module)


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
