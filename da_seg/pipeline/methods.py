"""The segmentation methods a run compares, each trained (or adapted) in its own resumable stage.

`train_methods` gives the SynCT-trained segmenter (the paper's method) and the configured baselines: trained on the
source images as they are or with random intensity remapping, on labelled target images (the oracle), on SynCT plus
pseudo-labelled target images (self-training), the SynCT segmenter with the target images' batch-norm statistics
(AdaBN), the SynCT segmenter averaged with the source segmenter applied through the translator's inverse
(two-way), and the segmenter a label-aware translator trained jointly. Every segmenter of a run, the selection audit's
included, trains through `fit_segmenter` with the same seed and runtime switches.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from da_seg.data import PreparedCase
from da_seg.distributed import is_main
from da_seg.pipeline.stages import fingerprint
from da_seg.pipeline.upstream import SEGMENTER_STAGE_VERSION, SYNCT_TEST, Method, Upstream
from da_seg.segmentation import (
    Segmenter,
    SegmenterEnsemble,
    TrainedSegmenter,
    TwoWaySegmenter,
    adapt_batch_norm,
    cross_validate,
    load_segmenter,
    match_source_volume,
    mean_volumes,
    train_segmenter,
)

ADABN_STAGE_VERSION = 1
TWO_WAY_STAGE_VERSION = 1


def train_methods(up: Upstream, segmentation: Any = None, baselines: bool = True, tag: str = "") -> list[Method]:
    """The SynCT-trained segmenter and the configured baselines, in this order: no_adaptation,
    domain_randomisation, oracle, the translator's ``joint`` segmenter (when it has one), adabn, self_training,
    two_way.

    With ``segmentation.folds = k > 1`` each method is cross-validated over all its subjects (the held-out
    SynCT / MR test set becomes the out-of-fold predictions) and segments the target images with its k models'
    ensemble; with ``segmentation.members = k > 1`` each method is the mean of k models trained on the same cases
    with different seeds (tested as one on the held-out set).
    """
    config, task, dataset = up.config, up.task, up.dataset
    seg = segmentation or config.segmentation
    seg_key = seg.stage_settings(exclude={"randomise", "self_training_rounds"})
    source = task.source_modality
    plan = [("synct", SYNCT_TEST, up.synct_train, up.synct_test, SYNCT_TEST, up.synct_key, seg)]
    if baselines and "no_adaptation" in config.baselines:
        plan.append(("no_adaptation", source, dataset.source_train, dataset.source_test, source, up.data_key, seg))
    if baselines and "domain_randomisation" in config.baselines:  # source images, intensities remapped at random
        randomised = seg.model_copy(update={"augment": [*seg.augment, *seg.randomise]})
        key = fingerprint(up.data_key, seg.randomise)
        plan.append(
            ("domain_randomisation", source, dataset.source_train, dataset.source_test, source, key, randomised)
        )
    if baselines and "oracle" in config.baselines and dataset.target_labelled:
        oracle_key = fingerprint(up.data_key, dataset.stamp("target_labelled"))
        plan.append(("oracle", task.target_modality, dataset.target_labelled, [], None, oracle_key, seg))
    methods = []
    for name, train_on, train, test, test_on, upstream_key, settings in plan:
        key = _segmenter_key(up, seg, upstream_key, seg_key)
        model, tests = _train(up, f"seg_{name}{tag}", key, settings, train, test)
        methods.append(
            Method(name + tag, train_on, model, _identity(seg, key, model), test_on if tests else None, tests)
        )
    if hasattr(up.translator, "jointly_trained"):
        methods.append(_joint_method(up, seg, tag))
    if baselines and "adabn" in config.baselines and dataset.target:
        methods.append(_adabn_method(up, methods[0], seg, tag))
    if baselines and "self_training" in config.baselines and dataset.target:
        methods.append(_self_training_method(up, methods[0], seg, seg_key, tag))
    if baselines and "two_way" in config.baselines:
        source_model = next(m for m in methods if m.name == "no_adaptation" + tag)
        methods.append(_two_way_method(up, methods[0], source_model, tag))
    return methods


def _self_training_method(up: Upstream, teacher: Method, seg: Any, seg_key: Any, tag: str) -> Method:
    """Self-training (ours to offer; pseudo-labelling as in Zou et al. 2018): the SynCT segmenter labels the
    unlabelled target images, and a new segmenter trains on the SynCT and those pseudo-labelled target images;
    each of ``segmentation.self_training_rounds`` rounds takes the previous round's segmenter as its teacher.

    The teacher labels at ``segmentation.threshold`` even when calibrated (ours): its confident voxels teach, and the
    calibrated threshold sets only what the method outputs. Calibrated pseudo-labels gave worse students on the
    prostate phantom (benchmarks/RESULTS.md, "Threshold calibration")."""
    calibrated = [] if seg.calibrate == "none" else [seg.threshold]  # what the labels depend on; old keys kept
    for round_ in range(1, seg.self_training_rounds + 1):
        pseudo = [replace(c, mask=teacher.model.segment(c.image, threshold=seg.threshold)) for c in up.dataset.target]
        upstream = fingerprint(teacher.key, up.dataset.stamp("target"), "pseudo-labels", *calibrated)
        key = _segmenter_key(up, seg, upstream, seg_key)
        stage = "seg_self_training" + ("" if round_ == 1 else f"_{round_}") + tag
        model, tests = _train(up, stage, key, seg, up.synct_train + pseudo, up.synct_test)
        key = _identity(seg, key, model)
        teacher = Method("self_training" + tag, SYNCT_TEST, model, key, SYNCT_TEST if tests else None, tests)
    return teacher


def _joint_method(up: Upstream, seg: Any, tag: str) -> Method:
    """The segmenter a label-aware translator trained with its generators (``jointly_trained``), as method
    ``joint``: saved with the run's target domain and inference defaults, tested on the held-out SynCT."""
    defaults = seg.inference_defaults()
    key = fingerprint(up.synct_key, *defaults.values(), SEGMENTER_STAGE_VERSION)

    def work(folder: Path) -> None:
        joint = up.translator.jointly_trained()
        model = TrainedSegmenter(
            model=joint["model"],
            spec=joint["spec"],
            context=joint["context"],
            classes=joint["classes"],
            device=up.device,
            precision=up.config.runtime.precision,
            domain=up.dataset.target_domain.settings,
            defaults=defaults,
        )
        model.save(folder / "model")

    folder = up.stages.run(f"seg_joint{tag}", key, work)
    model = load_segmenter(folder / "model", device=up.device)
    return Method("joint" + tag, SYNCT_TEST, model, key, SYNCT_TEST, [(model, up.synct_test)])


def _adabn_method(up: Upstream, synct: Method, seg: Any, tag: str) -> Method:
    """AdaBN (Li et al. 2016; ours to offer): the SynCT segmenter (each member of an ensemble) with the
    batch-norm statistics of the unlabelled target images, taken over shuffled batches through the segmenter's
    training augmentation (`adapt_batch_norm`)."""
    from da_seg.augment import build_augmentation

    key = fingerprint(synct.key, up.dataset.stamp("target"), seg.augment, ADABN_STAGE_VERSION)

    def work(folder: Path) -> None:
        torch.manual_seed(up.config.seed)
        images, augment = [c.image for c in up.dataset.target], build_augmentation(seg.augment)
        model = synct.model
        if isinstance(model, SegmenterEnsemble):
            members = [adapt_batch_norm(m, images, augment, seed=up.config.seed) for m in model.members]
            _calibrate(up, seg, SegmenterEnsemble(members)).save(folder / "model", **model.info)
        else:
            _calibrate(up, seg, adapt_batch_norm(model, images, augment, seed=up.config.seed)).save(folder / "model")

    folder = up.stages.run(f"seg_adabn{tag}", key, work)
    model = load_segmenter(folder / "model", device=up.device)
    if _folds(model):  # each fold's model on its own fold
        tests = [(member, cases) for member, (_, cases) in zip(model.members, synct.tests, strict=False)]
    else:
        tests = [(model, cases) for _, cases in synct.tests]
    return Method("adabn" + tag, SYNCT_TEST, model, _identity(seg, key, model), SYNCT_TEST if tests else None, tests)


def _two_way_method(up: Upstream, target: Method, source: Method, tag: str) -> Method:
    """Two-way (ours to offer): the SynCT segmenter on the real target image averaged with the source-trained
    segmenter on the image translated back by the translator's inverse (`TwoWaySegmenter`); trains nothing."""
    key = fingerprint(target.key, source.key, TWO_WAY_STAGE_VERSION)  # target.key covers the translator

    def work(folder: Path) -> None:
        TwoWaySegmenter(target.model, source.model, up.translator).save(folder / "model")

    folder = up.stages.run(f"seg_two_way{tag}", key, work)
    model = load_segmenter(folder / "model", device=up.device)
    return Method("two_way" + tag, f"{target.train_on} + {source.train_on}", model, key, None, [])


def _training_options(up: Upstream, progress: bool = True) -> dict[str, Any]:
    """What every segmenter of a run trains with: seed, runtime switches, and the target domain it will segment,
    saved with the model so `daseg predict` prepares a raw target image exactly as the run did."""
    runtime = up.config.runtime
    return {
        "device": up.device,
        "precision": runtime.precision,
        "seed": up.config.seed,
        "classes": up.task.classes,
        "domain": up.dataset.target_domain,
        "progress": progress,
        "channels_last": runtime.layout("segmenter"),
        "compile": runtime.compile,
    }


def fit_segmenter(
    up: Upstream, seg: Any, cases: list, workdir: Path, progress: bool = True, member: int = 0
) -> TrainedSegmenter:
    """Every single segmenter of a run (methods and audit) trains through here: same seed and runtime switches
    (member ``i`` of a ``segmentation.members`` ensemble: the run's seed + i)."""
    options = _training_options(up, progress)
    options["seed"] += member
    return train_segmenter(seg.model, cases, seg, workdir=workdir, **options)


def _train(
    up: Upstream, name: str, key: str, seg: Any, train: list[PreparedCase], test: list[PreparedCase]
) -> tuple[Segmenter, list[tuple[Segmenter, list[PreparedCase]]]]:
    """Train one method (or cross-validate it) in stage ``name``; returns the model and its in-domain tests."""
    cases = train + test

    def work(folder: Path) -> None:
        if seg.folds == 1:
            pairs = [(c.image, c.mask) for c in train]
            models = [fit_segmenter(up, seg, pairs, folder / f"work{i or ''}", member=i) for i in range(seg.members)]
            if is_main():
                if seg.members == 1:
                    _calibrate(up, seg, models[0]).save(folder / "model")
                else:
                    _calibrate(up, seg, SegmenterEnsemble(models)).save(
                        folder / "model", seeds=[up.config.seed + i for i in range(seg.members)]
                    )
            return
        pairs = [(c.image, c.mask) for c in cases]
        results = cross_validate(
            seg.model, pairs, seg, folds=seg.folds, workdir=folder / "work", **_training_options(up)
        )
        if not is_main():
            return
        members = [TrainedSegmenter.load(r.model_dir, device="cpu") for r in results]
        folds = [
            {
                "fold": r.fold,
                "train": [cases[j].id for j in r.train_cases],
                "validation": [cases[j].id for j in r.val_cases],
                "test": [cases[j].id for j in r.test_cases],
                "validation_dice": r.val_dice,
                "test_dice": r.test_dice,
            }
            for r in results
        ]
        _calibrate(up, seg, SegmenterEnsemble(members)).save(folder / "model", folds=folds)

    folder = up.stages.run(name, key, work, collective=True)
    model = load_segmenter(folder / "model", device=up.device)
    folds = _folds(model)
    if not folds:  # one model, or members on the same cases: tested as one
        return model, [(model, test)] if test else []
    by_id = {c.id: c for c in cases}
    tests = [(member, [by_id[i] for i in fold["test"]]) for member, fold in zip(model.members, folds, strict=True)]
    return model, tests if test else []


def _segmenter_key(up: Upstream, seg: Any, upstream: str, seg_key: Any) -> str:
    """A segmenter stage's key: what it trained on, its settings, and the images and labels its threshold is
    calibrated on when it is."""
    key = fingerprint(upstream, seg_key, up.config.runtime.precision, SEGMENTER_STAGE_VERSION)
    return key if seg.calibrate == "none" else fingerprint(key, up.dataset.stamp("source", "target"))


def _identity(seg: Any, key: str, model: Segmenter) -> str:
    """A method's key for the stages downstream of it (pseudo-labels, predictions, evaluation): its training
    stage's key and, when calibrated, the inference defaults it loaded with, so what it segments with is covered."""
    return key if seg.calibrate == "none" else fingerprint(key, model.defaults)


def _calibrate(up: Upstream, seg: Any, model: Segmenter) -> Segmenter:
    """``model`` with its threshold calibrated as ``segmentation.calibrate`` says (`match_source_volume`)."""
    if seg.calibrate == "none":
        return model
    source = [c.mask for c in up.dataset.source_train + up.dataset.source_test]
    wanted = mean_volumes(source, up.task.classes)
    calibration = match_source_volume(model, [c.image for c in up.dataset.target], wanted)
    # new dicts, not updates: an adapted copy (`adapt_batch_norm`) shares them with the model it came from
    model.defaults = {**model.defaults, "threshold": calibration.threshold}
    model.info = {**model.info, "calibration": {"rule": seg.calibrate, **asdict(calibration)}}
    return model


def _folds(model: Segmenter) -> list[dict[str, Any]] | None:
    """The folds of a cross-validation ensemble (each member has its own test fold); None for one model or members."""
    return model.info.get("folds") if isinstance(model, SegmenterEnsemble) else None
