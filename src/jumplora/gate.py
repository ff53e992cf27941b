"""The symmetric JumpReLU gate of JumpLoRA (paper eq. 1, 2 and 5).

    ΔW_jump = JumpReLU_τ(ΔW) − JumpReLU_τ(−ΔW) = ΔW ⊙ H(|ΔW| − τ),   H(0) = 0.

The Heaviside step has no useful derivative, so the backward pass follows Rajamanoharan et al.
(2024): the gradient w.r.t. ΔW is the gate itself (entries below the threshold get none; no
straight-through on ΔW), and the threshold gets the pseudo-derivative of eq. 2 with a rectangle
kernel K(u) = 1 on (−½, ½), 0 elsewhere, of bandwidth ε. Two forms (`grad_mode`):

- ``"authors"`` (default; the authors' released code): eq. 5 taken literally, the one-sided JumpReLU
  applied to ΔW and to −ΔW, each with its own kernel, and each kernel term a **mean** over the
  matrix's entries:

      ∂L/∂τ = −(τ/ε) · (1/N) · Σ g · sign(ΔW) · [K((|ΔW| − τ)/ε) − K((−|ΔW| − τ)/ε)]

  The second kernel is non-zero only where |ΔW| + τ < ε/2: for τ < ε/2 the two kernels overlap
  around 0 and cancel for |ΔW| < ε/2 − τ.
- ``"abs-sum"`` (jumplora before it matched the authors): one kernel on |ΔW|, summed over entries,

      ∂L/∂τ = −(τ/ε) · Σ g · sign(ΔW) · K((|ΔW| − τ)/ε)

Matrices sharing one threshold add their terms (autograd sums over the layers of a group).

The threshold is stored as its logarithm (as in Rajamanoharan et al.'s implementation and the
authors'), so it is positive whatever the optimiser does to it; its logarithm is clamped at −80
when read, since exp() of a large negative number underflows to exactly 0 in float32.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from jumplora import defaults

DEFAULT_BANDWIDTH = defaults.BANDWIDTH
MIN_LOG_THRESHOLD = -80.0  # exp(-80) ≈ 1.8e-35, above float32's smallest normal number
MIN_THRESHOLD = math.exp(MIN_LOG_THRESHOLD)


GRAD_MODES = ("authors", "abs-sum")


class _SymmetricJumpReLU(torch.autograd.Function):
    # The forward keeps the gate and the signed kernel for the backward: every element-wise pass
    # over ΔW is done once (benchmarks/step_time.md measured the recomputing version ~2x slower).
    @staticmethod
    def forward(ctx, delta: torch.Tensor, threshold: torch.Tensor, bandwidth: float, grad_mode: str) -> torch.Tensor:
        magnitude = delta.abs()
        gate = magnitude > threshold
        signed_kernel = None
        if ctx.needs_input_grad[1]:
            half = bandwidth / 2
            if grad_mode == "authors":
                # K((−|ΔW| − τ)/ε) = 1 exactly where |ΔW| + τ < ε/2 (|ΔW| + τ > −ε/2 always holds)
                overlap = (magnitude + threshold) < half
                kernel = ((magnitude - threshold).abs_() < half).to(delta.dtype).sub_(overlap.to(delta.dtype))
            else:
                kernel = ((magnitude - threshold).abs_() < half).to(delta.dtype)
            signed_kernel = kernel.mul_(delta.sign())
        ctx.save_for_backward(gate, signed_kernel, threshold)
        ctx.bandwidth = bandwidth
        ctx.mean = grad_mode == "authors"
        return delta * gate

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        gate, signed_kernel, threshold = ctx.saved_tensors
        grad_delta = grad_threshold = None
        if ctx.needs_input_grad[0]:
            grad_delta = grad_output * gate
        if ctx.needs_input_grad[1]:
            summed = torch.dot(grad_output.reshape(-1), signed_kernel.reshape(-1).to(grad_output.dtype))
            if ctx.mean:
                summed = summed / signed_kernel.numel()
            grad_threshold = (-(threshold / ctx.bandwidth) * summed).reshape(threshold.shape).to(threshold.dtype)
        return grad_delta, grad_threshold, None, None


def symmetric_jumprelu(
    delta: torch.Tensor, threshold: torch.Tensor, bandwidth: float = DEFAULT_BANDWIDTH, grad_mode: str = "authors"
) -> torch.Tensor:
    """Return ``delta * H(|delta| - threshold)`` with the JumpReLU pseudo-gradients (module doc)."""
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    if grad_mode not in GRAD_MODES:
        raise ValueError(f"unknown threshold gradient {grad_mode!r}; expected one of {GRAD_MODES}")
    threshold = torch.as_tensor(threshold, dtype=delta.dtype, device=delta.device)
    return _SymmetricJumpReLU.apply(delta, threshold, bandwidth, grad_mode)


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
    def set_(self, value: float | torch.Tensor) -> None:
        """Set τ; a tensor's logarithm is taken in its own dtype (as the authors do in float32)."""
        number = float(value)
        if not number > 0 or not math.isfinite(number):
            raise ValueError(f"threshold of group {self.group!r} must be positive and finite, got {number}")
        if isinstance(value, torch.Tensor):
            self.log_threshold.copy_(value.detach().log().to(self.log_threshold.dtype))
        else:
            self.log_threshold.fill_(math.log(value))
        self.initialized.fill_(True)

    def extra_repr(self) -> str:
        return f"group={self.group!r}, threshold={self.value.item():.3g}"
