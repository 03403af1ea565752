"""Methods beyond the paper in the pipeline: the domain_randomisation, self_training, adabn and two_way baselines, a
label-aware translator's `joint` segmenter (trained on the training subjects' labels only, usable with `daseg
predict`), and studies over seeds."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from da_seg import load_config
from da_seg.cli import app
from da_seg.pipeline import methods as methods_module
from da_seg.pipeline import run_pipeline
from da_seg.segmentation import load_segmenter
from da_seg.study import run_study
from da_seg.translators.shape_cyclegan import ShapeCycleGAN
from da_seg.volume import read_volume

SHAPE = {
    "translator.name": "shape_cyclegan",
    "translator.segmenter": {"name": "resunet25d", "base": 4, "depth": 2},
    "translator.structure_loss": "ngf",
}


def _record_training(monkeypatch) -> list[tuple[str, list]]:
    """Every segmenter the pipeline trains, as (its stage folder's name, its training cases), in order."""
    training: list[tuple[str, list]] = []
    train = methods_module.train_segmenter

    def record(model, cases, settings=None, **options):
        training.append((Path(options["workdir"]).parent.name, list(cases)))
        return train(model, cases, settings, **options)

    monkeypatch.setattr(methods_module, "train_segmenter", record)
    return training


def test_label_aware_translator_and_domain_randomisation(tmp_path: Path, tiny_config, monkeypatch) -> None:
    seen: dict[str, list] = {}
    fit = ShapeCycleGAN.fit

    @functools.wraps(fit)  # the pipeline passes what the signature accepts
    def spy(self, source, target, **options):
        seen["masks"] = options["source_masks"]
        return fit(self, source, target, **options)

    monkeypatch.setattr(ShapeCycleGAN, "fit", spy)
    training = _record_training(monkeypatch)
    baselines = '["no_adaptation", "domain_randomisation", "self_training", "adabn", "two_way", "oracle"]'
    config = load_config(tiny_config(tmp_path, baselines=baselines), SHAPE)
    result = run_pipeline(config)

    # 4 labelled MR subjects: 3 train the segmenters (and the translator's), 1 is the held-out SynCT test subject
    assert sum(m is not None for m in seen["masks"]) == 3 and len(seen["masks"]) == 4
    names = {(r["method"], r["test"]) for r in result.metrics}
    assert {
        ("joint", "CT"),
        ("joint", "SynCT"),
        ("domain_randomisation", "CT"),
        ("domain_randomisation", "MR"),
        ("adabn", "CT"),
        ("adabn", "SynCT"),
        ("two_way", "CT"),
    } <= names
    # self-training learns from the 3 SynCT training subjects plus the 3 pseudo-labelled CTs; AdaBN trains nothing
    # and differs from the SynCT segmenter only in its batch-norm statistics
    trained = {stage: len(cases) for stage, cases in training}
    assert trained["seg_self_training"] == 3 + 3 and "seg_adabn" not in trained and "seg_two_way" not in trained
    synct = load_file(result.run_dir / "seg_synct/model/weights.safetensors")
    adabn = load_file(result.run_dir / "seg_adabn/model/weights.safetensors")
    assert synct.keys() == adabn.keys()
    statistics = {k for k in synct if k.endswith(("running_mean", "running_var"))}
    assert statistics and all(not torch.equal(synct[k], adabn[k]) for k in statistics)
    assert all(torch.equal(synct[k], adabn[k]) for k in synct if k not in statistics and "num_batches" not in k)
    report = (result.run_dir / "report.md").read_text()
    assert "`joint`" in report and "`domain_randomisation`" in report
    # the randomised baseline trained with the remappings added after the usual augmentation
    meta = (result.run_dir / "config.json").read_text()
    assert '"randomise"' in meta

    # the joint segmenter and the two-way pair are model folders like any other: `daseg predict` reproduces the
    # run's masks
    for method in ("joint", "two_way"):
        ct = next((result.run_dir / "predictions" / method).glob("*.nii.gz"))
        image = next(Path(config.data.phantom.cache).rglob(f"images/{ct.name}"))
        out = tmp_path / f"{method}.nii.gz"
        model = str(result.run_dir / f"seg_{method}/model")
        answer = CliRunner().invoke(app, ["predict", "--model", model, str(image), "-o", str(out)])
        assert answer.exit_code == 0, answer.output
        assert np.array_equal(read_volume(out).array, read_volume(ct).array)


def test_study_over_seeds_with_baselines(tmp_path: Path, tiny_config) -> None:
    tiny_config(tmp_path)
    study = tmp_path / "study.toml"
    study.write_text(
        'base = "tiny.toml"\nname = "seeds"\nseeds = [1, 2]\n[grid]\n"translator.cycle_loss" = ["mse", "ssim"]\n'
        '[set]\nbaselines = ["oracle"]\n'
    )
    result = run_study(study)
    table = {row["variation"]: row for row in result.table}
    assert list(table) == ["cycle_loss=mse", "oracle", "cycle_loss=ssim"]
    assert all(row["runs"] == 2 for row in table.values())
    assert table["oracle"]["ratio_to_oracle"] == 1.0 and table["oracle"]["synct_mae_hu"] is None
    assert table["cycle_loss=ssim"]["synct_mae_hu"] > 0
    # each translator's MAE, per seed, beside the table's median
    per_seed = json.loads((result.run_dir / "study" / "fidelity.json").read_text())
    assert [(r["variation"], r["seed"]) for r in per_seed] == [
        ("cycle_loss=mse", 1),
        ("cycle_loss=ssim", 1),
        ("cycle_loss=mse", 2),
        ("cycle_loss=ssim", 2),
    ]
    ssim = [r["synct_mae_hu"] for r in per_seed if r["variation"] == "cycle_loss=ssim"]
    median = float(np.median(ssim))
    assert table["cycle_loss=ssim"]["synct_mae_hu"] == pytest.approx(median, abs=0.051)  # the table rounds to 0.1 HU
    assert 0 <= table["cycle_loss=ssim"]["p_vs_first_holm"] <= 1
    cases = {r["case"] for r in result.rows if r["method"] == "oracle" and r["test"] == "CT"}
    assert len(cases) == 4 and {c.split("/")[0] for c in cases} == {"s1", "s2"}  # 2 evaluation CTs x 2 seeds
    assert len(list(result.run_dir.glob("seg_oracle*"))) == 2  # once per seed, not once per variation
    text = result.report.read_text()
    assert "Friedman over" in text and "Holm" in text


def test_more_self_training_rounds_on_resume_train_only_the_new_round(tmp_path: Path, tiny_config, monkeypatch) -> None:
    """A user who adds ``self_training_rounds = 2`` and reruns with --resume keeps round 1 (its stage key does not
    depend on how many rounds follow); round 2 learns from the SynCT and the CTs labelled by round 1, and its model is
    the method's: `daseg predict` with it writes the run's self_training mask."""
    training = _record_training(monkeypatch)
    path = tiny_config(tmp_path, baselines='["self_training"]')
    first = run_pipeline(load_config(path, {"segmentation.self_training_rounds": 1}))
    assert [stage for stage, _ in training] == ["seg_synct", "seg_self_training"]
    round_1 = load_file(first.run_dir / "seg_self_training/model/weights.safetensors")

    training.clear()
    config = load_config(path, {"segmentation.self_training_rounds": 2})
    result = run_pipeline(config, resume=True)
    # 3 SynCT training subjects + 3 pseudo-labelled CTs
    assert [(stage, len(cases)) for stage, cases in training] == [("seg_self_training_2", 3 + 3)]
    pseudo = training[0][1][-3:]
    again = load_file(result.run_dir / "seg_self_training/model/weights.safetensors")
    assert all(torch.equal(round_1[k], again[k]) for k in round_1)
    teacher = load_segmenter(first.run_dir / "seg_self_training/model")  # round 1 labelled round 2's CTs
    assert all(np.array_equal(mask, teacher.segment(image)) for image, mask in pseudo)
    ct = next((result.run_dir / "predictions/self_training").glob("*.nii.gz"))
    image = next(Path(config.data.phantom.cache).rglob(f"images/{ct.name}"))
    out = tmp_path / "round2.nii.gz"
    model = str(result.run_dir / "seg_self_training_2/model")
    answer = CliRunner().invoke(app, ["predict", "--model", model, str(image), "-o", str(out)])
    assert answer.exit_code == 0, answer.output
    assert np.array_equal(read_volume(out).array, read_volume(ct).array)


def test_calibrated_thresholds_are_saved_with_each_model_and_used_by_the_run(
    tmp_path: Path, tiny_config, monkeypatch
) -> None:
    """With ``segmentation.calibrate = "source_volume"`` each trained segmenter (two members each; AdaBN's adapted
    copy on its own) saves the threshold chosen on the unlabelled CTs with the facts behind it and loads with it; the
    self-training teacher still labels the CTs at segmentation.threshold, and a rerun with --resume trains nothing."""
    training = _record_training(monkeypatch)
    path = tiny_config(tmp_path, baselines='["self_training", "adabn"]')
    config = load_config(path, {"segmentation.calibrate": "source_volume", "segmentation.members": 2})
    result = run_pipeline(config)
    assert [stage for stage, _ in training] == ["seg_synct"] * 2 + ["seg_self_training"] * 2

    for stage in ("seg_synct", "seg_adabn", "seg_self_training"):
        model = load_segmenter(result.run_dir / stage / "model")
        facts = model.info["calibration"]
        assert facts["rule"] == "source_volume" and model.defaults["threshold"] == facts["threshold"]
        assert 0.05 <= facts["threshold"] <= 0.95 and len(facts["target_volumes"]) == 1
        assert facts["source_volumes"][0] > 0
    synct = load_segmenter(result.run_dir / "seg_synct/model")
    pseudo = training[2][1][-3:]  # the 3 unlabelled CTs, labelled by the teacher at segmentation.threshold
    assert all(np.array_equal(mask, synct.segment(image, threshold=0.5)) for image, mask in pseudo)
    calibrated = [(synct.segment(image) == 1).sum() for image, _ in pseudo]  # what the run outputs
    assert np.mean(calibrated) == synct.info["calibration"]["target_volumes"][0]
    report = result.report.read_text()
    assert "Threshold calibration" in report
    assert all(f"<td>{method}</td>" in report for method in ("synct", "adabn", "self_training"))

    training.clear()
    run_pipeline(config, resume=True)
    assert training == []
