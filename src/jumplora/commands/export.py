"""`jumplora export RUN --out DIR [--after-task NAME]`: the continually trained model as a Hugging Face folder."""

from __future__ import annotations

import argparse
import sys

from jumplora.commands.common import run_with_warnings

DESCRIPTION = """\
Rebuild a run's model after its last task (or after --after-task) from the base model of its
config.yaml and the merged updates it stored, and save it as a standard Hugging Face folder
(model.safetensors, config.json, generation_config.json, the tokenizer's files, and
jumplora_export.json saying where it came from). AutoModelForCausalLM / AutoModelForSeq2SeqLM
.from_pretrained(DIR) load it without jumplora. DIR must be new or empty; the run is only read."""


def _export(args) -> int:
    from jumplora.export import export_model  # here: torch only when the command runs

    out = export_model(args.run, args.out, args.after_task)
    print(f"{args.run}: exported the model after {args.after_task or 'the last task'} to {out}")
    sys.stdout.flush()
    return 0


def run(args) -> int:
    return run_with_warnings("jumplora export", _export, args)


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export", help="save a run's model (after its last or a named task) as a Hugging Face folder",
        description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run", metavar="RUN_DIR", help="a run directory written by `jumplora run`")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write (new or empty)")
    parser.add_argument("--after-task", metavar="NAME", default=None,
                        help="the model after this task of the run (default: after its last task)")
    parser.set_defaults(func=run)
    return parser
