"""The run directory (docs/run-directory.md): atomic writes, progress and resuming.

Every file is written through `jumplora.atomic` (temporary file, fsync, rename), so a crash or
`kill -9` leaves either the old file or the new one. A task counts as finished only once
`state.json` says so: its files are written first, then the state, and only then is what it made
obsolete (the previous method state) deleted. Re-running continues after the last finished task; a
finished run is read, never written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from jumplora.atomic import atomic_write, atomic_write_json, atomic_write_text, is_temporary
from jumplora.config import RESULT_AFFECTING, RunConfig, read_yaml, with_legacy_values
from jumplora.errors import ConfigError, RunDirectoryError

__all__ = ["RunDirectory", "Resume", "atomic_torch_save", "atomic_write_json", "atomic_write_text",
           "environment", "file_digests", "find_single_run", "task_stem"]


class RunDirectoryWarning(UserWarning):
    """Something next to or inside a run directory was skipped (a broken neighbour folder)."""


def atomic_torch_save(path: Path, value: Any) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # through a handle: a full disk raises OSError, not RuntimeError
            torch.save(value, handle)

    atomic_write(path, write)


def environment() -> dict[str, Any]:
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
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def task_stem(index: int, task: str) -> str:
    return f"{index:02d}-{task}"


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


@dataclass
class Resume:
    """Where an unfinished run stands: `completed` stages, their accuracy matrices at full precision,
    the method's state after the last of them (None before the first)."""

    completed: int
    matrices: dict[str, list[list[float]]]
    method_state: dict | None = None


class RunDirectory:
    """One run's directory; `open` creates it or checks that it belongs to the same configuration."""

    def __init__(self, path: Path, config: RunConfig, tasks: list[str]):
        self.path = path
        self.config = config
        self.tasks = tasks

    @classmethod
    def open(cls, config: RunConfig, tasks: list[str]) -> "RunDirectory":
        """The run directory of `config`, checked (created when new); an existing one is not written."""
        path = config.run_dir
        _refuse_a_file_in_the_way(path)
        saved_config = path / "config.yaml"
        if saved_config.exists():
            _check_same_configuration(path, config)
        elif _has_entries(path):
            raise ConfigError(f"{path} exists and is not a jumplora run directory; use another --output-dir")
        run = cls(path, config, tasks)
        if not saved_config.exists():
            atomic_write_text(saved_config, yaml.safe_dump(config.to_dict(), sort_keys=False))
        if not (path / "state.json").exists():  # new, or killed between config.yaml and state.json
            run.mark_completed(0)
        state = run.state
        if state["tasks"] != tasks:  # the same `order` value, but an order file whose tasks changed
            raise ConfigError(f"{path} holds a run of the tasks {state['tasks']}, the order now gives {tasks}; "
                              "use another --output-dir")
        return run

    def begin_attempt(self) -> None:
        """Once everything is checked, before the work: drop what a killed attempt left half-written,
        record this attempt's environment."""
        self.remove_temporary_files()
        atomic_write_json(self.path / "environment.json", environment())

    # reading ---------------------------------------------------------------------------------
    def read_json(self, name: str | Path) -> Any:
        """A JSON file of the run (a name in it, or a path); missing or damaged: a one-line error naming it."""
        path = name if isinstance(name, Path) else self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirectoryError(f"{path} is missing; {_RESTORE}") from None
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise RunDirectoryError(f"{path} is damaged ({_first_line(error)}); {_RESTORE}") from None

    # progress --------------------------------------------------------------------------------
    @property
    def state(self) -> dict[str, Any]:
        state = self.read_json("state.json")
        ok = (isinstance(state, dict) and isinstance(state.get("tasks"), list)
              and isinstance(state.get("completed"), int) and isinstance(state.get("finished"), bool)
              and 0 <= state["completed"] <= len(state["tasks"]))
        if not ok:
            raise RunDirectoryError(f"{self.path / 'state.json'} is damaged (not a jumplora state); {_RESTORE}")
        return state

    @property
    def completed(self) -> int:
        return self.state["completed"]

    @property
    def finished(self) -> bool:
        return self.state["finished"]

    def mark_completed(self, count: int, finished: bool = False) -> None:
        atomic_write_json(self.path / "state.json", {"tasks": self.tasks, "completed": count, "finished": finished})

    def resume_point(self, stages: list[list[str]], matrix_files: list[str]) -> Resume:
        """Read what the finished stages left, before any model is loaded: their task records, the
        accuracies at full precision, the method's state; check their updates and loss records."""
        done = self.completed
        if done > len(stages):
            raise RunDirectoryError(f"{self.path}: state.json says {done} tasks are done, the order has {len(stages)}")
        records = [self.read_task_record(i, "+".join(stages[i])) for i in range(done)]
        for index in range(done):
            self.check_update(index, "+".join(stages[index]))
        self.check_losses(stages[:done], records)
        matrices = {name: self.read_matrix(stages, records, name) for name in matrix_files}
        state = self.load_method_state(done - 1) if done else None
        return Resume(done, matrices, state)

    # files ----------------------------------------------------------------------------------
    def update_path(self, index: int, task: str) -> Path:
        return self.path / "updates" / f"{task_stem(index, task)}.safetensors"

    def check_update(self, index: int, task: str) -> None:
        """That the update file is there and whole (its header matches its size), without reading it."""
        from safetensors import safe_open

        path = self.update_path(index, task)
        if not path.is_file():
            raise RunDirectoryError(f"cannot resume, {path} is missing; {_RESTORE}")
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as error:  # safetensors raises its own SafetensorError
            raise RunDirectoryError(f"{path} is damaged ({_first_line(error)}); {_RESTORE}") from None

    def load_update(self, index: int, task: str):
        from jumplora.updates import TaskUpdate

        path = self.update_path(index, task)
        try:
            return TaskUpdate.load(path)
        except Exception as error:  # safetensors, json (metadata) and key errors alike: the file is bad
            raise RunDirectoryError(f"{path} is damaged ({_first_line(error)}); {_RESTORE}") from None

    def method_state_path(self, index: int) -> Path:
        return self.path / "method_state" / f"{index:02d}.pt"

    def save_method_state(self, index: int, state: dict) -> None:
        """Write the state after task `index`; the older one stays until state.json has moved on
        (`remove_obsolete_method_states`), since resuming before then needs it."""
        atomic_torch_save(self.method_state_path(index), state)

    def load_method_state(self, index: int) -> dict:
        path = self.method_state_path(index)
        if not path.is_file():
            raise RunDirectoryError(f"cannot resume, {path} is missing; {_RESTORE}")
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # a damaged zip or pickle raises any of several types
            raise RunDirectoryError(f"{path} is damaged ({_first_line(error)}); {_RESTORE}") from None

    def remove_obsolete_method_states(self, index: int) -> None:
        """Drop the states before task `index`: call only once state.json records task `index` done.
        Resuming needs only the latest, and states such as ELLA's W_past are as large as the adapted matrices."""
        for older in (self.path / "method_state").glob("*.pt"):
            if older.stem.isdigit() and int(older.stem) < index:
                older.unlink(missing_ok=True)

    def remove_temporary_files(self) -> None:
        """Temporary files a killed process left (never read: their rename did not happen)."""
        for path in self.path.rglob(".*"):
            if is_temporary(path) and path.is_file():
                path.unlink(missing_ok=True)

    def task_record_path(self, index: int, task: str) -> Path:
        return self.path / "tasks" / f"{task_stem(index, task)}.json"

    def read_task_record(self, index: int, task: str) -> dict:
        path = self.task_record_path(index, task)
        record = self.read_json(path)
        if not isinstance(record, dict):
            raise RunDirectoryError(f"{path} is damaged (not a task record); {_RESTORE}")
        return record

    # accuracies ------------------------------------------------------------------------------
    def write_accuracy_matrix(self, matrix: list[list[float]], name: str = "accuracy_matrix.csv") -> None:
        """The CSV is for people: two decimals. Resuming reads the task records' full precision."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["after_task", *self.tasks])
        for task, row in zip(self.tasks, matrix):
            writer.writerow([task, *("" if math.isnan(v) else f"{v:.2f}" for v in row)])
        atomic_write_text(self.path / name, buffer.getvalue())

    def read_accuracy_matrix(self, name: str = "accuracy_matrix.csv") -> list[list[float]]:
        """The CSV's matrix (two decimals), NaN where a cell is empty or the file is missing."""
        n = len(self.tasks)
        matrix = [[math.nan] * n for _ in range(n)]
        path = self.path / name
        if not path.exists():
            return matrix
        try:
            rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))[1:]
            for i, row in enumerate(rows[:n]):
                matrix[i] = [float(v) if v != "" else math.nan for v in row[1:]]
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as error:
            raise RunDirectoryError(f"{path} is damaged ({_first_line(error)})") from None
        return matrix

    def read_matrix(self, stages: list[list[str]], records: list[dict], name: str) -> list[list[float]]:
        """The matrix of the finished stages at full precision, from their task records; a record
        without the accuracies (none written so far) falls back on the CSV's row."""
        n = len(self.tasks)
        matrix = [[math.nan] * n for _ in range(n)]
        key = "accuracy_rank" if name == "accuracy_matrix_rank.csv" else "accuracy"
        rounded = None
        for index, (stage, record) in enumerate(zip(stages, records)):
            row = self.tasks.index(stage[-1])
            accuracies = record.get(key)
            if not isinstance(accuracies, dict):
                rounded = rounded or self.read_accuracy_matrix(name)
                matrix[row] = list(rounded[row])
                continue
            try:
                for task, value in accuracies.items():
                    matrix[row][self.tasks.index(task)] = float(value)
            except (ValueError, TypeError) as error:
                path = self.task_record_path(index, "+".join(stage))
                raise RunDirectoryError(f"{path} is damaged ({_first_line(error)}); {_RESTORE}") from None
        return matrix

    # losses ------------------------------------------------------------------------------------
    def read_losses(self) -> list[dict]:
        path = self.path / "losses.jsonl"
        if not path.exists():
            return []
        try:
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
            records = [json.loads(line) for line in lines]
            if not all(isinstance(r, dict) and "task" in r for r in records):
                raise ValueError("a line without its task")
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise RunDirectoryError(f"{path} is damaged ({_first_line(error)}); {_RESTORE}") from None
        return records

    def check_losses(self, stages: list[list[str]], records: list[dict]) -> None:
        """Each finished stage logged one line per optimiser step (its task record counts them)."""
        counts: dict[str, int] = {}
        for loss in self.read_losses():
            counts[loss["task"]] = counts.get(loss["task"], 0) + 1
        for stage, record in zip(stages, records):
            name = "+".join(stage)
            if isinstance(record.get("steps"), int) and counts.get(name, 0) != record["steps"]:
                raise RunDirectoryError(
                    f"{self.path / 'losses.jsonl'} is damaged ({counts.get(name, 0)} lines for {name}, "
                    f"which took {record['steps']} steps); {_RESTORE}"
                )

    def append_losses(self, records: list[dict[str, Any]], finished: list[str]) -> None:
        """Rewrite losses.jsonl with the lines of the `finished` stages plus `records`.

        Dropping the lines of stages past the last finished one discards what an interrupted
        attempt logged, so a resumed run's log equals an uninterrupted one's.
        """
        kept = [json.dumps(r) for r in self.read_losses() if r["task"] in set(finished)]
        lines = kept + [json.dumps(r) for r in records]
        atomic_write_text(self.path / "losses.jsonl", "\n".join(lines) + ("\n" if lines else ""))

    # data ----------------------------------------------------------------------------------------
    def record_data(self, summary: dict) -> None:
        """Write data.json; once tasks are finished, check it instead: the data must be the same files
        (by content: a moved folder is fine), or the remaining tasks would train on other data."""
        path = self.path / "data.json"
        if path.exists() and self.completed:
            changed = _changed_files(self.read_json("data.json"), summary)
            if changed:
                raise ConfigError(
                    f"{self.path} was begun on other data: {', '.join(changed)} changed since its finished "
                    "tasks read them (data.json); resume with the data it began with, or use another --output-dir"
                )
            if changed is not None:
                return  # the same data: keep the record of where the run first read them
        atomic_write_json(path, summary)


_RESTORE = "restore it, or start afresh with another --output-dir"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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
    previous = with_legacy_values(read_yaml(path / "config.yaml"))
    differences = [
        f"{key}: {previous.get(key)!r} -> {getattr(config, key)!r}"
        for key in RESULT_AFFECTING
        if _normal(previous.get(key), key) != _normal(getattr(config, key), key)
    ]
    if differences:
        raise ConfigError(
            f"{path} holds a run with a different configuration ({'; '.join(differences)}); "
            "use another --output-dir or the same options"
        )


def _changed_files(previous: Any, summary: dict) -> list[str] | None:
    """Files whose content differs from data.json's record (`task: file`); None when the record has
    no digests (a run directory written before them: nothing to check against)."""
    old_tasks = previous.get("tasks") if isinstance(previous, dict) else None
    if not isinstance(old_tasks, dict):
        return None
    changed = []
    for task, entry in summary["tasks"].items():
        old = old_tasks.get(task, {}).get("files") if isinstance(old_tasks.get(task), dict) else None
        if not isinstance(old, dict):
            return None
        new = entry["files"]
        changed += [f"{task}: {name}" for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
    return changed


def _normal(value: Any, key: str = "") -> Any:
    """Compare YAML round-tripped values with live ones (tuples vs lists, ints vs floats, method case)."""
    if key == "method" and isinstance(value, str):
        return value.strip().lower()  # directories written before names were normalised
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


# -- the `single` run for FWT --------------------------------------------------------------------------

SCALE_KEYS = ("model", "model_kind", "target_modules", "train_per_class", "val_per_class", "test_per_class",
              "max_input_tokens", "prompt_header", "rank", "alpha", "learning_rate", "warmup_steps",
              "weight_decay", "batch_size", "epochs", "max_steps_per_task", "precision", "eval_mode", "seed",
              "split", "unlabelled_test", "max_target_tokens", "prompt_style", "batching", "lora_dropout",
              "max_grad_norm", "loss_mean", "max_new_tokens", "answer_match")


class _NotUsable(Exception):
    """Why a folder gives no a_0,i; `broken` when it claims to be a run directory and is not readable."""

    def __init__(self, reason: str, broken: bool):
        super().__init__(reason)
        self.reason, self.broken = reason, broken


def find_single_run(config: RunConfig, run_path: Path) -> tuple[dict | None, str | None]:
    """a_0,i by task name from a finished `single` run of the same model, scale and seed, and its folder.

    `--single-dir` names it (anything wrong is a `ConfigError`); else the run directories next to
    `run_path` are looked through, and one that cannot be read is skipped with a warning: a
    neighbour never breaks a run.
    """
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
            if folder == here or not (folder / "config.yaml").is_file():
                continue  # not a run directory
            return _single_diagonal(folder, mine), str(folder)
        except _NotUsable as why:
            if why.broken:
                warnings.warn(f"FWT: skipped {folder}: it {why.reason}", RunDirectoryWarning, stacklevel=2)
        except OSError as error:
            warnings.warn(f"FWT: skipped {folder}: {error.strerror or error}", RunDirectoryWarning, stacklevel=2)
    return None, None


def _single_diagonal(folder: Path, mine: dict) -> dict[str, float]:
    try:
        saved = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        raise _NotUsable(f"is not a readable run directory ({_first_line(error)})", broken=True) from None
    if not isinstance(saved, dict) or not isinstance(state, dict):
        raise _NotUsable("is not a run directory (config.yaml or state.json is not a mapping)", broken=True)
    other = with_legacy_values(saved)
    if _normal(other.get("method"), "method") != "single":
        raise _NotUsable("is not a 'single' run", broken=False)
    if any(_normal(other.get(k)) != _normal(mine.get(k)) for k in SCALE_KEYS):
        raise _NotUsable("was run with another model, scale or seed", broken=False)
    if state.get("finished") is not True:
        raise _NotUsable("is not a finished run directory", broken=False)
    tasks = state.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise _NotUsable("has a state.json without its task list", broken=True)
    return _diagonal(folder, tasks)


def _diagonal(folder: Path, tasks: list[str]) -> dict[str, float]:
    """a_i,i of a single run at full precision (its task records), else from its CSV."""
    run = RunDirectory(folder, None, tasks)
    try:
        records = [run.read_task_record(i, task) if run.task_record_path(i, task).is_file() else {}
                   for i, task in enumerate(tasks)]
        matrix = run.read_matrix([[t] for t in tasks], records, "accuracy_matrix.csv")
    except (RunDirectoryError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise _NotUsable(f"has unreadable accuracies ({_first_line(error)})", broken=True) from None
    diagonal = {task: matrix[i][i] for i, task in enumerate(tasks)}
    missing = [task for task, value in diagonal.items() if math.isnan(value)]
    if missing:
        raise _NotUsable(f"has no accuracy for {', '.join(missing)}", broken=True)
    return diagonal
