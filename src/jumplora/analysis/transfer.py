"""How each task's accuracy evolves as later tasks are learned (the radial BWT of Figure 2).

With a[k][i] the accuracy on task i after training task k (0-based rows and columns of the
accuracy matrix), task i's profile is a[k][i] − a[i][i] for k = i, i+1, ..., T−1: it starts at 0
and ends at task i's contribution to BWT (§4.2). The OA/BWT/FWT summaries themselves are
`jumplora.metrics`' and are read from metrics.json, not recomputed here.
"""

from __future__ import annotations

import numpy as np


def bwt_profile(matrix) -> list[np.ndarray]:
    """For each task i, the array a[k][i] − a[i][i] for k ≥ i (NaN where a cell was not evaluated)."""
    a = np.asarray(matrix, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"an accuracy matrix is square, got shape {a.shape}")
    return [a[i:, i] - a[i, i] for i in range(a.shape[0])]


def final_task_bwt(matrix) -> np.ndarray:
    """Per task, the last evaluated value of its profile (a[T−1][i] − a[i][i] in a finished run).

    The last task's value is 0; NaN for a task never evaluated right after it was learned.
    """
    out = []
    for profile in bwt_profile(matrix):
        seen = profile[~np.isnan(profile)]
        out.append(seen[-1] if seen.size and not np.isnan(profile[0]) else np.nan)
    return np.array(out, dtype=float)
