"""Checkpoints: weights as safetensors, ``meta.json`` saying which component wrote them, and optimizer state
loaded with ``weights_only=True`` (nothing in a checkpoint file ever runs)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from da_seg.errors import DataError
from da_seg.files import atomic_path, read_json, write_json


def save_checkpoint(
    directory: str | Path,
    modules: Mapping[str, nn.Module],
    meta: Mapping[str, Any],
    state: Mapping[str, Any] | None = None,
) -> None:
    """Write ``weights.safetensors`` (all modules, keys ``name.param``), ``meta.json`` and optionally ``state.pt``.

    ``meta`` must say what built the weights (``component`` and its arguments) so `load_checkpoint` can refuse a
    checkpoint of another component. ``state`` holds optimizer/scheduler state for resuming (tensors and plain
    data only, loaded with ``weights_only=True``). Each file is written atomically.
    """
    directory = Path(directory)
    tensors = {
        f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items() for k, v in m.state_dict().items()
    }
    with atomic_path(directory / "weights.safetensors") as tmp:
        save_file(tensors, str(tmp))
    if state is not None:
        with atomic_path(directory / "state.pt") as tmp:
            torch.save(dict(state), tmp)
    write_json(directory / "meta.json", dict(meta))


def load_checkpoint(
    directory: str | Path,
    modules: Mapping[str, nn.Module],
    component: str | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load weights saved by `save_checkpoint` into ``modules``; returns the meta data.

    Refuses (with a `DataError`) a checkpoint written by another component or with other tensor shapes.
    """
    directory = Path(directory)
    meta = read_json(directory / "meta.json")
    if component is not None and meta.get("component") != component:
        raise DataError(
            f"{directory}: checkpoint is for '{meta.get('component')}', not '{component}'; point to the right model"
        )
    weights = directory / "weights.safetensors"
    try:
        tensors = load_file(str(weights), device=str(map_location))
    except FileNotFoundError:
        raise DataError(f"missing file: {weights}") from None
    except Exception as err:
        raise DataError(f"{weights}: unreadable checkpoint ({err})") from None
    for name, module in modules.items():
        prefix = f"{name}."
        sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(sub, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise DataError(
                f"{weights}: weights do not fit '{name}' as configured ({first[1].strip() if len(first) > 1 else err});"
                " was it trained with other settings?"
            ) from None
    return meta


def load_state(directory: str | Path, required: Iterable[str] = ()) -> dict[str, Any] | None:
    """Optimizer/scheduler state saved beside a checkpoint, or None (``weights_only=True``: no code runs).

    ``required``: the keys the caller reads; a state without one of them (written by another version, or another
    file in its place) is a `DataError` naming the file and the keys, instead of a ``KeyError`` mid-resume.
    """
    path = Path(directory) / "state.pt"
    if not path.exists():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickle protocols before refusing them
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, or a pickle holding code (never executed with weights_only=True)
        text = str(err).strip() or type(err).__name__
        if "Weights only load failed" in text:
            reason = "a pickle holding more than tensors and plain data; nothing in it was run"
        else:
            reason = text.splitlines()[0].split(". ")[0][:160]
        raise DataError(
            f"{path}: unreadable training state ({reason}); delete it to restart that stage from its weights, "
            "or rerun with --force"
        ) from None
    keys = list(required)
    missing = [k for k in keys if k not in state] if isinstance(state, dict) else keys
    if missing:
        listed = ", ".join(repr(k) for k in missing)
        what = f"lacks {listed}" if isinstance(state, dict) else f"is a {type(state).__name__}, not a dict of {listed}"
        raise DataError(
            f"{path}: the training state {what} (written by another da_seg version, or not a state file); "
            f"delete the folder {path.parent} to retrain that stage from the start, or rerun with --force"
        )
    return state
