"""The process's memory: allocator settings the project sets for itself, and honest peak figures.

Why the allocator matters: a CPU training step allocates and frees hundreds of activation tensors
of a few hundred KiB to tens of MiB, of shapes that change with every micro-batch's length. glibc's
malloc serves the mid-sized ones from its heap and raises its mmap threshold as large blocks are
freed, so freed memory stays mapped: over one 44-step task the resident set of a 135 M-parameter run
climbed from 2.8 GB to 6.0 GB (11 GB over a whole IncLoRA run) while the live tensors never exceeded
~2.5 GB. The opposite extreme, an mmap threshold of 1 MiB (what this project set first), keeps the
resident set near the live memory but maps every block over 1 MiB afresh and faults it in page by
page: 5 million page faults and 7 s of kernel time in a 21 s step (benchmarks/allocator.md). The
setting kept is in between: the mmap threshold fixed at 4 MiB (the many 1-4 MiB hidden-state blocks
are reused from the heap; glibc's own growth of the threshold, and the heap growth behind it, is
off), the trim threshold at 32 MiB, and the heap trimmed after every optimiser step (`trim_heap`)
and at task boundaries (`release_memory`): about 1 s of kernel time a step, and a resident set that
returns to the live memory between steps. The settings are those of `MALLOC_MMAP_THRESHOLD_` /
`MALLOC_TRIM_THRESHOLD_`, applied with mallopt(3) so that no user has to export anything; an explicit
environment variable wins (`MALLOC_MMAP_THRESHOLD_=1048576` trades that speed for ~0.9 GiB less peak).
All of this is for glibc's own malloc: `jumplora run` normally runs under mimalloc (allocator.py),
which needs none of it, and then these functions leave glibc alone.

Peak memory: `ru_maxrss` is the peak of the whole process, so after a resume it misses the earlier
attempts, and it cannot say which stage peaked. Each stage instead resets the kernel's high-water
mark (`/proc/self/clear_refs`, Linux) or CUDA's peak counter at its start and reads it at its end:
the run's peak is the largest stage peak over every attempt (rundir task records keep them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import sys

import torch

from jumplora.allocator import preloaded_allocator

MMAP_THRESHOLD = 4 << 20   # bytes; mallopt M_MMAP_THRESHOLD
TRIM_THRESHOLD = 32 << 20  # bytes; mallopt M_TRIM_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>

_libc = None


def _glibc():
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
                    _libc = libc
            except OSError:  # not glibc (musl, ...): nothing to set
                pass
    return _libc or None


def configure_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (see the module docstring).

    Returns whether the settings were applied: not on other platforms or C libraries, and not for
    a threshold the user set through its environment variable."""
    libc = _glibc()
    if libc is None or preloaded_allocator() is not None:  # another malloc serves this process
        return False
    applied = False
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        applied |= bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        applied |= bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return applied


PRIMITIVE_CACHE_CAPACITY = 64  # oneDNN primitives kept; its default is 1024
_PRIMITIVE_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY")


def limit_primitive_cache() -> bool:
    """Keep oneDNN's primitive cache at `PRIMITIVE_CACHE_CAPACITY` entries unless the user set its size.

    Why: on the CPU every bf16 matmul is a oneDNN primitive, JIT-compiled for its exact shape and
    cached, 1024 of them by default. A micro-batch's shape changes with its length, so the cache
    fills with shapes that never come back: ~370 MiB after six yahoo steps, still growing. 64 entries
    hold every shape of one micro-batch's forward and backward (its 30 blocks share them) at the same
    CPU time (benchmarks/memory.md). oneDNN reads the variable when it builds the cache, at the first
    matmul: this must run before it (`run_continual` and `forget_task` call it first thing); later it
    changes nothing. Returns whether it set the variable."""
    if any(name in os.environ for name in _PRIMITIVE_CACHE_VARIABLES):
        return False
    os.environ[_PRIMITIVE_CACHE_VARIABLES[0]] = str(PRIMITIVE_CACHE_CAPACITY)
    return True


def trim_heap() -> None:
    """Return the heap's free pages to the system (malloc_trim(0)); once per optimiser step, ~1 s of
    page faults in a 15 s CPU step spent refilling them, against a heap that otherwise only grows."""
    libc = _glibc()
    if libc is not None and not torch.cuda.is_available() and preloaded_allocator() is None:
        libc.malloc_trim(0)


def release_memory() -> None:
    """Give freed memory back at a task boundary: Python's cycles, glibc's heap, CUDA's cache."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


_CLEAR_REFS = "/proc/self/clear_refs"


def reset_peak() -> None:
    """Start a new peak-memory window (a stage's)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")  # resets VmHWM, the resident set's high-water mark (Linux >= 4.0)
    except OSError:  # not Linux, or not allowed: the peak then stays the process's
        pass


def peak_mb() -> float:
    """Peak memory in MiB since `reset_peak` (GPU: allocated by torch; CPU: resident set)."""
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return process_peak_mb()


def process_peak_mb() -> float:
    """On a CPU the resident set's peak since the process started (`reset_peak` does not lower it); on a
    GPU torch's peak allocation since its last reset."""
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def current_rss_mb() -> float:
    """The resident set now, in MiB (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError):
        return 0.0


def cpu_seconds() -> float:
    """CPU seconds this process has used, user and kernel, all its threads (not its children: a
    compile's worker processes); the cost of a stage whatever else shared the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
