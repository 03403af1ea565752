"""`daseg bench` (segmenters side by side on the same SynCT and CT) and `daseg study` (a grid of variations).

Both reuse the pipeline's fingerprinted stages: identical upstream stages (data, translator, SynCT) run once and
serve every variation that shares them.
"""

from __future__ import annotations

import itertools
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from da_seg.api import validate
from da_seg.config import Config, load_config
from da_seg.errors import ConfigError
from da_seg.pipeline import Stages, evaluate_methods, fingerprint, open_run_dir, prepare_upstream, train_methods
from da_seg.stats import mann_whitney, wilcoxon_paired, write_csv
from da_seg.training import write_json


def parse_segmenter(text: str) -> dict[str, Any]:
    """``resunet25d`` or ``smp:ARCH/ENCODER`` (e.g. ``smp:Unet/resnet34``) -> a component table."""
    if text.startswith("smp:"):
        arch, _, encoder = text[4:].partition("/")
        if not arch or not encoder:
            raise ConfigError(f"--segmenter '{text}': use smp:ARCH/ENCODER, e.g. smp:Unet/resnet34")
        return {"name": "smp", "arch": arch, "encoder": encoder}
    return {"name": text}


def paired_p(a: list[float], b: list[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value on paired per-case values (1.0 when all differences are zero)."""
    return wilcoxon_paired(a, b).p_value


def unpaired_p(a: list[float], b: list[float]) -> float:
    """Two-sided Mann-Whitney U p-value (different test cases)."""
    return mann_whitney(a, b).p_value


def compare(rows: list[dict[str, Any]], first: str, other: str, test: str) -> float:
    """p-value of ``other`` vs ``first`` on ``test`` data: paired when both saw the same cases, unpaired otherwise."""
    a = {r["case"]: r["dice"] for r in rows if r["method"] == first and r["test"] == test}
    b = {r["case"]: r["dice"] for r in rows if r["method"] == other and r["test"] == test}
    if set(a) == set(b):
        keys = sorted(a)
        return paired_p([a[k] for k in keys], [b[k] for k in keys])
    return unpaired_p(list(a.values()), list(b.values()))


def _mean_sd(values: list[float]) -> str:
    arr = np.asarray(values, float)
    return f"{arr.mean():.3f} ± {arr.std(ddof=1) if arr.size > 1 else 0.0:.3f}" if arr.size else "—"


@dataclass
class BenchResult:
    run_dir: Path
    table: list[dict[str, Any]]
    rows: list[dict[str, Any]]


def run_bench(config: Config, segmenters: list[str], *, resume: bool = False, force: bool = False) -> BenchResult:
    """Train each segmenter on the same SynCT and test it on the same real target images."""
    if not segmenters:
        raise ConfigError("give at least one --segmenter")
    validate(config)
    config = config.model_copy(update={"name": f"{config.run_name}-bench"})
    run_dir = open_run_dir(config, resume=resume, force=force)
    stages = Stages(run_dir, resume=True, keyed=True)
    up = prepare_upstream(config, stages)
    table, rows = [], []
    for text in segmenters:
        spec = parse_segmenter(text)
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
                "dice": _mean_sd([r["dice"] for r in method_rows]),
                "hd95": _mean_sd([r["hd95"] for r in method_rows]),
                "parameters": sum(p.numel() for p in method.model.model.parameters()),
                "train_s": round(train_seconds, 1),
                "infer_s_per_volume": round(float(np.mean([r["seconds"] for r in method_rows])), 3),
                "p_vs_first": None
                if not table
                else round(compare(rows, table[0]["method"], method.name, up.task.target_modality), 4),
                "method": method.name,
            }
        )
    _write_tables(run_dir / "bench", table)
    write_json(run_dir / "bench" / "rows.json", rows)
    return BenchResult(run_dir, table, rows)


def _write_tables(folder: Path, table: list[dict[str, Any]]) -> None:
    keys = list(table[0])
    write_csv(folder / "table.csv", table, keys)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join("" if row[k] is None else str(row[k]) for k in keys) + " |" for row in table]
    (folder / "table.md").write_text("\n".join(lines) + "\n")


# -- study ----------------------------------------------------------------------------------------------------
@dataclass
class StudySpec:
    """A study file: ``base`` config, a ``[grid]`` of dotted keys -> value lists, optional ``[set]`` overrides."""

    base: Path
    grid: dict[str, list[Any]]
    overrides: dict[str, Any]
    name: str

    def variations(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.grid.values())]


def load_study(path: str | Path) -> StudySpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; a study file is TOML saved as UTF-8") from None
    unknown = set(data) - {"base", "grid", "set", "name"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; a study has base, grid, set and name")
    if "base" not in data or not isinstance(data.get("grid"), dict) or not data["grid"]:
        raise ConfigError(f"{path}: a study needs 'base = \"config.toml\"' and a non-empty [grid] table")
    for key, values in data["grid"].items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.'{key}' must be a non-empty list of values")
    return StudySpec(
        (path.parent / data["base"]).resolve(), data["grid"], data.get("set", {}), data.get("name", path.stem)
    )


def _label(variation: dict[str, Any]) -> str:
    def short(v: Any) -> str:
        if isinstance(v, dict):
            return v.get("name", "") + "".join(f",{k}={x}" for k, x in v.items() if k != "name")
        return str(v)

    return "; ".join(f"{k.split('.')[-1]}={short(v)}" for k, v in variation.items())


@dataclass
class StudyResult:
    run_dir: Path
    table: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    report: Path


def run_study(path: str | Path, *, resume: bool = False, force: bool = False) -> StudyResult:
    """Run every variation of the grid in one directory, sharing identical stages, and write one table."""
    spec = load_study(path)
    variations = spec.variations()
    configs = [load_config(spec.base, {**spec.overrides, **v, "name": spec.name}) for v in variations]
    for config in configs:
        validate(config)
    run_dir = open_run_dir(configs[0], resume=resume, force=force)
    stages = Stages(run_dir, resume=True, keyed=True)
    rows: list[dict[str, Any]] = []
    for i, (variation, config) in enumerate(zip(variations, configs, strict=True)):
        stages_i = Stages(run_dir, resume=True, keyed=True)
        up = prepare_upstream(config, stages_i)
        methods = train_methods(up, baselines=False, tag=f"@v{i}")
        key = fingerprint(up.synct_key, config.segmentation.model_dump(mode="json"), config.runtime.precision)
        out = stages.run(
            "evaluation",
            key,
            lambda d, up=up, methods=methods: write_json(d / "metrics.json", evaluate_methods(up, methods, d)),
        )
        from da_seg.training import read_json

        for row in read_json(out / "metrics.json"):
            rows.append({**row, "variation": i, "label": _label(variation)})
        stages.timings.update({f"{k}@v{i}": v for k, v in stages_i.timings.items()})
    table = _study_table(rows, variations, configs[0])
    _write_tables(run_dir / "study", table)
    write_json(run_dir / "study" / "rows.json", rows)
    report = _study_report(run_dir, table, rows, configs[0])
    return StudyResult(run_dir, table, rows, report)


def _study_table(rows: list[dict[str, Any]], variations: list[dict[str, Any]], config: Config) -> list[dict[str, Any]]:
    from da_seg.api import get_task

    target = get_task(config).target_modality
    table = []
    for i, variation in enumerate(variations):
        mine = [r for r in rows if r["variation"] == i]
        ct = [r["dice"] for r in mine if r["test"] == target]
        synct = [r["dice"] for r in mine if r["test"] == "SynCT"]
        first = rows[0]["method"] if rows else ""
        table.append(
            {
                "variation": _label(variation),
                "dice_synct": _mean_sd(synct),
                f"dice_{target.lower()}": _mean_sd(ct),
                "hd95": _mean_sd([r["hd95"] for r in mine if r["test"] == target]),
                "p_vs_first": None if i == 0 else round(compare(rows, first, mine[0]["method"], target), 4),
            }
        )
    return table


def _study_report(run_dir: Path, table: list[dict[str, Any]], rows: list[dict[str, Any]], config: Config) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from da_seg.api import get_task

    target = get_task(config).target_modality
    labels = [t["variation"] for t in table]
    data = [[r["dice"] for r in rows if r["variation"] == i and r["test"] == target] for i in range(len(table))]
    fig, ax = plt.subplots(figsize=(2 + 1.4 * len(table), 4))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), [lab.replace("; ", "\n") for lab in labels], fontsize=7)
    ax.set_ylabel(f"Dice on real {target}")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(run_dir / "study" / "fig_study_boxplot.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    md = ["# Study", "", "![study](fig_study_boxplot.png)", "", (run_dir / "study" / "table.md").read_text()]
    out = run_dir / "study" / "report.md"
    out.write_text("\n".join(md))
    return out
