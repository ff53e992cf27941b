"""Padded tensor batches for training and evaluation, grouped by length to cut padding.

Training batches: the examples are shuffled with the seed, cut into chunks of `chunk_batches`
batches, sorted by length inside each chunk, batched, and the batch order is shuffled again; so
batches hold examples of similar length yet the task is still seen in random order.

- seq2seq (T5): `input_ids`/`attention_mask` right-padded; `labels` = target tokens + EOS, padded
  with -100 (the model builds its decoder inputs from them).
- causal: `input_ids` = prompt + target + EOS, right-padded; `labels` = -100 everywhere except the
  target tokens and EOS; `attention_mask` 0 on padding.

Evaluation batches hold only the prompts (left-padded for causal models so that generation
continues from the last position; right-padded for seq2seq), the reference label words and each
example's position in the input list, longest first so that memory trouble shows at once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from jumplora.data.prompts import PromptEncoder, encode_target, eos_id
from jumplora.data.protocol import TaskData, task_seed
from jumplora.data.sources import Example
from jumplora.data.tasks import TaskSpec
from jumplora.errors import ConfigError

IGNORE_INDEX = -100


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad token, else its EOS (GPT-2 has no pad token; padding is masked anyway)."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    if pad is None:
        raise ConfigError(f"tokenizer {type(tokenizer).__name__} has neither a pad nor an EOS token")
    return int(pad)


def pad_sequences(seqs: Sequence[Sequence[int]], value: int, side: str = "right") -> torch.Tensor:
    """A (len(seqs), longest) long tensor of `seqs` padded with `value` on `side`."""
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for row, seq in enumerate(seqs):
        if not seq:
            continue
        if side == "right":
            out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        else:
            out[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
    return out


def _mask(seqs: Sequence[Sequence[int]], side: str = "right") -> torch.Tensor:
    return pad_sequences([[1] * len(s) for s in seqs], 0, side)


class Seq2SeqCollator:
    """Features {"input_ids", "labels"} -> right-padded tensors, labels padded with -100."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        inputs = [f["input_ids"] for f in features]
        return {
            "input_ids": pad_sequences(inputs, self.pad_token_id),
            "attention_mask": _mask(inputs),
            "labels": pad_sequences([f["labels"] for f in features], IGNORE_INDEX),
        }


class CausalLMCollator:
    """Features {"prompt_ids", "target_ids"} -> prompt + target right-padded; loss on target only."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        inputs = [list(f["prompt_ids"]) + list(f["target_ids"]) for f in features]
        labels = [[IGNORE_INDEX] * len(f["prompt_ids"]) + list(f["target_ids"]) for f in features]
        return {
            "input_ids": pad_sequences(inputs, self.pad_token_id),
            "attention_mask": _mask(inputs),
            "labels": pad_sequences(labels, IGNORE_INDEX),
        }


def _check(kind: str, batch_size: int) -> None:
    if kind not in ("seq2seq", "causal"):
        raise ConfigError(f"unknown model kind {kind!r}; valid: seq2seq, causal")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}")


def label_token_ids(task: TaskData | TaskSpec, tokenizer: Any, kind: str) -> list[list[int]]:
    """Each label word's target ids (+ EOS) as the model sees them, in label-set order; for scoring
    every label (rank classification)."""
    return [encode_target(tokenizer, label, kind) for label in task.labels]


def make_train_batches(
    examples: Sequence[Example],
    task: TaskData | TaskSpec,
    tokenizer: Any,
    kind: str,
    batch_size: int,
    seed: int,
    max_input_tokens: int | None = None,
    header: bool = True,
    chunk_batches: int = 50,
) -> list[dict[str, torch.Tensor]]:
    """Training batches (input_ids, attention_mask, labels) in a seeded, length-grouped order."""
    _check(kind, batch_size)
    encoder = PromptEncoder(tokenizer, task, kind, max_input_tokens, header)
    targets: dict[str, list[int]] = {}
    features, lengths = [], []
    for example in examples:
        if example.label not in targets:
            targets[example.label] = encode_target(tokenizer, example.label, kind)
        prompt, target = encoder.encode(example.sentence), targets[example.label]
        if kind == "seq2seq":
            features.append({"input_ids": prompt, "labels": target})
            lengths.append(len(prompt))
        else:
            features.append({"prompt_ids": prompt, "target_ids": target})
            lengths.append(len(prompt) + len(target))

    name = task.spec.name if isinstance(task, TaskData) else task.name
    rng = random.Random(task_seed(seed, name, "batches"))
    order = list(range(len(features)))
    rng.shuffle(order)
    chunk = batch_size * max(1, chunk_batches)
    groups = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        groups.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(groups)

    collate = (Seq2SeqCollator if kind == "seq2seq" else CausalLMCollator)(pad_id(tokenizer))
    if kind == "causal":
        eos_id(tokenizer)  # fail early with a clear message
    return [collate([features[i] for i in group]) for group in groups]


def make_eval_batches(
    examples: Sequence[Example],
    task: TaskData | TaskSpec,
    tokenizer: Any,
    kind: str,
    batch_size: int,
    max_input_tokens: int | None = None,
    header: bool = True,
) -> list[dict[str, Any]]:
    """Prompt batches for generation/scoring, longest first: `input_ids` and `attention_mask`
    (left-padded for causal, right-padded for seq2seq), `references` (label words) and `index`
    (positions in `examples`)."""
    _check(kind, batch_size)
    encoder = PromptEncoder(tokenizer, task, kind, max_input_tokens, header)
    prompts = [encoder.encode(example.sentence) for example in examples]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    side = "left" if kind == "causal" else "right"
    pad = pad_id(tokenizer)
    batches = []
    for start in range(0, len(order), batch_size):
        group = order[start:start + batch_size]
        seqs = [prompts[i] for i in group]
        batches.append({
            "input_ids": pad_sequences(seqs, pad, side),
            "attention_mask": _mask(seqs, side),
            "references": [examples[i].label for i in group],
            "index": list(group),
        })
    return batches
