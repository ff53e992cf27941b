"""Extending a finished run with further tasks: `jumplora run --continue-from RUN --order +TASK,...`.

The extension is a new run directory (default `RUN+TASK+...` beside the run) whose config.yaml holds
the full order and `continue_from`; it starts as a copy of the run's finished stages and trains the
added tasks on the run's final model and method state (`jumplora.rundir.extension`). Every option
that changes results is the run's (a different one is refused, naming it), so the extension equals
the uninterrupted run of the full order; only ELLA's λ takes new values, for the added tasks.

    from jumplora.extend import extend_run
    result = extend_run("runs/demo", "+yelp,IMDB")       # runs/demo+yelp+IMDB
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jumplora.config import RunConfig, current_names
from jumplora.data import resolve_order
from jumplora.data.tasklist import is_task_list
from jumplora.errors import ConfigError, UserError
from jumplora.models import LoadedModel
from jumplora.results import RunResult
from jumplora.rundir.extension import check_extension, read_source


def full_order(source_tasks: list[str], order: str, source: Path, source_order: str = "") -> tuple[str, list[str]]:
    """(the full order as stored, the added tasks) of `order`: `+TASK,...` appends tasks to the
    source's; otherwise the order must begin with the source's tasks. The stored order keeps the
    names as written (`cb,copa` + `rte` is `cb,copa,rte`, as the uninterrupted run would store it);
    a numbered order or a file is spelled out as its tasks."""
    text = str(order).strip()
    if text.startswith("+") and is_task_list(source_order):
        raise ConfigError(f"{source}'s order is the task list {source_order}: extend it with --order LIST, a task "
                          "list whose first tasks are its own")
    if text.startswith("+"):
        added_text = text[1:].strip()
        if not added_text:
            raise ConfigError("order '+' adds no task: give --order +TASK,...")
        added = resolve_order(added_text)
        text = f"{_as_names(source_order, source_tasks)},{added_text}"
    else:
        tasks = resolve_order(text)
        if tasks[: len(source_tasks)] != source_tasks:
            raise ConfigError(f"order {order!r} does not begin with {source}'s tasks {','.join(source_tasks)}: "
                              "give --order +TASK,... to add tasks")
        added = tasks[len(source_tasks):]
        if not added:
            raise ConfigError(f"order {order!r} adds no task to {source}'s: give --order +TASK,...")
    for task in added:
        if task in source_tasks:
            raise ConfigError(f"task {task!r} is already in {source}'s order ({','.join(source_tasks)}); an "
                              "extension adds new tasks")
    return text, added


def _as_names(source_order: str, source_tasks: list[str]) -> str:
    """The source's order as a list of task names: as written where it is one, else its tasks."""
    written = str(source_order).strip()
    if written.isdigit() or Path(written).expanduser().is_file():
        return ",".join(source_tasks)
    try:
        return written if resolve_order(written) == source_tasks else ",".join(source_tasks)
    except UserError:
        return ",".join(source_tasks)


def default_output(source: Path, added: list[str]) -> Path:
    """`RUN+TASK+...` beside the run."""
    return source.parent / "+".join([source.name, *added])


def extension_config(source: str | os.PathLike, values: dict[str, Any], where: str = "configuration") -> RunConfig:
    """The configuration of the extension of `source` by `values` (`order`: `+TASK,...`; any other
    option given must be the source's, except where it never changes results: output directory,
    data folder, progress, ...). Everything is checked here, before any data or model is loaded."""
    source_path = Path(source)
    found = read_source(source_path)
    values = current_names(dict(values), where)
    if "order" not in values or values["order"] in (None, ""):
        raise ConfigError(f"--continue-from {source_path} needs --order +TASK,... (the tasks to add)")
    order, added = full_order(found.tasks, values.pop("order"), source_path, str(found.run.config.get("order", "")))
    saved = {k: v for k, v in found.run.config.items() if k in RunConfig.__dataclass_fields__}
    if (found.run.method_name.strategy == "ella" and "ella_lambda" not in values
            and str(saved.get("ella_lambda", "")).strip().lower() == "paper"):
        raise ConfigError(f"{source_path} used --ella-lambda paper (Table 7 for order {saved.get('order')}); the "
                          "extended order has no Table 7 values: give --ella-lambda with one value per task of "
                          "the full order")
    output = values.pop("output_dir", None) or default_output(source_path, added)
    merged = {**saved, **values, "order": order, "output_dir": str(output),
              "continue_from": str(source_path.resolve())}
    config = RunConfig.from_dict(merged, source=where)
    check_extension(config, found)
    return config


def extend_run(source: str | os.PathLike, order: str, output_dir: str | os.PathLike | None = None,
               loaded: LoadedModel | None = None, **options: Any) -> RunResult:
    """Train the tasks `order` adds (`"+TASK,..."`) on top of the finished run `source`; returns the
    extension's result over the whole order. Re-running it resumes an interrupted extension.
    `loaded` replaces loading the run's base model (tests, notebooks)."""
    from jumplora.train import run_continual

    values = {**options, "order": order, "output_dir": str(output_dir) if output_dir is not None else None}
    return run_continual(extension_config(source, values, where="extend_run"), loaded=loaded)


__all__ = ["default_output", "extend_run", "extension_config", "full_order"]
