#!/usr/bin/env python
"""Peak memory of JumpLoRA's optimiser steps on a task's widest steps, with and without the token cap.

One process per setting (a process's peak resident set cannot be reset below what it has touched):
`--cap N` or `--cap none`. It loads the preset's model, builds the task's real steps, keeps the
`--steps` steps with the most padded tokens in one micro-batch, and runs them as a run does (frozen
weights held in bf16, the per-step fold, γ = 1), recording the resident set's high-water mark
(`memory.peak_mb`) after model loading and after the steps. bf16 autocast, the preset's settings.

    for cap in none 2048 1024; do python benchmarks/step_memory.py --task yahoo --cap $cap; done
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from _shared import ROOT, command_line, preset_config, sparse_stage, train_steps

from jumplora import memory
from jumplora.compute_dtype import frozen_weights_in, parks_masters
from jumplora.device import make_accelerator
from jumplora.models import load_model
from jumplora.step import optimiser_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="yahoo")
    parser.add_argument("--cap", default="2048", help="max_micro_batch_tokens, or none")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "step_memory.jsonl"))
    args = parser.parse_args()
    memory.limit_primitive_cache()  # as a run does, unless the environment sizes it
    if args.threads:
        torch.set_num_threads(args.threads)
    memory.configure_allocator()
    config = dataclasses.replace(preset_config(method="jumplora"), max_micro_batch_tokens=args.cap)
    accelerator = make_accelerator(config)
    loaded = load_model(config.model, progress=False)
    model, kind = loaded.model, loaded.kind
    steps = train_steps(config, args.task, loaded.tokenizer, kind)
    widest = sorted(steps, key=lambda s: -max(b["input_ids"].numel() for b in s))[: args.steps]
    ctx, method, optimizer, trainable = sparse_stage(config, loaded, args.task, steps)
    memory.release_memory()
    loaded_peak = memory.peak_mb()
    started = time.perf_counter()
    with frozen_weights_in(model, torch.bfloat16, park=parks_masters(config)):
        model.train()
        for step in widest:
            optimiser_step(ctx, method, accelerator, optimizer, trainable, step)
    record = {"command": command_line(), "task": args.task, "cap": config.max_micro_batch_tokens,
              "widest_micro_batch": [list(b["input_ids"].shape) for b in widest[0]],
              "peak_mb_after_loading": loaded_peak, "peak_mb_after_steps": memory.peak_mb(),
              "rss_mb_after_steps": memory.current_rss_mb(), "seconds": round(time.perf_counter() - started, 1)}
    with open(args.out, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
