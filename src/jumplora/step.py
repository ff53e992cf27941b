"""One stage's optimisation: the JumpLoRA schedule over the optimiser steps, and one step.

`train_task` runs a stage's steps: τ initialised at S_start, γ from the schedule, the method's
per-step hook; `optimiser_step` is one step: forward and backward of the step's micro-batches (this
process's share of them), the method's loss terms, the all-reduce under several processes,
clipping and AdamW; `task_loss` is the cross-entropy on the target tokens. The loop that calls them
(inject → train → merge → evaluate → save) is `jumplora.train`'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jumplora import memory
from jumplora.compute_dtype import compute_dtype
from jumplora.data.batches import cut_micro_batch
from jumplora.errors import TrainingError
from jumplora.injection import AdapterSet
from jumplora.methods import Method, TaskContext
from jumplora.progress import Logger, progress


def train_task(ctx: TaskContext, method: Method, accelerator, logger: Logger) -> list[dict]:
    """One stage: AdamW over A, B (and τ), the JumpLoRA schedule, the method's loss terms; returns
    losses.jsonl's lines for it, one per optimiser step.

    As the authors' Hugging Face Trainer: the task loss is the mean over the target tokens of the
    whole optimiser step (`loss_mean="step"`: micro-batching changes nothing), the gradient norm of
    A, B and τ is clipped to `max_grad_norm`, and τ takes part in AdamW from the task's first step
    (a zero gradient while dense, as in their forward, which always computes the gate) under
    `threshold_grad="authors"`.
    """
    config, adapters, schedule, steps = ctx.config, ctx.adapters, ctx.schedule, ctx.steps
    trainable = [p for p in adapters.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(config.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    if getattr(accelerator, "scaler", None) is not None:
        # fp16: a fresh loss scale per stage, so a stage depends on its starting point only (a λ
        # candidate, a resumed run)
        accelerator.scaler = torch.amp.GradScaler(accelerator.device.type)
    model = ctx.model
    model.train()
    records = []
    bar = progress(steps, config, f"train {ctx.task}")
    for step, micro_batches in enumerate(bar):
        ctx.step = step
        if adapters.thresholds:
            if schedule.initializes_threshold(step):
                _init_thresholds(adapters, ctx.task, step)
            adapters.set_gamma(schedule.gamma(step))
        method.on_step(ctx)
        sums = optimiser_step(ctx, method, accelerator, optimizer, trainable, micro_batches)
        memory.trim_heap()  # the step's activations are freed: give their pages back (memory.py)
        scheduler.step()
        record = {"task": ctx.task, "step": step, "loss": sum(sums.values()), **sums,
                  "gamma": adapters.gamma, "lr": scheduler.get_last_lr()[0]}
        if adapters.thresholds:
            record["thresholds"] = {g: t.value.item() for g, t in adapters.thresholds.items()}
            if step % 10 == 0 or step == len(steps) - 1:  # a full pass over ΔW: not every step
                record["sparsity"] = adapters.sparsity()
        records.append(record)
        logger.step(record, bar)
    if adapters.thresholds and not schedule.reaches_start:
        # too few steps to reach S_start: τ from the trained ΔW so the merge is sparse (schedule.py)
        _init_thresholds(adapters, ctx.task, len(steps))
        adapters.set_gamma(1.0)
    model.eval()
    return records


def optimiser_step(ctx: TaskContext, method: Method, accelerator, optimizer, trainable: list[torch.Tensor],
                   micro_batches: list[dict]) -> dict[str, float]:
    """Forward and backward of one step's micro-batches, the method's loss terms, clipping, AdamW.

    Returns the step's loss terms (each the step's value: the task loss over all its micro-batches).
    The method's terms depend on the adapters only, not on the batch, so they are computed once per
    step; with `fold="per-step"` the gated layers fold their weight once too (adapter.py), and both
    go back into A, B and τ in one backward after the micro-batches (`AdapterSet.finish_step`).
    """
    config, adapters, scale_out = ctx.config, ctx.adapters, ctx.scale_out
    # this process's examples of the step; the counts are the whole step's, over all processes
    share = scale_out.step_share(micro_batches, config.micro_batch_size)
    n, step_tokens = share.micro_batches, share.target_tokens
    per_step_fold = config.fold == "per-step"
    if per_step_fold:
        adapters.begin_step(compute_dtype(accelerator))
    task_sum = 0.0
    for batch in _memory_bounded(share.batches, ctx):
        with accelerator.autocast():
            if config.loss_mean == "step":  # Σ token losses / the step's target tokens
                task_term = task_loss(ctx.model, batch, ctx.kind, reduction="sum") * (n / step_tokens)
            else:
                task_term = task_loss(ctx.model, batch, ctx.kind)
        _check_loss({"task_loss": task_term}, ctx.task, ctx.step)
        accelerator.backward(task_term / n)
        task_sum += task_term.item() / n
    with accelerator.autocast():
        terms = method.loss_terms(ctx)
    _check_loss(terms, ctx.task, ctx.step)
    # every process computes the terms; each sends back its 1/world part, summed by the all-reduce.
    # fp16: accelerator.backward scaled the task loss by the GradScaler's factor; the terms go back
    # through autograd directly, so they are scaled alike here and everything is unscaled below
    scaler = getattr(accelerator, "scaler", None)
    loss_scale = scaler.get_scale() if scaler is not None else 1.0
    adapters.finish_step(sum(terms.values()) * (loss_scale / scale_out.world) if terms else None)
    sums = {"task_loss": task_sum, **{key: value.item() / scale_out.world for key, value in terms.items()}}
    sums = scale_out.all_reduce_step(trainable, sums, share)  # the global gradient, on every process
    if config.threshold_grad == "authors":
        for parameter in trainable:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
    if scaler is not None:
        scaler.unscale_(optimizer)  # clipping and AdamW see the true gradient
    if config.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)  # skipped (and the scale lowered) when the fp16 gradient overflowed
        scaler.update()
    else:
        _optimiser_step(optimizer, ctx.task, ctx.step)
    _check_finite(trainable, ctx.task, ctx.step)
    optimizer.zero_grad(set_to_none=True)
    return sums


def _memory_bounded(micro_batches: list[dict], ctx: TaskContext) -> list[dict]:
    """The micro-batches with the long ones cut to `max_micro_batch_tokens` (data/batches.py), under
    the step's token-mean loss, where the pieces sum to the same loss and gradient. With LoRA dropout
    the pieces draw their masks piece by piece: the same distribution, other draws than uncut."""
    cap = ctx.config.max_micro_batch_tokens
    if cap is None or ctx.config.loss_mean != "step":
        return micro_batches
    return [piece for batch in micro_batches for piece in cut_micro_batch(batch, cap)]


def _check_loss(terms: dict[str, torch.Tensor], task: str, step: int) -> None:
    loss = sum(terms.values()) if terms else None
    if loss is not None and not torch.isfinite(loss):
        values = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
        raise TrainingError(
            f"task {task}: loss is {loss.item()} at step {step} ({values}); "
            "earlier tasks' results are kept in the run directory"
        )


_DIVERGED = "lower --learning-rate or keep --max-grad-norm; earlier tasks' results are kept in the run directory"


def _optimiser_step(optimizer, task: str, step: int) -> None:
    try:
        optimizer.step()
    except RuntimeError as error:
        if "overflow" not in str(error):
            raise
        # AdamW's update does not fit in a float (a learning rate near 1e38)
        raise TrainingError(f"task {task}: the optimiser step {step} overflowed ({error}); {_DIVERGED}") from None


def _check_finite(parameters: list[torch.Tensor], task: str, step: int) -> None:
    """A divergence (a NaN or infinite gradient, an overflowing update) stops here, with the step, rather than
    later as a less telling error (the threshold initialisation's, the next forward's)."""
    if not bool(torch.stack([torch.isfinite(p).all() for p in parameters]).all()):
        raise TrainingError(f"task {task}: training diverged at step {step} (the adapter weights are no longer "
                            f"finite); {_DIVERGED}")


def _init_thresholds(adapters: AdapterSet, task: str, step: int) -> None:
    try:
        adapters.init_thresholds()
    except ValueError as error:  # τ from a ΔW that overflowed
        raise TrainingError(f"task {task}: training diverged before step {step} ({error}); {_DIVERGED}") from None


def task_loss(model, batch: dict[str, torch.Tensor], kind: str, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on the target tokens only, their mean or (`reduction="sum"`) their sum.

    For causal LMs the vocabulary projection runs only where a loss is taken (the target
    tokens), not over the whole prompt: with ~50k-token vocabularies that is most of the
    memory and much of the time of a step. No KV cache (`use_cache=False`): a training forward
    never reads one, and a cache's per-layer state would make `compile: blocks` trace every block anew.
    """
    if kind == "seq2seq":
        labels = batch["labels"]
        inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                      use_cache=False)
        if reduction == "mean":  # the model's own token mean
            return model(**inputs).loss
        logits = model(**inputs).logits
        keep = labels != -100
        return F.cross_entropy(logits[keep].float(), labels[keep], reduction=reduction)
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              use_cache=False).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), labels[keep], reduction=reduction)


__all__ = ["optimiser_step", "task_loss", "train_task"]
