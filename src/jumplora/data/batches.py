"""Padded tensor batches for training and evaluation.

Training micro-batches are made in one of two ways (`batching`):

- "random" (the authors' Hugging Face Trainer: a shuffled dataset cut into batches): the examples
  are shuffled with the seed and cut into consecutive optimiser-step batches of `step_batch_size`
  examples (the last one partial); each step batch is sorted by length and split into
  micro-batches of `batch_size`. So a step's examples are a uniform random draw, and only the
  micro-batches within a step are grouped by length.
- "length" (the historical behaviour): the examples are shuffled with the seed, cut into chunks of
  `chunk_batches` micro-batches, sorted by length inside each chunk, batched, and the micro-batch
  order is shuffled again; micro-batches hold examples of similar length (less padding) but
  consecutive steps are correlated by length.

Every training micro-batch also carries two ints: "step", the 0-based optimiser step it belongs
to (consecutive micro-batches of one step share it; in "length" mode consecutive runs of
step_batch_size // batch_size micro-batches), and "target_tokens", its number of label
positions that are not -100 (to normalise a loss over the whole step).

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

from jumplora.data.prompts import PromptEncoder, encode_target
from jumplora.data.protocol import TaskData, task_seed
from jumplora.data.sources import Example
from jumplora.data.tasks import TaskSpec
from jumplora.errors import ConfigError
from jumplora.tokens import check_kind, eos_id, pad_id

IGNORE_INDEX = -100
BATCHING = ("random", "length")


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
    check_kind(kind)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}")


def label_token_ids(task: TaskData | TaskSpec, tokenizer: Any, kind: str,
                    max_target_tokens: int | None = None) -> list[list[int]]:
    """Each label word's target ids (+ EOS) as the model sees them, in label-set order; for scoring
    every label (rank classification). `max_target_tokens` cuts them as the training targets."""
    return [encode_target(tokenizer, label, kind, max_target_tokens) for label in task.labels]


def _length_groups(order: list[int], lengths: list[int], batch_size: int, chunk_batches: int,
                   rng: random.Random, accumulation: int) -> list[tuple[int, list[int]]]:
    """(step, example indices) of each micro-batch, historical length-grouped order."""
    chunk = batch_size * max(1, chunk_batches)
    groups = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        groups.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(groups)
    return [(n // accumulation, group) for n, group in enumerate(groups)]


def _random_groups(order: list[int], lengths: list[int], batch_size: int,
                   step_batch_size: int) -> list[tuple[int, list[int]]]:
    """(step, example indices) of each micro-batch: consecutive step batches of the shuffled
    order, each sorted by length and split into micro-batches."""
    groups = []
    for step, start in enumerate(range(0, len(order), step_batch_size)):
        part = sorted(order[start:start + step_batch_size], key=lambda i: lengths[i])
        groups.extend((step, part[i:i + batch_size]) for i in range(0, len(part), batch_size))
    return groups


def cut_micro_batch(batch: dict[str, Any], max_tokens: int) -> list[dict[str, Any]]:
    """A right-padded training micro-batch as pieces of at most `max_tokens` padded tokens (rows ×
    width; one row at least), each trimmed of the padding it no longer needs; one piece when it fits.

    Under the step's token-mean loss the pieces give the micro-batch's loss and gradient: the memory
    a forward keeps for backward is then bounded by `max_tokens` whatever the lengths of the texts.
    """
    rows, width = batch["input_ids"].shape
    if rows <= 1 or rows * width <= max_tokens:
        return [batch]
    size = max(1, max_tokens // width)
    pieces = []
    for start in range(0, rows, size):
        mask = batch["attention_mask"][start:start + size]
        labels = batch["labels"][start:start + size]
        used = int(mask.sum(dim=1).max())
        kept = (labels != IGNORE_INDEX).any(dim=0).nonzero()
        label_width = int(kept[-1]) + 1 if len(kept) else 1
        if labels.shape[1] == width:  # causal: labels align with the inputs
            label_width = used
        piece = {**batch, "input_ids": batch["input_ids"][start:start + size, :used],
                 "attention_mask": mask[:, :used], "labels": labels[:, :label_width]}
        piece["target_tokens"] = int((piece["labels"] != IGNORE_INDEX).sum())
        pieces.append(piece)
    return pieces


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
    *,
    prompt_style: str = "olora",
    max_target_tokens: int | None = None,
    batching: str = "length",
    step_batch_size: int | None = None,
    epoch: int = 0,
) -> list[dict[str, Any]]:
    """Training micro-batches of `batch_size` examples (input_ids, attention_mask, labels tensors
    and the ints "step" and "target_tokens"), in the seeded order of `batching` (module docstring).

    `step_batch_size` is the global batch (examples per optimiser step), a multiple of
    `batch_size`; None: `batch_size` (one micro-batch a step). `epoch` > 0 draws another seeded
    order (epoch 0 is the historical one). `prompt_style`, `max_input_tokens`, `header`:
    see `jumplora.data.prompts`; `max_target_tokens` cuts the targets (EOS kept last).
    """
    _check(kind, batch_size)
    if batching not in BATCHING:
        raise ConfigError(f"unknown batching {batching!r}; valid: {', '.join(BATCHING)}")
    step_batch_size = batch_size if step_batch_size is None else step_batch_size
    if (isinstance(step_batch_size, bool) or not isinstance(step_batch_size, int)
            or step_batch_size < 1 or step_batch_size % batch_size):
        raise ConfigError(f"step batch size {step_batch_size!r} is not a positive multiple of the "
                          f"micro-batch size {batch_size}")
    encoder = PromptEncoder(tokenizer, task, kind, max_input_tokens, header, prompt_style=prompt_style)
    targets: dict[str, list[int]] = {}
    features, lengths = [], []
    for example in examples:
        if example.label not in targets:
            targets[example.label] = encode_target(tokenizer, example.label, kind, max_target_tokens)
        prompt, target = encoder.encode(example.sentence), targets[example.label]
        if kind == "seq2seq":
            features.append({"input_ids": prompt, "labels": target})
            lengths.append(len(prompt))
        else:
            features.append({"prompt_ids": prompt, "target_ids": target})
            lengths.append(len(prompt) + len(target))

    name = task.spec.name if isinstance(task, TaskData) else task.name
    rng = random.Random(task_seed(seed, name, "batches" if epoch == 0 else f"batches/epoch{epoch}"))
    order = list(range(len(features)))
    rng.shuffle(order)
    if batching == "random":
        groups = _random_groups(order, lengths, batch_size, step_batch_size)
    else:
        groups = _length_groups(order, lengths, batch_size, chunk_batches, rng,
                                step_batch_size // batch_size)

    collate = (Seq2SeqCollator if kind == "seq2seq" else CausalLMCollator)(pad_id(tokenizer))
    if kind == "causal":
        eos_id(tokenizer)  # fail early with a clear message
    batches = []
    for step, group in groups:
        batch: dict[str, Any] = collate([features[i] for i in group])
        batch["step"] = step
        batch["target_tokens"] = int((batch["labels"] != IGNORE_INDEX).sum())
        batches.append(batch)
    return batches


def shuffle_steps(batches: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The micro-batches with their optimiser steps in a seeded random order, each step's
    micro-batches kept together and in order, "step" renumbered 0, 1, ... (to interleave the
    batches of several tasks without splitting a step)."""
    steps: dict[int, list[dict[str, Any]]] = {}
    keys = []
    for index, batch in enumerate(batches):
        key = batch["step"]
        if key not in steps:
            steps[key] = []
            keys.append(key)
        elif keys[-1] != key:
            raise ConfigError(f"micro-batch {index}: step {key} is not contiguous")
        steps[key].append(batch)
    random.Random(seed).shuffle(keys)
    return [{**batch, "step": new} for new, key in enumerate(keys) for batch in steps[key]]


def make_eval_batches(
    examples: Sequence[Example],
    task: TaskData | TaskSpec,
    tokenizer: Any,
    kind: str,
    batch_size: int,
    max_input_tokens: int | None = None,
    header: bool = True,
    *,
    prompt_style: str = "olora",
) -> list[dict[str, Any]]:
    """Prompt batches for generation/scoring, longest first over the whole list: `input_ids` and
    `attention_mask` (left-padded for causal, right-padded for seq2seq), `references` (label
    words) and `index` (positions in `examples`). Prompts are encoded as for training
    (`prompt_style`, `max_input_tokens`, `header`)."""
    _check(kind, batch_size)
    encoder = PromptEncoder(tokenizer, task, kind, max_input_tokens, header, prompt_style=prompt_style)
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
