"""Support overlap between tasks: Jaccard similarity of binary supports (§5).

For a matrix m, task t's support S_t^m is the set of entries its merged update changed. The
overlap of tasks t and k on m is

    J = |S_t^m ∩ S_k^m| / |S_t^m ∪ S_k^m|,   with 0/0 := 0

(two empty supports share no entry: no interference, so no overlap). Task t's overlap with the
past is J averaged over the matrices (of the chosen layer) that both tasks adapted, then over every
earlier task k < t. The first task has no earlier task: its value is NaN, not 0.

Supports are kept as bit-packed masks (numel/8 bytes per matrix), so a run's history fits in
memory even for every matrix of T5-large.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from jumplora.errors import UserError

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(bits: np.ndarray) -> int:
    return int(_POPCOUNT[bits].sum(dtype=np.int64))


def _mask(item) -> np.ndarray:
    """A boolean numpy mask from a `ModuleUpdate`, a torch tensor or an array (non-zero = in support)."""
    if hasattr(item, "support") and hasattr(item, "numel"):
        if item.kind == "sparse":
            mask = np.zeros(item.numel, dtype=bool)
            mask[item.indices.detach().cpu().numpy()] = True
            return mask.reshape(item.shape)
        item = item.support()
    array = item.detach().cpu().numpy() if hasattr(item, "detach") else np.asarray(item)
    return array != 0


@dataclass(frozen=True)
class PackedSupport:
    """A support as packed bits, its matrix shape and its size |S|."""

    shape: tuple[int, ...]
    bits: np.ndarray
    count: int

    @classmethod
    def of(cls, item) -> "PackedSupport":
        mask = _mask(item)
        bits = np.packbits(mask.reshape(-1))
        return cls(tuple(mask.shape), bits, _popcount(bits))

    def jaccard(self, other: "PackedSupport") -> float:
        if self.shape != other.shape:
            raise UserError(f"cannot compare supports of shapes {self.shape} and {other.shape}")
        inter = _popcount(np.bitwise_and(self.bits, other.bits))
        union = self.count + other.count - inter
        return inter / union if union else 0.0


def chance_jaccard(a: PackedSupport, b: PackedSupport) -> float:
    """E[J] of two independent uniformly random supports with a's and b's densities p, q:
    pq / (p + q − pq) (ratio of the expected intersection and union; exact as numel grows).
    The baseline an observed overlap is read against: below it, tasks avoid each other's entries."""
    numel = int(np.prod(a.shape))
    p, q = a.count / numel, b.count / numel
    union = p + q - p * q
    return p * q / union if union else 0.0


def jaccard(a, b) -> float:
    """|A ∩ B| / |A ∪ B| of two supports (masks, tensors or `ModuleUpdate`s of one shape); 0/0 := 0."""
    return PackedSupport.of(a).jaccard(PackedSupport.of(b))


class OverlapTracker:
    """Feed tasks in order; each gets its Jaccard with every earlier task, matrix by matrix."""

    def __init__(self):
        self.history: list[dict[str, PackedSupport] | None] = []

    def add(self, supports: dict[str, PackedSupport] | None) -> list[dict[str, float]]:
        """Record the next task's supports (None: the task has no update); return, for each earlier
        task k, {matrix: J} over the matrices both adapted ({} when either has no update)."""
        result = []
        for past in self.history:
            if supports is None or past is None:
                result.append({})
                continue
            result.append({m: supports[m].jaccard(past[m]) for m in supports if m in past})
        self.history.append(supports)
        return result


def mean_over_matrices(per_matrix: dict[str, float]) -> float:
    return float(np.mean(list(per_matrix.values()))) if per_matrix else float("nan")


def mean_over_earlier(rows: list[dict[str, float]]) -> float:
    """Mean over earlier tasks of the mean over matrices; NaN for no earlier task."""
    values = [mean_over_matrices(row) for row in rows if row]
    return float(np.mean(values)) if values else float("nan")


def overlap_matrix(updates: Sequence, modules: Iterable[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """J[t, k, m] for `TaskUpdate`s in task order and matrices `modules` (default: those of the first).

    Symmetric in t and k; J[t, t, m] = 1 where S_t^m is non-empty (0 if empty: 0/0 := 0); NaN where
    a task lacks the matrix. Returns (J, module names).
    """
    names = list(modules) if modules is not None else (sorted(updates[0].modules) if updates else [])
    supports = [
        {m: PackedSupport.of(u.modules[m]) for m in names if m in u.modules} for u in updates
    ]
    out = np.full((len(updates), len(updates), len(names)), np.nan)
    for t, st in enumerate(supports):
        for k in range(t + 1):
            for j, m in enumerate(names):
                if m in st and m in supports[k]:
                    out[t, k, j] = out[k, t, j] = st[m].jaccard(supports[k][m])
    return out, names


def mean_overlap_with_earlier(updates: Sequence, layer: str | int = "middle") -> np.ndarray:
    """Per task (in order): mean Jaccard with every earlier task over the matrices of `layer`.

    `layer` is "middle", "all", a block index or a block name (see `jumplora.analysis.layers`),
    resolved on the first update's matrices. The first task's value is NaN.
    """
    from jumplora.analysis.layers import select_modules

    if not updates:
        return np.zeros(0)
    selection = select_modules(updates[0].modules, layer)
    tracker = OverlapTracker()
    out = []
    for update in updates:
        supports = {m: PackedSupport.of(update.modules[m]) for m in selection.modules if m in update.modules}
        out.append(mean_over_earlier(tracker.add(supports)))
    return np.array(out, dtype=float)
