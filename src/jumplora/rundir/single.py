"""The `single` run that gives FWT its a_0,i: each task trained alone, with the run's model and scale.

`--single-dir` names one (anything wrong with it is a `ConfigError`); else the run directories next
to the output directory are looked through, and one that cannot be read is skipped with a warning:
a neighbour never breaks a run. "The same scale" is every option whose role is scale or seed
(`jumplora.config.SCALE_KEYS`).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from jumplora.config import SCALE_KEYS, RunConfig, with_legacy_values
from jumplora.errors import ConfigError, RunDirectoryError
from jumplora.rundir import layout
from jumplora.rundir.formats import TaskRecord, assemble_matrix, first_line, read_accuracy, read_config, read_json
from jumplora.rundir.formats import read_state
from jumplora.rundir.writer import same_value


class RunDirectoryWarning(UserWarning):
    """Something next to or inside a run directory was skipped (a broken neighbour folder)."""


class _NotUsable(Exception):
    """Why a folder gives no a_0,i; `broken` when it claims to be a run directory and is not readable."""

    def __init__(self, reason: str, broken: bool):
        super().__init__(reason)
        self.reason, self.broken = reason, broken


def find_single_run(config: RunConfig, run_path: Path) -> tuple[dict | None, str | None]:
    """a_0,i by task name from a finished `single` run of the same model, scale and seed, and its folder."""
    mine = config.to_dict()
    if config.single_dir:
        folder = Path(config.single_dir)
        try:
            return _single_diagonal(folder, mine), str(folder)
        except _NotUsable as why:
            raise ConfigError(f"--single-dir {folder} {why.reason}") from None
    here = run_path.resolve()
    try:
        neighbours = sorted(here.parent.iterdir())
    except OSError as error:
        warnings.warn(f"FWT: cannot list {here.parent} ({error.strerror or error}); FWT is left out",
                      RunDirectoryWarning, stacklevel=2)
        return None, None
    for folder in neighbours:
        try:
            if folder == here or not layout.is_run_directory(folder):
                continue
            return _single_diagonal(folder, mine), str(folder)
        except _NotUsable as why:
            if why.broken:
                warnings.warn(f"FWT: skipped {folder}: it {why.reason}", RunDirectoryWarning, stacklevel=2)
        except OSError as error:
            warnings.warn(f"FWT: skipped {folder}: {error.strerror or error}", RunDirectoryWarning, stacklevel=2)
    return None, None


def _single_diagonal(folder: Path, mine: dict) -> dict[str, float]:
    try:
        other = with_legacy_values(read_config(folder / layout.CONFIG))
        state = read_state(folder / layout.STATE)
    except RunDirectoryError as error:
        raise _NotUsable(f"is not a readable run directory ({error})", broken=True) from None
    if same_value(other.get("method"), "method") != "single":
        raise _NotUsable("is not a 'single' run", broken=False)
    if any(same_value(other.get(k)) != same_value(mine.get(k)) for k in SCALE_KEYS):
        raise _NotUsable("was run with another model, scale or seed", broken=False)
    if not state.finished:
        raise _NotUsable("is not a finished run directory", broken=False)
    return _diagonal(folder, state.tasks)


def _diagonal(folder: Path, tasks: list[str]) -> dict[str, float]:
    """a_i,i of a single run at full precision (its task records), else from its CSV."""
    stages = [[task] for task in tasks]  # a single run trains each task alone
    paths = [layout.task_record_path(folder, i, task) for i, task in enumerate(tasks)]
    try:
        records = [TaskRecord.from_json(read_json(path), path) if path.is_file() else None for path in paths]
        matrix = assemble_matrix(tasks, stages, records, paths,
                                 lambda: read_accuracy(folder / layout.ACCURACY, tasks))
    except RunDirectoryError as error:
        raise _NotUsable(f"has unreadable accuracies ({first_line(error)})", broken=True) from None
    diagonal = {task: matrix[i][i] for i, task in enumerate(tasks)}
    missing = [task for task, value in diagonal.items() if math.isnan(value)]
    if missing:
        raise _NotUsable(f"has no accuracy for {', '.join(missing)}", broken=True)
    return diagonal
