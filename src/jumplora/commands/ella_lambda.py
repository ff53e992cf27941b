"""`jumplora ella-lambda RUN_DIR`: ELLA's λ for a new model by the ELLA authors' balancing rule."""

from __future__ import annotations

import argparse
import sys

from jumplora.commands.common import run_with_warnings
from jumplora.config import RunConfig

# the conventions `jumplora run --ella-scale` trains under (jumplora.analysis.ella_lambda computes each)
CONVENTIONS = RunConfig.field_meta("ella_scale")["choices"]
DEFAULT_CONVENTION = RunConfig.field_default("ella_scale")

DESCRIPTION = """\
Suggest ELLA's penalty weight for a model from a finished run without the penalty (IncLoRA or
JumpLoRA+IncLoRA, updates kept). For each task after the first it prints the task loss at the end of
training (CE), the penalty at lambda = 1, and lambda = CE / penalty, which makes the two equal (the
ELLA authors' rule: ratio close to 1). The suggestion is their geometric mean, rounded to one
significant figure. The penalty, hence lambda, depends on the ELLA convention the run will use
(--ella-scale of `jumplora run`): authors, (1/M) sum_m ||(beta dW_m) * W_past_m||^2 with W_past the
sum of the scaled merged updates and M the matrices that have a past; or unscaled-sum (legacy),
sum_m ||dW_m * W_past_m||^2 unscaled. Reads only the run directory: no model, no test data."""


def _ella_lambda(args) -> int:
    from jumplora.analysis.ella_lambda import balance_table, format_balances
    from jumplora.rundir import load_run

    run = load_run(args.run)
    balances = balance_table(run, tail=args.tail, convention=args.convention)
    sys.stdout.write(format_balances(run, balances, convention=args.convention))
    return 0


def run(args) -> int:
    return run_with_warnings("jumplora ella-lambda", _ella_lambda, args)


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ella-lambda", help="suggest ELLA's lambda for a model from an unregularised run",
        description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run", metavar="RUN_DIR", help="a finished inclora or jumplora run directory")
    parser.add_argument("--tail", type=float, default=0.2,
                        help="fraction of each task's last optimiser steps whose task loss is averaged")
    parser.add_argument("--convention", choices=CONVENTIONS, default=DEFAULT_CONVENTION,
                        help="ELLA penalty convention the lambda is for (jumplora run --ella-scale): authors "
                        "(scaled updates, mean over matrices) or unscaled-sum (legacy)")
    parser.set_defaults(func=run)
    return parser
