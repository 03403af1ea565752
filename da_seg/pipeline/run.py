"""The stages of ``daseg run``: data -> translator -> SynCT -> segmenters -> evaluation -> report.

Every stage writes into the run directory and leaves a ``done.json`` holding a fingerprint of the settings it
depends on (its own and its inputs'). ``--resume`` reuses a stage whose fingerprint matches; the translator and the
segmenters also resume mid-training from their last checkpoint. ``--force`` starts the run directory afresh.

Under ``torchrun --nproc_per_node N -m da_seg run CONFIG`` every rank runs the stages: the translator and segmenter
stages train DDP replicas together (``collective`` stages); rank 0 alone prepares the data cache, writes the run
directory, logs, checkpoints, SynCT, predictions, metrics and the report, while the other ranks wait at barriers.
The run directory must be on a file system every rank sees (one node, or a shared mount across nodes).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from da_seg.api import get_task, validate
from da_seg.config import Config
from da_seg.data import PreparedCase
from da_seg.distributed import barrier, broadcast_object, init_distributed, is_main, local_device
from da_seg.errors import DasegError
from da_seg.extent import extent_line
from da_seg.files import read_json, write_json
from da_seg.pipeline.dataset import Dataset, prepare_dataset, resolve_data
from da_seg.pipeline.domain_gap import DomainSummary, domain_gap_section, summarise, warn_domain_gap
from da_seg.pipeline.evaluation import (
    calibration_section,
    evaluate_methods,
    folds_section,
    paper_test_section,
    predict_targets,
    report_examples,
    statistics_sections,
    synct_fidelity,
    write_metrics,
)
from da_seg.pipeline.methods import fit_segmenter, train_methods
from da_seg.pipeline.stages import Length, Stages, fingerprint, open_run_dir, stage_key
from da_seg.pipeline.upstream import (
    EVALUATION_STAGE_VERSION,
    PREDICTIONS_STAGE_VERSION,
    TRANSLATOR_STAGE_VERSION,
    Upstream,
)
from da_seg.registry import TRANSLATORS, component_errors
from da_seg.segmentation import TrainedSegmenter
from da_seg.task import Task
from da_seg.threads import apply_threads, auto_note
from da_seg.training import resolve_device, resolve_precision, seed_everything, set_deterministic
from da_seg.translators import load_translator, save_domains
from da_seg.volume import write_volume

SYNCT = "synct"


@dataclass
class RunResult:
    """Where a run left its outputs, and its per-method metric rows."""

    run_dir: Path
    report: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def prepare_upstream(config: Config, stages: Stages) -> Upstream:
    """Data -> translator -> SynCT, each stage reused when its fingerprint matches."""
    task = get_task(config)
    device = local_device(resolve_device(config.runtime.device))
    precision = resolve_precision(config.runtime.precision, device)  # "auto" -> what this device runs fastest
    config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"precision": precision})})
    threads = apply_threads(config.runtime.threads)
    if is_main():  # what "auto" resolved to: a timing or a result is read against it (runtime.json)
        resolved = {"device": str(device), "precision": precision, "torch_threads": threads}
        note = auto_note(config.runtime.threads, threads)
        print("runtime: " + ", ".join(f"{k} {v}" for k, v in resolved.items()) + note, flush=True)
        write_json(stages.run_dir / "runtime.json", resolved)
    seed_everything(config.seed)
    set_deterministic(config.runtime.deterministic)
    start = time.perf_counter()
    cache = config.data.cache or stages.run_dir / "cache"
    if is_main():  # rank 0 writes the phantom and the prepared cache; the others then read them
        folders = resolve_data(config, task)
        dataset = prepare_dataset(config, task, folders, cache)
    barrier()
    if not is_main():
        folders = resolve_data(config, task)
        dataset = prepare_dataset(config, task, folders, cache)
    stages.timings["data"] = time.perf_counter() - start
    if is_main():
        if config.data.extent is not None:
            print(extent_line(config.data.extent["name"], dataset.cases_to_segment()), flush=True)
        warn_domain_gap(*_domain_summaries(dataset), (task.source_modality, task.target_modality))
    # every key covers the settings and the files (path, size, mtime) a stage reads, and the stage's code version
    data_key = fingerprint(
        config.data.model_dump(mode="json"), config.task, config.seed, dataset.stamp("source", "source_unlabelled")
    )
    translator_key = fingerprint(
        data_key, dataset.stamp("target"), config.translator, config.runtime.precision, TRANSLATOR_STAGE_VERSION
    )
    translator_dir = stages.run(
        "translator",
        translator_key,
        lambda d: _fit_translator(config, task, dataset, d, device),
        collective=True,
        length=_translator_length(config, data_key, dataset.stamp("target")),
    )
    translator_key = broadcast_object(stage_key(translator_dir) if is_main() else None)  # a continued one's own
    model_dir = select_translator(config, dataset, stages, translator_dir, device)
    translator = load_translator(model_dir, device=device)
    synct_key = fingerprint(translator_key, config.selection.translator)
    synct_dir = stages.run(SYNCT, synct_key, lambda d: _synthesize(translator, dataset, d))
    return Upstream(
        config,
        task,
        device,
        stages,
        dataset,
        translator,
        translator_dir,
        synct_dir,
        _load_synct(synct_dir, dataset.source_train),
        _load_synct(synct_dir, dataset.source_test),
        data_key,
        synct_key,
    )


def select_translator(
    config: Config, dataset: Dataset, stages: Stages, translator_dir: Path, device: torch.device
) -> Path:
    """The translator snapshot the configured label-free criterion ranks first (the final model when none is set)."""
    if config.selection.translator is None:
        return translator_dir / "model"
    from da_seg.selection import best_checkpoint

    def work(folder: Path) -> None:
        best, ranking = best_checkpoint(
            translator_dir / "work",
            config.selection.translator,
            [(c.image, c.mask) for c in dataset.source_test],
            [c.image for c in dataset.target],
            device=device,
        )
        write_json(folder / "selection.json", {"selected": str(best), "ranking": ranking})

    key = fingerprint(read_json(translator_dir / "done.json")["fingerprint"], config.selection.translator)
    folder = stages.run("translator_selection", key, work)
    return Path(read_json(folder / "selection.json")["selected"])


def audit_sections(up: Upstream, translator_dir: Path) -> list[tuple[str, str, str]]:
    """Every saved translator snapshot ranked by each criterion next to its true target Dice (Spearman rho)."""
    config = up.config
    if not config.selection.audit or not up.dataset.evaluation:
        return []
    from da_seg.selection import CheckpointAudit, audit_translator_checkpoints

    seg = config.segmentation

    def segment_fn(cases: list, out: Path) -> TrainedSegmenter:
        return fit_segmenter(up, seg, cases, out, progress=False)

    def work(folder: Path) -> None:
        audit_translator_checkpoints(
            translator_dir / "work",
            [(c.image, c.mask) for c in up.dataset.source_train],
            [c.image for c in up.dataset.target],
            [(c.image, c.mask) for c in up.dataset.evaluation],
            config.selection.criteria,
            segment_fn,
            held_out=[(c.image, c.mask) for c in up.dataset.source_test],
            out_dir=folder / "seg",
            device=up.device,
        ).write(folder)

    key = fingerprint(up.synct_key, seg.stage_settings(), config.selection.criteria)
    return [CheckpointAudit.load(up.stages.run("selection_audit", key, work)).section()]


def run_pipeline(
    config: Config, *, resume: bool = False, force: bool = False, extend_translator: bool = False
) -> RunResult:
    """Run every stage of the configured pipeline and write the report; returns where things are.

    ``extend_translator`` (with ``resume``): a finished translator trained for fewer epochs with otherwise the same
    settings continues from its last checkpoint to ``translator.epochs``, its learning-rate schedule re-derived for
    the new length, instead of training again from scratch; the stage's fingerprint and ``done.json`` record it.
    """
    if extend_translator and not resume:
        raise DasegError("--extend-translator continues the translator of an earlier run: use it with --resume")
    validate(config)
    init_distributed(config.runtime.device)  # joins torchrun's process group; nothing without torchrun
    run_dir = open_run_dir(config, resume=resume, force=force)
    stages = Stages(run_dir, resume, extend={"translator"} if extend_translator else ())
    up = prepare_upstream(config, stages)
    methods = train_methods(up)
    segmented = up.dataset.cases_to_segment()
    targets = up.dataset.stamp("target", "evaluation", "predict")
    predictions_key = fingerprint([m.key for m in methods], targets, PREDICTIONS_STAGE_VERSION)
    predictions = stages.run("predictions", predictions_key, lambda d: predict_targets(up, methods, d, segmented))
    eval_key = fingerprint(predictions_key, up.dataset.stamp("evaluation"), EVALUATION_STAGE_VERSION)
    evaluation_dir = stages.run(
        "evaluation", eval_key, lambda d: write_metrics(d, evaluate_methods(up, methods, d, predictions))
    )
    rows = read_json(evaluation_dir / "metrics.json")
    fidelity = synct_fidelity(up)
    audit = audit_sections(up, up.translator_dir)
    if not is_main():  # rank 0 writes the report
        barrier()
        return RunResult(run_dir, run_dir / "report.html", rows, stages.timings)

    from da_seg.report import write_report

    report = write_report(
        run_dir,
        config=config,
        task=up.task,
        rows=rows,
        fidelity=fidelity,
        timings=stages.timings,
        examples=report_examples(up.dataset, up.synct_test, methods),
        predictions=_predictions_summary(run_dir, predictions, up.dataset),
        components=read_json(run_dir / "provenance.json").get("components"),
        extra_sections=statistics_sections(rows, up.task, evaluation_dir)
        + paper_test_section(rows, up.task)
        + folds_section(methods)
        + calibration_section(methods, up.task, float(np.prod(up.dataset.target_domain.spacing_zyx)) / 1000)
        + domain_gap_section(*_domain_summaries(up.dataset), (up.task.source_modality, up.task.target_modality))
        + audit,
    )
    write_json(run_dir / "timings.json", stages.timings)
    barrier()
    return RunResult(run_dir, report, rows, stages.timings)


def _domain_summaries(dataset: Dataset) -> tuple[DomainSummary | None, DomainSummary | None]:
    """What the source images (labelled and not) and the target images (every one the run segments) cover."""
    source = dataset.source_train + dataset.source_test + dataset.source_unlabelled
    target = dataset.target + dataset.evaluation + dataset.predict
    return summarise(source, dataset.source_domain), summarise(target, dataset.target_domain)


def _predictions_summary(run_dir: Path, predictions: Path, dataset: Dataset) -> dict[str, Any]:
    """What the report says about the target masks: how many per method, where, and whether any was scored."""
    counts = Counter(row["method"] for row in read_json(predictions / "index.json"))
    return {
        "folder": str(predictions.relative_to(run_dir)),
        "counts": dict(counts),
        "labelled": len(dataset.evaluation),
    }


def _translator_length(config: Config, data_key: str, target_stamp: Any) -> Length | None:
    """The translator stage's `Length` where its translator trains for epochs and resumes from its workdir (the
    adversarial ones): every input and setting but ``epochs`` and ``decay_epochs`` (the schedule, re-derived)."""
    from da_seg.translators.adversarial import AdversarialTranslator

    translator = TRANSLATORS.build(config.translator)
    if not isinstance(translator, AdversarialTranslator):
        return None
    rest = {k: v for k, v in config.translator.items() if k not in ("epochs", "decay_epochs")}
    base = fingerprint(data_key, target_stamp, rest, config.runtime.precision, TRANSLATOR_STAGE_VERSION)
    return Length(base, translator.epochs)


def _fit_translator(config: Config, task: Task, dataset: Dataset, folder: Path, device: torch.device) -> None:
    import inspect

    translator = TRANSLATORS.build(config.translator)
    # unlabelled source images (data.source_unlabelled) teach the translator the source domain, as the paper's 346
    # PROSTATEx scans did; the segmenter never sees them
    source = [c.image for c in dataset.source_train + dataset.source_test + dataset.source_unlabelled]
    target = [c.image for c in dataset.target]
    accepted = inspect.signature(translator.fit).parameters
    # a label-aware translator gets the training subjects' labels only: the held-out test subjects' stay unseen
    masks = [c.mask for c in dataset.source_train] + [None] * (len(source) - len(dataset.source_train))
    options = {
        "channels_last": config.runtime.layout("translator"),
        "compile": config.runtime.compile,
        "source_masks": masks,
        "classes": task.classes,
    }
    layout = {k: v for k, v in options.items() if k in accepted}
    with component_errors("training", (TRANSLATORS, config.translator["name"], translator)):
        translator.fit(
            source,
            target,
            workdir=folder / "work",
            device=device,
            precision=config.runtime.precision,
            seed=config.seed,
            **layout,
        )
    if is_main():
        translator.save(folder / "model")
        save_domains(folder / "model", dataset.source_domain, dataset.target_domain)


def _synthesize(translator: Any, dataset: Dataset, folder: Path) -> None:
    """SynCT for every labelled source subject: normalised arrays for training, NIfTI in target units to look at."""
    for case in dataset.source_train + dataset.source_test:
        synct = translator.translate(case.image).astype(np.float32)
        np.save(folder / f"{case.id}.npy", synct)
        write_volume(dataset.target_domain.restore(synct, case, mask=False), folder / f"{case.id}.nii.gz")


def _load_synct(folder: Path, cases: list[PreparedCase]) -> list[PreparedCase]:
    return [replace(c, image=np.load(folder / f"{c.id}.npy")) for c in cases]
