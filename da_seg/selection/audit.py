"""Ranking checkpoints by a criterion, picking a translator snapshot, and auditing the criteria against the true
target Dice of each snapshot (Spearman's rho)."""

from __future__ import annotations

import html
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from da_seg.errors import ConfigError, DataError
from da_seg.metrics.segmentation import dice
from da_seg.registry import SELECTORS
from da_seg.selection.criteria import SEGMENTER, SNAPSHOT, TRANSLATOR, Case, Selector
from da_seg.stats import spearman
from da_seg.tables import to_html, to_markdown, write_csv


# -- ranking ----------------------------------------------------------------------------------------------------
def build_selector(spec: str | Mapping[str, Any] | Selector) -> Selector:
    """A selector from its name, a component table ``{"name": "kid", "size": 32}``, or the object itself."""
    return SELECTORS.build(spec) if isinstance(spec, str | Mapping) else spec


def rank_checkpoints(
    candidates: Sequence[tuple[str, Any]], selector: Selector | str | Mapping[str, Any], data: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Score every ``(name, candidate)`` with ``selector.score(candidate, **data)``; best first.

    Returns:
        Rows ``{"checkpoint", "criterion", "score", "rank", "seconds"}``, rank 1 the best (NaN scores last).
    """
    selector = build_selector(selector)
    rows = []
    for name, candidate in candidates:
        tic = time.perf_counter()
        score = float(selector.score(candidate, **data))
        rows.append(
            {"checkpoint": name, "criterion": selector.name, "score": score, "seconds": time.perf_counter() - tic}
        )
    sign = -1.0 if selector.higher_is_better else 1.0
    rows.sort(key=lambda r: (math.isnan(r["score"]), sign * r["score"] if not math.isnan(r["score"]) else 0.0))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def spearman_with_truth(
    scores: Sequence[float] | Mapping[str, float],
    true_dice: Sequence[float] | Mapping[str, float],
    *,
    higher_is_better: bool = True,
) -> float:
    """Spearman's rho (``scipy.stats.spearmanr``) between a criterion's scores and the true Dice of the same
    checkpoints, oriented so that +1 means the criterion ranks them exactly as the true Dice does (the sign is
    flipped for lower-is-better criteria). Mappings are aligned on the keys of ``scores``. NaN when undefined."""
    if isinstance(scores, Mapping):
        if not isinstance(true_dice, Mapping):
            raise TypeError("give scores and true_dice both as sequences or both as mappings")
        keys = list(scores)
        scores, true_dice = [scores[k] for k in keys], [true_dice[k] for k in keys]
    if len(scores) != len(true_dice):
        raise ValueError(f"{len(scores)} scores but {len(true_dice)} true Dice values")
    rho = spearman(list(scores), list(true_dice))
    return rho if higher_is_better else -rho


def checkpoints(workdir: str | Path) -> list[Path]:
    """The ``epoch_NNNN`` snapshots in a translator's workdir, oldest first."""
    workdir = Path(workdir)
    found = sorted(p for p in workdir.glob("epoch_*") if p.is_dir() and SNAPSHOT.search(p.name))
    if not found:
        raise DataError(
            f"{workdir}: no epoch_NNNN checkpoints; train the translator with keep_checkpoints > 0 and a workdir"
        )
    return found


def best_checkpoint(
    workdir: str | Path,
    selector: Selector | str | Mapping[str, Any],
    source: Sequence[Case],
    target: Sequence[np.ndarray],
    device: torch.device | str = "cpu",
) -> tuple[Path, list[dict[str, Any]]]:
    """The translator snapshot in ``workdir`` that a translator ``selector`` ranks first, and the ranking rows."""
    from da_seg.translators import load_translator

    selector = build_selector(selector)
    if selector.kind != TRANSLATOR:
        raise ConfigError(
            f"selector '{selector.name}' scores segmenters; pick translator checkpoints with a translator one"
        )
    paths = {p.name: p for p in checkpoints(workdir)}
    candidates = [(name, load_translator(path, device=device)) for name, path in paths.items()]
    rows = rank_checkpoints(candidates, selector, {"source": source, "target": target})
    return paths[rows[0]["checkpoint"]], rows


# -- audit against labelled target cases ------------------------------------------------------------------------
@dataclass
class CheckpointAudit:
    """Every criterion and the true target Dice per translator checkpoint, and how well each criterion ranks them.

    Attributes:
        rows: one per checkpoint: ``{"checkpoint", "epoch", "true_dice", <criterion>: score, ...}``.
        correlations: one per criterion: ``{"criterion", "kind", "higher_is_better", "rho", "checkpoints",
            "picked", "picked_dice", "best_dice"}``; ``rho`` is oriented (`spearman_with_truth`).
        seconds: time spent per criterion (all checkpoints) and on the true Dice (``"true_dice"``).
    """

    rows: list[dict[str, Any]]
    correlations: list[dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)

    def verdict(self, threshold: float = 0.6, min_checkpoints: int = 6) -> str:
        """One plain sentence: which label-free criteria reach ``rho >= threshold`` (over enough checkpoints)."""
        n = len(self.rows)
        good = [c for c in self.correlations if not math.isnan(c["rho"]) and c["rho"] >= threshold]
        listing = ", ".join(f"{c['criterion']} (rho {c['rho']:.3f})" for c in good)
        few = (
            f" Only {n} checkpoints were audited (fewer than {min_checkpoints}): treat rho as anecdotal."
            if n < min_checkpoints
            else ""
        )
        if good:
            return (
                f"Criteria reaching Spearman rho >= {threshold} with the true Dice over {n} checkpoints: {listing}."
                + few
            )
        truth = [r["true_dice"] for r in self.rows]
        if truth and max(truth) == min(truth):
            return (
                f"The true Dice is {truth[0]:.3f} for all {n} checkpoints, so no criterion's ranking can be checked "
                "(train the translator or the audit segmenters longer)." + few
            )
        best = max((c for c in self.correlations if not math.isnan(c["rho"])), key=lambda c: c["rho"], default=None)
        closest = f" The closest is {best['criterion']} (rho {best['rho']:.3f})." if best else ""
        none = f"No label-free criterion reaches Spearman rho >= {threshold} with the true Dice over {n} checkpoints."
        return none + closest + few

    def section(self, title: str = "Checkpoint selection without target labels") -> tuple[str, str, str]:
        """A report section ``(title, markdown, html)`` (``write_report``'s ``extra_sections`` takes these)."""
        note = (
            "Each saved translator checkpoint scored by every label-free criterion, next to the true Dice of a "
            "segmenter trained on its synthetic images and tested on labelled target cases. rho: Spearman "
            "correlation with the true Dice, oriented so that +1 is a perfect ranking."
        )
        corr_cols = ["criterion", "kind", "higher_is_better", "rho", "picked", "picked_dice", "best_dice"]
        verdict = self.verdict()
        md = "\n\n".join([note, to_markdown(self.rows), to_markdown(self.correlations, corr_cols), f"**{verdict}**"])
        page = (
            f"<p>{html.escape(note)}</p>{to_html(self.rows)}{to_html(self.correlations, corr_cols)}"
            f"<p><strong>{html.escape(verdict)}</strong></p>"
        )
        return title, md, page

    @classmethod
    def load(cls, folder: str | Path) -> CheckpointAudit:
        """Read back what `write` wrote (a resumed run rebuilds its report section from it)."""
        from da_seg.files import read_json

        data = read_json(Path(folder) / "audit.json")
        return cls(data["rows"], data["correlations"], data.get("seconds", {}))

    def write(self, folder: str | Path) -> Path:
        """``checkpoints.csv``, ``criteria.csv`` and ``audit.json`` in ``folder``."""
        from da_seg.files import write_json

        folder = Path(folder)
        write_csv(folder / "checkpoints.csv", self.rows)
        write_csv(folder / "criteria.csv", self.correlations)
        write_json(
            folder / "audit.json",
            {"rows": self.rows, "correlations": self.correlations, "seconds": self.seconds, "verdict": self.verdict()},
        )
        return folder


def target_dice(segmenter: Any, cases: Sequence[Case]) -> float:
    """Mean Dice over labelled target cases and structures of ``segmenter.segment(image)``."""
    scores = []
    for image, mask in cases:
        labels = np.asarray(segmenter.segment(np.asarray(image, np.float32)))
        classes = int(getattr(segmenter, "classes", max(1, int(np.max(mask)))))
        scores += [dice(labels == k, np.asarray(mask) == k) for k in range(1, classes + 1)]
    return float(np.mean(scores))


def audit_translator_checkpoints(
    workdir: str | Path,
    source_cases: Sequence[Case],
    target_images: Sequence[np.ndarray],
    eval_cases: Sequence[Case],
    selectors: Sequence[Selector | str | Mapping[str, Any]],
    segment_fn: Callable[[list[Case], Path], Any],
    *,
    held_out: Sequence[Case] | None = None,
    out_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> CheckpointAudit:
    """Score every ``epoch_NNNN`` snapshot in a translator ``workdir`` by every criterion and by the true target Dice.

    For each snapshot the SynCT of ``source_cases`` trains a segmenter through ``segment_fn(cases, folder)`` (the
    pipeline's own training, e.g. `train_segmenter`); its Dice on the labelled ``eval_cases`` is the truth.
    Translator criteria see ``held_out`` source cases (default ``source_cases``) and ``target_images``; segmenter
    criteria score that segmenter on ``target_images``.

    Args:
        workdir: the translator's training folder holding ``epoch_NNNN/`` snapshots.
        source_cases: labelled source ``(image, mask)`` cases; their SynCT trains each checkpoint's segmenter.
        target_images: unlabelled target volumes ``(z, H, W)`` in [-1, 1].
        eval_cases: labelled target ``(image, mask)`` cases (phantom or a user's audit set) for the true Dice.
        selectors: names, component tables or selector objects.
        segment_fn: ``(cases, folder) -> segmenter`` with ``segment(image) -> labels`` (and ``predict`` for the
            segmenter criteria).
        held_out: source cases the translator criteria score (cycle error on unseen images).
        out_dir: where ``segment_fn`` gets one folder per checkpoint; default a temporary folder.
        device: where the translators are loaded.
    """
    from da_seg.translators import load_translator

    built = [build_selector(s) for s in selectors]
    names = [s.name for s in built]
    if len(set(names)) != len(names):
        raise ConfigError(f"each criterion may be audited once, got {names}")
    paths = checkpoints(workdir)
    criteria_data = {"source": list(held_out if held_out is not None else source_cases), "target": list(target_images)}
    seconds = dict.fromkeys([*names, "true_dice"], 0.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="daseg-audit-") as tmp:
        root = Path(out_dir) if out_dir is not None else Path(tmp)
        for path in paths:
            translator = load_translator(path, device=device)
            row: dict[str, Any] = {"checkpoint": path.name, "epoch": int(SNAPSHOT.search(path.name).group(1))}
            for selector in (s for s in built if s.kind == TRANSLATOR):
                tic = time.perf_counter()
                row[selector.name] = float(selector.score(translator, **criteria_data))
                seconds[selector.name] += time.perf_counter() - tic
            tic = time.perf_counter()
            synct = [(translator.translate(im).astype(np.float32), mask) for im, mask in source_cases]
            segmenter = segment_fn(synct, root / path.name)
            row["true_dice"] = target_dice(segmenter, eval_cases)
            seconds["true_dice"] += time.perf_counter() - tic
            for selector in (s for s in built if s.kind == SEGMENTER):
                tic = time.perf_counter()
                row[selector.name] = float(selector.score(segmenter, target=list(target_images)))
                seconds[selector.name] += time.perf_counter() - tic
            rows.append(row)
    truth = [r["true_dice"] for r in rows]
    correlations = []
    for selector in built:
        scores = [r[selector.name] for r in rows]
        sign = 1.0 if selector.higher_is_better else -1.0
        pick = max(range(len(rows)), key=lambda i: (not math.isnan(scores[i]), sign * scores[i]))
        correlations.append(
            {
                "criterion": selector.name,
                "kind": selector.kind,
                "higher_is_better": selector.higher_is_better,
                "rho": spearman_with_truth(scores, truth, higher_is_better=selector.higher_is_better),
                "checkpoints": len(rows),
                "picked": rows[pick]["checkpoint"],
                "picked_dice": rows[pick]["true_dice"],
                "best_dice": max(truth),
            }
        )
    return CheckpointAudit(rows, correlations, seconds)
