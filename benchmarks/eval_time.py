#!/usr/bin/env python
"""Evaluation: seconds per example of jumplora's greedy generation against one prompt forward.

On the reproduction preset's real test prompts (the authors' prompt, batches of 32 sorted by length
over the task's test set), for the model as a run evaluates it after a merge (SmolLM2-135M, bf16
autocast): `--run DIR` takes a finished run's model after its last task (`jumplora.export.model_after`:
trained answers end with EOS, so generation stops early as in a run); without it, the base model,
whose answers run to the token budget (the worst case for generation).

    generate_before `evaluate_task` as before issue 16: `model.generate` to EOS or the budget, frozen
                    weights fp32 (autocast casts them at every forward, the prompt's and each token's)
    generate_held   + frozen weights held in bf16 (compute_dtype.frozen_weights_in)
    generate        as the run evaluates now: + `generation_stop="decided"` (jumplora.greedy: a row
                    stops once it can no longer match its reference; the same outcome per example,
                    checked here batch by batch)
    floor           one forward of the same prompt batch with the logits of the last position only,
                    weights held in bf16: what any generation of the first token must cost

Interleaved per batch (every variant on the same batch in turn, order rotated); reported: seconds
per example of each and the ratio to the floor (sum over batches, and the median of the per-batch
ratios), with the padding share of the prompt slots.

    python benchmarks/eval_time.py                   # the figures in benchmarks/eval_time.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _shared import ROOT, command_line, environment, preset_config

from jumplora.compute_dtype import frozen_weights_in
from jumplora.data import load_task
from jumplora.data.batches import label_token_ids, make_eval_batches
from jumplora.device import make_accelerator
from jumplora.evaluate import evaluate_task
from jumplora.models import load_model
from jumplora.train import data_protocol

VARIANTS = ("generate_before", "generate_held", "generate", "floor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="dbpedia,amazon,yahoo,agnews")
    parser.add_argument("--batches-per-task", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--run", default=None, help="a finished run whose final model is evaluated")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "eval_time.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = preset_config(method="jumplora")
    accelerator = make_accelerator(config)
    if args.run:
        from jumplora.export import model_after
        loaded = model_after(args.run).loaded
    else:
        loaded = load_model(config.model, progress=False)
    model, tokenizer, kind = loaded.model.eval(), loaded.tokenizer, loaded.kind
    protocol = data_protocol(config)

    work = []  # (task, batch, label ids, labels)
    for task in args.tasks.split(","):
        data = load_task(task, config.resolved_data_dir, protocol)
        batches = make_eval_batches(data.test, data, tokenizer, kind, config.eval_batch_size, config.max_input_tokens,
                                    header=config.prompt_header, prompt_style=config.prompt_style)
        step = max(1, len(batches) // args.batches_per_task)  # long, middle and short batches of the task
        for batch in batches[::step][: args.batches_per_task]:
            work.append((task, batch, label_token_ids(data, tokenizer, kind, config.max_target_tokens), data.labels))

    outcomes = {}

    def generate(batch, ids, labels, stop):
        result = evaluate_task(model, tokenizer, kind, [batch], ids, mode="generate", autocast=accelerator.autocast,
                               labels=labels, max_new_tokens=config.max_new_tokens,
                               answer_match=config.answer_match, stop=stop)
        outcomes[stop] = result.correct

    def floor(batch, ids, labels):
        with torch.no_grad(), accelerator.autocast():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=1)

    seconds = {v: [] for v in VARIANTS}
    hits = 0
    for i, (task, batch, ids, labels) in enumerate(work):
        order = list(VARIANTS[i % len(VARIANTS):] + VARIANTS[: i % len(VARIANTS)])
        for variant in order:
            held = torch.bfloat16 if variant != "generate_before" else None
            with frozen_weights_in(model, held):  # the cast itself is once per task in a run: not timed
                started = time.perf_counter()
                if variant == "floor":
                    floor(batch, ids, labels)
                else:
                    generate(batch, ids, labels, "decided" if variant == "generate" else "eos")
                seconds[variant].append(time.perf_counter() - started)
        if outcomes["decided"] != outcomes["eos"]:
            raise SystemExit(f"{task}: the decided stop changed an outcome; this is a bug")
        hits += sum(outcomes["eos"])
        print(f"{task} batch {batch['input_ids'].shape}: " +
              ", ".join(f"{v} {seconds[v][-1]:.2f}s" for v in VARIANTS), flush=True)

    examples = sum(b["input_ids"].shape[0] for _, b, _, _ in work)
    slots = sum(b["input_ids"].numel() for _, b, _, _ in work)
    real = sum(int(b["attention_mask"].sum()) for _, b, _, _ in work)
    results = {v: {"seconds_per_example": sum(seconds[v]) / examples,
                   "ratio_to_floor": sum(seconds[v]) / sum(seconds["floor"]),
                   "median_batch_ratio_to_floor": statistics.median(a / b for a, b in zip(seconds[v], seconds["floor"]))}
               for v in VARIANTS}
    report = {"command": command_line(), "environment": environment(), "model": args.run or config.model,
              "examples": examples, "batches": len(work), "accuracy": 100 * hits / examples,
              "padding_share": 1 - real / slots, "results": results}
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"\n{examples} examples in {len(work)} batches, padding {100 * (1 - real / slots):.1f} % of prompt slots, "
          f"accuracy {100 * hits / examples:.1f} % (the same outcome per example under both stops)")
    print("| variant | s / example | ratio to floor (sums) | median per-batch ratio |")
    print("|---|---|---|---|")
    for v, r in results.items():
        print(f"| {v} | {r['seconds_per_example']:.4f} | {r['ratio_to_floor']:.3f} | {r['median_batch_ratio_to_floor']:.3f} |")


if __name__ == "__main__":
    main()
