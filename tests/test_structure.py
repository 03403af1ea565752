"""Structure-consistency losses: exact values on tiny images, blindness to contrast, gradients into the generator."""

from __future__ import annotations

import math

import pytest
import torch

from da_seg.errors import ConfigError
from da_seg.losses import build_loss
from da_seg.registry import LOSSES, TRANSLATORS


def _row(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


def test_registered_as_losses() -> None:
    assert {"mind", "ngf"} <= set(LOSSES.names())


def test_ngf_exact_value_on_a_row() -> None:
    # Central differences with replicated edges: [0, 1, 3] -> [0.5, 1.5, 1]; [0, 2, 1] -> [1, 0.5, -0.5].
    # With eps = 0.5 the squared cosines are 0.4, 0.45, 0.4, so the loss is mean(0.6, 0.55, 0.6).
    loss = build_loss({"name": "ngf", "eps": 0.5})(_row(0, 1, 3), _row(0, 2, 1))
    assert loss.item() == pytest.approx(1.75 / 3, abs=1e-6)


def test_ngf_ignores_the_sign_of_edges() -> None:
    x = torch.randn(2, 3, 8, 8)
    ngf = build_loss("ngf")
    assert ngf(x, -x).item() == pytest.approx(ngf(x, x).item(), abs=1e-6)
    assert ngf(x, torch.randn(2, 3, 8, 8)).item() > ngf(x, x).item() + 0.1


def test_mind_exact_value_on_a_row() -> None:
    # sigma 0, dilation 1: pixel 0 differs from its right neighbour only, pixel 1 from its left one: D/V = 4 there,
    # 0 elsewhere, so MIND is exp(-4) in that one direction and 1 in the other three; a flat image is all ones.
    mind = build_loss({"name": "mind", "sigma": 0.0, "dilation": 1})
    assert mind(_row(0, 1), _row(1, 1)).item() == pytest.approx((1 - math.exp(-4)) / 4, abs=1e-6)


def test_mind_is_the_same_for_rescaled_and_inverted_contrast() -> None:
    mind = build_loss({"name": "mind", "sigma": 0.0, "dilation": 1})
    assert mind(_row(0, 1), _row(0, 5)).item() == pytest.approx(0.0, abs=1e-7)
    assert mind(_row(0, 1), _row(5, 0)).item() == pytest.approx(0.0, abs=1e-7)
    x = torch.rand(1, 1, 12, 12)
    default = build_loss("mind")
    assert default(x, 3 * x - 1).item() == pytest.approx(0.0, abs=1e-5)
    assert default(x, x.roll(3, dims=-1)).item() > 0.05  # moved edges do cost


@pytest.mark.parametrize(
    "spec", [{"name": "mind", "dilation": 0}, {"name": "mind", "sigma": -1}, {"name": "ngf", "eps": 0}]
)
def test_bad_settings_are_config_errors(spec) -> None:
    with pytest.raises(ConfigError):
        build_loss(spec)


@pytest.mark.parametrize("loss", ["mind", "ngf"])
def test_the_cyclegan_structure_term_reaches_both_generators(loss: str) -> None:
    torch.manual_seed(0)
    spec = {"name": "cyclegan", "width": 4, "blocks": 1, "disc_width": 4, "disc_layers": 2, "structure_loss": loss}
    gan = TRANSLATORS.build(spec)
    assert gan.loss_weights()["structure"] == 1.0
    terms, _, _ = gan.generator_losses(torch.rand(2, 1, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1)
    terms["structure"].backward()
    for name in ("g_ab", "g_ba"):
        grads = [p.grad for p in gan.networks[name].parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum().item() for g in grads) > 0, name
