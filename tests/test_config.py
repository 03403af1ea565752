"""TOML -> validated models: key paths in errors, unknown keys refused, paths resolved, every key documented."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from da_seg import validate
from da_seg.config import Config, SegmentationConfig, load_config, parse_config
from da_seg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'task = "prostate_mr2ct"\n'))
    assert config.name == "c"
    assert config.segmentation.context == 1
    assert config.translator == {"name": "cyclegan"}
    assert config.runtime.device == "auto"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('task = "t"\n[segmentation]\nepochz = 3\n', "unknown key 'segmentation.epochz'"),
        ('task = "t"\n[segmentation]\nepochs = -1\n', "key 'segmentation.epochs' = -1: Input should be greater than"),
        ('task = "t"\n[segmentation]\ncontext = -1\n', "key 'segmentation.context' = -1"),
        ('task = "t"\n[segmentation]\nepochs = "ten"\n', "key 'segmentation.epochs' = 'ten'"),
        ("[segmentation]\nepochs = 1\n", "missing required key 'task'"),
        ('task = "t"\n[data]\nspacing = [1.0, 0.0, 1.0]\n', "key 'data.spacing'"),
        ('task = "t"\n[segmentation]\nmodel = { base = 8 }\n', "needs a 'name' key"),
        ('task = "t"\n[runtime]\nprecision = "fp8"\n', "key 'runtime.precision' = 'fp8'"),
        ('task = "t"\nbaselines = ["oracel"]\n', "key 'baselines.0' = 'oracel'"),
        (
            'task = "t"\n[segmentation]\ntta_flip = true\naugment = [{ name = "rotation" }]\n',
            "key 'segmentation' = .*the segmenter never saw mirrored images",
        ),
        (
            'task = "t"\n[segmentation]\ntta_flip = true\naugment = [{ name = "flip", horizontal = false }]\n',
            "has no left-right flip",
        ),
        (  # a flip that never fires shows no mirrored images either
            'task = "t"\n[segmentation]\ntta_flip = true\naugment = [{ name = "flip", p = 0.0 }]\n',
            "has no left-right flip",
        ),
        ('task = "t"\nbaselines = ["two_way"]\n', 'add "no_adaptation" to baselines'),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(write(tmp_path, text))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "task = \n"))


def test_data_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'task = "t"\n[data]\nsource = "mr"\n'))
    assert config.data.source == (tmp_path / "mr").resolve()


def test_overrides_use_dotted_keys(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'task = "t"\n'), {"segmentation.epochs": 2, "runtime.device": "cpu"})
    assert (config.segmentation.epochs, config.runtime.device) == (2, "cpu")


def test_parse_config_from_python() -> None:
    config = parse_config({"task": "t", "segmentation": {"model": "smp"}})
    assert config.segmentation.model == {"name": "smp"}


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                keys += _keys(candidate, f"{prefix}{name}.")
    return keys


def test_every_config_key_is_documented() -> None:
    doc = (ROOT / "docs/config.md").read_text()
    missing = [k for k in _keys(Config) if f"`{k}`" not in doc]
    assert not missing, f"undocumented config keys: {missing}"


EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_shipped_examples_validate(path: Path) -> None:
    """Every example config (and every variation of the example study) builds all its components."""
    if "cardiac" in path.name:
        pytest.importorskip("cardiac_mr2ct", reason="the cardiac_mr2ct plugin is not installed")
    if "grid" in tomllib.loads(path.read_text()):
        from da_seg.study import load_study

        spec = load_study(path)
        for variation in spec.variations():
            validate(load_config(spec.base, {**spec.overrides, **variation}))
    else:
        validate(path)


def test_two_way_needs_a_translator_that_can_translate_back(tmp_path: Path) -> None:
    path = write(tmp_path, 'task = "prostate_mr2ct"\nbaselines = ["no_adaptation", "two_way"]\n')
    validate(path)  # the default cyclegan has an inverse generator
    with pytest.raises(ConfigError, match="translator: 'cut' cannot translate target images back"):
        validate(load_config(path, {"translator": {"name": "cut"}}))


def test_members_and_folds_are_not_combined_and_members_keep_old_stage_keys() -> None:
    with pytest.raises(ValueError, match="choose one"):
        SegmentationConfig(folds=3, members=2)
    assert "members" not in SegmentationConfig().stage_settings()  # runs from before members keep their keys
    assert SegmentationConfig(members=3).stage_settings()["members"] == 3
