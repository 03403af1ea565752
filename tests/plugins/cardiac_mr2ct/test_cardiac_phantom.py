"""The thorax phantom: six structures in both modalities, bSSFP MR and contrast CT contrast, layout, determinism.

Contrast is measured on each subject's tissue map with one voxel eroded from every region edge (no partial volume).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from da_seg import TASKS, DataError
from da_seg.data import find_cases
from da_seg.volume import read_volume

pytest.importorskip("cardiac_mr2ct", reason="the cardiac_mr2ct plugin is not installed")
from cardiac_mr2ct import phantom
from cardiac_mr2ct.phantom import STRUCTURES, phantom_subject, write_phantom

SEEDS = (0, 1, 2)


def region_mean(rendered: phantom.PhantomImage, codes: tuple[int, ...]) -> float:
    inside = ndimage.binary_erosion(np.isin(rendered.tissues.array, codes))
    assert inside.sum() > 50
    return float(rendered.image.array[inside].astype(np.float64).mean())


@pytest.mark.parametrize("seed", SEEDS)
def test_ct_is_contrast_enhanced(seed: int) -> None:
    ct = phantom_subject(seed, "CT")
    left_blood = region_mean(ct, (phantom.LV_BLOOD, phantom.LA_BLOOD, phantom.AORTA))
    right_blood = region_mean(ct, (phantom.RV_BLOOD, phantom.RA_BLOOD))
    myocardium = region_mean(ct, (phantom.MYOCARDIUM,))
    assert 300 <= left_blood <= 450 and 200 <= right_blood <= 350 and right_blood < left_blood
    assert 60 <= myocardium <= 140
    assert region_mean(ct, (phantom.LUNG,)) < -700
    assert -150 <= region_mean(ct, (phantom.MEDIASTINUM,)) <= -40  # fat
    assert region_mean(ct, (phantom.CORTEX,)) > 400


@pytest.mark.parametrize("seed", SEEDS)
def test_mr_blood_bright_myocardium_dark_fat_bright(seed: int) -> None:
    mr = phantom_subject(seed, "MR")
    blood = region_mean(mr, (phantom.LV_BLOOD, phantom.RV_BLOOD))
    myocardium = region_mean(mr, (phantom.MYOCARDIUM,))
    fat = region_mean(mr, (phantom.MEDIASTINUM,))
    assert blood > 3 * myocardium
    assert fat > 2 * myocardium  # bSSFP: fat bright too, unlike CT (the domain gap)
    assert region_mean(mr, (phantom.LUNG,)) < myocardium


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_every_structure_is_present_and_the_lv_sits_inside_its_myocardium(modality: str) -> None:
    rendered = phantom_subject(0, modality)
    labels = rendered.mask.array
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == set(range(len(STRUCTURES) + 1))
    lv = labels == 1
    ring = ndimage.binary_dilation(lv, iterations=2) & ~lv
    # around the LV cavity: myocardium, except at the open base (mitral and aortic valves)
    assert (labels[ring] == 2).mean() > 0.7


def test_mr_and_ct_of_a_subject_share_the_anatomy() -> None:
    mr, ct = phantom_subject(1, "MR"), phantom_subject(1, "CT")
    for value in range(1, len(STRUCTURES) + 1):
        mm3 = [np.prod(v.spacing) * (v.array == value).sum() for v in (mr.mask, ct.mask)]
        # the MR grid covers less height (140 vs 144 mm) and has thick slices: volumes agree within 20%
        assert mm3[0] == pytest.approx(mm3[1], rel=0.2), STRUCTURES[value - 1]


def test_same_seed_same_subject() -> None:
    a, b = phantom_subject(5, "CT"), phantom_subject(5, "CT")
    assert np.array_equal(a.image.array, b.image.array) and np.array_equal(a.mask.array, b.mask.array)
    assert not np.array_equal(a.image.array, phantom_subject(6, "CT").image.array)


def test_write_phantom_layout(tmp_path: Path) -> None:
    write_phantom(tmp_path, n_source=2, n_target=1, n_evaluation=1, n_target_labelled=1, paired=True, seed=3)
    source = find_cases(tmp_path / "source", labelled=True)
    assert [c.id for c in source] == ["mr_000", "mr_001"]
    assert [c.id for c in find_cases(tmp_path / "paired_target", labelled=False)] == ["mr_000", "mr_001"]
    assert len(find_cases(tmp_path / "target", labelled=False)) == 1
    evaluation = find_cases(tmp_path / "evaluation", labelled=True)
    labels = read_volume(evaluation[0].label).array
    assert set(np.unique(labels)) <= set(range(7)) and labels.max() == 6
    assert read_volume(evaluation[0].image).array.min() < -500  # CT in HU
    assert len(find_cases(tmp_path / "target_labelled", labelled=True)) == 1
    with pytest.raises(DataError, match="not a folder"):
        write_phantom(tmp_path / "source" / "images" / "mr_000.nii.gz", n_source=1, n_target=1, n_evaluation=1)


@pytest.mark.parametrize("seed", [0, 2])
def test_the_examples_grid_puts_mr_and_ct_hearts_at_the_same_pixels(seed: int) -> None:
    """Both fields of view are planned on the heart, so the task keeps grid-centred crops (body-centred ones would
    leave the heart ~4 pixels apart: it lies left of the body's centre)."""
    from da_seg.config import load_config
    from da_seg.pipeline import domains

    config = load_config(Path(__file__).parents[3] / "examples" / "cardiac_mr2ct.toml")
    mr_domain, ct_domain = domains(config, TASKS.create(config.task))
    assert mr_domain.centre == ct_domain.centre == "grid"
    centres = []
    for modality, domain in (("MR", mr_domain), ("CT", ct_domain)):
        rendered = phantom_subject(seed, modality)
        prepared = domain.prepare(rendered.image, rendered.mask, id=modality)
        centres.append(np.argwhere(prepared.mask > 0)[:, 1:].mean(0))
    assert np.abs(centres[0] - centres[1]).max() < 3
