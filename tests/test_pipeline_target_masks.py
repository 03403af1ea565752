"""The paper's situation: labelled MR, unlabelled CT, CT masks out (`daseg run` then `daseg predict`).

Every run segments every target image it is given and writes the masks on each image's own grid; `daseg predict`
with a model the run trained (single or k-fold ensemble) writes the very same mask; k-fold selects checkpoints on
inner splits only; real files (an oblique DICOM MR series, a CT whose direction is not identity) go through.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from da_seg import load_config
from da_seg.cli import app
from da_seg.pipeline import run_pipeline
from da_seg.segmentation import load_segmenter
from da_seg.volume import read_volume


def _ct_folder(root: Path, files: list[Path]) -> Path:
    """A user's folder ``root/images/`` holding links to ``files`` (the data is never copied)."""
    (root / "images").mkdir(parents=True)
    for f in files:
        (root / "images" / f.name).symlink_to(f.resolve())
    return root


@pytest.fixture(scope="module")
def unlabelled_run(tmp_path_factory: pytest.TempPathFactory, tiny_config, tiny_phantom_data: Path):
    """Labelled MR and unlabelled CT only: no evaluation folder, no oracle."""
    folder = tmp_path_factory.mktemp("unlabelled")
    data = {"source": tiny_phantom_data / "source", "target": tiny_phantom_data / "target"}
    config = load_config(tiny_config(folder, "nolabels", baselines='["no_adaptation"]', data=data))
    return config, run_pipeline(config)


def test_run_without_ct_labels_writes_a_mask_per_ct_and_method(unlabelled_run, tiny_phantom_data: Path) -> None:
    _, result = unlabelled_run
    cts = sorted((tiny_phantom_data / "target/images").glob("*.nii.gz"))
    assert cts
    for method in ("synct", "no_adaptation"):
        written = sorted((result.run_dir / "predictions" / method).glob("*.nii.gz"))
        assert [p.name for p in written] == [p.name for p in cts]
        for ct, mask_path in zip(cts, written, strict=True):
            mask = read_volume(mask_path)
            assert mask.same_geometry(read_volume(ct), tol=0)
            assert set(np.unique(mask.array).tolist()) <= {0, 1}
    report = (result.run_dir / "report.md").read_text()
    assert "CT masks" in report and "No CT labels were given" in report
    assert "fig_examples.png" in report and "fig_dice_boxplot" not in report  # nothing on CT to box-plot
    assert not [r for r in result.metrics if r["test"] == "CT"]


def test_daseg_predict_with_the_runs_model_writes_the_runs_mask(
    unlabelled_run, tiny_phantom_data: Path, tmp_path: Path
) -> None:
    """The model folder the run trained is enough: it carries its domain, precision and post-processing."""
    _, result = unlabelled_run
    ct = sorted((tiny_phantom_data / "target/images").glob("*.nii.gz"))[0]
    out = tmp_path / "mask.nii.gz"
    model = result.run_dir / "seg_synct/model"
    cli = CliRunner().invoke(app, ["predict", "--model", str(model), str(ct), "-o", str(out)])
    assert cli.exit_code == 0, cli.output
    ours = read_volume(out)
    runs = read_volume(result.run_dir / "predictions/synct" / ct.name)
    assert ours.same_geometry(runs, tol=0) and np.array_equal(ours.array, runs.array)
    assert runs.array.any()  # equal empty masks would show nothing


def test_k_fold_from_the_pipeline_selects_on_inner_splits_and_predicts_with_the_ensemble(
    tmp_path: Path, tiny_config, tiny_phantom_data: Path
) -> None:
    overrides = {"segmentation.folds": 2, "segmentation.epochs": 1}
    config = load_config(tiny_config(tmp_path, "folds", baselines='["adabn"]'), overrides)
    result = run_pipeline(config)
    meta = json.loads((result.run_dir / "seg_synct/model/meta.json").read_text())
    assert meta["component"] == "segmenter_ensemble" and len(meta["members"]) == 2
    subjects = set()
    for fold in meta["folds"]:
        # a fold's checkpoint is chosen on its validation subjects, which are training subjects of that fold only
        assert fold["validation"] and set(fold["validation"]).isdisjoint(fold["test"])
        assert set(fold["train"]).isdisjoint(fold["test"]) and set(fold["train"]).isdisjoint(fold["validation"])
        subjects |= set(fold["test"])
    assert len(subjects) == 4  # every labelled source subject is tested out of fold exactly once
    synct_rows = [r for r in result.metrics if r["test"] == "SynCT" and r["method"] == "synct"]
    assert sorted(r["case"] for r in synct_rows) == sorted(subjects) and {r["fold"] for r in synct_rows} == {0, 1}
    # AdaBN adapts each fold's model and keeps the folds: tested out of fold on the same subjects
    adabn = json.loads((result.run_dir / "seg_adabn/model/meta.json").read_text())
    assert adabn["component"] == "segmenter_ensemble" and adabn["folds"] == meta["folds"]
    adabn_rows = [r for r in result.metrics if r["test"] == "SynCT" and r["method"] == "adabn"]
    assert sorted((r["case"], r["fold"]) for r in adabn_rows) == sorted((r["case"], r["fold"]) for r in synct_rows)
    report = (result.run_dir / "report.md").read_text()
    assert "The paper's test" in report and "Mann-Whitney U" in report and "p = " in report
    assert "Cross-validation folds" in report
    # daseg predict takes the ensemble folder and writes the run's mask
    ct = sorted((tiny_phantom_data / "evaluation/images").glob("*.nii.gz"))[0]
    out = tmp_path / "ensemble_mask.nii.gz"
    model = result.run_dir / "seg_synct/model"
    cli = CliRunner().invoke(app, ["predict", "--model", str(model), str(ct), "-o", str(out)])
    assert cli.exit_code == 0, cli.output
    assert np.array_equal(read_volume(out).array, read_volume(result.run_dir / "predictions/synct" / ct.name).array)


def test_members_average_models_of_other_seeds_trained_on_the_same_cases(
    tmp_path: Path, tiny_config, tiny_phantom_data: Path
) -> None:
    """``segmentation.members = 2``: each method the mean of two models on the same cases (seeds seed, seed + 1);
    member 0 is the single model a run without members trains, the pair is tested as one and predicts as one."""
    configs = {
        k: load_config(tiny_config(tmp_path / str(k), "m", baselines='["adabn"]'), {"segmentation.members": k})
        for k in (1, 2)
    }
    runs = {k: run_pipeline(config) for k, config in configs.items()}
    result = runs[2]
    meta = json.loads((result.run_dir / "seg_synct/model/meta.json").read_text())
    assert meta["component"] == "segmenter_ensemble" and meta["members"] == ["member0", "member1"]
    assert meta["seeds"] == [configs[2].seed, configs[2].seed + 1] and "folds" not in meta
    pair, single = (
        load_segmenter(result.run_dir / "seg_synct/model"),
        load_segmenter(runs[1].run_dir / "seg_synct/model"),
    )
    weights = [m.model.state_dict() for m in pair.members]
    assert all(torch.equal(v, weights[0][k]) for k, v in single.model.state_dict().items())
    assert not all(torch.equal(v, weights[1][k]) for k, v in weights[0].items())
    rows = {m: [r for r in result.metrics if r["test"] == "SynCT" and r["method"] == m] for m in ("synct", "adabn")}
    single_rows = [r for r in runs[1].metrics if r["test"] == "SynCT" and r["method"] == "synct"]
    assert sorted(r["case"] for r in rows["synct"]) == sorted(r["case"] for r in single_rows)  # the held-out set, once
    assert sorted(r["case"] for r in rows["adabn"]) == sorted(r["case"] for r in single_rows)
    assert not any("fold" in r for r in rows["synct"] + rows["adabn"])
    adabn = json.loads((result.run_dir / "seg_adabn/model/meta.json").read_text())
    assert adabn["component"] == "segmenter_ensemble" and len(adabn["members"]) == 2
    ct = sorted((tiny_phantom_data / "evaluation/images").glob("*.nii.gz"))[0]
    out = tmp_path / "members_mask.nii.gz"
    cli = CliRunner().invoke(
        app, ["predict", "--model", str(result.run_dir / "seg_synct/model"), str(ct), "-o", str(out)]
    )
    assert cli.exit_code == 0, cli.output
    assert np.array_equal(read_volume(out).array, read_volume(result.run_dir / "predictions/synct" / ct.name).array)


def test_real_files_through_the_pipeline(tmp_path: Path, tiny_config, tiny_phantom_data: Path, real_data: Path) -> None:
    """Real CT (direction diag(-1, -1, 1)) as target and as an image to predict; real oblique T2 DICOM series as
    unlabelled source. The labelled source is the tiny phantom's MR (a smoke-test stand-in: no real MR masks here)."""
    ct = real_data / "pelvis_ct/totalsegmentator_example_ct.nii.gz"
    target = _ct_folder(tmp_path / "ct", [ct])
    predict = _ct_folder(tmp_path / "ct_more", [ct])
    mr = tmp_path / "mr_unlabelled"
    (mr / "images").mkdir(parents=True)
    for series in sorted((real_data / "prostatex_t2_dicom").iterdir()):
        (mr / "images" / series.name).symlink_to(series.resolve(), target_is_directory=True)
    data = {"source": tiny_phantom_data / "source", "source_unlabelled": mr, "target": target, "predict": predict}
    config = load_config(tiny_config(tmp_path, "real", baselines="[]", seg_epochs=1, data=data))
    result = run_pipeline(config)
    mask = read_volume(result.run_dir / "predictions/synct/totalsegmentator_example_ct.nii.gz")
    image = read_volume(ct)
    assert mask.shape == image.shape
    assert np.allclose(mask.spacing, image.spacing) and np.allclose(mask.origin, image.origin)
    assert np.allclose(mask.direction, image.direction) and not np.allclose(image.direction, np.eye(3).ravel())
    index = json.loads((result.run_dir / "predictions/index.json").read_text())
    assert [r["case"] for r in index] == ["totalsegmentator_example_ct"]  # target and predict: one image, one mask
    cache = {p.name.rsplit("-", 1)[0] for p in (result.run_dir / "cache").iterdir()}
    assert {"ProstateX-0000_t2_tra", "ProstateX-0218_t2_tra"} <= cache  # the real MR was prepared for the CycleGAN
