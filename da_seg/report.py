"""The run report: ``report.md`` and a self-contained ``report.html`` with PNG figures beside them.

Table 1 style summary (training data, test data, Dice mean ± sd, HD95), per-case table, Fig. 3 style boxplots,
Fig. 2 style examples (source | SynCT | a target image with predicted and, where labelled, reference contours),
translation fidelity and stage timings.
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from da_seg.config import Config
from da_seg.tables import mean_sd, rows_from, to_html, to_markdown
from da_seg.task import Task

METHOD_LABELS = {
    "synct": "adapted: trained on SynCT",
    "no_adaptation": "no adaptation: trained on source images",
    "oracle": "oracle: trained on labelled target images",
    "self_training": "self-training: trained on SynCT and the target images labelled by the SynCT segmenter",
    "joint": "joint: the segmenter a label-aware translator trained on its SynCT",
    "domain_randomisation": "domain randomisation: trained on source images with random intensity remapping",
    "adabn": "AdaBN: the SynCT segmenter with batch-norm statistics of the unlabelled target images",
    "two_way": "two-way: the SynCT segmenter averaged with the source segmenter on target images translated back",
}
PALETTE = {
    "reference": "#2ca02c",
    "synct": "#d62728",
    "no_adaptation": "#1f77b4",
    "oracle": "#9467bd",
    "domain_randomisation": "#ff7f0e",
    "joint": "#8c564b",
    "self_training": "#e377c2",
    "adabn": "#17becf",
    "two_way": "#bcbd22",
}


def summary_rows(rows: list[dict[str, Any]], metrics: tuple[str, ...] = ("dice", "hd95", "assd")) -> list[list[str]]:
    """One row per (method, test set): Table 1 of the paper, plus surface distances."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["train"], row["test"])].append(row)
    table = []
    for (method, train, test), group in groups.items():
        table.append(
            [method, train, test, str(len(group))] + [mean_sd([r[m] for r in group if m in r]) for m in metrics]
        )
    return table


def structure_rows(rows: list[dict[str, Any]], labels: tuple[str, ...]) -> list[list[str]]:
    """Per-structure Dice (multi-class tasks): one row per (method, test set)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["test"])].append(row)
    return [
        [m, t] + [mean_sd([r[f"{lab}_dice"] for r in g if f"{lab}_dice" in r]) for lab in labels]
        for (m, t), g in groups.items()
    ]


def _png(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def boxplot(rows: list[dict[str, Any]], target: str, path: Path, where: str = "evaluation") -> Path:
    """Fig. 3 style: Dice per case on the labelled target images, one box per method (``where`` names them:
    ``evaluation``, or ``phantom evaluation`` so a phantom is never mistaken for patients)."""
    methods = list(dict.fromkeys(r["method"] for r in rows if r["test"] == target))
    data = [[r["dice"] for r in rows if r["method"] == m and r["test"] == target] for m in methods]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(methods), 3.6))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(methods) + 1), [m.replace("_", "\n") for m in methods])
    for i, values in enumerate(data, start=1):
        ax.scatter(
            np.full(len(values), i) + np.linspace(-0.08, 0.08, len(values)),
            values,
            s=12,
            alpha=0.6,
            color=PALETTE.get(methods[i - 1], "k"),
            zorder=3,
        )
    ax.set_ylabel(f"Dice on {where} {target}")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Segmentation of the {where} {target}, per case")
    return _png(fig, path)


def _contour(ax: plt.Axes, mask: np.ndarray | None, color: str, label: str | None = None) -> None:
    if mask is not None and mask.any():
        ax.contour(mask > 0, levels=[0.5], colors=[color], linewidths=1.2)
        if label:
            ax.plot([], [], color=color, label=label)


def structure_colour(value: int) -> Any:
    """The colour of label ``value`` (1..K) in overlays: tab10, cycling."""
    return plt.get_cmap("tab10")((value - 1) % 10)


def _label_contours(ax: plt.Axes, labels: np.ndarray, task: Task, legend: bool = False) -> None:
    """One contour per structure of a label map, each in its `structure_colour`."""
    for value, name in enumerate(task.labels, start=1):
        colour = structure_colour(value)
        if labels is not None and (labels == value).any():
            ax.contour(labels == value, levels=[0.5], colors=[colour], linewidths=1.0)
        if legend:
            ax.plot([], [], color=colour, label=name)


def _structures_figure(examples: dict[str, Any], task: Task, path: Path) -> Path:
    """Several structures: source | SynCT | target reference | one panel per method, a colour per structure."""
    preds = examples["target"][2] if "target" in examples else {}
    panels = 2 * ("source" in examples) + ("target" in examples) * (1 + len(preds))
    fig, axes = plt.subplots(1, panels, figsize=(3.4 * panels, 3.8), squeeze=False)
    axes = list(axes[0])
    for ax in axes:
        ax.axis("off")
    if "source" in examples:
        image, synct, mask = examples["source"]
        for ax, picture, title in zip(
            axes, (image, synct), (task.source_modality, f"Syn{task.target_modality}"), strict=False
        ):
            ax.imshow(picture, cmap="gray", vmin=-1, vmax=1)
            _label_contours(ax, mask, task)
            ax.set_title(f"{title} with the source labels", fontsize=9)
        axes = axes[2:]
    if "target" in examples:
        image, mask, _ = examples["target"]
        reference = "reference" if mask is not None else "no reference mask"
        for ax, (title, labels) in zip(axes, [(reference, mask), *preds.items()], strict=True):
            ax.imshow(image, cmap="gray", vmin=-1, vmax=1)
            _label_contours(ax, labels, task, legend=title == "reference")
            ax.set_title(f"{task.target_modality} {examples.get('target_case', '')}: {title}", fontsize=9)
        axes[0].legend(loc="lower right", fontsize=6, framealpha=0.6)
    return _png(fig, path)


def examples_figure(examples: dict[str, Any], task: Task, path: Path) -> Path | None:
    """Fig. 2 style: source | SynCT with the source mask, and a target slice with reference and predictions.

    With several structures each method gets its own panel and each structure its own colour.
    """
    if not examples:
        return None
    if len(task.labels) > 1:
        return _structures_figure(examples, task, path)
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    for ax in axes:
        ax.axis("off")
    if "source" in examples:
        image, synct, mask = examples["source"]
        axes[0].imshow(image, cmap="gray", vmin=-1, vmax=1)
        _contour(axes[0], mask, PALETTE["reference"])
        axes[0].set_title(f"{task.source_modality} with its mask")
        axes[1].imshow(synct, cmap="gray", vmin=-1, vmax=1)
        _contour(axes[1], mask, PALETTE["reference"])
        axes[1].set_title(f"Syn{task.target_modality} (inherits the mask)")
    if "target" in examples:
        image, mask, preds = examples["target"]
        axes[2].imshow(image, cmap="gray", vmin=-1, vmax=1)
        _contour(axes[2], mask, PALETTE["reference"], "reference")
        for name, pred in preds.items():
            _contour(axes[2], pred, PALETTE.get(name, "y"), name)
        what = "reference and predictions" if mask is not None else "predictions (no reference mask)"
        axes[2].set_title(f"{task.target_modality} {examples.get('target_case', '')}: {what}", fontsize=9)
        if axes[2].get_legend_handles_labels()[0]:  # nothing to name when no contour was drawn
            axes[2].legend(loc="lower right", fontsize=7, framealpha=0.6)
    return _png(fig, path)


def _predictions_section(predictions: dict[str, Any], task: Task) -> tuple[str, str, str]:
    """Where the target masks are, per method, and plainly whether any of them could be scored."""
    target = task.target_modality
    lines = [
        f"Every {target} image the run was given (data.target, data.evaluation, data.predict) is segmented by every "
        f"method; the masks lie on each image's original grid in `{predictions['folder']}/<method>/<case>.nii.gz`."
    ]
    if not predictions["labelled"]:
        lines.append(
            f"No {target} labels were given (no data.evaluation folder), so these masks are not scored: the Dice "
            f"values below, if any, are on source-domain test subjects only. Check the masks by eye, or add "
            f"data.evaluation with reference masks to measure them."
        )
    rows = [[method, count] for method, count in predictions["counts"].items()]
    header = ["method", f"{target} masks written"]
    text = " ".join(lines)
    return (
        f"{target} masks",
        text + "\n\n" + _md_table(header, rows),
        f"<p>{html.escape(text)}</p>" + _html_table(header, rows),
    )


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    return to_markdown(rows_from(header, rows), header)


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    return to_html(rows_from(header, rows), header)


def write_report(
    run_dir: Path,
    *,
    config: Config,
    task: Task,
    rows: list[dict[str, Any]],
    fidelity: list[dict[str, Any]],
    timings: dict[str, float],
    examples: dict[str, Any],
    predictions: dict[str, Any] | None = None,
    components: list[dict[str, Any]] | None = None,
    extra_sections: list[tuple[str, str, str]] = (),
) -> Path:
    """Write report.md, report.html and the figures; returns the HTML path.

    ``predictions`` says where the target masks are (``folder``, ``counts`` per method, ``labelled``: how many
    target images had reference masks). ``components`` lists what ran (`da_seg.provenance.components`: config key,
    name, plugin, package, version). ``extra_sections`` are ``(title, markdown, html)`` triples other layers add
    (statistics, selection).
    """
    scored = any(r["test"] == task.target_modality for r in rows)
    where = "phantom evaluation" if config.data.phantom is not None else "evaluation"
    figures = [boxplot(rows, task.target_modality, run_dir / "fig_dice_boxplot.png", where)] if scored else []
    example_png = examples_figure(examples, task, run_dir / "fig_examples.png")
    if example_png:
        figures.append(example_png)

    sections: list[tuple[str, str, str]] = []
    if predictions is not None:
        sections.append(_predictions_section(predictions, task))
    header = ["method", "training data", "test data", "cases", "Dice", "HD95 (mm)", "ASSD (mm)"]
    if len(task.labels) > 1:  # evaluate_case averages each metric over the structures
        header[4:] = [f"{h}, mean of {len(task.labels)} structures" for h in header[4:]]
    summary = summary_rows(rows)
    sections.append(("Segmentation (Table 1)", _md_table(header, summary), _html_table(header, summary)))
    if len(task.labels) > 1:
        sh = ["method", "test data", *[f"Dice {lab}" for lab in task.labels]]
        srows = structure_rows(rows, task.labels)
        sections.append(("Per structure", _md_table(sh, srows), _html_table(sh, srows)))
    present = {str(r["method"]).split("@")[0] for r in rows}
    labels = {k: v for k, v in METHOD_LABELS.items() if k in present}  # only the methods this run trained
    sections.append(
        (
            "Methods",
            "\n".join(f"- `{k}`: {v}" for k, v in labels.items()),
            "<ul>" + "".join(f"<li><code>{k}</code>: {v}</li>" for k, v in labels.items()) + "</ul>",
        )
    )
    if fidelity:
        keys = [k for k in fidelity[0] if k != "case"]
        frow = [["mean ± sd", *[mean_sd([r[k] for r in fidelity]) for k in keys]]]
        fh = ["", *keys]
        note = (
            f"Syn{task.target_modality} against the true {task.target_modality} of the same phantom subject, "
            "in target units inside the body."
        )
        sections.append(
            ("Translation fidelity", note + "\n\n" + _md_table(fh, frow), f"<p>{note}</p>" + _html_table(fh, frow))
        )
    if components:
        cols = ["key", "kind", "name", "plugin", "package", "version"]
        sections.append(("What ran", to_markdown(components, cols), to_html(components, cols)))
    sections.extend(extra_sections)
    case_keys = list(dict.fromkeys(k for r in rows for k in r))
    case_rows = [[r.get(k, "") for k in case_keys] for r in rows]
    sections.append(("Per case", _md_table(case_keys, case_rows), _html_table(case_keys, case_rows)))
    trow = [[k, f"{v:.1f}"] for k, v in timings.items()]
    sections.append(
        ("Time per stage (s)", _md_table(["stage", "seconds"], trow), _html_table(["stage", "seconds"], trow))
    )

    title = f"da_seg report: {config.run_name} ({task.name}, {task.source_modality} → {task.target_modality})"
    md = [f"# {title}", ""]
    for png in figures:
        md.append(f"![{png.stem}]({png.name})")
    for name, text, _ in sections:
        md += ["", f"## {name}", "", text]
    (run_dir / "report.md").write_text("\n".join(md) + "\n")

    imgs = "".join(
        f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">' for p in figures
    )
    body = "".join(f"<h2>{html.escape(name)}</h2>{content}" for name, _, content in sections)
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}"
        "th{background:#f3f3f3}img{max-width:100%;margin:0.5em 0}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{imgs}{body}</body></html>"
    )
    out = run_dir / "report.html"
    out.write_text(page)
    return out
