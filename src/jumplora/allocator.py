"""Which malloc the process runs under, and the relaunch that puts `jumplora run` under mimalloc.

Why: a CPU training step allocates and frees hundreds of activation tensors whose shapes change
with every micro-batch's length. glibc's malloc, even tuned (memory.configure_allocator), keeps
some of that freed memory mapped: its high-water mark climbs step after step to ~4 GiB for a
135 M-parameter model. mimalloc returns freed pages to the system on its own and stays under
3 GiB on the same steps at the same CPU time (benchmarks/allocator.md). It ships as a wheel
(`cmeel-mimalloc`, a dependency on Linux), but a malloc must be in place before the process's
first allocation, so the `run` and `forget` commands re-execute themselves once with `LD_PRELOAD`
naming it. Nothing for the user to set; `JUMPLORA_ALLOCATOR=glibc` keeps the C library's malloc.

This module imports neither torch nor numpy: it runs before them.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import sys
from pathlib import Path

from jumplora.errors import ConfigError

ENV = "JUMPLORA_ALLOCATOR"
CHOICES = ("mimalloc", "glibc")
_RELAUNCHED = "JUMPLORA_RELAUNCHED"  # set in the relaunched process: never a second exec
_KNOWN = ("mimalloc", "jemalloc", "tcmalloc")


def requested() -> str:
    """The allocator `JUMPLORA_ALLOCATOR` asks for (default mimalloc)."""
    value = os.environ.get(ENV, "mimalloc").strip().lower() or "mimalloc"
    if value not in CHOICES:
        raise ConfigError(f"{ENV}={os.environ[ENV]!r}: expected one of {', '.join(CHOICES)}")
    return value


@functools.cache  # the malloc a process runs under is fixed at its start
def preloaded_allocator() -> str | None:
    """The malloc replacement this process runs under ('mimalloc', 'jemalloc', 'tcmalloc'), read
    from its mapped libraries; None where it is the C library's own (or not Linux)."""
    try:
        with open("/proc/self/maps") as handle:
            maps = handle.read()
    except OSError:
        return None
    return next((name for name in _KNOWN if f"/lib{name}" in maps), None)


def allocator_name() -> str:
    """What environment.json records: the replacement's name, else 'libc'."""
    return preloaded_allocator() or "libc"


def mimalloc_library() -> Path | None:
    """libmimalloc.so of the installed `cmeel-mimalloc` wheel, or None where it is not installed.

    Found through the wheel's file list, never by importing it."""
    try:
        files = importlib.metadata.distribution("cmeel-mimalloc").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "libmimalloc.so":
            path = Path(file.locate()).resolve()
            if path.is_file():
                return path
    return None


def relaunch_under_mimalloc(command: list[str]) -> None:
    """Replace this process by `command` with mimalloc preloaded, where that is wanted and possible;
    return without doing anything where it is not: asked for glibc, not Linux, mimalloc already
    loaded (or another replacement the user preloaded), the wheel missing, or already relaunched."""
    if (requested() != "mimalloc" or not sys.platform.startswith("linux") or os.environ.get(_RELAUNCHED)
            or preloaded_allocator() is not None):
        return
    library = mimalloc_library()
    if library is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(filter(None, [str(library), env.get("LD_PRELOAD", "")]))
    env[_RELAUNCHED] = "1"
    # mimalloc's transparent huge pages cost 3-6 s of kernel time a CPU step in page compaction, for
    # no lower peak (benchmarks/allocator.md); a user's own setting wins
    env.setdefault("MIMALLOC_ALLOW_THP", "0")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)


__all__ = ["CHOICES", "ENV", "allocator_name", "mimalloc_library", "preloaded_allocator", "relaunch_under_mimalloc",
           "requested"]
