"""Choosing ELLA's λ for a new model by the ELLA authors' rule, from a finished unregularised run.

The paper's λ values (Table 7) are for T5-large. The ELLA authors chose λ so that the penalty λ·P
and the cross-entropy are of similar size (ratio close to 1; paper, App. A.2). Given a run without
the penalty (IncLoRA, or JumpLoRA+IncLoRA) we measure, for each task t ≥ 2,

    P_t  = the penalty at λ = 1 of task t's merged update against the earlier tasks' ones
    CE_t = mean task loss over the last `tail` fraction of task t's optimiser steps

and λ_t = CE_t / P_t balances the two at the end of unregularised training. One λ for every task
(as Table 7 does for orders 1-3) is the geometric mean of the λ_t, rounded to one significant
figure. Everything is read from the run directory: no model, no training, no test data.

P_t follows the convention the ELLA run will train under (`RunConfig.ella_scale`, see
`jumplora.methods.ella`); a λ is only meaningful for the convention it was derived under:

- ``authors`` (the default, the authors' released code, for which Table 7 was tuned):
      P_t = (1/M_t) · Σ_m ‖(β·ΔW_t,m) ⊙ W_past,m‖²_F,   W_past,m = Σ_{s<t} β·ΔW_s,m
  with β = alpha/rank and M_t the number of task t's matrices that have a past;
- ``unscaled-sum`` (the legacy convention):
      P_t = Σ_m ‖ΔW_t,m ⊙ W_past,m‖²_F,   W_past,m = Σ_{s<t} ΔW_s,m    (ΔW unscaled by β).

With one β throughout, P_t(authors) = β⁴/M_t · P_t(unscaled-sum), so λ(authors) = M_t/β⁴ · λ(legacy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from jumplora.config import RunConfig
from jumplora.errors import UserError

CONVENTIONS = RunConfig.field_meta("ella_scale")["choices"]  # those `jumplora run --ella-scale` trains under
DEFAULT_CONVENTION = RunConfig.field_default("ella_scale")
_PENALTY_HEADER = {
    "authors": "(1/M) Σ ‖βΔW ⊙ W_past‖²",
    "unscaled-sum": "Σ ‖ΔW ⊙ W_past‖²",
}
_CONVENTION_WORDS = {
    "authors": "authors (--ella-scale authors, the default: P = (1/M) Σ_m ‖(β·ΔW_m) ⊙ W_past_m‖², "
               "W_past of scaled merged updates β·ΔW_final, M matrices with a past)",
    "unscaled-sum": "unscaled-sum (--ella-scale unscaled-sum, legacy: P = Σ_m ‖ΔW_m ⊙ W_past_m‖², "
                    "ΔW and W_past unscaled by β)",
}


@dataclass
class TaskBalance:
    task: str
    cross_entropy: float  # CE_t
    penalty: float  # P_t at λ = 1, in the table's convention
    steps: int  # optimiser steps averaged for CE_t
    matrices: int = 0  # M_t: the task's matrices that have a past

    @property
    def balancing_lambda(self) -> float:
        return self.cross_entropy / self.penalty if self.penalty > 0 else math.inf


def round_significant(value: float, digits: int = 1) -> float:
    if not math.isfinite(value) or value <= 0:
        return value
    exponent = math.floor(math.log10(value)) - (digits - 1)
    return round(value / 10**exponent) * 10**exponent


def suggested_lambda(balances: list[TaskBalance]) -> float:
    """Geometric mean of the finite per-task balancing λ, rounded to one significant figure."""
    values = [b.balancing_lambda for b in balances if math.isfinite(b.balancing_lambda)]
    if not values:
        raise UserError("no task with a non-zero overlap between its update and the earlier ones")
    return round_significant(math.exp(sum(math.log(v) for v in values) / len(values)))


def task_losses(run) -> dict[str, list[float]]:
    """Task loss per optimiser step, by stage, from the run's loss log."""
    try:
        return {stage: [float(r["task_loss"]) for r in records] for stage, records in run.losses().items()}
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{run.path}: a logged training step has no numeric 'task_loss'") from None


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise UserError(f"unknown ELLA penalty convention {convention!r}; choose from {', '.join(CONVENTIONS)}")


def balance_table(run, tail: float = 0.2, convention: str = DEFAULT_CONVENTION) -> list[TaskBalance]:
    """CE_t and P_t (in `convention`, see the module docstring) for each task after the first."""
    _check_convention(convention)
    if not 0 < tail <= 1:
        raise UserError(f"tail must be in (0, 1], got {tail}")
    if not run.stages or run.stages[0].update_path is None:
        raise UserError(f"{run.path}: no update files (they are needed to measure the penalty)")
    losses = task_losses(run)
    past: dict[str, torch.Tensor] = {}
    balances = []
    for index, stage in enumerate(run.stages):
        task = stage.name
        update = run.update(index)
        if update is None:
            break  # an unfinished run: stop at the first missing stage
        if convention == "authors":
            deltas = {name: m.dense() for name, m in update.modules.items()}  # β·ΔW, as merged
        else:
            deltas = {name: m.dense() / m.scale for name, m in update.modules.items()}  # ΔW
        if index > 0:
            terms = [float((delta * past[name]).pow(2).sum()) for name, delta in deltas.items() if name in past]
            penalty = sum(terms)
            if convention == "authors" and terms:
                penalty /= len(terms)
            task_loss = losses.get(task)
            if not task_loss:
                raise UserError(f"{run.path}: no logged training step of task {task!r}")
            count = max(1, round(tail * len(task_loss)))
            balances.append(TaskBalance(task, sum(task_loss[-count:]) / count, penalty, count, len(terms)))
        for name, delta in deltas.items():
            past[name] = past[name] + delta if name in past else delta
    if not balances:
        raise UserError(f"{run.path}: needs at least two finished tasks")
    return balances


def format_balances(run, balances: list[TaskBalance], convention: str = DEFAULT_CONVENTION) -> str:
    _check_convention(convention)
    lines = [
        f"ELLA lambda from {run.path} ({run.label}, order {run.order}, seed {run.seed})",
        f"penalty convention: {_CONVENTION_WORDS[convention]}",
        f"| task | CE (end of training) | M | {_PENALTY_HEADER[convention]} | balancing λ = CE / penalty |",
        "|---|---|---|---|---|",
    ]
    for b in balances:
        lines.append(f"| {b.task} | {b.cross_entropy:.4f} | {b.matrices} | {b.penalty:.4e} | "
                     f"{b.balancing_lambda:.3g} |")
    lines.append(f"suggested ella_lambda: {suggested_lambda(balances):g}")
    lines.append(f"(for --ella-scale {convention})")
    return "\n".join(lines) + "\n"
