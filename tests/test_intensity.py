"""Intensity presets: CT window exact inside the window, window off, MR percentiles, on real value ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from da_seg import INTENSITIES, ConfigError
from da_seg.intensity import CTWindow, MRPercentile
from da_seg.volume import Volume, read_volume


def test_presets_are_registered_and_built_from_config_tables() -> None:
    assert {"ct_window", "mr_percentile"} <= set(INTENSITIES.names())
    window = INTENSITIES.build({"name": "ct_window", "low": -150.0, "high": 350.0})
    assert (window.low, window.high) == (-150.0, 350.0)
    assert INTENSITIES.build({"name": "mr_percentile"}).upper == 99.5
    assert window.padding_value == -1.0


@pytest.mark.parametrize(
    ("low", "high", "hu", "expected"),
    [
        (-500, 500, [-500, -250, 0, 250, 500], [-1, -0.5, 0, 0.5, 1]),
        (-150, 350, [-150, 100, 350], [-1, 0, 1]),
        (-500, 500, [-1000, 3000], [-1, 1]),  # clipped
    ],
)
def test_ct_window_maps_linearly(low: float, high: float, hu: list[float], expected: list[float]) -> None:
    np.testing.assert_allclose(CTWindow(low, high).forward(np.array(hu)), expected, atol=1e-6)


def test_ct_window_inverse_is_exact_inside_the_window() -> None:
    hu = np.arange(-500, 501, dtype=np.float32)  # every integer HU in the window
    window = CTWindow(-500, 500)
    back = window.inverse(window.forward(hu))
    np.testing.assert_allclose(back, hu, atol=1e-3)
    assert np.array_equal(np.rint(back), hu)


def test_ct_window_off_uses_the_full_range() -> None:
    off = INTENSITIES.build({"name": "ct_window", "off": True})
    assert (off.low, off.high) == (-1024.0, 3071.0)
    assert (CTWindow(None, None).low, CTWindow(None, None).high) == (-1024.0, 3071.0)
    np.testing.assert_allclose(off.forward(np.array([-1024.0, 3071.0])), [-1, 1])


def test_ct_window_tail_compresses_bone_above_the_window_and_inverts_exactly() -> None:
    window = INTENSITIES.build(
        {"name": "ct_window", "low": -500.0, "high": 500.0, "tail_high": 1500.0, "tail_share": 0.1}
    )
    hu = np.array([-1000.0, -500.0, 0.0, 500.0, 1000.0, 1500.0, 3000.0])
    np.testing.assert_allclose(window.forward(hu), [-1.0, -1.0, -0.1, 0.8, 0.9, 1.0, 1.0], atol=1e-6)
    inside = np.arange(-500, 1501, dtype=np.float32)  # every integer HU in the window and its tail
    assert np.array_equal(np.rint(window.inverse(window.forward(inside))), inside)
    assert window.settings == {
        "name": "ct_window",
        "low": -500.0,
        "high": 500.0,
        "tail_high": 1500.0,
        "tail_share": 0.1,
    }


def test_ct_window_without_a_tail_keeps_its_settings_so_caches_stay_valid() -> None:
    assert CTWindow(-500, 500).settings == {"name": "ct_window", "low": -500.0, "high": 500.0}


def test_bad_windows_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="above low"):
        CTWindow(100, 100)
    with pytest.raises(ConfigError, match="both low and high"):
        CTWindow(None, 100)
    with pytest.raises(ConfigError, match="tail_high"):
        CTWindow(-500, 500, tail_high=400)
    with pytest.raises(ConfigError, match="tail_share"):
        CTWindow(-500, 500, tail_high=1500, tail_share=1.0)
    with pytest.raises(ConfigError, match="lower < upper"):
        MRPercentile(99, 1)


def test_mr_percentile_maps_percentiles_to_plus_minus_one_and_back() -> None:
    values = np.arange(1001, dtype=np.float32)  # 0.5th percentile 5, 99.5th 995
    preset = MRPercentile()
    out = preset.forward(values)
    stats = preset.fit(values)
    assert stats == pytest.approx({"low": 5.0, "high": 995.0})
    assert out.min() == -1 and out.max() == 1
    np.testing.assert_allclose(out[500], 0.0, atol=1e-6)
    inside = values[5:996]
    np.testing.assert_allclose(preset.inverse(preset.forward(inside, stats), stats), inside, atol=1e-3)


def test_mr_inverse_needs_stats() -> None:
    with pytest.raises(ValueError, match="stats"):
        MRPercentile().inverse(np.zeros(3))


def test_presets_on_real_value_ranges(real_data: Path) -> None:
    ct = read_volume(real_data / "pelvis_ct/totalsegmentator_example_ct.nii.gz").array
    assert ct.min() < -1000 and ct.max() > 3000  # air and a metal hip implant
    for preset in (CTWindow(-500, 500), CTWindow(None, None)):
        out = preset.forward(ct)
        assert out.dtype == np.float32 and out.min() >= -1 and out.max() <= 1
    soft = (ct > -500) & (ct < 500)
    np.testing.assert_allclose(CTWindow().inverse(CTWindow().forward(ct[soft])), ct[soft], atol=1e-3)
    mr = read_volume(real_data / "prostatex_t2_dicom/ProstateX-0218_t2_tra").array
    out = MRPercentile().forward(mr)
    assert out.min() == -1 and out.max() == 1
    assert 0.004 < np.mean(out == 1) < 0.006  # the top 0.5% clips


def _shaded_phantom() -> tuple[Volume, np.ndarray]:
    """A textured ellipsoid (mean 100) under a smooth coil shading of +-30% across the field of view (issue 41's
    level for real prostate MR), on 2 x 2 x 3 mm voxels; returns the volume and the object's mask."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:16, :64, :64].astype(np.float32)
    inside = ((z - 7.5) / 7) ** 2 + ((y - 31.5) / 26) ** 2 + ((x - 31.5) / 28) ** 2 < 1
    tissue = np.where(inside, 100 + 5 * rng.standard_normal(inside.shape), 2.0).astype(np.float32)
    shading = 1 + 0.3 * (x - 31.5) / 31.5
    return Volume(tissue * shading, spacing=(2.0, 2.0, 3.0)), inside


def test_bias_field_correction_flattens_a_shaded_mr() -> None:
    volume, inside = _shaded_phantom()
    corrected = INTENSITIES.build({"name": "mr_percentile", "bias_field": True}).correct(volume)

    def spread(v: np.ndarray) -> float:  # coefficient of variation inside the object
        return float(v[inside].std() / v[inside].mean())

    # the texture alone spreads 0.05; the shading adds 0.08 (measured: 0.129 before, 0.050 after)
    before, after = spread(volume.array), spread(corrected.array)
    assert before > 0.12 and after < 0.06, (before, after)
    assert corrected.spacing == volume.spacing and corrected.array.dtype == np.float32
    plain = INTENSITIES.build("mr_percentile")
    assert plain.correct(volume) is volume and "bias_field" not in plain.settings  # off: nothing changes, same key
    assert INTENSITIES.build({"name": "mr_percentile", "bias_field": True}).settings["bias_field"] is True
