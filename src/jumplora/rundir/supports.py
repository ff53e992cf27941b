"""Compact supports: what the sparsity and overlap analyses read of a stage's update, small enough to commit.

A JumpLoRA update keeps the flat index and the value of every changed entry: for SmolLM2-135M at
~26 % density that is ~40 MB per task. The §5 analyses only need, per stage,

- each adapted matrix's shape and number of changed entries (sparsity of all matrices, by depth);
- the binary support of each matrix of one layer (that layer's sparsity and Jaccard overlap).

`supports/NN-STAGE.safetensors` holds exactly that (one uint8 tensor of packed bits per matrix of the
layer; shapes and counts in the metadata): ~60 KB per task for SmolLM2's middle layer. `jumplora
compact` writes it (`jumplora.analysis.compact` picks the layer); `load_run` reads it for a stage
whose `updates/` file is gone, and the report and plots then give the same numbers for that layer;
asking for another layer names the file and the layer it keeps.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from jumplora.atomic import atomic_save_safetensors
from jumplora.errors import UserError
from jumplora.rundir import layout
from jumplora.updates import TaskUpdate


@dataclass
class CompactModule:
    """One matrix of a compact update: shape, count of changed entries, packed support or None."""

    shape: tuple[int, int]
    count: int
    bits: np.ndarray | None
    source: Path | None
    layer: str
    kind: str = "sparse"

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def nonzeros(self) -> int:
        return self.count

    def _mask(self) -> np.ndarray:
        if self.bits is None:
            raise UserError(f"{self.source} keeps the supports of {self.layer} only (jumplora compact); "
                            f"other layers need the run's updates/")
        return np.unpackbits(self.bits, count=self.numel).astype(bool)

    @property
    def indices(self) -> torch.Tensor:
        return torch.from_numpy(np.flatnonzero(self._mask()))

    def support(self) -> torch.Tensor:
        return torch.from_numpy(self._mask().reshape(self.shape))

    def dense(self) -> torch.Tensor:
        raise UserError(f"{self.source} keeps supports, not values: the update itself needs updates/")


@dataclass
class CompactUpdate:
    task: str
    modules: dict[str, CompactModule] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    layer: str = "one layer"

    def sparsity(self) -> float:
        total = sum(m.numel for m in self.modules.values())
        return 1.0 - sum(m.count for m in self.modules.values()) / max(total, 1)


def compact(update: TaskUpdate, layer_modules: Iterable[str], layer: str) -> CompactUpdate:
    """`update` as counts for every matrix and the packed supports of `layer_modules` (the matrices of
    the layer described by `layer`)."""
    kinds = {m.kind for m in update.modules.values()}
    if kinds != {"sparse"}:
        raise UserError(f"task {update.task}: a plain-LoRA update has no sparse support to compact "
                        f"(kinds: {sorted(kinds)})")
    keep = set(layer_modules)
    modules = {}
    for name, module in update.modules.items():
        bits = None
        if name in keep:
            mask = np.zeros(module.numel, dtype=bool)
            mask[module.indices.numpy()] = True
            bits = np.packbits(mask)
        modules[name] = CompactModule(tuple(module.shape), module.nonzeros(), bits, None, layer)
    return CompactUpdate(update.task, modules, dict(update.thresholds), layer)


def save_supports(root: Path, index: int, stage: str, update: CompactUpdate) -> Path:
    """Write `supports/NN-STAGE.safetensors` of the run directory `root`."""
    tensors = {f"{name}.bits": torch.from_numpy(module.bits)
               for name, module in update.modules.items() if module.bits is not None}
    metadata = {
        "task": update.task,
        "layer": update.layer,
        "shapes": json.dumps({n: list(m.shape) for n, m in update.modules.items()}),
        "counts": json.dumps({n: m.count for n, m in update.modules.items()}),
        "thresholds": json.dumps(update.thresholds),
    }
    return atomic_save_safetensors(layout.supports_path(root, index, stage), tensors, metadata)


def load_supports(path: str | os.PathLike) -> CompactUpdate:
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            bits = {key[: -len(".bits")]: handle.get_tensor(key).numpy() for key in handle.keys()}
        shapes = json.loads(metadata["shapes"])
        counts = json.loads(metadata["counts"])
    except Exception as error:  # safetensors and json raise their own types
        raise UserError(f"cannot read supports file {path}: {error}") from None
    layer = metadata.get("layer", "one layer")
    modules = {
        name: CompactModule(tuple(shape), int(counts[name]), bits.get(name), path, layer)
        for name, shape in shapes.items()
    }
    return CompactUpdate(metadata.get("task", ""), modules, json.loads(metadata.get("thresholds", "{}")), layer)
