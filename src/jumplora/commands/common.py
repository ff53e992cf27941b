"""What the analysis commands share: output formats, warnings as one line each, the output folder."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from jumplora.errors import UserError

LAYER_HELP = ("'middle' (the middle block; T5: middle encoder block), 'all', a block index, or a block name such "
              "as decoder.block.12")


def parse_formats(text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    bad = [f for f in formats if f not in allowed]
    if bad or not formats:
        raise UserError(f"unknown format {bad[0] if bad else text!r}; choose from {', '.join(allowed)}")
    return formats


def run_with_warnings(prefix: str, function, *args, **kwargs):
    """Call `function`, printing each warning it emits as one line `PREFIX: warning: ...` on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return function(*args, **kwargs)
        finally:
            for warning in caught:
                if issubclass(warning.category, UserWarning):  # RunWarning and the like, not deprecations
                    print(f"{prefix}: warning: {warning.message}", file=sys.stderr)


def prepare_output_dir(out: str | Path, runs) -> Path:
    """Create `out`, refusing a file and any run directory (ours to read, not to write into)."""
    from jumplora.rundir import is_run_directory  # here: registering a command stays free of torch

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    resolved = out.resolve()
    for run in runs:
        if Path(run.path).resolve() == resolved:
            raise UserError(f"--out {out} is the input run directory {run.path}; choose another folder")
    if is_run_directory(out):
        raise UserError(f"--out {out} is a run directory; choose another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create --out {out}: {error.strerror or error}") from None
    return out
