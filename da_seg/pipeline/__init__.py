"""The stages of ``daseg run``: data -> translator -> SynCT -> segmenters -> evaluation -> report.

``run.py`` chains the stages (and holds what run, bench and study share: `prepare_upstream`); ``methods.py``
trains the methods a run compares (`train_methods`);
``dataset.py`` finds and prepares the data; ``stages.py`` keeps the run directory and its resumable stages;
``evaluation.py`` scores the methods and gathers the report's tables and panels.
"""

from da_seg.api import get_task
from da_seg.pipeline.dataset import DataFolders, Dataset, domains, prepare_dataset, resolve_data, split_test
from da_seg.pipeline.evaluation import evaluate_methods, label_map, synct_fidelity, write_metrics
from da_seg.pipeline.methods import train_methods
from da_seg.pipeline.run import RunResult, prepare_upstream, run_pipeline
from da_seg.pipeline.stages import Stages, fingerprint, open_run_dir
from da_seg.pipeline.upstream import Method, Upstream

__all__ = [
    "DataFolders",
    "Dataset",
    "Method",
    "RunResult",
    "Stages",
    "Upstream",
    "domains",
    "evaluate_methods",
    "fingerprint",
    "get_task",
    "label_map",
    "open_run_dir",
    "prepare_dataset",
    "prepare_upstream",
    "resolve_data",
    "run_pipeline",
    "split_test",
    "synct_fidelity",
    "train_methods",
    "write_metrics",
]
