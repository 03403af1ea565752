"""Careless and hostile inputs through every command (issue 19): each gives exit code 2 and one line naming the file
or key and the fix (or a correct result), and none deletes or overwrites anything the command did not create.

Every test hashes the folders a command must not touch before and after. The data are the tiny volumes of
tests/test_errors.py (6 x 16 x 16 voxels), so each case takes about a second.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import typer
from test_errors import config, ct, fails, invoke, make_data, mr, prostate, write
from test_volume import write_dicom_series
from typer.testing import CliRunner

from da_seg.data import Domain
from da_seg.registry import INTENSITIES
from da_seg.volume import Volume


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path: its SHA-256, or where a symlink points (links are not followed)."""
    found = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = "link:" + os.readlink(path)
            elif path.is_file():
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return make_data(tmp_path / "data")


@pytest.fixture
def untouched(tmp_path: Path, data):
    """Checks after the test that nothing under data/ changed (the test may damage data before it starts)."""
    state: dict[str, dict[str, str]] = {}

    def start() -> None:
        state["before"] = snapshot(tmp_path / "data")

    yield start
    assert "before" in state, "call untouched() once the data are set up"
    assert snapshot(tmp_path / "data") == state["before"]


# -- 1. nothing lost: run names, --force, --resume ----------------------------------------------------------------
@pytest.mark.parametrize("name", [".", "..", "../data", "a/b", "a\\\\b", ""])
def test_run_name_must_be_a_plain_name(tmp_path: Path, data, name: str) -> None:
    """Issue 19: ``name = "."`` with --force deleted the whole output folder, ``"../data"`` the data."""
    (tmp_path / "runs/other").mkdir(parents=True)
    (tmp_path / "runs/other/provenance.json").write_text("{}")
    path = config(tmp_path, *data)
    path.write_text(f'name = "{name}"\n' + path.read_text())
    before = snapshot(tmp_path)
    fails(invoke("run", path, "--force"), f"key 'name' = {name.replace(chr(92) * 2, chr(92))!r}", "plain folder name")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("flag", ["--force", "--resume"])
def test_force_and_resume_touch_only_run_directories(tmp_path: Path, data, flag: str, untouched) -> None:
    folder = tmp_path / "runs/run"
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("months of work")
    untouched()
    what = "delete" if flag == "--force" else "write into"
    fails(
        invoke("run", config(tmp_path, *data), flag),
        f"{folder} exists but is not a da_seg run directory (no provenance.json); refusing to {what} it",
    )
    assert (folder / "thesis.tex").read_text() == "months of work" and len(list(folder.iterdir())) == 1


def test_force_does_not_follow_a_link_out_of_output(tmp_path: Path, data, untouched) -> None:
    source, _ = data
    (tmp_path / "runs").mkdir()
    (source / "provenance.json").write_text("{}")  # even a folder that looks like a run
    (tmp_path / "runs/run").symlink_to(source, target_is_directory=True)
    untouched()
    fails(invoke("run", config(tmp_path, *data), "--force"), "is a link out of 'output'", "refusing to delete it")


# -- 1. nothing lost: predict / translate outputs -----------------------------------------------------------------
@pytest.fixture
def segmenter(tmp_path: Path) -> Path:
    from da_seg.segmentation import TrainedSegmenter, build_segmenter

    spec = {"name": "resunet25d", "base": 4, "depth": 2}
    domain = Domain((6.0, 4.0, 4.0), (16, 16), INTENSITIES.create("ct_window", low=-500.0, high=500.0))
    model = TrainedSegmenter(build_segmenter(spec, 1, 1), spec, context=1, domain=domain.settings)
    return model.save(tmp_path / "segmenter")


@pytest.fixture
def translator(tmp_path: Path) -> Path:
    from da_seg.translators import save_domains
    from da_seg.translators.identity import Identity

    folder = tmp_path / "translator"
    Identity().save(folder)
    source = Domain((6.0, 4.0, 4.0), (16, 16), INTENSITIES.create("mr_percentile"))
    save_domains(folder, source, Domain((6.0, 4.0, 4.0), (16, 16), INTENSITIES.create("ct_window")))
    return folder


def _model(kind: str, segmenter_dir: Path, translator_dir: Path) -> tuple[str, Path]:
    return ("predict", segmenter_dir) if kind == "predict" else ("translate", translator_dir)


@pytest.mark.parametrize("command", ["predict", "translate"])
def test_output_over_its_own_input_file_is_refused(tmp_path: Path, data, command, segmenter, translator, untouched):
    """Issue 19: ``daseg predict IN -o IN`` overwrote the input CT with its mask (translate the same with MR)."""
    name, model = _model(command, segmenter, translator)
    image = data[1] / "images/t0.nii.gz"
    untouched()
    fails(invoke(name, image, "--model", model, "-o", image), "would overwrite the input", str(image))


@pytest.mark.parametrize("command", ["predict", "translate"])
def test_folder_into_itself_is_refused_when_names_collide(tmp_path, data, command, segmenter, translator, untouched):
    """Issue 19: a folder predicted (or translated) into itself overwrote every input."""
    name, model = _model(command, segmenter, translator)
    folder = data[1] / "images"
    untouched()
    fails(invoke(name, folder, "--model", model, "-o", folder), "would overwrite the input")


def test_into_a_dicom_input_folder_is_refused(tmp_path: Path, segmenter: Path, untouched) -> None:
    series = tmp_path / "data/series"
    (tmp_path / "data").mkdir(exist_ok=True)
    write_dicom_series(Volume(ct(0), (4.0, 4.0, 6.0)), series)
    untouched()
    fails(invoke("predict", series, "--model", segmenter, "-o", series / "mask.nii.gz"), "would overwrite the input")


def test_folder_into_itself_works_when_names_cannot_collide(tmp_path: Path, segmenter: Path) -> None:
    folder = tmp_path / "data"
    for i in range(2):
        write(ct(i), folder / f"t{i}.mha")
    before = snapshot(folder)
    result = invoke("predict", folder, "--model", segmenter, "-o", folder, "--device", "cpu")
    assert result.exit_code == 0, result.output
    after = snapshot(folder)
    assert {k: after[k] for k in before} == before and sorted(set(after) - set(before)) == ["t0.nii.gz", "t1.nii.gz"]


def test_two_inputs_for_one_output_are_refused(tmp_path: Path, segmenter: Path, untouched) -> None:
    folder = tmp_path / "data"
    write(ct(0), folder / "t0.mha")
    write(ct(1), folder / "t0.nrrd")
    untouched()
    fails(invoke("predict", folder, "--model", segmenter, "-o", tmp_path / "out"), "would both be written there")
    assert not (tmp_path / "out").exists()


# -- 1. nothing lost: daseg phantom --------------------------------------------------------------------------------
@pytest.fixture
def phantom_app() -> typer.Typer:
    from da_seg.cli import add_plugin_commands

    app = typer.Typer()
    app.command("noop")(lambda: None)  # typer needs two commands to keep sub-command names
    add_plugin_commands(app)  # as daseg adds them: wrapped in its error handling
    return app


def test_phantom_into_a_data_folder_is_refused(tmp_path: Path, data, phantom_app: typer.Typer, untouched) -> None:
    """Issue 19: ``daseg phantom --out`` into a data folder mixed old and new subjects."""
    untouched()
    result = CliRunner().invoke(phantom_app, ["phantom", "--out", str(data[0]), "--n-mr", "1", "--n-ct", "1"])
    fails(result, f"{data[0]}: folder is not empty and holds no phantom (phantom.json)", "give an empty or new folder")


def test_phantom_reuses_only_a_folder_of_the_same_settings(tmp_path: Path, phantom_app: typer.Typer) -> None:
    args = ["phantom", "--out", str(tmp_path / "ph"), "--n-mr", "1", "--n-ct", "1", "--n-eval", "0"]
    assert CliRunner().invoke(phantom_app, args).exit_code == 0
    first = snapshot(tmp_path / "ph")
    assert CliRunner().invoke(phantom_app, args).exit_code == 0  # same settings: the same files again
    assert snapshot(tmp_path / "ph") == first
    fails(CliRunner().invoke(phantom_app, [*args, "--seed", "2"]), "holds a phantom written with other settings")
    assert snapshot(tmp_path / "ph") == first


def test_phantom_with_a_negative_seed(tmp_path: Path, phantom_app: typer.Typer) -> None:
    result = CliRunner().invoke(phantom_app, ["phantom", "--out", str(tmp_path / "ph"), "--seed", "-1"])
    fails(result, "phantom seed and subject counts must be >= 0, got seed -1")
    assert not (tmp_path / "ph").exists()


# -- 3. validation finds what run would ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[runtime]\ndevice = "tpu"', "key 'runtime.device' = 'tpu': Value error, unknown device; use 'auto', 'cpu'"),
        ('[runtime]\ndevice = "cuda:x"', "key 'runtime.device' = 'cuda:x'"),
        ("seed = -1", "key 'seed' = -1: Input should be greater than or equal to 0"),
        ("[data.phantom]\nseed = -3", "key 'data.phantom.seed' = -3"),
        ("[data]\nspacing = [3.0, 0.01, 0.01]", "every spacing must be at least 0.1 mm"),
        ("[segmentation]\nval_fraction = 0.99", "key 'segmentation.val_fraction' = 0.99"),
        ('translator = { name = "cyclegan", width = "four" }', "argument 'width' = 'four' is not an integer"),
        ('[segmentation]\naugment = [{ name = "rotation", p = "often" }]', "argument 'p' = 'often' is not a number"),
    ],
    ids=["device", "device-index", "seed", "phantom-seed", "spacing", "val-fraction", "type", "augment-type"],
)
def test_validate_refuses_what_run_would(tmp_path: Path, text: str, fragment: str) -> None:
    """Issue 19: these passed ``daseg validate`` (and ``device = "tpu"`` crashed ``daseg run`` with a traceback)."""
    path = tmp_path / "bad.toml"
    translator = "" if text.startswith("translator") else 'translator = "identity"\n'
    path.write_text(f'task = "prostate_mr2ct"\n{translator}{text}\n')
    fails(invoke("validate", path), fragment)
    fails(invoke("run", path), fragment)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--device", "foo"], "--device = 'foo': unknown device"),
        (["--device", "cuda:x"], "--device = 'cuda:x': unknown device"),
        (["--threshold", "2.0"], "threshold = 2.0: must be a probability in (0, 1)"),
        (["--threshold", "0"], "threshold = 0.0: must be a probability in (0, 1)"),
    ],
)
def test_predict_options(tmp_path: Path, data, segmenter: Path, args: list[str], fragment: str, untouched) -> None:
    untouched()
    image = data[1] / "images/t0.nii.gz"
    fails(invoke("predict", image, "--model", segmenter, "-o", tmp_path / "m.nii.gz", *args), fragment)
    assert not (tmp_path / "m.nii.gz").exists()


def test_translate_device(tmp_path: Path, data, translator: Path, untouched) -> None:
    untouched()
    image = data[0] / "images/s0.nii.gz"
    fails(invoke("translate", image, "--model", translator, "-o", tmp_path / "x.nii.gz", "--device", "tpu"), "tpu")


def _huge_header(path: Path) -> Path:
    """An uncompressed NIfTI whose header promises 8192^3 voxels (2 TiB)."""
    nii = write(ct(0), path.with_name(path.name.replace(".nii.gz", ".nii")))
    path.unlink()
    raw = bytearray(nii.read_bytes())
    raw[40:48] = np.array([3, 8192, 8192, 8192], "<i2").tobytes()
    nii.write_bytes(bytes(raw))
    return nii


def _huge_spacing(path: Path) -> Path:
    """A 6 x 16 x 16 CT of 5 m voxels: 5000 x 20000 x 20000 voxels on the task's grid."""
    write(ct(0), path, spacing=(5000.0, 5000.0, 5000.0))
    return path


def _png(path: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.uint8)), str(path.with_suffix(".png")))
    path.with_suffix(".png").replace(path)
    return path


def _uncompressed(path: Path) -> Path:
    path.write_bytes(gzip.decompress(path.read_bytes()))
    return path


def _one_voxel(path: Path) -> Path:
    write(np.full((1, 1, 1), -1000, np.int16), path)
    return path


def _dicom_gap(path: Path) -> Path:
    folder = path.with_name("t0")
    write_dicom_series(Volume(ct(0), (4.0, 4.0, 6.0)), folder)
    (folder / "slice003.dcm").unlink()
    path.unlink()
    return folder


def _self_link(path: Path) -> Path:
    path.unlink()
    path.symlink_to(path.name)
    return path


def _parent_link(path: Path) -> Path:
    link = path.with_name("t9")
    link.symlink_to("..", target_is_directory=True)
    return link


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (_huge_header, ["a 8192 x 8192 x 8192 x 1 voxel grid needs", "more than fits in memory"]),
        (_huge_spacing, ["a 5000 x 20000 x 20000 voxel grid needs", "use a coarser spacing (data.spacing)"]),
        (_png, ["the file is a PNG image but named .nii.gz", "rename it to match its format"]),
        (_uncompressed, ["the file is an uncompressed NIfTI but named .nii.gz", "rename it"]),
        (_one_voxel, ["covers only 1 x 1 pixels in-plane on the common grid", "the networks need at least 4"]),
        (_dicom_gap, ["DICOM slice positions are not evenly spaced: 12.00 mm between slice002.dcm and slice004.dcm"]),
        (_self_link, ["a symlink loop or a broken link; remove it"]),
        (_parent_link, ["links back to", "a folder that contains it (a symlink loop)"]),
    ],
    ids=["huge-header", "huge-grid", "png", "uncompressed-gz", "one-voxel", "dicom-gap", "self-link", "parent-link"],
)
def test_bad_target_images(tmp_path: Path, data, damage: Callable[[Path], Path], fragments: list[str], untouched):
    """Issue 19: tracebacks (UnboundLocalError, ITK/NumPy allocation errors, symlink loops) or silently wrong data."""
    bad = damage(data[1] / "images/t0.nii.gz")
    untouched()
    line = fails(invoke("run", config(tmp_path, *data)), *fragments)
    assert str(bad) in line
    assert not (tmp_path / "runs/run/translator").exists()  # refused while preparing the data


def test_constant_image_with_a_mask(tmp_path: Path, data, untouched) -> None:
    """Issue 19: an all-zero MR with a non-empty mask trained and gave numbers."""
    write(np.zeros_like(mr(1)), data[0] / "images/s1.nii.gz")
    untouched()
    fails(
        invoke("run", config(tmp_path, *data)),
        f"{data[0] / 'images/s1.nii.gz'}: the image is constant (every voxel 0.0) but its label marks "
        f"{int(prostate().sum())} voxels",
    )


def test_huge_data_size(tmp_path: Path, data, untouched) -> None:
    untouched()
    path = config(tmp_path, *data)
    path.write_text(path.read_text().replace("size = [16, 16]", "size = [300000, 300000]"))
    fails(invoke("run", path), "cropped to data.size [300000, 300000]", "use a smaller data.size")


def test_study_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_bytes('base = "run.toml"\n[grid]\nseed = [0, 1]\nname = "\xe9tude"\n'.encode("latin-1"))
    fails(invoke("study", path), f"{path}: not UTF-8 text")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    fails(invoke("study", path), f"{path}: not UTF-8 text")


# -- 3. damaged checkpoints ---------------------------------------------------------------------------------------
class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"optimizer": _Payload()}))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [_pickle, _truncate], ids=["pickle", "truncated"])
@pytest.mark.parametrize("file", ["weights.safetensors", "meta.json"])
def test_predict_with_a_damaged_model(tmp_path, data, segmenter: Path, damage, file: str, untouched) -> None:
    damage(segmenter / file)
    untouched()
    line = fails(invoke("predict", data[1] / "images/t0.nii.gz", "--model", segmenter, "-o", tmp_path / "m.nii.gz"))
    assert str(segmenter / file) in line
    assert not Path("PWNED").exists()


def test_resume_with_a_damaged_segmenter_checkpoint(tmp_path: Path, data, monkeypatch, untouched) -> None:
    """Issue 19: a truncated state.pt, or a pickle in its place, gave a torch.load traceback on --resume."""
    monkeypatch.chdir(tmp_path)
    untouched()
    path = config(tmp_path, *data)
    assert invoke("run", path).exit_code == 0
    run = tmp_path / "runs/run"
    (state,) = run.glob("seg_synct*/**/last/state.pt")
    stage = run / state.relative_to(run).parts[0]
    good = state.read_bytes()
    for damage, fragment in ((_pickle, "unreadable training state"), (_truncate, "unreadable training state")):
        state.write_bytes(good)
        damage(state)
        (stage / "done.json").unlink(missing_ok=True)  # the stage is unfinished: resuming reads its state
        line = fails(invoke("run", path, "--resume"), f"{state}: {fragment}", "rerun with --force")
        assert "Traceback" not in line and not (tmp_path / "PWNED").exists()
    result = invoke("run", path, "--force")  # a real run directory is redone
    assert result.exit_code == 0, result.output
    assert (run / "provenance.json").exists()


def test_load_state_never_runs_a_pickle(tmp_path: Path, monkeypatch) -> None:
    from da_seg.checkpoints import load_state
    from da_seg.errors import DataError

    monkeypatch.chdir(tmp_path)
    _pickle(tmp_path / "state.pt")
    with pytest.raises(DataError, match="unreadable training state"):
        load_state(tmp_path)
    assert not (tmp_path / "PWNED").exists()
