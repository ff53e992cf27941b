"""Compact supports: what the sparsity and overlap analyses read from a run's updates, small enough to commit.

A JumpLoRA update keeps the flat index and the value of every changed entry: for SmolLM2-135M at
~26 % density that is ~40 MB per task. The §5 analyses only need, per task,

- each adapted matrix's shape and number of changed entries (sparsity of all matrices, by depth);
- the binary support of each matrix of one layer (that layer's sparsity and Jaccard overlap).

`jumplora compact RUN_DIR` writes exactly that to `supports/NN-TASK.safetensors` (one uint8
tensor of packed bits per matrix of the layer; shapes and counts in the metadata): ~60 KB per task
for SmolLM2's middle layer. `load_run` reads `supports/` for a task whose `updates/` file is gone,
and the report and plots then give the same numbers for that layer; asking for another layer
names the file and the layer it keeps.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from jumplora.analysis.layers import parse_layer, select_modules
from jumplora.analysis.overlap import PackedSupport
from jumplora.analysis.rundir import SUPPORTS
from jumplora.atomic import atomic_save_safetensors
from jumplora.errors import UserError


@dataclass
class CompactModule:
    """One matrix of a compact update: shape, count of changed entries, packed support or None."""

    shape: tuple[int, int]
    count: int
    bits: np.ndarray | None
    source: Path
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

    def sparsity(self) -> float:
        total = sum(m.numel for m in self.modules.values())
        return 1.0 - sum(m.count for m in self.modules.values()) / max(total, 1)


def write_supports(run, layer: str | int = "middle") -> list[Path]:
    """Write `supports/NN-TASK.safetensors` for every task of `run` that has a sparse update."""
    layer = parse_layer(layer)
    written = []
    for index, path in enumerate(run.update_paths):
        if path is None or path.parent.name == SUPPORTS:
            continue  # no full update to compact (a compact file is already all there is)
        update = run.update(index)
        kinds = {m.kind for m in update.modules.values()}
        if kinds != {"sparse"}:
            raise UserError(f"{path}: a plain-LoRA update has no sparse support to compact (kinds: {sorted(kinds)})")
        selection = select_modules(update.modules, layer)
        tensors = {f"{name}.bits": torch.from_numpy(PackedSupport.of(update.modules[name]).bits)
                   for name in selection.modules}
        metadata = {
            "task": update.task,
            "layer": selection.description,
            "shapes": json.dumps({n: list(m.shape) for n, m in update.modules.items()}),
            "counts": json.dumps({n: m.nonzeros() for n, m in update.modules.items()}),
            "thresholds": json.dumps(update.thresholds),
        }
        written.append(atomic_save_safetensors(run.path / SUPPORTS / path.name, tensors, metadata))
    if not written:
        raise UserError(f"{run.path}: no update files under updates/ to compact")
    return written


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
    return CompactUpdate(metadata.get("task", ""), modules, json.loads(metadata.get("thresholds", "{}")))
