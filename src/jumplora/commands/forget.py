"""`jumplora forget RUN --task NAME [--out DIR]`: a finished run's model without one task's update, evaluated."""

from __future__ import annotations

import argparse
import math
import sys

from jumplora.commands.common import run_with_warnings

DESCRIPTION = """\
Subtract one task's stored update (exactly the β·ΔW_final that was merged) from a finished run's
final model, evaluate every task of the run with the run's own protocol, data and evaluation
options (its config.yaml; the data must be the files its data.json records), and write forget.json
into --out (default: RUN-forget-TASK beside the run): the accuracy row, the source run's final row,
the task removed and the source run. The run itself is only read. `jumplora report` given these
folders adds a leave-one-task-out table."""


def format_removal(removal) -> str:
    width = max(8, *(len(t) for t in removal.tasks))
    lines = [f"without {removal.removed}'s update: accuracy (%) of every task, the run's own, the change",
             " " * (width + 2) + "".join(f"{t:>{width}}" for t in removal.tasks)]
    for label, value in (("run", lambda t: removal.source_accuracy.get(t, math.nan)),
                         ("forget", lambda t: removal.accuracy.get(t, math.nan)), ("change", removal.change)):
        cells = "".join(f"{'':>{width}}" if math.isnan(v) else f"{v:>{width}.1f}" for v in map(value, removal.tasks))
        lines.append(f"{label:<{width}}  {cells}")
    return "\n".join(lines)


def _forget(args) -> int:
    from jumplora.forget import forget_task  # here: torch only when the command runs

    removal = forget_task(args.run, args.task, args.out)
    print(format_removal(removal))
    print(f"wrote {removal.path}", file=sys.stderr)
    sys.stdout.flush()
    return 0


def run(args) -> int:
    return run_with_warnings("jumplora forget", _forget, args)


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "forget", help="evaluate a run's final model with one task's update subtracted",
        description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run", metavar="RUN_DIR", help="a finished run directory written by `jumplora run`")
    parser.add_argument("--task", required=True, metavar="NAME", help="the task whose update is taken out")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="the folder to write, new or empty (default: RUN_DIR-forget-NAME beside the run)")
    parser.set_defaults(func=run)
    return parser
