"""An extension: a new run directory that continues a finished run with further tasks.

The new directory begins as a copy of what the source run's finished stages left (their task
records, updates and loss lines, the method state after the last of them, data.json), with a
config.yaml of the full order and a state.json that counts those stages done. From there it is an
ordinary unfinished run: the training loop's resume logic restores the model (base + the stored
updates) and the method state (ELLA's W_past, EWC's Fisher, ...) and trains the added tasks. Since
every stage draws from seeds of (seed, task name) and the data from (seed, task), the extension
trains and evaluates what the uninterrupted run of the full order would.

The source is only read. The copy is made in a temporary folder beside the new directory and
renamed into place: a kill leaves no half-made extension (at worst a hidden `.NAME.*.tmp` folder).
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from jumplora.atomic import atomic_write, atomic_write_json, atomic_write_text, folder_built_aside, is_temporary
from jumplora.config import RESULT_AFFECTING, RunConfig, with_legacy_values
from jumplora.ella_lambdas import PAPER_GRID, is_search, lambdas_for
from jumplora.errors import ConfigError
from jumplora.rundir import layout
from jumplora.rundir.formats import State, format_accuracy, format_config, read_config
from jumplora.rundir.reader import Run, RunWarning, load_run
from jumplora.rundir.writer import RunDirectory, same_value

# compared with an allowance, not by value: ELLA's λ of the added tasks is new (`same_lambdas`)
_PER_TASK = ("ella_lambda",)


@dataclass
class Source:
    """The finished run an extension continues: its directory as read, its number of stages."""

    run: Run

    @property
    def path(self) -> Path:
        return Path(self.run.path)

    @property
    def tasks(self) -> list[str]:
        return list(self.run.tasks)


def read_source(path: str | os.PathLike) -> Source:
    """The run to extend; refuses what is not a finished run directory."""
    path = Path(path)
    if not layout.is_run_directory(path):
        raise ConfigError(f"--continue-from {path} is not a run directory (no {layout.CONFIG})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunWarning)  # an unfinished run is refused below, in one line
        run = load_run(path)
    if not run.finished:
        raise ConfigError(f"--continue-from {path}: the run is not finished ({run.completed} of {len(run.stages)} "
                          "tasks done); finish it first (re-run its command), then extend it")
    return Source(run)


def option_flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def check_extension(config: RunConfig, source: Source) -> None:
    """That `config` continues `source`: its order begins with the source's tasks and adds new ones,
    every option that changes results is the source's, the method trains one task per stage, and the
    source kept what resuming needs (every update, the last method state)."""
    tasks, old = config.task_list, source.tasks
    if tasks[: len(old)] != old or len(tasks) == len(old):
        raise ConfigError(f"order {config.order!r} does not extend {source.path}'s order {','.join(old)}: give "
                          "--order +TASK,... (or the run's tasks followed by the new ones)")
    if config.method_name.strategy == "mtl":
        raise ConfigError(f"--continue-from {source.path}: mtl trains every task in one stage; a multi-task run "
                          "cannot be extended (train the full order with mtl instead)")
    saved = source.run.config
    for key in RESULT_AFFECTING:
        if key == "order" or key in _PER_TASK:
            continue
        if same_value(getattr(config, key), key) != same_value(saved.get(key), key):
            raise ConfigError(f"{option_flag(key)} {getattr(config, key)!r} differs from {source.path}'s "
                              f"{saved.get(key)!r}; an extension keeps every option of the run it extends but the order")
    searched = is_search(saved.get("ella_lambda")) or is_search(config.ella_lambda)
    if config.method_name.strategy == "ella" and searched and not same_lambdas(config, saved, len(old)):
        raise ConfigError(f"--ella-lambda {config.ella_lambda!r}: {source.path} chose λ by "
                          f"{saved.get('ella_lambda')!r}; an extension of a searched run searches too, with the same "
                          "--ella-lambda-grid, and a run with given λ keeps them")
    if not same_lambdas(config, saved, len(old)):
        raise ConfigError(f"--ella-lambda {config.ella_lambda!r} gives the tasks of {source.path} other values than "
                          f"its {saved.get('ella_lambda')!r}; keep theirs and add one per new task")
    for stage in source.run.stages:
        if not layout.update_path(source.path, stage.index, stage.name).is_file():
            raise ConfigError(f"--continue-from {source.path}: the update of task {stage.name!r} was deleted or "
                              "compacted; an extension restores the model from every stored update")
    if not layout.method_state_path(source.path, len(old) - 1).is_file():
        raise ConfigError(f"--continue-from {source.path}: {layout.method_state_path(source.path, len(old) - 1)} "
                          "is missing; an extension continues from the method state after its last task")


def same_lambdas(config: RunConfig, saved: dict, n_old: int) -> bool:
    """ELLA's λ of the source's tasks unchanged (the added tasks have their own); other methods ignore it."""
    if config.method_name.strategy != "ella":
        return same_value(config.ella_lambda) == same_value(saved.get("ella_lambda"))
    if is_search(saved.get("ella_lambda")) or is_search(config.ella_lambda):
        # a searched run's tasks have no λ to repeat: its extension searches the added tasks alike
        return (is_search(saved.get("ella_lambda")) and is_search(config.ella_lambda)
                and same_value(saved.get("ella_lambda_grid", PAPER_GRID)) == same_value(config.ella_lambda_grid))
    row = {"threshold_mode": saved.get("threshold_mode", saved.get("threshold", "global")),
           "penalty": saved.get("ella_penalty", "sparse"), "gated": config.gated}  # Table 8's row
    before = lambdas_for(saved.get("ella_lambda"), str(saved.get("order")), n_old, **row)
    after = lambdas_for(config.ella_lambda, config.order, len(config.task_list), **row)
    return [float(v) for v in after[:n_old]] == [float(v) for v in before]


def prepare_extension(config: RunConfig, stages: list[list[str]]) -> None:
    """Before the run directory opens: a new or empty `config.run_dir` becomes a copy of the source's
    finished stages; one that holds a run must be an extension of the same source (it then resumes as
    any run). Anything else is refused, and the source is only read."""
    path = config.run_dir
    source_path = Path(config.continue_from)
    if (path / layout.CONFIG).is_file():
        recorded = with_legacy_values(read_config(path / layout.CONFIG)).get("continue_from")
        if not recorded or not _same_path(recorded, source_path):
            raise ConfigError(f"--output-dir {path} holds a run that is not an extension of {source_path}; use "
                              "another --output-dir")
        return  # an extension begun before: the run directory checks the rest, as on any resume
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--output-dir {path} is a file, not a folder; choose another")
    if path.exists() and any(not is_temporary(entry) for entry in path.iterdir()):
        raise ConfigError(f"--output-dir {path} exists and is not empty; an extension begins in a new or empty "
                          "folder")
    if _same_path(path, source_path) or source_path.resolve() in path.resolve().parents:
        raise ConfigError(f"--output-dir {path} is inside {source_path}; the run extended is never written")
    source = read_source(source_path)
    check_extension(config, source)
    copy_finished_stages(config, source, stages)


def copy_finished_stages(config: RunConfig, source: Source, stages: list[list[str]]) -> Path:
    """Make `config.run_dir` the source's finished stages under the full order, not yet finished."""
    path, src, tasks = config.run_dir, source.path, config.task_list
    done = len(source.run.stages)
    fail = lambda reason: ConfigError(f"cannot create --output-dir {path}: {reason}")  # noqa: E731
    with folder_built_aside(path, fail) as tmp:  # an empty `path` is replaced
        for index, stage in enumerate(source.run.stages):
            _copy(layout.task_record_path(src, index, stage.name), layout.task_record_path(tmp, index, stage.name))
            _copy(layout.update_path(src, index, stage.name), layout.update_path(tmp, index, stage.name))
        _copy(layout.method_state_path(src, done - 1), layout.method_state_path(tmp, done - 1))
        for name in (layout.LOSSES, layout.DATA):  # data.json: resuming checks the old tasks' data against it
            if (src / name).is_file():
                _copy(src / name, tmp / name)
        for name, matrix in _source_matrices(config, source).items():
            padded = [row + [math.nan] * (len(tasks) - len(row)) for row in matrix]
            padded += [[math.nan] * len(tasks) for _ in range(len(tasks) - len(matrix))]
            atomic_write_text(tmp / name, format_accuracy(tasks, padded))
        atomic_write_json(tmp / layout.STATE, State(tasks, done, False, stages).to_json())
        atomic_write_text(tmp / layout.CONFIG, format_config(config.to_dict()))
    return path


def _source_matrices(config: RunConfig, source: Source) -> dict[str, list[list[float]]]:
    """The source's accuracy matrices at full precision (task records; the CSV where a record lacks them)."""
    run = source.run
    reader = RunDirectory(source.path, config, source.tasks, [list(stage.tasks) for stage in run.stages])
    records = [reader.read_task_record(i) for i in range(len(run.stages))]
    names = [layout.ACCURACY] + ([layout.ACCURACY_RANK] if config.eval_mode == "both" else [])
    return {name: reader.read_matrix(records, name) for name in names}


def _copy(source: Path, target: Path) -> None:
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


def _same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return Path(a).resolve() == Path(b).resolve()


__all__ = ["Source", "check_extension", "copy_finished_stages", "prepare_extension", "read_source", "same_lambdas"]
