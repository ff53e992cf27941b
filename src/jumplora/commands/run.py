"""`jumplora run`: every `RunConfig` field as a flag, `--config run.yaml` for a file; flags win."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import typing
import warnings

from jumplora.config import RunConfig, current_names, read_yaml


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="train a method on a task order, evaluating after every task",
        description="Train a CL method on a task order with a fresh adapter per task, merging it after the "
        "task, and evaluate after every task. Every option can also be set in a YAML file given with "
        "--config (keys are the option names with underscores); flags override the file. Re-running the "
        "same command continues an interrupted run.",
    )
    parser.add_argument("--config", metavar="YAML", help="read options from this YAML file (default: none)")
    # values stay strings here: RunConfig converts and checks them, so that a bad one gives the same
    # one-line message from a flag as from the YAML file
    hints = typing.get_type_hints(RunConfig)
    for field in dataclasses.fields(RunConfig):
        meta = field.metadata
        kwargs: dict = {"dest": field.name, "default": argparse.SUPPRESS,
                        "help": f"{meta['help']} (default: {field.default})"}
        if hints[field.name] is bool:
            kwargs["metavar"] = "BOOL"
        elif "nargs" in meta:
            kwargs["nargs"] = meta["nargs"]
        if "choices" in meta:
            kwargs["choices"] = meta["choices"]
        # a renamed option keeps its old flag (--threshold for --threshold-mode)
        parser.add_argument(_flag(field.name), *map(_flag, meta.get("aliases", ())), **kwargs)
    parser.set_defaults(func=run_command)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    values = current_names(read_yaml(args.config), args.config) if getattr(args, "config", None) else {}
    field_names = {f.name for f in dataclasses.fields(RunConfig)}
    values.update({k: v for k, v in vars(args).items() if k in field_names})
    if values.get("continue_from"):  # the run extended gives every option the command does not
        from jumplora.extend import extension_config

        return extension_config(values.pop("continue_from"), values, where=args.config or "command line")
    return RunConfig.from_dict(values, source=args.config or "command line")


def run_command(args: argparse.Namespace) -> int:
    from jumplora.distributed import ScaleOut
    from jumplora.train import run_continual

    config = config_from_args(args)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        result = run_continual(config)
    if not ScaleOut.current().is_main:  # under accelerate launch: the main process prints the result
        return 0
    if result.already_finished:
        print(f"{result.run_dir} is finished; nothing was changed. Its result:")
    print(format_result(result))
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning (a neighbour folder skipped, ...) as one line, at once: runs are long."""
    print(f"jumplora run: warning: {message}", file=sys.stderr, flush=True)


def format_result(result) -> str:
    """The accuracy matrix and the metrics, for the terminal."""
    width = max(8, *(len(t) for t in result.tasks))
    lines = [f"accuracy matrix (%), row = after training task, column = evaluated task — {result.run_dir}"]
    lines.append(" " * (width + 2) + "".join(f"{t:>{width}}" for t in result.tasks))
    for task, row in zip(result.tasks, result.accuracy_matrix):
        cells = "".join(f"{'':>{width}}" if math.isnan(v) else f"{v:>{width}.1f}" for v in row)
        lines.append(f"{task:<{width}}  {cells}")
    metrics = result.metrics
    shown = []
    for key in ("OA", "BWT", "FWT"):
        value = metrics.get(key)
        shown.append(f"{key} {value:.2f}" if value is not None else f"{key} n/a")
    sparsity = metrics.get("sparsity") or {}
    if sparsity:
        shown.append(f"mean sparsity {sum(sparsity.values()) / len(sparsity):.1%}")
    lines.append(" | ".join(shown))
    return "\n".join(lines)
