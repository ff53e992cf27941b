#!/usr/bin/env python
"""Data-parallel training throughput: examples per second on 1 and N processes, and one T5-large step.

Every timed step is `jumplora.train.train_task`'s own (the JumpLoRA schedule, AdamW, clipping and,
on several processes, the step's examples shared out and the A, B, τ gradients all-reduced), on
synthetic batches of fixed lengths, so the figures measure the loop and not the data.

    python benchmarks/scale_out.py                       # CPU: 1 and 2 processes, small random Llama
    python benchmarks/scale_out.py --processes 1 2 4 --steps 20
    python benchmarks/scale_out.py --gpu                 # 1 GPU: T5-large shapes (random weights), batch 32
    python benchmarks/scale_out.py --gpu --device cpu --layers 2 --seq-len 64 --batch-size 4   # quick check

CPU mode launches `accelerate launch --multi_gpu --num_processes N benchmarks/scale_out.py --worker`
for every N > 1 (on a machine without GPUs, accelerate's `--multi_gpu` starts torchrun and the
processes join a gloo group; OMP_NUM_THREADS=1 each) and the worker in this process for N = 1.
The model is a random Llama built locally (hidden 256, 4 layers, 4 heads, byte-level vocabulary of
259): small enough for a CPU, large enough that a step is not all overhead. The global batch stays
the same for every N (the paper's rule: the examples of a step do not depend on the process count),
so examples/s over N shows what data parallelism buys at a fixed batch.

GPU mode (--gpu) times `--steps` optimiser steps of JumpLoRA (γ = 0.5 after S_start, the costliest
mode) on a T5-large-shaped model from a config (d_model 1024, 24+24 layers, random weights: no
download) at the paper's batch (32, one micro-batch), bf16 autocast, inputs of `--seq-len` tokens and
targets of 8; it reports the median step time, peak GPU memory, tokens/s, and the bytes one
all-reduce of A, B and τ moves.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


def small_llama():
    from jumplora.testing import tiny_llama

    return tiny_llama(seed=0, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4)


def t5_large_shape(layers: int):
    """A T5-large (v1 shapes) with random weights from its config, as `jumplora.models` prepares one."""
    from transformers import T5Config, T5ForConditionalGeneration

    from jumplora.models import LoadedModel

    config = T5Config(vocab_size=32128, d_model=1024, d_ff=4096, d_kv=64, num_layers=layers,
                      num_decoder_layers=layers, num_heads=16, feed_forward_proj="relu", dropout_rate=0.1,
                      tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(config)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return LoadedModel(model, None, "seq2seq", "t5-large-shape", ("q", "v"))  # no text: no tokenizer


def synthetic_steps(kind: str, vocab: int, steps: int, batch_size: int, micro_batch_size: int,
                    seq_len: int, target_len: int, seed: int = 0) -> list[list[dict]]:
    """Optimiser steps of right-padded micro-batches as `make_train_batches` makes them (fixed lengths)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = []
    for step in range(steps):
        micro = []
        for _ in range(batch_size // micro_batch_size):
            if kind == "seq2seq":
                input_ids = torch.randint(3, vocab, (micro_batch_size, seq_len), generator=generator)
                labels = torch.randint(3, vocab, (micro_batch_size, target_len), generator=generator)
            else:
                input_ids = torch.randint(3, vocab, (micro_batch_size, seq_len + target_len), generator=generator)
                labels = torch.full_like(input_ids, -100)
                labels[:, -target_len:] = input_ids[:, -target_len:]
            micro.append({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
                          "step": step, "target_tokens": int((labels != -100).sum())})
        out.append(micro)
    return out


def time_steps(loaded, args, device_name: str) -> dict:
    """Train `args.warmup` then `args.steps` steps through `train_task`; the timed part's figures."""
    import torch

    from jumplora.config import RunConfig
    from jumplora.device import make_accelerator
    from jumplora.distributed import ScaleOut
    from jumplora.injection import inject_adapters
    from jumplora.methods import TaskContext, build_method
    from jumplora.schedule import JumpSchedule
    from jumplora.train import task_loss, train_task

    config = RunConfig(method="jumplora", model="tiny", order="cb", batch_size=args.batch_size,
                       micro_batch_size=args.micro_batch_size, precision=args.precision, progress=False)
    accelerator = make_accelerator(config)
    scale_out = ScaleOut.current()
    model = loaded.model.to(accelerator.device)
    method = build_method(config)
    vocab = model.get_input_embeddings().num_embeddings
    # a separate adapter per call, as per task; the first call warms up (allocator, kernels)
    figures = {}
    for phase, count in (("warmup", args.warmup), ("timed", args.steps)):
        torch.manual_seed(0)
        adapters = inject_adapters(model, method.adapter_config(loaded.target_modules))
        steps = [[{k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in b.items()} for b in step]
                 for step in synthetic_steps(loaded.kind, vocab, count, args.batch_size, args.micro_batch_size,
                                             args.seq_len, args.target_len)]
        ctx = TaskContext(model=model, config=config, kind=loaded.kind, task="bench", task_index=0,
                          # step 0 dense, τ at step 1, then the interpolated mode (γ < 1): the median's
                          adapters=adapters, schedule=JumpSchedule.for_task(count, 1, 2 * count), steps=steps,
                          train_batches=[b for s in steps for b in s], scale_out=scale_out,
                          compute_loss=lambda batch: task_loss(model, batch, loaded.kind))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        scale_out.barrier()
        times = []

        class StepClock:  # train_task's logger: the time between two logged steps is one optimiser step
            def step(self, record, bar):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                times.append(time.perf_counter())

        times.append(time.perf_counter())
        train_task(ctx, method, accelerator, StepClock())
        scale_out.barrier()
        end = time.perf_counter()
        trainable = sum(p.numel() for p in adapters.parameters() if p.requires_grad)
        adapters.merge_and_remove(task="bench")
        if phase == "timed":
            step_times = [b - a for a, b in zip(times, times[1:])]
            tokens = sum(int(b["attention_mask"].sum()) + b["target_tokens"] for s in steps for b in s)
            figures = {
                "device": device_name, "processes": scale_out.world, "steps": count,
                "global_batch": args.batch_size, "micro_batch": args.micro_batch_size,
                "seq_len": args.seq_len, "target_len": args.target_len, "precision": args.precision,
                "wall_s": round(end - times[0], 3),
                "examples_per_s": round(count * args.batch_size / (end - times[0]), 2),
                "tokens_per_s": round(tokens / (end - times[0]), 1),
                "median_step_s": round(statistics.median(step_times), 4),
                "trainable_parameters": trainable,
                "all_reduce_mb": round(trainable * 4 / 2**20, 2),  # fp32 gradients of A, B, τ, once a step
                "threads_per_process": torch.get_num_threads(),
            }
            if torch.cuda.is_available():
                figures["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return figures


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    loaded = small_llama() if not args.gpu else t5_large_shape(args.layers)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    figures = time_steps(loaded, args, device)
    from jumplora.distributed import ScaleOut

    if ScaleOut.current().is_main and args.out:
        Path(args.out).write_text(json.dumps(figures))
    elif ScaleOut.current().is_main:
        print(json.dumps(figures, indent=1))


def cpu_comparison(args) -> None:
    results = []
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
              "--micro-batch-size", str(args.micro_batch_size), "--seq-len", str(args.seq_len),
              "--precision", args.precision, "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory() as folder:
        for processes in args.processes:
            out = Path(folder) / f"{processes}.json"
            script = [str(Path(__file__).resolve()), "--worker", "--out", str(out), *common]
            if processes == 1:
                command = [sys.executable, *script]
            else:
                command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                           str(processes), "--num_machines", "1", "--mixed_precision", "no",
                           "--dynamo_backend", "no", *script]
            subprocess.run(command, env=env, check=True, capture_output=True)
            results.append(json.loads(out.read_text()))
    base = results[0]["examples_per_s"]
    print(f"$ python {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"small random Llama (hidden 256, 4 layers), JumpLoRA q,v r=8 (interpolated mode), "
          f"global batch {args.batch_size}, micro-batch {args.micro_batch_size}, {args.seq_len}+8 tokens, "
          f"{args.precision}, {args.steps} timed steps after {args.warmup}; 1 thread per process")
    print("| processes | examples/s | speed-up | median step (s) | wall (s) | all-reduce per step |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['processes']} | {r['examples_per_s']} | {r['examples_per_s'] / base:.2f}x | "
              f"{r['median_step_s']} | {r['wall_s']} | {r['all_reduce_mb']} MB |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="one T5-large-shaped step at batch 32 on one GPU")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="--gpu on the CPU (with small --layers) to check the script, not to measure")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="CPU mode: process counts")
    parser.add_argument("--steps", type=int, default=None, help="timed optimiser steps (CPU 12, GPU 5)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="global batch (CPU 16, GPU 32)")
    parser.add_argument("--micro-batch-size", type=int, default=None, help="per forward pass (CPU 8, GPU 32)")
    parser.add_argument("--seq-len", type=int, default=None, help="input tokens (CPU 128, GPU 512)")
    parser.add_argument("--target-len", type=int, default=8)
    parser.add_argument("--layers", type=int, default=24, help="--gpu: encoder and decoder blocks (T5-large: 24)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None, help="CPU fp32, GPU bf16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    gpu_defaults = dict(steps=5, batch_size=32, micro_batch_size=32, seq_len=512, precision="bf16")
    cpu_defaults = dict(steps=12, batch_size=16, micro_batch_size=8, seq_len=128, precision="fp32")
    for key, value in (gpu_defaults if args.gpu else cpu_defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.gpu:
        if args.device == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        else:
            import torch

            if not torch.cuda.is_available():
                parser.error("--gpu needs a CUDA device (or --device cpu to check the script)")
        worker(args)
    elif args.worker:
        worker(args)
    else:
        cpu_comparison(args)


if __name__ == "__main__":
    main()
