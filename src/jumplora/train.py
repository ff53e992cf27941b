"""The continual-learning loop: for each stage, inject → train → merge → evaluate → save.

`run_continual(config)` is the whole run; one stage's optimisation with the JumpLoRA schedule
(`train_task`, `optimiser_step`) is `jumplora.step`'s. CL methods plug in through the hooks of
`jumplora.methods.base.Method`; the run directory (what is written, in which order, and how a run
resumes) is `jumplora.rundir`'s.
"""

from __future__ import annotations

import random
import time

import torch

from jumplora import memory
from jumplora.compile import compiled_blocks
from jumplora.compute_dtype import frozen_weights_in, held_dtype, parks_masters
from jumplora.config import RunConfig
from jumplora.data import DataProtocol, load_tasks, task_seed
from jumplora.data.batches import label_token_ids, make_eval_batches, make_train_batches, shuffle_steps
from jumplora.device import check_precision, make_accelerator
from jumplora.distributed import ScaleOut
from jumplora.errors import RunDirectoryError, TrainingError
from jumplora.evaluate import EvalResult, evaluate_task
from jumplora.injection import AdapterSet, inject_adapters
from jumplora.methods.lambda_search import check_search
from jumplora.methods import Method, StageRunner, TaskContext, TrainedStage, build_method
from jumplora.models import LoadedModel, load_model
from jumplora.progress import Logger, progress
from jumplora.results import RunResult, final_metrics, matrix_files
from jumplora.rundir import FollowerRunDirectory, Resume, RunDirectory, TaskRecord, data_summary, find_single_run
from jumplora.rundir.extension import prepare_extension
from jumplora.rundir.layout import ACCURACY, ACCURACY_RANK, stage_name
from jumplora.schedule import JumpSchedule
from jumplora.step import optimiser_step, task_loss, train_task
from jumplora.targets import find_target_linears


def run_continual(config: RunConfig, loaded: LoadedModel | None = None) -> RunResult:
    """Train `config.method` on the task order, evaluating after every stage; resumable.

    `loaded` skips loading `config.model`: tests and notebooks pass a model they built. Under
    `accelerate launch` every process runs this; they share each step's examples and each
    evaluation, and only the main one writes (`jumplora.distributed`).
    """
    memory.limit_primitive_cache()  # before the first matmul, which builds oneDNN's cache
    tasks = config.task_list
    check_precision(config)
    if config.single_dir:
        find_single_run(config, config.run_dir)  # a bad --single-dir fails now, not after the training
    accelerator = make_accelerator(config)  # under a launcher: joins the process group
    scale_out = ScaleOut.current()
    config = scale_out.quiet(config)  # one progress display, one TensorBoard log
    method = build_method(config)
    stages = method.stages(tasks)
    with scale_out.main_first():  # the main process creates or checks it; the others then read what it holds
        if config.continue_from and scale_out.is_main:  # an extension starts as a copy of its source's stages
            prepare_extension(config, stages)
        run = (RunDirectory if scale_out.is_main else FollowerRunDirectory).open(config, tasks, stages)
    if run.finished:  # read, never written: nothing is loaded or trained
        matrix, metrics = run.finished_result()
        return RunResult(run.path, tasks, matrix, metrics, already_finished=True)

    # everything that can be refused is checked before the model loads: the data, what the run
    # directory holds of the finished stages
    protocol = data_protocol(config)
    data = load_tasks(config.order, config.data_dir, protocol)  # the registry's, or a task list's own files
    check_search(config, data, scale_out)
    run.record_data(data_summary(data, protocol, config.data_dir))
    resume = run.resume_point(matrix_files(config))
    run.begin_attempt()

    memory.configure_allocator()
    held = held_dtype(config, accelerator)
    if loaded is None:
        loaded = load_model(config.model, kind=config.model_kind, progress=config.progress)
    model, tokenizer, kind = loaded.model.to(accelerator.device), loaded.tokenizer, loaded.kind
    targets = tuple(config.target_modules or loaded.target_modules)

    method.setup(model)
    matrices = resume.matrices
    done = _restore(run, method, model, resume)
    logger = Logger(config, run.path)

    for index in range(done, len(stages)):
        stage = stages[index]
        name = stage_name(stage)
        row = tasks.index(stage[-1])
        stage_started, stage_cpu = time.time(), memory.cpu_seconds()
        memory.reset_peak()
        train_batches = [_to_device(b, accelerator.device)
                         for b in _stage_batches(stage, data, tokenizer, kind, config)]
        steps = _steps_to_train(train_batches, config, name)
        runner = _LoopStage(index, stage, row, tasks[: row + 1], train_batches, steps, loaded=(model, tokenizer, kind),
                            data=data, targets=targets, method=method, accelerator=accelerator, logger=logger, run=run)

        # inject → train → merge (`_LoopStage.train`), once; or once per setting a method tries (`Method.train_stage`)
        trained = method.train_stage(runner)
        update, losses = trained.update, trained.losses
        memory.release_memory()  # the training's activations and optimiser state, before evaluation's caches

        # evaluate
        scope = stage if method.eval_scope == "current" else tasks if config.eval_scope == "all" else tasks[: row + 1]
        evaluations = {}
        with frozen_weights_in(model, held, park=parks_masters(config)):
            for task in progress(scope, config, f"evaluate after {name}"):
                evaluations[task] = evaluate_on(model, tokenizer, kind, data[task], config, accelerator)
        for task, result in evaluations.items():
            matrices[ACCURACY][row][tasks.index(task)] = result.accuracy
            if ACCURACY_RANK in matrices:
                matrices[ACCURACY_RANK][row][tasks.index(task)] = result.accuracy_rank
        if not method.keeps_updates:
            update.remove_from(model)

        record = _task_record(stage, runner.schedule, losses, (stage_started, stage_cpu), update, evaluations, config)
        run.save_stage(index, update, method.state_dict(), matrices, losses, record)
        logger.task_done(name, evaluations, update)
        del runner, trained, train_batches, steps
        memory.release_memory()  # the next stage's batches have other shapes: start from a trimmed heap

    with scale_out.main_first():  # the others read the metrics once the main process has written them
        metrics = final_metrics(run, config, matrices) if scale_out.is_main else run.finished_result()[1]
        run.finish(metrics)
    logger.close()
    return RunResult(run.path, tasks, matrices[ACCURACY], metrics)


class _LoopStage(StageRunner):
    """The stage under way in `run_continual`, as `Method.train_stage` sees it (`StageRunner`)."""

    def __init__(self, index: int, stage: list[str], row: int, seen: list[str], train_batches: list[dict],
                 steps: list[list[dict]], *, loaded: tuple, data: dict, targets: tuple[str, ...], method: Method,
                 accelerator, logger: Logger, run: RunDirectory):
        self.index, self.name, self.task_index, self.seen, self.run = index, stage_name(stage), row, seen, run
        self.scale_out = ScaleOut.current()
        self.model, self.tokenizer, self.kind = loaded
        self.train_batches, self.steps, self.data, self.targets = train_batches, steps, data, targets
        self.method, self.config, self.accelerator, self.logger = method, method.config, accelerator, logger
        self.held = held_dtype(self.config, accelerator)  # the frozen weights' dtype, training and validating
        self.schedule = JumpSchedule.for_task(len(steps), self.config.s_start, self.config.s_final,
                                              rounding=self.config.schedule_rounding)

    def _context(self, adapters: AdapterSet) -> TaskContext:
        model, kind, accelerator = self.model, self.kind, self.accelerator
        return TaskContext(
            model=model, config=self.config, kind=kind, task=self.name, task_index=self.task_index,
            adapters=adapters, schedule=self.schedule, steps=self.steps, train_batches=self.train_batches,
            compute_loss=lambda batch: _autocast_loss(accelerator, model, batch, kind), scale_out=self.scale_out,
        )

    def train(self) -> TrainedStage:
        # every pass starts from the stage's own seed: a resumed run draws what an uninterrupted one did
        torch.manual_seed(task_seed(self.config.seed, self.name, "adapter"))
        adapters = inject_adapters(self.model, self.method.adapter_config(self.targets))
        self.scale_out.seed_process(task_seed(self.config.seed, self.name, "process"))  # A alike, dropout not
        ctx = self._context(adapters)
        self.method.before_task(ctx)
        park = parks_masters(self.config)
        with frozen_weights_in(self.model, self.held, park=park), compiled_blocks(self.model, self.config.compile):
            losses = train_task(ctx, self.method, self.accelerator, self.logger)
        # merge: β·ΔW_final into the base weights, adapters removed
        self.method.before_merge(ctx)
        update = adapters.merge_and_remove(task=self.name)
        self.method.after_task(ctx, update)
        return TrainedStage(update, losses)

    def validate(self) -> dict[str, EvalResult]:
        with frozen_weights_in(self.model, self.held, park=parks_masters(self.config)):
            return {task: evaluate_on(self.model, self.tokenizer, self.kind, self.data[task], self.config,
                                      self.accelerator, split="validation")
                    for task in progress(self.seen, self.config, f"validate after {self.name}")}

    def adapted_weights(self) -> dict[str, torch.Tensor]:
        return {name: linear.weight for name, linear in find_target_linears(self.model, self.targets).items()}

    def keep(self, update, losses: list[dict]) -> TrainedStage:
        update.apply(self.model)  # as `merge_and_remove` merges it
        empty = AdapterSet(self.model, self.method.adapter_config(self.targets), {}, {})  # merged: no adapters left
        self.method.after_task(self._context(empty), update)
        return TrainedStage(update, losses)


def data_protocol(config: RunConfig) -> DataProtocol:
    """The data protocol a run's options make (what `load_task` draws for each task)."""
    return DataProtocol(
        seed=config.seed, test_per_class=config.test_per_class, train_per_class=config.train_per_class,
        val_per_class=config.val_per_class, max_input_tokens=config.max_input_tokens,
        split=config.split, unlabelled_test=config.unlabelled_test,
    )


def evaluate_on(model, tokenizer, kind: str, task_data, config: RunConfig, accelerator,
                split: str = "test") -> EvalResult:
    """One task's test split (or `split`) evaluated as the run evaluates it after every stage; under
    several processes each evaluates its share of the batches and all get the accuracy of the whole split."""
    scale_out = ScaleOut.current()
    batches = make_eval_batches(task_data.split(split), task_data, tokenizer, kind, config.eval_batch_size,
                                config.max_input_tokens, header=config.prompt_header, prompt_style=config.prompt_style)
    return evaluate_task(
        model, tokenizer, kind, scale_out.shard(batches),
        label_token_ids(task_data, tokenizer, kind, config.max_target_tokens),
        mode=config.eval_mode, device=accelerator.device, autocast=accelerator.autocast,
        labels=task_data.labels, max_new_tokens=config.max_new_tokens, answer_match=config.answer_match,
        stop=config.generation_stop,
        gather=scale_out.gather if scale_out.active else None,
    )


def _task_record(stage: list[str], schedule: JumpSchedule, losses: list[dict], started: tuple[float, float], update,
                 evaluations: dict[str, EvalResult], config: RunConfig) -> TaskRecord:
    """The stage's record; `started`: the wall clock and the process's CPU seconds at its start."""
    wall, cpu = started
    return TaskRecord(
        stage=tuple(stage), steps=len(losses), s_start_step=schedule.start, s_final_step=schedule.final,
        wall_time_s=round(time.time() - wall, 2), peak_memory_mb=memory.peak_mb(),
        cpu_time_s=round(memory.cpu_seconds() - cpu, 1),
        thresholds=update.thresholds, sparsity=update.sparsity(),
        accuracy={task: r.accuracy for task, r in evaluations.items()},
        accuracy_labelled={task: r.accuracy_labelled for task, r in evaluations.items()},
        correct={task: r.correct_string for task, r in evaluations.items()},
        accuracy_rank=({task: r.accuracy_rank for task, r in evaluations.items()}
                       if config.eval_mode == "both" else None),
    )


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


def _steps_to_train(train_batches: list[dict], config: RunConfig, name: str) -> list[list[dict]]:
    steps = _optimiser_steps(train_batches, config.batch_size // config.micro_batch_size)
    if config.max_steps_per_task:
        steps = steps[: config.max_steps_per_task]
    if not steps:  # RunConfig and the data protocol refuse what leads here; never report an untrained task
        raise TrainingError(f"task {name}: no training batch, nothing to train")
    return steps


def _autocast_loss(accelerator, model, batch, kind):
    with accelerator.autocast():
        return task_loss(model, batch, kind)


def _stage_batches(stage: list[str], data: dict, tokenizer, kind: str, config: RunConfig) -> list[dict]:
    """The stage's training micro-batches for every epoch, each marked with its optimiser "step".

    `batching="random"` draws a new shuffle per epoch and keeps each step's micro-batches together
    when a multi-task stage interleaves its tasks; `"length"` repeats the same batches every epoch
    and interleaves micro-batches one by one (the behaviour of runs made before the option).
    """
    name = stage_name(stage)
    batches: list[dict] = []
    for epoch in range(config.epochs):
        epoch_batches: list[dict] = []
        next_step = 0
        for task in stage:
            made = make_train_batches(
                data[task].train, data[task], tokenizer, kind, config.micro_batch_size, config.seed,
                config.max_input_tokens, header=config.prompt_header, prompt_style=config.prompt_style,
                max_target_tokens=config.max_target_tokens, batching=config.batching,
                step_batch_size=config.batch_size, epoch=epoch if config.batching == "random" else 0,
            )
            epoch_batches.extend({**b, "step": b["step"] + next_step} for b in made)
            next_step += 1 + max((b["step"] for b in made), default=-1)
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


def _restore(run: RunDirectory, method: Method, model, resume: Resume) -> int:
    """Bring model and method back to the end of the last finished stage; return how many stages."""
    for index in range(resume.completed):
        if method.keeps_updates:
            try:
                run.load_update(index).apply(model)
            except (KeyError, ValueError) as error:  # a module or shape the model lacks
                raise RunDirectoryError(
                    f"{run.update_path(index)} does not fit the model ({error}); did the model change "
                    "since the run began? Resume with the same model, or use another --output-dir"
                ) from None
    if resume.method_state is not None:
        method.load_state_dict(resume.method_state)
    if resume.completed:  # a kill after state.json but before the deletion of the older states
        run.remove_obsolete_method_states(resume.completed - 1)
    return resume.completed


__all__ = ["RunResult", "data_protocol", "evaluate_on", "optimiser_step", "run_continual", "train_task", "task_loss"]
