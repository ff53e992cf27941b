"""The run directory (docs/run-directory.md): atomic writes, progress and resuming.

Every file is written to a temporary name and renamed, so a crash or `kill -9` leaves either the
old file or the new one. A task counts as finished only once `state.json` says so, and that is the
last file written for it: re-running continues after the last finished task.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from jumplora.config import RESULT_AFFECTING, RunConfig, read_yaml, with_legacy_values
from jumplora.errors import ConfigError


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(value, tmp)
    os.replace(tmp, path)


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


class RunDirectory:
    """One run's directory; `open` creates it or checks that it belongs to the same configuration."""

    def __init__(self, path: Path, config: RunConfig, tasks: list[str]):
        self.path = path
        self.config = config
        self.tasks = tasks

    @classmethod
    def open(cls, config: RunConfig, tasks: list[str]) -> "RunDirectory":
        path = config.run_dir
        saved_config = path / "config.yaml"
        if saved_config.exists():
            previous = with_legacy_values(read_yaml(saved_config))
            differences = [
                f"{key}: {previous.get(key)!r} -> {getattr(config, key)!r}"
                for key in RESULT_AFFECTING
                if _normal(previous.get(key)) != _normal(getattr(config, key))
            ]
            if differences:
                raise ConfigError(
                    f"{path} holds a run with a different configuration ({'; '.join(differences)}); "
                    "use another --output-dir or the same options"
                )
        elif path.exists() and any(path.iterdir()):
            raise ConfigError(f"{path} exists and is not a jumplora run directory; use another --output-dir")
        run = cls(path, config, tasks)
        if not saved_config.exists():
            atomic_write_text(saved_config, yaml.safe_dump(config.to_dict(), sort_keys=False))
            atomic_write_json(path / "state.json", {"tasks": tasks, "completed": 0, "finished": False})
        atomic_write_json(path / "environment.json", environment())
        return run

    # progress --------------------------------------------------------------------------------
    @property
    def state(self) -> dict[str, Any]:
        return json.loads((self.path / "state.json").read_text())

    @property
    def completed(self) -> int:
        return int(self.state["completed"])

    def mark_completed(self, count: int, finished: bool = False) -> None:
        atomic_write_json(self.path / "state.json", {"tasks": self.tasks, "completed": count, "finished": finished})

    # files ----------------------------------------------------------------------------------
    def update_path(self, index: int, task: str) -> Path:
        return self.path / "updates" / f"{task_stem(index, task)}.safetensors"

    def method_state_path(self, index: int) -> Path:
        return self.path / "method_state" / f"{index:02d}.pt"

    def save_method_state(self, index: int, state: dict) -> None:
        """Write the state after task `index` and drop older ones: resuming needs only the latest,
        and states such as ELLA's W_past are as large as the adapted matrices."""
        atomic_torch_save(self.method_state_path(index), state)
        for older in (self.path / "method_state").glob("*.pt"):
            if older.stem.isdigit() and int(older.stem) < index:
                older.unlink()

    def task_record_path(self, index: int, task: str) -> Path:
        return self.path / "tasks" / f"{task_stem(index, task)}.json"

    def write_accuracy_matrix(self, matrix: list[list[float]], name: str = "accuracy_matrix.csv") -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["after_task", *self.tasks])
        for task, row in zip(self.tasks, matrix):
            writer.writerow([task, *("" if math.isnan(v) else f"{v:.2f}" for v in row)])
        atomic_write_text(self.path / name, buffer.getvalue())

    def read_accuracy_matrix(self, name: str = "accuracy_matrix.csv") -> list[list[float]]:
        n = len(self.tasks)
        matrix = [[math.nan] * n for _ in range(n)]
        path = self.path / name
        if not path.exists():
            return matrix
        rows = list(csv.reader(path.read_text().splitlines()))[1:]
        for i, row in enumerate(rows[:n]):
            matrix[i] = [float(v) if v != "" else math.nan for v in row[1:]]
        return matrix

    def append_losses(self, records: list[dict[str, Any]], keep_tasks: int) -> None:
        """Rewrite losses.jsonl with the records of the first `keep_tasks` tasks plus `records`.

        Dropping the lines of tasks past the last finished one discards what an interrupted
        attempt logged, so a resumed run's log equals an uninterrupted one's.
        """
        path = self.path / "losses.jsonl"
        kept = []
        if path.exists():
            finished = set(self.tasks[:keep_tasks])
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["task"] in finished]
        lines = kept + [json.dumps(r) for r in records]
        atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def _normal(value: Any) -> Any:
    """Compare YAML round-tripped values with live ones (tuples vs lists, ints vs floats)."""
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value
