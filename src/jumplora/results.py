"""What a run reports when it ends: metrics.json's content and the `RunResult` handed back."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jumplora.config import RunConfig
from jumplora.metrics import compute_metrics
from jumplora.rundir import RunDirectory, find_single_run
from jumplora.rundir.layout import ACCURACY, ACCURACY_RANK


@dataclass
class RunResult:
    run_dir: Path
    tasks: list[str]
    accuracy_matrix: list[list[float]]
    metrics: dict[str, Any]
    already_finished: bool = False  # the directory held a finished run: it was read, not written


def matrix_files(config: RunConfig) -> list[str]:
    """The accuracy matrices a run keeps: generation's, and rank classification's with `eval_mode=both`."""
    return [ACCURACY] + ([ACCURACY_RANK] if config.eval_mode == "both" else [])


def final_metrics(run: RunDirectory, config: RunConfig, matrices: dict[str, list[list[float]]]) -> dict:
    """metrics.json: OA, BWT, both FWTs (against a neighbouring `single` run), forgetting, sparsity per
    stage, the FWT reference, wall time (the stages' own, model loading excluded) and peak memory."""
    tasks = run.tasks
    matrix = matrices[ACCURACY]
    is_single = config.method_name.strategy == "single"
    single, source = find_single_run(config, run.path) if not is_single else (None, None)
    metrics: dict[str, Any] = {"method": config.method, "order": config.order, "tasks": tasks, "seed": config.seed}
    try:
        metrics.update(compute_metrics(matrix, tasks, single=single))
    except ValueError:  # e.g. a single or multi-task run has no full diagonal / final row
        metrics.update(_partial_metrics(matrix, tasks))
    if ACCURACY_RANK in matrices:
        try:
            rank = compute_metrics(matrices[ACCURACY_RANK], tasks, single=None)
            metrics["rank"] = {k: rank[k] for k in ("OA", "BWT")}
        except ValueError:
            pass
    records = [run.read_task_record(i) for i in range(len(run.stages))]
    metrics["sparsity"] = {record.name: record.sparsity for record in records}
    metrics["fwt_reference"] = source
    metrics["wall_time_s"] = round(sum(record.wall_time_s for record in records), 1)
    cpu = [record.cpu_time_s for record in records]
    # CPU seconds do not depend on what else ran beside the run; None where a record predates them
    metrics["cpu_time_s"] = None if None in cpu else round(sum(cpu), 1)
    metrics["peak_memory_mb"] = _peak_memory_mb(records)
    return metrics


def _partial_metrics(matrix, tasks) -> dict:
    final = matrix[-1]
    defined = [v for v in final if not math.isnan(v)]
    oa = sum(defined) / len(defined) if len(defined) == len(tasks) else None
    return {"OA": oa, "BWT": None, "FWT": None, "FWT_final": None, "forgetting": {}}


def _peak_memory_mb(records) -> float | None:
    """The largest stage peak over every attempt of the run (each stage measures its own, memory.py);
    None where a stage was recorded before stage peaks existed: its peak is unknown (the process
    that ran it is gone), and the peak of the process that finished the run would understate it."""
    peaks = [record.peak_memory_mb for record in records]
    return None if None in peaks or not peaks else max(peaks)
