"""The one registry mechanism: register, create, build, close-match errors, signature checks."""

from __future__ import annotations

import re

import numpy as np
import pytest

from da_seg.errors import ConfigError
from da_seg.registry import REGISTRIES, Registry


class Net:
    def __init__(self, in_channels: int, width: int = 8) -> None:
        self.in_channels, self.width = in_channels, width


@pytest.fixture
def reg() -> Registry:
    reg = Registry("segmenter")
    reg._ensure_loaded = lambda: None  # a private registry needs no plugins
    reg.register("resunet25d", Net)
    return reg


def test_register_as_decorator_and_call(reg: Registry) -> None:
    @reg.register("small")
    def small(in_channels: int) -> Net:
        return Net(in_channels, 4)

    @reg.register
    def bare(in_channels: int) -> Net:
        return Net(in_channels)

    assert reg.names() == ["bare", "resunet25d", "small"]
    assert reg.names("res*") == ["resunet25d"]
    assert reg.create("small", in_channels=3).width == 4


def test_create_drops_none_so_defaults_hold(reg: Registry) -> None:
    net = reg.create("resunet25d", in_channels=3, width=None)
    assert net.width == 8


def test_build_from_config_table_with_defaults(reg: Registry) -> None:
    net = reg.build({"name": "resunet25d", "width": 32}, in_channels=5)
    assert (net.in_channels, net.width) == (5, 32)
    assert reg.build("resunet25d", in_channels=1).in_channels == 1


def test_build_table_without_name(reg: Registry) -> None:
    with pytest.raises(ConfigError, match="needs a 'name' key"):
        reg.build({"width": 3})


def test_unknown_name_lists_close_matches(reg: Registry) -> None:
    with pytest.raises(ConfigError, match=r"unknown segmenter 'resunet2d'; did you mean 'resunet25d'\?"):
        reg.create("resunet2d", in_channels=1)


def test_duplicate_name_says_where_the_first_came_from(reg: Registry) -> None:
    with pytest.raises(ConfigError, match=r"already registered by plugin '<direct>' \(.*test_registry.py:\d+\)"):
        reg.register("resunet25d", Net)
    reg.register("resunet25d", Net, override=True)  # explicit override is allowed


def test_bad_keyword_reported_against_signature(reg: Registry) -> None:
    with pytest.raises(ConfigError, match=r"unknown argument 'widht' \(did you mean 'width'\?\); accepted: in_chan"):
        reg.create("resunet25d", in_channels=1, widht=3)


def test_factory_config_errors_name_the_component(reg: Registry) -> None:
    def picky(size: int) -> None:
        raise ConfigError("size must be even")

    reg.register("picky", picky)
    with pytest.raises(ConfigError, match="segmenter 'picky': size must be even"):
        reg.create("picky", size=3)


def test_other_errors_inside_a_factory_are_bugs_with_their_traceback(reg: Registry) -> None:
    """Issue 19: a ValueError/TypeError from a component's own code used to become a config error (exit 2)."""

    def buggy(size: int) -> None:
        return [1, 2][size]

    reg.register("buggy", buggy)
    with pytest.raises(IndexError) as info:
        reg.create("buggy", size=3)
    assert "raised while building segmenter 'buggy' of plugin '<direct>'" in info.value.__notes__[0]
    assert info.traceback[-1].name == "buggy"  # the component's own frame is kept


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "segmenter 'typed' needs argument 'size'"),
        ({"size": 2, "colour": 3}, "got unknown argument 'colour'"),
        ({"size": "four"}, "argument 'size' = 'four' is not an integer"),
        ({"size": 2, "scale": "big"}, "argument 'scale' = 'big' is not a number"),
        ({"size": 2.5}, "argument 'size' = 2.5 is not an integer"),
        ({"size": True}, "argument 'size' = True is not an integer"),
        ({"size": 2, "label": 3}, "argument 'label' = 3 is not a string"),
    ],
)
def test_arguments_are_checked_against_the_signature(reg: Registry, kwargs: dict, message: str) -> None:
    def typed(size: int, scale: float = 1.0, label: str = "x") -> int:
        return size

    reg.register("typed", typed)
    with pytest.raises(ConfigError, match=re.escape(message)):
        reg.create("typed", **kwargs)
    assert reg.create("typed", size=np.int64(2), scale=3) == 2  # numpy integers, an int where a float is expected


def test_the_kinds_of_components() -> None:
    assert set(REGISTRIES) == {
        "translators",
        "segmenters",
        "losses",
        "augmentations",
        "metrics",
        "intensities",
        "tasks",
        "selectors",
    }
