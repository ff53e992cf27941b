#!/usr/bin/env python
"""What glibc malloc's settings cost in time and memory over a task's real steps, one process each.

The process runs `--steps` consecutive optimiser steps of the task as a run does (frozen weights in
bf16, the per-step fold, γ = 1, the token cap) under one allocator setting, and records after each
step its wall seconds, the CPU seconds it spent in user and kernel mode (getrusage: page faults are
kernel time), its minor page faults, the resident set and the high-water mark:

    glibc        glibc's own dynamic thresholds (what a plain PyTorch process gets)
    mmap-1mib    mmap threshold fixed at 1 MiB, trim at 32 MiB (the project's setting until this
                 benchmark: every block over 1 MiB is mapped fresh and faulted in page by page)
    trim-step    glibc's thresholds, and malloc_trim(0) after every optimiser step
                 (trimming inside the timed step)
    mmap-NMIB+trim  the mmap threshold fixed at N MiB (4 or 16), trim at 32 MiB, and malloc_trim(0)
                 after every step

    for a in glibc mmap-1mib trim-step mmap-4mib+trim mmap-16mib+trim; do
        python benchmarks/allocator.py --allocator $a; done
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch
from _shared import ROOT, command_line, preset_config, sparse_stage, train_steps

from jumplora import memory
from jumplora.allocator import preloaded_allocator
from jumplora.compute_dtype import frozen_weights_in, parks_masters
from jumplora.device import make_accelerator
from jumplora.models import load_model
from jumplora.step import optimiser_step

ALLOCATORS = ("glibc", "mmap-1mib", "trim-step", "mmap-4mib+trim", "mmap-16mib+trim", "mimalloc")
MMAP_MIB = {"mmap-1mib": 1, "mmap-4mib+trim": 4, "mmap-16mib+trim": 16}


def _usage() -> dict:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return {"user": u.ru_utime, "system": u.ru_stime, "minor_faults": u.ru_minflt}


def _tensor_mb() -> float:
    import gc

    gc.collect()
    seen, total = set(), 0
    for obj in gc.get_objects():
        if torch.is_tensor(obj) and not obj.is_meta:
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--allocator", choices=ALLOCATORS, required=True)
    parser.add_argument("--task", default="dbpedia")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-micro-batch-tokens", type=int, default=None,
                        help="the token cap (default: the preset's)")
    parser.add_argument("--frozen-masters", choices=("disk", "memory"), default=None,
                        help="where the frozen fp32 originals wait (default: the preset's)")
    parser.add_argument("--count-tensors", action="store_true",
                        help="also record the bytes of the tensors Python can reach after each step (gc)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "allocator.jsonl"))
    args = parser.parse_args()
    memory.limit_primitive_cache()  # as a run does, unless the environment sizes it
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.allocator == "mimalloc" and preloaded_allocator() != "mimalloc":
        raise SystemExit("--allocator mimalloc: start the process with LD_PRELOAD=<libmimalloc.so>")
    libc = memory._glibc()  # the project's own handle and <malloc.h> constants
    if args.allocator in MMAP_MIB:
        libc.mallopt(memory._M_MMAP_THRESHOLD, MMAP_MIB[args.allocator] << 20)
        libc.mallopt(memory._M_TRIM_THRESHOLD, memory.TRIM_THRESHOLD)
    trim = args.allocator == "trim-step" or args.allocator.endswith("+trim")
    caps = {} if args.max_micro_batch_tokens is None else {"max_micro_batch_tokens": args.max_micro_batch_tokens}
    if args.frozen_masters is not None:
        caps["frozen_masters"] = args.frozen_masters
    config = preset_config(method="jumplora", **caps)
    accelerator = make_accelerator(config)
    loaded = load_model(config.model, progress=False)
    model, kind = loaded.model, loaded.kind
    steps = train_steps(config, args.task, loaded.tokenizer, kind)[: args.steps]
    ctx, method, optimizer, trainable = sparse_stage(config, loaded, args.task, steps)
    memory.release_memory()
    memory.reset_peak()
    per_step = []
    with frozen_weights_in(model, torch.bfloat16, park=parks_masters(config)):
        model.train()
        for step in steps:
            before, started = _usage(), time.perf_counter()
            optimiser_step(ctx, method, accelerator, optimizer, trainable, step)
            if trim:
                memory.trim_heap()
            after = _usage()
            per_step.append({"seconds": time.perf_counter() - started,
                             **{k: after[k] - before[k] for k in after},
                             "rss_mb": memory.current_rss_mb(), "peak_mb": memory.peak_mb()})
            if args.count_tensors:
                per_step[-1]["tensor_mb"] = _tensor_mb()
            print(json.dumps({k: round(v, 2) for k, v in per_step[-1].items()}), flush=True)
    record = {"command": command_line(), "allocator": args.allocator, "task": args.task,
              "max_micro_batch_tokens": config.max_micro_batch_tokens, "frozen_masters": config.frozen_masters,
              "threads": torch.get_num_threads(),
              "mimalloc_options": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MIMALLOC_")},
              "onednn_options": {k: v for k, v in sorted(os.environ.items()) if k.startswith(("ONEDNN_", "DNNL_"))},
              "steps": per_step}
    with open(args.out, "a") as handle:
        handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
