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

λ is per task: `ella_lambda` is "paper" (Table 7's values for the run's order), "paper-table8"
(Table 8's, JumpLoRA+ELLA by threshold and penalty), "search" (chosen at each task by validation
accuracy, `jumplora.methods.lambda_search`), one number for every task, or a list with one value
per task. The first task's λ is irrelevant (W_past = 0): the search starts at the second.
"""

from __future__ import annotations

import torch

from jumplora.ella_lambdas import is_search, parse_grid
from jumplora.methods.base import Method, StageRunner, TaskContext, TrainedStage, register
from jumplora.methods.lambda_search import search_lambda


@register("ella")
class ELLA(Method):
    def __init__(self, config):
        super().__init__(config)
        self.past: dict[str, torch.Tensor] = {}  # module name -> W_past (sum of ΔW_final, scaled per ella_scale)
        self.lambdas: list[float] = []
        self.current_lambda = 0.0

    def setup(self, model) -> None:
        if is_search(self.config.ella_lambda):
            self.lambdas = [0.0] * len(self.config.task_list)  # each set by the search of its task
        else:
            self.lambdas = self.config.ella_lambdas()

    def train_stage(self, stage: StageRunner) -> TrainedStage:
        if is_search(self.config.ella_lambda) and self.past:  # without a past, every λ trains the same
            return search_lambda(self, stage, parse_grid(self.config.ella_lambda_grid))
        return stage.train()

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

