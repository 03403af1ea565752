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
