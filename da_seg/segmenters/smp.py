"""A thin adapter over segmentation_models_pytorch: any architecture with any of its encoders, by name.

``{name = "smp", arch = "Unet", encoder = "resnet34"}`` builds ``smp.create_model("Unet", "resnet34", ...)``; timm
encoders come through smp's ``tu-`` prefix (``encoder = "tu-resnet10t"``). smp adapts the first convolution to any
``in_channels`` (1, 3, 5, 7 slices). Nothing is ever downloaded: ``encoder_weights`` is None (random init) or a local
``.pth``/``.pt``/``.safetensors`` file holding an encoder state dict, loaded with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from da_seg.errors import ConfigError, DataError
from da_seg.padding import PadToMultiple

_DEFAULT_DECODER = (256, 128, 64, 32, 16)
_WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


class SMPSegmenter(PadToMultiple):
    """An smp model padded to a multiple of its output stride (``2**encoder_depth``) so any (H, W) works.

    Shape:
        ``(B, in_channels, H, W)`` -> logits ``(B, classes, H, W)``.
    """

    @property
    def encoder(self) -> nn.Module:
        """The smp encoder (its ``state_dict`` is what `load_encoder_weights` reads)."""
        return self.net.encoder


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a ``torch.save``d state dict (``weights_only=True``: no code runs)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"encoder weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(f"{path}: cannot read encoder weights ({err})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: expected a state dict of tensors (name -> tensor)")
    return state


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local state dict into ``encoder`` strictly; missing, unexpected or mis-shaped keys are a `DataError`."""
    state = read_state_dict(path)
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} with other shapes (e.g. {k!r}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise DataError(
            f"{path}: encoder weights do not fit this encoder: {'; '.join(parts)}; "
            "check the encoder name and in_channels (2*context+1) it was saved with"
        )
    encoder.load_state_dict(state, strict=True)


def smp(
    in_channels: int = 1,
    classes: int = 1,
    arch: str = "Unet",
    encoder: str = "resnet34",
    encoder_weights: str | None = None,
    encoder_depth: int = 5,
    **kwargs: Any,
) -> SMPSegmenter:
    """Any segmentation_models_pytorch model (registered as ``smp``).

    Args:
        in_channels: ``2 * context + 1`` slices.
        classes: output channels.
        arch: smp architecture (``Unet``, ``UnetPlusPlus``, ``FPN``, ``DeepLabV3Plus``, ``Segformer``, ...).
        encoder: smp encoder name, or ``tu-<timm model>`` for a timm encoder.
        encoder_weights: None (random) or a local weights file (``.pth``, ``.pt``, ``.safetensors``) holding the
            encoder's state dict, e.g. saved from ``model.encoder.state_dict()``; names like ``"imagenet"`` are
            refused because they would download.
        encoder_depth: encoder stages (3-5); U-Net decoders get matching default ``decoder_channels``.
        **kwargs: passed to the smp architecture (``decoder_channels``, ...).
    """
    if encoder_weights is not None and not str(encoder_weights).endswith(_WEIGHT_SUFFIXES):
        raise ConfigError(
            f"smp encoder_weights = {encoder_weights!r}: da_seg never downloads weights; give a local "
            f"{'/'.join(_WEIGHT_SUFFIXES)} file with the encoder's state dict, or leave it unset"
        )
    # Imported here, not at the top: it pulls in timm and torchvision (4.8 s of every `daseg` command's start on a
    # 2-core test machine), which only an smp model needs.
    import segmentation_models_pytorch as smp_lib

    if arch.lower() in ("unet", "unetplusplus") and encoder_depth != 5 and "decoder_channels" not in kwargs:
        kwargs["decoder_channels"] = _DEFAULT_DECODER[-encoder_depth:]
    try:
        net = smp_lib.create_model(
            arch,
            encoder_name=encoder,
            encoder_weights=None,
            in_channels=in_channels,
            classes=classes,
            encoder_depth=encoder_depth,
            **kwargs,
        )
    except KeyError as err:
        raise ConfigError(f"smp: unknown architecture or encoder ({err}); arch={arch!r}, encoder={encoder!r}") from None
    except RuntimeError as err:  # timm: unknown model name
        raise ConfigError(f"smp: cannot build encoder {encoder!r}: {err}") from None
    except (TypeError, ValueError) as err:  # smp checks the keyword arguments forwarded to it
        raise ConfigError(f"smp: {arch} refused its arguments ({err})") from None
    model = SMPSegmenter(net, 2**encoder_depth)
    if encoder_weights is not None:
        load_encoder_weights(model.encoder, encoder_weights)
    return model
