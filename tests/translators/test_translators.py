"""Every registered translator: fit -> save -> load_translator -> translate round trip on tiny volumes."""

from __future__ import annotations

import numpy as np
import pytest

from da_seg.errors import DataError
from da_seg.registry import TRANSLATORS
from da_seg.translators import Translator, load_translator

GAN = {"width": 4, "blocks": 1, "disc_width": 4, "disc_layers": 2, "epochs": 1, "iterations_per_epoch": 2}
TINY = {
    "cyclegan": GAN,
    "cut": GAN,
    "shape_cyclegan": {**GAN, "segmenter": {"name": "resunet25d", "base": 4, "depth": 2}},
}
LABELLED = ("shape_cyclegan",)  # translators whose fit needs the source label maps


def test_builtins_registered() -> None:
    assert {"identity", "histogram_matching", "cyclegan"} <= set(TRANSLATORS.names())


@pytest.mark.parametrize("name", TRANSLATORS.names())
def test_fit_save_load_translate(name: str, unpaired, tmp_path) -> None:
    source, target = unpaired
    translator = TRANSLATORS.build({"name": name, **TINY.get(name, {})})
    assert isinstance(translator, Translator)
    labels = {"source_masks": [(v > 0.5).astype(np.uint8) for v in source]} if name in LABELLED else {}
    assert translator.fit(source, target, seed=0, **labels) is translator
    out = translator.translate(source[0])
    assert out.shape == source[0].shape and out.dtype == np.float32
    assert out.min() >= -1 and out.max() <= 1
    translator.save(tmp_path / "model")
    again = load_translator(tmp_path / "model")
    assert type(again) is type(translator)
    np.testing.assert_allclose(again.translate(source[0]), out, atol=1e-6)


def test_load_translator_needs_a_component(tmp_path) -> None:
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(DataError, match="does not name a translator"):
        load_translator(tmp_path)
    with pytest.raises(DataError, match="missing file"):
        load_translator(tmp_path / "nowhere")


def test_translate_rejects_2d_input() -> None:
    with pytest.raises(DataError, match=r"\(z, H, W\)"):
        TRANSLATORS.create("identity").translate(np.zeros((4, 4), np.float32))
