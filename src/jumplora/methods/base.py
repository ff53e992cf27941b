"""What a continual-learning method is: a few hooks the one training loop calls.

    setup(model)                once, before the first task (a resumed run loads the state after it)
    before_task(ctx)            after the stage's adapters are injected, before training
    on_step(ctx)                before each optimiser step's forward passes (rarely needed)
    loss_terms(ctx) -> dict     extra loss terms of the adapters, by name: once per optimiser step
    before_merge(ctx)           after training, the adapters still in place (what a method keeps of them)
    after_task(ctx, update)     after the stage's update was merged into the base weights, adapters gone
    train_stage(stage)          how the loop trains a stage: `stage.train()` once, which calls the hooks
                                above; a method may train it several ways and keep one (ELLA's λ search)

A method also says which adapters to inject (`adapter_config`), how tasks are grouped into
training stages (`stages`: one task per stage, or all at once for multi-task), which tasks are
evaluated after a stage (`eval_scope`), and how to save and restore its state for resuming.
A new method is one small file with a subclass and a `@register("name")` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from jumplora.config import RunConfig
from jumplora.distributed import ScaleOut
from jumplora.injection import AdapterConfig, AdapterSet
from jumplora.schedule import JumpSchedule
from jumplora.updates import TaskUpdate


@dataclass
class TaskContext:
    """What the hooks of one stage read. The loop builds it once per stage; only `step` moves."""

    model: nn.Module
    config: RunConfig
    kind: str  # "causal" or "seq2seq"
    task: str  # the stage's name: "CB", or "CB+COPA" for a multi-task stage
    task_index: int  # the accuracy-matrix row the stage fills: the order position of its last task
    adapters: AdapterSet  # the stage's adapters (empty once merged: after_task reads the update instead)
    schedule: JumpSchedule  # the stage's S_start and S_final (LoRI calibrates until S_start)
    steps: list[list[dict]]  # the optimiser steps to train, each a list of micro-batches
    train_batches: list[dict]  # every training micro-batch of the stage, for estimates (EWC's Fisher)
    compute_loss: Callable[[dict], torch.Tensor]  # a micro-batch's task loss, under the run's autocast
    step: int = 0  # the optimiser step under way
    scale_out: ScaleOut = ScaleOut()  # this process among the run's (data-parallel: jumplora.distributed)


@dataclass
class TrainedStage:
    """A trained stage as the loop goes on with it: its update, merged into the model (and after_task
    called with it), and its losses.jsonl lines, one per optimiser step."""

    update: TaskUpdate
    losses: list[dict]


class StageRunner:
    """What `Method.train_stage` can do with the stage under way (the loop implements it, `jumplora.train`).

    `train()` is one pass of inject → before_task → train → before_merge → merge → after_task, from
    the stage's own seed: the same state gives the same result however often it runs. A method that
    trains a stage several times puts the model and its own state back in between (`adapted_weights`
    are the tensors a pass changes) and hands the pass it keeps to `keep`."""

    index: int  # the stage's position (its files are numbered by it)
    name: str  # the stage's name
    task_index: int  # the accuracy-matrix row the stage fills
    seen: list[str]  # the tasks of the order learned once the stage is done: past and current
    run: Any  # the run directory (`jumplora.rundir.RunDirectory`), where a search keeps its record

    def train(self) -> TrainedStage:
        raise NotImplementedError

    def validate(self) -> dict[str, Any]:
        """Every task of `seen` evaluated on its validation split (never its test split): task -> EvalResult."""
        raise NotImplementedError

    def adapted_weights(self) -> dict[str, torch.Tensor]:
        """The weight of every matrix the stage adapts, by module name: what a pass's merge changes."""
        raise NotImplementedError

    def keep(self, update: TaskUpdate, losses: list[dict]) -> TrainedStage:
        """A pass's stored result as the stage's: `update` merged into the model, after_task called with it."""
        raise NotImplementedError


class Method:
    """IncLoRA behaviour: a fresh adapter per task, merged afterwards, no extra loss."""

    name = "inclora"
    eval_scope = "seen"  # "seen": tasks learned so far; "current": only the stage's own tasks
    keeps_updates = True  # False: a task's update is taken out again after its evaluation

    def __init__(self, config: RunConfig):
        self.config = config

    def adapter_config(self, target_modules: tuple[str, ...]) -> AdapterConfig:
        return AdapterConfig(
            target_modules=tuple(target_modules),
            rank=self.config.rank,
            alpha=self.config.alpha,
            gated=self.config.gated,
            threshold_mode=self.config.threshold_mode,
            bandwidth=self.config.bandwidth,
            threshold_grad=self.config.threshold_grad,
            threshold_init=self.config.threshold_init,
            dropout=self.lora_dropout(),
        )

    def lora_dropout(self) -> float:
        """`lora_dropout` when set, else the authors' per method (`MethodName.default_lora_dropout`)."""
        if self.config.lora_dropout is not None:
            return float(self.config.lora_dropout)
        return self.config.method_name.default_lora_dropout

    def stages(self, tasks: list[str]) -> list[list[str]]:
        return [[task] for task in tasks]

    # hooks -----------------------------------------------------------------------------------
    def setup(self, model: nn.Module) -> None:
        pass

    def before_task(self, ctx: TaskContext) -> None:
        pass

    def on_step(self, ctx: TaskContext) -> None:
        pass

    def loss_terms(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        return {}

    def before_merge(self, ctx: TaskContext) -> None:
        pass

    def after_task(self, ctx: TaskContext, update: TaskUpdate) -> None:
        pass

    def train_stage(self, stage: StageRunner) -> TrainedStage:
        return stage.train()

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
