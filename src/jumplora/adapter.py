"""The adapter layer: a frozen `nn.Linear` plus a LoRA update ΔW, optionally JumpReLU-gated.

Notation: the paper writes h = x·(W_base + β·ΔW) with ΔW = A·B, A ∈ R^{d_in×r}, B ∈ R^{r×d_out}.
PyTorch stores weights as (out, in), so here `lora_A` is (r, in) and `lora_B` is (out, r), and
ΔW = lora_B @ lora_A is the transpose of the paper's A·B: every element-wise operation (the gate,
the ELLA penalty, the threshold count) is the same on either layout.

Modes (`mode`):
- ``"lora"``: plain LoRA, no gate (IncLoRA, ELLA and the other baselines);
- ``"jump"``: JumpLoRA; the forward uses ΔW_interp = γ·ΔW_jump + (1 − γ)·ΔW with `gamma` set by the
  schedule: γ = 0 is dense, 0 < γ < 1 interpolated, γ = 1 sparse.

Whenever the update is mathematically dense (plain LoRA, or γ = 0) the forward takes the
low-rank path x·Aᵀ·Bᵀ and never materialises ΔW. Otherwise the element-wise gate needs the full
ΔW, and the forward folds it into one matmul with x·(W + β·ΔW_interp)ᵀ rather than two.

The fold changes only when A, B or τ do, i.e. once per optimiser step, not per micro-batch:
`begin_step` computes ΔW, the gate and W + β·ΔW_interp once (fp32), hands the forward a detached
copy in the compute dtype, and sums the micro-batches' gradients w.r.t. that copy in fp32;
`end_step` returns the fp32 fold and that summed gradient, for one backward into A, B and τ
(`AdapterSet.finish_step`). The gradient is the same sum the per-micro-batch path accumulates.

LoRA dropout (`dropout`, PEFT's `lora_dropout`) acts on the input of the low-rank path only and
only in training: h = x·Wᵀ + β·drop(x)·ΔWᵀ. The authors' PEFT baselines use 0.1, their JumpLoRA
layer none; with dropout a gated forward cannot fold and takes two matmuls.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from jumplora import defaults
from jumplora.gate import DEFAULT_BANDWIDTH, Threshold, symmetric_jumprelu

# what a loss term may ask `current_update` for
UPDATES = ("dense", "jump", "interp")

MODES = ("lora", "jump")


class LoRALinear(nn.Module):
    """`base(x) + β·x·ΔW_interpᵀ`, with the base weights frozen and ΔW = `lora_B @ lora_A`."""

    def __init__(
        self,
        base: nn.Linear,
        rank: int = defaults.RANK,
        alpha: float = defaults.ALPHA,
        mode: str = "lora",
        threshold: Threshold | None = None,
        bandwidth: float = DEFAULT_BANDWIDTH,
        threshold_grad: str = "authors",
        dropout: float = 0.0,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown adapter mode {mode!r}; expected one of {MODES}")
        if mode == "jump" and threshold is None:
            raise ValueError("a JumpLoRA adapter needs its group's Threshold")
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.rank = rank
        self.scale = alpha / rank  # β
        self.mode = mode
        self.bandwidth = bandwidth
        self.threshold_grad = threshold_grad
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must lie in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.gamma = 0.0
        # a shared module: every layer of a threshold group holds the same instance
        self.threshold = threshold
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=weight.device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=weight.device, dtype=torch.float32))
        # Kaiming-uniform as in nn.Linear's (and PEFT's) initialisation; B = 0 makes ΔW = 0
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        # this step's dense and gated updates (begin_step), for loss terms (ELLA) to reuse
        self._last_delta: torch.Tensor | None = None
        self._last_jump: torch.Tensor | None = None
        # the base's fp32 weight while `compute_dtype.frozen_weights_in` holds a low-precision copy in base
        self.master_weight: torch.Tensor | None = None
        # the folded weight of this optimiser step (begin_step .. end_step) and its gradient sum
        self._step_weight: torch.Tensor | None = None
        self._step_fold: torch.Tensor | None = None
        self._step_grad: torch.Tensor | None = None

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        # some model code reads `.weight` of the module it calls (dtype/device checks)
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def gated(self) -> bool:
        return self.mode == "jump" and self.gamma > 0.0

    def delta(self) -> torch.Tensor:
        """The dense update ΔW = B·A (out × in), in float32 whatever the autocast context."""
        with torch.autocast(device_type=self.lora_A.device.type, enabled=False):
            return self.lora_B @ self.lora_A

    def jump(self, delta: torch.Tensor) -> torch.Tensor:
        """ΔW_jump = ΔW ⊙ H(|ΔW| − τ) with the JumpReLU pseudo-gradients."""
        return symmetric_jumprelu(delta, self.threshold.value, self.bandwidth, self.threshold_grad)

    def hard_jump(self, delta: torch.Tensor) -> torch.Tensor:
        """ΔW ⊙ H(|ΔW| − τ) as a plain comparison: gradient to ΔW through the kept entries, none to τ."""
        return delta * (delta.abs() > self.threshold.value.detach())

    def interpolate(self, delta: torch.Tensor, jump: torch.Tensor) -> torch.Tensor:
        """ΔW_interp = γ·ΔW_jump + (1 − γ)·ΔW (eq. 3)."""
        if self.gamma >= 1.0:
            return jump
        return self.gamma * jump + (1.0 - self.gamma) * delta

    def _fp32_base_weight(self) -> torch.Tensor:
        return self.master_weight if self.master_weight is not None else self.base.weight

    def _fold(self, delta: torch.Tensor, jump: torch.Tensor) -> torch.Tensor:
        """W + β·ΔW_interp, summed in the precision of the base's original weight."""
        base = self._fp32_base_weight()
        with torch.autocast(device_type=delta.device.type, enabled=False):
            return base + (self.scale * self.interpolate(delta, jump)).to(base.dtype)

    @property
    def folds_per_step(self) -> bool:
        """Whether this step's forward is one matmul with a folded weight (gated, no dropout)."""
        return self.gated and not isinstance(self.dropout, nn.Dropout)

    def begin_step(self, dtype: torch.dtype | None) -> None:
        """Fold once for the optimiser step's micro-batches; their forwards use a `dtype` copy."""
        delta = self.delta()
        jump = self.jump(delta)
        self._last_delta, self._last_jump = delta, jump
        fold = self._fold(delta, jump)
        weight = fold.detach().to(dtype or fold.dtype).requires_grad_()
        self._step_grad = torch.zeros_like(fold)
        weight.register_post_accumulate_grad_hook(self._accumulate_step_grad)
        self._step_fold, self._step_weight = fold, weight

    def _accumulate_step_grad(self, weight: torch.Tensor) -> None:
        self._step_grad.add_(weight.grad)  # fp32 sum over the micro-batches, whatever `dtype` is
        weight.grad = None

    def end_step(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(the fp32 fold, Σ its gradient over the step) for one backward; None if no step was open."""
        if self._step_fold is None:
            return None
        pair = (self._step_fold, self._step_grad)
        self._step_fold = self._step_weight = self._step_grad = None
        return pair

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._step_weight is not None:  # inside begin_step .. end_step
            return F.linear(x, self._step_weight, self.base.bias)
        if not self.gated:
            lora = F.linear(F.linear(self.dropout(x), self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
            return self.base(x) + self.scale * lora
        delta = self.delta()
        jump = self.jump(delta)
        if self.training and isinstance(self.dropout, nn.Dropout):
            return self.base(x) + self.scale * F.linear(self.dropout(x), self.interpolate(delta, jump).to(x.dtype))
        # under autocast F.linear casts the folded weight itself
        return F.linear(x, self._fold(delta, jump), self.base.bias)

    def current_update(self, which: str, threshold_grad: bool = True) -> torch.Tensor:
        """The update of this step for loss terms: ``"dense"`` (ΔW), ``"jump"`` or ``"interp"``.

        `threshold_grad` False masks with a hard comparison (as the authors' ELLA penalty does): the
        term then sends τ no gradient. Reuses the ΔW and gate of this step's fold (`begin_step`) when
        there is one, so a penalty costs no second materialisation of ΔW; otherwise builds its own (a
        forward's ΔW is not kept: its graph is spent by the micro-batch's backward).
        """
        if which not in UPDATES:
            raise ValueError(f"unknown update {which!r}; expected one of {', '.join(UPDATES)}")
        delta = self._last_delta if self._last_delta is not None else self.delta()
        if which == "dense":
            return delta
        if self.mode != "jump":
            raise ValueError(f"a plain LoRA adapter has no {which!r} update")
        if threshold_grad:
            jump = self._last_jump if self._last_jump is not None else self.jump(delta)
        else:
            jump = self.hard_jump(delta)
        return jump if which == "jump" else self.interpolate(delta, jump)

    def forget_step_updates(self) -> None:
        """Drop the ΔW and gate `begin_step` kept, once the step's backward has used their graph."""
        self._last_delta = self._last_jump = None

    @torch.no_grad()
    def final_update(self) -> torch.Tensor:
        """ΔW_final (unscaled): hard-thresholded for JumpLoRA (Algorithm 1 line 19), else ΔW."""
        delta = self.delta()
        if self.mode == "jump" and bool(self.threshold.initialized):
            return delta * (delta.abs() > self.threshold.value)
        return delta

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scale={self.scale:g}, mode={self.mode}, gamma={self.gamma:.3f}"
