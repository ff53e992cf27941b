"""`jumplora plot RUN_DIR...`: accuracy heatmaps and the paper's Figures 2-4 from run directories.

Which figures and what they average is `jumplora.analysis.figures`'; this module is the command.
"""

from __future__ import annotations

import argparse

from jumplora.commands.common import LAYER_HELP, parse_formats, prepare_output_dir, run_with_warnings
from jumplora.errors import UserError

FORMATS = ("png", "svg", "pdf")
DESCRIPTION = """\
Draw figures from run directories: an annotated accuracy-matrix heatmap per run, the radial BWT
profile of Figure 2 (one polar plot per order, one line per method), sparsity and Jaccard overlap
per task (Figure 3) and sparsity against depth (Figure 4). Lines are means over seeds; every method
keeps one colour in every figure. File names are deterministic and printed as written."""


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
    from jumplora.analysis.figures import figures
    from jumplora.analysis.layers import parse_layer
    from jumplora.analysis.plots import new_figure, save_figure
    from jumplora.rundir import load_runs

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
    parser.add_argument("--layer", default="middle", help=f"matrices for Figure 3: {LAYER_HELP}")
    parser.add_argument("--dpi", type=float, default=150.0, help="pixels per inch of PNG files")
    parser.add_argument("--size", default=None, metavar="W,H",
                        help="figure size in inches for every figure (default: sized to the number of tasks)")
    parser.set_defaults(func=run)
    return parser
