"""Which figures `jumplora plot` draws from many runs, and what each line averages.

Files (each in every --formats):

- `accuracy-RUN`: the accuracy matrix of each run (RUN: the run directory's name, made unique);
- `bwt-radial`: Figure 2, one polar plot per order, one line per method (finished runs only);
- `sparsity-overlap-orderK`: Figure 3, sparsity and Jaccard overlap per stage for the layer;
- `sparsity-depth-orderK`: Figure 4, sparsity against block index (T5: encoder and decoder apart).

Figures 3 and 4 show runs with sparse (JumpLoRA) updates only: a plain LoRA update changes every
entry, its sparsity is 0 by construction. Lines are means over seeds. The drawing itself is
`jumplora.analysis.plots`'.
"""

from __future__ import annotations

import re
import warnings
import zlib
from collections import Counter
from typing import Iterator

import numpy as np

from jumplora.analysis import plots
from jumplora.analysis.groups import group_runs, order_sort_key
from jumplora.analysis.stats import run_stats
from jumplora.analysis.transfer import final_task_bwt
from jumplora.rundir import RunWarning


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "run"


def order_slug(order) -> str:
    if isinstance(order, int):
        return f"order{order}"
    return f"order-{zlib.crc32(str(order).encode('utf-8')):08x}"


def run_stems(runs) -> list[str]:
    """Unique file stems per run: its directory name; parent_name where names repeat; then -2, -3."""
    names = [_slug(run.path.name) for run in runs]
    counts = Counter(names)
    stems = [
        _slug(f"{run.path.resolve().parent.name}_{run.path.name}") if counts[name] > 1 else name
        for run, name in zip(runs, names)
    ]
    seen: Counter = Counter()
    unique = []
    for stem in stems:
        seen[stem] += 1
        unique.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return unique


def _mean_rows(arrays) -> np.ndarray:
    """Per-position mean over arrays of one length, ignoring NaN (NaN where all are NaN)."""
    stacked = np.vstack([np.asarray(a, dtype=float) for a in arrays])
    counts = np.sum(np.isfinite(stacked), axis=0)
    sums = np.nansum(stacked, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _mean_depth(profiles) -> dict:
    collected: dict = {}
    for profile in profiles:
        for stack, blocks in profile.items():
            for index, value in blocks.items():
                collected.setdefault(stack, {}).setdefault(index, []).append(value)
    return {s: {i: float(np.nanmean(v)) for i, v in sorted(b.items())} for s, b in sorted(collected.items())}


def figures(runs, layer="middle", dpi: float = 150, size=None) -> Iterator[tuple[str, object]]:
    """(file stem, Figure) for every figure of `runs`, drawn one at a time."""
    for run, stem in zip(runs, run_stems(runs)):
        if run.n_tasks:
            yield f"accuracy-{stem}", plots.accuracy_heatmap(run, figsize=size, dpi=dpi)

    groups = group_runs(runs)
    orders = sorted({g.order for g in groups}, key=order_sort_key)

    panels = []
    for order in orders:
        series, tasks = {}, None
        for group in (g for g in groups if g.order == order):
            finished = [r for r in group.runs if r.finished and r.n_tasks]
            tasks = tasks or (finished[0].tasks if finished else None)
            finished = [r for r in finished if r.tasks == tasks]
            if finished:
                series[group.label] = _mean_rows(final_task_bwt(r.accuracy) for r in finished)
        if series:
            panels.append((order, tasks, series))
    if panels:
        yield "bwt-radial", plots.bwt_radial(panels, figsize=size, dpi=dpi)
    else:
        warnings.warn("no finished run: bwt-radial not drawn", RunWarning, stacklevel=2)

    for order in orders:
        overlap_series, depth_series, stages, layers, skipped = {}, {}, None, [], []
        for group in (g for g in groups if g.order == order):
            members = [(r, run_stats(r, layer)) for r in group.runs if r.has_updates() and r.n_tasks]
            sparse = [(r, s) for r, s in members if s.is_sparse]
            skipped += [group.label] if members and not sparse else []
            stages = stages or (sparse[0][0].stage_names if sparse else None)  # one stage per update
            sparse = [(r, s) for r, s in sparse if r.stage_names == stages]
            if not sparse:
                continue
            overlap_series[group.label] = (
                _mean_rows(s.sparsity_layer for _, s in sparse), _mean_rows(s.jaccard for _, s in sparse),
                _mean_rows(s.jaccard_chance for _, s in sparse),
            )
            depth_series[group.label] = _mean_depth(s.mean_depth() for _, s in sparse)
            for _, s in sparse:
                if s.layer is not None and s.layer.description not in layers:
                    layers.append(s.layer.description)
        if skipped:
            warnings.warn(f"{', '.join(skipped)} ({order}): no sparse updates, left out of Figures 3-4",
                          RunWarning, stacklevel=2)
        if overlap_series:
            slug = order_slug(order)
            yield f"sparsity-overlap-{slug}", plots.sparsity_overlap(
                order, stages, overlap_series, "; ".join(layers), figsize=size, dpi=dpi
            )
            yield f"sparsity-depth-{slug}", plots.sparsity_depth(order, depth_series, figsize=size, dpi=dpi)


