"""`jumplora compact RUN_DIR...`: keep what the sparsity/overlap analyses need, in a few KB per task."""

from __future__ import annotations

import argparse
import sys

from jumplora.commands.common import LAYER_HELP, run_with_warnings

DESCRIPTION = """\
Write supports/NN-TASK.safetensors beside a JumpLoRA run's updates/: every adapted matrix's shape
and count of changed entries, and the bit-packed support of each matrix of one layer. `report` and
`plot` read them for tasks whose updates/ file is gone and give the same sparsity (all matrices, by
depth, that layer) and Jaccard overlap (that layer). The updates/ files are left in place: delete
them yourself once the supports are written (they are tens of MB per task)."""


def _compact(args) -> int:
    from jumplora.analysis.compact import write_supports
    from jumplora.analysis.layers import parse_layer
    from jumplora.rundir import load_runs

    layer = parse_layer(args.layer)
    for run in load_runs(args.runs):
        written = write_supports(run, layer)
        size = sum(path.stat().st_size for path in written)
        print(f"{run.path}: wrote {len(written)} supports files ({size / 1024:.0f} KiB) to {written[0].parent}")
    sys.stdout.flush()
    return 0


def run(args) -> int:
    return run_with_warnings("jumplora compact", _compact, args)


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compact", help="keep a JumpLoRA run's supports (a few KB per task) for sparsity and overlap",
        description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by `jumplora run`")
    parser.add_argument("--layer", default="middle", help=f"whose supports to keep: {LAYER_HELP}")
    parser.set_defaults(func=run)
    return parser
