"""docs/plugins.md's walk-through is a test: its code is the example plugin's, verbatim, and the installed plugin runs
end to end with one component of every kind (segmenter, loss, augmentation, translator, metric, intensity, task)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples/plugin_template"
DOC = ROOT / "docs/plugins.md"
SHOWN = re.compile(r"<!-- file: (?P<path>\S+) -->\n```\w*\n(?P<code>.*?)```", re.DOTALL)


def test_docs_show_the_example_plugin_verbatim() -> None:
    shown = {m["path"]: m["code"] for m in SHOWN.finditer(DOC.read_text())}
    modules = {str(p.relative_to(ROOT)) for p in (TEMPLATE / "daseg_example_plugin").glob("*.py")}
    assert modules - {"examples/plugin_template/daseg_example_plugin/__init__.py"} <= set(shown), "module not shown"
    assert "examples/plugin_template/example.toml" in shown
    stale = [path for path, code in shown.items() if (ROOT / path).read_text() != code]
    assert not stale, f"docs/plugins.md shows an outdated copy of {stale}; paste the file again"


def _python(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``python ARGS`` with the temporary install on the path and only its entry point loaded."""
    env = {**os.environ, "PYTHONPATH": str(site), "DASEG_PLUGINS": "example_plugin", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


DASEG = "import sys; from da_seg.cli import main; sys.argv[0] = 'daseg'; main()"


def test_installed_example_plugin_runs_end_to_end(tmp_path: Path) -> None:
    source, site = tmp_path / "src", tmp_path / "site"
    shutil.copytree(TEMPLATE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*install, "--target", str(site), str(source)], check=True, capture_output=True)
    assert "da_seg" in (next(site.glob("daseg_example_plugin-*.dist-info")) / "entry_points.txt").read_text()

    overrides = ['output="runs"', f'data.phantom.cache="{tmp_path / "phantom"}"', 'runtime.device="cpu"']
    overrides.append("segmentation.epochs=1")
    sets = [arg for o in overrides for arg in ("--set", o)]
    _python(["-c", DASEG, "run", str(source / "example.toml"), *sets], site, tmp_path)

    run = tmp_path / "runs/example"
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "example_mr2ct" and config["translator"]["name"] == "example_moments"
    assert config["segmentation"]["loss"]["name"] == "example_focal"
    assert [a["name"] for a in config["segmentation"]["augment"]] == ["example_blur"]
    assert json.loads((run / "translator/model/meta.json").read_text())["component"] == "example_moments"
    domains = json.loads((run / "translator/model/domains.json").read_text())
    assert domains["source"]["intensity"] == {"name": "example_minmax"}
    assert json.loads((run / "seg_synct/model/meta.json").read_text())["model"] == {"name": "tiny_fcn", "width": 4}
    assert (run / "report.md").is_file()

    check = f"""
from da_seg import METRICS, read_volume
from da_seg.metrics.segmentation import evaluate_case
from da_seg.plugins import component_table
from da_seg.translators import load_translator
import numpy as np

mine = {{(r.kind, r.name) for r in component_table() if r.plugin == "example_plugin"}}
kinds = {{"segmenters", "losses", "augmentations", "translators", "metrics", "intensities", "tasks"}}
assert {{k for k, _ in mine}} == kinds, mine
translator = load_translator("runs/example/translator/model")
assert type(translator).__name__ == "MomentMatching"
out = translator.translate(np.linspace(-1, 1, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8))
assert out.shape == (2, 8, 8) and out.dtype == np.float32 and -1 <= out.min() <= out.max() <= 1
prediction = read_volume("runs/example/predictions/synct/eval_000.nii.gz")
reference = read_volume({str(tmp_path / "phantom/evaluation/labels/eval_000.nii.gz")!r})
value = METRICS.get("example_sensitivity")(prediction.array, reference.array, reference.spacing_zyx)
row = evaluate_case(prediction.array, reference.array, reference.spacing_zyx, metrics=["example_sensitivity"])
assert 0.0 <= value <= 1.0 and row == {{"example_sensitivity": value}}, (value, row)
"""
    _python(["-c", check], site, tmp_path)
