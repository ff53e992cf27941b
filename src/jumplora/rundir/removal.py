"""What `jumplora forget` writes: a directory beside the run with one file, forget.json.

It is run-like, not a run: it holds no config.yaml (reports and `jumplora run` never take it for a
run), only what the removal measured — the source run, the task whose update was subtracted, the
accuracy of every task of the run on the model without it, and the source run's own final row.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jumplora.atomic import atomic_write_json
from jumplora.errors import ConfigError, UserError
from jumplora.rundir import layout
from jumplora.rundir.formats import RESTORE, read_json, read_json_object
from jumplora.rundir.writer import _changed_files

FORMAT = 1


@dataclass
class Removal:
    """One task's update taken out of a finished run's final model, and every task evaluated again.

    `accuracy[task]` is on the model without `removed`; `source_accuracy[task]` the source run's own
    final row (full precision); `change(task)` the difference, in points."""

    source_run: str
    method: str
    order: str
    seed: int | None
    removed: str
    tasks: list[str]
    accuracy: dict[str, float]
    source_accuracy: dict[str, float]
    base_model: str
    path: Path | None = None

    def change(self, task: str) -> float:
        before, after = self.source_accuracy.get(task), self.accuracy.get(task)
        return math.nan if before is None or after is None else after - before

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("path")
        return {"format": FORMAT, **values}


def check_free(out: Path) -> None:
    """Refuse a file or a non-empty folder: a removal never writes over anything."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UserError(f"--out {out} is a file; give a new or empty folder")
        if any(out.iterdir()):
            raise UserError(f"--out {out} exists and is not empty; nothing was written")


def write_removal(out: str | Path, removal: Removal) -> Path:
    out = Path(out)
    check_free(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create --out {out}: {error.strerror or error}") from None
    atomic_write_json(out / layout.REMOVAL, removal.to_json())
    removal.path = out
    return out / layout.REMOVAL


def load_removal(path: str | Path) -> Removal:
    path = Path(path)
    file = path / layout.REMOVAL
    if not file.is_file():
        raise UserError(f"{path} is not a directory written by `jumplora forget`: {layout.REMOVAL} missing")
    values = read_json_object(file)
    try:
        values.pop("format", None)
        return Removal(**{k: values[k] for k in Removal.__dataclass_fields__ if k != "path"}, path=path)
    except (KeyError, TypeError) as error:
        raise UserError(f"{file}: not a removal record ({error})") from None


def check_same_data(run_path: Path, summary: dict) -> None:
    """The data a removal evaluates on must be the files the run read (data.json's digests)."""
    path = Path(run_path) / layout.DATA
    if not path.is_file():
        return
    changed = _changed_files(read_json(path, RESTORE), summary)
    if changed:
        raise ConfigError(f"{run_path}: {', '.join(changed)} changed since the run read them ({layout.DATA}); "
                          "evaluate with the data it ran on (--data-dir)")


__all__ = ["Removal", "check_free", "check_same_data", "load_removal", "write_removal"]
