"""Training helpers shared by the translator and the segmenter."""

from __future__ import annotations

import pytest
import torch

from da_seg.training import AdamUpdate, adam


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
    assert resolve_precision("fp16", cuda) == "fp16" and resolve_precision("bf16", cpu) == "bf16"


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
