"""Two-way segmentation: the SynCT segmenter on the target image averaged with the source segmenter on the image
translated back by the CycleGAN's inverse generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from da_seg.errors import ConfigError, DataError
from da_seg.registry import TRANSLATORS
from da_seg.segmentation import TrainedSegmenter, TwoWaySegmenter, build_segmenter, load_segmenter
from da_seg.translators import ReversibleTranslator

TINY_GAN = {"width": 4, "blocks": 1, "disc_width": 4, "disc_layers": 2}


def _conv(seed: int, classes: int = 1) -> TrainedSegmenter:
    torch.manual_seed(seed)
    spec = {"name": "resunet25d", "base": 4, "depth": 2}
    return TrainedSegmenter(
        model=build_segmenter(spec, context=1, classes=classes).eval(),
        spec=spec,
        context=1,
        classes=classes,
        defaults={"component_rule": "most_confident"},
    )


def _volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (5, 8, 8)).astype(np.float32)


def _cyclegan(seed: int = 0):
    torch.manual_seed(seed)
    return TRANSLATORS.build({"name": "cyclegan", **TINY_GAN})


def test_translate_back_runs_the_inverse_generator_and_only_cyclegans_have_one() -> None:
    gan, image = _cyclegan(), _volume(0)
    with torch.no_grad():
        expected = gan.g_ba.eval()(torch.as_tensor(image)[:, None]).clamp(-1, 1)[:, 0].numpy()
    np.testing.assert_allclose(gan.translate_back(image), expected, atol=1e-6)
    assert not np.allclose(gan.translate(image), expected, atol=1e-3)  # the other generator
    assert isinstance(gan, ReversibleTranslator)
    assert isinstance(TRANSLATORS.build({"name": "shape_cyclegan", **TINY_GAN}), ReversibleTranslator)
    assert not isinstance(TRANSLATORS.build({"name": "cut", **TINY_GAN}), ReversibleTranslator)


def test_prediction_is_the_mean_of_the_direct_and_the_translated_back_view() -> None:
    target, source, gan, image = _conv(0), _conv(1), _cyclegan(), _volume(2)
    pair = TwoWaySegmenter(target, source, gan)
    expected = (target.predict(image) + source.predict(gan.translate_back(image))) / 2
    np.testing.assert_allclose(pair.predict(image), expected, atol=1e-6)
    assert not np.allclose(pair.predict(image), target.predict(image), atol=1e-3)
    # the pair thresholds and post-processes with the target model's saved defaults
    assert pair.defaults == {"component_rule": "most_confident"}
    assert pair.segment(image).dtype == np.uint8


def test_a_saved_pair_loads_back_as_one_model_folder(tmp_path) -> None:
    pair, image = TwoWaySegmenter(_conv(0), _conv(1), _cyclegan()), _volume(3)
    pair.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["meta.json", "source", "target", "translator"]
    loaded = load_segmenter(tmp_path / "model", device="cpu")
    assert isinstance(loaded, TwoWaySegmenter)
    np.testing.assert_allclose(loaded.predict(image), pair.predict(image), atol=1e-6)
    np.testing.assert_array_equal(loaded.segment(image), pair.segment(image))
    with pytest.raises(DataError, match="not a two-way segmenter"):
        TwoWaySegmenter.load(tmp_path / "model" / "target")


def test_a_translator_without_an_inverse_or_mismatched_segmenters_are_refused() -> None:
    with pytest.raises(ConfigError, match="'cut' cannot translate target images back"):
        TwoWaySegmenter(_conv(0), _conv(1), TRANSLATORS.build({"name": "cut", **TINY_GAN}))
    with pytest.raises(DataError, match="predict different structures"):
        TwoWaySegmenter(_conv(0), _conv(1, classes=2), _cyclegan())
