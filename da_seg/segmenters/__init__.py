"""Segmenters, registered in `SEGMENTERS`: the 2.5D Res-U-Net and an adapter over segmentation_models_pytorch.

A segmenter factory takes ``in_channels`` (``2 * context + 1``) and ``classes`` and returns a module mapping
``(B, in_channels, H, W)`` to logits ``(B, classes, H, W)`` for any H, W.
"""

from __future__ import annotations

from da_seg.hookspecs import hookimpl
from da_seg.segmenters.resunet import ResBlock, ResUNet25D, resunet25d
from da_seg.segmenters.smp import SMPSegmenter, load_encoder_weights, smp

__all__ = ["ResBlock", "ResUNet25D", "SMPSegmenter", "load_encoder_weights", "resunet25d", "smp"]


@hookimpl
def register_segmenters(register) -> None:
    register("resunet25d", resunet25d)
    register("smp", smp)
