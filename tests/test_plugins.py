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
