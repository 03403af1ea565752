"""The plugin contract: the hooks a da_seg plugin may implement.

A plugin is a module (or an object) with functions decorated by :data:`hookimpl`. It is found through the
``da_seg`` entry-point group of an installed package::

    [project.entry-points.da_seg]
    my_plugin = "my_package.plugin"

or named in a config (``plugins = ["my_package.plugin"]``) or on the command line (``--plugin my_package.plugin``).

Each ``register_*`` hook receives a ``register`` callback: ``register(name, factory)`` or ``@register(name)``.
The host owns the registries; a plugin never touches them directly. A name already taken is an error that names
the plugin that took it first. The built-in components register through these very hooks.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "da_seg"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_translators(register: Any) -> None:
    """Register image translators (source domain -> target domain).

    A translator factory returns an object with a ``name`` attribute (its registered name),
    ``fit(source, target, *, workdir, device, precision, seed)`` on lists of normalised ``(z, H, W)`` arrays,
    ``translate(volume) -> array``: a ``(z, H, W)`` source volume in [-1, 1] to a ``(z, H, W)`` target-domain volume in
    [-1, 1] on the same grid (the data layer converts units and geometry before and after), ``save(dir)``, which
    writes ``meta.json`` with ``"component"`` = the registered name, and a classmethod ``load(dir, device="cpu")``.
    See :class:`da_seg.translators.Translator` and :func:`da_seg.translators.load_translator`.
    """


@hookspec
def register_segmenters(register: Any) -> None:
    """Register segmentation networks.

    A segmenter factory takes ``in_channels`` (``2 * context + 1``) and ``classes`` and returns a ``torch.nn.Module``
    mapping ``(B, in_channels, H, W)`` to logits ``(B, classes, H, W)``.
    """


@hookspec
def register_losses(register: Any) -> None:
    """Register losses: factories returning a callable ``loss(prediction, target) -> scalar tensor``.

    A segmentation loss receives the segmenter's logits ``(B, C, H, W)`` and a target of the same shape in {0, 1}
    (``multiclass = "softmax"``: one-hot with the background in channel 0).
    """


@hookspec
def register_augmentations(register: Any) -> None:
    """Register augmentations: factories returning a ``kornia.augmentation`` module.

    They are composed with ``kornia.augmentation.AugmentationSequential(..., data_keys=["input", "mask"])``, so
    geometric ones move masks with the image and intensity ones leave masks alone.
    """


@hookspec
def register_metrics(register: Any) -> None:
    """Register metric functions ``metric(prediction, reference, spacing_zyx, ...) -> float``.

    Unlike the other kinds a metric is registered as the function itself: look it up with ``METRICS.get(name)``.
    """


@hookspec
def register_intensities(register: Any) -> None:
    """Register intensity presets: factories returning an object with ``fit(array) -> stats`` (a dict of floats,
    per volume; ``{}`` when there are none), ``forward(array, stats) -> array`` in [-1, 1], ``inverse(array, stats)``
    back to the modality's units, ``padding_value`` (what padding becomes, usually -1), ``settings`` (a dict with
    ``name`` and the factory's arguments, which rebuilds the preset) and, optionally, ``check(array, source)`` raising
    `da_seg.DataError` for a volume that cannot be in the preset's units. See :mod:`da_seg.intensity`."""


@hookspec
def register_extents(register: Any) -> None:
    """Register extent matchers (``data.extent``): factories returning a callable
    ``matcher(case, references, spacing_zyx) -> (start, stop)``, the slices of a prepared target case that hold the
    source images' anatomy. See :mod:`da_seg.extent`."""


@hookspec
def register_tasks(register: Any) -> None:
    """Register tasks: a modality pair with its label names, intensity presets, target spacing and, optionally,
    a phantom generator for the data. See :class:`da_seg.task.Task`."""


@hookspec
def register_selectors(register: Any) -> None:
    """Register checkpoint-selection criteria that need no target labels.

    A selector factory returns an object with ``name``, ``kind`` (``"translator"`` or ``"segmenter"``),
    ``higher_is_better`` and ``score(candidate, **data) -> float``: translator selectors receive a translator,
    ``source`` (held-out ``(image, mask)`` cases) and ``target`` (unlabelled volumes); segmenter selectors a
    trained segmenter and ``target``. See :mod:`da_seg.selection`.
    """


@hookspec
def register_commands(app: Any) -> None:
    """Add commands to the ``daseg`` typer application (``app.command()(my_function)``).

    da_seg wraps each added command as it wraps its own: a `da_seg.DasegError` raised inside becomes one red
    ``error:`` line and exit code 2, Ctrl-C exit code 130, anything else a traceback. Plugins import nothing from
    ``da_seg.cli``.
    """
