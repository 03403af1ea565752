"""Plugin discovery and loading (pluggy), the one path by which every component enters a registry.

Sources, in order: the built-in modules in :data:`DEFAULT_PLUGINS`, installed packages in the ``da_seg`` entry-point
group, then modules the user names (config ``plugins = [...]`` or ``--plugin``). Loading happens once, lazily, on the
first registry lookup. The environment variable ``DASEG_PLUGINS`` restricts entry-point plugins: unset means all,
``none`` means none, ``a,b`` means only the entry points named ``a`` and ``b``. A plugin that fails to import is
reported with its name and error and the others still load; no dotted path from a config is imported unless the
user listed it under ``plugins``.
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from da_seg import hookspecs
from da_seg.errors import ConfigError
from da_seg.registry import REGISTRIES

DEFAULT_PLUGINS: tuple[str, ...] = (
    "da_seg.losses",
    "da_seg.intensity",
    "da_seg.augment",
    "da_seg.metrics.segmentation",
    "da_seg.metrics.fidelity",
    "da_seg.translators",
    "da_seg.segmenters",
    "da_seg.selection",
)
ENV_VAR = "DASEG_PLUGINS"


@dataclass
class PluginState:
    """What has been loaded so far; one per process."""

    manager: pluggy.PluginManager | None = None
    failed: dict[str, str] = field(default_factory=dict)
    loading: bool = False


_state = PluginState()


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _register_components(pm: pluggy.PluginManager, plugin_names: set[str]) -> None:
    """Call every ``register_*`` hook of the given plugins with a callback that records the plugin's name."""
    for hook_name, registry in REGISTRIES.items():
        caller = getattr(pm.hook, f"register_{hook_name}")
        for impl in caller.get_hookimpls():
            if impl.plugin_name not in plugin_names:
                continue

            def register(
                name: Any = None,
                factory: Any = None,
                *,
                override: bool = False,
                _reg=registry,
                _plugin=impl.plugin_name,
            ) -> Any:
                try:
                    return _reg.register(name, factory, override=override, plugin=_plugin)
                except ConfigError as err:  # name the plugin that asked too, not only the first owner
                    raise ConfigError(f"plugin '{_plugin}': {err}") from None

            impl.function(register=register)


def _entry_point_filter() -> set[str] | None:
    value = os.environ.get(ENV_VAR)
    if value is None or value.strip() in ("", "all"):
        return None
    if value.strip().lower() in ("none", "0", "off"):
        return set()
    return {v.strip() for v in value.split(",") if v.strip()}


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    from importlib.metadata import entry_points

    wanted = _entry_point_filter()
    for ep in entry_points(group=hookspecs.PROJECT):
        if wanted is not None and ep.name not in wanted:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as err:  # a broken plugin must not take the others down
            _report_failure(ep.name, err)


def _report_failure(name: str, err: BaseException) -> None:
    message = f"{type(err).__name__}: {err}"
    _state.failed[name] = message
    warnings.warn(
        f"da_seg plugin '{name}' failed to load ({message}); it is skipped. "
        f"Set {ENV_VAR} to a list of the plugins you want to bypass it.",
        RuntimeWarning,
        stacklevel=3,
    )


def load_plugins(modules: list[str | ModuleType | object] | tuple = ()) -> pluggy.PluginManager:
    """Load built-ins and installed plugins once, plus any extra ``modules`` (dotted names or objects).

    Safe to call many times; only new plugins are registered. A named module that cannot be imported raises a
    `ConfigError` (the user asked for it explicitly).
    """
    if _state.loading:  # a plugin being imported looked something up: finish later
        return _state.manager  # type: ignore[return-value]
    _state.loading = True
    try:
        pm = _state.manager
        before = set() if pm is None else {name for name, _ in pm.list_name_plugin()}
        if pm is None:
            pm = _state.manager = _new_manager()
            for name in DEFAULT_PLUGINS:
                pm.register(importlib.import_module(name), name=name)
            _load_entry_points(pm)
        for module in modules:
            if isinstance(module, str):
                if pm.get_plugin(module) is not None:
                    continue
                try:
                    obj: Any = importlib.import_module(module)
                except Exception as err:
                    raise ConfigError(
                        f"plugin module '{module}' could not be imported ({type(err).__name__}: {err}); "
                        f"check that it is installed and the name is spelled right"
                    ) from err
                pm.register(obj, name=module)
            elif pm.is_registered(module):
                continue
            else:
                pm.register(module, name=getattr(module, "__name__", None))
        new = {name for name, _ in pm.list_name_plugin()} - before
        try:
            pm.check_pending()
            _register_components(pm, new)
        except pluggy.PluginValidationError as err:
            _forget(pm, new)
            raise ConfigError(f"plugin '{pm.get_name(err.plugin) or err.plugin}' is invalid: {err}") from None
        except Exception:
            _forget(pm, new)  # a half-registered plugin would poison every later lookup
            raise
        return pm
    finally:
        _state.loading = False


def _forget(pm: pluggy.PluginManager, names: set[str]) -> None:
    for name in names:
        for registry in REGISTRIES.values():
            for entry in [e for e in registry._entries.values() if e.plugin == name]:
                registry.unregister(entry.name)
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)


def unload_plugin(plugin: str | ModuleType | object) -> None:
    """Unregister a plugin and remove every component it registered (used by tests and interactive sessions)."""
    pm = load_plugins()
    name = plugin if isinstance(plugin, str) else pm.get_name(plugin)
    if name is not None:
        _forget(pm, {name})


def failed_plugins() -> dict[str, str]:
    """Plugins that failed to import: name -> error message."""
    load_plugins()
    return dict(_state.failed)


@dataclass(frozen=True)
class ComponentRow:
    plugin: str
    kind: str
    name: str
    location: str


def component_table() -> list[ComponentRow]:
    """Every registered component with its plugin and source location (``daseg plugins`` shows this)."""
    load_plugins()
    rows = [
        ComponentRow(e.plugin, kind, e.name, e.location)
        for kind, registry in REGISTRIES.items()
        for e in registry.entries()
    ]
    return sorted(rows, key=lambda r: (r.plugin not in DEFAULT_PLUGINS, r.plugin, r.kind, r.name))
