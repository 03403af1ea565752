"""cut: PatchNCE's exact value, the contrastive term reaches the generator, one generator saved, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from da_seg.errors import ConfigError
from da_seg.registry import TRANSLATORS
from da_seg.translators import load_translator
from da_seg.translators.cut import patch_nce

TINY = {"name": "cut", "width": 4, "blocks": 2, "disc_width": 4, "disc_layers": 2, "iterations_per_epoch": 2}


def _weights(model) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, net in model.networks.items() for k, v in net.state_dict().items()}


def test_patch_nce_exact_value() -> None:
    # Two orthogonal unit patches matching themselves: logits [1, -10 (itself, masked), 0] / T per row.
    q = torch.eye(2).unsqueeze(0)
    expected = math.log(1 + math.exp(-11) + math.exp(-1))
    assert patch_nce(q, q, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    swapped = q.flip(1)  # each query now matches the other key best: a larger loss
    assert patch_nce(q, swapped, temperature=1.0).item() > expected + 0.5


def test_default_layers_fit_a_shallow_generator() -> None:
    assert TRANSLATORS.build({**TINY, "blocks": 6}).config["nce_layers"] == [0, 4, 8, 12]
    assert TRANSLATORS.build({**TINY, "blocks": 9}).config["nce_layers"] == [0, 4, 8, 12, 16]
    with pytest.raises(ConfigError, match="nce_layers"):
        TRANSLATORS.build({**TINY, "nce_layers": [0, 40]})


def test_nce_reaches_the_generator_and_its_heads() -> None:
    torch.manual_seed(0)
    model = TRANSLATORS.build(TINY)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    model.nce_loss(x, model.g_ab(x)).backward()
    for name in ("g_ab", "heads"):
        grads = [p.grad for p in model.networks[name].parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum().item() for g in grads) > 0, name


def test_fit_save_load_translate(unpaired, tmp_path) -> None:
    source, target = unpaired
    model = TRANSLATORS.build({**TINY, "epochs": 1}).fit(source, target, workdir=tmp_path / "work", seed=1)
    model.save(tmp_path / "model")
    back = load_translator(tmp_path / "model")
    assert type(back).__name__ == "CUT" and set(back.saved) == {"g_ab"}
    out = back.translate(source[0])
    assert out.shape == source[0].shape and np.allclose(out, model.translate(source[0]), atol=1e-6)
    assert (tmp_path / "work" / "samples" / "epoch_0001.png").exists()


def test_resume_after_a_kill_gives_the_weights_of_a_straight_fit(unpaired, tmp_path) -> None:
    source, target = unpaired
    spec = {**TINY, "decay_epochs": 0, "patches": 16}
    straight = TRANSLATORS.build({**spec, "epochs": 3}).fit(source, target, seed=3)
    TRANSLATORS.build({**spec, "epochs": 2}).fit(source, target, workdir=tmp_path, seed=3)
    resumed = TRANSLATORS.build({**spec, "epochs": 3}).fit(source, target, workdir=tmp_path, seed=3)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_compiled_whole_step_has_no_graph_break(unpaired) -> None:
    import torch._dynamo

    source, target = unpaired
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    TRANSLATORS.build({**TINY, "epochs": 2, "sample_every": 0}).fit(source, target, compile="aot_eager")
    assert not torch._dynamo.utils.counters["graph_break"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
