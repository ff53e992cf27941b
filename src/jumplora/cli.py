"""The `jumplora` command: one sub-command per job, each registered by the module that owns it."""

from __future__ import annotations

import argparse
import importlib
import sys

from jumplora import allocator
from jumplora.errors import UserError

# sub-command name -> module exposing `register(subparsers)`; imported lazily so that
# `jumplora data` does not pay for importing torch models it never uses.
SUBCOMMANDS = {
    "run": "jumplora.commands.run",
    "data": "jumplora.commands.data",
    "report": "jumplora.commands.report",
    "plot": "jumplora.commands.plot",
    "ella-lambda": "jumplora.commands.ella_lambda",
    "compact": "jumplora.commands.compact",
    "export": "jumplora.commands.export",
    "forget": "jumplora.commands.forget",
}
# the commands that train or evaluate a model: relaunched under mimalloc (allocator.py) when run from a shell
HEAVY = ("run", "forget")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jumplora",
        description="Continual learning with JumpReLU-gated sparse LoRA adapters (JumpLoRA).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in SUBCOMMANDS.items():
        if only is not None and name != only:
            # keep the name listed in the help without importing its module
            subparsers.add_parser(name)
            continue
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; `argv` given (tests, Python callers): the same, in this process as it is."""
    from_shell = argv is None
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    try:
        if from_shell and args.command in HEAVY:  # after parsing: --help and bad flags need no relaunch
            allocator.relaunch_under_mimalloc([sys.executable, "-m", "jumplora", *argv])
        return int(args.func(args) or 0)
    except UserError as error:
        print(f"jumplora {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jumplora {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
