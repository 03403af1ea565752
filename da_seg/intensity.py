"""Intensity presets (CT window, MR percentile normalisation), registered in `INTENSITIES`.

A preset maps a volume's values to [-1, 1] (``forward``) and back to the modality's units (``inverse``); the
networks only ever see [-1, 1]. ``padding_value`` is what "air / background" becomes (-1), used when the common grid
pads an image. Per-volume statistics (MR percentiles) come from ``fit`` and are passed back to ``forward`` and
``inverse`` so a restored image is in that volume's own units. A preset may also have ``check(array, source)``,
which `da_seg.data.Domain.prepare` calls on every raw volume to refuse one that cannot be in the preset's units (a
CT not in HU, an MR folder holding CT) with a `DataError` naming the file, instead of training on garbage, and
``correct(volume)``, which it applies to the volume on the common grid before ``fit`` (MR bias-field correction).

Example:
    >>> from da_seg.intensity import CTWindow
    >>> w = CTWindow(-500, 500)
    >>> w.forward(np.array([-500.0, 0.0, 500.0])).tolist(), w.inverse(np.array([0.5])).tolist()
    ([-1.0, 0.0, 1.0], [250.0])
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from da_seg.errors import ConfigError, DataError
from da_seg.hookspecs import hookimpl
from da_seg.volume import Volume

# The full 12-bit CT range: "window off" still maps to [-1, 1] without clipping real tissue.
CT_FULL_RANGE = (-1024.0, 3071.0)


def _sample(array: np.ndarray, limit: int = 1_000_000) -> np.ndarray:
    """At most ``limit`` evenly strided voxels as float32 (percentiles of a 100 M voxel CT in milliseconds)."""
    flat = np.asarray(array).reshape(-1)
    return flat[:: max(1, flat.size // limit)].astype(np.float32)


def _to_unit(array: np.ndarray, low: float, high: float) -> np.ndarray:
    clipped = np.clip(np.asarray(array, dtype=np.float32), low, high)
    return ((clipped - low) * (2.0 / (high - low)) - 1.0).astype(np.float32)


def _from_unit(array: np.ndarray, low: float, high: float) -> np.ndarray:
    unit = np.clip(np.asarray(array, dtype=np.float32), -1.0, 1.0)
    return ((unit + 1.0) * ((high - low) / 2.0) + low).astype(np.float32)


class CTWindow:
    """Clip Hounsfield units to ``[low, high]`` and map linearly to [-1, 1]; exact inverse inside the window.

    With ``tail_high`` (ours, not the paper's) the window keeps a compressed bone tail: ``low..high`` maps to the
    first ``1 - tail_share`` of the range and ``high..tail_high`` to the rest, so a SynCT can carry bone above
    ``high`` while soft tissue keeps nearly all its contrast (a wider linear window squeezes it: docs/translators.md).

    Args:
        low: lower window edge in HU (default -500, as in the paper); None with ``high=None`` turns the window off
            (full range -1024..3071 HU).
        high: upper window edge in HU (default 500).
        check: refuse volumes that do not look like HU (see `check`).
        tail_high: upper end in HU of the compressed tail above ``high`` (default None: no tail, clip at ``high``).
        tail_share: the share of the [-1, 1] range the tail gets (default 0.1).
    """

    padding_value = -1.0

    def __init__(
        self,
        low: float | None = -500.0,
        high: float | None = 500.0,
        check: bool = True,
        tail_high: float | None = None,
        tail_share: float = 0.1,
    ) -> None:
        if (low is None) != (high is None):
            raise ConfigError("ct_window: give both low and high, or neither (window off)")
        low, high = CT_FULL_RANGE if low is None else (float(low), float(high))  # type: ignore[arg-type]
        if high <= low:
            raise ConfigError(f"ct_window: high ({high}) must be above low ({low})")
        if tail_high is not None and not (tail_high > high and 0.0 < tail_share < 1.0):
            raise ConfigError(
                f"ct_window: tail_high ({tail_high}) must be above high ({high}) and tail_share ({tail_share}) "
                "between 0 and 1"
            )
        self.low, self.high, self.checks = low, high, bool(check)
        self.tail_high, self.tail_share = (None, 0.0) if tail_high is None else (float(tail_high), float(tail_share))

    def check(self, array: np.ndarray, source: str) -> None:
        """Refuse a volume that cannot be a CT in Hounsfield units.

        A CT in HU has air (about -1000) around and inside the body; stored values without the DICOM rescale
        (0..4095) or an MR image have no negative values at all, and a 1st percentile above -200 with values above
        2000 is a shifted scale. Turn off with ``check = false`` in the preset table for unusual data.
        """
        if not self.checks:
            return
        sample = _sample(array)
        low, p1, high = float(sample.min()), float(np.percentile(sample, 1)), float(sample.max())
        if low >= 0 or (p1 > -200 and high > 2000):
            raise DataError(
                f"{source}: does not look like a CT in Hounsfield units (values {low:g}..{high:g}, 1st percentile "
                f"{p1:g}; air should be near -1000): apply the DICOM rescale slope/intercept (e.g. subtract 1024), "
                "check that the CT and MR folders are not swapped, or set check = false in the target_intensity table"
            )

    @property
    def settings(self) -> dict[str, Any]:
        """What the output depends on (for cache keys)."""
        tail = {} if self.tail_high is None else {"tail_high": self.tail_high, "tail_share": self.tail_share}
        return {"name": "ct_window", "low": self.low, "high": self.high, **tail}

    def fit(self, array: np.ndarray) -> dict[str, float]:
        """No per-volume statistics: a window is fixed in HU."""
        return {}

    def forward(self, array: np.ndarray, stats: dict[str, float] | None = None) -> np.ndarray:
        """HU -> [-1, 1] (values outside the window, tail included, are clipped)."""
        if self.tail_high is None:
            return _to_unit(array, self.low, self.high)
        return np.interp(np.asarray(array, np.float32), self._knots_hu, self._knots_unit).astype(np.float32)

    def inverse(self, array: np.ndarray, stats: dict[str, float] | None = None) -> np.ndarray:
        """[-1, 1] -> HU, exact for values that were inside the window."""
        if self.tail_high is None:
            return _from_unit(array, self.low, self.high)
        return np.interp(np.asarray(array, np.float32), self._knots_unit, self._knots_hu).astype(np.float32)

    @property
    def _knots_hu(self) -> list[float]:
        return [self.low, self.high, self.tail_high]  # type: ignore[list-item]

    @property
    def _knots_unit(self) -> list[float]:
        return [-1.0, 1.0 - 2.0 * self.tail_share, 1.0]

    def __repr__(self) -> str:
        tail = "" if self.tail_high is None else f", tail_high={self.tail_high}, tail_share={self.tail_share}"
        return f"CTWindow(low={self.low}, high={self.high}{tail})"


class MRPercentile:
    """Robust MR normalisation: the volume's ``lower``..``upper`` percentiles map to [-1, 1] (values clipped).

    MR has no absolute units, so the statistics are per volume (`fit`); ``inverse`` with the same stats returns the
    original scale inside the percentile range. Without explicit stats the last fitted ones are used.

    Args:
        lower: lower percentile (default 0.5).
        upper: upper percentile (default 99.5).
        check: refuse volumes that look like a CT in HU (see `check`).
        bias_field: divide out the coil's smooth multiplicative shading first (`correct`, SimpleITK's N4; ours to
            offer against the bias fields of real MR, issue 41). Off by default.
    """

    padding_value = -1.0

    def __init__(self, lower: float = 0.5, upper: float = 99.5, check: bool = True, bias_field: bool = False) -> None:
        if not 0.0 <= lower < upper <= 100.0:
            raise ConfigError(f"mr_percentile: need 0 <= lower < upper <= 100, got {lower}, {upper}")
        self.lower, self.upper = float(lower), float(upper)
        self.checks = bool(check)
        self.bias_field = bool(bias_field)

    def correct(self, volume: Volume) -> Volume:
        """``volume`` with its bias field divided out when ``bias_field`` (else as it is): N4 (Tustison et al. 2010,
        SimpleITK's ``N4BiasFieldCorrectionImageFilter``) fitted on a 2x in-plane shrink of the image inside an Otsu
        foreground mask, the field then evaluated on the full grid."""
        if not self.bias_field:
            return volume
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.asarray(volume.array, dtype=np.float32))
        image.SetSpacing(volume.spacing)
        mask = sitk.OtsuThreshold(image, 0, 1, 200)
        shrink = [2, 2, 1]  # (x, y, z): MR slices are few and thick
        n4 = sitk.N4BiasFieldCorrectionImageFilter()
        n4.SetMaximumNumberOfIterations([50, 50, 50])
        n4.Execute(sitk.Shrink(image, shrink), sitk.Shrink(mask, shrink))
        field = sitk.GetArrayFromImage(sitk.Exp(n4.GetLogBiasFieldAsImage(image)))
        return replace(volume, array=(volume.array / np.maximum(field, 1e-6)).astype(np.float32))

    def check(self, array: np.ndarray, source: str) -> None:
        """Refuse a volume that looks like a CT in HU (5% or more of its voxels below -500, i.e. air in HU).

        MR magnitude images are non-negative; standardised MR stays within a few units of zero.
        """
        if not self.checks:
            return
        share = float((_sample(array) < -500).mean())
        if share >= 0.05:
            raise DataError(
                f"{source}: looks like a CT in Hounsfield units, not MR ({share:.0%} of voxels below -500): "
                "check that the MR and CT folders are not swapped, or set check = false in the source_intensity table"
            )

    @property
    def settings(self) -> dict[str, Any]:
        settings = {"name": "mr_percentile", "lower": self.lower, "upper": self.upper}
        return settings | ({"bias_field": True} if self.bias_field else {})  # older cache keys stay valid

    def fit(self, array: np.ndarray) -> dict[str, float]:
        """The volume's percentile values ``{"low": ..., "high": ...}``."""
        low, high = np.percentile(np.asarray(array, dtype=np.float32), [self.lower, self.upper])
        if high <= low:  # constant image: avoid dividing by zero, everything maps to -1
            high = low + 1.0
        return {"low": float(low), "high": float(high)}

    def forward(self, array: np.ndarray, stats: dict[str, float] | None = None) -> np.ndarray:
        """Values -> [-1, 1] by this volume's percentiles (`fit`), or by the given ``stats``."""
        s = stats or self.fit(array)
        return _to_unit(array, s["low"], s["high"])

    def inverse(self, array: np.ndarray, stats: dict[str, float] | None = None) -> np.ndarray:
        """[-1, 1] -> the volume's original scale; needs the ``stats`` `fit` gave for that volume (no hidden state:
        the same preset serves many volumes)."""
        if stats is None:
            raise ValueError("mr_percentile.inverse needs the stats of a fitted volume: pass stats=preset.fit(volume)")
        return _from_unit(array, stats["low"], stats["high"])

    def __repr__(self) -> str:
        return f"MRPercentile(lower={self.lower}, upper={self.upper}, bias_field={self.bias_field})"


def ct_window(
    low: float | None = -500.0,
    high: float | None = 500.0,
    off: bool = False,
    check: bool = True,
    tail_high: float | None = None,
    tail_share: float = 0.1,
) -> CTWindow:
    """CT window preset (registered as ``ct_window``).

    ``off=True`` (config ``{name = "ct_window", off = true}``; TOML has no null) or ``low=high=None`` turns the window
    off: the full -1024..3071 HU range maps to [-1, 1]. ``check=False`` accepts volumes that do not look like HU.
    ``tail_high`` adds a compressed tail above ``high`` (`CTWindow`).
    """
    return CTWindow(None, None, check) if off else CTWindow(low, high, check, tail_high, tail_share)


def mr_percentile(
    lower: float = 0.5, upper: float = 99.5, check: bool = True, bias_field: bool = False
) -> MRPercentile:
    """MR percentile preset (registered as ``mr_percentile``); ``check=False`` accepts CT-like volumes,
    ``bias_field=True`` corrects the coil's shading first (N4)."""
    return MRPercentile(lower, upper, check, bias_field)


@hookimpl
def register_intensities(register: Any) -> None:
    register("ct_window", ct_window)
    register("mr_percentile", mr_percentile)
