"""Benchmarks of JumpLoRA: task registry, orders, sources, sampling protocol, prompts and batches.

The batch helpers need torch; they are imported on first use so that `jumplora data` and the
registry stay light.
"""

from __future__ import annotations

import importlib

from jumplora.data.orders import ORDERS, benchmark_of, resolve_order
from jumplora.data.prompts import (
    ANSWER_CUE,
    PROMPT_STYLES,
    PromptEncoder,
    encode_prompt,
    encode_target,
    format_prompt,
    prompt_template,
    special_tokens,
)
from jumplora.data.protocol import (
    DataProtocol,
    TaskData,
    apply_given_split,
    apply_protocol,
    load_task,
    load_tasks,
    task_seed,
)
from jumplora.data.sources import (
    DATA_ENV,
    Example,
    FolderSource,
    HFSource,
    SplitRecords,
    load_hf_split,
    read_instructions,
    read_labels,
    read_records,
    resolve_data_dir,
)
from jumplora.data.tasks import TASKS, TaskSpec, get_task, task_names

_LAZY = {
    name: "jumplora.data.batches"
    for name in (
        "CausalLMCollator",
        "IGNORE_INDEX",
        "Seq2SeqCollator",
        "label_token_ids",
        "make_eval_batches",
        "make_train_batches",
        "pad_sequences",
        "shuffle_steps",
    )
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jumplora.data' has no attribute {name!r}")


__all__ = [
    "ANSWER_CUE", "DATA_ENV", "ORDERS", "PROMPT_STYLES", "TASKS",
    "DataProtocol", "Example", "FolderSource", "HFSource", "PromptEncoder", "SplitRecords",
    "TaskData", "TaskSpec",
    "apply_given_split", "apply_protocol", "benchmark_of", "encode_prompt", "encode_target", "format_prompt",
    "get_task", "load_hf_split", "load_task", "load_tasks", "prompt_template", "read_instructions", "read_labels",
    "read_records", "resolve_data_dir", "resolve_order", "special_tokens", "task_names",
    "task_seed",
    *_LAZY,
]
