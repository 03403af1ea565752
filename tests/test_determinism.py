"""Determinism: the same config and seed give identical metrics on the CPU; the GPU switch sets what it says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from da_seg import load_config
from da_seg.pipeline import run_pipeline
from da_seg.training import set_deterministic

TINY = """
task = "prostate_mr2ct"
seed = 3
output = "{out}"
baselines = []

[data]
spacing = [6.0, 5.0, 5.0]
size = [32, 32]

[data.phantom]
n_source = 3
n_target = 2
n_evaluation = 1
n_target_labelled = 0
paired = false
cache = "{phantom}"

[translator]
name = "cyclegan"
width = 4
blocks = 1
disc_width = 4
batch_size = 2
epochs = 1
iterations_per_epoch = 2

[segmentation]
model = {{ name = "resunet25d", base = 4, depth = 2 }}
epochs = 1
batch_size = 8

[runtime]
device = "cpu"
"""


def _metrics(tmp: Path, phantom: Path, name: str) -> list[dict]:
    path = tmp / f"{name}.toml"
    path.write_text(TINY.format(out=tmp / "runs", phantom=phantom))
    rows = run_pipeline(load_config(path)).metrics
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # wall time is not a result


def test_same_config_and_seed_give_identical_metrics(tmp_path: Path) -> None:
    phantom = tmp_path / "phantom"
    first = _metrics(tmp_path, phantom, "first")
    second = _metrics(tmp_path, phantom, "second")
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
