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

import hashlib
import json
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from da_seg.api import get_task, validate
from da_seg.config import Config, PhantomConfig
from da_seg.data import Domain, PreparedCase, find_cases, load_prepared
from da_seg.errors import ConfigError, DasegError, DataError
from da_seg.metrics.segmentation import evaluate_case
from da_seg.registry import INTENSITIES, METRICS, TRANSLATORS
from da_seg.segmentation import TrainedSegmenter, train_segmenter
from da_seg.stats import write_csv
from da_seg.task import Task
from da_seg.training import (
    barrier,
    broadcast_object,
    init_distributed,
    is_main,
    local_device,
    os_error,
    read_json,
    resolve_device,
    seed_everything,
    set_deterministic,
    write_json,
)
from da_seg.translators import load_translator, save_domains
from da_seg.volume import read_volume, resample_to, write_volume

SYNCT = "synct"


@dataclass
class RunResult:
    """Where a run left its outputs, and its per-method metric rows."""

    run_dir: Path
    report: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able settings."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- data -------------------------------------------------------------------------------------------------------
@dataclass
class DataFolders:
    source: Path
    target: Path
    evaluation: Path | None
    target_labelled: Path | None
    paired_target: Path | None


def phantom_folder(config: Config, task: Task) -> Path:
    """The phantom's cache folder: explicit, or ``~/.cache/da_seg/phantom/<task>-<settings hash>``."""
    phantom = config.data.phantom
    assert phantom is not None
    if phantom.cache is not None:
        return phantom.cache
    settings = phantom.model_dump(exclude={"cache"})
    return Path.home() / ".cache" / "da_seg" / "phantom" / f"{task.name}-{fingerprint(settings)}"


def ensure_phantom(task: Task, phantom: PhantomConfig, folder: Path) -> Path:
    """Write the task's phantom into ``folder`` unless a complete one is there already."""
    marker = folder / "phantom.json"
    settings = phantom.model_dump(exclude={"cache"})
    if marker.exists() and read_json(marker) == settings:
        return folder
    if task.phantom is None:
        raise ConfigError(f"data.phantom is set but task '{task.name}' ships no phantom; give data folders instead")
    task.phantom(folder, **settings)
    write_json(marker, settings)
    return folder


def resolve_data(config: Config, task: Task) -> DataFolders:
    """The data folders of a run: the configured ones, or the (generated on first use) phantom's."""
    data = config.data
    if data.phantom is not None:
        root = ensure_phantom(task, data.phantom, phantom_folder(config, task))
        optional = {k: (root / k if (root / k).is_dir() else None) for k in ("target_labelled", "paired_target")}
        return DataFolders(root / "source", root / "target", root / "evaluation", **optional)
    if data.source is None or data.target is None:
        raise ConfigError("set data.source and data.target (folders), or data.phantom to use the task's phantom")
    return DataFolders(data.source, data.target, data.evaluation, data.target_labelled, data.paired_target)


@dataclass
class Dataset:
    """Everything preprocessed onto the common grid, split once by seed."""

    source_domain: Domain
    target_domain: Domain
    source_train: list[PreparedCase]
    source_test: list[PreparedCase]
    target: list[PreparedCase]
    evaluation: list[PreparedCase]
    evaluation_labels: dict[str, Path]
    target_labelled: list[PreparedCase]
    paired_target: dict[str, Path]


def domains(config: Config, task: Task) -> tuple[Domain, Domain]:
    spacing = config.data.spacing or task.spacing
    size = config.data.size or task.size
    source = INTENSITIES.build(config.data.source_intensity or task.source_intensity)
    target = INTENSITIES.build(config.data.target_intensity or task.target_intensity)
    centre = config.data.centre or task.centre
    return Domain(spacing, size, source, centre), Domain(spacing, size, target, centre)


def split_test(cases: list[PreparedCase], fraction: float, seed: int) -> tuple[list, list]:
    """Hold out ``fraction`` of the source subjects (at least one) as the SynCT / MR test set."""
    order = np.random.default_rng(seed).permutation(len(cases))
    n_test = max(1, round(fraction * len(cases)))
    if len(cases) - n_test < 2:
        raise DataError(f"need at least 3 labelled source subjects (have {len(cases)})")
    test = {int(i) for i in order[:n_test]}
    return [c for i, c in enumerate(cases) if i not in test], [c for i, c in enumerate(cases) if i in test]


def prepare_dataset(config: Config, task: Task, folders: DataFolders, cache: Path) -> Dataset:
    source_domain, target_domain = domains(config, task)
    binary = task.classes == 1
    source = load_prepared(find_cases(folders.source, labelled=True, binary=binary), source_domain, cache)
    target = load_prepared(find_cases(folders.target, labelled=False), target_domain, cache)
    evaluation, labels = [], {}
    if folders.evaluation is not None:
        eval_cases = find_cases(folders.evaluation, labelled=True, binary=binary)
        evaluation = load_prepared(eval_cases, target_domain, cache)
        labels = {c.id: c.label for c in eval_cases}
    labelled = []
    if folders.target_labelled is not None and "oracle" in config.baselines:
        labelled = load_prepared(
            find_cases(folders.target_labelled, labelled=True, binary=binary), target_domain, cache
        )
    paired = {}
    if folders.paired_target is not None:
        paired = {c.id: c.image for c in find_cases(folders.paired_target, labelled=False)}
    train, test = split_test(source, 0.25, config.seed)
    return Dataset(source_domain, target_domain, train, test, target, evaluation, labels, labelled, paired)


# -- stages -----------------------------------------------------------------------------------------------------
class Stages:
    """Runs named stages once per fingerprint, timing each."""

    def __init__(self, run_dir: Path, resume: bool, keyed: bool = False) -> None:
        self.run_dir, self.resume, self.keyed = run_dir, resume, keyed
        self.timings: dict[str, float] = {}

    def run(self, name: str, key: str, work: Callable[[Path], Any], collective: bool = False) -> Path:
        """Run ``work(folder)`` unless ``folder`` holds a finished stage with this ``key`` (and resuming).

        With ``keyed=True`` (studies) folders are named ``name-key`` so variations share identical stages. Under
        torchrun, rank 0 decides whether to reuse the stage and writes its marker; ``collective`` work (DDP
        training) runs on every rank, other work on rank 0 only, and every rank leaves together.
        """
        folder = self.run_dir / (f"{name}-{key}" if self.keyed else name)
        marker = folder / "done.json"
        main = is_main()
        reuse = main and self.resume and marker.exists() and read_json(marker).get("fingerprint") == key
        if broadcast_object(reuse):
            self.timings[name] = read_json(marker).get("seconds", 0.0)
            return folder
        if main:
            if marker.exists():
                marker.unlink()
            folder.mkdir(parents=True, exist_ok=True)
        barrier()
        start = time.perf_counter()
        try:
            if collective or main:
                work(folder)
        except OSError as err:  # a full disk or a read-only folder is the user's to fix: one line naming the stage
            raise (os_error(err, folder) or err) from None
        seconds = time.perf_counter() - start
        self.timings[name] = seconds
        if main:
            write_json(marker, {"fingerprint": key, "seconds": seconds})
        barrier()
        return folder


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ["da_seg", "torch", "kornia", "segmentation-models-pytorch", "timm", "SimpleITK", "numpy", "pluggy"]
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def open_run_dir(config: Config, *, resume: bool, force: bool) -> Path:
    """Create (or, with resume/force, reuse/clear) the run directory and record how the run was made."""
    run_dir = config.output / config.run_name
    if run_dir.exists() and any(run_dir.iterdir()) and not (resume or force):
        raise DasegError(f"run directory {run_dir} exists; pass --resume to continue it or --force to redo it")
    barrier()  # every rank has checked before rank 0 changes anything
    if not is_main():
        barrier()  # rank 0 writes the run directory
        return run_dir
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", config.model_dump(mode="json"))
    except OSError as err:
        raise DasegError(
            f"cannot write the run directory {run_dir} ({err.strerror}); choose another 'output'"
        ) from None
    write_json(
        run_dir / "provenance.json",
        {
            "versions": _versions(),
            "git": _git_revision(),
            "seed": config.seed,
            "device": str(resolve_device(config.runtime.device)),
        },
    )
    barrier()
    return run_dir


# -- the pipeline ---------------------------------------------------------------------------------------------
@dataclass
class Method:
    """One trained segmenter and what it was trained on (a row group of Table 1)."""

    name: str
    train_on: str
    model: TrainedSegmenter


@dataclass
class Upstream:
    """What run, bench and study share: the data on the common grid, the translator and the SynCT."""

    config: Config
    task: Task
    device: torch.device
    stages: Stages
    dataset: Dataset
    translator: Any
    translator_dir: Path
    synct_dir: Path
    synct_train: list[PreparedCase]
    synct_test: list[PreparedCase]
    data_key: str
    synct_key: str


def prepare_upstream(config: Config, stages: Stages) -> Upstream:
    """Data -> translator -> SynCT, each stage reused when its fingerprint matches."""
    task = get_task(config)
    device = local_device(resolve_device(config.runtime.device))
    if config.runtime.threads:
        torch.set_num_threads(config.runtime.threads)
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
    data_key = fingerprint(config.data.model_dump(mode="json"), config.task, config.seed)

    translator_key = fingerprint(data_key, config.translator, config.runtime.precision)
    translator_dir = stages.run(
        "translator", translator_key, lambda d: _fit_translator(config, dataset, d, device), collective=True
    )
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

    key = fingerprint(str(translator_dir), config.selection.translator)
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
        return _fit_segmenter(up, seg, cases, out, progress=False)

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

    key = fingerprint(up.synct_key, seg.model_dump(mode="json"), config.selection.criteria)
    return [CheckpointAudit.load(up.stages.run("selection_audit", key, work)).section()]


def train_methods(up: Upstream, segmentation: Any = None, baselines: bool = True, tag: str = "") -> list[Method]:
    """The SynCT-trained segmenter and, when asked, the no-adaptation and oracle baselines."""
    config, task, dataset = up.config, up.task, up.dataset
    seg = segmentation or config.segmentation
    seg_key = seg.model_dump(mode="json")
    plan = [("synct", "SynCT", up.synct_train, up.synct_key)]
    if baselines and "no_adaptation" in config.baselines:
        plan.append(("no_adaptation", task.source_modality, dataset.source_train, up.data_key))
    if baselines and "oracle" in config.baselines and dataset.target_labelled:
        plan.append(("oracle", task.target_modality, dataset.target_labelled, up.data_key))
    return [
        Method(
            name + tag,
            train_on,
            _train(up, f"seg_{name}{tag}", fingerprint(key, seg_key, config.runtime.precision), seg, cases),
        )
        for name, train_on, cases, key in plan
    ]


def run_pipeline(config: Config, *, resume: bool = False, force: bool = False) -> RunResult:
    """Run every stage of the configured pipeline and write the report; returns where things are."""
    validate(config)
    init_distributed(config.runtime.device)  # joins torchrun's process group; nothing without torchrun
    run_dir = open_run_dir(config, resume=resume, force=force)
    stages = Stages(run_dir, resume)
    up = prepare_upstream(config, stages)
    methods = train_methods(up)
    eval_key = fingerprint(
        up.synct_key, config.segmentation.model_dump(mode="json"), config.baselines, config.runtime.precision
    )
    evaluation_dir = stages.run("evaluation", eval_key, lambda d: write_metrics(d, evaluate_methods(up, methods, d)))
    rows = read_json(evaluation_dir / "metrics.json")
    fidelity = _fidelity(up)
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
        examples=_examples(up.dataset, up.synct_test, methods),
        extra_sections=statistics_sections(rows, up.task, evaluation_dir) + audit,
    )
    write_json(run_dir / "timings.json", stages.timings)
    barrier()
    return RunResult(run_dir, report, rows, stages.timings)


def statistics_sections(rows: list[dict[str, Any]], task: Task, folder: Path) -> list[tuple[str, str, str]]:
    """Bootstrap CIs and Holm-adjusted paired tests between methods on the real target images (also as CSV)."""
    from da_seg.stats import compare_methods, comparison_section

    target_rows = [r for r in rows if r["test"] == task.target_modality]
    if len({r["method"] for r in target_rows}) < 2:
        return []
    comparison = compare_methods(target_rows, "dice", test=task.target_modality)
    write_csv(folder / "stats_summary.csv", comparison["summary"])
    write_csv(folder / "stats_pairwise.csv", comparison["pairwise"])
    return [comparison_section(comparison)]


def _fit_translator(config: Config, dataset: Dataset, folder: Path, device: torch.device) -> None:
    import inspect

    translator = TRANSLATORS.build(config.translator)
    source = [c.image for c in dataset.source_train + dataset.source_test]
    target = [c.image for c in dataset.target]
    accepted = inspect.signature(translator.fit).parameters
    options = {"channels_last": config.runtime.layout("translator"), "compile": config.runtime.compile}
    layout = {k: v for k, v in options.items() if k in accepted}
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


def _fit_segmenter(up: Upstream, seg: Any, cases: list, workdir: Path, progress: bool = True) -> TrainedSegmenter:
    """Every segmenter of a run (methods and audit) trains through here: same seed and runtime switches."""
    runtime = up.config.runtime
    return train_segmenter(
        seg.model,
        cases,
        seg,
        workdir=workdir,
        device=up.device,
        precision=runtime.precision,
        seed=up.config.seed,
        classes=up.task.classes,
        progress=progress,
        channels_last=runtime.layout("segmenter"),
        compile=runtime.compile,
    )


def _train(up: Upstream, name: str, key: str, seg: Any, cases: list[PreparedCase]) -> TrainedSegmenter:
    def work(folder: Path) -> None:
        model = _fit_segmenter(up, seg, [(c.image, c.mask) for c in cases], folder / "work")
        if is_main():
            model.save(folder / "model")

    folder = up.stages.run(name, key, work, collective=True)
    runtime = up.config.runtime
    return TrainedSegmenter.load(
        folder / "model", device=up.device, precision=runtime.precision, channels_last=runtime.layout("segmenter")
    )


def _segment(seg: Any, model: TrainedSegmenter, image: np.ndarray) -> np.ndarray:
    return model.segment(image, threshold=seg.threshold, largest_component=seg.largest_component, tta_flip=seg.tta_flip)


def evaluate_methods(up: Upstream, methods: list[Method], folder: Path) -> list[dict[str, Any]]:
    """Per-case metrics: every method on the real target images (original grid, masks written as NIfTI), plus the
    in-domain rows of the paper's Table 1 (SynCT-trained on SynCT test subjects, source-trained on source ones)."""
    task, dataset, seg = up.task, up.dataset, up.config.segmentation
    rows: list[dict[str, Any]] = []
    for method in methods:
        out = folder / "predictions" / method.name
        for case in dataset.evaluation:
            start = time.perf_counter()
            pred = _segment(seg, method.model, case.image)
            mask = dataset.target_domain.restore(pred, case, mask=True)
            seconds = time.perf_counter() - start
            write_volume(mask, out / f"{case.id}.nii.gz", mask=True)
            reference = read_volume(dataset.evaluation_labels[case.id])
            scores = evaluate_case(mask.array, reference.array, reference.spacing_zyx, labels=label_map(task))
            rows.append(
                {
                    "method": method.name,
                    "train": method.train_on,
                    "test": task.target_modality,
                    "case": case.id,
                    **scores,
                    "seconds": seconds,
                }
            )
    in_domain = {"synct": (up.synct_test, "SynCT"), "no_adaptation": (dataset.source_test, task.source_modality)}
    for method in methods:
        base = method.name.split("@")[0]
        if base not in in_domain:
            continue
        cases, test_name = in_domain[base]
        for case in cases:
            pred = _segment(seg, method.model, case.image)
            scores = evaluate_case(pred, case.mask, dataset.source_domain.spacing_zyx, labels=label_map(task))
            rows.append({"method": method.name, "train": method.train_on, "test": test_name, "case": case.id, **scores})
    return rows


def label_map(task: Task) -> dict[int, str]:
    """Mask value -> structure name (value ``i + 1`` is ``task.labels[i]``)."""
    return {i + 1: name for i, name in enumerate(task.labels)}


def write_metrics(folder: Path, rows: list[dict[str, Any]]) -> None:
    write_json(folder / "metrics.json", rows)
    write_csv(folder / "metrics.csv", rows)


def _fidelity(up: Upstream) -> list[dict[str, Any]]:
    """SynCT vs the true target image of the same subject (paired phantoms), in target units, inside the body."""
    dataset = up.dataset
    if not dataset.paired_target:
        return []

    def work(folder: Path) -> None:
        rows = []
        for case in dataset.source_train + dataset.source_test:
            if case.id not in dataset.paired_target:
                continue
            # compare on the source grid: the true target image usually covers a larger field of view
            synct = read_volume(up.synct_dir / f"{case.id}.nii.gz")
            truth = resample_to(read_volume(dataset.paired_target[case.id]), synct)
            # only where a SynCT was synthesised: the common grid's in-plane crop of the source image
            inside = dataset.target_domain.restore(np.ones(case.image.shape, np.uint8), case, mask=True).array > 0
            body = (truth.array > -400) & inside
            row = {"case": case.id}
            for name in ("mae_hu", "mean_error_hu", "psnr", "ssim"):
                row[name] = float(METRICS.get(name)(synct.array, truth.array, mask=body))
            rows.append(row)
        write_json(folder / "fidelity.json", rows)

    folder = up.stages.run("fidelity", up.synct_key, work)
    return read_json(folder / "fidelity.json")


def _examples(dataset: Dataset, synct_test: list[PreparedCase], methods: list[Method]) -> dict[str, Any]:
    """Arrays for Fig. 2 style panels: a source slice, its SynCT, and a real target slice with contours."""
    out: dict[str, Any] = {}
    if synct_test:
        case = dataset.source_test[0]
        z = int(np.argmax(case.mask.reshape(case.mask.shape[0], -1).sum(1)))
        out["source"] = (case.image[z], synct_test[0].image[z], case.mask[z])
    if dataset.evaluation:
        case = dataset.evaluation[0]
        z = int(np.argmax(case.mask.reshape(case.mask.shape[0], -1).sum(1)))
        preds = {m.name: m.model.segment(case.image[max(0, z - 3) : z + 4])[min(z, 3)] for m in methods}
        out["target"] = (case.image[z], case.mask[z], preds)
    return out
