"""`daseg bench`: three segmenters on the same SynCT and CT of the tiny phantom; ``--segmenter`` parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from da_seg.bench import parse_segmenter
from da_seg.cli import app
from da_seg.errors import ConfigError


def test_parse_segmenter() -> None:
    assert parse_segmenter("resunet25d") == {"name": "resunet25d"}
    assert parse_segmenter("smp:FPN/tu-resnet10t") == {"name": "smp", "arch": "FPN", "encoder": "tu-resnet10t"}


@pytest.mark.parametrize(
    ("text", "config_model", "expected"),
    [
        ("resunet25d:base=8,depth=3", None, {"name": "resunet25d", "base": 8, "depth": 3}),
        # the config's own segmenter: its arguments are the defaults (bench once ran tinynet at width 8, not 4)
        ("resunet25d", {"name": "resunet25d", "base": 4, "depth": 2}, {"name": "resunet25d", "base": 4, "depth": 2}),
        (
            "resunet25d:depth=3",
            {"name": "resunet25d", "base": 4, "depth": 2},
            {"name": "resunet25d", "base": 4, "depth": 3},
        ),
        (
            "smp:Unet/resnet18",
            {"name": "resunet25d", "base": 4},
            {"name": "smp", "arch": "Unet", "encoder": "resnet18"},
        ),
        (
            "smp:Unet/resnet18,encoder_depth=3,decoder_channels=[32, 16, 8]",
            None,
            {"name": "smp", "arch": "Unet", "encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8]},
        ),
        (
            'x:rate=0.5,norm=true,act=relu,tag="a,b"',
            None,
            {"name": "x", "rate": 0.5, "norm": True, "act": "relu", "tag": "a,b"},
        ),
    ],
)
def test_parse_segmenter_arguments(text: str, config_model: dict | None, expected: dict) -> None:
    assert parse_segmenter(text, config_model) == expected


@pytest.mark.parametrize("text", ["resunet25d:base", "resunet25d:=3", ":base=3", "resunet25d:name=smp"])
def test_parse_segmenter_refuses_what_is_not_key_value(text: str) -> None:
    with pytest.raises(ConfigError, match="--segmenter"):
        parse_segmenter(text)


def test_bench_refuses_a_bad_segmenter_argument_before_training(tmp_path: Path, tiny_config) -> None:
    result = CliRunner().invoke(app, ["bench", str(tiny_config(tmp_path)), "--segmenter", "resunet25d:bas=8"])
    assert result.exit_code == 2, result.output
    assert "--segmenter 'resunet25d:bas=8'" in result.stderr and "did you mean 'base'" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing trained, no run directory


def test_bench_three_segmenters(tmp_path: Path, tiny_config) -> None:
    config = tiny_config(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "bench",
            str(config),
            "--segmenter",
            "resunet25d",
            "--segmenter",
            "smp:Unet/resnet18",
            "--segmenter",
            "smp:FPN/tu-resnet10t",
        ],
    )
    assert result.exit_code == 0, result.output
    table = (tmp_path / "runs/tiny-bench/bench/table.md").read_text()
    for name in ("resunet25d", "smp:Unet/resnet18", "smp:FPN/tu-resnet10t"):
        assert name in table
    rows = (tmp_path / "runs/tiny-bench/bench/table.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("segmenter,dice,hd95,parameters,train_s,infer_s_per_volume,p_vs")
    # one translator and one SynCT served all three segmenters
    assert len(list((tmp_path / "runs/tiny-bench").glob("translator-*"))) == 1


def test_bad_segmenter_spec(tmp_path: Path, tiny_config) -> None:
    result = CliRunner().invoke(app, ["bench", str(tiny_config(tmp_path)), "--segmenter", "smp:Unet"])
    assert result.exit_code == 2 and "use smp:ARCH/ENCODER" in result.stderr
