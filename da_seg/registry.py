"""One small registry class, one instance per kind of component (after timm's ``register_model``).

A registry maps plain string names to factories (classes or functions). Plugins fill the registries through the
pluggy hooks in :mod:`da_seg.hookspecs`; the built-in components go through the very same hooks, so a registry is
complete only after :func:`da_seg.plugins.load_plugins` ran. Every public lookup triggers that load lazily.

Example:
    >>> from da_seg.registry import SEGMENTERS
    >>> net = SEGMENTERS.create("resunet25d", in_channels=3, base=8)  # doctest: +SKIP
    >>> SEGMENTERS.build({"name": "resunet25d", "base": 8}, in_channels=3)  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import numbers
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from da_seg.errors import ComponentError, ConfigError, DasegError

Factory = Callable[..., Any]
_fill_registries: Callable[[], object] | None = None


def fill_on_first_lookup(fill: Callable[[], object]) -> None:
    """Set what fills the registries before a lookup: `da_seg.plugins` passes its `load_plugins` when imported.

    The registries never import the plugin layer (which imports them), so the two modules form no import circle.
    """
    global _fill_registries
    _fill_registries = fill


@dataclass(frozen=True)
class Entry:
    """A registered factory and where it came from (plugin name and source location)."""

    name: str
    factory: Factory
    plugin: str
    location: str


def _location(obj: Any) -> str:
    try:
        file = inspect.getsourcefile(obj) or "?"
        line = inspect.getsourcelines(obj)[1]
        return f"{file}:{line}"
    except (TypeError, OSError):
        return getattr(obj, "__module__", "?")


class Registry:
    """Names -> factories for one kind of component (e.g. ``"segmenter"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._shadowed: dict[str, list[Entry]] = {}  # what ``override=True`` replaced, oldest first, to restore

    # -- filling ---------------------------------------------------------------------------------------------
    def register(
        self,
        name: str | Factory | None = None,
        factory: Factory | None = None,
        *,
        override: bool = False,
        plugin: str = "<direct>",
    ) -> Any:
        """Register ``factory`` under ``name``; usable as a plain call or as a decorator.

        ``REG.register("x", f)``, ``@REG.register("x")`` and bare ``@REG.register`` (name = ``f.__name__``) all work.
        A name already taken raises unless ``override=True``; the message says who took it.
        """
        if callable(name) and factory is None:  # bare decorator
            factory, name = name, None
        if factory is None:
            return lambda f: self.register(name, f, override=override, plugin=plugin)
        key = name or getattr(factory, "__name__", None)
        if not isinstance(key, str) or not key:
            raise ConfigError(f"cannot register a {self.kind} without a name")
        if key in self._entries and not override:
            first = self._entries[key]
            raise ConfigError(
                f"{self.kind} '{key}' is already registered by plugin '{first.plugin}' ({first.location}); "
                f"pick another name or pass override=True"
            )
        if key in self._entries:
            self._shadowed.setdefault(key, []).append(self._entries[key])
        self._entries[key] = Entry(key, factory, plugin, _location(factory))
        return factory

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and plugin authors use this to clean up); what it overrode comes back."""
        self._entries.pop(name, None)
        self._restore(name)

    def unregister_plugin(self, plugin: str) -> None:
        """Remove every entry ``plugin`` registered (a plugin that failed half-way, or is unloaded); an entry it
        replaced with ``override=True`` (e.g. a built-in) comes back."""
        for name in list(self._entries):
            self._shadowed[name] = [e for e in self._shadowed.get(name, []) if e.plugin != plugin]
            if self._entries[name].plugin == plugin:
                del self._entries[name]
                self._restore(name)
            elif not self._shadowed[name]:
                del self._shadowed[name]

    def _restore(self, name: str) -> None:
        """Put back the latest entry that ``name``'s removed one had overridden, if any."""
        shadowed = self._shadowed.pop(name, [])
        if shadowed:
            self._entries[name] = shadowed.pop()
            if shadowed:
                self._shadowed[name] = shadowed

    # -- lookup ----------------------------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if _fill_registries is not None:
            _fill_registries()

    def entry(self, name: str) -> Entry:
        """The `Entry` (factory, plugin, location) of ``name``; unknown names as in `get`."""
        self.get(name)
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a glob ``pattern``."""
        self._ensure_loaded()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self) -> list[Entry]:
        self._ensure_loaded()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Factory:
        """The factory for ``name``; an unknown name lists the close matches."""
        self._ensure_loaded()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._entries)) or "none"
            raise ConfigError(
                f"unknown {self.kind} '{name}'{hint} (known: {known}); if a plugin provides it, it is not installed "
                "or not loaded: install it, or name its module under `plugins` or --plugin (`daseg plugins` lists "
                "what is loaded)"
            )
        return self._entries[name].factory

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build ``name`` with ``kwargs``; ``None`` values are dropped so the factory's defaults hold.

        Keyword arguments the factory does not accept (or required ones missing) are reported against its signature,
        and so is a `ConfigError` the factory raises for a bad value: both are config mistakes (exit code 2). Any
        other exception is a bug in the component and propagates with its traceback and a note naming the
        component and its plugin.
        """
        factory = self.get(name)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        check_kwargs(factory, kwargs, f"{self.kind} '{name}'")
        try:
            return factory(**kwargs)
        except ConfigError as err:  # the factory refused an argument's value: the user's to fix
            raise ConfigError(f"{self.kind} '{name}': {err}") from err
        except Exception as err:  # a bug in the component: keep the traceback, say whose code it is
            entry = self._entries[name]
            err.add_note(f"raised while building {self.kind} '{name}' of plugin '{entry.plugin}' ({entry.location})")
            raise

    def build(self, spec: str | Mapping[str, Any], **defaults: Any) -> Any:
        """Build from a config table ``{name = "...", ...}`` (or a bare name); ``defaults`` fill unset keys."""
        if isinstance(spec, str):
            spec = {"name": spec}
        spec = dict(spec)
        if "name" not in spec:
            raise ConfigError(f"a {self.kind} table needs a 'name' key (one of: {', '.join(self.names())})")
        name = spec.pop("name")
        return self.create(name, **{**defaults, **spec})

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


SCALARS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)),
    "float": ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)),
    "bool": ("true or false", lambda v: isinstance(v, bool | np.bool_)),
    "str": ("a string", lambda v: isinstance(v, str)),
}
"""Parameters annotated with exactly one of these types are checked before the factory runs, so a config value of
the wrong type is a config error rather than an exception deep inside the component."""


def check_kwargs(factory: Factory, kwargs: Mapping[str, Any], what: str) -> None:
    """Raise a `ConfigError` naming ``what`` when ``kwargs`` do not fit ``factory``'s signature."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if k not in accepted]
    for key, value in kwargs.items():
        annotation = params[key].annotation if key in params else None
        expected = SCALARS.get(getattr(annotation, "__name__", annotation))
        if expected is not None and not expected[1](value):
            raise ConfigError(f"{what}: argument '{key}' = {value!r} is not {expected[0]}")
    missing = [n for n in accepted if params[n].default is params[n].empty and n not in kwargs]
    if missing and not unknown:
        raise ConfigError(
            f"{what} needs argument {', '.join(repr(m) for m in missing)}; accepted: {', '.join(accepted)}"
        )
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, accepted, n=1)
            hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ConfigError(f"{what} got unknown argument {', '.join(hints)}; accepted: {', '.join(accepted)}")


InUse = tuple[Registry, str, Any]
"""A component in use: its registry, its registered name and the object built from it."""


@contextmanager
def component_errors(during: str, *components: InUse) -> Iterator[None]:
    """Re-raise an exception from inside one of ``components`` as a `ComponentError` naming it and its plugin.

    The culprit is the component whose code is innermost in the traceback: a frame whose ``self`` is the object or
    one of its submodules, the object's own function, or a function of its factory's module. A `DasegError` passes
    unchanged, and so does an exception that no component's code raised (a bug of the caller's own).

    Example:
        >>> with component_errors("training", (SEGMENTERS, "resunet25d", net), (LOSSES, "bce", loss)):  # doctest: +SKIP
        ...     train(net, loss)
    """
    try:
        yield
    except DasegError:
        raise
    except Exception as err:
        culprits = _culprits(err, components)
        if not culprits:
            raise
        entries = [registry.entry(name) for registry, name, _ in culprits]
        what = " or ".join(f"{registry.kind} '{name}'" for registry, name, _ in culprits)
        plugins = ", ".join(dict.fromkeys(f"'{e.plugin}'" for e in entries))
        where = f", {entries[0].location}" if len(entries) == 1 else ""
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), "")[:200]
        raise ComponentError(
            f"{what} (plugin {plugins}{where}) failed during {during}: {type(err).__name__}: {reason}; "
            "rerun with --debug for the traceback, and report it to the plugin's author"
        ) from err


def _culprits(err: BaseException, components: tuple[InUse, ...]) -> list[InUse]:
    """The components whose code raised ``err``: the innermost frame of a component's object (its ``self``, a
    submodule, its function); a frame in a factory's module only (a helper several may share) narrows that down,
    and names the culprit when no object frame follows."""
    marks = []
    for registry, name, obj in components:
        named = getattr(obj, "named_modules", None)  # a torch module: its submodules are the component too
        ids = {id(obj)} | ({id(m) for _, m in named()} if callable(named) else set())
        module = getattr(registry.entry(name).factory, "__module__", None) or ""
        home = "" if module.split(".")[0] in ("builtins", "torch") else module
        marks.append((ids, getattr(obj, "__code__", None), home))
    loose: list[InUse] | None = None
    for frame, _ in reversed(list(traceback.walk_tb(err.__traceback__))):
        owner, module = frame.f_locals.get("self"), str(frame.f_globals.get("__name__", ""))
        exact, near = [], []
        for component, (ids, code, home) in zip(components, marks, strict=True):
            if (owner is not None and id(owner) in ids) or frame.f_code is code:
                exact.append(component)
            elif home and (module == home or module.startswith(home + ".")):
                near.append(component)
        if exact:
            return [c for c in exact if c in (loose or [])] or exact
        if near and loose is None:
            loose = near
    return loose or []


TRANSLATORS = Registry("translator")
SEGMENTERS = Registry("segmenter")
LOSSES = Registry("loss")
AUGMENTATIONS = Registry("augmentation")
METRICS = Registry("metric")
INTENSITIES = Registry("intensity")
EXTENTS = Registry("extent")
TASKS = Registry("task")
SELECTORS = Registry("selector")

REGISTRIES: dict[str, Registry] = {
    "translators": TRANSLATORS,
    "segmenters": SEGMENTERS,
    "losses": LOSSES,
    "augmentations": AUGMENTATIONS,
    "metrics": METRICS,
    "intensities": INTENSITIES,
    "extents": EXTENTS,
    "tasks": TASKS,
    "selectors": SELECTORS,
}
