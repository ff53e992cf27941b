"""The continual-learning loop: for each task, inject → train → merge → evaluate → save.

`run_continual(config)` is the whole run; `train_task` is one task's optimisation with the
JumpLoRA schedule. CL methods plug in through the hooks of `jumplora.methods.base.Method`.
"""

from __future__ import annotations

import math
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from jumplora.config import RunConfig
from jumplora.data import DataProtocol, FolderSource, load_task, task_seed
from jumplora.errors import ConfigError, RunDirectoryError, TrainingError
from jumplora.evaluate import evaluate_task
from jumplora.injection import AdapterSet, inject_adapters
from jumplora.methods import Method, TaskContext, build_method
from jumplora.metrics import compute_metrics
from jumplora.rundir import Resume, RunDirectory, atomic_write_json, file_digests, find_single_run
from jumplora.schedule import JumpSchedule
from jumplora.updates import TaskUpdate


@dataclass
class RunResult:
    run_dir: Path
    tasks: list[str]
    accuracy_matrix: list[list[float]]
    metrics: dict[str, Any]
    already_finished: bool = False  # the directory held a finished run: it was read, not written


def run_continual(config: RunConfig, loaded=None) -> RunResult:
    """Train `config.method` on the task order, evaluating after every task; resumable.

    `loaded` (a `jumplora.models.LoadedModel`) skips loading `config.model`: tests and notebooks
    pass a model they built.
    """
    from jumplora.data.batches import label_token_ids, make_eval_batches, make_train_batches
    from jumplora.models import load_model

    started = time.time()
    tasks = config.task_list
    _check_precision(config)
    if config.single_dir:
        find_single_run(config, config.run_dir)  # a bad --single-dir fails now, not after the training
    run = RunDirectory.open(config, tasks)
    if run.finished:
        return _finished_result(run, config, tasks)

    # everything that can be refused is checked before the model loads: the data, what the run
    # directory holds of the finished tasks
    protocol = DataProtocol(
        seed=config.seed, test_per_class=config.test_per_class, train_per_class=config.train_per_class,
        val_per_class=config.val_per_class, max_input_tokens=config.max_input_tokens,
        split=config.split, unlabelled_test=config.unlabelled_test,
    )
    data_dir = config.resolved_data_dir
    data = {task: load_task(task, data_dir, protocol) for task in tasks}
    run.record_data(_data_summary(data, protocol, data_dir))
    method = build_method(config)
    stages = method.stages(tasks)
    resume = run.resume_point(stages, _matrix_files(config))
    run.begin_attempt()

    accelerator = _accelerator(config)
    if loaded is None:
        loaded = load_model(config.model, kind=config.model_kind, progress=config.progress)
    model, tokenizer, kind = loaded.model.to(accelerator.device), loaded.tokenizer, loaded.kind
    targets = tuple(config.target_modules or loaded.target_modules)

    def eval_batches(task):
        return make_eval_batches(data[task].test, data[task], tokenizer, kind, config.eval_batch_size,
                                 config.max_input_tokens, header=config.prompt_header,
                                 prompt_style=config.prompt_style)

    ctx = TaskContext(model=model, config=config, kind=kind)
    method.setup(ctx)
    matrices = resume.matrices
    done = _restore(run, method, model, stages, resume)
    logger = _Logger(config, run.path)

    for index in range(done, len(stages)):
        stage = stages[index]
        name = "+".join(stage)
        row = tasks.index(stage[-1])
        stage_started = time.time()
        # every task starts from its own seed: a resumed run draws what an uninterrupted one did
        torch.manual_seed(task_seed(config.seed, name, "adapter"))

        # inject
        adapters = inject_adapters(model, method.adapter_config(targets))
        train_batches = _stage_batches(stage, data, tokenizer, kind, config, make_train_batches)
        ctx.task, ctx.task_index, ctx.adapters = name, row, adapters
        ctx.train_batches = [_to_device(b, accelerator.device) for b in train_batches]
        ctx.compute_loss = lambda batch: _autocast_loss(accelerator, model, batch, kind)

        # train
        method.before_task(ctx)
        records = train_task(ctx, method, adapters, accelerator, config, logger)

        # merge: β·ΔW_final into the base weights, adapters removed
        update = adapters.merge_and_remove(task=name)
        ctx.adapters = None
        method.after_task(ctx, update)

        # evaluate
        scope = stage if method.eval_scope == "current" else tasks if config.eval_scope == "all" else tasks[: row + 1]
        evaluations = {}
        for task in _progress(scope, config, f"evaluate after {name}"):
            result = evaluate_task(
                model, tokenizer, kind, eval_batches(task),
                label_token_ids(data[task], tokenizer, kind, config.max_target_tokens),
                mode=config.eval_mode, device=accelerator.device, autocast=accelerator.autocast,
                labels=data[task].labels, max_new_tokens=config.max_new_tokens, answer_match=config.answer_match,
            )
            evaluations[task] = result
            matrices["accuracy_matrix.csv"][row][tasks.index(task)] = result.accuracy
            if "accuracy_matrix_rank.csv" in matrices:
                matrices["accuracy_matrix_rank.csv"][row][tasks.index(task)] = result.accuracy_rank
        if not method.keeps_updates:
            update.remove_from(model)

        # save: every file of the task first, then state.json (the task counts as done only then),
        # then the deletion of what that made obsolete; a kill between any two leaves a resumable run
        update.save(run.update_path(index, name))
        run.save_method_state(index, method.state_dict())
        for file, matrix in matrices.items():
            run.write_accuracy_matrix(matrix, file)
        run.append_losses(records, finished=["+".join(s) for s in stages[:index]])
        atomic_write_json(run.task_record_path(index, name), {
            "task": name, "steps": len(records), "wall_time_s": round(time.time() - stage_started, 2),
            "thresholds": update.thresholds, "sparsity": update.sparsity(),
            "accuracy": {task: r.accuracy for task, r in evaluations.items()},
            # on the test records whose label is in the label set (differs for MNLI's '-' records)
            "accuracy_labelled": {task: r.accuracy_labelled for task, r in evaluations.items()},
            # per test example (data.json's test order), "1" = correct: for paired bootstraps
            "correct": {task: r.correct_string for task, r in evaluations.items()},
            "accuracy_rank": {task: r.accuracy_rank for task, r in evaluations.items()}
            if config.eval_mode == "both" else None,
        })
        run.mark_completed(index + 1)
        run.remove_obsolete_method_states(index)
        logger.task_done(name, evaluations, update)

    metrics = _final_metrics(run, config, tasks, stages, matrices, started)
    atomic_write_json(run.path / "metrics.json", metrics)
    run.mark_completed(len(stages), finished=True)
    logger.close()
    return RunResult(run.path, tasks, matrices["accuracy_matrix.csv"], metrics)


def train_task(ctx: TaskContext, method: Method, adapters: AdapterSet, accelerator, config: RunConfig, logger) -> list[dict]:
    """One task: AdamW over A, B (and τ), the JumpLoRA schedule, the method's loss terms.

    As the authors' Hugging Face Trainer: the task loss is the mean over the target tokens of the
    whole optimiser step (`loss_mean="step"`: micro-batching changes nothing), the gradient norm of
    A, B and τ is clipped to `max_grad_norm`, and τ takes part in AdamW from the task's first step
    (a zero gradient while dense, as in their forward, which always computes the gate) under
    `threshold_grad="authors"`.
    """
    steps = _optimiser_steps(ctx.train_batches, config.batch_size // config.micro_batch_size)
    if config.max_steps_per_task:
        steps = steps[: config.max_steps_per_task]
    if not steps:  # RunConfig and the data protocol refuse what leads here; never report an untrained task
        raise TrainingError(f"task {ctx.task}: no training batch, nothing to train")
    schedule = JumpSchedule.for_task(len(steps), config.s_start, config.s_final, rounding=config.schedule_rounding)
    ctx.schedule = schedule
    trainable = [p for p in adapters.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(config.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    model = ctx.model
    model.train()
    records = []
    bar = _progress(steps, config, f"train {ctx.task}")
    for step, micro_batches in enumerate(bar):
        ctx.step = step
        if adapters.thresholds:
            if schedule.initializes_threshold(step):
                _init_thresholds(adapters, ctx.task, step)
            adapters.set_gamma(schedule.gamma(step))
        method.on_step(ctx)
        sums: dict[str, float] = {}
        step_tokens = sum(_target_tokens(batch) for batch in micro_batches)
        for batch in micro_batches:
            with accelerator.autocast():
                if config.loss_mean == "step":  # Σ token losses / the step's target tokens
                    task_term = task_loss(model, batch, ctx.kind, reduction="sum") * (len(micro_batches) / step_tokens)
                else:
                    task_term = task_loss(model, batch, ctx.kind)
                # each term is this micro-batch's share times the number of micro-batches
                terms = {"task_loss": task_term, **method.loss_terms(ctx)}
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                values = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
                raise TrainingError(
                    f"task {ctx.task}: loss is {loss.item()} at step {step} ({values}); "
                    "earlier tasks' results are kept in the run directory"
                )
            accelerator.backward(loss / len(micro_batches))
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.item() / len(micro_batches)
        if config.threshold_grad == "authors":
            for parameter in trainable:
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        _optimiser_step(optimizer, ctx.task, step)
        _check_finite(trainable, ctx.task, step)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
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
    memory and much of the time of a step.
    """
    if kind == "seq2seq":
        labels = batch["labels"]
        if reduction == "mean":  # the model's own token mean
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).logits
        keep = labels != -100
        return F.cross_entropy(logits[keep].float(), labels[keep], reduction=reduction)
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), labels[keep], reduction=reduction)


def _target_tokens(batch: dict) -> int:
    """How many label positions of a micro-batch carry a loss (causal: the first never does)."""
    return int((batch["labels"] != -100).sum())


def _optimiser_steps(batches: list[dict], accumulation: int) -> list[list[dict]]:
    """Micro-batches grouped into optimiser steps: by their "step" key (`make_train_batches` marks
    which step each belongs to, so a partial last step stays one step), else `accumulation` at a time."""
    if batches and all("step" in batch for batch in batches):
        steps: list[list[dict]] = []
        for batch in batches:
            if steps and steps[-1][0]["step"] == batch["step"]:
                steps[-1].append(batch)
            else:
                steps.append([batch])
        return steps
    return [batches[i: i + accumulation] for i in range(0, len(batches), accumulation)]


# helpers -------------------------------------------------------------------------------------------


def _check_precision(config: RunConfig) -> None:
    """The one option that depends on the machine, so RunConfig cannot check it."""
    if config.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("precision fp16 needs a GPU; use bf16 or fp32 on the CPU")


def _accelerator(config: RunConfig):
    from accelerate import Accelerator

    use_cpu = not torch.cuda.is_available()
    precision = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[config.precision]
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        # accelerate keeps one process-wide state: a second run with another precision in the same
        # process (a notebook, the tests) would be refused, so start it afresh
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=precision, cpu=use_cpu)


def _autocast_loss(accelerator, model, batch, kind):
    with accelerator.autocast():
        return task_loss(model, batch, kind)


def _stage_batches(stage: list[str], data: dict, tokenizer, kind: str, config: RunConfig, make_train_batches) -> list[dict]:
    """The stage's training micro-batches for every epoch, each marked with its optimiser "step".

    `batching="random"` draws a new shuffle per epoch and keeps each step's micro-batches together
    when a multi-task stage interleaves its tasks; `"length"` repeats the same batches every epoch
    and interleaves micro-batches one by one (the behaviour of runs made before the option).
    """
    from jumplora.data.batches import shuffle_steps

    name = "+".join(stage)
    batches: list[dict] = []
    for epoch in range(config.epochs):
        epoch_batches: list[dict] = []
        for task in stage:
            made = make_train_batches(
                data[task].train, data[task], tokenizer, kind, config.micro_batch_size, config.seed,
                config.max_input_tokens, header=config.prompt_header, prompt_style=config.prompt_style,
                max_target_tokens=config.max_target_tokens, batching=config.batching,
                step_batch_size=config.batch_size, epoch=epoch if config.batching == "random" else 0,
            )
            offset = 1 + max((b["step"] for b in epoch_batches), default=-1)
            epoch_batches.extend({**b, "step": b["step"] + offset} for b in made)
        if len(stage) > 1:  # multi-task: interleave the tasks' batches
            seed = task_seed(config.seed, name, "interleave" if epoch == 0 else f"interleave/{epoch}")
            if config.batching == "random":
                epoch_batches = shuffle_steps(epoch_batches, seed)
            else:
                random.Random(seed).shuffle(epoch_batches)
                epoch_batches = [{k: v for k, v in b.items() if k != "step"} for b in epoch_batches]
        if batches and "step" in batches[-1] and all("step" in b for b in epoch_batches):
            offset = batches[-1]["step"] + 1
            epoch_batches = [{**b, "step": b["step"] + offset} for b in epoch_batches]
        batches.extend(epoch_batches)
    return batches


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _matrix_files(config: RunConfig) -> list[str]:
    return ["accuracy_matrix.csv"] + (["accuracy_matrix_rank.csv"] if config.eval_mode == "both" else [])


def _restore(run: RunDirectory, method: Method, model, stages: list[list[str]], resume: Resume) -> int:
    """Bring model and method back to the end of the last finished task; return how many stages."""
    for index in range(resume.completed):
        name = "+".join(stages[index])
        if method.keeps_updates:
            try:
                run.load_update(index, name).apply(model)
            except (KeyError, ValueError) as error:  # a module or shape the model lacks
                raise RunDirectoryError(
                    f"{run.update_path(index, name)} does not fit the model ({error}); did the model change "
                    "since the run began? Resume with the same model, or use another --output-dir"
                ) from None
    if resume.method_state is not None:
        method.load_state_dict(resume.method_state)
    if resume.completed:  # a kill after state.json but before the deletion of the older states
        run.remove_obsolete_method_states(resume.completed - 1)
    return resume.completed


def _finished_result(run: RunDirectory, config: RunConfig, tasks: list[str]) -> RunResult:
    """A finished run as its files hold it: nothing is loaded, trained or written."""
    stages = build_method(config).stages(tasks)
    records = [run.read_task_record(i, "+".join(s)) if run.task_record_path(i, "+".join(s)).is_file() else {}
               for i, s in enumerate(stages)]
    matrix = run.read_matrix(stages, records, "accuracy_matrix.csv")
    return RunResult(run.path, tasks, matrix, run.read_json("metrics.json"), already_finished=True)


def _data_summary(data: dict, protocol: DataProtocol, data_dir: Path) -> dict:
    """data.json: per task what the protocol made of it, and the sha256 of every file it read."""
    source = FolderSource(data_dir)
    return {
        "protocol": protocol.to_dict(),
        "tasks": {
            name: {
                "group": task.spec.group, "labels": list(task.labels), "counts": task.counts(),
                "dropped": dict(task.dropped), "sources": {k: str(v) for k, v in task.sources.items()},
                "files": file_digests(data_dir, source.files_read(task.spec, task.sources.values())),
            }
            for name, task in data.items()
        },
    }


def _final_metrics(run, config, tasks, stages, matrices, started) -> dict:
    matrix = matrices["accuracy_matrix.csv"]
    single, source = find_single_run(config, run.path) if config.method.split("+")[-1] != "single" else (None, None)
    metrics: dict[str, Any] = {"method": config.method, "order": config.order, "tasks": tasks, "seed": config.seed}
    try:
        metrics.update(compute_metrics(matrix, tasks, single=single))
    except ValueError:  # e.g. a single or multi-task run has no full diagonal / final row
        metrics.update(_partial_metrics(matrix, tasks))
    if "accuracy_matrix_rank.csv" in matrices:
        try:
            rank = compute_metrics(matrices["accuracy_matrix_rank.csv"], tasks, single=None)
            metrics["rank"] = {k: rank[k] for k in ("OA", "BWT")}
        except ValueError:
            pass
    records = [run.read_task_record(i, "+".join(s)) for i, s in enumerate(stages)]
    metrics["sparsity"] = {record["task"]: record["sparsity"] for record in records}
    metrics["fwt_reference"] = source
    metrics["wall_time_s"] = round(sum(record["wall_time_s"] for record in records), 1)
    metrics["peak_memory_mb"] = _peak_memory_mb()
    return metrics


def _partial_metrics(matrix, tasks) -> dict:
    final = matrix[-1]
    defined = [v for v in final if not math.isnan(v)]
    oa = sum(defined) / len(defined) if len(defined) == len(tasks) else None
    return {"OA": oa, "BWT": None, "FWT": None, "FWT_final": None, "forgetting": {}}


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _progress(items, config: RunConfig, description: str):
    if not config.progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, leave=False, dynamic_ncols=True)


class _Logger:
    """Progress-bar postfix and, with `--log tensorboard`, TensorBoard scalars."""

    def __init__(self, config: RunConfig, path: Path):
        self.config = config
        self.writer = None
        self.global_step = 0
        self.sparsity: float | None = None
        if config.log == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(path / "tensorboard"))
            except ImportError:
                import warnings

                warnings.warn("--log tensorboard: tensorboard is not installed (pip install tensorboard); "
                              "losses are still written to losses.jsonl", stacklevel=2)

    def step(self, record: dict, bar) -> None:
        self.global_step += 1
        if record.get("step") == 0:
            self.sparsity = None  # a new task
        if "sparsity" in record:  # measured every 10 steps; shown on every step
            self.sparsity = record["sparsity"]
        if hasattr(bar, "set_postfix"):
            shown = {k: f"{v:.4g}" for k, v in record.items() if isinstance(v, float) and k not in ("lr", "sparsity")}
            if self.sparsity is not None:
                shown["sparsity"] = f"{self.sparsity:.3f}"
            bar.set_postfix(shown, refresh=False)
        if self.writer:
            for key, value in record.items():
                if isinstance(value, float):
                    self.writer.add_scalar(f"train/{key}", value, self.global_step)
            for group, value in record.get("thresholds", {}).items():
                self.writer.add_scalar(f"threshold/{group}", value, self.global_step)

    def task_done(self, name: str, evaluations: dict, update: TaskUpdate) -> None:
        if self.config.progress:
            accuracies = ", ".join(f"{task} {r.accuracy:.1f}" for task, r in evaluations.items())
            print(f"[{name}] sparsity {update.sparsity():.1%} | accuracy: {accuracies}", flush=True)
        if self.writer:
            for task, result in evaluations.items():
                self.writer.add_scalar(f"accuracy/{task}", result.accuracy, self.global_step)
            self.writer.add_scalar("sparsity/task", update.sparsity(), self.global_step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


__all__ = ["RunResult", "run_continual", "train_task", "task_loss"]
