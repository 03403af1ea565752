"""`daseg bench`: several segmenters side by side on the same SynCT training data and the same real target test set.

It reuses the pipeline's fingerprinted stages: the data, translator and SynCT stages run once for every segmenter.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from da_seg.api import validate
from da_seg.config import Config
from da_seg.errors import ConfigError
from da_seg.files import write_json
from da_seg.pipeline import Stages, evaluate_methods, open_run_dir, prepare_upstream, train_methods
from da_seg.stats import compare_methods
from da_seg.tables import mean_sd, write_tables

_ARGUMENT = re.compile(r",\s*(?=[A-Za-z_][A-Za-z0-9_]*\s*=)")  # a comma that starts the next key=value


def _toml_value(raw: str) -> Any:
    """A TOML scalar or array (``8``, ``0.5``, ``true``, ``"a"``, ``[64, 32]``); a bare word stays a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def parse_segmenter(text: str, config_model: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``--segmenter`` value -> a component table (``segmentation.model``).

    ``NAME`` or ``NAME:key=value,key=value`` with TOML values (``resunet25d:base=8,depth=3``,
    ``tiny_fcn:width=4``); for ``smp`` the first item may be ``ARCH/ENCODER`` (``smp:Unet/resnet34``,
    ``smp:FPN/tu-resnet10t,encoder_depth=3``). When ``NAME`` is the config's segmenter (``config_model``), the
    config's arguments are the defaults and the given ones replace them.

    Example:
        >>> parse_segmenter("resunet25d:depth=3", {"name": "resunet25d", "base": 4, "depth": 2})
        {'name': 'resunet25d', 'base': 4, 'depth': 3}
    """
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"--segmenter '{text}': give a segmenter name, e.g. resunet25d or resunet25d:base=8")
    spec: dict[str, Any] = {"name": name}
    if config_model is not None and config_model.get("name") == name:
        spec.update(config_model)
    items = [item.strip() for item in _ARGUMENT.split(rest)] if rest.strip() else []
    if name == "smp" and items and "=" not in items[0]:
        arch, _, encoder = items.pop(0).partition("/")
        if not arch or not encoder:
            raise ConfigError(f"--segmenter '{text}': use smp:ARCH/ENCODER, e.g. smp:Unet/resnet34")
        spec.update(arch=arch, encoder=encoder)
    for item in items:
        key, equals, raw = item.partition("=")
        if not equals or not key.strip() or key.strip() == "name":
            raise ConfigError(
                f"--segmenter '{text}': '{item}' is not key=value; use NAME:key=value,... (e.g. resunet25d:base=8)"
            )
        spec[key.strip()] = _toml_value(raw.strip())
    return spec


def p_vs_first(rows: list[dict[str, Any]], first: str, test: str) -> dict[str, float]:
    """Each method's Dice p-value against ``first`` on ``test`` data: the report's pairwise tests (Wilcoxon on the
    same cases, Mann-Whitney otherwise) with the report's Holm adjustment over all pairs (`compare_methods`)."""
    pairwise = compare_methods(rows, "dice", test=test)["pairwise"]
    return {r["b"] if r["a"] == first else r["a"]: r["p_holm"] for r in pairwise if first in (r["a"], r["b"])}


@dataclass
class BenchResult:
    run_dir: Path
    table: list[dict[str, Any]]
    rows: list[dict[str, Any]]


def _parameters(model: Any) -> int:
    """Trainable size of one model (an ensemble counts one member: each fold has the same network)."""
    single = model.members[0] if hasattr(model, "members") else model
    return sum(p.numel() for p in single.model.parameters())


def run_bench(config: Config, segmenters: list[str], *, resume: bool = False, force: bool = False) -> BenchResult:
    """Train each segmenter on the same SynCT and test it on the same labelled target images.

    ``segmenters`` are ``--segmenter`` values (`parse_segmenter`); each is built and checked before anything trains.
    """
    if not segmenters:
        raise ConfigError("give at least one --segmenter")
    validate(config)
    specs = [parse_segmenter(text, config.segmentation.model) for text in segmenters]
    for text, spec in zip(segmenters, specs, strict=True):  # a bad --segmenter fails now, not after the translator
        try:
            validate(config.model_copy(update={"segmentation": config.segmentation.model_copy(update={"model": spec})}))
        except ConfigError as err:
            raise ConfigError(f"--segmenter '{text}': {err}") from None
    config = config.model_copy(update={"name": f"{config.run_name}-bench"})
    run_dir = open_run_dir(config, resume=resume, force=force)
    stages = Stages(run_dir, resume=True, keyed=True)
    up = prepare_upstream(config, stages)
    table, rows = [], []
    for text, spec in zip(segmenters, specs, strict=True):
        seg = config.segmentation.model_copy(update={"model": spec})
        start = time.perf_counter()
        (method,) = train_methods(up, seg, baselines=False, tag=f"@{text}")
        train_seconds = up.stages.timings.get(f"seg_synct@{text}", time.perf_counter() - start)
        method_rows = [
            r for r in evaluate_methods(up, [method], run_dir / "bench") if r["test"] == up.task.target_modality
        ]
        rows += method_rows
        table.append(
            {
                "segmenter": text,
                "dice": mean_sd([r["dice"] for r in method_rows]),
                "hd95": mean_sd([r["hd95"] for r in method_rows]),
                "parameters": _parameters(method.model),
                "train_s": round(train_seconds, 1),
                "infer_s_per_volume": round(float(np.mean([r["seconds"] for r in method_rows])), 3),
                "p_vs_first_holm": None,  # filled once every segmenter is scored (Holm over all pairs)
                "method": method.name,
            }
        )
    p_values = p_vs_first(rows, table[0]["method"], up.task.target_modality)
    for row in table[1:]:
        row["p_vs_first_holm"] = round(p_values[row["method"]], 4)
    write_tables(run_dir / "bench", table)
    write_json(run_dir / "bench" / "rows.json", rows)
    return BenchResult(run_dir, table, rows)
