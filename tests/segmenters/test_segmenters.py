"""Every registered segmenter: context 0..3 -> 1/3/5/7 input channels, forward, backward, output shape."""

from __future__ import annotations

import pytest
import torch

from da_seg.errors import ConfigError, DataError
from da_seg.registry import SEGMENTERS
from da_seg.segmenters import ResUNet25D, load_encoder_weights

# The smallest variant of each registered segmenter; a newly registered one without an entry still runs with defaults.
TINY = {
    "resunet25d": {"base": 4, "depth": 2},
    "smp": {"arch": "Unet", "encoder": "resnet18", "encoder_depth": 3},
}


@pytest.mark.parametrize("name", SEGMENTERS.names())
@pytest.mark.parametrize("context", [0, 1, 2, 3])
def test_every_segmenter_takes_2c_plus_1_slices(name: str, context: int, device: torch.device) -> None:
    net = SEGMENTERS.build({"name": name, **TINY.get(name, {})}, in_channels=2 * context + 1, classes=1).to(device)
    x = torch.randn(2, 2 * context + 1, 32, 32, device=device, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 1, 32, 32)
    y.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    first = [p for p in net.parameters() if p.ndim == 4 and p.shape[1] == 2 * context + 1]
    assert first and all(p.grad is not None and p.grad.abs().sum() > 0 for p in first)  # the adapted input layer
    with pytest.raises(RuntimeError):  # the channel count really is 2c+1
        net(torch.randn(2, 2 * context + 2, 32, 32, device=device))


@pytest.mark.parametrize("name", SEGMENTERS.names())
def test_any_size_and_several_classes(name: str) -> None:
    net = SEGMENTERS.build({"name": name, **TINY.get(name, {})}, in_channels=3, classes=3).eval()
    assert net(torch.randn(1, 3, 20, 36)).shape == (1, 3, 20, 36)  # not multiples of the stride


def test_resunet_has_residual_blocks_at_every_level() -> None:
    net = ResUNet25D(in_channels=3, classes=1, base=4, depth=3, norm="instance")
    assert len(net.down) == 3 and len(net.decode) == 3
    widths = [b.body[0].out_channels for b in [net.stem, *net.down]]
    assert widths == [4, 8, 16, 32]
    with pytest.raises(ValueError, match="norm"):
        ResUNet25D(norm="group")


@pytest.mark.parametrize(
    "arch, encoder",
    [("Unet", "resnet18"), ("FPN", "tu-resnet10t"), ("UnetPlusPlus", "resnet18"), ("FPN", "tu-mobilenetv3_small_050")],
)
def test_smp_architectures_and_timm_encoders(arch: str, encoder: str) -> None:
    net = SEGMENTERS.build({"name": "smp", "arch": arch, "encoder": encoder}, in_channels=5, classes=1).eval()
    assert net(torch.randn(1, 5, 40, 48)).shape == (1, 1, 40, 48)


def test_smp_loads_local_encoder_weights(tmp_path) -> None:
    spec = {"name": "smp", "arch": "FPN", "encoder": "tu-resnet10t"}
    source = SEGMENTERS.build(spec, in_channels=3)
    torch.save(source.encoder.state_dict(), tmp_path / "enc.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in source.encoder.state_dict().items()}, str(tmp_path / "enc.safetensors"))
    fresh = SEGMENTERS.build(spec, in_channels=3)
    key = next(k for k, v in fresh.encoder.state_dict().items() if v.is_floating_point() and v.numel() > 1)
    assert not torch.equal(fresh.encoder.state_dict()[key], source.encoder.state_dict()[key])
    for file in ("enc.pth", "enc.safetensors"):
        loaded = SEGMENTERS.build({**spec, "encoder_weights": str(tmp_path / file)}, in_channels=3)
        for k, v in source.encoder.state_dict().items():
            assert torch.equal(loaded.encoder.state_dict()[k], v), k
        # and the decoder is not touched: only the encoder came from the file
        assert loaded.net.decoder is not source.net.decoder


def test_smp_weight_errors_are_clear(tmp_path) -> None:
    spec = {"name": "smp", "arch": "Unet", "encoder": "resnet18", "encoder_depth": 3}
    with pytest.raises(DataError, match="not found"):
        SEGMENTERS.build({**spec, "encoder_weights": str(tmp_path / "missing.pth")}, in_channels=1)
    with pytest.raises(ConfigError, match="never downloads"):
        SEGMENTERS.build({**spec, "encoder_weights": "imagenet"}, in_channels=1)
    other = SEGMENTERS.build({"name": "smp", "arch": "FPN", "encoder": "tu-resnet10t"}, in_channels=1)
    torch.save(other.encoder.state_dict(), tmp_path / "other.pth")
    with pytest.raises(DataError, match="do not fit"):
        SEGMENTERS.build({**spec, "encoder_weights": str(tmp_path / "other.pth")}, in_channels=1)
    net = SEGMENTERS.build(spec, in_channels=3)
    torch.save(net.encoder.state_dict(), tmp_path / "three.pth")
    with pytest.raises(DataError, match="other shapes"):  # saved with 3 input channels, loaded with 1
        load_encoder_weights(SEGMENTERS.build(spec, in_channels=1).encoder, tmp_path / "three.pth")
    with pytest.raises(ConfigError, match="unknown argument"):
        SEGMENTERS.build({"name": "resunet25d", "widht": 3}, in_channels=1)


def test_smp_arguments_it_refuses_are_config_errors() -> None:
    """Arguments forwarded to smp stay config mistakes now that Registry.create keeps other errors as bugs."""
    with pytest.raises(ConfigError, match=r"smp: Unet refused its arguments .*decoder_channels"):
        SEGMENTERS.create("smp", arch="Unet", encoder="resnet18", in_channels=3, decoder_channels=(4,))
