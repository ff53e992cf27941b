"""The continually trained model of a run, rebuilt from its stored updates and saved as a Hugging Face folder.

A run keeps every stage's merged update β·ΔW_final (`updates/`), so the model after stage k is the
base model of the run's config plus the updates of stages 0..k, added in order exactly as the run
added them (`TaskUpdate.apply`); a method that takes each update out again after its evaluation
(`single`) leaves the base model plus stage k's update alone. `model_after` rebuilds it;
`export_model` saves it with `save_pretrained` (safetensors, config, generation config, tokenizer),
so that `AutoModelForCausalLM` / `AutoModelForSeq2SeqLM.from_pretrained(folder)` load it without
jumplora. The folder is written under a temporary name beside the target and renamed into place at
the end: an interrupted export leaves no half-written folder, and an existing non-empty folder is
refused, never written into.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jumplora.atomic import atomic_write_json, folder_built_aside
from jumplora.errors import UserError
from jumplora.models import LoadedModel, load_model, progress_bars
from jumplora.rundir import Run, load_run
from jumplora.rundir.removal import check_free
from jumplora.updates import TaskUpdate

EXPORT_RECORD = "jumplora_export.json"  # beside the model's files: where it came from


@dataclass
class Rebuilt:
    """The model after stage `stage` of `run`, and the stages whose updates it holds."""

    run: Run
    stage: int
    applied: list[int]
    loaded: LoadedModel

    @property
    def task(self) -> str:
        return self.run.stages[self.stage].name


def stage_of(run: Run, task: str | None) -> int:
    """The stage after which the model is wanted: the one that trained `task`, else the run's last.

    Refuses a task the run does not have, a stage the run has not finished, an unfinished run when
    no task is named."""
    if task is None:
        if not run.finished:
            done = ", ".join(s.name for s in run.stages[: run.completed]) or "none"
            raise UserError(f"{run.path}: the run is not finished ({run.completed} of {len(run.stages)} tasks done); "
                            f"name a finished task with --after-task (finished: {done})")
        return len(run.stages) - 1
    for stage in run.stages:
        if task in stage.tasks or task == stage.name:
            if stage.index >= run.completed:
                raise UserError(f"{run.path}: task {task!r} is not finished ({run.completed} of {len(run.stages)} "
                                "tasks done)")
            return stage.index
    raise UserError(f"{run.path}: no task {task!r} in this run; its tasks are {', '.join(run.tasks)}")


def stages_in_model(run: Run, stage: int) -> list[int]:
    """The stages whose updates the run's model held after `stage`."""
    from jumplora.methods import METHODS

    keeps = METHODS[run.method_name.strategy].keeps_updates
    return list(range(stage + 1)) if keeps else [stage]


def stored_update(run: Run, index: int) -> TaskUpdate:
    """Stage `index`'s full merged update; refuses one that was deleted or compacted to its supports."""
    update = run.update(index)
    if not isinstance(update, TaskUpdate):
        what = "was compacted to its supports" if update is not None else "is missing"
        raise UserError(f"{run.path}: the update of task {run.stages[index].name!r} {what}; the model cannot "
                        "be rebuilt without it")
    return update


def load_base_model(run: Run) -> LoadedModel:
    """The run's base model, as its config.yaml names it (float32, as the run trained it)."""
    config = run.config
    return load_model(str(config["model"]), kind=config.get("model_kind"), progress=False)


def model_after(run: Run | str | os.PathLike, task: str | None = None,
                loaded: LoadedModel | None = None) -> Rebuilt:
    """The run's model after `task` (default: after its last task). `loaded` replaces loading the
    run's base model (it is modified in place)."""
    run = run if isinstance(run, Run) else load_run(run)
    stage = stage_of(run, task)
    applied = stages_in_model(run, stage)
    updates = [stored_update(run, index) for index in applied]  # all refused before the model loads
    loaded = loaded or load_base_model(run)
    for update in updates:
        try:
            update.apply(loaded.model)
        except (KeyError, ValueError) as error:
            raise UserError(f"{run.path}: {error}; is {run.config['model']} still the run's base model?") from None
    return Rebuilt(run, stage, applied, loaded)


def export_model(run: Run | str | os.PathLike, out: str | os.PathLike, task: str | None = None,
                 loaded: LoadedModel | None = None) -> Path:
    """Save the run's model after `task` (default: its last) as a Hugging Face folder `out`."""
    out = Path(out)
    run = run if isinstance(run, Run) else load_run(run)
    check_free(out)
    if Path(run.path).resolve() == out.resolve() or Path(run.path).resolve() in out.resolve().parents:
        raise UserError(f"--out {out} is inside the run directory {run.path}; choose another folder")
    rebuilt = model_after(run, task, loaded)
    with folder_built_aside(out, lambda reason: UserError(f"cannot write --out {out}: {reason}")) as tmp:
        model, tokenizer = rebuilt.loaded.model, rebuilt.loaded.tokenizer
        with progress_bars(False):
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / EXPORT_RECORD, {
            "source_run": str(Path(run.path).resolve()), "method": run.method, "base_model": str(run.config["model"]),
            "after_task": rebuilt.task, "updates_applied": [run.stages[i].name for i in rebuilt.applied],
        })
        check_free(out)  # again: something may have appeared meanwhile; an empty `out` is replaced
    return out


__all__ = ["EXPORT_RECORD", "Rebuilt", "check_free", "export_model", "load_base_model", "model_after", "stage_of",
           "stages_in_model", "stored_update"]
