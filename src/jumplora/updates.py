"""A task's merged update, kept after its adapter is gone.

Algorithm 1 merges β·ΔW_final into the base weights and drops the adapter. We keep what was
merged, per adapted matrix, so that analyses (sparsity, support overlap) need no retraining and a
task's update can be taken out of the merged model again:

- ``sparse`` (JumpLoRA): flat indices into the (out, in) weight and the merged values β·ΔW_final;
- ``lowrank`` (plain LoRA): the factors A, B and the scale β; β·B·A is what was merged.

Files are safetensors: tensors ``{module}.indices`` / ``{module}.values`` or ``{module}.lora_A`` /
``{module}.lora_B``; the metadata holds the kind, shapes, scale and the thresholds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from jumplora.atomic import atomic_save_safetensors


@dataclass
class ModuleUpdate:
    """What was merged into one weight matrix of shape ``shape`` = (out, in)."""

    shape: tuple[int, int]
    indices: torch.Tensor | None = None  # int64 flat indices (sparse kind)
    values: torch.Tensor | None = None  # float32 merged values β·ΔW_final (sparse kind)
    lora_A: torch.Tensor | None = None  # (r, in) (lowrank kind)
    lora_B: torch.Tensor | None = None  # (out, r) (lowrank kind)
    scale: float = 1.0  # β: the sparse `values` include it, the low-rank factors do not

    @property
    def kind(self) -> str:
        return "sparse" if self.indices is not None else "lowrank"

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def dense(self) -> torch.Tensor:
        """The merged update β·ΔW_final as a dense (out, in) float32 tensor."""
        if self.kind == "sparse":
            out = torch.zeros(self.numel, dtype=torch.float32)
            out[self.indices] = self.values
            return out.view(self.shape)
        return self.scale * (self.lora_B.float() @ self.lora_A.float())

    def support(self) -> torch.Tensor:
        """Boolean (out, in) mask of the entries this task changed."""
        if self.kind == "sparse":
            mask = torch.zeros(self.numel, dtype=torch.bool)
            mask[self.indices] = True
            return mask.view(self.shape)
        return self.dense() != 0

    def nonzeros(self) -> int:
        return int(self.indices.numel()) if self.kind == "sparse" else int(self.support().sum())


@dataclass
class TaskUpdate:
    """The merged updates of one task, by fully-qualified module name."""

    task: str
    modules: dict[str, ModuleUpdate] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)  # group -> τ at merge time

    def sparsity(self) -> float:
        """Fraction of the adapted entries left unchanged by this task (0 for plain LoRA)."""
        total = sum(m.numel for m in self.modules.values())
        return 1.0 - sum(m.nonzeros() for m in self.modules.values()) / max(total, 1)

    @torch.no_grad()
    def apply(self, model: nn.Module, sign: float = 1.0) -> None:
        """Add (sign=+1) or remove (sign=−1) this update to/from the model's weights."""
        named = dict(model.named_modules())
        for name, update in self.modules.items():
            module = named.get(name)
            if module is None:
                raise KeyError(f"task {self.task!r}: model has no module {name!r}")
            weight = module.base.weight if hasattr(module, "base") else module.weight
            if tuple(weight.shape) != tuple(update.shape):
                raise ValueError(f"task {self.task!r}: {name} has shape {tuple(weight.shape)}, update {update.shape}")
            if update.kind == "sparse":
                flat = weight.view(-1)
                flat[update.indices.to(weight.device)] += sign * update.values.to(weight.device, weight.dtype)
            else:
                weight += sign * update.dense().to(weight.device, weight.dtype)

    def remove_from(self, model: nn.Module) -> None:
        self.apply(model, sign=-1.0)

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (`jumplora.atomic`): a crash never leaves a half-written update behind."""
        tensors: dict[str, torch.Tensor] = {}
        shapes, scales = {}, {}
        for name, update in self.modules.items():
            shapes[name] = list(update.shape)
            if update.kind == "sparse":
                tensors[f"{name}.indices"] = update.indices.to(torch.int64).contiguous().cpu()
                tensors[f"{name}.values"] = update.values.to(torch.float32).contiguous().cpu()
            else:
                tensors[f"{name}.lora_A"] = update.lora_A.to(torch.float32).contiguous().cpu()
                tensors[f"{name}.lora_B"] = update.lora_B.to(torch.float32).contiguous().cpu()
            scales[name] = update.scale
        metadata = {
            "task": self.task,
            "shapes": json.dumps(shapes),
            "scales": json.dumps(scales),
            "thresholds": json.dumps(self.thresholds),
        }
        atomic_save_safetensors(path, tensors, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TaskUpdate":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        shapes = json.loads(metadata.get("shapes", "{}"))
        scales = json.loads(metadata.get("scales", "{}"))
        modules = {}
        for name, shape in shapes.items():
            if f"{name}.indices" in tensors:
                modules[name] = ModuleUpdate(
                    shape=tuple(shape), indices=tensors[f"{name}.indices"], values=tensors[f"{name}.values"],
                    scale=float(scales.get(name, 1.0)),
                )
            else:
                modules[name] = ModuleUpdate(
                    shape=tuple(shape),
                    lora_A=tensors[f"{name}.lora_A"],
                    lora_B=tensors[f"{name}.lora_B"],
                    scale=float(scales[name]),
                )
        return cls(
            task=metadata.get("task", Path(path).stem),
            modules=modules,
            thresholds=json.loads(metadata.get("thresholds", "{}")),
        )
