"""Plugin discovery and loading (pluggy), the one path by which every component enters a registry.

Sources, in order: the built-in modules in :data:`DEFAULT_PLUGINS`, installed packages in the ``da_seg`` entry-point
group, then modules the user names (config ``plugins = [...]`` or ``--plugin``). Loading happens once, lazily, on the
first registry lookup. The environment variable ``DASEG_PLUGINS`` restricts entry-point plugins: unset means all,
``none`` means none, ``a,b`` means only the entry points named ``a`` and ``b``. A plugin that fails to import is
reported with its name and error and the others still load; no dotted path from a config is imported unless the
user listed it under ``plugins``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from da_seg import hookspecs
from da_seg.errors import ConfigError, DataError
from da_seg.registry import REGISTRIES, Registry, fill_on_first_lookup

DEFAULT_PLUGINS: tuple[str, ...] = (
    "da_seg.losses",
    "da_seg.intensity",
    "da_seg.extent",
    "da_seg.augment",
    "da_seg.randomisation",
    "da_seg.structure",
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
    packages: dict[str, str] = field(default_factory=dict)
    loading: bool = False


_state = PluginState()


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _register_components(pm: pluggy.PluginManager, plugin_name: str) -> None:
    """Call every ``register_*`` hook of one plugin with a callback that records the plugin's name."""
    for hook_name, registry in REGISTRIES.items():
        caller = getattr(pm.hook, f"register_{hook_name}")
        for impl in caller.get_hookimpls():
            if impl.plugin_name != plugin_name:
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


def _check_hooks(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Refuse a hook implementation that matches no hook specification (a misspelled ``register_segmentors``)."""
    known = sorted(n for n in dir(hookspecs) if n.startswith("register_"))
    for caller in pm.get_hookcallers(plugin) or []:
        if not caller.has_spec():
            close = difflib.get_close_matches(caller.name, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (hooks: {', '.join(known)})"
            raise ConfigError(f"plugin '{name}' is invalid: unknown hook '{caller.name}'{hint}")


def _same_module(pm: pluggy.PluginManager, plugin: object) -> str | None:
    """The name under which ``plugin`` (or the same source file imported by another route) is registered."""
    if pm.is_registered(plugin):
        return pm.get_name(plugin)
    file = getattr(plugin, "__file__", None)
    if file is None:
        return None
    for name, other in pm.list_name_plugin():
        other_file = getattr(other, "__file__", None)
        if other_file is not None and os.path.realpath(other_file) == os.path.realpath(file):
            return name
    return None


def _add(pm: pluggy.PluginManager, plugin: object, name: str | None, *, strict: bool) -> None:
    """Register one plugin and its components, all or nothing: on failure only this plugin is removed.

    ``strict`` (built-ins and modules the user named): the failure raises a `ConfigError`; otherwise (installed
    entry points) it is reported and skipped, so one broken package never takes the others down.
    """
    if _same_module(pm, plugin) is not None:  # loaded already (maybe by another route): nothing to do
        return
    try:
        try:
            registered = pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as err:
            raise ConfigError(f"plugin '{name}' is invalid: {' '.join(str(err).split())}") from None
        name = registered or name
        assert name is not None
        _check_hooks(pm, plugin, name)
        _register_components(pm, name)
    except Exception as err:
        _forget(pm, {pm.get_name(plugin)} if pm.is_registered(plugin) else set())
        if strict:
            raise
        _report_failure(str(name), err)


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
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name) or ep.name in _state.failed:
            continue
        if ep.dist is not None:
            _state.packages[ep.name] = ep.dist.name
        try:
            plugin = ep.load()
        except Exception as err:  # a broken plugin must not take the others down
            _report_failure(ep.name, err)
            continue
        _add(pm, plugin, ep.name, strict=False)


def _report_failure(name: str, err: BaseException) -> None:
    message = " ".join((str(err) if isinstance(err, ConfigError) else f"{type(err).__name__}: {err}").split())
    _state.failed[name] = message
    warnings.warn(
        f"da_seg plugin '{name}' failed to load ({message}); it is skipped. "
        f"Set {ENV_VAR} to a list of the plugins you want to bypass it.",
        RuntimeWarning,
        stacklevel=3,
    )


def load_plugins(modules: list[str | ModuleType | object] | tuple = ()) -> pluggy.PluginManager:
    """Load built-ins and installed plugins once, plus any extra ``modules`` (dotted names or objects).

    Safe to call many times, and with a module that is loaded already (by name, as an entry point, or imported by
    another route): only new plugins are registered. A broken installed plugin is reported and skipped; a named
    module that cannot be imported or registered raises a `ConfigError` (the user asked for it explicitly). Either
    way only that plugin is removed, and the built-ins and every other plugin keep working.
    """
    if _state.loading:  # a plugin being imported looked something up: finish later
        return _state.manager  # type: ignore[return-value]
    _state.loading = True
    try:
        pm = _state.manager
        if pm is None:
            pm = _state.manager = _new_manager()
            for name in DEFAULT_PLUGINS:
                _add(pm, importlib.import_module(name), name, strict=True)
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
                _add(pm, obj, module, strict=True)
            else:
                _add(pm, module, getattr(module, "__name__", None), strict=True)
        return pm
    finally:
        _state.loading = False


def plugin_package(plugin: str) -> str | None:
    """The installed distribution (what ``pip install`` takes) that provides ``plugin``, when it can be found."""
    if plugin == "da_seg" or plugin.startswith("da_seg."):
        return "da_seg"
    if plugin in _state.packages:
        return _state.packages[plugin]
    from importlib.metadata import packages_distributions

    found = packages_distributions().get(plugin.split(".")[0])
    return found[0] if found else None


def component_origin(registry: Registry, name: str) -> dict[str, str | None]:
    """``{"plugin": ..., "package": ...}`` of a registered component, saved in a model's meta.json so that a
    machine without the plugin can say what to install."""
    entry = registry.entry(name)
    return {"plugin": entry.plugin, "package": plugin_package(entry.plugin)}


def missing_component(kind: str, name: str, origin: Any, where: Path) -> DataError:
    """The error for a saved model whose component is not registered here: which plugin (package) to install."""
    if isinstance(origin, dict) and origin.get("package"):
        need = f"it comes from plugin '{origin.get('plugin')}' of package '{origin['package']}': pip install it"
    elif isinstance(origin, dict) and origin.get("plugin"):
        need = f"it comes from plugin '{origin['plugin']}': install the package that provides it"
    else:
        need = "install the plugin that provides it"
    return DataError(f"{where}: {kind} '{name}' is not available here ({need}; `daseg plugins` lists what is loaded)")


def _forget(pm: pluggy.PluginManager, names: set[str]) -> None:
    for name in names:
        for registry in REGISTRIES.values():
            registry.unregister_plugin(name)
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


def component_index() -> dict[str, dict[str, dict[str, str | None]]]:
    """``{kind: {name: {"plugin", "package", "location"}}}`` for every registered component (``daseg plugins
    --json``): which plugin registered it, the installed distribution providing that plugin, where it is defined."""
    load_plugins()
    packages: dict[str, str | None] = {}
    index: dict[str, dict[str, dict[str, str | None]]] = {}
    for kind, registry in REGISTRIES.items():
        index[kind] = {}
        for e in registry.entries():
            package = packages.setdefault(e.plugin, plugin_package(e.plugin))
            index[kind][e.name] = {"plugin": e.plugin, "package": package, "location": e.location}
    return index


fill_on_first_lookup(load_plugins)
