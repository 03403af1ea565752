"""Translators: source domain -> target domain (MR -> synthetic CT), registered in `TRANSLATORS`.

A translator works on normalised volumes on the common grid: ``(z, H, W)`` arrays in [-1, 1] (the data layer,
`da_seg.data`, resamples and converts units before and after). Three are built in:

- ``identity``: no adaptation, the lower bound every study can include;
- ``histogram_matching``: a monotone intensity mapping fitted by quantile matching (a classical baseline);
- ``cyclegan``: the paper's step 1 (section 2.2), unpaired CycleGAN with an MSE, L1 or SSIM cycle loss.

A saved translator is a folder with ``meta.json`` (``component`` names the registered translator) and its
weights; `load_translator` reads any of them back without knowing which one it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from da_seg.errors import DataError
from da_seg.files import read_json
from da_seg.hookspecs import hookimpl
from da_seg.registry import TRANSLATORS
from da_seg.translators.base import META, ReversibleTranslator, Translator, check_volume


def load_translator(directory: str | Path, device: torch.device | str = "cpu") -> Translator:
    """Load whichever registered translator wrote ``directory`` (its ``meta.json`` names the component)."""
    directory = Path(directory)
    meta: dict[str, Any] = read_json(directory / META)
    name = meta.get("component")
    if not isinstance(name, str):
        raise DataError(f"{directory / META} does not name a translator component; was it written by save()?")
    if name not in TRANSLATORS:
        if name in NOT_TRANSLATORS:
            raise DataError(
                f"{directory}: holds a '{name}' checkpoint, not a translator; give a translator model folder"
            )
        from da_seg.plugins import missing_component

        raise missing_component("translator", name, meta.get("plugin"), directory)
    return TRANSLATORS.get(name).load(directory, device=device)


DOMAINS = "domains.json"
NOT_TRANSLATORS = ("segmenter",)
"""``component`` values of the other saved models (a segmenter folder given where a translator is expected)."""


def save_domains(directory: str | Path, source: Any, target: Any) -> None:
    """Record the source and target `Domain` beside a saved translator, so `translate_file` can prepare raw files,
    and which plugin (package) provides the translator in its meta.json, so a machine without it says what to
    install."""
    from da_seg.files import write_json
    from da_seg.plugins import component_origin

    directory = Path(directory)
    write_json(directory / DOMAINS, {"source": source.settings, "target": target.settings})
    meta = read_json(directory / META)
    if isinstance(meta.get("component"), str) and "plugin" not in meta:
        write_json(directory / META, {**meta, "plugin": component_origin(TRANSLATORS, meta["component"])})


def translate_file(
    model_dir: str | Path, image: str | Path, output: str | Path, *, device: torch.device | str = "cpu"
) -> Path:
    """Translate one volume file (or DICOM folder) and write it in target units on the input's own grid."""
    from da_seg.data import Domain
    from da_seg.volume import read_volume, volume_id, write_volume

    model_dir = Path(model_dir)
    domains = read_json(model_dir / DOMAINS)
    source, target = Domain.from_settings(domains["source"]), Domain.from_settings(domains["target"])
    translator = load_translator(model_dir, device=device)
    case = source.prepare(read_volume(image), id=volume_id(Path(image)))
    return write_volume(target.restore(translator.translate(case.image), case, mask=False), output)


def translate_files(
    model_dir: str | Path, inputs: str | Path, output: str | Path, *, device: torch.device | str = "cpu"
) -> list[Path]:
    """`translate_file` for one file, or for every volume in a folder (written as ``output/<case>.nii.gz``)."""
    from da_seg.volume import input_output_pairs

    pairs = input_output_pairs(Path(inputs), Path(output))
    return [translate_file(model_dir, f, out, device=device) for f, out in pairs]


@hookimpl
def register_translators(register) -> None:
    from da_seg.translators.cut import CUT
    from da_seg.translators.cyclegan import CycleGAN
    from da_seg.translators.histogram import HistogramMatching
    from da_seg.translators.identity import Identity
    from da_seg.translators.shape_cyclegan import ShapeCycleGAN

    register("identity", Identity)
    register("histogram_matching", HistogramMatching)
    register("cyclegan", CycleGAN)
    register("shape_cyclegan", ShapeCycleGAN)
    register("cut", CUT)


__all__ = [
    "ReversibleTranslator",
    "Translator",
    "check_volume",
    "load_translator",
    "save_domains",
    "translate_file",
    "translate_files",
]
