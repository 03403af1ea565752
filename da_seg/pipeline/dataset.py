"""Where a run's data comes from (the task's phantom or the config's folders) and its preparation on the common grid."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from da_seg.config import Config, PhantomConfig
from da_seg.data import Case, Domain, PreparedCase, find_cases
from da_seg.errors import ConfigError, DataError
from da_seg.extent import match_extent
from da_seg.files import read_json, write_json
from da_seg.pipeline.stages import fingerprint
from da_seg.prepared import file_stamp as _stamp
from da_seg.prepared import load_prepared
from da_seg.registry import EXTENTS, INTENSITIES
from da_seg.task import Task


@dataclass
class DataFolders:
    source: Path
    target: Path
    evaluation: Path | None
    target_labelled: Path | None
    paired_target: Path | None
    source_unlabelled: Path | None = None
    predict: Path | None = None


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
    if "realism" in settings and "realism" not in inspect.signature(task.phantom).parameters:
        raise ConfigError(
            f"data.phantom.realism = {settings['realism']!r}: the phantom of task '{task.name}' has no presets"
        )
    task.phantom(folder, **settings)
    write_json(marker, settings)
    return folder


def resolve_data(config: Config, task: Task) -> DataFolders:
    """The data folders of a run: the configured ones, or the (generated on first use) phantom's."""
    data = config.data
    if data.phantom is not None:
        root = ensure_phantom(task, data.phantom, phantom_folder(config, task))
        optional = {k: (root / k if (root / k).is_dir() else None) for k in ("target_labelled", "paired_target")}
        return DataFolders(
            root / "source",
            root / "target",
            root / "evaluation",
            **optional,
            source_unlabelled=data.source_unlabelled,
            predict=data.predict,
        )
    if data.source is None or data.target is None:
        raise ConfigError("set data.source and data.target (folders), or data.phantom to use the task's phantom")
    return DataFolders(
        data.source,
        data.target,
        data.evaluation,
        data.target_labelled,
        data.paired_target,
        data.source_unlabelled,
        data.predict,
    )


@dataclass
class Dataset:
    """Everything preprocessed onto the common grid, split once by seed.

    ``source_unlabelled`` (images only) joins the translator's training, never the segmenter's. ``predict`` is
    target-domain images to segment and nothing else. ``files`` holds the cases on disk by role (``source``,
    ``target``, ``evaluation``, ...), behind `ct_files` and `stamp`.
    """

    source_domain: Domain
    target_domain: Domain
    source_train: list[PreparedCase]
    source_test: list[PreparedCase]
    target: list[PreparedCase]
    evaluation: list[PreparedCase]
    evaluation_labels: dict[str, Path]
    target_labelled: list[PreparedCase]
    paired_target: dict[str, Path]
    source_unlabelled: list[PreparedCase] = field(default_factory=list)
    predict: list[PreparedCase] = field(default_factory=list)
    files: dict[str, list[Case]] = field(default_factory=dict)

    @property
    def ct_files(self) -> dict[str, Path]:
        """Case id -> file of every target-domain image the run segments (``target``, ``evaluation``, ``predict``)."""
        return _ct_files(self.files)

    @cached_property
    def _stamps(self) -> dict[str, Any]:
        """Each role's files (path, size, modification time), taken once so every stage's key sees the same state."""
        return {role: [[_stamp(c.image), _stamp(c.label)] for c in cases] for role, cases in self.files.items()}

    def stamp(self, *roles: str) -> str:
        """A fingerprint of the files behind ``roles`` (``source``, ``target``, ``evaluation``, ...), so a stage
        that read them re-runs when one changes, appears or goes."""
        return fingerprint({role: self._stamps.get(role, []) for role in roles})

    def cases_to_segment(self) -> list[PreparedCase]:
        """Every target-domain image the run segments, once each (an image in two folders counts once)."""
        unique: dict[str, PreparedCase] = {}
        for case in self.target + self.evaluation + self.predict:
            unique.setdefault(case.id, case)
        return list(unique.values())


def domains(config: Config, task: Task) -> tuple[Domain, Domain]:
    spacing = config.data.spacing or task.spacing
    size = config.data.size or task.size
    source = INTENSITIES.build(config.data.source_intensity or task.source_intensity)
    target = INTENSITIES.build(config.data.target_intensity or task.target_intensity)
    centre = config.data.centre or task.centre
    return Domain(spacing, size, source, centre), Domain(spacing, size, target, centre, config.data.extent)


def split_test(cases: list[PreparedCase], fraction: float, seed: int) -> tuple[list, list]:
    """Hold out ``fraction`` of the source subjects (at least one) as the SynCT / MR test set."""
    order = np.random.default_rng(seed).permutation(len(cases))
    n_test = max(1, round(fraction * len(cases)))
    if len(cases) - n_test < 2:
        raise DataError(f"need at least 3 labelled source subjects (have {len(cases)})")
    test = {int(i) for i in order[:n_test]}
    return [c for i, c in enumerate(cases) if i not in test], [c for i, c in enumerate(cases) if i in test]


def _ct_files(by_role: dict[str, list[Case]]) -> dict[str, Path]:
    """Case id -> image file over the target-domain roles that are segmented (``target``, ``evaluation``,
    ``predict``); one id naming two different files is an error."""
    files: dict[str, Path] = {}
    where: dict[str, str] = {}
    for key in ("target", "evaluation", "predict"):
        for case in by_role.get(key, []):
            known = files.get(case.id)
            if known is not None and known.resolve() != case.image.resolve():
                raise DataError(
                    f"two target images named '{case.id}': {known} (data.{where[case.id]}) and {case.image} "
                    f"(data.{key}); their masks would share predictions/<method>/{case.id}.nii.gz, rename one"
                )
            files.setdefault(case.id, case.image)
            where.setdefault(case.id, key)
    return files


def prepare_dataset(config: Config, task: Task, folders: DataFolders, cache: Path) -> Dataset:
    source_domain, target_domain = domains(config, task)
    binary = task.classes == 1
    source_cases = find_cases(folders.source, labelled=True, binary=binary)
    source = load_prepared(source_cases, source_domain, cache)
    unlabelled, unlabelled_cases = [], []
    if folders.source_unlabelled is not None:
        unlabelled_cases = find_cases(folders.source_unlabelled, labelled=False)
        unlabelled = load_prepared(unlabelled_cases, source_domain, cache)
    target_cases = find_cases(folders.target, labelled=False)
    target = load_prepared(target_cases, target_domain, cache)
    evaluation, labels, eval_cases = [], {}, []
    if folders.evaluation is not None:
        eval_cases = find_cases(folders.evaluation, labelled=True, binary=binary)
        evaluation = load_prepared(eval_cases, target_domain, cache)
        labels = {c.id: c.label for c in eval_cases}
    predict_cases = find_cases(folders.predict, labelled=False) if folders.predict is not None else []
    predict = load_prepared(predict_cases, target_domain, cache)
    labelled, labelled_cases = [], []
    if folders.target_labelled is not None and "oracle" in config.baselines:
        labelled_cases = find_cases(folders.target_labelled, labelled=True, binary=binary)
        labelled = load_prepared(labelled_cases, target_domain, cache)
    paired, paired_cases = {}, []
    if folders.paired_target is not None:
        paired_cases = find_cases(folders.paired_target, labelled=False)
        paired = {c.id: c.image for c in paired_cases}
    if config.data.extent is not None:  # every target image cut to the slab that holds the MR's anatomy
        matcher = EXTENTS.build(config.data.extent)
        references = [case.image for case in source]
        spacing = target_domain.spacing_zyx
        target, evaluation, predict, labelled = (
            match_extent(matcher, cases, references, spacing) for cases in (target, evaluation, predict, labelled)
        )
    train, test = split_test(source, 0.25, config.seed)
    dataset = Dataset(
        source_domain,
        target_domain,
        train,
        test,
        target,
        evaluation,
        labels,
        labelled,
        paired,
        unlabelled,
        predict,
        {
            "source": source_cases,
            "source_unlabelled": unlabelled_cases,
            "target": target_cases,
            "evaluation": eval_cases,
            "predict": predict_cases,
            "target_labelled": labelled_cases,
            "paired_target": paired_cases,
        },
    )
    _ct_files(dataset.files)  # one id naming two different target files is refused now, before anything trains
    return dataset
