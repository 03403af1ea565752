"""runtime.threads: "auto" counts the cores other processes leave free; integers pass through as before."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from da_seg.config import RuntimeConfig, parse_config
from da_seg.errors import ConfigError
from da_seg.threads import (
    allowed_cpus,
    apply_threads,
    auto_note,
    busy_elsewhere,
    cpu_ticks,
    free_cores,
    resolve_threads,
)

STAT = """cpu  300 0 0 700 0 0 0 0 0 0
cpu0 {u0} 0 0 {i0} 0 0 0 0 0 0
cpu1 {u1} 0 0 {i1} 0 0 0 0 0 0
intr 12 0 0
"""


def stat(u0: int, i0: int, u1: int, i1: int) -> dict[int, tuple[int, int]]:
    return cpu_ticks(STAT.format(u0=u0, i0=i0, u1=u1, i1=i1))


@pytest.fixture
def keep_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_wait_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """OMP_WAIT_POLICY unset for the test and restored after it, whatever the test sets."""
    monkeypatch.setenv("OMP_WAIT_POLICY", "placeholder")  # so that delenv records the original state
    monkeypatch.delenv("OMP_WAIT_POLICY")


def test_cpu_ticks_reads_busy_and_total_per_cpu() -> None:
    text = "cpu  9 9 9 9 9 9 9 9 9 9\ncpu0 10 1 2 50 3 4 5 6 7 8\ncpu1 1 0 0 9\nctxt 5\n"
    # busy = user + nice + system + irq + softirq + steal; total adds idle + iowait; guest columns are not added
    assert cpu_ticks(text) == {0: (28, 81), 1: (1, 10)}


def test_free_cores_on_an_idle_machine_is_the_affinity() -> None:
    assert free_cores({0, 1, 2, 3}, busy=lambda cpus: 0.0) == 4
    assert free_cores({0, 1, 2, 3}, busy=lambda cpus: 0.4) == 4  # less than half a core busy leaves it free


def test_one_busy_process_on_two_cores_leaves_one() -> None:
    assert free_cores({0, 1}, busy=lambda cpus: 1.0) == 1
    assert free_cores({0, 1}, busy=lambda cpus: 0.6) == 1


def test_free_cores_is_never_below_one() -> None:
    assert free_cores({0, 1}, busy=lambda cpus: 7.5) == 1
    assert free_cores({0}, busy=lambda cpus: 1.0) == 1


def test_busy_elsewhere_samples_proc_stat_and_leaves_out_this_process() -> None:
    # over the sample, cpu0 was busy all 20 ticks and cpu1 idle: one core busy
    readings = iter([stat(100, 100, 50, 150), stat(120, 100, 50, 170)])
    own = iter([0.0, 0.0])
    busy = busy_elsewhere({0, 1}, read_stat=lambda: next(readings), own_seconds=lambda: next(own), sleep=lambda s: None)
    assert busy == pytest.approx(1.0)
    # the same ticks, but this process used 0.2 s of CPU (20 ticks at 100 Hz): nobody else is busy
    readings = iter([stat(100, 100, 50, 150), stat(120, 100, 50, 170)])
    own = iter([1.0, 1.0 + 20 / os.sysconf("SC_CLK_TCK")])
    busy = busy_elsewhere({0, 1}, read_stat=lambda: next(readings), own_seconds=lambda: next(own), sleep=lambda s: None)
    assert busy == pytest.approx(0.0)


def test_busy_elsewhere_counts_only_the_cpus_asked_about() -> None:
    readings = iter([stat(100, 100, 50, 150), stat(120, 100, 50, 170)])  # cpu0 busy, cpu1 idle
    busy = busy_elsewhere({1}, read_stat=lambda: next(readings), own_seconds=lambda: 0.0, sleep=lambda s: None)
    assert busy == 0.0


def test_without_proc_stat_the_load_average_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (1.3, 0.0, 0.0))
    assert busy_elsewhere({0, 1}, read_stat=lambda: None, sleep=lambda s: None) == 1.3


def test_free_cores_on_this_machine_is_within_the_affinity() -> None:
    assert 1 <= free_cores() <= len(allowed_cpus())


@pytest.mark.parametrize("threads", [1, 2, 7])
def test_integers_pass_through_unchanged(threads: int) -> None:
    assert resolve_threads(threads, free=lambda: pytest.fail("an integer must not sample the machine")) == threads


def test_none_leaves_torchs_choice() -> None:
    assert resolve_threads(None) is None


def test_auto_shares_the_free_cores_between_torchrun_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_threads("auto", free=lambda: 8) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert resolve_threads("auto", free=lambda: 8) == 2
    assert resolve_threads("auto", free=lambda: 2) == 1


@pytest.mark.parametrize("bad", [0, -2, "fast", True, 1.5])
def test_resolve_refuses_what_the_config_refuses(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"runtime.threads = .*: use a whole number of threads >= 1, or 'auto'"):
        resolve_threads(bad)  # type: ignore[arg-type]


def test_apply_sets_torch_threads_and_passive_waiting_when_shared(
    keep_threads: None, no_wait_policy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr("da_seg.threads.allowed_cpus", lambda: {0, 1})
    assert apply_threads("auto", free=lambda: 1) == 1
    assert torch.get_num_threads() == 1
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_apply_on_an_idle_machine_leaves_the_wait_policy_alone(
    keep_threads: None, no_wait_policy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr("da_seg.threads.allowed_cpus", lambda: {0, 1})
    assert apply_threads("auto", free=lambda: 2) == 2
    assert "OMP_WAIT_POLICY" not in os.environ


def test_apply_keeps_a_wait_policy_the_user_set(keep_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setattr("da_seg.threads.allowed_cpus", lambda: {0, 1})
    apply_threads("auto", free=lambda: 1)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_apply_an_integer_as_before(keep_threads: None, no_wait_policy: None) -> None:
    assert apply_threads(1, free=lambda: pytest.fail("an integer must not sample the machine")) == 1
    assert torch.get_num_threads() == 1
    assert "OMP_WAIT_POLICY" not in os.environ


def test_apply_none_leaves_torch_alone(keep_threads: None) -> None:
    torch.set_num_threads(1)
    assert apply_threads(None) == 1


def test_auto_is_the_config_default() -> None:
    assert RuntimeConfig().threads == "auto"
    assert parse_config({"task": "t"}).runtime.threads == "auto"


def test_config_takes_auto_and_whole_numbers() -> None:
    assert parse_config({"task": "t", "runtime": {"threads": "auto"}}).runtime.threads == "auto"
    assert parse_config({"task": "t", "runtime": {"threads": 3}}).runtime.threads == 3


@pytest.mark.parametrize("bad", [0, "fast", True])
def test_invalid_threads_in_a_config_is_a_clear_error(bad: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"task": "t", "runtime": {"threads": bad}}, source="c.toml")
    assert f"c.toml: key 'runtime.threads' = {bad!r}" in str(err.value)
    assert "use a whole number of threads >= 1, or 'auto'" in str(err.value)
    assert "more problem" not in str(err.value)  # one message, not one per member of the type's union


def test_auto_note_says_when_a_busy_machine_left_fewer_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 43: results differ with the thread count, and "auto" picks it from the load when the run starts."""
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr("da_seg.threads.allowed_cpus", lambda: {0, 1})
    assert "'auto': 1 of 2 CPUs were free; results differ with the thread count" in auto_note("auto", 1)
    assert auto_note("auto", 2) == "" and auto_note(1, 1) == "" and auto_note(None, 1) == ""
