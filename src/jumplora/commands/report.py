"""`jumplora report RUN_DIR...`: the paper's tables (1-3, §5) from run directories."""

from __future__ import annotations

import argparse
import sys

from jumplora.commands.common import LAYER_HELP, parse_formats, prepare_output_dir, run_with_warnings

DESCRIPTION = """\
Aggregate run directories into the paper's tables: Table 1 (OA per order, SC/LS means), Table 2
(BWT and FWT, the latter both by §4.2's formula and by the authors' script, which Table 2
reports), Table 3 (ablation: threshold x update) and the §5 sparsity / Jaccard overlap, each next
to the paper's value. Runs are grouped by method and order; values are mean ± sample standard
deviation (ddof=1) over seeds. Writes report.md and one CSV per table into --out and prints the
Markdown to stdout. Folders written by `jumplora forget` may be given too: they add a
leave-one-task-out table (each task's accuracy change when one task's update is subtracted,
JumpLoRA beside its base method). Reads only these folders' files: no model, no training."""


def _report(args) -> int:
    from jumplora.analysis.layers import parse_layer
    from jumplora.analysis.report import FORMATS, build_report, write_report
    from jumplora.rundir import is_removal_directory, load_removal, load_runs

    formats = parse_formats(args.format, FORMATS)
    layer = parse_layer(args.layer)
    removals = [load_removal(path) for path in args.runs if is_removal_directory(path)]
    runs = load_runs([path for path in args.runs if not is_removal_directory(path)])
    report = build_report(runs, layer=layer, removals=removals)
    out = prepare_output_dir(args.out, runs)
    written = write_report(report, out, formats)
    sys.stdout.write(report.markdown())
    sys.stdout.flush()
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def run(args) -> int:
    return run_with_warnings("jumplora report", _report, args)


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report", help="tables of OA/BWT/FWT, ablation, sparsity and overlap from run directories",
        description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by `jumplora run` (and folders written by `jumplora forget`)")
    parser.add_argument("--out", default="./report", metavar="DIR", help="folder for report.md and the CSV files")
    parser.add_argument("--format", default="md,csv", help="comma-separated output formats: md, csv")
    parser.add_argument("--layer", default="middle", help=f"matrices for sparsity and overlap: {LAYER_HELP}")
    parser.set_defaults(func=run)
    return parser
