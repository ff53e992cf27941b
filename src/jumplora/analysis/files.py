"""Writing analysis outputs: atomically, and never over a run's own files."""

from __future__ import annotations

from pathlib import Path

from jumplora.atomic import atomic_write_text  # noqa: F401  (the one atomic writer, for report.py)
from jumplora.errors import UserError


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
