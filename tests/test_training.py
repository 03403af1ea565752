"""Training helpers shared by the translator and the segmenter."""

from __future__ import annotations

import torch

from da_seg.training import adam


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
