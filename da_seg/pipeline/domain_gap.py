"""How unlike the target images are to the source images in what they cover: the report's "Source vs target
images" section and a warning in the run's log where the difference is large enough to matter.

Why: on a real abdomen-pelvis CT (34 cm along the body) with prostate MR crops (10 cm) as the labelled source, a run
finished cleanly and its CT "prostate" was the bladder; nothing in the run or report hinted at it (issue 41). The
method assumes that both domains show the same anatomy; this section checks what can be checked without CT labels:
the length along the body axis, how much of the in-plane crop window each image fills, and the native voxel size.

The thresholds are ours, set so that the default pelvic phantom (MR 84 mm and CT 112 mm long, both filling the
160 mm crop window) passes and the real pair above is flagged.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from da_seg.data import Domain, PreparedCase

LENGTH_RATIO = 1.5  # longest / shortest median length along the body axis
COVERAGE_GAP = 0.25  # difference in the median share of the crop window the images fill
SPACING_RATIO = 2.0  # coarser / finer median native voxel size, per axis


class DomainGapWarning(UserWarning):
    """The target images cover other anatomy or resolution than the source images (`compare_domains`)."""


@dataclass(frozen=True)
class DomainSummary:
    """What one domain's images cover (medians over its images; lengths in mm).

    Attributes:
        images: how many images.
        length_mm: extent along the body axis (z) on the canonical grid (of the slab kept, with ``data.extent``).
        fov_mm: in-plane extent ``(y, x)`` on the canonical grid.
        window_share: share of the in-plane crop window the image fills (1: all of it; the rest is padding).
        spacing_mm: native voxel size ``(z, y, x)`` (the file's, sorted to the canonical axes' order).
    """

    images: int
    length_mm: float
    fov_mm: tuple[float, float]
    window_share: float
    spacing_mm: tuple[float, float, float]


def summarise(cases: Sequence[PreparedCase], domain: Domain) -> DomainSummary | None:
    """Medians of the `DomainSummary` measures over ``cases``; None without cases."""
    if not cases:
        return None
    window = np.array(domain.size_hw) * np.array(domain.spacing_zyx[1:])
    lengths, fovs, shares, spacings = [], [], [], []
    for case in cases:
        extent_zyx = np.array(case.grid.shape) * np.array(case.grid.spacing[::-1])
        kept = case.image.shape[0] * case.grid.spacing[2] if case.z_range else extent_zyx[0]  # `da_seg.extent`
        lengths.append(kept)
        fovs.append(extent_zyx[1:])
        shares.append(float(np.prod(np.minimum(extent_zyx[1:] / window, 1.0))))
        native = np.array(case.original.spacing[::-1])  # (z, y, x) of the file; canonical order when axial
        spacings.append(native)
    fov = np.median(fovs, axis=0)
    spacing = np.median(spacings, axis=0)
    return DomainSummary(
        len(cases),
        float(np.median(lengths)),
        (float(fov[0]), float(fov[1])),
        float(np.median(shares)),
        (float(spacing[0]), float(spacing[1]), float(spacing[2])),
    )


def compare_domains(source: DomainSummary, target: DomainSummary, names: tuple[str, str] = ("MR", "CT")) -> list[str]:
    """The differences between two domains' summaries large enough to matter, each as one sentence."""
    a, b = names
    found = []
    longer, shorter = (b, a) if target.length_mm >= source.length_mm else (a, b)
    ratio = max(source.length_mm, target.length_mm) / max(min(source.length_mm, target.length_mm), 1e-6)
    if ratio >= LENGTH_RATIO:
        found.append(
            f"the {longer} images are {ratio:.1f}x as long along the body axis as the {shorter} images "
            f"({target.length_mm if longer == b else source.length_mm:.0f} vs "
            f"{source.length_mm if longer == b else target.length_mm:.0f} mm): the {longer} shows anatomy the "
            f"{shorter} never does, and a mask may land on another organ; "
            + (
                "set data.extent = {name = 'mutual_information'} to cut each target image to the source's anatomy"
                if longer == b
                else f"crop the {longer} to the same region"
            )
        )
    gap = abs(source.window_share - target.window_share)
    if gap >= COVERAGE_GAP:
        less = a if source.window_share < target.window_share else b
        share = min(source.window_share, target.window_share)
        found.append(
            f"the {less} images fill {share:.0%} of the in-plane crop window (the rest is padding), the "
            f"{b if less == a else a} images {max(source.window_share, target.window_share):.0%}: the translator "
            f"may render the padding as tissue; choose data.size to fit the smaller field of view"
        )
    for axis, i in (("slice", 0), ("in-plane", 1)):
        coarse, fine = max(source.spacing_mm[i], target.spacing_mm[i]), min(source.spacing_mm[i], target.spacing_mm[i])
        if fine > 0 and coarse / fine >= SPACING_RATIO:
            which = a if source.spacing_mm[i] > target.spacing_mm[i] else b
            found.append(
                f"the {which} images' native {axis} spacing is {coarse / fine:.1f}x the other's ({coarse:.2g} vs "
                f"{fine:.2g} mm): one domain is blurrier on the common grid"
            )
    return found


def domain_gap_section(
    source: DomainSummary | None, target: DomainSummary | None, names: tuple[str, str] = ("MR", "CT")
) -> list[tuple[str, str, str]]:
    """The report's section (title, markdown, html): both domains side by side and what differs."""
    if source is None or target is None:
        return []
    header = ["", *names]
    rows = [
        ["images", str(source.images), str(target.images)],
        ["length along the body axis (mm)", f"{source.length_mm:.0f}", f"{target.length_mm:.0f}"],
        ["in-plane field of view (mm)", *(f"{s.fov_mm[0]:.0f} x {s.fov_mm[1]:.0f}" for s in (source, target))],
        ["share of the crop window filled", f"{source.window_share:.0%}", f"{target.window_share:.0%}"],
        ["native spacing z, y, x (mm)", *(", ".join(f"{v:.2g}" for v in s.spacing_mm) for s in (source, target))],
    ]
    found = compare_domains(source, target, names)
    verdict = (
        "Differences that matter: " + "; ".join(found) + "."
        if found
        else "No difference large enough to matter was found in extent, field of view or resolution."
    )
    md = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(r) + " |" for r in rows]
        + ["", f"Medians over each domain's images. {verdict}"]
    )
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    head = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"
    tag = "p class='warn'" if found else "p"
    page = f"<table>{head}{cells}</table><{tag}>{html.escape(verdict)}</{tag.split()[0]}>"
    return [("Source vs target images", md, page)]


def warn_domain_gap(source: DomainSummary | None, target: DomainSummary | None, names: tuple[str, str]) -> None:
    """Each difference `compare_domains` finds as a `DomainGapWarning`: the run's log says it before training."""
    if source is not None and target is not None:
        for text in compare_domains(source, target, names):
            warnings.warn(f"source vs target images: {text}", DomainGapWarning, stacklevel=2)
