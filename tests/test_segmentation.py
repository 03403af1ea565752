"""The one segmenter trainer, whole-volume inference, checkpoints/resume, cross-validation and `daseg predict`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from typer.testing import CliRunner

from da_seg.cli import app
from da_seg.config import SegmentationConfig
from da_seg.data import Domain
from da_seg.errors import ConfigError, DataError
from da_seg.metrics.segmentation import dice
from da_seg.registry import INTENSITIES
from da_seg.segmentation import (
    Segmenter,
    TrainedSegmenter,
    cross_validate,
    fold_indices,
    largest_components,
    predict_file,
    probabilities_to_labels,
    split_cases,
    targets,
    train_segmenter,
)
from da_seg.volume import Volume, read_volume, write_volume

TINY = {"name": "resunet25d", "base": 4, "depth": 2}


def blob_case(seed: int, z: int = 5, size: int = 16, labels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc (label 1) and, for ``labels=2``, a dark square (label 2) on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    mask = np.zeros((z, size, size), np.uint8)
    mask[:, ((yy - cy) ** 2 + (xx - cx) ** 2) < (size // 5) ** 2] = 1
    if labels == 2:
        mask[:, 1:4, 1:4] = 2
    image = np.select([mask == 1, mask == 2], [0.6, -0.9], -0.2) + 0.05 * rng.standard_normal(mask.shape)
    return image.astype(np.float32), mask


def settings(**kw) -> SegmentationConfig:
    return SegmentationConfig(**{"epochs": 3, "batch_size": 4, "lr": 3e-3, "augment": [], **kw})


@pytest.mark.parametrize(
    "spec",
    [
        TINY,
        {"name": "smp", "arch": "Unet", "encoder": "resnet18", "encoder_depth": 3},
        {"name": "smp", "arch": "FPN", "encoder": "tu-resnet10t", "encoder_depth": 3},
        {"name": "smp", "arch": "UnetPlusPlus", "encoder": "resnet18", "encoder_depth": 3},
    ],
    ids=lambda s: "-".join(str(v) for v in s.values()),
)
def test_one_trainer_trains_every_kind_of_segmenter(spec, tmp_path, device) -> None:
    cases = [blob_case(i, size=32) for i in range(3)]
    trained = train_segmenter(
        spec,
        cases,
        settings(epochs=4, context=1),
        workdir=tmp_path,
        device=device,
        iterations_per_epoch=3,
        progress=False,
    )
    losses = [row["loss"] for row in trained.info["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert trained.predict(cases[0][0]).shape == (5, 32, 32)


def test_best_checkpoint_is_kept_by_validation_dice_and_training_resumes(tmp_path) -> None:
    cases = [blob_case(i) for i in range(4)]
    first = train_segmenter(TINY, cases, settings(epochs=2), workdir=tmp_path, device="cpu", progress=False)
    assert [r["epoch"] for r in first.info["history"]] == [1, 2]
    # a rerun with more epochs continues from workdir/last instead of starting again
    trained = train_segmenter(TINY, cases, settings(epochs=4), workdir=tmp_path, device="cpu", progress=False)
    history = trained.info["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    best = max(history, key=lambda r: r["val_dice"])
    assert trained.info["best_val_dice"] == best["val_dice"]
    assert trained.info["epoch"] == best["epoch"]
    meta = json.loads((tmp_path / "model" / "meta.json").read_text())
    assert meta["model"] == TINY and meta["context"] == 1 and meta["classes"] == 1
    with pytest.raises(DataError, match="another segmenter"):
        train_segmenter({**TINY, "base": 8}, cases, settings(epochs=5), workdir=tmp_path, device="cpu", progress=False)


def test_validation_between_epochs_leaves_the_weights_trainable_in_fp32_nhwc(tmp_path) -> None:
    """Regression: `predict` converted the model to NHWC inside inference mode; weights whose layout is ambiguous
    (a 1-channel 1x1 shortcut conv with context 0) were copied there as inference tensors, and the next epoch's
    backward failed. In bf16 autocast copies every weight first, so only fp32 runs met it (CPUs without bf16 kernels,
    GPUs)."""
    cases = [blob_case(i) for i in range(4)]
    trained = train_segmenter(
        TINY, cases, settings(epochs=2, context=0), workdir=tmp_path, device="cpu", precision="fp32",
        channels_last=True, progress=False,
    )  # fmt: skip
    assert [r["epoch"] for r in trained.info["history"]] == [1, 2]
    assert not any(p.is_inference() for p in trained.model.parameters())


EXAMPLE_AUGMENT = [{"name": "random_ratio_crop", "min_ratio": 0.5}, {"name": "rotation", "degrees": 10.0}, "flip"]


@pytest.mark.parametrize(
    "precision, augment",
    [
        ("fp32", []),
        ("bf16", []),
        ("fp32", EXAMPLE_AUGMENT),
        ("fp32", [{"name": "gaussian_noise", "std": 0.05}, "flip"]),
    ],
    ids=["fp32", "bf16", "fp32-fused-augmentation", "fp32-kornia-pipeline"],
)
def test_compiled_whole_step_has_no_graph_break_and_matches_eager(tmp_path, precision, augment) -> None:
    """``compile`` traces gathering the slices, a fused augmentation, loss, gradients and Adam as one graph
    (``fullgraph=True``: a break is an error; a kornia pipeline runs before the graph); run by aot_eager's eager
    kernels, the losses and weights follow the eager run's, random draws included."""
    import torch._dynamo

    cases = [blob_case(i) for i in range(3)]
    runs = {}
    for compile in (False, "aot_eager"):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        trained = train_segmenter(
            TINY, cases, settings(epochs=2, batch_size=2, augment=augment), workdir=tmp_path / str(compile),
            device="cpu", precision=precision, progress=False, compile=compile, iterations_per_epoch=3,
        )  # fmt: skip
        runs[compile] = ([r["loss"] for r in trained.info["history"]], trained.model.state_dict())
    assert not torch._dynamo.utils.counters["graph_break"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    tol = 1e-4 if precision == "fp32" else 2e-2
    assert runs["aot_eager"][0] == pytest.approx(runs[False][0], rel=tol, abs=tol)
    eager, compiled = runs[False][1], runs["aot_eager"][1]
    assert all(torch.allclose(eager[k].float(), compiled[k].float(), atol=50 * tol) for k in eager)


def test_a_fused_augmentation_runs_inside_the_compiled_step(tmp_path) -> None:
    """With a fused augmentation the compiled graph holds the data path (operators captured by dynamo: many more
    than without one); a kornia pipeline, which does not trace whole, runs before the graph (about as many as none)."""
    import torch._dynamo

    captured = {}
    for name, augment in [("none", []), ("fused", EXAMPLE_AUGMENT), ("pipeline", [{"name": "gaussian_noise"}])]:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        train_segmenter(
            TINY, [blob_case(i) for i in range(3)], settings(epochs=1, batch_size=2, augment=augment),
            workdir=tmp_path / name, device="cpu", progress=False, compile="aot_eager", iterations_per_epoch=2,
        )  # fmt: skip
        captured[name] = torch._dynamo.utils.counters["stats"]["calls_captured"]
    assert abs(captured["pipeline"] - captured["none"]) < 20  # measured: 213 and 201 (the gather, the dtypes)
    assert captured["fused"] > captured["none"] + 200  # the draw, the matrices, two warps (measured: 523)


def test_split_is_by_case_and_folds_cover_every_case() -> None:
    train, val = split_cases(10, 0.2, seed=1)
    assert len(val) == 2 and sorted(train + val) == list(range(10))
    assert split_cases(1, 0.2) == ([0], [])
    folds = fold_indices(7, 3, seed=0)
    assert sorted(i for f in folds for i in f) == list(range(7)) and sorted(map(len, folds)) == [2, 2, 3]
    with pytest.raises(DataError, match="folds"):
        fold_indices(3, 6)


def test_cross_validate_never_selects_on_the_fold_it_reports(tmp_path, monkeypatch) -> None:
    """Each fold picks its checkpoint on an inner split of its training cases; the held-out fold is only scored.

    The cases handed to `train_segmenter` (training and validation) are recorded by identity: none is a test case.
    """
    import da_seg.segmentation.train as train_module

    cases = [blob_case(i) for i in range(6)]
    seen: list[set[int]] = []
    real = train_module.train_segmenter

    def spy(spec, train, settings_, *, val_cases, **kw):
        seen.append({id(c[0]) for c in [*train, *val_cases]})
        return real(spec, train, settings_, val_cases=val_cases, **kw)

    monkeypatch.setattr(train_module, "train_segmenter", spy)
    results = cross_validate(TINY, cases, settings(epochs=1), folds=3, workdir=tmp_path, device="cpu", progress=False)
    assert [r.fold for r in results] == [0, 1, 2]
    assert sorted(i for r in results for i in r.test_cases) == list(range(6))
    for r, used in zip(results, seen, strict=True):
        assert r.val_cases and set(r.val_cases) <= set(range(6)) - set(r.test_cases)
        assert set(r.train_cases).isdisjoint(r.val_cases) and set(r.train_cases).isdisjoint(r.test_cases)
        assert used.isdisjoint({id(cases[j][0]) for j in r.test_cases})
        assert 0.0 <= r.test_dice <= 1.0
        assert TrainedSegmenter.load(r.model_dir, "cpu").info["best_val_dice"] == pytest.approx(r.val_dice)
    assert len(json.loads((tmp_path / "folds.json").read_text())) == 3
    with pytest.raises(DataError, match="fewer than 2 training cases"):
        cross_validate(TINY, cases[:2], settings(epochs=1), folds=2, workdir=tmp_path / "x", device="cpu")


def test_predict_segment_save_load(tmp_path) -> None:
    cases = [blob_case(i) for i in range(3)]
    trained = train_segmenter(TINY, cases, settings(epochs=2, context=2), workdir=tmp_path / "w", progress=False)
    image = cases[0][0][:3]  # fewer slices than the batch and than 2c+1: edges replicate
    prob = trained.predict(image)
    assert prob.shape == image.shape and prob.dtype == np.float32 and 0 <= prob.min() <= prob.max() <= 1
    assert trained.predict(image, tta_flip=True).shape == image.shape
    labels = trained.segment(image, threshold=0.5, largest_component=False)
    assert labels.dtype == np.uint8 and np.array_equal(labels, (prob >= 0.5).astype(np.uint8))
    trained.save(tmp_path / "copy")
    again = TrainedSegmenter.load(tmp_path / "copy", trained.device)  # trained on CUDA where there is one
    assert again.context == 2
    np.testing.assert_allclose(again.predict(image), prob, atol=1e-6)
    on_cpu = TrainedSegmenter.load(tmp_path / "copy", "cpu")  # another device: the same up to rounding
    np.testing.assert_allclose(on_cpu.predict(image), prob, atol=1e-4)


def test_several_classes_train_and_segment(tmp_path) -> None:
    cases = [blob_case(i, labels=2) for i in range(3)]
    trained = train_segmenter(TINY, cases, settings(epochs=1), workdir=tmp_path, classes=2, progress=False)
    assert trained.predict(cases[0][0]).shape == (2, 5, 16, 16)
    assert set(np.unique(trained.segment(cases[0][0]))) <= {0, 1, 2}


def test_targets_labels_and_largest_component() -> None:
    masks = torch.tensor([[[[0, 1], [2, 1]]]], dtype=torch.uint8)
    assert targets(masks, 1).tolist() == [[[[0.0, 1.0], [1.0, 1.0]]]]
    assert targets(masks, 2).tolist() == [[[[0.0, 1.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]]]]
    prob = np.zeros((2, 1, 3, 3), np.float32)
    prob[0, 0, 0, 0], prob[1, 0, 0, 0] = 0.7, 0.9  # both above threshold: the more probable label wins
    prob[0, 0, 2, 2] = 0.4  # below threshold: background
    assert probabilities_to_labels(prob, 0.5, False)[0].tolist() == [[2, 0, 0], [0, 0, 0], [0, 0, 0]]
    labels = np.zeros((3, 6, 6), np.uint8)
    labels[0, 0, 0] = 1  # an isolated false positive
    labels[1:3, 2:5, 2:5] = 1
    labels[0, 5, 5] = 2
    kept = largest_components(labels)
    assert kept[0, 0, 0] == 0 and kept[1:3, 2:5, 2:5].all() and kept[0, 5, 5] == 2


def test_most_confident_component_keeps_the_organ_beside_a_larger_doubtful_region(tmp_path) -> None:
    """The failure seen on the prostate phantom (benchmarks/RESULTS.md): a larger, less confident false region
    beside the organ. ``largest`` keeps the false region; ``most_confident`` keeps the organ, per structure."""
    prob = np.zeros((2, 4, 8, 8), np.float32)
    prob[0, 1:3, 1:3, 1:3] = 0.95  # the organ: 8 voxels, confident
    prob[0, 0:4, 5:8, 5:8] = 0.6  # a false region: 36 voxels, doubtful
    prob[1, 0:2, 5:8, 0:2] = 0.7  # structure 2, one component: kept by either rule
    largest = probabilities_to_labels(prob, 0.5, component_rule="largest")
    confident = probabilities_to_labels(prob, 0.5, component_rule="most_confident")
    assert (largest == 1).sum() == 36 and largest[1, 1, 1] == 0
    assert (confident == 1).sum() == 8 and confident[1, 1, 1] == 1 and confident[0, 6, 6] == 0
    assert (largest == 2).sum() == (confident == 2).sum() == 12
    binary = probabilities_to_labels(prob[0], 0.5, component_rule="most_confident")  # (z, H, W) probabilities
    assert binary.sum() == 8 and binary[1, 1, 1] == 1
    with pytest.raises(ConfigError, match="component_rule 'biggest'"):
        probabilities_to_labels(prob, 0.5, component_rule="biggest")


class _FixedProbabilities(Segmenter):
    """A segmenter whose probabilities are given: what `segment` does with them is under test."""

    multiclass = "sigmoid"

    def __init__(self, probabilities: np.ndarray, rule: str) -> None:
        self.probabilities, self.defaults = probabilities, {"component_rule": rule}

    def predict(self, image: np.ndarray, tta_flip: bool = False) -> np.ndarray:
        return self.probabilities


def test_segment_overrides_the_saved_component_rule() -> None:
    """A model saved with one rule can be applied with the other (``daseg predict --component-rule``)."""
    prob = np.zeros((4, 8, 8), np.float32)
    prob[1:3, 1:3, 1:3] = 0.95  # the organ: 8 voxels, confident
    prob[0:4, 5:8, 5:8] = 0.6  # a false region: 36 voxels, doubtful
    model = _FixedProbabilities(prob, rule="largest")
    assert model.segment(prob).sum() == 36
    assert model.segment(prob, component_rule="most_confident").sum() == 8
    assert _FixedProbabilities(prob, "most_confident").segment(prob, component_rule="largest").sum() == 36


def test_predict_refuses_an_unknown_component_rule(tmp_path, ct_model) -> None:
    model_dir, _ = ct_model
    write_volume(Volume(np.full((6, 20, 24), -100, np.int16)), tmp_path / "ct.nii.gz")
    args = ["predict", "--model", str(model_dir), str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "m.nii.gz")]
    bad = CliRunner().invoke(app, [*args, "--component-rule", "biggest"])
    assert bad.exit_code == 2 and "--component-rule" in bad.output and not (tmp_path / "m.nii.gz").exists()
    good = CliRunner().invoke(app, [*args, "--component-rule", "most_confident"])
    assert good.exit_code == 0, good.output
    assert read_volume(tmp_path / "m.nii.gz").shape == (6, 20, 24)


def test_the_component_rule_is_saved_with_the_model(tmp_path) -> None:
    """``segmentation.component_rule`` trains into the model's inference defaults, which `segment` applies."""
    trained = train_segmenter(
        TINY, [blob_case(i) for i in range(3)], settings(epochs=1, component_rule="most_confident"),
        workdir=tmp_path, device="cpu", progress=False,
    )  # fmt: skip
    assert trained.defaults["component_rule"] == "most_confident"
    assert TrainedSegmenter.load(tmp_path / "model").defaults["component_rule"] == "most_confident"
    with pytest.raises(ValueError, match="component_rule"):
        SegmentationConfig(component_rule="biggest")


def _domain() -> Domain:
    return Domain((4.0, 3.0, 3.0), (32, 32), INTENSITIES.build({"name": "ct_window"}))


@pytest.fixture(scope="module")
def ct_model(tmp_path_factory):
    """A tiny model trained for two steps in a CT domain (geometry, not accuracy, is under test)."""
    work = tmp_path_factory.mktemp("ct_model")
    cases = [blob_case(i, size=32) for i in range(2)]
    trained = train_segmenter(
        TINY, cases, settings(epochs=1), workdir=work, iterations_per_epoch=2, domain=_domain(), progress=False
    )
    return work / "model", trained


def test_predict_file_keeps_the_input_geometry(tmp_path, ct_model) -> None:
    model_dir, _ = ct_model
    rng = np.random.default_rng(0)
    array = rng.normal(0, 300, (9, 27, 35)).astype(np.int16)
    angle = np.deg2rad(20)
    direction = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0)
    ct = Volume(array, spacing=(0.9, 1.3, 3.5), origin=(-12.5, 40.0, 7.25), direction=direction)
    write_volume(ct, tmp_path / "ct.nii.gz")
    out = predict_file(model_dir, tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz", device="cpu")
    src, mask = sitk.ReadImage(str(tmp_path / "ct.nii.gz")), sitk.ReadImage(str(out))
    assert mask.GetSize() == src.GetSize() and mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSpacing() == src.GetSpacing()
    assert mask.GetOrigin() == src.GetOrigin()
    assert mask.GetDirection() == src.GetDirection()


def test_predict_file_on_the_real_ct(tmp_path, ct_model, real_data) -> None:
    model_dir, _ = ct_model
    ct = real_data / "pelvis_ct" / "totalsegmentator_example_ct.nii.gz"
    out = predict_file(model_dir, ct, tmp_path / "mask.nii.gz", device="cpu", tta_flip=True)
    src, mask = read_volume(ct), read_volume(out)
    assert mask.shape == src.shape and set(np.unique(mask.array)) <= {0, 1}
    assert (mask.spacing, mask.origin, mask.direction) == (src.spacing, src.origin, src.direction)


def test_predict_command_file_and_folder(tmp_path, ct_model) -> None:
    model_dir, _ = ct_model
    folder = tmp_path / "cts"
    for i, spacing in enumerate([(1.0, 1.0, 3.0), (0.7, 0.8, 2.5)]):
        write_volume(Volume(np.full((6, 20 + i, 24), -100, np.int16), spacing=spacing), folder / f"case{i}.nii.gz")
    runner = CliRunner()
    one = runner.invoke(
        app, ["predict", "--model", str(model_dir), str(folder / "case0.nii.gz"), "-o", str(tmp_path / "m.nii.gz")]
    )
    assert one.exit_code == 0, one.output
    assert read_volume(tmp_path / "m.nii.gz").shape == (6, 20, 24)
    many = runner.invoke(app, ["predict", "--model", str(model_dir), str(folder), "-o", str(tmp_path / "masks")])
    assert many.exit_code == 0, many.output
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["case0.nii.gz", "case1.nii.gz"]
    assert read_volume(tmp_path / "masks" / "case1.nii.gz").shape == (6, 21, 24)
    bad = runner.invoke(app, ["predict", "--model", str(tmp_path / "nope"), str(folder), "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "meta.json" in bad.output


def test_a_model_without_domain_cannot_predict_files(tmp_path) -> None:
    trained = train_segmenter(TINY, [blob_case(0)], settings(epochs=1), workdir=tmp_path, progress=False)
    write_volume(Volume(np.zeros((4, 16, 16), np.int16)), tmp_path / "ct.nii.gz")
    with pytest.raises(DataError, match="no saved data domain"):
        predict_file(trained, tmp_path / "ct.nii.gz", tmp_path / "m.nii.gz")


def test_softmax_targets_and_argmax_labels() -> None:
    masks = torch.tensor([[[[0, 1], [2, 1]]]], dtype=torch.uint8)
    one_hot = targets(masks, 2, "softmax")
    assert one_hot.shape == (1, 3, 2, 2)
    assert one_hot[0].argmax(0).tolist() == [[0, 1], [2, 1]] and one_hot.sum(1).eq(1).all()
    # structure probabilities of three voxels; the background is what they leave
    prob = np.array([[[[0.3, 0.2, 0.6]]], [[[0.3, 0.45, 0.1]]]], np.float32)  # (K=2, z=1, 1, 3)
    assert probabilities_to_labels(prob, softmax=True, largest_component=False).tolist() == [[[0, 2, 1]]]
    # a threshold of 0.5 would call the middle voxel background: softmax mode does not threshold
    assert probabilities_to_labels(prob, 0.5, largest_component=False).tolist() == [[[0, 0, 1]]]
    binary = np.array([[[0.4, 0.6]]], np.float32)  # one structure: argmax is p >= 0.5
    assert probabilities_to_labels(binary, softmax=True, largest_component=False).tolist() == [[[0, 1]]]


def test_softmax_mode_trains_saves_and_segments(tmp_path) -> None:
    cases = [blob_case(i, labels=2) for i in range(4)]
    options = settings(epochs=4, multiclass="softmax", loss={"name": "ce_dice"})
    trained = train_segmenter(
        TINY, cases[:3], options, workdir=tmp_path, classes=2, iterations_per_epoch=20, progress=False
    )
    image, mask = cases[3]
    assert trained.multiclass == "softmax"
    logits = trained.model(torch.zeros(1, 3, 16, 16, device=trained.device))
    assert logits.shape == (1, 3, 16, 16)  # background + 2 structures
    prob = trained.predict(image)
    assert prob.shape == (2, 5, 16, 16) and prob.sum(0).max() <= 1 + 1e-5
    labels = trained.segment(image)
    assert dice(labels == 1, mask == 1) > 0.6
    again = TrainedSegmenter.load(tmp_path / "model", "cpu")
    assert again.multiclass == "softmax" and np.array_equal(again.segment(image), labels)


def test_a_softmax_loss_needs_softmax_mode(tmp_path) -> None:
    with pytest.raises(ConfigError, match="multiclass"):
        train_segmenter(TINY, [blob_case(0)], settings(loss={"name": "ce"}), workdir=tmp_path, progress=False)


def test_resuming_from_a_state_without_its_keys_is_one_error(tmp_path) -> None:
    """Issue 43: a ``last/state.pt`` lacking a key (another version's) gave a KeyError traceback on resume."""
    cases, quick = [blob_case(0, z=2)], {"workdir": tmp_path, "val_cases": [], "iterations_per_epoch": 1}
    train_segmenter(TINY, cases, settings(epochs=1), **quick, progress=False)
    state = torch.load(tmp_path / "last/state.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, tmp_path / "last/state.pt")
    with pytest.raises(DataError, match=rf"{tmp_path / 'last/state.pt'}: the training state lacks 'optimizer' .*"
                       rf"delete the folder {tmp_path / 'last'} to retrain"):  # fmt: skip
        train_segmenter(TINY, cases, settings(epochs=2), **quick, progress=False)


class _ExplodingNet(torch.nn.Module):
    """A segmenter whose forward fails, as a buggy plugin's might mid-training."""

    def __init__(self, in_channels: int, classes: int = 1) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom in segmenter")


def _exploding_loss():
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom in loss")

    return loss


def _exploding_augmentation():
    import kornia.augmentation as K

    class Exploding(K.IntensityAugmentationBase2D):
        def __init__(self) -> None:
            super().__init__(p=1.0)

        def apply_transform(self, input, params, flags, transform=None):
            raise RuntimeError("boom in augmentation")

    return Exploding()


@pytest.fixture
def exploding_plugin():
    import types

    from da_seg import hookimpl
    from da_seg.plugins import load_plugins, unload_plugin

    plugin = types.ModuleType("exploding_plugin")
    plugin.register_segmenters = hookimpl(lambda register: register("exploding", _ExplodingNet))
    plugin.register_losses = hookimpl(lambda register: register("exploding", _exploding_loss))
    plugin.register_augmentations = hookimpl(lambda register: register("exploding", _exploding_augmentation))
    load_plugins([plugin])
    yield plugin
    unload_plugin(plugin)


@pytest.mark.parametrize(
    ("model", "options", "culprit"),
    [
        ({"name": "exploding"}, {}, "segmenter 'exploding'"),
        (TINY, {"loss": {"name": "exploding"}}, "loss 'exploding'"),
        (TINY, {"augment": ["flip", "exploding"]}, "augmentation 'exploding'"),
    ],
    ids=["segmenter", "loss", "augmentation"],
)
def test_an_exception_inside_a_component_during_training_names_it(
    tmp_path, exploding_plugin, model, options, culprit
) -> None:
    """Issue 43: a registered component raising mid-training gave a bare traceback naming no component."""
    from da_seg.errors import ComponentError

    with pytest.raises(ComponentError) as info:
        train_segmenter(model, [blob_case(0, z=2)], settings(epochs=1, **options), workdir=tmp_path, val_cases=[],
                        iterations_per_epoch=1, progress=False)  # fmt: skip
    message = str(info.value)
    assert message.startswith(f"{culprit} (plugin 'exploding_plugin', {__file__}:"), message
    kind = culprit.split()[0]
    assert f"failed during training: RuntimeError: boom in {kind}; rerun with --debug" in message
    assert isinstance(info.value.__cause__, RuntimeError) and "\n" not in message
