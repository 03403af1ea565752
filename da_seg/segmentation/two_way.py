"""`TwoWaySegmenter`: segment a target image directly and through the translator's inverse, and average.

A CycleGAN trains a target -> source generator as well (real CT -> synthetic MR). A segmenter trained on the real
source images and their expert masks can therefore segment a real target image too, once translated back: a second
view whose errors differ from those of the segmenter trained on the translated source (SynCT). The two views'
probabilities are averaged, then thresholded and post-processed like one model's. (Ours to offer: the direction
comes from the CycleGAN having both generators; averaging the views is ours.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from da_seg.errors import DataError
from da_seg.files import read_json, write_json
from da_seg.segmentation.inference import Segmenter, load_trained
from da_seg.training import resolve_device
from da_seg.translators.base import ReversibleTranslator, require_reversible

TWO_WAY = "two_way_segmenter"


class TwoWaySegmenter(Segmenter):
    """The mean of ``target_model(image)`` and ``source_model(translator.translate_back(image))``.

    Args:
        target_model: a segmenter of target-domain images (e.g. trained on SynCT); its data domain and inference
            defaults (threshold, component rule) are the pair's.
        source_model: a segmenter of source-domain images (e.g. trained on the labelled MR).
        translator: maps target images back to the source domain (`ReversibleTranslator`).

    A saved pair is a folder with ``meta.json`` (``component = "two_way_segmenter"``) and the three parts in
    ``target/``, ``source/`` and ``translator/``; `load_segmenter` (or `load`) reads it back.
    """

    def __init__(self, target_model: Segmenter, source_model: Segmenter, translator: ReversibleTranslator) -> None:
        require_reversible(translator)
        shapes = [(m.classes, m.multiclass) for m in (target_model, source_model)]
        if shapes[0] != shapes[1]:
            raise DataError(f"the two segmenters predict different structures (classes, multiclass: {shapes})")
        self.target_model, self.source_model, self.translator = target_model, source_model, translator
        self.context, self.classes, self.multiclass = (
            target_model.context,
            target_model.classes,
            target_model.multiclass,
        )
        self.domain, self.defaults = target_model.domain, dict(target_model.defaults)
        self.info: dict[str, Any] = {}

    def predict(self, image: np.ndarray, tta_flip: bool = False) -> np.ndarray:
        """Mean probability of the two views. Shape: as `TrainedSegmenter.predict`."""
        direct = self.target_model.predict(image, tta_flip)
        back = self.source_model.predict(self.translator.translate_back(np.asarray(image, np.float32)), tta_flip)
        return (direct + back) / 2

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.target_model.save(directory / "target")
        self.source_model.save(directory / "source")
        self.translator.save(directory / "translator")
        write_json(directory / "meta.json", {"component": TWO_WAY, "domain": self.domain, "defaults": self.defaults})
        return directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: str | torch.device = "auto",
        precision: str | None = None,
        channels_last: bool | None = None,
    ) -> TwoWaySegmenter:
        from da_seg.translators import load_translator  # translators import the segmentation package

        directory = Path(directory)
        if read_json(directory / "meta.json").get("component") != TWO_WAY:
            raise DataError(f"{directory}: not a two-way segmenter folder")
        parts = [load_trained(directory / p, device, precision, channels_last) for p in ("target", "source")]
        device = resolve_device(device) if isinstance(device, str) else device
        translator = load_translator(directory / "translator", device=device)
        return cls(*parts, translator)
