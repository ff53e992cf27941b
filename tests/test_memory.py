"""memory.py: the allocator settings the project sets itself, per-stage peaks, the run's peak over resumes."""

import os
import subprocess
import sys

import pytest
import torch

from jumplora import memory
from jumplora.results import _peak_memory_mb
from jumplora.rundir import TaskRecord

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc are Linux's")


@linux
def test_the_allocator_is_configured_unless_the_user_set_it(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert memory.configure_allocator() is True
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    assert memory.configure_allocator() is False  # an explicit setting wins


@linux
def test_a_stage_peak_starts_at_the_reset_and_freed_memory_goes_back():
    memory.configure_allocator()
    memory.release_memory()
    memory.reset_peak()
    start = memory.peak_mb()
    block = torch.ones(300 * 2**20 // 4)  # 300 MiB, touched
    assert memory.current_rss_mb() >= start + 250
    del block
    memory.release_memory()  # above the mmap threshold: returned to the system at once
    assert memory.current_rss_mb() < start + 100
    assert memory.peak_mb() >= start + 250  # the high-water mark remembers it ...
    memory.reset_peak()
    assert memory.peak_mb() < start + 100  # ... until the next stage starts


@linux
def test_trimming_the_heap_gives_back_freed_blocks_below_the_mmap_threshold():
    memory.configure_allocator()
    memory.release_memory()
    start = memory.current_rss_mb()
    blocks = [torch.ones(2 * 2**20 // 4) for _ in range(300)]  # 600 MiB of 2 MiB blocks, from the heap
    assert memory.current_rss_mb() >= start + 500
    del blocks[::2]  # 300 MiB freed between live blocks: holes the heap keeps for reuse ...
    assert memory.current_rss_mb() >= start + 500
    memory.trim_heap()
    assert memory.current_rss_mb() < start + 400  # ... until the trim after each optimiser step
    del blocks


def _record(peak):
    return TaskRecord(stage=("cb",), steps=1, peak_memory_mb=peak)


def test_the_run_peak_is_the_largest_stage_peak_of_every_attempt():
    # stages 0 and 1 ran in an earlier process, whose peak this process's ru_maxrss cannot see
    assert _peak_memory_mb([_record(100000.0), _record(90000.0)]) == 100000.0
    # a stage recorded before stage peaks existed: the run's peak is unknown, not this process's
    assert _peak_memory_mb([_record(1.0), _record(None)]) is None


def test_task_records_keep_the_stage_peak(tmp_path):
    record = _record(1234.5)
    assert TaskRecord.from_json(record.to_json(), tmp_path / "r.json").peak_memory_mb == 1234.5
    old = {k: v for k, v in record.to_json().items() if k != "peak_memory_mb"}
    assert TaskRecord.from_json(old, tmp_path / "r.json").peak_memory_mb is None


def test_the_onednn_primitive_cache_is_limited_unless_the_user_sized_it(monkeypatch):
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY"):
        monkeypatch.delenv(name, raising=False)
    assert memory.limit_primitive_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(memory.PRIMITIVE_CACHE_CAPACITY)
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    monkeypatch.setenv("DNNL_PRIMITIVE_CACHE_CAPACITY", "7")  # oneDNN's older name counts as the user's
    assert not memory.limit_primitive_cache()
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ


def test_a_fresh_process_takes_the_limit_before_its_first_matmul(tmp_path):
    # oneDNN reads the capacity when it builds its cache: set after `import torch`, before a matmul,
    # it must still hold. Capacity 1: shape A, shape B, then A again misses the cache.
    script = (
        "import torch\n"
        "from jumplora import memory\n"
        "memory.PRIMITIVE_CACHE_CAPACITY = 1\n"
        "assert memory.limit_primitive_cache()\n"
        "w = torch.randn(64, 64, dtype=torch.bfloat16)\n"
        "for n in (8, 16, 8):\n"
        "    torch.nn.functional.linear(torch.randn(n, 64, dtype=torch.bfloat16), w)\n"
    )
    env = {k: v for k, v in os.environ.items() if "PRIMITIVE_CACHE_CAPACITY" not in k}
    env["ONEDNN_VERBOSE"] = "all"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    creations = [word for word in done.stdout.split(",") if word.startswith("create:cache_")]
    if not creations:
        pytest.skip("this torch build does not run bf16 matmuls through oneDNN")
    assert creations == ["create:cache_miss"] * 3
