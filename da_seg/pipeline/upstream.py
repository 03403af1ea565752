"""What the stages hand each other: `Upstream` (data, translator, SynCT) and the trained `Method` objects.

Its own module so that ``run.py`` (which builds them) and ``evaluation.py`` (which reads them) import it and not
each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from da_seg.config import Config
from da_seg.data import PreparedCase
from da_seg.pipeline.dataset import Dataset
from da_seg.pipeline.stages import Stages
from da_seg.segmentation import Segmenter
from da_seg.task import Task

SYNCT_TEST = "SynCT"
"""The ``test`` (and ``train``) name of the held-out SynCT subjects in metric rows."""

# A stage's code version is part of its fingerprint: bump it when what the stage computes or writes changes, so
# ``--resume`` redoes the stage instead of reusing a result of the old code.
TRANSLATOR_STAGE_VERSION = 2  # 2: the image pool no longer races on CPU threads (issue 43): a new result
SEGMENTER_STAGE_VERSION = 2  # 2: models carry their data domain and precision
PREDICTIONS_STAGE_VERSION = 1
EVALUATION_STAGE_VERSION = 2  # 2: scored from the written masks, in-domain rows per fold


@dataclass
class Method:
    """One trained segmenter (a model, or the ensemble of its cross-validation folds) and what it was trained on.

    Attributes:
        name: the method's name in tables and folders (``synct``, ``no_adaptation``, ``oracle``; ``@tag`` in studies).
        train_on: the training data's name (``SynCT``, ``MR``, ``CT``).
        model: what segments the target images.
        key: the fingerprint of its training stage (downstream stages depend on it).
        test_on: the in-domain test set's name (``SynCT``, ``MR``), or None when it has none.
        tests: ``(model, held-out cases)`` pairs for the in-domain test: one, or one per fold.
    """

    name: str
    train_on: str
    model: Segmenter
    key: str = ""
    test_on: str | None = None
    tests: list[tuple[Segmenter, list[PreparedCase]]] = field(default_factory=list)


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
