"""Trained segmenters in memory: `TrainedSegmenter` (save, load, predict probabilities, segment into labels) and
`SegmenterEnsemble` (cross-validation folds as one). Loading any saved folder and applying it to image files:
`da_seg.segmentation.apply`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from da_seg.checkpoints import load_checkpoint, save_checkpoint
from da_seg.errors import DataError
from da_seg.files import read_json
from da_seg.registry import SEGMENTERS
from da_seg.segmentation.postprocess import probabilities_to_labels
from da_seg.slices import neighbour_index
from da_seg.training import autocast, resolve_device, to_layout

COMPONENT = "segmenter"
Case = tuple[np.ndarray, np.ndarray]
"""An ``(image, mask)`` pair: image ``(z, H, W)`` float32 in [-1, 1], mask ``(z, H, W)`` uint8 labels."""


# -- inference --------------------------------------------------------------------------------------------------
class _Segments(ABC):
    """`segment` for anything with ``predict``, ``defaults`` and ``multiclass`` (one model or an ensemble)."""

    defaults: dict[str, Any]
    multiclass: str

    @abstractmethod
    def predict(self, image: np.ndarray, tta_flip: bool = False) -> np.ndarray:
        """Per-structure probabilities of every slice. Shape: ``(z, H, W)`` -> ``(z, H, W)`` or ``(K, z, H, W)``."""

    def segment(
        self,
        image: np.ndarray,
        threshold: float | None = None,
        largest_component: bool | None = None,
        tta_flip: bool | None = None,
        component_rule: str | None = None,
    ) -> np.ndarray:
        """A label map: probability >= ``threshold``, optionally one 3D component of each label (``component_rule``
        says which: ``"largest"`` or ``"most_confident"``).

        Softmax models take the argmax over background and structures (``threshold`` is not used). Unset arguments
        take the model's saved defaults (0.5, largest component on, no TTA unless trained so).

        Shape:
            ``(z, H, W)`` float image -> ``(z, H, W)`` uint8 labels (0 background, 1..classes).
        """
        threshold = self.defaults.get("threshold", 0.5) if threshold is None else threshold
        lcc = self.defaults.get("largest_component", True) if largest_component is None else largest_component
        tta = self.defaults.get("tta_flip", False) if tta_flip is None else tta_flip
        rule = self.defaults.get("component_rule", "largest") if component_rule is None else component_rule
        probabilities = self.predict(image, tta_flip=tta)
        return probabilities_to_labels(probabilities, threshold, lcc, self.multiclass == "softmax", rule)


@dataclass
class TrainedSegmenter(_Segments):
    """A segmenter with what is needed to apply it: its spec, context, classes and (optionally) its data domain.

    Attributes:
        model: the network, ``(B, 2c+1, H, W) -> (B, classes, H, W)`` logits.
        spec: the component table it was built from (``{"name": "resunet25d", ...}``).
        context: neighbour slices each side.
        classes: output channels (1: binary).
        device: where it runs.
        precision: autocast precision for inference.
        batch_size: slices per forward pass in `predict`.
        domain: the data domain (spacing, size, intensity) images must be prepared in; `predict_file` needs it.
        defaults: inference defaults (``threshold``, ``largest_component``, ``component_rule``, ``tta_flip``).
        info: training facts kept in meta.json (epochs, best validation Dice, ...).
        multiclass: ``"sigmoid"`` (``classes`` channels) or ``"softmax"`` (``classes + 1``, background first).
        channels_last: run `predict` in NHWC memory layout (faster convolutions on CPU and tensor cores).
    """

    model: nn.Module
    spec: dict[str, Any]
    context: int
    classes: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    batch_size: int = 16
    domain: dict[str, Any] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    multiclass: str = "sigmoid"
    channels_last: bool = False

    def _probabilities(self, logits: Tensor) -> Tensor:
        """Per-structure probabilities ``(B, classes, H, W)``: sigmoid, or softmax without its background."""
        if self.multiclass == "softmax":
            return torch.softmax(logits.float(), dim=1)[:, 1:]
        return torch.sigmoid(logits.float())

    @torch.inference_mode()
    def predict(self, image: np.ndarray, tta_flip: bool = False) -> np.ndarray:
        """Foreground probabilities of every slice (2.5D stacks, in batches; sigmoid, or softmax less background).

        ``tta_flip`` averages with the prediction on the left-right (W) mirrored volume.

        Shape:
            ``(z, H, W)`` -> ``(z, H, W)`` float32 when ``classes == 1``, else ``(classes, z, H, W)``.
        """
        if image.ndim != 3:
            raise DataError(f"predict needs a (z, H, W) volume, got shape {image.shape}")
        self.model.eval()
        if self.channels_last:
            with torch.inference_mode(False), torch.no_grad():  # weights copied here must stay trainable (validation)
                self.model.to(memory_format=torch.channels_last)
        volume = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32), device=self.device)
        neighbours = torch.as_tensor(neighbour_index(volume.shape[0], self.context), device=self.device)
        out = torch.empty((self.classes, *volume.shape), dtype=torch.float32, device=self.device)
        # On CPU, larger batches add no parallelism (oneDNN parallelises within a slice) but push activations out of
        # cache: 512x512 resunet25d took 0.30 s/slice at batch 1-2 and 0.40 s at 16 (docs/performance.md).
        batch = self.batch_size if self.device.type == "cuda" else min(self.batch_size, 2)
        for start in range(0, volume.shape[0], batch):
            x = to_layout(volume[neighbours[start : start + batch]], self.channels_last)
            with autocast(self.device, self.precision):
                prob = self._probabilities(self.model(x))
                if tta_flip:
                    prob = 0.5 * (prob + self._probabilities(self.model(x.flip(-1))).flip(-1))
            out[:, start : start + x.shape[0]] = prob.transpose(0, 1)
        result = out.cpu().numpy()
        return result[0] if self.classes == 1 else result

    def save(self, directory: str | Path) -> Path:
        """Weights and meta.json (spec, context, classes, domain, defaults) in ``directory``."""
        save_checkpoint(directory, {"model": self.model}, meta=self._meta())
        return Path(directory)

    def _meta(self, **extra: Any) -> dict[str, Any]:
        from da_seg.plugins import component_origin

        return {
            "component": COMPONENT,
            "model": self.spec,
            "plugin": component_origin(SEGMENTERS, _spec_name(self.spec)),
            "context": self.context,
            "classes": self.classes,
            "multiclass": self.multiclass,
            "batch_size": self.batch_size,
            "domain": self.domain,
            "defaults": self.defaults,
            "precision": self.precision,
            "channels_last": self.channels_last,
            **self.info,
            **extra,
        }

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: str | torch.device = "auto",
        precision: str | None = None,
        channels_last: bool | None = None,
    ) -> TrainedSegmenter:
        """Rebuild the network from meta.json and load its weights (refuses other components' checkpoints).

        ``precision`` and ``channels_last`` choose how `predict` runs; unset, they are what the model was trained
        with (saved in meta.json), so ``daseg predict`` gives the masks the run wrote. fp16 falls back to fp32 off
        CUDA.
        """
        directory = Path(directory)
        meta = read_json(directory / "meta.json")
        if meta.get("component") != COMPONENT:
            raise DataError(f"{directory}: not a segmenter model (component '{meta.get('component')}')")
        device = resolve_device(device) if isinstance(device, str) else device
        if _spec_name(meta.get("model")) not in SEGMENTERS:
            from da_seg.plugins import missing_component

            raise missing_component("segmenter", _spec_name(meta.get("model")), meta.get("plugin"), directory)
        multiclass = meta.get("multiclass", "sigmoid")
        model = build_segmenter(meta["model"], meta["context"], meta["classes"], multiclass)
        load_checkpoint(directory, {"model": model}, component=COMPONENT, map_location=device)
        known = {"component", "model", "plugin", "context", "classes", "multiclass", "batch_size", "domain", "defaults"}
        known |= {"precision", "channels_last"}
        precision = precision or meta.get("precision") or "fp32"
        if precision == "fp16" and device.type != "cuda":
            precision = "fp32"
        channels_last = bool(meta.get("channels_last", False)) if channels_last is None else channels_last
        return cls(
            model=model.to(device).eval(),
            spec=meta["model"],
            context=meta["context"],
            classes=meta["classes"],
            device=device,
            precision=precision,
            batch_size=meta.get("batch_size", 16),
            domain=meta.get("domain"),
            defaults=meta.get("defaults") or {},
            info={k: v for k, v in meta.items() if k not in known},
            multiclass=multiclass,
            channels_last=channels_last,
        )


ENSEMBLE = "segmenter_ensemble"


class SegmenterEnsemble(_Segments):
    """The k models of a cross-validation (or k seed members on the same cases) applied as one: the mean of their
    probabilities, then the shared threshold and post-processing (nnU-Net's way of predicting with its folds).

    A saved ensemble is a folder with ``meta.json`` (``component = "segmenter_ensemble"``, the member folders, the
    data domain and inference defaults) and one `TrainedSegmenter` folder per member (``fold0/``, ``fold1/``, ...
    for folds, ``member0/``, ... otherwise).
    """

    def __init__(self, members: list[TrainedSegmenter]) -> None:
        if not members:
            raise DataError("an ensemble needs at least one model")
        first = members[0]
        for other in members[1:]:
            if (other.context, other.classes, other.multiclass) != (first.context, first.classes, first.multiclass):
                raise DataError("ensemble members differ in context, classes or multiclass; they cannot be averaged")
        self.members = members
        self.context, self.classes, self.multiclass = first.context, first.classes, first.multiclass
        self.domain, self.defaults = first.domain, dict(first.defaults)
        self.info: dict[str, Any] = {}

    def predict(self, image: np.ndarray, tta_flip: bool = False) -> np.ndarray:
        """Mean probability of the members. Shape: as `TrainedSegmenter.predict`."""
        total = self.members[0].predict(image, tta_flip)
        for member in self.members[1:]:
            total = total + member.predict(image, tta_flip)
        return total / len(self.members)

    def save(self, directory: str | Path, **info: Any) -> Path:
        """Each member in ``directory/fold<i>`` (with ``folds`` in ``info``) or ``directory/member<i>``, and the
        ensemble's meta.json. ``info`` adds facts (e.g. folds or seeds, or those of the ensemble it was adapted from);
        the ensemble's own ``info`` (e.g. its calibration) wins over them."""
        from da_seg.files import write_json

        directory = Path(directory)
        names = [f"{'fold' if 'folds' in info else 'member'}{i}" for i in range(len(self.members))]
        for name, member in zip(names, self.members, strict=True):
            member.save(directory / name)
        meta = {"component": ENSEMBLE, "members": names, "domain": self.domain, "defaults": self.defaults}
        meta |= info | self.info
        write_json(directory / "meta.json", meta)
        return directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: str | torch.device = "auto",
        precision: str | None = None,
        channels_last: bool | None = None,
    ) -> SegmenterEnsemble:
        directory = Path(directory)
        meta = read_json(directory / "meta.json")
        if meta.get("component") != ENSEMBLE:
            raise DataError(f"{directory}: not a segmenter ensemble (component '{meta.get('component')}')")
        members = [
            TrainedSegmenter.load(directory / name, device, precision, channels_last) for name in meta["members"]
        ]
        ensemble = cls(members)
        ensemble.defaults = dict(meta.get("defaults") or ensemble.defaults)  # its own (a calibrated threshold)
        ensemble.info = {k: v for k, v in meta.items() if k not in {"component", "members", "domain", "defaults"}}
        return ensemble


Segmenter = _Segments
"""What `predict_file` applies: one trained model, a cross-validation ensemble or a two-way pair (`TwoWaySegmenter`)."""


def load_trained(
    directory: Path,
    device: str | torch.device = "auto",
    precision: str | None = None,
    channels_last: bool | None = None,
) -> TrainedSegmenter | SegmenterEnsemble:
    """A folder holding one trained model or a cross-validation ensemble (told apart by meta.json's ``component``)."""
    ensemble = read_json(directory / "meta.json").get("component") == ENSEMBLE
    return (SegmenterEnsemble if ensemble else TrainedSegmenter).load(directory, device, precision, channels_last)


def _spec_name(spec: Any) -> str:
    """The registered name in a component spec (``"name"`` or ``{"name": "name", ...}``)."""
    return str(spec.get("name") if isinstance(spec, Mapping) else spec)


def build_segmenter(
    spec: Mapping[str, Any] | str, context: int, classes: int = 1, multiclass: str = "sigmoid"
) -> nn.Module:
    """The registered segmenter ``spec`` with ``2 * context + 1`` input channels and ``classes`` outputs (one more,
    the background, for ``multiclass = "softmax"``)."""
    return SEGMENTERS.build(spec, in_channels=2 * context + 1, classes=classes + (multiclass == "softmax"))
