"""Continual-learning metrics over the accuracy matrix (paper §4.2).

The accuracy matrix ``a`` is T × T, in percent: ``a[i][j]`` is the accuracy on task j (0-based
position in the task order) after training task i. Entries that were not evaluated are NaN (a list
of lists may hold ``None`` for them). Entries above the diagonal (a task not yet trained) are never
used. With T tasks and the paper's 1-based indices mapped to 0-based rows:

- OA  = 1/T · Σ_j a[T-1][j]                         (Chaudhry et al., 2018)
- BWT = 1/(T-1) · Σ_{i<T-1} (a[T-1][i] − a[i][i])   (Ke and Liu, 2022); undefined for T = 1
- FWT = 1/T · Σ_i (a[i][i] − a0[i])                 (Lopez-Paz and Ranzato, 2017), a0[i] the
  accuracy of task i trained alone
- FWT_final = 1/T · Σ_i (a[T-1][i] − a0[i]) = OA − 1/T · Σ_i a0[i]

FWT is the paper's §4.2 formula. FWT_final is what the authors' released script
(evaluation/compute_bwt_fwt.py) computes, and what the paper's Table 2 reports: there OA − FWT is
the same constant (the mean single-task accuracy) for every method of a benchmark.

plus the per-task forgetting measure of Chaudhry et al. (2018), which the paper does not report.

Everything returns plain Python floats at full precision (the CSV and the terminal round for display).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def as_matrix(matrix) -> np.ndarray:
    """The accuracy matrix as a float T × T array (``None`` → NaN); ValueError if not square."""
    try:
        array = np.array(matrix, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"accuracy matrix: not a rectangular table of numbers ({exc})") from None
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(
            f"accuracy matrix must be square (T × T: row i = after task i, column j = task j), "
            f"got shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError("accuracy matrix is empty (no tasks)")
    if np.isinf(array).any():
        raise ValueError("accuracy matrix holds infinite values")
    return array


def _require(array: np.ndarray, cells: list[tuple[int, int]], metric: str) -> None:
    missing = [(i, j) for i, j in cells if math.isnan(array[i, j])]
    if missing:
        shown = ", ".join(f"a[{i}][{j}]" for i, j in missing[:6])
        more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        raise ValueError(f"{metric} needs accuracy entries that were not evaluated (NaN): "
                         f"{shown}{more}")


def overall_accuracy(matrix) -> float:
    """OA: the mean accuracy over all T tasks after training the last one (the final row)."""
    a = as_matrix(matrix)
    last = a.shape[0] - 1
    _require(a, [(last, j) for j in range(last + 1)], "OA")
    return float(np.mean(a[last]))


def backward_transfer(matrix) -> float | None:
    """BWT: the mean change on tasks 0..T-2 between just after learning them and the end.

    Negative values mean forgetting. None when T = 1 (no earlier task).
    """
    a = as_matrix(matrix)
    n = a.shape[0]
    if n == 1:
        return None
    last = n - 1
    _require(a, [(last, i) for i in range(last)] + [(i, i) for i in range(last)], "BWT")
    return float(np.mean([a[last, i] - a[i, i] for i in range(last)]))


def _single_values(single, n: int, tasks: Sequence[str] | None) -> list[float] | None:
    """The accuracies of the tasks trained alone, in task order; None if any is unavailable."""
    if single is None:
        return None
    if isinstance(single, Mapping):
        if tasks is None:
            raise ValueError("forward transfer: single-task accuracies given by task name need "
                             "the task names (tasks=...)")
        if len(tasks) != n:
            raise ValueError(f"forward transfer: {len(tasks)} task names for a {n} × {n} matrix")
        values = [single.get(task) for task in tasks]
    else:
        values = list(single)
        if len(values) != n:
            raise ValueError(f"forward transfer: {len(values)} single-task accuracies for a "
                             f"{n} × {n} matrix")
    out = []
    for value in values:
        if value is None:
            return None
        value = float(value)
        if math.isnan(value):
            return None
        out.append(value)
    return out


def forward_transfer(matrix, single, tasks: Sequence[str] | None = None) -> float | None:
    """FWT: mean over all tasks of (accuracy just after learning task i) − (task i trained alone).

    `single` gives the trained-alone accuracies a0: a list in task order, or a dict keyed by task
    name (then `tasks` names the matrix's columns). None when `single` is None or lacks (None /
    NaN / absent key) any task's accuracy.
    """
    a = as_matrix(matrix)
    n = a.shape[0]
    base = _single_values(single, n, tasks)
    if base is None:
        return None
    _require(a, [(i, i) for i in range(n)], "FWT")
    return float(np.mean([a[i, i] - base[i] for i in range(n)]))


def forward_transfer_final(matrix, single, tasks: Sequence[str] | None = None) -> float | None:
    """FWT as the authors' script computes it (the paper's Table 2): mean over all tasks of
    (accuracy on task i after the last task) − (task i trained alone), i.e. OA − mean(a0).

    `single` and `tasks` as for `forward_transfer`; None when `single` lacks any task's accuracy.
    """
    a = as_matrix(matrix)
    n = a.shape[0]
    base = _single_values(single, n, tasks)
    if base is None:
        return None
    last = n - 1
    _require(a, [(last, i) for i in range(n)], "FWT_final")
    return float(np.mean([a[last, i] - base[i] for i in range(n)]))


def forgetting(matrix) -> list[float | None]:
    """Per-task forgetting, the standard measure of Chaudhry et al. (2018):

    f_i = max_{i ≤ k < T-1} a[k][i] − a[T-1][i]   for i < T-1, and None for the last task

    i.e. how far the final accuracy on task i lies below the best it had before the last task.
    Needs a[i][i] and a[T-1][i]; intermediate entries a[k][i] (i < k < T-1) that were not evaluated
    (NaN) are left out of the max.
    """
    a = as_matrix(matrix)
    n = a.shape[0]
    last = n - 1
    _require(a, [(i, i) for i in range(last)] + [(last, i) for i in range(last)], "forgetting")
    out: list[float | None] = []
    for i in range(last):
        best = float(np.nanmax(a[i:last, i]))
        out.append(best - float(a[last, i]))
    out.append(None)
    return out


def compute_metrics(matrix, tasks: Sequence[str], single=None) -> dict:
    """OA, BWT, FWT, FWT_final (None where not available) and forgetting {task: value} of one run.

    FWT is §4.2's (diagonal − single), FWT_final the authors' script's and Table 2's (final row −
    single). `tasks` names the matrix's columns in order; `single` (list in task order or dict by
    task name) holds the trained-alone accuracies for both. Values are full-precision floats.
    """
    a = as_matrix(matrix)
    tasks = list(tasks)
    if len(tasks) != a.shape[0]:
        raise ValueError(f"{len(tasks)} task names for a {a.shape[0]} × {a.shape[0]} "
                         f"accuracy matrix")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"task names repeat: {tasks}")
    return {
        "OA": overall_accuracy(a),
        "BWT": backward_transfer(a),
        "FWT": forward_transfer(a, single, tasks),
        "FWT_final": forward_transfer_final(a, single, tasks),
        "forgetting": dict(zip(tasks, forgetting(a))),
    }
