"""Plugin loading through pluggy: built-ins, inline plugins, entry points, failures."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from da_seg import hookimpl
from da_seg.errors import ConfigError
from da_seg.plugins import DEFAULT_PLUGINS, component_table, load_plugins, unload_plugin
from da_seg.registry import AUGMENTATIONS, LOSSES, SEGMENTERS

ROOT = Path(__file__).resolve().parents[1]


def _plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    return module


def test_builtins_register_through_the_hooks() -> None:
    rows = component_table()
    plugins = {r.plugin for r in rows}
    assert "da_seg.losses" in plugins
    assert {r.name for r in rows if r.kind == "losses"} >= {"bce", "dice", "mse", "l1"}
    assert set(DEFAULT_PLUGINS) >= {"da_seg.losses", "da_seg.segmenters", "da_seg.translators"}


def test_inline_plugin_registers_and_unregisters() -> None:
    def register_losses(register):
        register("half_l1", lambda: lambda a, b: (a - b).abs().mean() / 2)

    plugin = _plugin("inline_test_plugin", register_losses=register_losses)
    load_plugins([plugin])
    try:
        assert "half_l1" in LOSSES.names()
        assert next(e for e in LOSSES.entries() if e.name == "half_l1").plugin == "inline_test_plugin"
    finally:
        unload_plugin(plugin)
    assert "half_l1" not in LOSSES.names()


def test_plugin_taking_a_used_name_is_refused_with_the_first_owner() -> None:
    plugin = _plugin("greedy_plugin", register_losses=lambda register: register("bce", object))
    with pytest.raises(ConfigError, match=r"loss 'bce' is already registered by plugin 'da_seg.losses'"):
        load_plugins([plugin])
    unload_plugin(plugin)


def test_unloading_a_plugin_that_replaced_a_builtin_restores_the_builtin() -> None:
    """Issue 43: unloading a plugin that overrode ``bce`` (override=True) left no ``bce`` at all."""
    builtin = LOSSES.get("bce")
    plugin = _plugin("override_plugin", register_losses=lambda register: register("bce", object, override=True))
    load_plugins([plugin])
    try:
        assert LOSSES.get("bce") is object and LOSSES.entry("bce").plugin == "override_plugin"
    finally:
        unload_plugin(plugin)
    assert LOSSES.get("bce") is builtin and LOSSES.entry("bce").plugin == "da_seg.losses"


def test_misspelled_hook_is_caught() -> None:
    plugin = _plugin("typo_plugin", register_segmentors=lambda register: None)
    with pytest.raises(ConfigError, match="typo_plugin"):
        load_plugins([plugin])
    unload_plugin(plugin)


def test_named_module_that_does_not_import_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"plugin module 'no_such_pkg\.plugin' could not be imported"):
        load_plugins(["no_such_pkg.plugin"])


def _fake_install(site: Path, dist: str, entry: str, package: Path | None) -> None:
    """What pip leaves behind that matters for discovery: a dist-info with entry_points.txt (and the package)."""
    info = site / f"{dist}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[da_seg]\n{entry}\n")
    if package is not None:
        import shutil

        shutil.copytree(package, site / package.name)


def _daseg(args: list[str], site: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200", **env}
    code = "import sys; from da_seg.cli import main; sys.argv[0] = 'daseg'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=environ)


def test_entry_point_plugin_is_discovered(tmp_path: Path) -> None:
    """The real discovery path (importlib.metadata entry points), with the shipped plugin template."""
    template = ROOT / "examples/plugin_template"
    _fake_install(
        tmp_path,
        "daseg_example_plugin",
        "example_plugin = daseg_example_plugin.plugin",
        template / "daseg_example_plugin",
    )
    listed = _daseg(["plugins"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "example_plugin" in listed.stdout and "tiny_fcn" in listed.stdout and "example_blur" in listed.stdout
    validated = _daseg(["validate", str(template / "example.toml")], tmp_path)
    assert validated.returncode == 0, validated.stderr
    assert "TinyFCN" in validated.stdout
    hidden = _daseg(["plugins"], tmp_path, DASEG_PLUGINS="prostate_mr2ct")
    assert "tiny_fcn" not in hidden.stdout


def test_broken_entry_point_is_reported_and_others_still_load(tmp_path: Path) -> None:
    broken = tmp_path / "broken_plugin"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('missing dependency frobnicate')\n")
    _fake_install(tmp_path, "broken_plugin", "broken = broken_plugin", None)
    listed = _daseg(["plugins"], tmp_path)
    assert listed.returncode == 0
    assert "broken" in listed.stderr and "missing dependency frobnicate" in listed.stderr
    assert "bce" in listed.stdout  # the built-ins survived


def test_template_segmenter_and_augmentation_work() -> None:
    sys.path.insert(0, str(ROOT / "examples/plugin_template"))
    try:
        import torch
        from daseg_example_plugin import plugin

        load_plugins([plugin])
        net = SEGMENTERS.create("tiny_fcn", in_channels=3, classes=1, width=4)
        assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 1, 16, 16)
        assert AUGMENTATIONS.create("example_blur", max_sigma=0.5) is not None
    finally:
        unload_plugin("daseg_example_plugin.plugin")
        sys.path.remove(str(ROOT / "examples/plugin_template"))


def test_hooks_are_documented() -> None:
    from da_seg import hookspecs

    doc = (ROOT / "docs/plugins.md").read_text()
    hooks = [n for n in dir(hookspecs) if n.startswith("register_")]
    assert hooks and all(f"`{h}`" in doc for h in hooks), textwrap.shorten(str(hooks), 200)


# -- issue 19: one broken installed plugin must not break the others -------------------------------------------
BROKEN = {
    "duplicate-name": "from da_seg import hookimpl\n\n@hookimpl\ndef register_losses(register):\n"
    "    register('mine', lambda: None)\n    register('bce', lambda: None)\n",
    "misspelled-hook": "from da_seg import hookimpl\n\n@hookimpl\ndef register_segmentors(register):\n    pass\n",
    "import-error": "import frobnicate_missing_dependency\n",
    "hook-raises": "from da_seg import hookimpl\n\n@hookimpl\ndef register_tasks(register):\n    1 / 0\n",
    "bad-hook-arguments": "from da_seg import hookimpl\n\n@hookimpl\ndef register_losses(registry):\n    pass\n",
}
REASONS = {
    "duplicate-name": "loss 'bce' is already registered by plugin 'da_seg.losses'",
    "misspelled-hook": "unknown hook 'register_segmentors'; did you mean 'register_segmenters'?",
    "import-error": "No module named 'frobnicate_missing_dependency'",
    "hook-raises": "ZeroDivisionError",
    "bad-hook-arguments": "registry",
}


def _install_template_and(site: Path, *broken: str) -> None:
    """The plugin template (a good plugin) and one installed package per kind of broken plugin."""
    template = ROOT / "examples/plugin_template"
    package = template / "daseg_example_plugin"
    _fake_install(site, "daseg_example_plugin", "example_plugin = daseg_example_plugin.plugin", package)
    for kind in broken:
        module = f"daseg_bad_{kind.replace('-', '_')}"
        (site / module).mkdir()
        (site / module / "__init__.py").write_text(BROKEN[kind])
        _fake_install(site, module, f"bad_{kind} = {module}", None)


def test_broken_installed_plugins_are_skipped_and_the_rest_keep_working(tmp_path: Path) -> None:
    """Issue 19: a duplicate name or a misspelled hook in one installed plugin emptied every registry."""
    _install_template_and(tmp_path, *BROKEN)
    listed = _daseg(["plugins"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    for kind, reason in REASONS.items():
        failed = [line for line in listed.stderr.splitlines() if line.startswith(f"failed plugin 'bad_{kind}'")]
        assert len(failed) == 1 and reason in failed[0], (kind, listed.stderr)
    assert all(name in listed.stdout for name in ("bce", "resunet25d", "prostate_mr2ct", "tiny_fcn"))
    assert "mine" not in listed.stdout  # all or nothing: what the broken plugin registered first is removed too
    validated = _daseg(["validate", str(ROOT / "examples/plugin_template/example.toml")], tmp_path)
    assert validated.returncode == 0, validated.stderr
    warnings = validated.stderr.strip().splitlines()
    assert len(warnings) == len(BROKEN), warnings  # one line per broken plugin
    assert all(w.startswith("warning: da_seg plugin 'bad_") and "failed to load" in w for w in warnings), warnings


def test_run_works_beside_a_broken_installed_plugin(tmp_path: Path) -> None:
    from test_errors import config, make_data

    _install_template_and(tmp_path / "site", "duplicate-name", "misspelled-hook")
    source, target = make_data(tmp_path / "data")
    result = _daseg(["run", str(config(tmp_path, source, target))], tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs/run/report.html").exists()


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["--plugin", "prostate_mr2ct.plugin"], None),  # the entry point's module, named again
        (["--plugin", "plugin"], ROOT / "plugins/prostate_mr2ct/prostate_mr2ct"),  # the same file, another name
    ],
    ids=["same-module", "same-file"],
)
def test_loading_a_plugin_again_by_another_route_is_harmless(tmp_path: Path, args: list[str], path) -> None:
    """Issue 19: ``--plugin pkg.plugin`` for an installed plugin crashed with pluggy's 'already registered'."""
    config = tmp_path / "ok.toml"
    config.write_text('task = "prostate_mr2ct"\ntranslator = "identity"\nplugins = ["prostate_mr2ct.plugin"]\n')
    result = _daseg([*args, "validate", str(config)], path or tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


GAMMA = """
import numpy as np
from da_seg import hookimpl
from da_seg.files import read_json, write_json


class Gamma:
    name = "gamma"

    def fit(self, source, target, **_):
        return self

    def translate(self, volume):
        return np.asarray(volume, dtype=np.float32)

    def save(self, directory):
        write_json(directory / "meta.json", {"component": "gamma"})

    @classmethod
    def load(cls, directory, device="cpu"):
        read_json(directory / "meta.json")
        return cls()


def crashy(in_channels, classes=1):
    return {}["bug"]


@hookimpl
def register_translators(register):
    register("gamma", Gamma)


@hookimpl
def register_segmenters(register):
    register("crashy", crashy)
"""

SAVE_MODELS = """
import sys
from pathlib import Path
from da_seg.data import Domain
from da_seg.registry import INTENSITIES, TRANSLATORS
from da_seg.segmentation import TrainedSegmenter, build_segmenter
from da_seg.translators import save_domains

out = Path(sys.argv[1])
mr = Domain((6.0, 4.0, 4.0), (16, 16), INTENSITIES.create("mr_percentile"))
ct = Domain((6.0, 4.0, 4.0), (16, 16), INTENSITIES.create("ct_window"))
TRANSLATORS.create("gamma").save(out / "translator")
save_domains(out / "translator", mr, ct)
spec = {"name": "tiny_fcn", "width": 4}
TrainedSegmenter(build_segmenter(spec, 1, 1), spec, context=1, domain=ct.settings).save(out / "segmenter")
"""


def _install_gamma(site: Path) -> None:
    (site / "daseg_gamma").mkdir(parents=True)
    (site / "daseg_gamma/__init__.py").write_text(GAMMA)
    _fake_install(site, "daseg_gamma_plugin", "gamma = daseg_gamma", None)


def test_a_model_whose_plugin_is_missing_names_the_package(tmp_path: Path) -> None:
    """Issue 19: with the plugin uninstalled, ``translate --model`` said the folder held 'a gamma checkpoint, not a
    translator'."""
    from test_errors import ct, write

    site = tmp_path / "site"
    _install_gamma(site)
    _install_template_and(site / "more", "import-error")
    environ = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{site / 'more'}"}
    saved = subprocess.run(
        [sys.executable, "-c", SAVE_MODELS, str(tmp_path)], env=environ, capture_output=True, text=True
    )
    assert saved.returncode == 0, saved.stderr
    image = write(ct(0), tmp_path / "ct.nii.gz")
    empty = tmp_path / "empty"
    empty.mkdir()
    for command, model, message in (
        ("translate", "translator", "translator 'gamma' is not available here (it comes from plugin 'gamma' of "
         "package 'daseg_gamma_plugin': pip install it"),
        ("predict", "segmenter", "segmenter 'tiny_fcn' is not available here (it comes from plugin 'example_plugin' "
         "of package 'daseg_example_plugin': pip install it"),
    ):  # fmt: skip
        result = _daseg(
            [command, str(image), "--model", str(tmp_path / model), "-o", str(tmp_path / "o.nii.gz")], empty
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == f"error: {tmp_path / model}: {message}; `daseg plugins` lists what is loaded)"
    assert not (tmp_path / "o.nii.gz").exists()


def test_an_error_inside_a_component_keeps_its_traceback(tmp_path: Path) -> None:
    """Issue 19: Registry.create turned any error inside a factory into a config error (exit 2, no traceback)."""
    _install_gamma(tmp_path)
    config = tmp_path / "crashy.toml"
    config.write_text('task = "prostate_mr2ct"\ntranslator = "identity"\n[segmentation]\nmodel = "crashy"\n')
    result = _daseg(["validate", str(config)], tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError: 'bug'" in result.stderr
    assert "raised while building segmenter 'crashy' of plugin 'gamma'" in result.stderr
