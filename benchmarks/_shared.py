"""What the benchmarks share: the repro preset's real batches, the machine's description, statistics."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from jumplora.config import RunConfig, current_names, read_yaml  # noqa: E402

PRESET = ROOT / "configs" / "repro-small.yaml"


def preset_config(preset: Path = PRESET, **overrides) -> RunConfig:
    """The reproduction preset (configs/repro-small.yaml) with `overrides`, data beside the repo."""
    values = current_names(read_yaml(preset), str(preset))
    if not os.path.isabs(values.get("data_dir") or "/"):
        values["data_dir"] = str((ROOT / values["data_dir"]).resolve())
    return RunConfig(**{**values, "progress": False, **overrides})


def train_steps(config: RunConfig, task: str, tokenizer, kind: str) -> list[list[dict]]:
    """The optimiser steps (micro-batch lists) a run of `config` trains on `task`, as run_continual makes them."""
    from jumplora.data import load_task
    from jumplora.train import _stage_batches, _steps_to_train, data_protocol

    data = {task: load_task(task, config.resolved_data_dir, data_protocol(config))}
    return _steps_to_train(_stage_batches([task], data, tokenizer, kind, config), config, task)


def sparse_stage(config: RunConfig, loaded, task: str, steps: list[list[dict]]):
    """JumpLoRA adapters injected as a sparse (γ = 1) stage of `task` trains them, with B ~ N(0, 0.01) so
    that the gate is realistic: (TaskContext, method, AdamW optimiser, trainable parameters)."""
    from jumplora.injection import inject_adapters
    from jumplora.methods import TaskContext, build_method
    from jumplora.schedule import JumpSchedule

    method = build_method(config)
    adapters = inject_adapters(loaded.model, method.adapter_config(tuple(loaded.target_modules)))
    for layer in adapters.layers.values():
        torch.nn.init.normal_(layer.lora_B, std=0.01)
    adapters.init_thresholds()
    adapters.set_gamma(1.0)
    trainable = [p for p in adapters.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    ctx = TaskContext(model=loaded.model, config=config, kind=loaded.kind, task=task, task_index=0,
                      adapters=adapters, schedule=JumpSchedule.for_task(len(steps), config.s_start, config.s_final),
                      steps=steps, train_batches=[], compute_loss=lambda batch: None)
    return ctx, method, optimizer, trainable


def step_shape(step: list[dict]) -> dict:
    """Examples, prompt slots, real tokens and target tokens of one optimiser step."""
    slots = sum(b["input_ids"].numel() for b in step)
    real = sum(int(b["attention_mask"].sum()) for b in step)
    return {"examples": sum(b["input_ids"].shape[0] for b in step), "slots": slots, "tokens": real,
            "target_tokens": sum(int(b["target_tokens"]) for b in step), "micro_batches": len(step),
            "max_len": max(b["input_ids"].shape[1] for b in step)}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "p25": quantile(values, 0.25), "p75": quantile(values, 0.75),
            "n": len(values)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    import transformers

    env = {"torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "threads": torch.get_num_threads(), "cpu": cpu_model(),
           "cpu_count": os.cpu_count()}
    try:
        import peft
        env["peft"] = peft.__version__
    except ImportError:
        pass
    try:
        env["loadavg_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def command_line() -> str:
    import shlex

    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
