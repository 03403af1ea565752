"""Determinism: the same config and seed give identical metrics on the CPU; the GPU switch sets what it says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from da_seg import load_config
from da_seg.pipeline import run_pipeline
from da_seg.training import set_deterministic


def _metrics(tiny_config, tmp: Path, name: str) -> list[dict]:
    path = tiny_config(tmp, name, seed=3, baselines="[]", seg_epochs=1, gan_iterations=2)
    rows = run_pipeline(load_config(path)).metrics
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # wall time is not a result


def test_same_config_and_seed_give_identical_metrics(tmp_path: Path, tiny_config) -> None:
    first = _metrics(tiny_config, tmp_path, "first")
    second = _metrics(tiny_config, tmp_path, "second")
    assert first and {row["method"] for row in first} == {"synct"}
    assert first == second  # exact: every Dice, HD95 and ASSD to the last bit
    assert not torch.are_deterministic_algorithms_enabled()  # runtime.deterministic = false is the default


@pytest.fixture
def restore_flags():
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
    if saved[4] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]


def test_deterministic_switch_sets_torch_cudnn_and_cublas(restore_flags, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    set_deterministic(True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # ops without a deterministic kernel warn
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
