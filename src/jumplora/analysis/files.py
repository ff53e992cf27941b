"""Writing analysis outputs: atomically, and never over a run's own files."""

from __future__ import annotations

import os
from pathlib import Path

from jumplora.errors import UserError


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` via a temporary file in the same folder and a rename."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def prepare_output_dir(out: str | Path, runs) -> Path:
    """Create `out`, refusing a file and any run directory (ours to read, not to write into)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    resolved = out.resolve()
    for run in runs:
        if Path(run.path).resolve() == resolved:
            raise UserError(f"--out {out} is the input run directory {run.path}; choose another folder")
    if (out / "config.yaml").is_file():
        raise UserError(f"--out {out} is a run directory; choose another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create --out {out}: {error.strerror or error}") from None
    return out
