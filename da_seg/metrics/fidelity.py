"""Translation fidelity in target units (HU): SynCT against the true CT of the same subject, inside the body.

Used when the phantom's paired mode provides the true CT. Every metric has the signature
``metric(prediction, reference, spacing=None, mask=None) -> float`` on ``(z, y, x)`` arrays (``spacing`` is accepted
for a uniform metric interface and unused: these are voxelwise); ``mask`` (any non-zero voxel counts) restricts the
average to the body so that air and the table do not dilute the errors. They are registered in `METRICS`.

- ``mae_hu``: mean absolute error, ``mean |p - r|``.
- ``mean_error_hu``: signed mean error ``mean (p - r)`` (a bias: positive means the SynCT is too dense).
- ``psnr``: ``10 log10(L^2 / MSE)`` in dB with ``L = data_range``, by default the reference's range inside the mask.
- ``ssim``: the paper's Eq. 3 on each axial slice (Gaussian 11x11 window, sigma 1.5, ``C1 = (0.01 L)^2``,
  ``C2 = (0.03 L)^2``, reflect-padded borders), averaged over the mask's voxels.

Example:
    >>> import numpy as np
    >>> ct = np.zeros((1, 2, 2)); synct = ct + [[[10.0, -10.0], [0.0, 20.0]]]
    >>> mae_hu(synct, ct), mean_error_hu(synct, ct)
    (10.0, 5.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from da_seg.hookspecs import hookimpl
from da_seg.losses import ssim_map


def _select(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Boolean mask of the voxels to average over (all voxels when ``mask`` is None)."""
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} shapes differ")
    if mask is None:
        return np.ones(reference.shape, bool)
    mask = np.asarray(mask) != 0
    if mask.shape != reference.shape:
        raise ValueError(f"mask {mask.shape} does not match the images {reference.shape}")
    if not mask.any():
        raise ValueError("the mask is empty: no voxel to compare")
    return mask


def _difference(prediction: np.ndarray, reference: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``prediction - reference`` in float64 at the voxels of ``inside``."""
    return np.asarray(prediction, np.float64)[inside] - np.asarray(reference, np.float64)[inside]


def _range(reference: np.ndarray, inside: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        return float(data_range)
    values = np.asarray(reference, np.float64)[inside]
    span = float(values.max() - values.min())
    return span if span > 0 else 1.0


def mae_hu(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float] | None = None,
    mask: np.ndarray | None = None,
) -> float:
    """Mean absolute error inside ``mask`` (HU when the images are in HU)."""
    inside = _select(prediction, reference, mask)
    return float(np.abs(_difference(prediction, reference, inside)).mean())


def mean_error_hu(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float] | None = None,
    mask: np.ndarray | None = None,
) -> float:
    """Signed mean error ``prediction - reference`` inside ``mask`` (a systematic offset)."""
    inside = _select(prediction, reference, mask)
    return float(_difference(prediction, reference, inside).mean())


def psnr(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float] | None = None,
    mask: np.ndarray | None = None,
    data_range: float | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB inside ``mask``; ``inf`` for identical images."""
    inside = _select(prediction, reference, mask)
    mse = float((_difference(prediction, reference, inside) ** 2).mean())
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(_range(reference, inside, data_range) ** 2 / mse))


def ssim(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float] | None = None,
    mask: np.ndarray | None = None,
    data_range: float | None = None,
) -> float:
    """Mean of the per-pixel SSIM map (axial slices, see `da_seg.losses.ssim_map`) over the voxels in ``mask``."""
    inside = _select(prediction, reference, mask)
    span = _range(reference, inside, data_range)
    p = torch.as_tensor(np.asarray(prediction, np.float64))
    r = torch.as_tensor(np.asarray(reference, np.float64))
    if p.ndim == 2:  # one slice
        p, r, inside = p[None], r[None], inside[None]
    if min(p.shape[-2:]) < 6:
        raise ValueError(f"ssim needs slices of at least 6x6 pixels, got {tuple(p.shape[-2:])}")
    smap = ssim_map(p[:, None], r[:, None], data_range=span, padding="reflect")[:, 0].numpy()
    return float(smap[inside].mean())


@hookimpl
def register_metrics(register) -> None:
    register("mae_hu", mae_hu)
    register("mean_error_hu", mean_error_hu)
    register("psnr", psnr)
    register("ssim", ssim)
