"""Training helpers shared by the translator and the segmenter."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from da_seg.errors import ConfigError
from da_seg.training import AdamUpdate, WeightAverage, adam

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_adam_uses_the_fused_kernel_on_cpu_and_steps_like_plain_adam() -> None:
    torch.manual_seed(0)
    weights = [torch.randn(8, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    twins = [w.detach().clone().requires_grad_() for w in weights]
    fused, plain = adam(weights, lr=1e-2, betas=(0.5, 0.999)), torch.optim.Adam(twins, lr=1e-2, betas=(0.5, 0.999))
    assert fused.defaults["fused"] is True
    for _ in range(3):
        for params, optimizer in ((weights, fused), (twins, plain)):
            optimizer.zero_grad()
            sum((p**2).sum() for p in params).backward()
            optimizer.step()
    for a, b in zip(weights, twins, strict=True):
        torch.testing.assert_close(a, b)


def test_auto_precision_follows_the_measurements_per_device() -> None:
    from da_seg.training import cpu_has_native_bf16, resolve_precision

    assert cpu_has_native_bf16("flags : fpu sse avx512f avx512_bf16 avx512_vnni")
    assert cpu_has_native_bf16("flags : fpu amx_bf16 amx_tile")
    assert not cpu_has_native_bf16("flags : fpu sse avx2 avx512f avx512bw")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cuda) == "fp32"
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("fp16", cuda) == "fp16" and resolve_precision("bf16", cuda) == "bf16"


def test_bf16_on_a_cpu_without_bf16_kernels_warns_and_the_examples_take_fp32_there(monkeypatch) -> None:
    """Such a CPU emulates bf16: the README's example, which asked for bf16, ran a CycleGAN step 8.6x slower."""
    from da_seg import training

    cpu = torch.device("cpu")
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    with pytest.warns(UserWarning, match="without bf16 kernels.*'auto' picks fp32"):
        assert training.resolve_precision("bf16", cpu) == "bf16"  # asked for: done, with the warning
    for example in sorted(EXAMPLES.glob("*.toml")):  # run configs and study files
        precision = tomllib.loads(example.read_text()).get("runtime", {}).get("precision", "auto")
        if precision != "fp32":  # the paper-scale example asks for fp32 (GPU)
            assert training.resolve_precision(precision, cpu) == "fp32", example.name
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert training.resolve_precision("bf16", cpu) == training.resolve_precision("auto", cpu) == "bf16"


@pytest.mark.parametrize("compiled", [False, True])
def test_adam_update_steps_like_torch_adam_and_keeps_its_state_format(compiled) -> None:
    """Eagerly the fused kernel with one shared step counter; traced, the multi-tensor formulation."""
    torch.manual_seed(0)
    weights = [torch.randn(3, 2), torch.randn(4)]
    ours = [torch.nn.Parameter(w.clone()) for w in weights]
    theirs = [torch.nn.Parameter(w.clone()) for w in weights]
    opt_ours, opt_theirs = adam(ours, lr=0.1, betas=(0.5, 0.999)), adam(theirs, lr=0.1, betas=(0.5, 0.999))
    lr = torch.tensor(0.1)
    update = AdamUpdate(opt_ours, lr)
    run = torch.compile(update.step, fullgraph=True, backend="aot_eager") if compiled else update.step
    for step in range(4):
        grads = [torch.randn_like(w) for w in weights]
        if step == 2:  # the schedule changes the value, not the graph
            lr.fill_(0.05)
            opt_theirs.param_groups[0]["lr"] = 0.05
        run(grads)
        for p, g in zip(theirs, grads, strict=True):
            p.grad = g
        opt_theirs.step()
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # float32 rounding
    saved = opt_ours.state_dict()
    assert saved["state"][0]["step"].item() == 4.0 and set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    opt_theirs.load_state_dict(saved)  # the state resumes in torch's own optimizer, and back in ours
    assert AdamUpdate(opt_theirs, lr).count.item() == 4.0


def test_weight_average_follows_its_decay_with_a_short_warm_up() -> None:
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    average = WeightAverage(net, decay=0.5)
    assert average.module is not net and not average.module.weight.requires_grad
    values = [4.0, 8.0, 2.0]
    for t, value in enumerate(values):
        with torch.no_grad():
            net.weight.fill_(value)
        average.update(net, t)
    # d = min(0.5, (1 + t) / (10 + t)): 0.1, 2/11, 0.25 -> 3.6, then 3.6 * 2/11 + 8 * 9/11, then 0.25 * that + 0.75 * 2
    second = 3.6 * 2 / 11 + 8 * 9 / 11
    assert average.module.weight.item() == pytest.approx(0.25 * second + 0.75 * 2.0)
    assert net.weight.item() == 2.0  # the trained module is left alone
    with pytest.raises(ConfigError, match=r"decay must lie in \(0, 1\)"):
        WeightAverage(net, decay=1.0)
