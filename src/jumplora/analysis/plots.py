"""The paper's figures from run directories (Figures 2-4) and per-run accuracy heatmaps.

Every function returns a `matplotlib.figure.Figure` drawn on the Agg canvas (no pyplot, no GUI,
no global state); `save_figure` writes it. Its pixel size is figsize × dpi exactly (no tight
bounding box; a constrained layout keeps labels inside). matplotlib is the optional `plot`
extra: it is imported here, inside the functions, with a one-line `UserError` when missing.

Colours are fixed per method (IncLoRA blue, JumpLoRA + IncLoRA orange, ELLA green, JumpLoRA +
ELLA red, EWC grey; other methods a colour derived from their name), so a method looks the same in
every figure; variants of one method share its colour and differ in line style.
"""

from __future__ import annotations

import textwrap
import zlib
from pathlib import Path

import numpy as np

from jumplora.analysis.groups import order_label
from jumplora.analysis.layers import stack_label
from jumplora.rundir import Run, atomic_write
from jumplora.errors import UserError

METHOD_COLOURS = {
    "IncLoRA": "#1f77b4",
    "JumpLoRA + IncLoRA": "#ff7f0e",
    "ELLA": "#2ca02c",
    "JumpLoRA + ELLA": "#d62728",
    "EWC": "#7f7f7f",
}
_OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31")
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _base(label: str) -> str:
    return label.split(" [", 1)[0]


def method_colour(label: str) -> str:
    """The fixed colour of a method label (a variant "X [threshold=local]" takes X's colour)."""
    base = _base(label)
    if base in METHOD_COLOURS:
        return METHOD_COLOURS[base]
    return _OTHER_COLOURS[zlib.crc32(base.encode("utf-8")) % len(_OTHER_COLOURS)]


def line_style(label: str, labels) -> dict:
    """Colour, line style and marker of `label` among the `labels` drawn in one figure."""
    siblings = sorted({lab for lab in labels if _base(lab) == _base(label)})
    index = siblings.index(label) if label in siblings else 0
    return {
        "color": method_colour(label),
        "linestyle": _LINESTYLES[index % len(_LINESTYLES)],
        "marker": _MARKERS[index % len(_MARKERS)],
    }


def new_figure(figsize, dpi: float):
    """An Agg-backed Figure with a constrained layout; UserError if matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("plotting needs matplotlib: pip install 'jumplora[plot]'") from None
    figure = Figure(figsize=tuple(figsize), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, out: Path, stem: str, formats=("png", "svg")) -> list[Path]:
    """Write `out/stem.FORMAT` for each format, atomically; return the paths written."""
    written = []
    for fmt in formats:
        path = Path(out) / f"{stem}.{fmt}"
        written.append(atomic_write(path, lambda tmp: figure.savefig(tmp, format=fmt, dpi=figure.dpi)))
    return written


def _task_ticks(ax, tasks, axis="x", rotation=45):
    positions = np.arange(len(tasks))
    if axis == "x":
        ax.set_xticks(positions, labels=tasks, rotation=rotation, ha="right" if rotation else "center",
                      rotation_mode="anchor")
    else:
        ax.set_yticks(positions, labels=tasks)


def _legend(figure, axes):
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        longest = max(len(label) for label in labels)
        per_row = max(1, int(figure.get_figwidth() * 72 / (7.5 * longest + 40)))  # ~7.5 pt per character
        figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), per_row), frameon=False)


# -- Accuracy matrix ----------------------------------------------------------------------------
def accuracy_heatmap(run: Run, *, figsize=None, dpi: float = 150):
    """Heatmap of a[i][j] (%) with annotated cells; rows: after training task i, columns: task j."""
    n = run.n_tasks
    figure = new_figure(figsize or (max(4.5, 0.6 * n + 2.5), max(3.8, 0.5 * n + 2.0)), dpi)
    ax = figure.add_subplot()
    matrix = np.ma.masked_invalid(run.accuracy)
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")
    image = ax.imshow(matrix, cmap=cmap, vmin=0, vmax=100, aspect="auto")
    size = 9 if n <= 6 else 7 if n <= 10 else 5.5
    for i in range(n):
        for j in range(n):
            value = run.accuracy[i, j]
            if np.isfinite(value):
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=size,
                        color="black" if value > 60 else "white")
    _task_ticks(ax, run.tasks, "x")
    _task_ticks(ax, run.tasks, "y")
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training task")
    seed = f", seed {run.seed}" if run.seed is not None else ""
    ax.set_title(f"Accuracy (%)\n{run.label}, {order_label(run.order)}{seed}", fontsize=10)
    colorbar = figure.colorbar(image, ax=ax)
    colorbar.set_label("accuracy (%)")
    return figure


# -- Figure 2: radial BWT -------------------------------------------------------------------------
def bwt_radial(panels, *, figsize=None, dpi: float = 150):
    """One polar plot per order: tasks around the circle, one closed line per method.

    `panels`: list of (order, tasks, {label: per-task BWT array}), the BWT of task i being
    a[T][i] − a[i][i] (`jumplora.analysis.transfer.final_task_bwt`, averaged over seeds).
    """
    if not panels:
        raise UserError("no finished run to draw the BWT profile from")
    figure = new_figure(figsize or (5.0 * len(panels), 5.6), dpi)
    labels = [label for _, _, series in panels for label in series]
    axes = []
    for position, (order, tasks, series) in enumerate(panels, start=1):
        ax = figure.add_subplot(1, len(panels), position, projection="polar")
        axes.append(ax)
        theta = np.linspace(0, 2 * np.pi, len(tasks), endpoint=False)
        closed = np.append(theta, theta[:1])
        values = np.concatenate([np.asarray(v, dtype=float) for v in series.values()] + [np.zeros(1)])
        values = values[np.isfinite(values)]
        low, high = float(values.min()), float(values.max())
        pad = max(1.0, 0.1 * (high - low))
        ax.set_ylim(low - pad, high + pad)
        ax.plot(np.linspace(0, 2 * np.pi, 200), np.zeros(200), color="#888888", linewidth=0.8, linestyle="--")
        for label, bwt in series.items():
            bwt = np.asarray(bwt, dtype=float)
            ax.plot(closed, np.append(bwt, bwt[:1]), label=label, markersize=3, linewidth=1.4,
                    **line_style(label, labels))
        ax.set_xticks(theta, labels=tasks, fontsize=8 if len(tasks) > 8 else 9)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(order_label(order))
    figure.suptitle("BWT per task after the last task: a[T][i] − a[i][i] (%)")
    _legend(figure, axes)
    return figure


# -- Figure 3: sparsity and overlap per task ---------------------------------------------------------
def sparsity_overlap(order, tasks, series, layer: str = "middle layer", *, figsize=None, dpi: float = 150):
    """Two panels over the tasks in training order: sparsity (%) and mean Jaccard with earlier tasks.

    `series`: {label: (sparsity per task (fraction), Jaccard per task[, Jaccard at chance per task])};
    the chance level (independent supports of the same densities) is drawn dashed in the same colour.
    """
    n = len(tasks)
    figure = new_figure(figsize or (max(8.0, 0.55 * n + 4), 4.6), dpi)
    ax_s, ax_j = figure.subplots(1, 2)
    x = np.arange(n)
    with_chance = False
    for label, (sparsity, overlap, *chance) in series.items():
        style = line_style(label, series)
        ax_s.plot(x, 100.0 * np.asarray(sparsity, dtype=float), label=label, markersize=4, **style)
        ax_j.plot(x, np.asarray(overlap, dtype=float), label=label, markersize=4, **style)
        if chance and chance[0] is not None:
            with_chance = True
            ax_j.plot(x, np.asarray(chance[0], dtype=float), label="_chance", color=style["color"],
                      linestyle=":", linewidth=1.2)
    for ax in (ax_s, ax_j):
        _task_ticks(ax, tasks, "x")
        ax.set_xlabel("task (training order)")
        ax.grid(alpha=0.3)
    ax_s.set_ylabel("sparsity (%)")
    ax_s.set_title("Sparsity of ΔW_jump")
    ax_j.set_ylabel("Jaccard similarity")
    ax_j.set_title("Mean Jaccard overlap with earlier tasks" + ("\n(dotted: at chance)" if with_chance else ""))
    figure.suptitle(textwrap.fill(f"{order_label(order)}: {layer}", 110), fontsize=11)
    _legend(figure, [ax_s])
    return figure


# -- Figure 4: sparsity by depth ---------------------------------------------------------------
def sparsity_depth(order, series, *, figsize=None, dpi: float = 150):
    """Sparsity (%) against block index, one line per method, one panel per stack (T5: encoder, decoder).

    `series`: {label: {stack: {block index: sparsity (fraction)}}}, averaged over tasks.
    """
    stacks = sorted({stack for profile in series.values() for stack in profile},
                    key=lambda s: ({"encoder": 0, "decoder": 1}.get(stack_label(s), 2), s))
    if not stacks:
        raise UserError("no adapted matrix in a numbered block: nothing to draw against depth")
    figure = new_figure(figsize or (5.0 * len(stacks), 4.4), dpi)
    from matplotlib.ticker import MaxNLocator

    axes = np.atleast_1d(figure.subplots(1, len(stacks), sharey=True))
    for ax, stack in zip(axes, stacks):
        for label, profile in series.items():
            blocks = profile.get(stack, {})
            if not blocks:
                continue
            index = sorted(blocks)
            ax.plot(index, [100.0 * blocks[i] for i in index], label=label, markersize=3, **line_style(label, series))
        name = stack_label(stack)
        ax.set_title(name.capitalize() if name in ("encoder", "decoder") else name)
        ax.set_xlabel("block index (depth)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("sparsity (%)")
    figure.suptitle(f"Sparsity by depth, {order_label(order)} (mean over tasks)")
    _legend(figure, list(axes))
    return figure
