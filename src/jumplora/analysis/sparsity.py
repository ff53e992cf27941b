"""Sparsity of the merged updates: the fraction of entries of ΔW_jump zeroed by the threshold (§5).

For one matrix, sparsity = 1 − nnz / numel, nnz the number of entries the task changed (its
support). For a set of matrices (a task, a layer, a block) it is pooled over their entries,
1 − Σ nnz / Σ numel — the mean of the per-matrix values weighted by their sizes, which is the
plain mean when the matrices have one shape (T5's q and v). A plain-LoRA (low-rank) update changes
every entry where B·A ≠ 0, so its sparsity is about 0.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from jumplora.analysis.layers import parse_block


def _nnz_numel(item) -> tuple[int, int]:
    """(changed entries, entries) of a `ModuleUpdate` or of an array/tensor (non-zero = changed)."""
    if hasattr(item, "nonzeros") and hasattr(item, "numel") and hasattr(item, "shape"):
        return int(item.nonzeros()), int(item.numel)
    array = item.detach().cpu().numpy() if hasattr(item, "detach") else np.asarray(item)
    return int(np.count_nonzero(array)), int(array.size)


def matrix_sparsity(item) -> float:
    """1 − nnz/numel of one matrix: a `ModuleUpdate`, or a mask/array whose zeros are unchanged entries."""
    nnz, numel = _nnz_numel(item)
    return 1.0 - nnz / numel if numel else float("nan")


def pooled_sparsity(counts: Iterable[tuple[int, int]]) -> float:
    """1 − Σ nnz / Σ numel over (nnz, numel) pairs; NaN for no entries."""
    nnz = numel = 0
    for a, b in counts:
        nnz += a
        numel += b
    return 1.0 - nnz / numel if numel else float("nan")


def sparsity(update, modules: Iterable[str] | None = None) -> float:
    """Pooled sparsity of a `TaskUpdate` over `modules` (default: every adapted matrix).

    Modules the update lacks are skipped; NaN when none is left.
    """
    names = update.modules.keys() if modules is None else [m for m in modules if m in update.modules]
    return pooled_sparsity(_nnz_numel(update.modules[name]) for name in names)


def sparsity_by_module(update) -> dict[str, float]:
    """Sparsity of each adapted matrix of a `TaskUpdate`, by module name."""
    return {name: matrix_sparsity(module) for name, module in update.modules.items()}


def counts_by_module(update) -> dict[str, tuple[int, int]]:
    """(nnz, numel) of each adapted matrix: what every sparsity here is computed from."""
    return {name: _nnz_numel(module) for name, module in update.modules.items()}


def depth_profile(counts: dict[str, tuple[int, int]]) -> dict[str, dict[int, float]]:
    """Pooled sparsity per block: stack (`encoder.block`, `decoder.block`, `model.layers`) -> index -> value."""
    pooled: dict[str, dict[int, list[int]]] = {}
    for name, (nnz, numel) in counts.items():
        parsed = parse_block(name)
        if parsed is None:
            continue
        slot = pooled.setdefault(parsed[0], {}).setdefault(parsed[1], [0, 0])
        slot[0] += nnz
        slot[1] += numel
    return {
        stack: {index: (1.0 - nnz / numel if numel else float("nan")) for index, (nnz, numel) in sorted(blocks.items())}
        for stack, blocks in sorted(pooled.items())
    }


def sparsity_by_depth(update) -> dict[str, dict[int, float]]:
    """Pooled sparsity of each transformer block of a `TaskUpdate`, T5's encoder and decoder apart."""
    return depth_profile(counts_by_module(update))
