"""Taking one task's update out of a finished run's model, and measuring what that does to every task.

The run's final model is its base model plus every stage's stored β·ΔW_final (`jumplora.export`);
subtracting one stage's stored update (`TaskUpdate.remove_from`, the exact values that were added)
leaves the model as if that task's update had never been merged, the other tasks' updates as they
were trained. `forget_task` evaluates it on every task of the run with the run's own protocol, data
and evaluation options (its config.yaml; the data must be the files its data.json records), and
writes the accuracy row beside the source run (`jumplora.rundir.removal`); the run is only read.
How much the *other* tasks move when task k is removed measures their interference with task k:
`jumplora report` tabulates it ("leave-one-task-out").
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from jumplora.config import RunConfig
from jumplora.data import load_tasks
from jumplora.errors import UserError
from jumplora.export import Rebuilt, model_after, stage_of, stored_update
from jumplora.models import LoadedModel
from jumplora.rundir import Removal, Run, data_summary, load_run, write_removal
from jumplora.rundir.removal import check_free, check_same_data


def default_out(run: Run, task: str) -> Path:
    """`RUN-forget-TASK` beside the run."""
    return Path(run.path).parent / f"{Path(run.path).name}-forget-{task}"


def model_without(run: Run | str | os.PathLike, task: str, loaded: LoadedModel | None = None) -> Rebuilt:
    """The run's final model with `task`'s stored update subtracted. Refuses an unfinished run, an
    unknown task, a method that keeps no merged model (single) and a stage of several tasks (mtl)."""
    run = run if isinstance(run, Run) else load_run(run)
    if not run.finished:
        raise UserError(f"{run.path}: the run is not finished ({run.completed} of {len(run.stages)} tasks done); "
                        "a task is taken out of its final model")
    from jumplora.methods import METHODS

    if not METHODS[run.method_name.strategy].keeps_updates:
        raise UserError(f"{run.path}: a {run.method} run keeps no merged model (each task's update is taken out "
                        "after its evaluation); nothing to forget")
    index = stage_of(run, task)
    if len(run.stages[index].tasks) > 1:
        raise UserError(f"{run.path}: task {task!r} was trained together with others ({run.stages[index].name}); "
                        "its update cannot be taken out alone")
    update = stored_update(run, index)
    rebuilt = model_after(run, None, loaded)
    update.remove_from(rebuilt.loaded.model)
    rebuilt.applied = [i for i in rebuilt.applied if i != index]
    return rebuilt


def source_row(run: Run) -> dict[str, float]:
    """The run's final accuracy row at full precision (its last task record), else the CSV's."""
    record = run.stages[-1].record
    if record is not None and record.accuracy:
        return dict(record.accuracy)
    row = run.accuracy[-1]
    return {task: float(v) for task, v in zip(run.tasks, row) if not math.isnan(v)}


def forget_task(run: Run | str | os.PathLike, task: str, out: str | os.PathLike | None = None,
                loaded: LoadedModel | None = None) -> Removal:
    """Remove `task`'s update from the run's final model, evaluate every task, write `out`."""
    from jumplora.device import check_precision, make_accelerator
    from jumplora.compute_dtype import frozen_weights_in, held_dtype, parks_masters
    from jumplora import memory
    from jumplora.train import data_protocol, evaluate_on

    memory.limit_primitive_cache()  # before the first matmul (memory.py)
    run = run if isinstance(run, Run) else load_run(run)
    out = Path(out) if out is not None else default_out(run, task)
    check_free(out)  # everything that can be refused is, before the model loads
    if Path(run.path).resolve() == out.resolve() or Path(run.path).resolve() in out.resolve().parents:
        raise UserError(f"--out {out} is inside the run directory {run.path}; choose another folder")
    stage_of(run, task)
    config = RunConfig.from_dict(dict(run.saved_config), source=f"{run.path}'s configuration")
    check_precision(config)
    protocol = data_protocol(config)
    data = load_tasks(config.order, config.data_dir, protocol)
    check_same_data(run.path, data_summary(data, protocol, config.data_dir))
    rebuilt = model_without(run, task, loaded)
    accelerator = make_accelerator(config)
    model = rebuilt.loaded.model.to(accelerator.device)
    tokenizer, kind = rebuilt.loaded.tokenizer, rebuilt.loaded.kind
    # as the run evaluates (compute_dtype.py)
    with frozen_weights_in(model, held_dtype(config, accelerator), park=parks_masters(config)):
        accuracy = {name: evaluate_on(model, tokenizer, kind, data[name], config, accelerator).accuracy
                    for name in run.tasks}
    removal = Removal(
        source_run=str(Path(run.path).resolve()), method=run.method, order=str(run.config["order"]), seed=run.seed,
        removed=task, tasks=list(run.tasks), accuracy=accuracy, source_accuracy=source_row(run),
        base_model=str(run.config["model"]),
    )
    write_removal(out, removal)
    return removal


__all__ = ["default_out", "forget_task", "model_without", "source_row"]
