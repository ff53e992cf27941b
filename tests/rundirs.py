"""Run directories for the analysis tests, written by the real writer (`jumplora.rundir.RunDirectory`).

The analyses need runs with chosen numbers (an OA of 70 and one of 74, supports whose Jaccard is
known by hand), which training a tiny model cannot give. So the numbers are chosen here, and every
file is written by the same calls `jumplora.train` makes (`RunDirectory.open`, `save_stage`,
`finish`): the files have the writer's format by construction. Runs a real training produces are in
`test_analysis_e2e.py`; runs of the format before today's writer are the committed `results/runs/`.

A run's config is a real `RunConfig`; its order picks the benchmark and the paper's columns (order
4: LS), while its task list is the three tasks given, to keep the matrices small.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from jumplora.config import RunConfig
from jumplora.rundir import RunDirectory, TaskRecord
from jumplora.rundir.layout import ACCURACY, UPDATES, stage_name
from jumplora.schedule import JumpSchedule
from jumplora.updates import ModuleUpdate, TaskUpdate

RESULTS = Path(__file__).resolve().parents[1] / "results" / "runs"
T5_Q = "encoder.block.{}.layer.0.SelfAttention.q"
T5_V = "encoder.block.{}.layer.0.SelfAttention.v"
TASKS = ("MNLI", "CB", "WiC")


def write_run(root: Path, *, method="jumplora", order=4, seed=42, tasks=TASKS, model="t5-large", accuracy=None,
              metrics=None, updates=None, keep_updates=None, losses=None, thresholds=None, finished=True,
              completed=None, **options) -> Path:
    """A run of `tasks` with the given accuracy matrix and metrics, written stage by stage.

    `updates[i]` is stage i's merged update; without `updates` (or with `keep_updates=False`) updates/
    is deleted afterwards, as the study does to save space. `losses[task]` are the stage's logged
    steps (default: four steps of task loss 1); `thresholds[task]` its τ at the merge (default: the
    update's). `metrics` go into metrics.json over the method, order, tasks and seed.
    """
    config = RunConfig(method=method, order=str(order), seed=seed, model=model, output_dir=str(root), **options)
    tasks = list(tasks)
    stages = [tasks] if config.method_name.strategy == "mtl" else [[task] for task in tasks]
    completed = len(stages) if completed is None else completed
    if accuracy is None:
        accuracy = np.full((len(tasks), len(tasks)), np.nan)
        for i in range(completed):
            accuracy[i, : i + 1] = 80.0 - 5 * np.arange(i + 1)[::-1]
    run = RunDirectory.open(config, tasks, stages)
    matrix = np.full((len(tasks), len(tasks)), np.nan)
    log: list[dict] = []
    for index, stage in enumerate(stages[:completed]):
        name = stage_name(stage)
        row = tasks.index(stage[-1])
        matrix[row] = accuracy[row]
        update = updates[index] if updates else TaskUpdate(task=name)
        steps = (losses or {}).get(name) or [{"task_loss": 1.0} for _ in range(4)]
        stage_log = [{"task": name, "step": s, "loss": r.get("task_loss", 1.0), **r} for s, r in enumerate(steps)]
        schedule = JumpSchedule.for_task(len(stage_log), config.s_start, config.s_final,
                                         rounding=config.schedule_rounding)
        evaluated = {task: float(accuracy[row, j]) for j, task in enumerate(tasks) if np.isfinite(accuracy[row, j])}
        record = TaskRecord(
            stage=tuple(stage), steps=len(stage_log), s_start_step=schedule.start, s_final_step=schedule.final,
            wall_time_s=1.0, thresholds=(thresholds or {}).get(name, update.thresholds), sparsity=update.sparsity(),
            accuracy=evaluated, accuracy_labelled=dict(evaluated), correct=None,
        )
        run.save_stage(index, update, {}, {ACCURACY: [list(r) for r in matrix]}, stage_log, record)
        log += stage_log
    if finished:
        values = {"method": config.method, "order": config.order, "tasks": tasks, "seed": seed,
                  "OA": 70.0, "BWT": -5.0, "FWT": None, "FWT_final": None, "forgetting": {}, "sparsity": {},
                  "fwt_reference": None, "wall_time_s": 3.0, "peak_memory_mb": 100.0}
        run.finish({**values, **(metrics or {})})
    if not (updates is not None if keep_updates is None else keep_updates):
        shutil.rmtree(Path(root) / UPDATES, ignore_errors=True)
    return Path(root)


def sparse_update(task: str, supports: dict[str, list[int]], shape=(4, 4)) -> TaskUpdate:
    """A JumpLoRA-like update whose matrix `name` changed exactly the flat entries `supports[name]`."""
    update = TaskUpdate(task=task, thresholds={"global": 0.01})
    for name, entries in supports.items():
        indices = torch.tensor(sorted(entries), dtype=torch.int64)
        update.modules[name] = ModuleUpdate(shape=shape, indices=indices, values=torch.full((len(entries),), 0.5))
    return update


def three_task_updates() -> list[TaskUpdate]:
    """Three tasks on encoder block 1's q and v (4×4 each), plus block 0 and 2 as padding."""
    q, v = T5_Q.format(1), T5_V.format(1)
    others = {T5_Q.format(0): [0], T5_Q.format(2): [15]}
    return [
        sparse_update("MNLI", {q: [0, 1, 2, 3], v: [0, 1], **others}),
        sparse_update("CB", {q: [2, 3, 4, 5], v: [1, 2], **others}),
        sparse_update("WiC", {q: [0, 5, 8, 9], v: [], **others}),
    ]


def lowrank_update(task: str, factors: dict[str, tuple], scale: float = 4.0) -> TaskUpdate:
    """A plain-LoRA update: per matrix (A, B) lists, β = `scale`."""
    update = TaskUpdate(task=task)
    for name, (lora_a, lora_b) in factors.items():
        update.modules[name] = ModuleUpdate(shape=(len(lora_b), len(lora_a[0])), lora_A=torch.tensor(lora_a),
                                            lora_B=torch.tensor(lora_b), scale=scale)
    return update


def committed_run(name: str, into: Path) -> Path:
    """A copy of a committed run of `results/runs/` (written before today's writer) under `into`."""
    source = RESULTS / name
    target = Path(into) / name
    shutil.copytree(source, target)
    return target
