"""Shared pytest fixtures. Keep each fixture in its own clearly named function."""

from __future__ import annotations

import os
from pathlib import Path

# Tests never contact a model or dataset hub; set before transformers / huggingface_hub import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest
import torch

# The tests use tiny models: one thread is faster for them, and several threads per process
# slow to a crawl when the machine's two cores are shared (spin-waiting OpenMP workers).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cl_benchmark_dir() -> Path:
    """The shared CL_Benchmark folder, next to the repository (../shared/CL_Benchmark)."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "CL_Benchmark"
    if not (path / "instruction_config.json").is_file():
        pytest.fail(f"benchmark data not found at {path}: clone the repo next to shared/CL_Benchmark")
    return path
