"""The pelvic phantom: hard on CT (prostate within 20 HU of adjacent muscle), clear on MR; layout and command.

Measures (on each subject's tissue map, one voxel eroded from every region edge to skip partial volume):
CT ``|mean(prostate) - mean(adjacent muscle)|`` in HU, where adjacent muscle is levator ani and obturator internus
within 20 mm of the prostate; MR separation ``|mean difference| / pooled sd`` of the same two regions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from prostate_mr2ct import phantom
from prostate_mr2ct.phantom import ADJACENT_MUSCLES, PROSTATE_TISSUES, phantom_subject, write_phantom
from scipy import ndimage
from typer.testing import CliRunner

from da_seg import TASKS
from da_seg.cli import add_plugin_commands
from da_seg.data import find_cases
from da_seg.volume import read_volume

SEEDS = (0, 1, 2, 3)


def regions(rendered: phantom.PhantomImage) -> tuple[np.ndarray, np.ndarray]:
    tissues = rendered.tissues.array
    prostate = np.isin(tissues, PROSTATE_TISSUES)
    distance = ndimage.distance_transform_edt(~prostate, sampling=rendered.tissues.spacing_zyx)
    muscle = ndimage.binary_erosion(np.isin(tissues, ADJACENT_MUSCLES)) & (distance < 20)
    image = rendered.image.array.astype(np.float64)
    return image[ndimage.binary_erosion(prostate)], image[muscle]


@pytest.mark.parametrize("seed", SEEDS)
def test_ct_prostate_is_within_20_hu_of_adjacent_muscle(seed: int) -> None:
    prostate, muscle = regions(phantom_subject(seed, "CT"))
    assert prostate.size > 100 and muscle.size > 100
    assert abs(prostate.mean() - muscle.mean()) <= 20.0
    assert 25 <= prostate.mean() <= 55  # soft tissue HU, not a bright organ
    # noise comparable to the contrast: the two regions overlap
    assert abs(prostate.mean() - muscle.mean()) / np.sqrt((prostate.var() + muscle.var()) / 2) < 1.5


@pytest.mark.parametrize("seed", SEEDS)
def test_mr_prostate_is_clearly_distinct(seed: int) -> None:
    prostate, muscle = regions(phantom_subject(seed, "MR"))
    separation = abs(prostate.mean() - muscle.mean()) / np.sqrt((prostate.var() + muscle.var()) / 2)
    assert separation > 2.0


def test_modalities_look_like_their_scanners() -> None:
    ct, mr = phantom_subject(5, "CT"), phantom_subject(5, "MR")
    assert ct.image.shape == phantom.CT_SHAPE and mr.image.shape == phantom.MR_SHAPE
    assert ct.image.spacing_zyx[0] <= 2.0 and 3.0 <= mr.image.spacing_zyx[0] <= 4.0  # thin CT, thick MR slices
    fov_ct = np.array(ct.image.shape[1:]) * ct.image.spacing_zyx[1:]
    fov_mr = np.array(mr.image.shape[1:]) * mr.image.spacing_zyx[1:]
    assert (fov_ct > fov_mr).all()
    hu = ct.image.array
    assert hu.min() <= -950 and hu.max() >= 800  # air/gas and cortical bone
    assert (ct.tissues.array == phantom.TABLE_SHELL).any()
    assert mr.image.array.min() >= 0  # magnitude image (Rician)
    # prostate of 25-55 mm in its largest in-plane extent
    mask = ct.mask.array
    extent = np.ptp(np.nonzero(mask.any(axis=(0, 1)))[0]) * ct.image.spacing[0]
    assert 25 <= extent <= 60


def test_same_seed_same_subject_and_paired_anatomy() -> None:
    a, b = phantom_subject(7, "MR"), phantom_subject(7, "MR")
    np.testing.assert_array_equal(a.image.array, b.image.array)
    ct = phantom_subject(7, "CT")
    # one anatomy: the prostate sits at the same physical place in both modalities
    centres = []
    for rendered in (a, ct):
        index = np.argwhere(rendered.mask.array).mean(0)[::-1]  # (x, y, z)
        centres.append(np.asarray(rendered.mask.to_sitk().TransformContinuousIndexToPhysicalPoint(index)))
    assert np.linalg.norm(centres[0] - centres[1]) < 3.0


def test_write_phantom_layout(tmp_path: Path) -> None:
    write_phantom(tmp_path, n_source=2, n_target=1, n_evaluation=1, n_target_labelled=1, paired=True, seed=3)
    source = find_cases(tmp_path / "source", labelled=True, binary=True)
    assert [c.id for c in source] == ["mr_000", "mr_001"]
    assert [c.id for c in find_cases(tmp_path / "paired_target", labelled=False)] == ["mr_000", "mr_001"]
    assert len(find_cases(tmp_path / "evaluation", labelled=True)) == 1
    assert len(find_cases(tmp_path / "target_labelled", labelled=True)) == 1
    assert not (tmp_path / "target" / "labels").exists()  # CT labels never sit next to translation-training CT
    mask = read_volume(source[0].label)
    assert mask.array.dtype == np.uint8 and set(np.unique(mask.array)) == {0, 1}
    assert read_volume(tmp_path / "target/images/ct_000.nii.gz").array.dtype == np.int16


def test_task_ships_the_phantom_and_a_grid_that_holds_the_prostate() -> None:
    task = TASKS.create("prostate_mr2ct")
    assert task.phantom is write_phantom
    # the coarse CPU grid (2 mm, 96 x 96 = 192 mm) still holds the prostate with margin in both modalities
    for modality in ("MR", "CT"):
        rendered = phantom_subject(11, modality)
        index = np.argwhere(rendered.mask.array)
        spacing = np.asarray(rendered.mask.spacing_zyx)
        centre = (np.asarray(rendered.mask.shape) - 1) / 2
        furthest = np.abs((index - centre) * spacing)[:, 1:].max()
        assert furthest < 96 - 20


def test_phantom_command(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("noop")(lambda: None)  # typer needs two commands to keep sub-command names
    add_plugin_commands(app)  # as daseg adds them: wrapped in its error handling
    runner = CliRunner()
    result = runner.invoke(app, ["phantom", "--out", str(tmp_path), "--n-mr", "1", "--n-ct", "1", "--n-eval", "1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "source/images").iterdir()) == ["mr_000.nii.gz"]
    assert not (tmp_path / "paired_target").exists()
    (tmp_path / "blocker").write_text("a file where a folder must go")
    result = runner.invoke(app, ["phantom", "--out", str(tmp_path / "blocker"), "--n-mr", "1", "--n-ct", "1"])
    assert result.exit_code == 2


@pytest.mark.parametrize("seed", [0, 3])
def test_the_examples_grid_puts_mr_and_ct_anatomy_at_the_same_pixels(seed: int) -> None:
    """Regression: crops centred on each volume's grid put the CT prostate ~10 pixels anterior of the MR's (the
    CT field of view is centred on the table), so the CycleGAN learnt to move anatomy; crops centred on the body
    (the default) align the two within a few pixels."""
    from da_seg.config import load_config
    from da_seg.pipeline import domains

    config = load_config(Path(__file__).parents[3] / "examples" / "prostate_mr2ct.toml")
    mr_domain, ct_domain = domains(config, TASKS.create(config.task))
    centres = []
    for modality, domain in (("MR", mr_domain), ("CT", ct_domain)):
        rendered = phantom_subject(seed, modality)
        prepared = domain.prepare(rendered.image, rendered.mask, id=modality)
        centres.append(np.argwhere(prepared.mask)[:, 1:].mean(0))  # in-plane (row, column)
    assert np.abs(centres[0] - centres[1]).max() < 3


# -- realism = "clinical" (issue 41) ------------------------------------------------------------------------------
def test_the_clinical_preset_has_the_real_worlds_differences() -> None:
    """Each option does what docs/data.md says: a CT >= 30 cm long with the prostate in its lower part, a 10 cm MR
    field of view in 8-bit values, the same anatomy (the prostate's volume agrees across modalities)."""
    from prostate_mr2ct.phantom import CLINICAL

    ct, mr = phantom_subject(3, "CT", "clinical"), phantom_subject(3, "MR", "clinical")
    length = ct.image.shape[0] * ct.image.spacing_zyx[0]
    assert length >= 300
    z = np.nonzero(ct.mask.array.any(axis=(1, 2)))[0]
    assert z.mean() < 0.35 * ct.image.shape[0]  # the prostate in the lower part of the long CT
    fov = np.array(mr.image.shape[1:]) * np.array(mr.image.spacing_zyx[1:])
    assert np.allclose(fov, 100.0)
    assert mr.image.array.dtype == np.uint8 and mr.image.array.max() == CLINICAL["mr_levels"]
    ml = {m: r.mask.array.sum() * np.prod(r.mask.spacing_zyx) for m, r in (("MR", mr), ("CT", ct))}
    assert 0.8 < ml["MR"] / ml["CT"] < 1.25


def test_the_clinical_coil_shading_stays_within_its_stated_range() -> None:
    from prostate_mr2ct.phantom import CLINICAL, coil_ramp

    low, high = CLINICAL["bias_amplitude"]
    for seed in range(20):
        field = coil_ramp((4, 80, 80), np.random.default_rng(seed))
        spread = (field.max() - field.min()) / 2
        assert low - 1e-6 <= spread <= high + 1e-6 and abs(field.mean() - 1) < 0.05


def test_the_default_preset_renders_what_it_always_did(tmp_path: Path) -> None:
    """The README job must not change: the default phantom's files and marker are those of earlier versions."""
    import hashlib
    import json

    digest = hashlib.sha256()
    for seed in (0, 7):
        for modality in ("MR", "CT"):
            rendered = phantom_subject(seed, modality)
            for volume in (rendered.image, rendered.mask, rendered.tissues):
                digest.update(volume.array.tobytes())
    # measured on the code before the clinical preset existed (commit 1399fef)
    assert digest.hexdigest() == DEFAULT_DIGEST
    write_phantom(tmp_path / "p", n_source=1, n_target=1, n_evaluation=1, seed=2)
    assert "realism" not in json.loads((tmp_path / "p/phantom.json").read_text())


def test_a_config_names_the_preset_and_other_tasks_refuse_it(tmp_path: Path) -> None:
    from da_seg.api import get_task
    from da_seg.config import PhantomConfig, parse_config
    from da_seg.errors import ConfigError
    from da_seg.pipeline.dataset import ensure_phantom

    small = {"n_source": 2, "n_target": 1, "n_evaluation": 1, "n_target_labelled": 0, "paired": False}
    default = PhantomConfig(**small)
    assert "realism" not in default.model_dump()  # fingerprints and cache folders of older configs stay
    task = get_task(parse_config({"task": "prostate_mr2ct"}))
    folder = ensure_phantom(task, PhantomConfig(**small, realism="clinical"), tmp_path / "clinical")
    assert json_realism(folder) == "clinical"
    ct = read_volume(next((folder / "target/images").iterdir()))
    assert ct.shape[0] * ct.spacing_zyx[0] >= 300
    with pytest.raises(ConfigError, match="realism = 'fancy': the prostate phantom has"):
        ensure_phantom(task, PhantomConfig(**small, realism="fancy"), tmp_path / "fancy")
    assert not (tmp_path / "fancy").exists()
    cardiac = get_task(parse_config({"task": "cardiac_mr2ct"}))
    with pytest.raises(ConfigError, match="the phantom of task 'cardiac_mr2ct' has no presets"):
        ensure_phantom(cardiac, PhantomConfig(**small, realism="clinical"), tmp_path / "cardiac")


def json_realism(folder: Path) -> str | None:
    import json

    return json.loads((folder / "phantom.json").read_text()).get("realism")


DEFAULT_DIGEST = "4dcae84773196c44e80339410c3eca7fbf4bec73730feb7a24e6edeba3f3b9f1"


def test_extent_matching_finds_the_prostates_slab_in_a_long_clinical_ct() -> None:
    """A known answer: the CT's prostate (its label, never shown to the matcher) lies inside the slab that mutual
    information with two other subjects' MR picks, and the slab is a small part of the 320 mm CT."""
    from da_seg import EXTENTS, load_config
    from da_seg.api import get_task
    from da_seg.pipeline.dataset import domains

    config = load_config(Path(__file__).parents[3] / "examples/prostate_mr2ct_clinical.toml")
    mr_domain, ct_domain = domains(config, get_task(config))
    references = [mr_domain.prepare(phantom_subject(s, "MR", "clinical").image).image for s in (11, 12)]
    matcher = EXTENTS.build({"name": "mutual_information"})
    for seed in (21, 22):
        ct = phantom_subject(seed, "CT", "clinical")
        case = ct_domain.prepare(ct.image, ct.mask)
        start, stop = matcher(case, references, ct_domain.spacing_zyx)
        prostate = np.nonzero(case.mask.any(axis=(1, 2)))[0]
        assert start <= prostate.min() and prostate.max() < stop
        assert stop - start < 0.4 * case.image.shape[0]
