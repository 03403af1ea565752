"""`daseg translate`: a saved translator applied to raw files keeps each input's geometry and writes target units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from da_seg.cli import app
from da_seg.data import Domain
from da_seg.registry import INTENSITIES, TRANSLATORS
from da_seg.translators import save_domains
from da_seg.volume import Volume, read_volume, write_volume


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A fitted histogram-matching translator with its domains, as the pipeline saves it."""
    rng = np.random.default_rng(0)
    translator = TRANSLATORS.create("histogram_matching")
    translator.fit(
        [rng.uniform(-1, 1, (4, 16, 16)).astype(np.float32)], [rng.uniform(-1, 0.5, (4, 16, 16)).astype(np.float32)]
    )
    folder = tmp_path / "model"
    translator.save(folder)
    source = Domain((3.0, 2.0, 2.0), (32, 32), INTENSITIES.create("mr_percentile"))
    target = Domain((3.0, 2.0, 2.0), (32, 32), INTENSITIES.create("ct_window"))
    save_domains(folder, source, target)
    return folder


def test_translate_keeps_geometry_and_writes_hu(tmp_path: Path, model_dir: Path) -> None:
    rng = np.random.default_rng(1)
    direction = (0.9848, 0.0, 0.1736, 0.0, 1.0, 0.0, -0.1736, 0.0, 0.9848)  # 10 degrees about y
    mr = Volume(rng.gamma(2.0, 100.0, (9, 40, 36)).astype(np.float32), (0.7, 0.8, 3.5), (5.0, -3.0, 12.0), direction)
    write_volume(mr, tmp_path / "mr.nii.gz")
    result = CliRunner().invoke(
        app, ["translate", str(tmp_path / "mr.nii.gz"), "--model", str(model_dir), "-o", str(tmp_path / "synct.nii.gz")]
    )
    assert result.exit_code == 0, result.output
    synct = read_volume(tmp_path / "synct.nii.gz")
    assert synct.same_geometry(mr)
    assert -500.0 - 1e-3 <= synct.array.min() and synct.array.max() <= 500.0 + 1e-3


def test_translate_a_real_t2_dicom_series(tmp_path: Path, model_dir: Path, real_data: Path) -> None:
    series = real_data / "prostatex_t2_dicom/ProstateX-0000_t2_tra"
    result = CliRunner().invoke(
        app, ["translate", str(series), "--model", str(model_dir), "-o", str(tmp_path / "synct.nii.gz")]
    )
    assert result.exit_code == 0, result.output
    assert read_volume(tmp_path / "synct.nii.gz").same_geometry(read_volume(series))


def test_translate_a_folder_and_a_bad_model(tmp_path: Path, model_dir: Path) -> None:
    inputs = tmp_path / "in"
    for name in ("a", "b"):
        write_volume(
            Volume(np.random.default_rng(2).gamma(2.0, 50.0, (4, 20, 20)).astype(np.float32)), inputs / f"{name}.nii.gz"
        )
    ok = CliRunner().invoke(app, ["translate", str(inputs), "--model", str(model_dir), "-o", str(tmp_path / "out")])
    assert ok.exit_code == 0, ok.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.nii.gz"]
    bad = CliRunner().invoke(app, ["translate", str(inputs), "--model", str(tmp_path), "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "missing file" in bad.stderr
