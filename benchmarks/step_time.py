#!/usr/bin/env python
"""One optimiser step on the reproduction preset's real batches: jumplora against PEFT LoRA.

A step is what a run of configs/repro-small.yaml does per optimiser step: 4 micro-batches of 8
real dbpedia examples (the authors' prompt, random batching sorted by length within the step), the
task loss, backward, gradient clipping at 1.0, AdamW. Every variant is a deep copy of the same
model with the same A and B (B ~ N(0, 0.01) seeded by module name, so that ΔW ≠ 0 and the gate is
realistic) and r 8, α 32 on q and v:

    peft_stock        PEFT LoRA (lora_dropout 0), `model(**batch).loss`: logits at every position,
                      what the authors' Hugging Face Trainer computes
    peft_target_loss  the same PEFT model with jumplora's loss: logits at the target tokens only
    sparse_before     JumpLoRA γ = 1 as before issue 16: frozen weights fp32 (autocast casts them
                      at every call) and the gated weight folded per micro-batch
    sparse_cast       + the frozen weights held in bf16 for the task (frozen_weights=compute-dtype)
    sparse_fold       + one fold per optimiser step instead (fold=per-step), weights fp32
    sparse            JumpLoRA γ = 1 as it runs now (both levers): jumplora.train.optimiser_step
    dense             JumpLoRA γ = 0 as it runs now (the first 20 % of each task: low-rank path)
    sparse_compiled   sparse with its transformer blocks through torch.compile (compile=blocks);
                      its first (warm-up) step includes the compile, reported as first_step_seconds

Rounds are interleaved: each round times one step of every variant on the same optimiser step of
the task, in a rotated order; reported are the medians, p25-p75, and the median of the per-round
paired ratios against peft_stock (same round, same batch, same background load).

    python benchmarks/step_time.py                    # the figures in benchmarks/step_time.md
    python benchmarks/step_time.py --rounds 2 --variants peft_stock,sparse   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import time
import zlib
from dataclasses import dataclass
from typing import Callable

import torch
from _shared import ROOT, command_line, environment, preset_config, step_shape, summary, train_steps

from jumplora.compile import compile_blocks
from jumplora.compute_dtype import frozen_weights_in
from jumplora.device import make_accelerator
from jumplora.injection import inject_adapters
from jumplora.methods import TaskContext, build_method
from jumplora.models import load_model
from jumplora.schedule import JumpSchedule
from jumplora.train import optimiser_step, task_loss

VARIANTS = ("peft_stock", "peft_target_loss", "sparse_before", "sparse_cast", "sparse_fold", "sparse", "dense",
            "sparse_compiled")
LEVERS = {  # frozen_weights, fold, gamma
    "sparse_before": ("fp32", "per-micro-batch", 1.0),
    "sparse_cast": ("compute-dtype", "per-micro-batch", 1.0),
    "sparse_fold": ("fp32", "per-step", 1.0),
    "sparse": ("compute-dtype", "per-step", 1.0),
    "dense": ("compute-dtype", "per-step", 0.0),
    "sparse_compiled": ("compute-dtype", "per-step", 1.0),
}
REFERENCE = "peft_stock"


@dataclass
class Variant:
    name: str
    step: Callable[[list[dict]], float]  # one optimiser step; returns the loss


def _same_lora(name: str, lora_A: torch.Tensor, lora_B: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    with torch.no_grad():
        lora_A.copy_((torch.rand(lora_A.shape, generator=generator) * 2 - 1) / lora_A.shape[1] ** 0.5)
        lora_B.copy_(torch.randn(lora_B.shape, generator=generator) * 0.01)


def _peft_variant(name, base, config, kind, targets, accelerator) -> Variant:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(base), LoraConfig(
        r=config.rank, lora_alpha=config.alpha, target_modules=list(targets), lora_dropout=0.0))
    for module_name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            _same_lora(module_name.split("base_model.model.", 1)[-1], module.lora_A["default"].weight,
                       module.lora_B["default"].weight)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    inner = model.base_model.model  # the transformers model, LoRA layers inside
    model.train()

    def step(micro_batches):
        n, total = len(micro_batches), 0.0
        step_tokens = sum(b["target_tokens"] for b in micro_batches)
        for batch in micro_batches:
            with accelerator.autocast():
                if name == "peft_stock":
                    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 labels=batch["labels"]).loss
                else:
                    loss = task_loss(inner, batch, kind, reduction="sum") * (n / step_tokens)
            (loss / n).backward()
            total += loss.item() / n
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total

    return Variant(name, step)


def _jumplora_variant(name, base, config, kind, targets, accelerator, stack, steps) -> Variant:
    frozen, fold, gamma = LEVERS[name]
    config = dataclasses.replace(config, frozen_weights=frozen, fold=fold)
    model = copy.deepcopy(base)
    method = build_method(config)
    adapters = inject_adapters(model, method.adapter_config(targets))
    for module_name, layer in adapters.layers.items():
        _same_lora(module_name, layer.lora_A, layer.lora_B)
    adapters.init_thresholds()
    adapters.set_gamma(gamma)
    trainable = [p for p in adapters.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    ctx = TaskContext(model=model, config=config, kind=kind, task="dbpedia", task_index=0, adapters=adapters,
                      schedule=JumpSchedule.for_task(len(steps), config.s_start, config.s_final),
                      steps=steps, train_batches=[], compute_loss=lambda batch: None)
    method.before_task(ctx)
    if frozen == "compute-dtype":  # held for the whole task, as run_continual does
        stack.enter_context(frozen_weights_in(model, torch.bfloat16 if config.precision == "bf16" else None))
    if name.endswith("_compiled"):
        print(f"{name}: {compile_blocks(model, 'blocks')} blocks compiled", flush=True)
    model.train()

    def step(micro_batches):
        losses = optimiser_step(ctx, method, accelerator, optimizer, trainable, micro_batches)
        return sum(losses.values())

    return Variant(name, step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="dbpedia")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    parser.add_argument("--steps", type=int, default=6, help="distinct optimiser steps of the task, cycled")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "step_time.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    config = preset_config(method="jumplora")
    accelerator = make_accelerator(config)
    loaded = load_model(config.model, progress=False)
    base, kind, targets = loaded.model, loaded.kind, tuple(config.target_modules or loaded.target_modules)
    all_steps = train_steps(config, args.task, loaded.tokenizer, kind)
    pick = [all_steps[round(i * (len(all_steps) - 1) / max(args.steps - 1, 1))] for i in range(args.steps)]

    times: dict[str, list[float]] = {name: [] for name in names}
    paired: dict[str, list[float]] = {name: [] for name in names}
    with contextlib.ExitStack() as stack:
        variants = [_peft_variant(n, base, config, kind, targets, accelerator) if n.startswith("peft")
                    else _jumplora_variant(n, base, config, kind, targets, accelerator, stack, all_steps)
                    for n in names]
        first_step: dict[str, float] = {}
        for variant in variants:  # the first loss: equal A, B and batch give equal losses (a sanity check)
            for w in range(args.warmup):
                started = time.perf_counter()
                loss = variant.step(pick[w % len(pick)])
                if w == 0:
                    first_step[variant.name] = time.perf_counter() - started
                    print(f"{variant.name}: first loss {loss:.6f} ({first_step[variant.name]:.1f} s)", flush=True)
        for r in range(args.rounds):
            batch = pick[r % len(pick)]
            this_round = {}
            for variant in variants[r % len(variants):] + variants[: r % len(variants)]:
                started = time.perf_counter()
                variant.step(batch)
                this_round[variant.name] = time.perf_counter() - started
            for name, seconds in this_round.items():
                times[name].append(seconds)
                if REFERENCE in this_round:
                    paired[name].append(this_round[REFERENCE] / seconds)
            print(f"round {r}: " + ", ".join(f"{k} {v:.2f}s" for k, v in this_round.items()), flush=True)

    ref = summary(times[REFERENCE])["median"] if REFERENCE in times else None
    results = {}
    for name in names:
        results[name] = {"seconds": summary(times[name]), "samples": times[name], "first_step_seconds": first_step.get(name),
                         "speedup_vs_peft_stock_of_medians": ref / summary(times[name])["median"] if ref else None,
                         "paired_speedup_vs_peft_stock": summary(paired[name]) if paired[name] else None}
    report = {"command": command_line(), "environment": environment(), "task": args.task,
              "steps": [step_shape(s) for s in pick], "rounds": args.rounds, "results": results}
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"\n| variant | median s | p25–p75 | PEFT stock / variant (medians) | paired, median (p25–p75) |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        s, p = r["seconds"], r["paired_speedup_vs_peft_stock"]
        speed = f"{r['speedup_vs_peft_stock_of_medians']:.3f}" if ref else "–"
        pair = f"{p['median']:.3f} ({p['p25']:.3f}–{p['p75']:.3f})" if p else "–"
        print(f"| {name} | {s['median']:.2f} | {s['p25']:.2f}–{s['p75']:.2f} | {speed} | {pair} |")


if __name__ == "__main__":
    main()
