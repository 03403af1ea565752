"""A saved segmenter folder, whichever kind (`load_segmenter`), applied to image files and folders (`predict_file`,
`predict`: prepared in the model's data domain, labels written back on each input's own grid)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from da_seg.errors import ConfigError, DataError
from da_seg.extent import ExtentNotAppliedWarning
from da_seg.files import read_json
from da_seg.segmentation.inference import Segmenter, load_trained
from da_seg.segmentation.postprocess import COMPONENT_RULES
from da_seg.segmentation.two_way import TWO_WAY, TwoWaySegmenter


def load_segmenter(
    directory: str | Path,
    device: str | torch.device = "auto",
    precision: str | None = None,
    channels_last: bool | None = None,
) -> Segmenter:
    """A trained segmenter folder: single model, ensemble or two-way pair (told apart by meta.json's ``component``)."""
    directory = Path(directory)
    if not (directory / "meta.json").is_file():
        raise DataError(
            f"{directory}: not a model folder (no meta.json); pass a run's model folder, e.g. runs/NAME/seg_synct/model"
        )
    if read_json(directory / "meta.json").get("component") == TWO_WAY:
        return TwoWaySegmenter.load(directory, device, precision, channels_last)
    return load_trained(directory, device, precision, channels_last)


def model_domain(segmenter: Segmenter) -> Any:
    """The `da_seg.data.Domain` a model was trained in (rebuilt from its meta.json)."""
    from da_seg.data import Domain

    d = segmenter.domain
    if not d or "intensity" not in d or not isinstance(d["intensity"], Mapping):
        raise DataError(
            "this model has no saved data domain (spacing, size, intensity), so raw images cannot be prepared; "
            "train it through the pipeline or pass domain= to train_segmenter"
        )
    return Domain.from_settings(d)


def predict_file(
    model_dir: str | Path | Segmenter,
    image_path: str | Path,
    out_path: str | Path,
    *,
    device: str | torch.device = "auto",
    threshold: float | None = None,
    largest_component: bool | None = None,
    tta_flip: bool | None = None,
    component_rule: str | None = None,
) -> Path:
    """Segment one image file (or DICOM folder) and write the mask on the input's own grid.

    The image is prepared in the model's domain (canonical orientation, spacing, crop/pad, intensity), segmented
    slice by slice, and the labels are resampled (nearest) back, so the written mask has exactly the input's size,
    spacing, origin and direction. Unset options take the model's saved defaults.
    """
    from da_seg.volume import read_volume, write_volume

    segmenter = model_dir if isinstance(model_dir, Segmenter) else load_segmenter(model_dir, device)
    domain = model_domain(segmenter)
    if domain.extent:
        warnings.warn(
            f"{image_path}: this model was trained on CT slabs cut by data.extent ({domain.extent.get('name')}); "
            "daseg predict segments the whole image, so check where the mask lies",
            ExtentNotAppliedWarning,
            stacklevel=2,
        )
    volume = read_volume(image_path)
    case = domain.prepare(volume)
    labels = segmenter.segment(case.image, threshold, largest_component, tta_flip, component_rule)
    restored = domain.restore(labels, case, mask=True)
    return write_volume(volume.with_array(restored.array.astype(np.uint8)), out_path, mask=True)


def predict(
    model_dir: str | Path,
    inputs: str | Path,
    output: str | Path,
    *,
    device: str | torch.device = "auto",
    threshold: float | None = None,
    largest_component: bool | None = None,
    tta_flip: bool | None = None,
    component_rule: str | None = None,
) -> list[Path]:
    """`predict_file` for one image, or for every volume in a folder (masks ``<output>/<case>.nii.gz``).

    ``model_dir`` is a trained segmenter folder: one model, a cross-validation ensemble or a two-way pair
    (`load_segmenter`).
    """
    from da_seg.volume import input_output_pairs

    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold = {threshold}: must be a probability in (0, 1), e.g. 0.5 (--threshold)")
    if component_rule is not None and component_rule not in COMPONENT_RULES:
        raise ConfigError(
            f"component rule '{component_rule}' is not one of {', '.join(COMPONENT_RULES)} (--component-rule)"
        )
    pairs = input_output_pairs(Path(inputs), Path(output))
    segmenter = load_segmenter(model_dir, device)
    options = {"threshold": threshold, "largest_component": largest_component, "tta_flip": tta_flip}
    options["component_rule"] = component_rule
    return [predict_file(segmenter, f, out, **options) for f, out in pairs]
