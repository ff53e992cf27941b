"""Reading one run directory (see docs/run-directory.md) into a `Run`.

Only `config.yaml` is required: a directory without it is not a run directory, and `load_run`
raises a one-line `UserError` naming the missing file. Everything else may be missing in an
unfinished run; `load_run` then emits a `RunWarning` and the `Run` holds what exists (accuracy
cells that were not evaluated are NaN, metrics missing from `metrics.json` are NaN, tasks without
an update file have none). Per-task updates are loaded only when asked for (`Run.update`), one at
a time, since a T5-large JumpLoRA update is hundreds of megabytes.

`Run.config` is config.yaml completed with `jumplora.config.with_legacy_values`: a run written before
an option existed is read with the value it was run with (not today's default), so that comparing
and grouping runs sees what each one computed. `Run.saved_config` is the file as written.
"""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from jumplora.config import LEGACY_VALUES, with_legacy_values
from jumplora.errors import UserError

CONFIG = "config.yaml"
STATE = "state.json"
METRICS = "metrics.json"
ACCURACY = "accuracy_matrix.csv"
UPDATES = "updates"
LOSSES = "losses.jsonl"
SUPPORTS = "supports"  # compact supports (jumplora.analysis.supports), read where updates/ lacks a task

# Method names in config.yaml -> the labels the paper uses. Other names are printed as they are.
METHOD_LABELS = {
    "inclora": "IncLoRA",
    "ella": "ELLA",
    "jumplora": "JumpLoRA + IncLoRA",
    "jumplora+inclora": "JumpLoRA + IncLoRA",
    "jumplora+ella": "JumpLoRA + ELLA",
}
JUMP_LABELS = ("JumpLoRA + IncLoRA", "JumpLoRA + ELLA")


class RunWarning(UserWarning):
    """A run directory is usable but incomplete (an unfinished run, a missing file)."""


def method_label(method: Any, gated: Any = None) -> str:
    """The paper's label of a method name: `jumplora+ella` -> "JumpLoRA + ELLA".

    `gated=True` with a plain method name (`ella`, `inclora`) also means its JumpLoRA variant.
    """
    name = str(method).strip()
    label = METHOD_LABELS.get(name.lower(), name)
    if gated is True and name.lower() in ("inclora", "ella"):
        label = METHOD_LABELS["jumplora+" + name.lower()]
    return label


def normalize_order(order: Any) -> int | str | None:
    """Orders 1-6 as ints ("4" -> 4); a custom order as its comma-joined task names."""
    if order is None:
        return None
    if isinstance(order, bool):
        return str(order)
    if isinstance(order, int):
        return order
    if isinstance(order, float) and order.is_integer():
        return int(order)
    if isinstance(order, (list, tuple)):
        return ",".join(str(t) for t in order)
    text = str(order).strip()
    return int(text) if text.isdigit() else text


def order_label(order: int | str | None) -> str:
    if order is None:
        return "unknown order"
    if isinstance(order, int):
        return f"Order {order}"
    return f"order {order}"


def benchmark_of(order: int | str | None) -> str | None:
    """"SC" for orders 1-3, "LS" for orders 4-6, None for custom orders."""
    if isinstance(order, int):
        if 1 <= order <= 3:
            return "SC"
        if 4 <= order <= 6:
            return "LS"
    return None


def config_get(config: dict, key: str, default: Any = None) -> Any:
    """`config[key]`, or the same key in a nested section (one level down)."""
    if key in config:
        return config[key]
    for value in config.values():
        if isinstance(value, dict) and key in value:
            return value[key]
    return default


_ABSENT = object()


def complete_config(saved: dict) -> dict:
    """A saved config.yaml completed with `LEGACY_VALUES` for the options it lacks (see
    `jumplora.config.with_legacy_values`); an option found in a nested section counts as present."""
    completed = with_legacy_values(saved)
    for key in LEGACY_VALUES:
        if key not in saved and config_get(saved, key, _ABSENT) is not _ABSENT:
            del completed[key]
    return completed


# CSV accuracies have two decimals: a mean of differences recomputed from them moves by at most 0.005.
_CSV_TOLERANCE = 0.01


@dataclass
class Run:
    """One run directory: its configuration, task order, accuracy matrix and metrics.

    `accuracy[i, j]` is a[i][j] in percent (row i: after training task i; column j: task j of the
    order), NaN where not evaluated. `metrics` is metrics.json as read ({} when missing).
    `update_paths[i]` is task i's update file, or None. `config` is config.yaml completed with the
    legacy values of options it lacks (`complete_config`), `saved_config` the file as written.
    """

    path: Path
    config: dict
    tasks: list[str]
    accuracy: np.ndarray
    metrics: dict
    state: dict
    update_paths: list[Path | None]
    finished: bool
    completed: int
    saved_config: dict | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # -- identity ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method(self) -> str:
        value = self.metrics.get("method") or config_get(self.config, "method")
        return str(value) if value is not None else "unknown"

    @property
    def label(self) -> str:
        return method_label(self.method, config_get(self.config, "gated"))

    @property
    def is_jump(self) -> bool:
        return self.label in JUMP_LABELS

    @property
    def order(self) -> int | str | None:
        value = config_get(self.config, "order")
        if value is None:
            value = self.metrics.get("order")
        return normalize_order(value)

    @property
    def benchmark(self) -> str | None:
        return benchmark_of(self.order)

    @property
    def seed(self) -> int | None:
        value = self.metrics.get("seed", config_get(self.config, "seed"))
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    @property
    def threshold(self) -> str | None:
        """"global" or "local" (JumpLoRA's threshold mode, §4.6)."""
        value = config_get(self.config, "threshold")
        return str(value).lower() if value is not None else None

    @property
    def update_mode(self) -> str | None:
        """"sparse" or "interp": what ELLA's penalty is computed on with JumpLoRA (§4.6)."""
        value = config_get(self.config, "ella_penalty")
        if value is None:
            return None
        text = str(value).lower()
        return "interp" if text.startswith("interp") else text

    @property
    def model(self) -> str | None:
        value = config_get(self.config, "model")
        return str(value) if value is not None else None

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
        return next((c for c in candidates if (c / CONFIG).is_file()), None)

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

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def has_updates(self) -> bool:
        return any(p is not None for p in self.update_paths)

    def update(self, index: int):
        """Task `index`'s merged update (`jumplora.updates.TaskUpdate`), loaded now; None if absent.

        Where only `supports/` has the task, a `jumplora.analysis.supports.CompactUpdate`: counts for
        every matrix, supports for one layer, no values.
        """
        path = self.update_paths[index]
        if path is None:
            return None
        if path.parent.name == SUPPORTS:
            from jumplora.analysis.supports import load_supports

            return load_supports(path)
        from jumplora.updates import TaskUpdate

        try:
            return TaskUpdate.load(path)
        except Exception as error:  # safetensors raises its own error types
            raise UserError(f"cannot read update file {path}: {error}") from None

    def loss_records(self) -> dict[str, list[dict]]:
        """losses.jsonl's per-step records, by task in step order (raises `UserError` when missing or malformed)."""
        path = self.path / LOSSES
        if not path.is_file():
            raise UserError(f"{self.path}: {LOSSES} is missing")
        by_task: dict[str, list[dict]] = {}
        for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                by_task.setdefault(str(record["task"]), []).append(record)
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}, line {line_number}: not a loss record with a 'task'") from None
        return by_task

    def updates(self) -> Iterator[tuple[int, Any]]:
        """(index, TaskUpdate) for each task that has an update file, in task order, one at a time."""
        for index, path in enumerate(self.update_paths):
            if path is not None:
                yield index, self.update(index)


# -- reading --------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise UserError(f"cannot read {path}: expected a JSON object")
    return data


def _read_config(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"cannot read {path}: {message}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"cannot read {path}: expected a mapping of options")
    return data


def _read_accuracy(path: Path) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """Header task names and (after_task, row values) of accuracy_matrix.csv."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    if not rows:
        return [], []
    header = [cell.strip() for cell in rows[0][1:]]
    body = []
    for line, row in enumerate(rows[1:], start=2):
        values = []
        for cell in row[1 : len(header) + 1]:
            cell = cell.strip()
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                raise UserError(f"{path}, line {line}: {cell!r} is not a number") from None
        values += [math.nan] * (len(header) - len(values))
        body.append((row[0].strip(), values))
    return header, body


_UPDATE_FILE = re.compile(r"^(\d+)-(.+)\.safetensors$")


def _update_files(directory: Path) -> dict[int, Path]:
    if not directory.is_dir():
        return {}
    found = {}
    for path in sorted(directory.iterdir()):
        match = _UPDATE_FILE.match(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def _tasks_from_config(config: dict) -> list[str]:
    for key in ("tasks", "task_list"):
        value = config_get(config, key)
        if isinstance(value, (list, tuple)) and value:
            return [str(t) for t in value]
    order = config_get(config, "order")
    if order is None:
        return []
    try:
        from jumplora.data.orders import resolve_order

        return list(resolve_order(order if not isinstance(order, list) else ",".join(map(str, order))))
    except Exception:  # a custom order file that is gone, an unknown name: not ours to judge
        return []


def _lookup(name: str, tasks: list[str]) -> int | None:
    """Index of a task name in the order (exact, then case-insensitive, then a 0-based number)."""
    if name in tasks:
        return tasks.index(name)
    lowered = [t.lower() for t in tasks]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    if name.isdigit() and int(name) < len(tasks):
        return int(name)
    return None


def _positions(names: list[str], tasks: list[str], what: str, path: Path) -> list[int]:
    """Where each named row/column goes: by name, or by position when no name is a task."""
    found = [_lookup(name, tasks) for name in names]
    if all(i is not None for i in found):
        return found
    if len(names) <= len(tasks) and all(i is None for i in found):
        return list(range(len(names)))
    bad = next(name for name, i in zip(names, found) if i is None)
    raise UserError(f"{path}: {what} {bad!r} is not a task of the run's order ({', '.join(tasks)})")


def load_run(path: str | Path) -> Run:
    """Read the run directory at `path`. Raises `UserError` if it is not one."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such run directory")
    if not path.is_dir():
        raise UserError(f"{path} is not a run directory (it is a file)")
    if not (path / CONFIG).is_file():
        raise UserError(f"{path} is not a run directory: {CONFIG} missing")
    saved_config = _read_config(path / CONFIG)
    config = complete_config(saved_config)
    state = _read_json(path / STATE) if (path / STATE).is_file() else {}
    metrics = _read_json(path / METRICS) if (path / METRICS).is_file() else {}
    header, body = _read_accuracy(path / ACCURACY) if (path / ACCURACY).is_file() else ([], [])
    files = _update_files(path / UPDATES)

    tasks: list[str] = []
    for source in (lambda: state.get("tasks"), lambda: metrics.get("tasks"), lambda: _tasks_from_config(config),
                   lambda: header):
        candidate = source()
        if isinstance(candidate, (list, tuple)) and candidate:
            tasks = [str(t) for t in candidate]
            break
    if not tasks and files:
        tasks = [_UPDATE_FILE.match(files[i].name).group(2) for i in sorted(files)]
    n = len(tasks)

    accuracy = np.full((n, n), np.nan)
    if header:
        columns = _positions(header, tasks, "column", path / ACCURACY)
        rows = _positions([after for after, _ in body], tasks, "row", path / ACCURACY)
        for i, (_, values) in zip(rows, body):
            accuracy[i, columns] = values

    compact = _update_files(path / SUPPORTS)
    update_paths: list[Path | None] = [files.get(i, compact.get(i)) for i in range(n)]

    evaluated_rows = int(np.sum(~np.all(np.isnan(accuracy), axis=1))) if n else 0
    if state:
        finished = bool(state.get("finished", False))
        completed = int(state.get("completed", evaluated_rows) or 0)
    else:
        finished = bool(metrics) and n > 0 and evaluated_rows == n
        completed = n if finished else evaluated_rows
    run = Run(
        path=path, config=config, tasks=tasks, accuracy=accuracy, metrics=metrics, state=state,
        update_paths=update_paths, finished=finished, completed=completed, saved_config=saved_config,
    )

    if not finished:
        missing = [name for name in (STATE, ACCURACY, METRICS) if not (path / name).is_file()]
        detail = f"; {', '.join(missing)} missing" if missing else ""
        warnings.warn(
            f"{path}: run unfinished ({completed} of {n} tasks done{detail}); using what exists",
            RunWarning, stacklevel=2,
        )
    elif not metrics:
        warnings.warn(f"{path}: {METRICS} missing; its metrics are left out", RunWarning, stacklevel=2)
    if not n:
        warnings.warn(f"{path}: no task order found (no {STATE}, {METRICS} or {ACCURACY})", RunWarning, stacklevel=2)
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
