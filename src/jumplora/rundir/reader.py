"""Reading a finished (or unfinished) run directory into a `Run`, for the analyses.

Only `config.yaml` is required: a directory without it is not a run directory, and `load_run`
raises a one-line `UserError` naming the missing file. Everything else may be missing in an
unfinished run; `load_run` then emits a `RunWarning` and the `Run` holds what exists (accuracy
cells that were not evaluated are NaN, metrics missing from `metrics.json` are NaN, stages without
an update file have none). Per-stage updates are loaded only when asked for (`Run.update`), one at
a time, since a T5-large JumpLoRA update is hundreds of megabytes.

`Run.config` is config.yaml completed with `jumplora.config.with_legacy_values`: a run written before
an option existed is read with the value it was run with (not today's default), so that comparing
and grouping runs sees what each one computed. `Run.saved_config` is the file as written.

`Run.accuracy` is accuracy_matrix.csv (two decimals), what the reports have always been computed
from; each stage's task record holds the full-precision row (`Stage.record.accuracy`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from jumplora.config import with_legacy_values
from jumplora.data import resolve_order
from jumplora.errors import UserError
from jumplora.method_names import MethodName, parse_method
from jumplora.rundir import layout
from jumplora.rundir.formats import (
    State, TaskRecord, read_accuracy, read_config, read_json, read_json_object, read_losses, read_state,
)
from jumplora.rundir.supports import CompactUpdate, load_supports
from jumplora.schedule import JumpSchedule
from jumplora.updates import TaskUpdate

# CSV accuracies have two decimals: a mean of differences recomputed from them moves by at most 0.005.
_CSV_TOLERANCE = 0.01


class RunWarning(UserWarning):
    """A run directory is usable but incomplete (an unfinished run, a missing file)."""


@dataclass(frozen=True)
class Stage:
    """One stage of a run: its position, its tasks, and what it left once finished.

    `record` is its task record (None until the stage finished); `update_path` its merged update,
    `updates/NN-NAME.safetensors`, else the compact `supports/` file, else None. `s_start_step`
    is the optimiser step at which τ was initialised (see `TaskRecord`), from the record or, for a
    record written before it was stated, from the run's schedule settings as they were."""

    index: int
    tasks: tuple[str, ...]
    record: TaskRecord | None = None
    update_path: Path | None = None
    s_start_step: int | None = None

    @property
    def name(self) -> str:
        return layout.stage_name(self.tasks)


@dataclass
class Run:
    """One run directory: its configuration, task order, stages, accuracy matrix and metrics.

    `accuracy[i, j]` is a[i][j] in percent (row i: after training task i; column j: task j of the
    order), NaN where not evaluated. `metrics` is metrics.json as read ({} when missing). `stages`
    are every stage of the run, finished or not; `completed` counts the finished ones.
    """

    path: Path
    config: dict
    saved_config: dict
    method_name: MethodName
    tasks: list[str]
    stages: list[Stage]
    accuracy: np.ndarray
    metrics: dict
    finished: bool
    completed: int
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # -- identity ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method(self) -> str:
        """The method name as the run stored it (`jumplora`, `jumplora+ella`, ...)."""
        return str(self.config["method"]).strip().lower()

    @property
    def label(self) -> str:
        return self.method_name.label

    @property
    def gated(self) -> bool:
        return self.method_name.gated

    @property
    def order(self) -> int | str:
        """Orders 1-6 (and any numbered order) as ints; a custom order as given (its task names or file)."""
        text = str(self.config["order"]).strip()
        return int(text) if text.isdigit() else text

    @property
    def seed(self) -> int | None:
        try:
            return int(self.config["seed"])
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def threshold_mode(self) -> str | None:
        """"global" or "local" (JumpLoRA's threshold mode, §4.6)."""
        value = self.config.get("threshold_mode")
        return str(value) if value is not None else None

    @property
    def update_mode(self) -> str | None:
        """"sparse" or "interp": what ELLA's penalty is computed on with JumpLoRA (§4.6)."""
        value = self.config.get("ella_penalty")
        return str(value) if value is not None else None

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def stage_names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    # -- results ----------------------------------------------------------------------------
    def metric(self, key: str) -> float:
        """A scalar of metrics.json as a float; NaN when missing or null.

        "FWT_final" (the authors' script's FWT, see `jumplora.metrics.forward_transfer_final`) is
        derived (`derived_fwt_final`) where metrics.json predates it and lacks the key.
        """
        if key == "FWT_final" and key not in self.metrics:
            return self.derived_fwt_final()
        value = self.metrics.get(key)
        try:
            return float(value) if value is not None else math.nan
        except (TypeError, ValueError):
            return math.nan

    def losses(self) -> dict[str, list[dict]]:
        """losses.jsonl's per-step records, by stage name in step order ({} when there is none)."""
        by_stage: dict[str, list[dict]] = {}
        for record in read_losses(self.path / layout.LOSSES):
            by_stage.setdefault(record["task"], []).append(record)
        return by_stage

    def lambda_searches(self) -> list[tuple[str, dict]]:
        """(stage name, record) of each `--ella-lambda search` stage, in stage order ([] when none).

        A record is `lambda_search/NN-STAGE.json` as written (`jumplora.rundir.lambda_search`): its
        grid, every candidate tried with its validation accuracies and their mean, and the λ kept."""
        found = []
        for stage in self.stages:
            path = layout.lambda_search_record_path(self.path, stage.index, stage.name)
            if path.is_file():
                found.append((stage.name, read_json_object(path)))
        return found

    def fwt_reference(self) -> Path | None:
        """The `single` run whose diagonal gave FWT's a_{0,i} (metrics.json's fwt_reference).

        The recorded path as it is, else (a results folder moved or copied elsewhere) the folder of
        the same name next to this run; None when none was recorded or neither is a run directory.
        """
        recorded = self.metrics.get("fwt_reference")
        if not recorded:
            return None
        recorded = Path(str(recorded))
        candidates = [recorded] if recorded.is_absolute() else [self.path.parent / recorded, recorded]
        candidates.append(self.path.parent / recorded.name)
        return next((c for c in candidates if layout.is_run_directory(c)), None)

    def single_accuracies(self) -> dict[str, float] | None:
        """a_{0,i} by task name: the diagonal of the `single` run `fwt_reference` names, as the
        runner read it for FWT. None (with a `RunWarning` when a reference was recorded but is
        unusable) when there is none."""
        if "single" in self._cache:
            return self._cache["single"]
        found = None
        reference = self.fwt_reference()
        recorded = self.metrics.get("fwt_reference")
        unusable = None
        if reference is None:
            if recorded:
                unusable = (f"fwt_reference {recorded} is not a run directory (nor is "
                            f"{self.path.parent / Path(str(recorded)).name})")
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RunWarning)
                    single = load_run(reference)
            except UserError as error:  # a broken reference costs FWT_final, never the whole report
                unusable = f"fwt_reference {reference} cannot be read ({error})"
            else:
                if single.finished:
                    found = {task: float(single.accuracy[i, i]) for i, task in enumerate(single.tasks)}
                else:
                    unusable = f"fwt_reference {reference} is unfinished"
        if unusable:
            warnings.warn(f"{self.path}: {unusable}; FWT_final left out", RunWarning, stacklevel=3)
        self._cache["single"] = found
        return found

    def derived_fwt_final(self) -> float:
        """FWT_final = OA − mean_i a_{0,i} (= mean_i (a_{T,i} − a_{0,i})) from this run and its
        `single_accuracies`, for a metrics.json written before FWT_final existed; NaN where it
        cannot be had. OA is metrics.json's (full precision; the CSV rounds to two decimals), else
        the accuracy matrix's final row. The single run is checked against this run's stored FWT
        (§4.2): recomputed from the CSV it must agree within rounding, else a `RunWarning` and NaN.
        """
        if "FWT_final" in self._cache:
            return self._cache["FWT_final"]
        value = math.nan
        single = self.single_accuracies() if self.finished and self.n_tasks else None
        base = [single.get(task, math.nan) for task in self.tasks] if single else []
        if base and all(math.isfinite(v) for v in base):
            n = self.n_tasks
            oa = self.metric("OA")
            if not math.isfinite(oa):
                oa = float(np.mean(self.accuracy[n - 1])) if n else math.nan
            stored = self.metric("FWT")
            diagonal = np.diag(self.accuracy)
            recomputed = float(np.mean(diagonal - np.array(base))) if np.isfinite(diagonal).all() else math.nan
            if math.isfinite(stored) and math.isfinite(recomputed) and abs(recomputed - stored) > _CSV_TOLERANCE:
                warnings.warn(
                    f"{self.path}: FWT recomputed from fwt_reference {self.fwt_reference()} is "
                    f"{recomputed:.4f}, metrics.json has {stored:.4f} (the single run changed since?); "
                    "FWT_final left out", RunWarning, stacklevel=3)
            elif math.isfinite(oa):
                value = oa - float(np.mean(base))
        self._cache["FWT_final"] = value
        return value

    # -- updates ----------------------------------------------------------------------------
    def has_updates(self) -> bool:
        return any(stage.update_path is not None for stage in self.stages)

    def update(self, index: int) -> TaskUpdate | CompactUpdate | None:
        """Stage `index`'s merged update (`jumplora.updates.TaskUpdate`), loaded now; None if absent.

        Where only `supports/` has the stage, a `CompactUpdate`: counts for every matrix, supports
        for one layer, no values.
        """
        path = self.stages[index].update_path
        if path is None:
            return None
        if path.parent.name == layout.SUPPORTS:
            return load_supports(path)
        try:
            return TaskUpdate.load(path)
        except Exception as error:  # safetensors raises its own error types
            raise UserError(f"cannot read update file {path}: {error}") from None

    def updates(self) -> Iterator[tuple[int, Any]]:
        """(stage index, update) for each stage that has an update file, in order, one at a time."""
        for stage in self.stages:
            if stage.update_path is not None:
                yield stage.index, self.update(stage.index)


# -- reading --------------------------------------------------------------------------------
def load_run(path: str | Path) -> Run:
    """Read the run directory at `path`. Raises `UserError` if it is not one."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such run directory")
    if not path.is_dir():
        raise UserError(f"{path} is not a run directory (it is a file)")
    if not layout.is_run_directory(path):
        raise UserError(f"{path} is not a run directory: {layout.CONFIG} missing")
    saved_config = read_config(path / layout.CONFIG)
    config = with_legacy_values(saved_config)
    if "method" not in config or "order" not in config:
        raise UserError(f"{path / layout.CONFIG} is not a run's configuration (no method or order)")
    method = parse_method(str(config["method"]))
    state = read_state(path / layout.STATE) if (path / layout.STATE).is_file() else None
    metrics = read_json_object(path / layout.METRICS) if (path / layout.METRICS).is_file() else {}
    tasks = state.tasks if state else _tasks_of(config["order"])
    stages = _stages(path, config, tasks, state)
    completed = state.completed if state else 0
    finished = bool(state and state.finished)
    accuracy = np.array(read_accuracy(path / layout.ACCURACY, tasks), dtype=float).reshape(len(tasks), len(tasks))
    run = Run(path=path, config=config, saved_config=saved_config, method_name=method, tasks=tasks, stages=stages,
              accuracy=accuracy, metrics=metrics, finished=finished, completed=completed)
    if not finished:
        missing = [name for name in (layout.STATE, layout.ACCURACY, layout.METRICS) if not (path / name).is_file()]
        detail = f"; {', '.join(missing)} missing" if missing else ""
        warnings.warn(f"{path}: run unfinished ({completed} of {len(stages)} tasks done{detail}); using what exists",
                      RunWarning, stacklevel=2)
    elif not metrics:
        warnings.warn(f"{path}: {layout.METRICS} missing; its metrics are left out", RunWarning, stacklevel=2)
    if not tasks:
        warnings.warn(f"{path}: no task order found (no {layout.STATE}, and the order "
                      f"{config['order']!r} cannot be resolved)", RunWarning, stacklevel=2)
    return run


def load_runs(paths) -> list[Run]:
    """Each distinct run directory once, in the order given (a path given twice is read once)."""
    runs, seen = [], set()
    for path in paths:
        key = Path(path).resolve()
        if key in seen:
            warnings.warn(f"{path}: given twice; read once", RunWarning, stacklevel=2)
            continue
        seen.add(key)
        runs.append(load_run(path))
    return runs


def _tasks_of(order: Any) -> list[str]:
    """The order's tasks, for a run killed before its state.json was written."""
    try:
        return list(resolve_order(str(order)))
    except UserError:  # a custom order file that is gone: the run has no task to show
        return []


def _stages(path: Path, config: dict, tasks: list[str], state: State | None) -> list[Stage]:
    """Every stage of the run with what the finished ones left."""
    completed = state.completed if state else 0
    if state is not None and state.stages is not None:
        lists = state.stages
    else:
        # written before state.json listed the stages: the finished stages' records name their tasks
        # (a multi-task stage "CB+COPA"); the rest are one task each, as every method but mtl trains
        records = layout.numbered_files(path / layout.TASKS, ".json")
        lists = [list(layout.stage_tasks(layout.parse_stem(records[i].name)[1])) for i in sorted(records)
                 if i < completed]
        done = {task for stage in lists for task in stage}
        lists += [[task] for task in tasks if task not in done]
    updates = layout.numbered_files(path / layout.UPDATES, ".safetensors")
    supports = layout.numbered_files(path / layout.SUPPORTS, ".safetensors")
    stages = []
    for index, tasks_of_stage in enumerate(lists):
        name = layout.stage_name(tasks_of_stage)
        record = None
        record_path = layout.task_record_path(path, index, name)
        if index < completed and record_path.is_file():
            record = TaskRecord.from_json(read_json(record_path), record_path)
        update = _named(updates.get(index), name) or _named(supports.get(index), name)
        stages.append(Stage(index, tuple(tasks_of_stage), record, update, _s_start_step(record, config)))
    return stages


def _named(path: Path | None, name: str) -> Path | None:
    return path if path is not None and layout.parse_stem(path.name)[1] == name else None


def _s_start_step(record: TaskRecord | None, config: dict) -> int | None:
    """The record's S_start step; for a record written before it was stated, the step the run's
    schedule settings gave (its config, legacy values included: old runs rounded, newer ones floor)."""
    if record is None:
        return None
    if record.s_start_step is not None:
        return record.s_start_step
    schedule = JumpSchedule.for_task(record.steps, config["s_start"], config["s_final"],
                                     rounding=config["schedule_rounding"])
    return schedule.start
