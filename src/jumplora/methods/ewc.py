"""EWC (Kirkpatrick et al., 2017) on the adapted matrices.

    L = L_task + (λ/2) · Σ F ⊙ (β·ΔW)²

The base weights are frozen at θ* (the weights after the previous task), so θ − θ* is the
current adapter's effective update β·ΔW (β·ΔW_interp for JumpLoRA). F is the diagonal empirical
Fisher of the adapted matrices, summed over past tasks (online EWC without decay), estimated after
each task from squared gradients of the task loss on up to `ewc_fisher_batches` training batches
(in a data-parallel run each process takes its share of those batches and the sums are all-reduced,
so every process holds the one-process estimate).
"""

from __future__ import annotations

import torch

from jumplora.methods.base import Method, TaskContext, register


@register("ewc")
class EWC(Method):
    def __init__(self, config):
        super().__init__(config)
        self.fisher: dict[str, torch.Tensor] = {}

    def loss_terms(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        if not self.fisher:
            return {}
        which = "interp" if self.config.gated else "dense"
        penalty = None
        for name, layer in ctx.adapters.layers.items():
            fisher = self.fisher.get(name)
            if fisher is None:
                continue
            shift = layer.scale * layer.current_update(which)
            term = (fisher * shift.pow(2)).sum()
            penalty = term if penalty is None else penalty + term
        return {"ewc_penalty": 0.5 * self.config.ewc_lambda * penalty} if penalty is not None else {}

    def after_task(self, ctx: TaskContext, update) -> None:
        weights = {name: ctx.model.get_submodule(name).weight for name in update.modules}
        for weight in weights.values():
            weight.requires_grad_(True)
        batches = ctx.train_batches[: self.config.ewc_fisher_batches]
        squares = {name: torch.zeros_like(w) for name, w in weights.items()}
        try:
            for batch in ctx.scale_out.shard(batches):
                ctx.model.zero_grad(set_to_none=True)
                ctx.compute_loss(batch).backward()
                for name, weight in weights.items():
                    if weight.grad is not None:
                        squares[name] += weight.grad.detach().float().pow(2)
        finally:
            for weight in weights.values():
                weight.requires_grad_(False)
                weight.grad = None
        ctx.scale_out.all_reduce_sum_(list(squares.values()))
        for name, square in squares.items():
            fisher = square / max(len(batches), 1)
            self.fisher[name] = self.fisher[name] + fisher if name in self.fisher else fisher

    def state_dict(self):
        return {"fisher": self.fisher}

    def load_state_dict(self, state):
        self.fisher = dict(state.get("fisher", {}))
