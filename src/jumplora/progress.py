"""What a run shows while it works: progress bars, each task's accuracies, TensorBoard scalars."""

from __future__ import annotations

import warnings
from pathlib import Path

from jumplora.config import RunConfig
from jumplora.updates import TaskUpdate


def progress(items, config: RunConfig, description: str):
    """`items` behind a progress bar (tqdm), or as they are with `progress=False`."""
    if not config.progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, leave=False, dynamic_ncols=True)


class Logger:
    """Progress-bar postfix, a line per finished task and, with `--log tensorboard`, TensorBoard scalars."""

    def __init__(self, config: RunConfig, path: Path):
        self.config = config
        self.writer = None
        self.global_step = 0
        self.sparsity: float | None = None
        if config.log == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(path / "tensorboard"))
            except ImportError:
                warnings.warn("--log tensorboard: tensorboard is not installed (pip install tensorboard); "
                              "losses are still written to losses.jsonl", stacklevel=2)

    def step(self, record: dict, bar) -> None:
        self.global_step += 1
        if record.get("step") == 0:
            self.sparsity = None  # a new task
        if "sparsity" in record:  # measured every 10 steps; shown on every step
            self.sparsity = record["sparsity"]
        if hasattr(bar, "set_postfix"):
            shown = {k: f"{v:.4g}" for k, v in record.items() if isinstance(v, float) and k not in ("lr", "sparsity")}
            if self.sparsity is not None:
                shown["sparsity"] = f"{self.sparsity:.3f}"
            bar.set_postfix(shown, refresh=False)
        if self.writer:
            for key, value in record.items():
                if isinstance(value, float):
                    self.writer.add_scalar(f"train/{key}", value, self.global_step)
            for group, value in record.get("thresholds", {}).items():
                self.writer.add_scalar(f"threshold/{group}", value, self.global_step)

    def task_done(self, name: str, evaluations: dict, update: TaskUpdate) -> None:
        if self.config.progress:
            accuracies = ", ".join(f"{task} {r.accuracy:.1f}" for task, r in evaluations.items())
            print(f"[{name}] sparsity {update.sparsity():.1%} | accuracy: {accuracies}", flush=True)
        if self.writer:
            for task, result in evaluations.items():
                self.writer.add_scalar(f"accuracy/{task}", result.accuracy, self.global_step)
            self.writer.add_scalar("sparsity/task", update.sparsity(), self.global_step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()
