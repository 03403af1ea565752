"""`daseg study`: a grid of variations, repeated over training seeds and phantom draws, in one table.

It reuses the pipeline's fingerprinted stages: identical upstream stages (data, translator, SynCT) run once and
serve every variation that shares them. `da_seg.bench` compares segmenters the same way.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from da_seg.api import validate
from da_seg.bench import p_vs_first
from da_seg.config import Config, load_config
from da_seg.errors import ConfigError
from da_seg.files import write_json
from da_seg.pipeline import Stages, evaluate_methods, fingerprint, open_run_dir, prepare_upstream, train_methods
from da_seg.pipeline.upstream import EVALUATION_STAGE_VERSION, SYNCT_TEST, Upstream
from da_seg.stats import compare_methods
from da_seg.tables import mean_sd, write_tables


# -- study ----------------------------------------------------------------------------------------------------
@dataclass
class StudySpec:
    """A study file: ``base`` config, a ``[grid]`` of dotted keys -> value lists, optional ``[set]`` overrides,
    ``seeds`` (every variation is run once per seed) and ``draws`` (phantom draws, ``data.phantom.seed``: every
    variation and seed is run once per draw, so the data vary too, not only the training seed)."""

    base: Path
    grid: dict[str, list[Any]]
    overrides: dict[str, Any]
    name: str
    seeds: list[int] | None = None
    draws: list[int] | None = None

    def variations(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.grid.values())]

    def config(self, variation: dict[str, Any], seed: int | None = None, draw: int | None = None) -> Config:
        """The run config of one variation (seed and draw): the base file, then ``[set]``, then the variation."""
        extra = ({} if seed is None else {"seed": seed}) | ({} if draw is None else {"data.phantom.seed": draw})
        if draw is not None and load_config(self.base, {**self.overrides, **variation}).data.phantom is None:
            raise ConfigError(f"study '{self.name}': draws vary the phantom, but its base config reads data folders")
        config = load_config(self.base, {**self.overrides, **variation, **extra, "name": self.name})
        phantom = config.data.phantom
        if draw is None or phantom is None:
            return config
        if phantom.cache is not None:  # a folder holds one phantom: each draw gets its own inside the given one
            phantom = phantom.model_copy(update={"cache": phantom.cache / f"draw-{draw}"})
            config = config.model_copy(update={"data": config.data.model_copy(update={"phantom": phantom})})
        return config


def variation_tag(index: int, seed: int | None, draw: int | None = None) -> str:
    """The suffix of a variation's stage and method names in the study's run directory (``@v0s1``, ``@v0d101s1``)."""
    return f"@v{index}" + ("" if draw is None else f"d{draw}") + ("" if seed is None else f"s{seed}")


def run_unit(seed: int, draw: int | None) -> str:
    """The name of one (draw, seed) run in a study's rows: ``s1``, or ``d101/s1`` with draws; its cases are
    ``<unit>/<case>``, and ratios to the oracle are taken per unit."""
    return f"s{seed}" if draw is None else f"d{draw}/s{seed}"


def study_run(
    spec: StudySpec, run_dir: str | Path, seed: int | None, index: int = 0, draw: int | None = None
) -> tuple[Upstream, str]:
    """One run of a finished study, from its cached stages, for analyses after the fact: the `Upstream` (config,
    data, translator, SynCT) of variation ``index`` at ``seed`` (and ``draw``), and the tag its methods carry, so
    that ``train_methods(up, tag=tag)`` reloads the study's trained segmenters instead of training them."""
    config = spec.config(spec.variations()[index], seed, draw)
    up = prepare_upstream(config, Stages(Path(run_dir), resume=True, keyed=True))
    return up, variation_tag(index, seed, draw)


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
    unknown = set(data) - {"base", "grid", "set", "name", "seeds", "draws"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {sorted(unknown)}; a study has base, grid, set, seeds, draws and name"
        )
    if "base" not in data or not isinstance(data.get("grid"), dict) or not data["grid"]:
        raise ConfigError(f"{path}: a study needs 'base = \"config.toml\"' and a non-empty [grid] table")
    for key, values in data["grid"].items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.'{key}' must be a non-empty list of values")
    for key, example in (("seeds", "[0, 1, 2]"), ("draws", "[101, 102, 103, 104, 105]")):
        values = data.get(key)
        if values is not None and (
            not isinstance(values, list)
            or not values
            or len(set(values)) != len(values)
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in values)
        ):
            raise ConfigError(f"{path}: {key} must be a list of distinct integers >= 0, e.g. {key} = {example}")
    base = (path.parent / data["base"]).resolve()
    return StudySpec(
        base, data["grid"], data.get("set", {}), data.get("name", path.stem), data.get("seeds"), data.get("draws")
    )


def _label(variation: dict[str, Any], grid: dict[str, list[Any]] | None = None) -> str:
    """``key=value; ...`` naming a variation; a table value shows its ``name`` and only the entries in which the
    grid's tables for that key differ (a nested table by its name)."""

    def short(key: str, v: Any) -> str:
        if not isinstance(v, dict):
            return str(v)
        others = [o for o in (grid or {}).get(key, []) if isinstance(o, dict)]
        varying = [k for k in v if k != "name" and (not others or any(o.get(k) != v[k] for o in others))]
        shown = {k: (v[k].get("name", "...") if isinstance(v[k], dict) else v[k]) for k in varying}
        return v.get("name", "") + "".join(f",{k}={x}" for k, x in shown.items())

    return "; ".join(f"{k.split('.')[-1]}={short(k, v)}" for k, v in variation.items())


@dataclass
class StudyResult:
    run_dir: Path
    table: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    report: Path


_BUILT_ON_SYNCT = {"self_training", "adabn", "two_way"}  # start from the SynCT segmenter, so from the translator


def _method_name(trained: str, label: str, grid: dict[str, list[Any]]) -> str:
    """A study row's method: the variation's label for its SynCT segmenter, ``joint (label)`` for a label-aware
    translator's own segmenter, the baseline's name for a baseline (trained once per seed, beside the first
    variation). Where the grid varies what a baseline depends on (any key for those built on the SynCT segmenter,
    a key outside ``translator`` for the others), the name carries that first variation's label: it is that
    variation's baseline, not every variation's."""
    if trained == "synct":
        return label
    varied = [key for key, values in grid.items() if len(values) > 1]
    depends = trained in _BUILT_ON_SYNCT or any(k.split(".")[0] != "translator" for k in varied)
    return f"{trained} ({label})" if trained == "joint" or (varied and depends) else trained


def run_study(
    path: str | Path, *, resume: bool = False, force: bool = False, seeds: list[int] | None = None
) -> StudyResult:
    """Run every variation of the grid (once per seed) in one directory, sharing identical stages, and write one
    table with the report's statistics (Friedman, pairwise tests with Holm's adjustment and effect sizes) over the
    evaluation cases of every seed. The config's ``baselines`` train once per seed, beside the first variation
    (`_method_name` says so in their rows where the grid varies what they depend on).

    ``seeds``, a subset of the study's, runs only those, so that processes or machines sharing the folder can split
    a study (each with ``resume=True``); their tables go to ``study/seeds-0-2/``, and a run without ``seeds`` then
    reports the whole study from the finished stages."""
    from da_seg.files import read_json
    from da_seg.pipeline import synct_fidelity

    spec = load_study(path)
    variations = spec.variations()
    subset = _seed_subset(spec, seeds, force)
    run_seeds: list[int | None] = list(subset or spec.seeds or [None])
    runs = []
    for draw in spec.draws or [None]:
        for seed in run_seeds:
            for i, variation in enumerate(variations):
                runs.append((i, draw, spec.config(variation, seed, draw)))
    for _, _, config in runs:
        validate(config)
    run_dir = open_run_dir(runs[0][2], resume=resume, force=force)
    stages = Stages(run_dir, resume=True, keyed=True)
    rows: list[dict[str, Any]] = []
    fidelity: dict[tuple[int, str], float] = {}
    where: dict[str, dict[str, int]] = {}  # each run's seed (and draw)
    for i, draw, config in runs:
        stages_i = Stages(run_dir, resume=True, keyed=True)
        up = prepare_upstream(config, stages_i)
        tag = variation_tag(i, None if run_seeds == [None] else config.seed, draw)
        methods = train_methods(up, baselines=i == 0, tag=tag)
        key = fingerprint([m.key for m in methods], up.dataset.stamp("evaluation"), EVALUATION_STAGE_VERSION)
        out = stages.run(
            "evaluation",
            key,
            lambda d, up=up, methods=methods: write_json(d / "metrics.json", evaluate_methods(up, methods, d)),
        )
        label = _label(variations[i], spec.grid)
        unit = run_unit(config.seed, draw)
        where[unit] = {"seed": config.seed} | ({} if draw is None else {"draw": draw})
        for row in read_json(out / "metrics.json"):
            trained = row["method"].rsplit("@", 1)[0]
            place = {"case": f"{unit}/{row['case']}", "variation": i, "label": label, "unit": unit, **where[unit]}
            rows.append({**row, **place, "method": _method_name(trained, label, spec.grid), "trained": trained})
        mae = [r["mae_hu"] for r in synct_fidelity(up)]
        if mae:
            fidelity[(i, unit)] = float(np.mean(mae))
        stages.timings.update({f"{k}{tag}": v for k, v in stages_i.timings.items()})
    table = _study_table(rows, fidelity, _target_modality(runs[0][2]))
    part = "seeds-" + "-".join(map(str, subset)) if subset else ""  # a part never writes over the whole study's
    tables = run_dir / "study" / part
    write_tables(tables, table)
    write_json(tables / "rows.json", rows)
    per_run = [  # each translator's SynCT MAE per (draw and) seed, which the table's median hides
        {"variation": _label(variations[i], spec.grid), **where[unit], "synct_mae_hu": mae}
        for (i, unit), mae in fidelity.items()
    ]
    write_json(tables / "fidelity.json", per_run)
    heading = f"Study: seeds {subset} of {spec.seeds}" if subset else "Study"
    if spec.draws:
        heading += f" on phantom draws {spec.draws}"
    report = _study_report(tables, table, rows, runs[0][2], heading)
    return StudyResult(run_dir, table, rows, report)


def _seed_subset(spec: StudySpec, seeds: list[int] | None, force: bool) -> list[int] | None:
    if seeds is None:
        return None
    if not seeds or not spec.seeds or not set(seeds) <= set(spec.seeds):
        raise ConfigError(f"--seeds {seeds}: choose among the study's seeds {spec.seeds or '(it has none)'}")
    if force:
        raise ConfigError("--force with --seeds would delete the other seeds' stages too; pass --resume instead")
    return sorted(set(seeds))


def _target_modality(config: Config) -> str:
    """The target modality's name (the test set of the target images in metric rows)."""
    from da_seg.api import get_task

    return get_task(config).target_modality


def per_run_means(rows: list[dict[str, Any]], method: str, test: str) -> dict[str, float]:
    """A method's mean Dice on ``test`` per run (``unit``: a seed, or a draw and seed), from a study's rows
    (``study/rows.json``): the unit its ratios to the oracle are taken over."""
    mine = [r for r in rows if r["method"] == method and r["test"] == test]
    units = sorted({_unit(r) for r in mine})
    return {u: float(np.mean([r["dice"] for r in mine if _unit(r) == u])) for u in units}


def _unit(row: dict[str, Any]) -> str:
    return row.get("unit") or run_unit(row["seed"], row.get("draw"))  # rows.json of older studies: no unit


def _study_table(
    rows: list[dict[str, Any]], fidelity: dict[tuple[int, int], float], target: str
) -> list[dict[str, Any]]:
    """One row per method: target Dice (mean +- sd over every run's cases, and the median of the per-run means),
    its ratio to the oracle's per run (a run: a seed, or a phantom draw and seed; their median, mean and lowest),
    in-domain SynCT Dice, SynCT MAE and the Holm-adjusted p-value of the paired test against the first method."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    first = methods[0] if methods else ""
    p_values = p_vs_first(rows, first, target) if len(methods) > 1 else {}
    trained = {r["method"]: r["trained"] for r in rows}  # what trained the row, whatever `_method_name` called it
    oracle = next((per_run_means(rows, m, target) for m in methods if trained[m] == "oracle"), {})
    table = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        per_run = per_run_means(rows, method, target)
        ratios = [v / oracle[u] for u, v in per_run.items() if oracle.get(u)]
        variation = {r["variation"] for r in mine}
        mae = [fidelity[(v, u)] for v in variation for u in per_run if (v, u) in fidelity]
        translated = trained[method] not in ("oracle", "no_adaptation", "domain_randomisation")
        p = p_values.get(method)
        table.append(
            {
                "variation": method,
                "runs": len(per_run),
                f"dice_{target.lower()}": mean_sd([r["dice"] for r in mine if r["test"] == target]),
                "median_of_run_means": round(float(np.median(list(per_run.values()))), 4) if per_run else None,
                "ratio_to_oracle": round(float(np.median(ratios)), 3) if ratios else None,
                "ratio_mean": round(float(np.mean(ratios)), 3) if ratios else None,
                "ratio_min": round(float(np.min(ratios)), 3) if ratios else None,
                "dice_synct": mean_sd([r["dice"] for r in mine if r["test"] == SYNCT_TEST]),
                "synct_mae_hu": round(float(np.median(mae)), 1) if mae and translated else None,
                "hd95": mean_sd([r["hd95"] for r in mine if r["test"] == target]),
                "p_vs_first_holm": None if p is None else round(p, 4),
            }
        )
    return table


def _study_report(
    out: Path, table: list[dict[str, Any]], rows: list[dict[str, Any]], config: Config, heading: str
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from da_seg.stats import comparison_section

    target = _target_modality(config)
    labels = [t["variation"] for t in table]
    data = [[r["dice"] for r in rows if r["method"] == m and r["test"] == target] for m in labels]
    fig, ax = plt.subplots(figsize=(2 + 1.4 * len(table), 4))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(
        range(1, len(labels) + 1), [lab.replace("; ", "\n").replace(",", ",\n") for lab in labels], fontsize=7
    )
    ax.set_ylabel(f"Dice on the evaluation {target} (every seed)")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(out / "fig_study_boxplot.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    md = [f"# {heading}", "", "![study](fig_study_boxplot.png)", "", (out / "table.md").read_text()]
    if len(labels) > 1:
        title, text, _ = comparison_section(compare_methods(rows, "dice", test=target))
        md += ["", f"## {title}", "", "Cases are (draw, seed, evaluation image) triples.", "", text]
    report = out / "report.md"
    report.write_text("\n".join(md))
    return report
