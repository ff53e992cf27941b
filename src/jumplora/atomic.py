"""The one way jumplora writes a file: a temporary file beside it, fsync, rename, fsync of the folder.

A crash or `kill -9` at any moment leaves the old file or the new one, never a mix, and at worst a
temporary `.NAME.PID.tmp` file that nothing reads. A write that fails (a full disk, a read-only
folder) removes its temporary file and raises a one-line `WriteError` naming the file and what to
do. Every file gets the permissions an ordinary `open()` gives (0666 less the umask), whatever wrote
it: safetensors' writer creates 0600 files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from jumplora.errors import WriteError

TEMPORARY_SUFFIX = ".tmp"


def _file_mode() -> int:
    mask = os.umask(0)  # the only way to read the umask is to set it
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def temporary_path(path: Path) -> Path:
    """Hidden, and unique per process: two processes writing the same file never share one."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write `path` atomically: `write(tmp)` fills a temporary file beside it, which is then given
    ordinary permissions, flushed to the disk and renamed over `path`. Returns `path`."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        _fsync(tmp)
        _commit(tmp, path)
    except OSError as error:
        raise WriteError(_explain(path, error)) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    return atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, value: Any) -> Path:
    return atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def atomic_save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str]) -> Path:
    """A safetensors file, the same bytes for the same tensors: safetensors' own writer puts the
    metadata in a random order, so two identical updates would differ (and a resumed run's too)."""
    return atomic_write(path, lambda tmp: _write_safetensors(tmp, tensors, metadata))


# torch dtype name -> safetensors dtype code
_SAFETENSORS_DTYPES = {"float32": "F32", "float64": "F64", "float16": "F16", "int64": "I64", "int32": "I32",
                       "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def _write_safetensors(path: Path, tensors: dict, metadata: dict[str, str]) -> None:
    """The safetensors layout (8-byte little-endian header length, JSON header padded with spaces to
    8 bytes, the tensors' bytes back to back), laid out as safetensors does it: larger elements
    first, then by name; metadata sorted by key."""
    import sys

    if sys.byteorder != "little":  # the format is little-endian; tensors are written as they lie in memory
        raise OSError(errno.EINVAL, "writing safetensors needs a little-endian machine")
    arrays = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    order = sorted(arrays, key=lambda name: (-arrays[name].element_size(), name))
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    offset = 0
    for name in order:
        tensor = arrays[name]
        size = tensor.numel() * tensor.element_size()
        dtype = _SAFETENSORS_DTYPES[str(tensor.dtype).removeprefix("torch.")]
        header[name] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as handle:
        handle.write(len(text).to_bytes(8, "little"))
        handle.write(text)
        for name in order:
            handle.write(arrays[name].numpy().tobytes())


def _commit(tmp: Path, path: Path) -> None:
    """The rename that makes the new file visible, and the folder's fsync that makes the rename last."""
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # some file systems cannot fsync a folder; the rename stands
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


@contextlib.contextmanager
def folder_built_aside(path: Path, fail: Callable[[str], Exception]):
    """A temporary folder beside `path` to build a whole folder in; on a clean exit it replaces
    `path` (absent or empty) in one rename: all of it or nothing. An OSError on the way becomes
    `fail(reason)`; the temporary folder never stays behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _commit(tmp, path)
    except OSError as error:
        raise fail(error.strerror or str(error)) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


_HINTS = {
    errno.ENOSPC: "free some space and run the same command again",
    errno.EDQUOT: "free some space and run the same command again",
    errno.EACCES: "the folder is not writable: fix its permissions or choose another folder",
    errno.EPERM: "the folder is not writable: fix its permissions or choose another folder",
    errno.EROFS: "the folder is on a read-only file system: choose another folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another folder",
    errno.EEXIST: "a part of the path is a file, not a folder: choose another folder",
}


def _explain(path: Path, error: OSError) -> str:
    reason = error.strerror or str(error)
    hint = _HINTS.get(error.errno)
    return f"cannot write {path}: {reason}" + (f"; {hint}" if hint else "")


__all__ = ["FILE_MODE", "atomic_write", "folder_built_aside", "atomic_write_json", "atomic_write_text", "atomic_save_safetensors",
           "is_temporary", "temporary_path"]
