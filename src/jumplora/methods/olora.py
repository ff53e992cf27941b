"""O-LoRA (Wang et al., 2023a): keep each new adapter's input subspace orthogonal to past ones.

    L = L_task + λ₁ · Σ_matrices Σ_past ‖A_past · A_tᵀ‖²_F + λ₂ · Σ (‖A_t‖² + ‖B_t‖²)

with A (r × d_in) the down-projection whose rows span the subspace an adapter reads. Past
adapters are merged into the base weights as in every method here (O-LoRA keeps them apart; the
forward pass is the same), and only their A matrices are kept for the penalty.
"""

from __future__ import annotations

import torch

from jumplora.methods.base import Method, TaskContext, register


@register("olora")
class OLoRA(Method):
    def __init__(self, config):
        super().__init__(config)
        self.past_A: dict[str, list[torch.Tensor]] = {}

    def loss_terms(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        terms = {}
        orth = l2 = None
        for name, layer in ctx.adapters.layers.items():
            for past in self.past_A.get(name, []):
                term = (past.to(layer.lora_A.device) @ layer.lora_A.T).pow(2).sum()
                orth = term if orth is None else orth + term
            if self.config.olora_l2 > 0:
                term = layer.lora_A.pow(2).sum() + layer.lora_B.pow(2).sum()
                l2 = term if l2 is None else l2 + term
        if orth is not None and self.config.olora_lambda > 0:
            terms["olora_orthogonality"] = self.config.olora_lambda * orth
        if l2 is not None:
            terms["olora_l2"] = self.config.olora_l2 * l2
        return terms

    def before_merge(self, ctx: TaskContext) -> None:
        for name, layer in ctx.adapters.layers.items():
            self.past_A.setdefault(name, []).append(layer.lora_A.detach().clone())

    def state_dict(self):
        return {"past_A": self.past_A}

    def load_state_dict(self, state):
        self.past_A = {k: list(v) for k, v in state.get("past_A", {}).items()}
