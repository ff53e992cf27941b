"""ELLA's λ chosen at each task by validation accuracy (`--ella-lambda search`, paper Appendix A.2).

"At each task, we maximize validation accuracy over both past and current tasks. The search range
is set to [1, 10, 10², 10³, 10⁴, 10⁵]" (`--ella-lambda-grid`). For each λ of the grid, in order, the
stage is trained from the same starting point (the model after the previous task, ELLA's W_past,
the stage's seed), merged, and evaluated on the validation split of every task so far (never the
test split); the model and W_past are then put back. The λ with the best mean validation accuracy
is kept (ties: the earlier λ of the grid): its update is merged again, W_past takes it, and the
loop evaluates and saves the stage as any other.

Each tried candidate is recorded in the run directory before the next one starts
(`jumplora.rundir.lambda_search`), with the best one's update, so a killed search resumes at the
next untried λ and ends as an uninterrupted one: a candidate's result depends only on the stage's
starting point, which is the same for every candidate.
"""

from __future__ import annotations

import copy

import torch

from jumplora.ella_lambdas import is_search
from jumplora.errors import ConfigError
from jumplora.methods.base import Method, StageRunner, TrainedStage
from jumplora.rundir.lambda_search import Candidate


def check_search(config, data: dict, scale_out) -> None:
    """Refuse, before anything trains, a search that could not finish: one whose validation data is
    missing (a task list's tasks under --split auto have none), or one on several processes (its
    candidate records are written by one process and not yet shared with the others)."""
    if config.method_name.strategy != "ella" or not is_search(config.ella_lambda):
        return
    if scale_out.active:
        raise ConfigError("--ella-lambda search runs on one process; launch it without accelerate launch, or give "
                          "--ella-lambda values")
    for task, task_data in data.items():
        if not task_data.split("validation"):
            raise ConfigError(f"--ella-lambda search selects on validation data, and task {task!r} has none; use "
                              "--split protocol (a validation split drawn from its training data)")


def search_lambda(method: Method, stage: StageRunner, grid: list[float]) -> TrainedStage:
    """Train `stage` once per untried λ of `grid` (`method.lambdas[stage.task_index]` is the one in effect)
    and return the best candidate's result, merged into the model."""
    search = stage.run.lambda_search(stage.index, grid)
    tried = {candidate.value for candidate in search.candidates()}
    # the stage's starting point: the matrices a pass merges into, and the method's state (W_past)
    weights = {name: weight.detach().to("cpu", copy=True) for name, weight in stage.adapted_weights().items()}
    state = copy.deepcopy(method.state_dict())
    for value in grid:
        if value in tried:
            continue
        method.lambdas[stage.task_index] = value
        trained = stage.train()
        accuracy = {task: result.accuracy for task, result in stage.validate().items()}
        candidate = Candidate(value, accuracy, trained.losses)
        search.add(candidate, trained.update)
        _put_back(stage, weights)
        method.load_state_dict(copy.deepcopy(state))
        if method.config.progress:
            shown = ", ".join(f"{task} {a:.1f}" for task, a in accuracy.items())
            print(f"[{stage.name}] λ={value:g}: validation accuracy {candidate.score:.2f} ({shown})", flush=True)
    best = search.best()
    method.lambdas[stage.task_index] = best.value
    if method.config.progress:
        print(f"[{stage.name}] λ search keeps λ={best.value:g} (validation accuracy {best.score:.2f})", flush=True)
    # the stored update, also when this attempt trained it: a resumed search ends with the same bytes
    return stage.keep(search.best_update(), best.losses)


@torch.no_grad()
def _put_back(stage: StageRunner, weights: dict[str, torch.Tensor]) -> None:
    """The adapted matrices as they were before the pass (exactly: subtracting the merged update would round)."""
    for name, weight in stage.adapted_weights().items():
        weight.copy_(weights[name])
