"""domain_gap: what the source and target images cover, side by side, and the differences that matter flagged
(issue 41: a real CT 34 cm long against 10 cm MR crops gave a bladder for a prostate, with no hint)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from da_seg.data import Domain, PreparedCase
from da_seg.pipeline.domain_gap import (
    DomainGapWarning,
    DomainSummary,
    compare_domains,
    domain_gap_section,
    summarise,
    warn_domain_gap,
)
from da_seg.registry import INTENSITIES
from da_seg.volume import Volume, read_volume

DOMAIN = Domain((3.0, 2.0, 2.0), (80, 80), INTENSITIES.build("ct_window"))


def _case(shape_zyx: tuple[int, int, int], native_xyz: tuple[float, float, float]) -> PreparedCase:
    """A prepared case with only its geometry: the canonical grid at the domain's spacing, the file's spacing."""
    grid = Volume(np.broadcast_to(np.zeros((), np.uint8), shape_zyx), spacing=(2.0, 2.0, 3.0))
    original = Volume(np.broadcast_to(np.zeros((), np.uint8), (1, 1, 1)), spacing=native_xyz)
    return PreparedCase("c", np.zeros((1, 80, 80), np.float32), None, original, grid)


def test_summarise_takes_medians_of_length_field_of_view_window_share_and_spacing() -> None:
    cases = [
        _case((10, 100, 80), (0.5, 0.5, 3.0)),
        _case((20, 40, 40), (0.6, 0.6, 3.6)),
        _case((30, 80, 80), (1, 1, 4)),
    ]
    summary = summarise(cases, DOMAIN)
    assert summary.images == 3 and summary.length_mm == 60.0  # 20 slices of 3 mm
    assert summary.fov_mm == (160.0, 160.0)
    assert summary.window_share == 1.0  # 200x160 and 160x160 fill the 160 mm window; 80x80 fills a quarter
    assert summary.spacing_mm == pytest.approx((3.6, 0.6, 0.6))
    assert summarise([], DOMAIN) is None


PHANTOM = (  # the default pelvic phantom (docs/data.md): nothing to flag
    DomainSummary(12, 84.0, (200.0, 200.0), 1.0, (3.5, 1.25, 1.25)),
    DomainSummary(16, 112.0, (384.0, 384.0), 1.0, (2.0, 2.0, 2.0)),
)
CROPS_VS_PLANNING_CT = (  # 10 cm MR crops at 1.5 mm against an abdomen-pelvis CT at 3 mm (issue 41)
    DomainSummary(40, 100.0, (100.0, 100.0), 0.39, (1.5, 1.5, 1.5)),
    DomainSummary(1, 340.0, (500.0, 500.0), 1.0, (3.0, 3.0, 3.0)),
)


def test_the_default_phantom_passes_and_the_real_worlds_pair_is_flagged() -> None:
    assert compare_domains(*PHANTOM) == []
    found = compare_domains(*CROPS_VS_PLANNING_CT)
    assert len(found) == 4
    assert found[0].startswith("the CT images are 3.4x as long along the body axis as the MR images (340 vs 100 mm)")
    assert found[0].endswith(
        "set data.extent = {name = 'mutual_information'} to cut each target image to the source's anatomy"
    )
    assert found[1].startswith("the MR images fill 39% of the in-plane crop window (the rest is padding), the CT")
    assert "native slice spacing is 2.0x" in found[2] and "native in-plane spacing is 2.0x" in found[3]


def test_the_report_section_puts_both_domains_side_by_side_and_the_log_warns() -> None:
    ((title, md, page),) = domain_gap_section(*CROPS_VS_PLANNING_CT)
    assert title == "Source vs target images"
    assert "| length along the body axis (mm) | 100 | 340 |" in md and "Differences that matter: the CT" in md
    assert "<p class='warn'>" in page
    with pytest.warns(DomainGapWarning) as record:
        warn_domain_gap(*CROPS_VS_PLANNING_CT, ("MR", "CT"))
    assert len(record) == 4 and str(record[0].message).startswith("source vs target images: the CT images are 3.4x")
    ((_, md, page),) = domain_gap_section(*PHANTOM)
    assert "No difference large enough to matter" in md and "warn" not in page
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_domain_gap(*PHANTOM, ("MR", "CT"))
    assert domain_gap_section(None, PHANTOM[1]) == []


def test_a_real_prostate_mr_and_a_real_abdomen_pelvis_ct_are_flagged(real_data: Path) -> None:
    """The user's situation: ProstateX T2 (57 mm long) against the TotalSegmentator CT (336 mm)."""
    mr = Domain((3.0, 2.0, 2.0), (80, 80), INTENSITIES.build("mr_percentile"))
    source = [mr.prepare(read_volume(real_data / "prostatex_t2_dicom/ProstateX-0000_t2_tra"))]
    target = [DOMAIN.prepare(read_volume(real_data / "pelvis_ct/totalsegmentator_example_ct.nii.gz"))]
    found = compare_domains(summarise(source, mr), summarise(target, DOMAIN))
    assert found and found[0].startswith("the CT images are 5.")
