"""The catalogue of bad inputs (docs/errors.md), each fed through the CLI: exit code 2 and one line that names the
file or key and says what to do, no traceback unless ``--debug``.

Data problems are found while the data are prepared, before anything trains, so every case here is fast: tiny
hand-written volumes (6 x 16 x 16 voxels), the identity translator and a 4-channel Res-U-Net.
"""

from __future__ import annotations

import errno
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from typer.testing import CliRunner

from da_seg.cli import app
from da_seg.errors import DasegError
from da_seg.volume import Volume, write_volume

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
SPACING = (4.0, 4.0, 6.0)  # (x, y, z) mm
SHAPE = (6, 16, 16)  # (z, y, x)

CONFIG = """
task = "prostate_mr2ct"
seed = 0
output = "{output}"
baselines = []
translator = {{ name = "identity" }}

[data]
source = "{source}"
target = "{target}"
spacing = [6.0, 4.0, 4.0]
size = [16, 16]

[segmentation]
model = {{ name = "resunet25d", base = 4, depth = 2 }}
epochs = 1
batch_size = 8
augment = []

[runtime]
device = "cpu"
"""


# -- tiny data ----------------------------------------------------------------------------------------------
def body() -> np.ndarray:
    _, y, x = np.indices(SHAPE)
    return (y - 7.5) ** 2 + (x - 7.5) ** 2 < 36


def prostate() -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[1:5, 6:10, 6:10] = 1
    return mask


def mr(seed: int) -> np.ndarray:
    """Non-negative T2-like values: dark background, grey body, brighter prostate."""
    noise = np.random.default_rng(seed).normal(0, 10, SHAPE)
    return np.clip(body() * 300.0 + prostate() * 200.0 + noise, 0, None).astype(np.float32)


def ct(seed: int) -> np.ndarray:
    """Hounsfield units: air -1000, soft tissue 40, a bony spot 900."""
    array = np.where(body(), 40.0, -1000.0) + np.random.default_rng(seed).normal(0, 5, SHAPE)
    array[:, 2:4, 7:9] = 900.0
    return array.astype(np.int16)


def write(array: np.ndarray, path: Path, *, mask: bool = False, **geometry) -> Path:
    return write_volume(Volume(array, geometry.pop("spacing", SPACING), **geometry), path, mask=mask)


def make_data(root: Path) -> tuple[Path, Path]:
    """``source/`` (4 labelled MR) and ``target/`` (3 CT) in the documented layout."""
    source, target = root / "source", root / "target"
    for i in range(4):
        write(mr(i), source / "images" / f"s{i}.nii.gz")
        write(prostate(), source / "labels" / f"s{i}.nii.gz", mask=True)
    for i in range(3):
        write(ct(i), target / "images" / f"t{i}.nii.gz")
    return source, target


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return make_data(tmp_path / "data")


def config(tmp_path: Path, source: Path, target: Path, extra: str = "", output: Path | None = None) -> Path:
    path = tmp_path / "run.toml"
    text = CONFIG.format(output=output or tmp_path / "runs", source=source, target=target)
    path.write_text(text + extra)
    return path


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def fails(result, *fragments: str, code: int = 2) -> str:
    """The one stderr line of a failed command, after checking exit code, fragments and the absent traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output
    return lines[0]


# -- data folders -------------------------------------------------------------------------------------------
def test_missing_data_folder(tmp_path: Path, data) -> None:
    source, _ = data
    result = invoke("run", config(tmp_path, source, tmp_path / "nowhere"))
    fails(result, f"data folder not found: {tmp_path / 'nowhere'}", "fix the path in the config's [data] table")


def test_empty_images_folder(tmp_path: Path, data) -> None:
    source, target = data
    shutil.rmtree(target / "images")
    (target / "images").mkdir()
    fails(invoke("run", config(tmp_path, source, target)), f"{target / 'images'}: no volumes found", "put the images")


def test_folder_without_images_subfolder(tmp_path: Path, data) -> None:
    source, target = data
    shutil.rmtree(target / "images")
    fails(invoke("run", config(tmp_path, source, target)), f"{target}: needs an images/ folder")


def test_image_without_label(tmp_path: Path, data) -> None:
    source, target = data
    (source / "labels/s2.nii.gz").unlink()
    line = fails(invoke("run", config(tmp_path, source, target)), "no label for image(s) s2", "add a label")
    assert str(source / "labels") in line


def test_label_without_image(tmp_path: Path, data) -> None:
    source, target = data
    (source / "images/s3.nii.gz").unlink()
    fails(invoke("run", config(tmp_path, source, target)), "no image for label(s) s3", "add the image")


# -- unreadable files ---------------------------------------------------------------------------------------
def _truncate(path: Path, keep: float) -> None:
    payload = path.read_bytes()
    path.write_bytes(payload[: int(len(payload) * keep)])


def _garbage(path: Path) -> None:
    path.write_bytes(b"not an image " * 20)


def _nii(path: Path) -> Path:
    """Replace the NIfTI at ``path`` by an uncompressed one cut short (ITK alone would read it as garbage)."""
    nii = write(mr(7), path.with_name(path.name.replace(".nii.gz", ".nii")))
    path.unlink()
    _truncate(nii, 0.8)
    return nii


def _mha(path: Path) -> Path:
    """Replace the NIfTI at ``path`` by a truncated MHA of the same case."""
    mha = path.with_name(path.name.replace(".nii.gz", ".mha"))
    write(mr(7), mha)
    path.unlink()
    _truncate(mha, 0.6)
    return mha


def _dicom(path: Path) -> Path:
    """Replace the NIfTI at ``path`` by a case folder of files that are not DICOM."""
    folder = path.with_name(path.name.replace(".nii.gz", ""))
    folder.mkdir()
    for i in range(3):
        (folder / f"IM{i}.dcm").write_bytes(b"\0" * 256)
    path.unlink()
    return folder


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (lambda p: (_truncate(p, 0.7), p)[1], ["the file is truncated or damaged", "copy or export it again"]),
        (_nii, ["the file is truncated or damaged", "copy or export it again"]),
        (lambda p: (_garbage(p), p)[1], ["cannot read the image; it is damaged", "copy or export it again"]),
        (_mha, ["cannot read the image; it is damaged", "copy or export it again"]),
        (_dicom, ["folder holds no DICOM series"]),
    ],
    ids=["truncated-nifti-gz", "truncated-nifti", "garbage-nifti", "truncated-mha", "not-dicom"],
)
def test_corrupt_files(tmp_path: Path, data, damage: Callable[[Path], Path], fragments: list[str]) -> None:
    source, target = data
    bad = damage(source / "images/s1.nii.gz")
    line = fails(invoke("run", config(tmp_path, source, target)), *fragments)
    assert str(bad) in line


# -- image/mask consistency -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("label", "fragment"),
    [
        (lambda: Volume(prostate()[:, :12], SPACING), "size [16, 12, 6] vs [16, 16, 6]"),
        (lambda: Volume(prostate(), (4.0, 4.0, 3.0)), "spacing [4.0, 4.0, 3.0] vs [4.0, 4.0, 6.0]"),
        (lambda: Volume(prostate(), SPACING, direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)), "direction"),
    ],
    ids=["size", "spacing", "orientation"],
)
def test_mask_geometry_differs(tmp_path: Path, data, label: Callable[[], Volume], fragment: str) -> None:
    source, target = data
    write_volume(label(), source / "labels/s0.nii.gz", mask=True)
    fails(
        invoke("run", config(tmp_path, source, target)),
        f"{source / 'labels/s0.nii.gz'}: geometry differs from its image s0.nii.gz",
        fragment,
        "resample the label onto its image's grid",
    )


def test_non_binary_mask(tmp_path: Path, data) -> None:
    source, target = data
    mask = prostate()
    mask[2, 7, 7] = 2
    write(mask, source / "labels/s1.nii.gz", mask=True)
    fails(
        invoke("run", config(tmp_path, source, target)),
        f"{source / 'labels/s1.nii.gz'}: mask values [0, 1, 2]",
        "a binary task needs 0 and 1 only",
        "relabel it",
    )


def test_non_integer_mask(tmp_path: Path, data) -> None:
    source, target = data
    write(prostate().astype(np.float32) * 0.5, source / "labels/s1.nii.gz")
    fails(invoke("run", config(tmp_path, source, target)), "mask has non-integer values [0.0, 0.5]")


def test_empty_mask_warns_and_the_run_goes_on(tmp_path: Path, data) -> None:
    """Documented exit code 0: the case trains as all background; the warning is one line naming the file."""
    source, target = data
    write(np.zeros(SHAPE, np.uint8), source / "labels/s3.nii.gz", mask=True)
    result = invoke("run", config(tmp_path, source, target))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {source / 'labels/s3.nii.gz'}: mask is empty (no foreground voxel)"]
    assert (tmp_path / "runs/run/report.html").exists()


# -- dimensions and values ----------------------------------------------------------------------------------
def test_2d_image(tmp_path: Path, data) -> None:
    source, target = data
    path = target / "images/t0.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(ct(0)[3]), str(path))
    fails(invoke("run", config(tmp_path, source, target)), f"{path}: expected a 3D volume, got a 2D image")


def test_4d_image(tmp_path: Path, data) -> None:
    source, target = data
    path = target / "images/t0.nii.gz"
    series = sitk.JoinSeries([sitk.GetImageFromArray(ct(0)), sitk.GetImageFromArray(ct(1))])
    sitk.WriteImage(series, str(path))
    fails(
        invoke("run", config(tmp_path, source, target)),
        f"{path}: expected a 3D volume, got a 4D image",
        "give one 3D volume per file",
    )


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_voxels(tmp_path: Path, data, value: float) -> None:
    source, target = data
    image = mr(2)
    image[3, 4, 4:7] = value
    write(image, source / "images/s2.nii.gz")
    fails(
        invoke("run", config(tmp_path, source, target)),
        f"{source / 'images/s2.nii.gz'}: 3 voxels are NaN or infinite",
        "replace them",
    )


def test_ct_not_in_hounsfield_units(tmp_path: Path, data) -> None:
    """Stored values 0..4095 without the DICOM rescale (HU + 1024)."""
    source, target = data
    write((ct(1).astype(np.int32) + 1024).astype(np.uint16), target / "images/t1.nii.gz")
    fails(
        invoke("run", config(tmp_path, source, target)),
        f"{target / 'images/t1.nii.gz'}: does not look like a CT in Hounsfield units",
        "apply the DICOM rescale slope/intercept",
    )


def test_ct_check_can_be_turned_off(tmp_path: Path, data) -> None:
    source, target = data
    write((ct(1).astype(np.int32) + 1024).astype(np.uint16), target / "images/t1.nii.gz")
    extra = '\n[data.target_intensity]\nname = "ct_window"\ncheck = false\n'
    text = config(tmp_path, source, target).read_text().replace("[segmentation]", extra + "\n[segmentation]")
    (tmp_path / "run.toml").write_text(text)
    result = invoke("run", tmp_path / "run.toml")
    assert result.exit_code == 0, result.output


def test_source_and_target_swapped(tmp_path: Path, data) -> None:
    """CT images in the MR folder are refused by the MR preset (they hold air at -1000)."""
    source, target = data
    for i in range(4):
        write(ct(i), source / "images" / f"s{i}.nii.gz")
    fails(
        invoke("run", config(tmp_path, source, target)),
        "looks like a CT in Hounsfield units, not MR",
        "check that the MR and CT folders are not swapped",
    )


def test_mr_in_the_ct_folder(tmp_path: Path, data) -> None:
    source, target = data
    for i in range(3):
        write(mr(i), target / "images" / f"t{i}.nii.gz")
    fails(
        invoke("run", config(tmp_path, source, target)),
        "does not look like a CT in Hounsfield units",
        "check that the CT and MR folders are not swapped",
    )


# -- config -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('translator = { name = "cyclegun" }', ["unknown translator 'cyclegun'; did you mean 'cyclegan'"]),
        ('translator = { name = "cyclegan", widht = 4 }', ["got unknown argument 'widht' (did you mean 'width'?)"]),
        ('[segmentation]\nmodel = { name = "resunet2d" }', ["unknown segmenter 'resunet2d'"]),
        ('[segmentation]\nloss = { name = "dise" }', ["unknown loss 'dise'; did you mean 'dice'"]),
        ('[data]\ntarget_intensity = { name = "ct_windows" }', ["unknown intensity 'ct_windows'"]),
        ('[segmentation]\naugment = ["flipp"]', ["unknown augmentation 'flipp'; did you mean 'flip'?"]),
        ('[segmentation]\nepochs = "ten"', ["{path}: key 'segmentation.epochs' = 'ten'", "valid integer"]),
        ("[segmentation]\nepochs = -1", ["{path}: key 'segmentation.epochs' = -1", "greater than or equal to 1"]),
        ("[segmentation]\ncontext = -1", ["{path}: key 'segmentation.context' = -1", "greater than or equal to 0"]),
        ("[segmentation]\nepochz = 3", ["{path}: unknown key 'segmentation.epochz'", "check its spelling"]),
        ("colour = 1", ["{path}: unknown key 'colour'"]),
        ('[runtime]\nprecision = "fp8"', ["{path}: key 'runtime.precision' = 'fp8'"]),
        ("[runtime]\ndeterministic = 3", ["{path}: key 'runtime.deterministic' = 3"]),
        (
            '[segmentation]\naugment = [{ name = "random_ratio_crop", min_ratio = 1.5 }]',
            ["augmentation 'random_ratio_crop'", "need 0 < min_ratio <= max_ratio <= 1, got 1.5"],
        ),
        (
            '[segmentation]\naugment = [{ name = "random_ratio_crop", min_ratio = 0.0 }]',
            ["augmentation 'random_ratio_crop'", "got 0.0"],
        ),
        (
            '[segmentation]\naugment = [{ name = "centre_crop", ratio = 1.2 }]',
            ["augmentation 'centre_crop'", "ratio must be in (0, 1], got 1.2"],
        ),
        ("segmentation = [", ["{path}: not valid TOML"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_config_errors(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'task = "prostate_mr2ct"\n{text}\n')
    fails(invoke("validate", path), *[f.format(path=path) for f in fragments])


def test_override_with_a_bad_value(tmp_path: Path, data) -> None:
    source, target = data
    fails(
        invoke("run", config(tmp_path, source, target), "--set", "segmentation.context=-2"),
        "key 'segmentation.context' = -2",
    )


def test_debug_shows_the_traceback(tmp_path: Path, data) -> None:
    source, _ = data
    result = invoke("--debug", "run", config(tmp_path, source, tmp_path / "nowhere"))
    assert result.exit_code == 2 and "Traceback" in result.stderr and "data folder not found" in result.stderr


# -- output ---------------------------------------------------------------------------------------------------
def test_output_folder_not_writable(tmp_path: Path, data) -> None:
    """A regular file where a folder should be (chmod does not stop root, this does)."""
    source, target = data
    blocker = tmp_path / "somefile"
    blocker.write_text("not a folder")
    result = invoke("run", config(tmp_path, source, target, output=blocker / "runs"))
    fails(result, f"cannot write the run directory {blocker / 'runs/run'}", "choose another 'output'")


def test_disk_full_names_the_path(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    source, target = data

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", no_space)
    line = fails(invoke("run", config(tmp_path, source, target)), "disk full while writing", "free some space")
    assert str(tmp_path / "runs/run/cache") in line


def test_disk_full_inside_a_stage(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data cache lives elsewhere and is complete; the SynCT stage is the first to hit the full disk."""
    source, target = data
    path = config(tmp_path, source, target)
    path.write_text(path.read_text().replace("[data]\n", f'[data]\ncache = "{tmp_path / "cache"}"\n'))
    assert invoke("validate", path).exit_code == 0
    from da_seg import load_config
    from da_seg.data import find_cases
    from da_seg.pipeline import domains, get_task
    from da_seg.prepared import load_prepared

    cfg = load_config(path)
    source_domain, target_domain = domains(cfg, get_task(cfg))
    load_prepared(find_cases(source, labelled=True, binary=True), source_domain, tmp_path / "cache")
    load_prepared(find_cases(target, labelled=False), target_domain, tmp_path / "cache")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", no_space)
    fails(invoke("run", path), f"disk full while writing {tmp_path / 'runs/run/synct'}")


def _torch_save_fails(*args, **kwargs):
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3854080 vs 3853968")


def test_disk_full_in_torch_save_is_one_line(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save reports a full disk as a RuntimeError; a run on a full disk printed that traceback."""
    source, target = data
    monkeypatch.setattr(torch, "save", _torch_save_fails)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    line = fails(invoke("run", config(tmp_path, source, target)), "disk full while writing", "free some space")
    assert "state.pt" in line


def test_a_writer_error_with_free_space_is_not_called_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    from da_seg.checkpoints import save_checkpoint

    monkeypatch.setattr(torch, "save", _torch_save_fails)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        save_checkpoint(tmp_path, {"m": torch.nn.Linear(1, 1)}, {"component": "x"}, state={"step": 1})
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "state.pt").exists()  # no half-written file


def test_existing_run_directory_needs_resume_or_force(tmp_path: Path, data) -> None:
    source, target = data
    (tmp_path / "runs/run").mkdir(parents=True)
    (tmp_path / "runs/run/config.json").write_text("{}")
    fails(
        invoke("run", config(tmp_path, source, target)),
        f"run directory {tmp_path / 'runs/run'} exists; pass --resume to continue it or --force to redo it",
    )


def test_extend_translator_without_resume_is_one_line(tmp_path: Path, data) -> None:
    source, target = data
    fails(
        invoke("run", config(tmp_path, source, target), "--extend-translator"),
        "--extend-translator continues the translator of an earlier run: use it with --resume",
    )
    assert not (tmp_path / "runs").exists()


# -- plugins --------------------------------------------------------------------------------------------------
@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_named_plugin_that_fails_to_import(tmp_path: Path, plugin_dir: Path) -> None:
    (plugin_dir / "daseg_broken_plugin.py").write_text("import frobnicate_missing_dependency\n")
    config = tmp_path / "ok.toml"
    config.write_text('task = "prostate_mr2ct"\ntranslator = "identity"\n')
    fails(
        invoke("--plugin", "daseg_broken_plugin", "validate", config),
        "plugin module 'daseg_broken_plugin' could not be imported",
        "frobnicate_missing_dependency",
        "check that it is installed",
    )
    assert invoke("validate", config).exit_code == 0  # the others still work


def test_plugin_registering_a_taken_name(tmp_path: Path, plugin_dir: Path) -> None:
    (plugin_dir / "daseg_greedy_plugin.py").write_text(
        "from da_seg import hookimpl\n\n@hookimpl\ndef register_losses(register):\n    register('bce', lambda: None)\n"
    )
    config = tmp_path / "ok.toml"
    config.write_text('task = "prostate_mr2ct"\ntranslator = "identity"\n')
    try:
        fails(
            invoke("--plugin", "daseg_greedy_plugin", "validate", config),
            "plugin 'daseg_greedy_plugin': loss 'bce' is already registered by plugin 'da_seg.losses'",
            "pick another name",
        )
    finally:
        sys.modules.pop("daseg_greedy_plugin", None)
    assert invoke("validate", config).exit_code == 0


# -- safe loading ---------------------------------------------------------------------------------------------
@pytest.fixture
def segmenter_dir(tmp_path: Path) -> Path:
    from da_seg.segmentation import TrainedSegmenter, build_segmenter

    spec = {"name": "resunet25d", "base": 4, "depth": 2}
    model = TrainedSegmenter(build_segmenter(spec, 1, 1), spec, context=1)
    return model.save(tmp_path / "segmenter")


@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    return write(ct(0), tmp_path / "ct.nii.gz")


def test_predict_refuses_a_translator_checkpoint(tmp_path: Path, ct_file: Path) -> None:
    from da_seg.translators.identity import Identity

    Identity().save(tmp_path / "translator")
    fails(
        invoke("predict", ct_file, "--model", tmp_path / "translator", "-o", tmp_path / "mask.nii.gz"),
        f"{tmp_path / 'translator'}: not a segmenter model (component 'identity')",
    )
    assert not (tmp_path / "mask.nii.gz").exists()


def test_predict_refuses_weights_of_another_shape(tmp_path: Path, ct_file: Path, segmenter_dir: Path) -> None:
    meta = (segmenter_dir / "meta.json").read_text()
    (segmenter_dir / "meta.json").write_text(re.sub(r'"base": 4', '"base": 8', meta))
    fails(
        invoke("predict", ct_file, "--model", segmenter_dir, "-o", tmp_path / "mask.nii.gz"),
        f"{segmenter_dir / 'weights.safetensors'}: weights do not fit 'model' as configured",
    )


def test_predict_without_a_model(tmp_path: Path, ct_file: Path) -> None:
    fails(
        invoke("predict", ct_file, "--model", tmp_path / "nothing", "-o", tmp_path / "mask.nii.gz"),
        f"{tmp_path / 'nothing'}: not a model folder (no meta.json); pass a run's model folder",
    )


def test_translator_loader_refuses_a_segmenter_checkpoint(segmenter_dir: Path) -> None:
    from da_seg.translators import load_translator

    with pytest.raises(DasegError, match="holds a 'segmenter' checkpoint, not a translator"):
        load_translator(segmenter_dir)


def test_checkpoints_never_unpickle_code() -> None:
    """Every torch.load in the package and plugins passes weights_only=True (safetensors elsewhere)."""
    offenders = []
    for path in [*ROOT.glob("da_seg/**/*.py"), *ROOT.glob("plugins/**/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.search(r"\btorch\.load\(", line) and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert not offenders, offenders
    assert any("weights_only=True" in p.read_text() for p in ROOT.glob("da_seg/**/*.py"))
