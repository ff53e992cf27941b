"""`jumplora plot RUN_DIR...`: accuracy heatmaps and the paper's Figures 2-4 from run directories.

Files (each in every --formats):

- `accuracy-RUN`: the accuracy matrix of each run (RUN: the run directory's name, made unique);
- `bwt-radial`: Figure 2, one polar plot per order, one line per method (finished runs only);
- `sparsity-overlap-orderK`: Figure 3, sparsity and Jaccard overlap per task for --layer;
- `sparsity-depth-orderK`: Figure 4, sparsity against block index (T5: encoder and decoder apart).

Figures 3 and 4 show runs with sparse (JumpLoRA) updates only: a plain LoRA update changes every
entry, its sparsity is 0 by construction. Lines are means over seeds.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
import zlib
from collections import Counter
from typing import Iterator

import numpy as np

from jumplora.analysis.command_report import parse_formats, run_with_warnings
from jumplora.analysis.rundir import RunWarning
from jumplora.errors import UserError

FORMATS = ("png", "svg", "pdf")
DESCRIPTION = """\
Draw figures from run directories: an annotated accuracy-matrix heatmap per run, the radial BWT
profile of Figure 2 (one polar plot per order, one line per method), sparsity and Jaccard overlap
per task (Figure 3) and sparsity against depth (Figure 4). Lines are means over seeds; every method
keeps one colour in every figure. File names are deterministic and printed as written."""


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
    from jumplora.analysis import plots
    from jumplora.analysis.groups import group_runs, order_sort_key
    from jumplora.analysis.stats import run_stats
    from jumplora.analysis.transfer import final_task_bwt

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
        overlap_series, depth_series, tasks, layers, skipped = {}, {}, None, [], []
        for group in (g for g in groups if g.order == order):
            members = [(r, run_stats(r, layer)) for r in group.runs if r.has_updates() and r.n_tasks]
            sparse = [(r, s) for r, s in members if s.is_sparse]
            skipped += [group.label] if members and not sparse else []
            tasks = tasks or (sparse[0][0].tasks if sparse else None)
            sparse = [(r, s) for r, s in sparse if r.tasks == tasks]
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
            print(f"jumplora plot: {', '.join(skipped)} ({order}): no sparse updates, left out of Figures 3-4",
                  file=sys.stderr)
        if overlap_series:
            slug = order_slug(order)
            yield f"sparsity-overlap-{slug}", plots.sparsity_overlap(
                order, tasks, overlap_series, "; ".join(layers), figsize=size, dpi=dpi
            )
            yield f"sparsity-depth-{slug}", plots.sparsity_depth(order, depth_series, figsize=size, dpi=dpi)


def parse_size(text: str | None):
    if text is None:
        return None
    try:
        width, height = (float(part) for part in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise UserError(f"invalid --size {text!r}: give width,height in inches, e.g. 8,5") from None
    if width <= 0 or height <= 0:
        raise UserError(f"invalid --size {text!r}: width and height must be positive")
    return (width, height)


def _plot(args) -> int:
    from jumplora.analysis.files import prepare_output_dir
    from jumplora.analysis.layers import parse_layer
    from jumplora.analysis.plots import new_figure, save_figure
    from jumplora.analysis.rundir import load_runs

    formats = parse_formats(args.formats, FORMATS)
    layer = parse_layer(args.layer)
    size = parse_size(args.size)
    if args.dpi <= 0:
        raise UserError(f"invalid --dpi {args.dpi}: must be positive")
    new_figure((1, 1), 10)  # fail early, before reading any update, if matplotlib is missing
    runs = load_runs(args.runs)
    out = prepare_output_dir(args.out, runs)
    for stem, figure in figures(runs, layer=layer, dpi=args.dpi, size=size):
        for path in save_figure(figure, out, stem, formats):
            print(path, flush=True)
    return 0


def run(args) -> int:
    return run_with_warnings("jumplora plot", _plot, args)


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "plot", help="accuracy heatmaps, radial BWT, sparsity and overlap figures from run directories",
        description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by `jumplora run`")
    parser.add_argument("--out", default="./plots", metavar="DIR", help="folder for the figures")
    parser.add_argument("--formats", default="png,svg", help=f"comma-separated file formats: {', '.join(FORMATS)}")
    parser.add_argument(
        "--layer", default="middle",
        help="matrices for Figure 3: 'middle' (the middle block; T5: middle encoder block), 'all', "
        "a block index, or a block name such as decoder.block.12",
    )
    parser.add_argument("--dpi", type=float, default=150.0, help="pixels per inch of PNG files")
    parser.add_argument("--size", default=None, metavar="W,H",
                        help="figure size in inches for every figure (default: sized to the number of tasks)")
    parser.set_defaults(func=run)
    return parser
