"""The names of a run directory's files (docs/run-directory.md): every path is made here.

A run is a sequence of *stages*: one task each, or every task at once for the multi-task reference
(`mtl`). A stage's name is its tasks joined by "+" ("CB", "CB+COPA"), and its files are numbered by
its position, two digits: `tasks/00-CB.json`, `updates/00-CB+COPA.safetensors`. Task names never hold
a "+" (the task registry's names do not), so a stage's name gives its tasks back.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

CONFIG = "config.yaml"
ENVIRONMENT = "environment.json"
DATA = "data.json"
STATE = "state.json"
METRICS = "metrics.json"
LOSSES = "losses.jsonl"
ACCURACY = "accuracy_matrix.csv"
ACCURACY_RANK = "accuracy_matrix_rank.csv"
TASKS = "tasks"
UPDATES = "updates"
SUPPORTS = "supports"
METHOD_STATE = "method_state"
LAMBDA_SEARCH = "lambda_search"  # `--ella-lambda search`: every candidate's validation accuracy, per stage
REMOVAL = "forget.json"  # the one file of a directory written by `jumplora forget` (not a run directory)

STAGE_SEPARATOR = "+"
_STEM = re.compile(r"^(\d{2,})-(.+)$")


def stage_name(stage: Sequence[str]) -> str:
    return STAGE_SEPARATOR.join(stage)


def stage_tasks(name: str) -> tuple[str, ...]:
    return tuple(name.split(STAGE_SEPARATOR))


def stem(index: int, name: str) -> str:
    """`00-CB`: a stage's position (0-based, two digits) and its name."""
    return f"{index:02d}-{name}"


def parse_stem(file_name: str) -> tuple[int, str] | None:
    """(position, stage name) of a numbered file (`01-COPA.json` -> (1, "COPA")); None for another file."""
    match = _STEM.match(Path(file_name).stem)
    return (int(match.group(1)), match.group(2)) if match else None


def task_record_path(root: Path, index: int, name: str) -> Path:
    return root / TASKS / f"{stem(index, name)}.json"


def update_path(root: Path, index: int, name: str) -> Path:
    return root / UPDATES / f"{stem(index, name)}.safetensors"


def supports_path(root: Path, index: int, name: str) -> Path:
    return root / SUPPORTS / f"{stem(index, name)}.safetensors"


def method_state_path(root: Path, index: int) -> Path:
    return root / METHOD_STATE / f"{index:02d}.pt"


def lambda_search_record_path(root: Path, index: int, name: str) -> Path:
    return root / LAMBDA_SEARCH / f"{stem(index, name)}.json"


def lambda_search_folder(root: Path, index: int, name: str) -> Path:
    """Where a stage's best λ candidate so far keeps its update, until the stage is done."""
    return root / LAMBDA_SEARCH / stem(index, name)


def lambda_search_update_path(root: Path, index: int, name: str, value: float) -> Path:
    return lambda_search_folder(root, index, name) / f"lambda-{float(value)!r}.safetensors"  # repr: one name per float


def is_run_directory(path: Path) -> bool:
    """Whether `path` claims to be a run directory: it holds a config.yaml."""
    return (Path(path) / CONFIG).is_file()


def is_removal_directory(path: Path) -> bool:
    """Whether `path` is what `jumplora forget` wrote: it holds a forget.json."""
    return (Path(path) / REMOVAL).is_file()


def numbered_files(folder: Path, suffix: str) -> dict[int, Path]:
    """The numbered files of `folder` with `suffix` (`tasks/`, `updates/`, `supports/`), by position."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        parsed = parse_stem(path.name)
        if parsed and path.suffix == suffix and path.is_file():
            found[parsed[0]] = path
    return found
