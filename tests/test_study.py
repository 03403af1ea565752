"""`daseg study` on the tiny phantom: a 2x2 grid sharing stages, seeds split over processes, phantom draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from da_seg.cli import app
from da_seg.errors import ConfigError
from da_seg.pipeline import train_methods
from da_seg.study import load_study, per_run_means, run_study, study_run


def test_per_run_means_averages_each_seeds_cases_of_one_method_and_test() -> None:
    rows = [
        {"method": "synct", "test": "CT", "seed": 0, "dice": 0.5},
        {"method": "synct", "test": "CT", "seed": 0, "dice": 0.7},
        {"method": "synct", "test": "CT", "seed": 1, "dice": 0.9},
        {"method": "synct", "test": "SynCT", "seed": 1, "dice": 0.1},
        {"method": "oracle", "test": "CT", "seed": 1, "dice": 0.2},
    ]
    assert per_run_means(rows, "synct", "CT") == pytest.approx({"s0": 0.6, "s1": 0.9})
    assert per_run_means(rows, "oracle", "SynCT") == {}


def test_study_2x2_grid_shares_identical_stages(tmp_path: Path, tiny_config) -> None:
    tiny_config(tmp_path)
    study = tmp_path / "study.toml"
    study.write_text(
        'base = "tiny.toml"\nname = "grid"\n[grid]\n"translator.cycle_loss" = ["mse", "ssim"]\n'
        '"segmentation.context" = [0, 1]\n[set]\nbaselines = []\n'
    )
    result = run_study(study)
    assert len(result.table) == 4
    assert {row["variation"] for row in result.table} == {
        "cycle_loss=mse; context=0",
        "cycle_loss=mse; context=1",
        "cycle_loss=ssim; context=0",
        "cycle_loss=ssim; context=1",
    }
    assert len(list(result.run_dir.glob("translator-*"))) == 2  # one per cycle loss, shared by both contexts
    assert result.report.exists() and (result.run_dir / "study/fig_study_boxplot.png").exists()
    assert result.table[0]["p_vs_first_holm"] is None and 0.0 <= result.table[1]["p_vs_first_holm"] <= 1.0
    # a finished study's run, reloaded for analysis after the fact: its models come from the stages, nothing trains
    stages_before = sorted(p.name for p in result.run_dir.iterdir())
    up, tag = study_run(load_study(study), result.run_dir, None, index=1)
    assert tag == "@v1" and (up.config.translator["cycle_loss"], up.config.segmentation.context) == ("mse", 1)
    assert [m.name for m in train_methods(up, tag=tag)] == ["synct@v1"]
    assert sorted(p.name for p in result.run_dir.iterdir()) == stages_before


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        (
            '"translator.cycle_loss" = ["mse", "ssim"]',
            {"cycle_loss=mse", "cycle_loss=ssim", "oracle", "self_training (cycle_loss=mse)"},
        ),
        (
            '"segmentation.context" = [0, 1]',
            {"context=0", "context=1", "oracle (context=0)", "self_training (context=0)"},
        ),
    ],
)
def test_a_baseline_the_grid_varies_is_named_after_the_variation_it_trained_with(
    tmp_path: Path, tiny_config, grid: str, expected: set[str]
) -> None:
    """Baselines train beside the first variation only; a plain ``self_training`` row under a grid of translators
    (or ``oracle`` under a grid of segmenter settings) passed off the first variation's result as every one's."""
    tiny_config(tmp_path, seg_epochs=1, baselines='["oracle", "self_training"]')
    study = tmp_path / "study.toml"
    study.write_text(f'base = "tiny.toml"\nname = "baselines"\n[grid]\n{grid}\n')
    result = run_study(study)
    assert {row["variation"] for row in result.table} == expected
    assert {r["variation"] for r in result.rows if r["method"].startswith(("oracle", "self_training"))} == {0}
    ratios = {row["variation"]: row["ratio_to_oracle"] for row in result.table}
    assert all(ratio is not None for ratio in ratios.values())  # the oracle is found under its longer name too
    assert next(v for k, v in ratios.items() if k.startswith("oracle")) == 1.0


def test_seeds_split_a_study_over_processes_then_one_report(tmp_path: Path, tiny_config) -> None:
    """``--seeds`` runs a subset of the study's seeds into the shared folder, its tables apart from the study's; a
    later run without it reuses those stages and reports every seed."""
    tiny_config(tmp_path, seg_epochs=1)
    study = tmp_path / "study.toml"
    study.write_text(
        'base = "tiny.toml"\nname = "split"\nseeds = [1, 2]\n[grid]\n"translator.cycle_loss" = ["ssim"]\n'
        "[set]\nbaselines = []\n"
    )
    part = CliRunner().invoke(app, ["study", str(study), "--seeds", "2", "--resume"])
    assert part.exit_code == 0, part.output
    run_dir = tmp_path / "runs/split"
    assert (run_dir / "study/seeds-2/report.md").read_text().startswith("# Study: seeds [2] of [1, 2]")
    assert not (run_dir / "study/table.md").exists()  # a part never stands in for the whole study's table
    assert list(run_dir.glob("*@v0s2-*")) and not list(run_dir.glob("*@v0s1-*"))
    markers = {p: p.stat().st_mtime_ns for p in run_dir.glob("*@v0s2-*/done.json")}
    whole = run_study(study, resume=True)
    assert whole.table[0]["runs"] == 2 and {r["seed"] for r in whole.rows} == {1, 2}
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("*@v0s2-*/done.json")} == markers  # seed 2 reused
    assert (run_dir / "study/table.md").is_file() and (run_dir / "study/seeds-2/table.md").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "3", "--resume"], "choose among the study's seeds [1, 2]"),
        (["--seeds", "1,x"], "give seeds separated by commas"),
        (["--seeds", "1", "--force"], "would delete the other seeds' stages too"),
    ],
)
def test_seeds_refuses_what_is_not_a_subset_or_would_delete_others(
    tmp_path: Path, tiny_config, args: list[str], message: str
) -> None:
    tiny_config(tmp_path)
    study = tmp_path / "study.toml"
    study.write_text('base = "tiny.toml"\nseeds = [1, 2]\n[grid]\n"translator.cycle_loss" = ["ssim"]\n')
    result = CliRunner().invoke(app, ["study", str(study), *args])
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_draws_vary_the_phantom_and_ratios_are_taken_per_draw(tmp_path: Path, tiny_config, tiny_phantom) -> None:
    """Issue 41: a study measures on several phantom draws (data.phantom.seed), not one; each (draw, seed) is a
    run whose ratio to the oracle counts once in the table's mean and minimum."""
    tiny_config(tmp_path, seg_epochs=1, baselines='["oracle"]')
    study = tmp_path / "study.toml"
    study.write_text('base = "tiny.toml"\nname = "draws"\ndraws = [3, 4]\n[grid]\n"translator.cycle_loss" = ["ssim"]\n')
    result = run_study(study)
    assert {(r["draw"], r["unit"]) for r in result.rows} == {(3, "d3/s1"), (4, "d4/s1")}
    assert all(r["case"].startswith(f"d{r['draw']}/s1/") for r in result.rows)
    oracle = [r for r in result.rows if r["method"] == "oracle" and r["test"] == "CT"]
    by_draw = {d: sorted(r["dice"] for r in oracle if r["draw"] == d) for d in (3, 4)}
    assert by_draw[3] != by_draw[4]  # other data, not the same phantom twice
    (synct,) = [row for row in result.table if row["variation"] != "oracle"]
    assert synct["runs"] == 2 and synct["ratio_min"] <= synct["ratio_mean"]
    ratios = [  # the mean of the per-draw ratios, as the table gives it
        np.mean([r["dice"] for r in result.rows if r["method"] == synct["variation"] and r["test"] == "CT" and
                 r["draw"] == d]) / np.mean(by_draw[d])
        for d in (3, 4)
    ]  # fmt: skip
    assert synct["ratio_mean"] == pytest.approx(np.mean(ratios), abs=1e-3)
    assert synct["ratio_min"] == pytest.approx(min(ratios), abs=1e-3)
    assert (result.run_dir / "study/report.md").read_text().startswith("# Study on phantom draws [3, 4]")
    assert {"draw-3", "draw-4"} <= {p.name for p in tiny_phantom.iterdir()}  # each draw in a folder of its own


def test_draws_need_a_phantom(tmp_path: Path, tiny_config, tiny_phantom_data: Path) -> None:
    data = {role: tiny_phantom_data / role for role in ("source", "target", "evaluation")}
    tiny_config(tmp_path, data=data)
    study = tmp_path / "study.toml"
    study.write_text('base = "tiny.toml"\ndraws = [3]\n[grid]\n"translator.cycle_loss" = ["ssim"]\n')
    with pytest.raises(ConfigError, match="draws vary the phantom, but its base config reads data folders"):
        run_study(study)
