"""The contents of a run directory's files: how each is written and read back, in one place.

The writer (`RunDirectory`), the resume check, the FWT lookup of a neighbouring `single` run and
the analyses' reader (`load_run`) all go through these functions, so a file is parsed one way only.
A file that is missing or does not parse is a one-line `RunDirectoryError` naming it; `hint` says
what to do about it where the caller knows (resuming: restore it or start afresh).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from jumplora.errors import RunDirectoryError
from jumplora.rundir.layout import STAGE_SEPARATOR, stage_name, stage_tasks

RESTORE = "restore it, or start afresh with another --output-dir"


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _damaged(path: Path, reason: str, hint: str | None) -> RunDirectoryError:
    return RunDirectoryError(f"{path} is damaged ({reason})" + (f"; {hint}" if hint else ""))


def read_json(path: Path, hint: str | None = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirectoryError(f"{path} is missing" + (f"; {hint}" if hint else "")) from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _damaged(path, first_line(error), hint) from None


def read_json_object(path: Path, hint: str | None = None) -> dict:
    value = read_json(path, hint)
    if not isinstance(value, dict):
        raise _damaged(path, "not a JSON object", hint)
    return value


def read_config(path: Path) -> dict:
    """config.yaml as written: a mapping of option names to values."""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirectoryError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise _damaged(path, first_line(error), None) from None
    if not isinstance(values, dict):
        raise _damaged(path, "not a mapping of options", None)
    return values


def format_config(values: dict) -> str:
    return yaml.safe_dump(values, sort_keys=False)


# -- state.json -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class State:
    """Progress: the order's `tasks`, its `stages`, how many stages are `completed`, whether `finished`.

    `stages` is None in a state.json written before stages were recorded (one task per stage, except
    a multi-task run's single stage, which its task record names)."""

    tasks: list[str]
    completed: int
    finished: bool
    stages: list[list[str]] | None = None

    def to_json(self) -> dict:
        value: dict[str, Any] = {"tasks": self.tasks, "completed": self.completed, "finished": self.finished}
        if self.stages is not None:
            value["stages"] = self.stages
        return value


def read_state(path: Path, hint: str | None = None) -> State:
    value = read_json(path, hint)
    ok = (isinstance(value, dict) and _names(value.get("tasks"))
          and isinstance(value.get("completed"), int) and not isinstance(value.get("completed"), bool)
          and isinstance(value.get("finished"), bool))
    stages = value.get("stages") if ok else None
    if ok and stages is not None:
        ok = isinstance(stages, list) and all(_names(stage) and stage for stage in stages)
        ok = ok and value["completed"] <= len(stages)
    if not ok or not 0 <= value["completed"] <= len(value["tasks"]):
        raise _damaged(path, "not a jumplora state", hint)
    return State(list(value["tasks"]), value["completed"], value["finished"],
                 [list(stage) for stage in stages] if stages is not None else None)


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(name, str) for name in value)


# -- accuracy_matrix.csv ------------------------------------------------------------------------------------
def format_accuracy(tasks: Sequence[str], matrix: Sequence[Sequence[float]]) -> str:
    """a[i][j] in percent, two decimals, for people: row i after training task i (first column
    `after_task`), column j task j of the order; an empty cell was not evaluated."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["after_task", *tasks])
    for task, row in zip(tasks, matrix):
        writer.writerow([task, *("" if math.isnan(v) else f"{v:.2f}" for v in row)])
    return buffer.getvalue()


def read_accuracy(path: Path, tasks: Sequence[str], hint: str | None = None) -> list[list[float]]:
    """The CSV's matrix (two decimals, NaN where a cell is empty); all NaN when the file is missing
    (no task finished yet). The header and the rows must name the order's tasks, as written."""
    n = len(tasks)
    if not path.exists():
        return [[math.nan] * n for _ in range(n)]
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
        if not rows or rows[0] != ["after_task", *tasks]:
            raise ValueError(f"its header is not after_task,{','.join(tasks)}")
        if [row[:1] for row in rows[1:]] != [[task] for task in tasks]:
            raise ValueError("its rows are not one per task of the order")
        matrix = []
        for row in rows[1:]:
            if len(row) != n + 1:
                raise ValueError(f"the row of {row[0]} has {len(row) - 1} cells for {n} tasks")
            matrix.append([float(v) if v != "" else math.nan for v in row[1:]])
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as error:
        raise _damaged(path, first_line(error), hint) from None
    return matrix


# -- losses.jsonl -------------------------------------------------------------------------------------------
def format_losses(records: Sequence[dict]) -> str:
    """One JSON object per optimiser step, in order."""
    lines = [json.dumps(record) for record in records]
    return "\n".join(lines) + ("\n" if lines else "")


def read_losses(path: Path, hint: str | None = None) -> list[dict]:
    """Every line of losses.jsonl ([] when there is none yet); each names its stage (`task`)."""
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _damaged(path, first_line(error), hint) from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise _damaged(path, f"line {number}: {first_line(error)}", hint) from None
        if not isinstance(record, dict) or not isinstance(record.get("task"), str):
            raise _damaged(path, f"line {number} is not a loss record with its task", hint)
        records.append(record)
    return records


# -- tasks/NN-STAGE.json --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskRecord:
    """What a finished stage left: its tasks, its schedule, its merge, the accuracy row after it.

    `accuracy` (and its variants) map each evaluated task to its accuracy at full precision (the
    CSV rounds to two decimals); `correct` holds one "0"/"1" character per test example (data.json's
    test order) for paired bootstraps. `s_start_step` is the optimiser step at which τ was
    initialised: the step after which losses.jsonl shows it first (a stage too short to reach
    S_start has it at its number of steps, τ then set after the last step).
    """

    stage: tuple[str, ...]
    steps: int
    s_start_step: int | None = None
    s_final_step: int | None = None
    wall_time_s: float = math.nan
    peak_memory_mb: float | None = None  # the stage's own peak (memory.py); None in records written before it
    cpu_time_s: float | None = None  # the process's CPU seconds over the stage; None in records written before it
    thresholds: dict[str, float] = field(default_factory=dict)
    sparsity: float = math.nan
    accuracy: dict[str, float] | None = None
    accuracy_labelled: dict[str, float | None] | None = None
    correct: dict[str, str] | None = None
    accuracy_rank: dict[str, float] | None = None

    @property
    def name(self) -> str:
        return stage_name(self.stage)

    def to_json(self) -> dict:
        return {
            "task": self.name, "stage": list(self.stage), "steps": self.steps,
            "s_start_step": self.s_start_step, "s_final_step": self.s_final_step,
            "wall_time_s": self.wall_time_s, "peak_memory_mb": self.peak_memory_mb, "cpu_time_s": self.cpu_time_s,
            "thresholds": self.thresholds, "sparsity": self.sparsity, "accuracy": self.accuracy,
            # on the test records whose label is in the label set (differs for MNLI's '-' records)
            "accuracy_labelled": self.accuracy_labelled,
            # per test example (data.json's test order), "1" = correct: for paired bootstraps
            "correct": self.correct,
            "accuracy_rank": self.accuracy_rank,
        }

    @classmethod
    def from_json(cls, value: Any, path: Path, hint: str | None = None) -> "TaskRecord":
        """A record as written, or as written before `stage`, `s_start_step` and `correct` existed
        (`stage` then comes from its `task`, the stage's name; `s_start_step` is None: see
        `legacy_s_start_step`)."""
        if not isinstance(value, dict) or not isinstance(value.get("task"), str):
            raise _damaged(path, "not a task record", hint)
        stage = value.get("stage", stage_tasks(value["task"]))
        steps = value.get("steps")
        ok = (_names(list(stage)) and STAGE_SEPARATOR.join(stage) == value["task"]
              and isinstance(steps, int) and not isinstance(steps, bool)
              and all(isinstance(value.get(key), (dict, type(None)))
                      for key in ("accuracy", "accuracy_labelled", "correct", "accuracy_rank", "thresholds")))
        if not ok:
            raise _damaged(path, "not a task record", hint)
        try:
            return cls(
                stage=tuple(stage), steps=steps, s_start_step=value.get("s_start_step"),
                s_final_step=value.get("s_final_step"), wall_time_s=float(value.get("wall_time_s", math.nan)),
                peak_memory_mb=None if value.get("peak_memory_mb") is None else float(value["peak_memory_mb"]),
                cpu_time_s=None if value.get("cpu_time_s") is None else float(value["cpu_time_s"]),
                thresholds={g: float(t) for g, t in (value.get("thresholds") or {}).items()},
                sparsity=float(value.get("sparsity", math.nan)),
                accuracy=_floats(value.get("accuracy")), accuracy_labelled=value.get("accuracy_labelled"),
                correct=value.get("correct"), accuracy_rank=_floats(value.get("accuracy_rank")),
            )
        except (TypeError, ValueError) as error:
            raise _damaged(path, first_line(error), hint) from None


def _floats(values: dict | None) -> dict[str, float] | None:
    return None if values is None else {task: float(value) for task, value in values.items()}


def assemble_matrix(tasks: Sequence[str], stages: Sequence[Sequence[str]], records: Sequence[TaskRecord | None],
                    record_paths: Sequence[Path], csv_matrix, rank: bool = False,
                    hint: str | None = None) -> list[list[float]]:
    """The accuracy matrix of the finished stages at full precision, from their task records (row:
    the order position of the stage's last task); a stage without a record's accuracies takes the
    CSV's row (`csv_matrix()`, read only when needed)."""
    n = len(tasks)
    matrix = [[math.nan] * n for _ in range(n)]
    rounded = None
    for stage, record, path in zip(stages, records, record_paths):
        row = tasks.index(stage[-1])
        accuracies = None if record is None else (record.accuracy_rank if rank else record.accuracy)
        if accuracies is None:
            rounded = rounded or csv_matrix()
            matrix[row] = list(rounded[row])
            continue
        for task, value in accuracies.items():
            if task not in tasks:
                raise _damaged(path, f"an accuracy of {task!r}, which is not a task of the order", hint)
            matrix[row][tasks.index(task)] = value
    return matrix
