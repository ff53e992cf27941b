"""The symmetric JumpReLU gate of JumpLoRA (paper eq. 1, 2 and 5).

    ΔW_jump = JumpReLU_τ(ΔW) − JumpReLU_τ(−ΔW) = ΔW ⊙ H(|ΔW| − τ),   H(0) = 0.

The Heaviside step has no useful derivative, so the backward pass follows Rajamanoharan et al.
(2024): the gradient w.r.t. ΔW is the gate itself (entries below the threshold get none; no
straight-through on ΔW), and the threshold gets the pseudo-derivative of eq. 2 with a rectangle
kernel K of bandwidth ε:

    ∂ΔW_jump/∂τ ≈ −(τ/ε) · sign(ΔW) · K((|ΔW| − τ)/ε),   K(u) = 1 on (−½, ½), 0 elsewhere,

summed over every entry that shares the threshold.

The threshold is stored as its logarithm (as in Rajamanoharan et al.'s implementation), so it is
positive whatever the optimiser does to it; its logarithm is clamped at −80 when read, since
exp() of a large negative number underflows to exactly 0 in float32.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_BANDWIDTH = 0.001
MIN_LOG_THRESHOLD = -80.0  # exp(-80) ≈ 1.8e-35, above float32's smallest normal number
MIN_THRESHOLD = math.exp(MIN_LOG_THRESHOLD)


class _SymmetricJumpReLU(torch.autograd.Function):
    # The forward keeps the gate and sign(ΔW)·K(·) for the backward: every element-wise pass over
    # ΔW is done once (benchmarks/step_time.md measured the recomputing version ~2x slower).
    @staticmethod
    def forward(ctx, delta: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        magnitude = delta.abs()
        gate = magnitude > threshold
        signed_kernel = None
        if ctx.needs_input_grad[1]:
            # rectangle kernel on the open interval: |(|ΔW| − τ)/ε| < ½
            in_band = magnitude.sub_(threshold).abs_() < bandwidth / 2
            signed_kernel = delta.sign().mul_(in_band)
        ctx.save_for_backward(gate, signed_kernel, threshold)
        ctx.bandwidth = bandwidth
        return delta * gate

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        gate, signed_kernel, threshold = ctx.saved_tensors
        grad_delta = grad_threshold = None
        if ctx.needs_input_grad[0]:
            grad_delta = grad_output * gate
        if ctx.needs_input_grad[1]:
            summed = torch.dot(grad_output.reshape(-1), signed_kernel.reshape(-1).to(grad_output.dtype))
            grad_threshold = (-(threshold / ctx.bandwidth) * summed).reshape(threshold.shape).to(threshold.dtype)
        return grad_delta, grad_threshold, None


def symmetric_jumprelu(
    delta: torch.Tensor, threshold: torch.Tensor, bandwidth: float = DEFAULT_BANDWIDTH
) -> torch.Tensor:
    """Return ``delta * H(|delta| - threshold)`` with the JumpReLU pseudo-gradients (module doc)."""
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    threshold = torch.as_tensor(threshold, dtype=delta.dtype, device=delta.device)
    return _SymmetricJumpReLU.apply(delta, threshold, bandwidth)


class Threshold(nn.Module):
    """One learnable threshold τ > 0, shared by every adapted matrix of its group.

    `log_threshold` is the trained parameter; `initialized` records whether τ was set at S_start
    (before that the adapters run dense and the value is meaningless).
    """

    def __init__(self, group: str, initial: float = 1e-3):
        super().__init__()
        self.group = group
        self.log_threshold = nn.Parameter(torch.tensor(math.log(initial)))
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def value(self) -> torch.Tensor:
        return self.log_threshold.clamp(min=MIN_LOG_THRESHOLD).exp()

    @torch.no_grad()
    def set_(self, value: float) -> None:
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"threshold of group {self.group!r} must be positive and finite, got {value}")
        self.log_threshold.fill_(math.log(value))
        self.initialized.fill_(True)

    def extra_repr(self) -> str:
        return f"group={self.group!r}, threshold={self.value.item():.3g}"
