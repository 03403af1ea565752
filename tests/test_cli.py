"""The CLI: thin commands, one-line errors with exit code 2, every command documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
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


@pytest.mark.parametrize(
    ("text", "message"),
    [
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
    from da_seg.cli import _add_plugin_commands

    _add_plugin_commands()
    doc = (ROOT / "docs/cli.md").read_text()
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    missing = [n for n in names if f"daseg {n}" not in doc]
    assert not missing, f"commands missing from docs/cli.md: {missing}"
