"""How many CPU threads torch uses: ``runtime.threads = "auto"`` takes the cores other processes leave free.

Why: torch's default, one OpenMP thread per core, assumes the machine is ours. When another job keeps a core
busy, every parallel region waits at its barrier for the thread that job crowds out, and a step gets many times
slower than with fewer threads (`benchmarks/threads_shared.py`; docs/performance.md, "CPU threads on a shared
machine").

``free_cores`` counts the CPUs this process may run on (its affinity) and subtracts the cores other processes kept
busy during a short sample of ``/proc/stat`` (this process's own CPU time is taken out). `apply_threads` is what
the pipeline calls with ``runtime.threads``; an integer is applied as given, as before.

The thread count changes a run's numbers (a reduction split differently between threads sums in another order:
two tiny CycleGAN fits at one and at two threads ended with weights 0.005 apart), so the run's "runtime:" line says
when "auto" took fewer threads than the CPUs (`auto_note`): runs compared bit for bit need a number.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Literal

import torch

from da_seg.config import THREADS_HELP
from da_seg.errors import ConfigError

ThreadsSetting = int | Literal["auto"] | None
"""``runtime.threads``: a thread count, ``"auto"``, or None (leave torch's own choice, as before "auto")."""

PROC_STAT = Path("/proc/stat")
SAMPLE_SECONDS = 0.2


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on: its affinity (Linux; a container's or job's cpuset shows here), else all."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def cpu_ticks(text: str) -> dict[int, tuple[int, int]]:
    """Per-CPU ``(busy, total)`` clock ticks since boot from the text of ``/proc/stat``.

    Busy is user + nice + system + irq + softirq + steal (guest time is already inside user and nice); idle and
    iowait are the rest. Niced processes count as busy: they hold a core as surely as any other.
    """
    ticks = {}
    for line in text.splitlines():
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        values = [int(v) for v in fields[:8]] + [0] * (8 - len(fields[:8]))
        user, nice, system, idle, iowait, irq, softirq, steal = values
        busy = user + nice + system + irq + softirq + steal
        ticks[int(name[3:])] = (busy, busy + idle + iowait)
    return ticks


def read_proc_stat() -> dict[int, tuple[int, int]] | None:
    """`cpu_ticks` of this machine now; None where there is no ``/proc/stat`` (macOS, Windows)."""
    try:
        return cpu_ticks(PROC_STAT.read_text())
    except OSError:
        return None


def busy_elsewhere(
    cpus: Collection[int],
    interval: float = SAMPLE_SECONDS,
    *,
    read_stat: Callable[[], dict[int, tuple[int, int]] | None] = read_proc_stat,
    own_seconds: Callable[[], float] = time.process_time,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Cores among ``cpus`` that other processes kept busy over ``interval`` seconds (e.g. 1.0 = one core).

    Two readings of ``read_stat`` around ``sleep(interval)``; this process's CPU time (``own_seconds``, all its
    threads) is subtracted. Without ``/proc/stat`` it falls back on the 1-minute load average, which lags and
    counts this process too.
    """
    before, own_before = read_stat(), own_seconds()
    if before is None:
        return _load_average()
    sleep(interval)
    after, own_after = read_stat(), own_seconds()
    common = [c for c in cpus if c in before and after and c in after]
    if not common:
        return _load_average()
    busy = sum(after[c][0] - before[c][0] for c in common)
    span = sum(after[c][1] - before[c][1] for c in common) / len(common)  # ticks that passed on each CPU
    if span <= 0:
        return 0.0
    own = (own_after - own_before) * os.sysconf("SC_CLK_TCK")  # seconds -> the ticks /proc/stat counts in
    return max(0.0, (busy - own) / span)


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows: no load average; assume the machine is ours
        return 0.0


def free_cores(cpus: Collection[int] | None = None, busy: Callable[[Collection[int]], float] = busy_elsewhere) -> int:
    """CPUs this process may use minus the cores other processes keep busy, at least 1.

    ``busy(cpus)`` gives the busy cores (`busy_elsewhere` samples them for 0.2 s); a core counts as taken when it
    is busy at least half the time (summed over the CPUs), so one spinning process on 2 cores leaves 1.
    """
    cpus = allowed_cpus() if cpus is None else set(cpus)
    return max(1, len(cpus) - math.floor(busy(cpus) + 0.5))


def local_ranks() -> int:
    """Processes torchrun started on this machine (``LOCAL_WORLD_SIZE``; 1 without torchrun): they share its cores."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def resolve_threads(setting: ThreadsSetting, free: Callable[[], int] = free_cores) -> int | None:
    """The torch thread count for ``runtime.threads``: an integer as given, ``"auto"`` the free cores (shared
    evenly between torchrun's local processes), None torch's own choice (returned as None)."""
    if setting is None:
        return None
    if setting == "auto":
        return max(1, free() // local_ranks())
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ConfigError(f"runtime.threads = {setting!r}: {THREADS_HELP}")
    return setting


def apply_threads(setting: ThreadsSetting, free: Callable[[], int] = free_cores) -> int:
    """Set torch's CPU threads from ``runtime.threads``; returns the count torch now uses.

    With ``"auto"`` on a shared machine (fewer free cores than CPUs in the affinity) it also sets
    ``OMP_WAIT_POLICY=PASSIVE`` (unless set already), so idle OpenMP threads sleep instead of spinning on cores
    other jobs need. In this process that comes too late: torch's OpenMP runtime (libgomp) reads its environment
    once, while torch is imported (``OMP_DISPLAY_ENV=VERBOSE`` prints ``GOMP_SPINCOUNT`` 300000 by default and 0
    with PASSIVE then, and nothing when set after the import), so it reaches only processes started from here on.
    What takes effect is the thread count: with the free cores as threads nothing is oversubscribed, and with one
    thread no OpenMP worker is left to spin (`benchmarks/threads_shared.py` times both). For PASSIVE in this process
    too, set it in the shell: ``OMP_WAIT_POLICY=PASSIVE daseg run ...``.
    """
    if setting == "auto":
        cores = free()
        if cores < len(allowed_cpus()):
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        threads = resolve_threads(setting, free=lambda: cores)
    else:
        threads = resolve_threads(setting)
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def auto_note(setting: ThreadsSetting, threads: int) -> str:
    """What the run's "runtime:" line adds when ``"auto"`` took fewer than the CPUs this process may use: a result
    differs with the thread count, so a run on a busy machine is not bit for bit a run on an idle one."""
    cpus = len(allowed_cpus()) // local_ranks()
    if setting != "auto" or threads >= cpus:
        return ""
    return (
        f" ('auto': {threads} of {cpus} CPUs were free; results differ with the thread count, so to compare runs "
        "bit for bit set runtime.threads to a number)"
    )
