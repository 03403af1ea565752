"""The CLI: thin commands, one-line errors with exit code 2, every command documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from da_seg import __version__
from da_seg.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_plugins_lists_components_by_kind() -> None:
    result = invoke("plugins")
    assert result.exit_code == 0
    assert re.search(r"da_seg\.losses\s.*losses\s.*bce", result.stdout)
    assert "prostate_mr2ct" in result.stdout


def test_plugins_without_a_terminal_prints_every_name_whole() -> None:
    """Issue 43: piped or logged, rich cut names and paths to 80 columns (``soft_neighbourhoo…``)."""
    from da_seg.plugins import component_table

    result = invoke("plugins")
    assert result.exit_code == 0, result.output
    for row in component_table():
        assert re.search(rf"^{re.escape(row.plugin)} +{row.kind} +{re.escape(row.name)} +{re.escape(row.location)}$",
                         result.stdout, re.MULTILINE), row  # fmt: skip
    assert "…" not in result.stdout


def test_plugins_json_lists_kinds_names_and_where_each_comes_from() -> None:
    import json

    result = invoke("plugins", "--json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    bce = listing["components"]["losses"]["bce"]
    assert bce["plugin"] == "da_seg.losses" and bce["package"] == "da_seg" and "losses.py:" in bce["location"]
    assert "prostate_mr2ct" in listing["components"]["tasks"] and listing["failed"] == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'task = "prostate_mr2ct"\ntranslator = { name = "gamma" }\n',
            "if a plugin provides it, it is not installed or not loaded: install it, or name its module under",
        ),
        (
            'task = "prostate_mr2ct"\n[segmentation]\nmodel = { name = "resunet2d" }\n',
            "unknown segmenter 'resunet2d'; did you mean 'resunet25d'?",
        ),
        ('task = "prostate_mr2ct"\n[segmentation]\nepochs = "many"\n', "key 'segmentation.epochs' = 'many'"),
        ('task = "prostate_mr2ct"\ncolour = "red"\n', "unknown key 'colour'"),
        ('task = "prostate_mr3ct"\n', "unknown task 'prostate_mr3ct'; did you mean 'prostate_mr2ct'?"),
    ],
)
def test_validate_errors_are_one_line_exit_2(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = invoke("validate", str(config))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_missing_config_file(tmp_path: Path) -> None:
    result = invoke("validate", str(tmp_path / "none.toml"))
    assert result.exit_code == 2 and "config file not found" in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = invoke("--debug", "validate", str(tmp_path / "none.toml"))
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_bad_set_override(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('task = "prostate_mr2ct"\n')
    result = invoke("validate", str(config), "--set", "segmentation.epochs")
    assert result.exit_code == 2 and "--set needs key=value" in result.stderr


def test_every_command_is_documented() -> None:
    from da_seg.cli import add_plugin_commands

    add_plugin_commands()
    doc = (ROOT / "docs/cli.md").read_text()
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    missing = [n for n in names if f"daseg {n}" not in doc]
    assert not missing, f"commands missing from docs/cli.md: {missing}"


def test_every_option_is_documented() -> None:
    """Each command's options (one of each option's spellings) appear in docs/cli.md."""
    import typer.main

    from da_seg.cli import add_plugin_commands

    add_plugin_commands()
    doc = (ROOT / "docs/cli.md").read_text()
    missing = [
        f"{name} {param.opts[0]}"
        for name, command in typer.main.get_command(app).commands.items()
        for param in command.params
        if param.param_type_name == "option" and "--help" not in param.opts
        if not any(re.search(rf"{re.escape(o)}\b", doc) for o in param.opts + param.secondary_opts)
    ]
    assert not missing, f"options missing from docs/cli.md: {missing}"


def test_help_keeps_square_brackets() -> None:
    """Rich reads ``[grid]`` in a help text as markup and drops it (``daseg study --help`` said "base config,  of
    variations"): every bracketed word of a parameter's help must reach the screen."""
    import typer.main

    commands = typer.main.get_command(app).commands
    for name, command in commands.items():
        words = {w for p in command.params for w in re.findall(r"\[[a-z_.]+\]", getattr(p, "help", None) or "")}
        if words:
            shown = invoke(name, "--help").stdout
            assert all(w in shown for w in words), (name, words)


def test_paths_with_square_brackets_are_printed_whole(tmp_path: Path) -> None:
    """A user's folder named like ``exp[v2]`` lost its ``[v2]`` in the CLI's own lines (rich markup)."""
    config = tmp_path / "exp[v2]" / "c.toml"
    config.parent.mkdir()
    config.write_text('task = "prostate_mr2ct"\n')
    result = invoke("validate", str(config))
    assert result.exit_code == 0, result.output
    assert "exp[v2]" in result.stdout.replace("\n", "")


def _validate_with_plugin(tmp_path: Path, config_text: str, **hooks):
    """``daseg validate`` on ``config_text`` with an inline plugin implementing ``hooks``, unregistered after."""
    import types

    from da_seg import hookimpl
    from da_seg.plugins import load_plugins, unload_plugin

    plugin = types.ModuleType("validate_test_plugin")
    for hook, fn in hooks.items():
        setattr(plugin, hook, hookimpl(fn))
    config = tmp_path / "bad.toml"
    config.write_text('task = "prostate_mr2ct"\n[data]\nsize = [32, 32]\n[segmentation]\n' + config_text)
    load_plugins([plugin])
    try:
        return invoke("validate", str(config))
    finally:
        unload_plugin(plugin)


class _Halving(torch.nn.Module):
    """A wrong segmenter: its output is half the input's spatial size."""

    def __init__(self, in_channels: int, classes: int = 1) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, classes, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Labels(_Halving):
    """A wrong segmenter: it returns integer labels instead of logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] > 0).long()


def _bad_segmenters(register) -> None:
    register("bad_halving", _Halving)
    register("bad_labels", _Labels)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("bad_halving", "maps a batch (1, 3, 32, 32) to a float32 tensor of shape (1, 1, 16, 16)"),
        ("bad_labels", "maps a batch (1, 3, 32, 32) to a int64 tensor of shape (1, 1, 32, 32)"),
    ],
)
def test_validate_runs_the_segmenter_once_and_names_a_bad_output(tmp_path: Path, model: str, message: str) -> None:
    result = _validate_with_plugin(tmp_path, f'model = "{model}"\n', register_segmenters=_bad_segmenters)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: segmentation.model: segmenter '{model}'"), lines
    assert message in lines[0] and "(B, classes, H, W)" in lines[0]


def test_validate_checks_the_loss_returns_a_scalar(tmp_path: Path) -> None:
    result = _validate_with_plugin(
        tmp_path,
        'model = { name = "resunet25d", base = 4, depth = 2 }\nloss = "per_pixel"\n',
        register_losses=lambda register: register("per_pixel", lambda: lambda a, b: (a - b) ** 2),
    )
    assert result.exit_code == 2, result.output
    assert "segmentation.loss: loss 'per_pixel' returned a float32 tensor of shape (1, 1, 32, 32)" in result.stderr


def test_validate_expects_the_background_channel_with_softmax(tmp_path: Path) -> None:
    config = tmp_path / "softmax.toml"
    config.write_text(
        'task = "prostate_mr2ct"\n[data]\nsize = [32, 32]\n[segmentation]\nmulticlass = "softmax"\nloss = "ce"\n'
        'model = { name = "resunet25d", base = 4, depth = 2 }\n'
    )
    result = invoke("validate", str(config))
    assert result.exit_code == 0, result.output


def test_a_failed_plugins_message_keeps_its_square_brackets(monkeypatch) -> None:
    """A plugin's error can name a path like ``exp[v2]/plugin.py``; rich took ``[v2]`` as markup."""
    from da_seg import plugins

    monkeypatch.setattr(plugins, "failed_plugins", lambda: {"bad": "SyntaxError in exp[v2]/plugin.py"})
    result = invoke("plugins")
    assert result.exit_code == 0 and "failed plugin 'bad': SyntaxError in exp[v2]/plugin.py" in result.output


def test_commands_that_train_nothing_do_not_import_the_model_zoos() -> None:
    """smp (with timm and torchvision) and scipy.stats took half of every command's start; they load on first use."""
    code = (
        "import sys\n"
        "from da_seg.cli import main\n"
        "sys.argv = ['daseg', 'plugins']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('segmentation_models_pytorch', 'timm', 'torchvision', 'scipy.stats')\n"
        "print('LOADED', sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "smp" in result.stdout  # still registered, and buildable on demand
    assert "LOADED []" in result.stdout
