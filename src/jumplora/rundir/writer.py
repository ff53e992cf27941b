"""Writing a run directory: progress, resuming, and the order in which a stage's files are saved.

Every file is written through `jumplora.atomic` (temporary file, fsync, rename), so a crash or
`kill -9` leaves either the old file or the new one. A stage counts as finished only once
`state.json` says so: its files are written first (`save_stage`), then the state, and only then is
what it made obsolete (the previous method state) deleted. Re-running continues after the last
finished stage; a finished run is read, never written.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from jumplora.allocator import allocator_name
from jumplora.atomic import atomic_write, atomic_write_json, atomic_write_text, is_temporary
from jumplora.config import RESULT_AFFECTING, RunConfig, with_legacy_values
from jumplora.data import DataProtocol, FolderSource, TaskData, resolve_data_dir
from jumplora.errors import ConfigError, RunDirectoryError
from jumplora.rundir import layout
from jumplora.rundir.formats import (
    RESTORE, State, TaskRecord, assemble_matrix, first_line, format_accuracy, format_config, format_losses,
    read_accuracy, read_config, read_json, read_losses, read_state,
)
from jumplora.rundir.lambda_search import LambdaSearch
from jumplora.updates import TaskUpdate


def atomic_torch_save(path: Path, value: Any) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # through a handle: a full disk raises OSError, not RuntimeError
            torch.save(value, handle)

    atomic_write(path, write)


def environment() -> dict[str, Any]:
    """environment.json: package versions, the machine, the git commit of jumplora."""
    import transformers

    import jumplora

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
            timeout=5,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "transformers": transformers.__version__, "jumplora": jumplora.__version__}
    for name in ("accelerate", "safetensors", "numpy"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return {
        "versions": versions,
        "git_commit": commit,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "malloc": allocator_name(),  # mimalloc where `jumplora run` relaunched under it (allocator.py)
        "onednn_primitive_cache": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY",
                                                 os.environ.get("DNNL_PRIMITIVE_CACHE_CAPACITY")),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def file_digests(root: Path, files: list[Path]) -> dict[str, str]:
    """sha256 of each file by its path relative to `root`: what the data are, wherever the folder is."""
    digests = {}
    for path in files:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests[Path(path).relative_to(root).as_posix()] = digest.hexdigest()
    return digests


def data_summary(data: dict[str, TaskData], protocol: DataProtocol, data_dir: Path | str | None) -> dict:
    """data.json: per task what the protocol made of it, and the sha256 of every file it read (by path
    relative to the data folder; a task list's tasks by path relative to the list's folder, and their
    entry in it: `TaskData.files`). `data_dir` is needed only for the registry's tasks."""
    folder = None

    def files(task: TaskData) -> dict[str, str]:
        nonlocal folder
        if task.files is not None:
            return dict(task.files)
        folder = folder or FolderSource(resolve_data_dir(data_dir))
        return file_digests(folder.root, folder.files_read(task.spec, task.sources.values()))

    return {
        "protocol": protocol.to_dict(),
        "tasks": {
            name: {
                "group": task.spec.group, "labels": list(task.labels), "counts": task.counts(),
                "dropped": dict(task.dropped), "sources": {k: str(v) for k, v in task.sources.items()},
                "files": files(task),
            }
            for name, task in data.items()
        },
    }


@dataclass
class Resume:
    """Where an unfinished run stands: `completed` stages, their accuracy matrices at full precision
    (by file name), the method's state after the last of them (None before the first)."""

    completed: int
    matrices: dict[str, list[list[float]]]
    method_state: dict | None = None


class RunDirectory:
    """One run's directory, written by `jumplora.train`; `open` creates it or checks that it belongs to
    the same configuration. `stages` are the method's (`Method.stages`): lists of the order's tasks."""

    def __init__(self, path: Path, config: RunConfig, tasks: list[str], stages: list[list[str]]):
        self.path = path
        self.config = config
        self.tasks = tasks
        self.stages = stages

    @classmethod
    def open(cls, config: RunConfig, tasks: list[str], stages: list[list[str]]) -> "RunDirectory":
        """The run directory of `config`, checked (created when new); an existing one is not written."""
        path = config.run_dir
        _refuse_a_file_in_the_way(path)
        saved_config = path / layout.CONFIG
        if saved_config.exists():
            _check_same_configuration(path, config)
        elif _has_entries(path):
            raise ConfigError(f"{path} exists and is not a jumplora run directory; use another --output-dir")
        run = cls(path, config, tasks, stages)
        if not saved_config.exists():
            atomic_write_text(saved_config, format_config(config.to_dict()))
        if not (path / layout.STATE).exists():  # new, or killed between config.yaml and state.json
            run.mark_completed(0)
        state = run.state
        if state.tasks != tasks:  # the same `order` value, but an order file whose tasks changed
            raise ConfigError(f"{path} holds a run of the tasks {state.tasks}, the order now gives {tasks}; "
                              "use another --output-dir")
        return run

    def begin_attempt(self) -> None:
        """Once everything is checked, before the work: drop what a killed attempt left half-written,
        record this attempt's environment."""
        self.remove_temporary_files()
        self.remove_finished_search_updates()
        atomic_write_json(self.path / layout.ENVIRONMENT, environment())

    def stage_name(self, index: int) -> str:
        return layout.stage_name(self.stages[index])

    # progress --------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return read_state(self.path / layout.STATE, RESTORE)

    @property
    def completed(self) -> int:
        return self.state.completed

    @property
    def finished(self) -> bool:
        return self.state.finished

    def mark_completed(self, count: int, finished: bool = False) -> None:
        atomic_write_json(self.path / layout.STATE, State(self.tasks, count, finished, self.stages).to_json())

    def resume_point(self, matrix_files: list[str]) -> Resume:
        """Read what the finished stages left, before any model is loaded: their task records, the
        accuracies at full precision, the method's state; check their updates and loss records."""
        done = self.completed
        if done > len(self.stages):
            raise RunDirectoryError(
                f"{self.path}: state.json says {done} tasks are done, the order has {len(self.stages)}")
        records = [self.read_task_record(i) for i in range(done)]
        for index in range(done):
            self.check_update(index)
        self.check_losses(records)
        matrices = {name: self.read_matrix(records, name) for name in matrix_files}
        state = self.load_method_state(done - 1) if done else None
        return Resume(done, matrices, state)

    # a finished stage ---------------------------------------------------------------------------
    def save_stage(self, index: int, update: TaskUpdate, method_state: dict, matrices: dict[str, list[list[float]]],
                   losses: list[dict], record: TaskRecord) -> None:
        """Every file of stage `index` first, then state.json (the stage counts as done only then), then
        the deletion of what that made obsolete: a kill between any two leaves a resumable run."""
        update.save(self.update_path(index))
        self.save_method_state(index, method_state)
        for name, matrix in matrices.items():
            self.write_accuracy_matrix(matrix, name)
        self.append_losses(losses, finished=[self.stage_name(i) for i in range(index)])
        atomic_write_json(self.task_record_path(index), record.to_json())
        self.mark_completed(index + 1)
        self.remove_obsolete_method_states(index)
        self.remove_finished_search_updates()

    def finish(self, metrics: dict) -> None:
        """metrics.json, then the state that says the run is finished."""
        atomic_write_json(self.path / layout.METRICS, metrics)
        self.mark_completed(len(self.stages), finished=True)

    def finished_result(self) -> tuple[list[list[float]], dict]:
        """A finished run's accuracy matrix (full precision) and metrics, as its files hold them."""
        records = [self.read_task_record(i) if self.task_record_path(i).is_file() else None
                   for i in range(len(self.stages))]
        matrix = self.read_matrix(records, layout.ACCURACY)
        return matrix, read_json(self.path / layout.METRICS, RESTORE)

    # updates and method states -------------------------------------------------------------------
    def update_path(self, index: int) -> Path:
        return layout.update_path(self.path, index, self.stage_name(index))

    def check_update(self, index: int) -> None:
        """That the update file is there and whole (its header matches its size), without reading it."""
        from safetensors import safe_open

        path = self.update_path(index)
        if not path.is_file():
            raise RunDirectoryError(f"cannot resume, {path} is missing; {RESTORE}")
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as error:  # safetensors raises its own SafetensorError
            raise RunDirectoryError(f"{path} is damaged ({first_line(error)}); {RESTORE}") from None

    def load_update(self, index: int) -> TaskUpdate:
        path = self.update_path(index)
        try:
            return TaskUpdate.load(path)
        except Exception as error:  # safetensors, json (metadata) and key errors alike: the file is bad
            raise RunDirectoryError(f"{path} is damaged ({first_line(error)}); {RESTORE}") from None

    def method_state_path(self, index: int) -> Path:
        return layout.method_state_path(self.path, index)

    def save_method_state(self, index: int, state: dict) -> None:
        """Write the state after stage `index`; the older one stays until state.json has moved on
        (`remove_obsolete_method_states`), since resuming before then needs it."""
        atomic_torch_save(self.method_state_path(index), state)

    def load_method_state(self, index: int) -> dict:
        path = self.method_state_path(index)
        if not path.is_file():
            raise RunDirectoryError(f"cannot resume, {path} is missing; {RESTORE}")
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # a damaged zip or pickle raises any of several types
            raise RunDirectoryError(f"{path} is damaged ({first_line(error)}); {RESTORE}") from None

    def remove_obsolete_method_states(self, index: int) -> None:
        """Drop the states before stage `index`: call only once state.json records stage `index` done.
        Resuming needs only the latest, and states such as ELLA's W_past are as large as the adapted matrices."""
        for older in (self.path / layout.METHOD_STATE).glob("*.pt"):
            if older.stem.isdigit() and int(older.stem) < index:
                older.unlink(missing_ok=True)

    def lambda_search(self, index: int, grid: list[float]) -> LambdaSearch:
        """Stage `index`'s λ search record (`--ella-lambda search`), to read and to add candidates to."""
        return LambdaSearch(self.path, index, self.stage_name(index), grid)

    def remove_finished_search_updates(self) -> None:
        """The candidates' updates of the stages state.json records done: their λ is chosen, the chosen
        update is in updates/ (their records stay)."""
        for index in range(min(self.completed, len(self.stages))):
            folder = layout.lambda_search_folder(self.path, index, self.stage_name(index))
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)

    def remove_temporary_files(self) -> None:
        """Temporary files a killed process left (never read: their rename did not happen)."""
        for path in self.path.rglob(".*"):
            if is_temporary(path) and path.is_file():
                path.unlink(missing_ok=True)

    # task records and accuracies ---------------------------------------------------------------------
    def task_record_path(self, index: int) -> Path:
        return layout.task_record_path(self.path, index, self.stage_name(index))

    def read_task_record(self, index: int) -> TaskRecord:
        path = self.task_record_path(index)
        return TaskRecord.from_json(read_json(path, RESTORE), path, RESTORE)

    def write_accuracy_matrix(self, matrix: list[list[float]], name: str = layout.ACCURACY) -> None:
        """The CSV is for people: two decimals. Resuming reads the task records' full precision."""
        atomic_write_text(self.path / name, format_accuracy(self.tasks, matrix))

    def read_matrix(self, records: list[TaskRecord | None], name: str) -> list[list[float]]:
        """The matrix of the finished stages at full precision (`formats.assemble_matrix`)."""
        return assemble_matrix(
            self.tasks, self.stages[: len(records)], records,
            [self.task_record_path(i) for i in range(len(records))],
            lambda: read_accuracy(self.path / name, self.tasks, RESTORE),
            rank=name == layout.ACCURACY_RANK, hint=RESTORE,
        )

    # losses ------------------------------------------------------------------------------------
    def read_losses(self) -> list[dict]:
        return read_losses(self.path / layout.LOSSES, RESTORE)

    def check_losses(self, records: list[TaskRecord]) -> None:
        """Each finished stage logged one line per optimiser step (its task record counts them)."""
        counts: dict[str, int] = {}
        for loss in self.read_losses():
            counts[loss["task"]] = counts.get(loss["task"], 0) + 1
        for record in records:
            if counts.get(record.name, 0) != record.steps:
                raise RunDirectoryError(
                    f"{self.path / layout.LOSSES} is damaged ({counts.get(record.name, 0)} lines for {record.name}, "
                    f"which took {record.steps} steps); {RESTORE}"
                )

    def append_losses(self, records: list[dict[str, Any]], finished: list[str]) -> None:
        """Rewrite losses.jsonl with the lines of the `finished` stages plus `records`.

        Dropping the lines of stages past the last finished one discards what an interrupted
        attempt logged, so a resumed run's log equals an uninterrupted one's.
        """
        kept = [r for r in self.read_losses() if r["task"] in set(finished)]
        atomic_write_text(self.path / layout.LOSSES, format_losses(kept + list(records)))

    # data ----------------------------------------------------------------------------------------
    def record_data(self, summary: dict) -> None:
        """Write data.json (`data_summary`); once stages are finished, check it instead: the data must be
        the same files (by content: a moved folder is fine), or the remaining stages would train on
        other data."""
        path = self.path / layout.DATA
        if path.exists() and self.completed:
            previous = read_json(path, RESTORE)
            changed = _changed_files(previous, summary)
            if changed:
                raise ConfigError(
                    f"{self.path} was begun on other data: {', '.join(changed)} changed since its finished "
                    "tasks read them (data.json); resume with the data it began with, or use another --output-dir"
                )
            if changed is not None:
                # the same data: keep the record of where the run first read them, adding the tasks it
                # lacks (an extension's data.json is its source's: `jumplora.rundir.extension`)
                added = {task: entry for task, entry in summary["tasks"].items() if task not in previous["tasks"]}
                if added:
                    atomic_write_json(path, {**previous, "tasks": {**previous["tasks"], **added}})
                return
        atomic_write_json(path, summary)


class FollowerRunDirectory(RunDirectory):
    """The run directory as a process other than the main one sees it in a data-parallel run
    (`jumplora.distributed`): opened once the main process has created or checked it, it reads what
    that process wrote (the state to resume from, the finished stages) and writes nothing."""

    @classmethod
    def open(cls, config: RunConfig, tasks: list[str], stages: list[list[str]]) -> "FollowerRunDirectory":
        path = config.run_dir
        if not (path / layout.STATE).is_file():
            raise RunDirectoryError(f"{path / layout.STATE} is missing: the main process did not open the run "
                                    "directory before this one")
        return cls(path, config, tasks, stages)

    # every way RunDirectory writes or deletes, made a no-op
    def begin_attempt(self) -> None:
        pass

    def mark_completed(self, count: int, finished: bool = False) -> None:
        pass

    def record_data(self, summary: dict) -> None:
        pass

    def save_stage(self, index, update, method_state, matrices, losses, record) -> None:
        pass

    def finish(self, metrics: dict) -> None:
        pass

    def save_method_state(self, index: int, state: dict) -> None:
        pass

    def remove_obsolete_method_states(self, index: int) -> None:
        pass

    def remove_temporary_files(self) -> None:
        pass

    def write_accuracy_matrix(self, matrix, name: str = layout.ACCURACY) -> None:
        pass

    def append_losses(self, records, finished) -> None:
        pass


def _refuse_a_file_in_the_way(path: Path) -> None:
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "is" if folder == path else f"is under {folder}, which is"
                raise ConfigError(f"--output-dir {path} {where} a file, not a folder; choose another")
            return


def _has_entries(path: Path) -> bool:
    """Whether `path` holds anything but the temporary file of a config.yaml a killed run was writing."""
    try:
        return path.exists() and any(not is_temporary(entry) for entry in path.iterdir())
    except OSError as error:
        raise ConfigError(f"cannot read --output-dir {path}: {error.strerror or error}") from None


def _check_same_configuration(path: Path, config: RunConfig) -> None:
    previous = with_legacy_values(read_config(path / layout.CONFIG))
    differences = [
        f"{key}: {previous.get(key)!r} -> {getattr(config, key)!r}"
        for key in RESULT_AFFECTING
        if same_value(previous.get(key), key) != same_value(getattr(config, key), key)
    ]
    if differences:
        raise ConfigError(
            f"{path} holds a run with a different configuration ({'; '.join(differences)}); "
            "use another --output-dir or the same options"
        )


def _changed_files(previous: Any, summary: dict) -> list[str] | None:
    """Files whose content differs from data.json's record (`task: file`); None when the record has
    no digests (a run directory written before them: nothing to check against). A task the record
    lacks is not compared."""
    old_tasks = previous.get("tasks") if isinstance(previous, dict) else None
    if not isinstance(old_tasks, dict):
        return None
    changed = []
    for task, entry in summary["tasks"].items():
        if task not in old_tasks:
            continue  # a task the record does not know yet (an extension's added task): nothing to compare
        old = old_tasks[task].get("files") if isinstance(old_tasks[task], dict) else None
        if not isinstance(old, dict):
            return None
        new = entry["files"]
        changed += [f"{task}: {name}" for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
    return changed


def same_value(value: Any, key: str = "") -> Any:
    """A value as compared across a YAML round trip (tuples vs lists, ints vs floats, method case)."""
    if key == "method" and isinstance(value, str):
        return value.strip().lower()  # directories written before names were normalised
    if isinstance(value, (list, tuple)):
        return [same_value(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


__all__ = ["FollowerRunDirectory", "Resume", "RunDirectory", "atomic_torch_save", "data_summary", "environment",
           "file_digests"]
