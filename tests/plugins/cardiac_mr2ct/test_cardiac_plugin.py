"""The cardiac task through the core: registration by entry point, and a tiny multi-class `daseg run`."""

from __future__ import annotations

from pathlib import Path

import pytest

from da_seg import TASKS, load_config
from da_seg.pipeline import label_map, run_pipeline
from da_seg.registry import INTENSITIES

pytest.importorskip("cardiac_mr2ct", reason="the cardiac_mr2ct plugin is not installed")
from cardiac_mr2ct.phantom import STRUCTURES

TINY = """
task = "cardiac_mr2ct"
seed = 2
output = "{out}"
baselines = ["no_adaptation"]

[data]
spacing = [8.0, 6.0, 6.0]
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
multiclass = "softmax"
loss = {{ name = "ce_dice" }}
augment = []

[runtime]
device = "cpu"
"""


def test_task_is_discovered_with_its_presets() -> None:
    task = TASKS.create("cardiac_mr2ct")
    assert task.labels == STRUCTURES and task.classes == 6
    assert (task.source_modality, task.target_modality) == ("MR", "CT")
    window = INTENSITIES.build(task.target_intensity)
    assert (window.low, window.high) == (-200.0, 800.0)
    assert label_map(task) == {i + 1: name for i, name in enumerate(STRUCTURES)}
    assert callable(task.phantom)


def test_tiny_multi_class_run_reports_every_structure(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(out=tmp_path / "runs", phantom=tmp_path / "phantom"))
    result = run_pipeline(load_config(path))
    on_ct = [r for r in result.metrics if r["test"] == "CT"]
    assert {r["method"] for r in on_ct} == {"synct", "no_adaptation"}
    for row in on_ct:
        for name in STRUCTURES:
            assert 0.0 <= row[f"{name}_dice"] <= 1.0
            assert f"{name}_hd95" in row and f"{name}_assd" in row
        assert row["dice"] == pytest.approx(sum(row[f"{n}_dice"] for n in STRUCTURES) / len(STRUCTURES))
    report = (result.run_dir / "report.md").read_text()
    assert all(f"Dice {name}" in report for name in STRUCTURES)
    assert (result.run_dir / "fig_examples.png").is_file()
