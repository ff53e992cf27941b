"""What a continual-learning method is: a few hooks the one training loop calls.

    setup(ctx)                  once, before the first task
    before_task(ctx)            after the task's adapters are injected, before training
    on_step(ctx)                before each optimiser step's forward passes (rarely needed)
    loss_terms(ctx) -> dict     extra loss terms for the current micro-batch, by name
    after_task(ctx, update)     after the task's update was merged into the base weights

A method also says which adapters to inject (`adapter_config`), how tasks are grouped into
training stages (`stages`: one task per stage, or all at once for multi-task), which tasks are
evaluated after a stage (`eval_scope`), and how to save and restore its state for resuming.
A new method is one small file with a subclass and a `@register("name")` line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from jumplora.injection import AdapterConfig

if TYPE_CHECKING:
    from jumplora.config import RunConfig
    from jumplora.injection import AdapterSet
    from jumplora.updates import TaskUpdate


@dataclass
class TaskContext:
    """What hooks may read: the model, the current task's adapters and where training stands."""

    model: torch.nn.Module
    config: "RunConfig"
    kind: str = "causal"  # "causal" or "seq2seq"
    task: str = ""
    task_index: int = 0  # position of the current stage in the order
    adapters: "AdapterSet | None" = None
    step: int = 0  # optimiser step within the task
    schedule: Any = None  # JumpSchedule of gated runs
    train_batches: list = field(default_factory=list)  # the task's training micro-batches
    compute_loss: Any = None  # callable(batch) -> task loss, for methods that need gradients (EWC)


class Method:
    """IncLoRA behaviour: a fresh adapter per task, merged afterwards, no extra loss."""

    name = "inclora"
    eval_scope = "seen"  # "seen": tasks learned so far; "current": only the stage's own tasks
    keeps_updates = True  # False: a task's update is taken out again after its evaluation

    def __init__(self, config: "RunConfig"):
        self.config = config

    def adapter_config(self, target_modules: tuple[str, ...]) -> AdapterConfig:
        return AdapterConfig(
            target_modules=tuple(target_modules),
            rank=self.config.rank,
            alpha=self.config.alpha,
            gated=self.config.gated,
            threshold_mode=self.config.threshold,
            bandwidth=self.config.bandwidth,
            threshold_grad=self.config.threshold_grad,
            threshold_init=self.config.threshold_init,
            dropout=self.lora_dropout(),
        )

    def lora_dropout(self) -> float:
        """`lora_dropout` when set, else the authors' per method: their PEFT LoRA baselines (IncLoRA,
        ELLA) use 0.1, their JumpLoRA layer none."""
        if self.config.lora_dropout is not None:
            return float(self.config.lora_dropout)
        return 0.0 if self.config.gated else 0.1

    def stages(self, tasks: list[str]) -> list[list[str]]:
        return [[task] for task in tasks]

    # hooks -----------------------------------------------------------------------------------
    def setup(self, ctx: TaskContext) -> None:
        pass

    def before_task(self, ctx: TaskContext) -> None:
        pass

    def on_step(self, ctx: TaskContext) -> None:
        pass

    def loss_terms(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        return {}

    def after_task(self, ctx: TaskContext, update: "TaskUpdate") -> None:
        pass

    # resuming ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def decorator(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorator
