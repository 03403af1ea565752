"""The one registry mechanism: register, create, build, close-match errors, signature checks."""

from __future__ import annotations

import collections
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
        "extents",
        "tasks",
        "selectors",
    }


def test_unknown_name_says_a_plugin_may_be_missing(reg: Registry) -> None:
    """Issue 43: a name no installed plugin provides said only 'unknown', as if it were a typo."""
    with pytest.raises(ConfigError, match=r"unknown segmenter 'gamma' \(known: resunet25d\); if a plugin provides"):
        reg.create("gamma", in_channels=1)
    with pytest.raises(ConfigError, match=r"did you mean 'resunet25d'\? .*not installed or not loaded.*daseg plugins"):
        reg.create("resunet2d", in_channels=1)


class Other(Net):
    pass


def test_unregistering_an_override_restores_what_it_replaced(reg: Registry) -> None:
    """Issue 43: unloading a plugin that replaced a built-in (override=True) removed the name altogether."""
    reg.register("resunet25d", Other, override=True, plugin="first")
    reg.register("resunet25d", Other, override=True, plugin="second")
    reg.register("only_mine", Other, plugin="first")
    reg.unregister_plugin("first")  # under 'second': 'second' stays, and after it the original comes back
    assert reg.entry("resunet25d").plugin == "second" and "only_mine" not in reg.names()
    reg.unregister_plugin("second")
    assert reg.get("resunet25d") is Net and reg.entry("resunet25d").plugin == "<direct>"
    reg.register("resunet25d", Other, override=True)
    reg.unregister("resunet25d")
    assert reg.get("resunet25d") is Net
    reg.unregister("resunet25d")
    assert "resunet25d" not in reg.names()


def test_component_errors_name_the_component_whose_code_raised(reg: Registry) -> None:
    """Issue 43: an exception from inside a component mid-training was a bare traceback naming no component."""
    from da_seg.errors import ComponentError, DataError
    from da_seg.registry import component_errors

    class Exploding(Net):
        def __call__(self, x: int) -> int:
            return self.helper(x)

        def helper(self, x: int) -> int:
            raise RuntimeError(f"boom {x}\nsecond line")

    reg.register("exploding", Exploding, plugin="blast")
    net, fine = reg.create("exploding", in_channels=1), reg.create("resunet25d", in_channels=1)
    components = [(reg, "resunet25d", fine), (reg, "exploding", net)]
    with pytest.raises(ComponentError) as info, component_errors("training", *components):
        net(3)
    message = str(info.value)
    assert message.startswith(f"segmenter 'exploding' (plugin 'blast', {__file__}:")
    assert "failed during training: RuntimeError: boom 3; rerun with --debug" in message and "\n" not in message
    assert isinstance(info.value.__cause__, RuntimeError)  # --debug shows the component's own traceback
    reg.register("counter", collections.Counter)  # a factory of another module than this test's
    elsewhere = [(reg, "counter", collections.Counter())]
    with pytest.raises(KeyError), component_errors("training", *elsewhere):  # no component's code: a bug, as is
        {}["bug"]
    with pytest.raises(DataError, match="user's"), component_errors("training", *components):
        raise DataError("user's")
