"""ELLA (Biswas et al., 2026): penalise the new update where past tasks already changed weights.

    L = L_task + λ_t · P,   W_past ← W_past + ΔW_final after each task   (Algorithm 1 lines 1, 16, 21)

Two conventions for P (`--ella-scale`):
- ``authors`` (their released code, for which Table 7's λ was tuned): the *scaled* update against the
  sum of past scaled updates, averaged over the M matrices that have a past,
      P = (1/M) · Σ_m ‖(β·ΔW_m) ⊙ W_past,m‖²_F,   W_past,m = Σ_past β·ΔW_final,m;
- ``unscaled-sum``: P = Σ_m ‖ΔW_m ⊙ W_past,m‖²_F with ΔW and W_past unscaled by β. With one β for
  every task this is β⁴/M times smaller than the authors' for the same λ (T5-large q/v: 256/144).

With JumpLoRA the penalty uses ΔW before S_start and then ΔW_jump (`--ella-penalty sparse`,
Algorithm 1, Table 1) or ΔW_interp (`--ella-penalty interp`, §4.6). The mask is a hard comparison
(no gradient to τ, as the authors') unless `--ella-threshold-grad true` routes it through the
JumpReLU pseudo-gradient.

λ is per task: `ella_lambda` is "paper" (Table 7's values for the run's order), one number for
every task, or a list with one value per task. The first task's λ is irrelevant (W_past = 0).
"""

from __future__ import annotations

import torch

from jumplora.errors import ConfigError
from jumplora.methods.base import Method, TaskContext, register

# Table 7 of the paper: λ per task position, by order (identical for ELLA and JumpLoRA+ELLA).
_SC = [0.0] + [3e4] * 3
PAPER_LAMBDAS: dict[int, list[float]] = {
    1: _SC,
    2: _SC,
    3: _SC,
    4: [0.0] + [5e5] * 13 + [5e7],
    5: [0.0] + [5e6] * 11 + [5e7] * 3,
    6: [0.0] + [5e5] * 14,
}


def lambdas_for(spec, order: str, n_tasks: int) -> list[float]:
    """Resolve the per-task λ list from the configuration."""
    if isinstance(spec, str) and spec.strip().lower() == "paper":
        try:
            values = PAPER_LAMBDAS[int(order)]
        except (KeyError, ValueError):
            raise ConfigError(
                f"ella_lambda 'paper' has values for orders 1-6 only, not {order!r}: give a number or a list"
            ) from None
    elif isinstance(spec, (int, float)):
        values = [0.0] + [float(spec)] * (n_tasks - 1)
    elif isinstance(spec, str) and "," not in spec:
        try:
            return lambdas_for(float(spec), order, n_tasks)
        except ValueError:
            raise ConfigError(f"ella_lambda must be 'paper', a number or a list, got {spec!r}") from None
    else:
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        try:
            values = [float(v) for v in items]
        except ValueError:
            raise ConfigError(f"ella_lambda list has a non-number: {spec!r}") from None
    if len(values) != n_tasks:
        raise ConfigError(f"ella_lambda gives {len(values)} values for {n_tasks} tasks")
    return values


@register("ella")
class ELLA(Method):
    def __init__(self, config):
        super().__init__(config)
        self.past: dict[str, torch.Tensor] = {}  # module name -> W_past (sum of ΔW_final, scaled per ella_scale)
        self.lambdas: list[float] = []
        self.current_lambda = 0.0

    def setup(self, ctx: TaskContext) -> None:
        self.lambdas = lambdas_for(self.config.ella_lambda, self.config.order, len(self.config.task_list))

    def before_task(self, ctx: TaskContext) -> None:
        self.current_lambda = self.lambdas[ctx.task_index] if self.lambdas else 0.0

    def _which(self, ctx: TaskContext) -> str:
        if not self.config.gated or ctx.adapters.gamma == 0.0:
            return "dense"  # before S_start the penalty uses ΔW
        return "jump" if self.config.ella_penalty == "sparse" else "interp"

    def loss_terms(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        if self.current_lambda == 0.0 or not self.past:
            return {}
        which = self._which(ctx)
        authors = self.config.ella_scale == "authors"
        penalty, count = None, 0
        for name, layer in ctx.adapters.layers.items():
            past = self.past.get(name)
            if past is None:
                continue
            update = layer.current_update(which, threshold_grad=self.config.ella_threshold_grad)
            if authors:
                update = layer.scale * update
            term = (update * past.to(update.device)).pow(2).sum()
            penalty = term if penalty is None else penalty + term
            count += 1
        if penalty is None:
            return {}
        if authors:
            penalty = penalty / count
        return {"ella_penalty": self.current_lambda * penalty}

    def after_task(self, ctx: TaskContext, update) -> None:
        for name, module_update in update.modules.items():
            device = ctx.model.get_submodule(name).weight.device
            merged = module_update.dense()  # β·ΔW_final, as merged into the base weights
            delta_final = (merged if self.config.ella_scale == "authors" else merged / module_update.scale).to(device)
            if name in self.past:
                self.past[name] += delta_final
            else:
                self.past[name] = delta_final

    def state_dict(self):
        return {"past": self.past}

    def load_state_dict(self, state):
        self.past = dict(state.get("past", {}))

