"""The symmetric JumpReLU gate against the paper's formulas (eq. 1, 2, 5)."""

import math

import pytest
import torch

from jumplora.gate import Threshold, symmetric_jumprelu


def _reference(delta, tau, eps, grad_out):
    """Forward and both gradients of the "abs-sum" form, entry by entry: one kernel on |ΔW|, summed."""
    out = torch.zeros_like(delta)
    g_delta = torch.zeros_like(delta)
    g_tau = 0.0
    for i, d in enumerate(delta.flatten().tolist()):
        h = 1.0 if abs(d) - tau > 0 else 0.0  # strict Heaviside: H(0) = 0
        out.view(-1)[i] = d * h
        g_delta.view(-1)[i] = h * grad_out.view(-1)[i]
        u = (abs(d) - tau) / eps
        kernel = 1.0 if -0.5 < u < 0.5 else 0.0
        sign = (d > 0) - (d < 0)
        g_tau += -(tau / eps) * sign * kernel * grad_out.view(-1)[i].item()
    return out, g_delta, g_tau


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_and_gradients_match_formulas(seed):
    gen = torch.Generator().manual_seed(seed)
    tau, eps = 0.05, 0.01
    # entries spread across the kernel band (|ΔW| within τ ± ε/2), below it and above it, both signs
    delta = torch.cat([
        tau + (torch.rand(40, generator=gen) - 0.5) * eps * 0.98,  # inside the band, positive
        -(tau + (torch.rand(40, generator=gen) - 0.5) * eps * 0.98),  # inside the band, negative
        torch.randn(120, generator=gen) * 0.1,  # mostly outside
    ]).double().reshape(10, 20).requires_grad_(True)
    threshold = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(10, 20, generator=gen).double()

    out = symmetric_jumprelu(delta, threshold, eps, grad_mode="abs-sum")
    out.backward(grad_out)

    ref_out, ref_g_delta, ref_g_tau = _reference(delta.detach(), tau, eps, grad_out)
    torch.testing.assert_close(out.detach(), ref_out)
    torch.testing.assert_close(delta.grad, ref_g_delta)
    assert threshold.grad.item() == pytest.approx(ref_g_tau, rel=1e-10, abs=1e-12)
    # the band really was exercised from both sides
    in_band = ((delta.detach().abs() - tau).abs() < eps / 2)
    assert in_band.sum() >= 60 and (~in_band).sum() >= 60
    assert threshold.grad.item() != 0.0


def test_is_jumprelu_difference():
    """ΔW_jump = JumpReLU_τ(ΔW) − JumpReLU_τ(−ΔW) with JumpReLU_τ(x) = x·H(x − τ)."""
    delta = torch.randn(50, 30)
    tau = 0.7
    jumprelu = lambda x: x * (x - tau > 0)  # noqa: E731
    torch.testing.assert_close(symmetric_jumprelu(delta, torch.tensor(tau)), jumprelu(delta) - jumprelu(-delta))


def test_heaviside_is_strict_at_threshold():
    delta = torch.tensor([0.5, -0.5, 0.50001, -0.50001, 0.0])
    out = symmetric_jumprelu(delta, torch.tensor(0.5))
    assert out.tolist() == pytest.approx([0.0, 0.0, 0.50001, -0.50001, 0.0])


def test_threshold_gradient_flows_to_log_parameter():
    threshold = Threshold("global", initial=0.05)
    delta = torch.tensor([0.0502, -0.0499, 0.3])
    symmetric_jumprelu(delta, threshold.value, 0.01, grad_mode="abs-sum").sum().backward()
    # dL/dτ = −(τ/ε)(+1 − 1 + 0) = 0 here; use asymmetric incoming gradient instead
    threshold.zero_grad()
    out = symmetric_jumprelu(delta, threshold.value, 0.01, grad_mode="abs-sum")
    (out * torch.tensor([1.0, 0.0, 1.0])).sum().backward()
    expected_dtau = -(0.05 / 0.01) * 1.0
    # chain rule through τ = exp(log τ)
    assert threshold.log_threshold.grad.item() == pytest.approx(expected_dtau * 0.05, rel=1e-5)


def test_threshold_stays_positive_under_any_optimiser_step():
    threshold = Threshold("global", initial=1e-3)
    optimiser = torch.optim.SGD([threshold.log_threshold], lr=1e6)
    threshold.log_threshold.grad = torch.tensor(5.0)  # a huge push downwards
    optimiser.step()
    assert threshold.value.item() > 0
    assert math.isfinite(threshold.log_threshold.item())
    with pytest.raises(ValueError, match="positive"):
        threshold.set_(0.0)
    with pytest.raises(ValueError, match="positive"):
        threshold.set_(-1.0)


def test_bandwidth_must_be_positive():
    with pytest.raises(ValueError, match="bandwidth"):
        symmetric_jumprelu(torch.ones(2), torch.tensor(0.5), 0.0)


def _authors_reference(delta, tau, eps, grad_out):
    """The authors' form entry by entry: out = J(ΔW) − J(−ΔW) with the one-sided JumpReLU J, each J
    with its own rectangle kernel on (x − τ)/ε and its τ-gradient a mean over the matrix's entries.
    J(−ΔW) enters with a minus sign, so its upstream gradient is −g."""
    rect = lambda u: 1.0 if -0.5 < u < 0.5 else 0.0  # noqa: E731
    n = delta.numel()
    pos = neg = 0.0
    g_delta = torch.zeros_like(delta)
    for i, d in enumerate(delta.flatten().tolist()):
        g = grad_out.view(-1)[i].item()
        pos += rect((d - tau) / eps) * g / n
        neg += rect((-d - tau) / eps) * (-g) / n
        g_delta.view(-1)[i] = g * ((d > tau) + (-d > tau))
    return g_delta, -(tau / eps) * pos - (tau / eps) * neg


@pytest.mark.parametrize("tau", [0.05, 3.1e-4, 8.3e-4, 1e-5])  # above ε/2 = 5e-4, below it, just above, far below
def test_authors_threshold_gradient_matches_two_kernel_mean(tau):
    eps = 0.001
    gen = torch.Generator().manual_seed(7)
    delta = torch.cat([
        (torch.rand(300, generator=gen) - 0.5) * 2 * (tau + eps),  # around 0 and the band, both signs
        torch.randn(100, generator=gen) * 3 * (tau + eps),
    ]).double().reshape(20, 20).requires_grad_(True)
    threshold = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(20, 20, generator=gen).double()
    symmetric_jumprelu(delta, threshold, eps, grad_mode="authors").backward(grad_out)
    ref_g_delta, ref_g_tau = _authors_reference(delta.detach(), tau, eps, grad_out)
    torch.testing.assert_close(delta.grad, ref_g_delta)
    assert threshold.grad.item() == pytest.approx(ref_g_tau, rel=1e-10, abs=1e-15)
    assert threshold.grad.item() != 0.0
    # the two forms agree exactly when no entry has |ΔW| + τ < ε/2, up to the 1/N of the mean
    legacy_threshold = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    symmetric_jumprelu(delta.detach(), legacy_threshold, eps, grad_mode="abs-sum").backward(grad_out)
    overlapping = ((delta.detach().abs() + tau) < eps / 2).any().item()
    same = threshold.grad.item() == pytest.approx(legacy_threshold.grad.item() / delta.numel(), rel=1e-10)
    assert same != overlapping  # below ε/2 the overlap around 0 makes the forms differ


def test_authors_kernels_cancel_near_zero():
    """τ < ε/2: entries with |ΔW| < ε/2 − τ are in both kernels and send τ no gradient."""
    eps, tau = 0.001, 1e-4
    delta = torch.tensor([[1e-4 * 0.5, -2e-4, 3e-4]], dtype=torch.float64, requires_grad=True)  # all < ε/2 − τ
    threshold = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    symmetric_jumprelu(delta, threshold, eps, grad_mode="authors").sum().backward()
    assert threshold.grad.item() == 0.0
    legacy = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    symmetric_jumprelu(delta.detach(), legacy, eps, grad_mode="abs-sum").sum().backward()
    assert legacy.grad.item() != 0.0
