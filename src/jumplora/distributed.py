"""Data-parallel runs: what each process of `accelerate launch` (or torchrun) does, and the few
collectives a run needs. With one process every function here is the identity or a no-op, so a
single-device run computes exactly what it computed before.

Design (why not DDP): a stage's adapters are injected fresh (plain modules around frozen linears)
and merged away after it, the only trainable tensors are A, B and τ, and a step of a partial batch
may leave a process without examples. Wrapping the model in DistributedDataParallel per stage would
re-register hooks on every injection and hang on a process that has nothing to run backward on.
So each process accumulates the gradients of its share of the step and one explicit all-reduce
(SUM) after the step's micro-batches makes them the global gradient, on every process alike; the
clipping, the optimiser step, τ's initialisation and the merge then see the same numbers
everywhere, and the adapters stay identical without being broadcast.

- Training (`StepShare`): the examples of optimiser step s are the same set whatever the process
  count: they are the step's rows, in the step's order (sorted by length), dealt out round-robin
  (rank r takes rows r, r+W, ...: every process gets examples of similar length) and cut into
  micro-batches of at most `micro_batch_size`. The loss is normalised by the step's target tokens
  over all processes and each term by the number of micro-batches over all processes, so the
  summed gradient is the one-process gradient (`loss_mean="step"`).
- Evaluation: whole evaluation batches dealt out round-robin (`shard`), the per-example outcomes
  gathered, the accuracy computed once from all of them: every example is in the same batch, with
  the same padding, as on one process.
- Only the main process writes (the run directory, logs, progress bars); the others open the run
  directory after it (`main_first`) and read what it wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from jumplora.data.batches import IGNORE_INDEX


@dataclass
class StepShare:
    """One process's part of an optimiser step: its micro-batches, and the two counts over ALL
    processes that normalise the loss (`target_tokens`) and each term (`micro_batches`)."""

    batches: list[dict]
    target_tokens: int
    micro_batches: int
    every_process_has_examples: bool = True


@dataclass(frozen=True)
class ScaleOut:
    """This process's place among the run's processes: `rank` of `world`."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "ScaleOut":
        """From the process group the launcher set up (accelerate's `Accelerator` initialises it);
        one process when there is none."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return cls(torch.distributed.get_rank(), torch.distributed.get_world_size())
        return cls()

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # who does what ------------------------------------------------------------------------------
    def quiet(self, config):
        """`config` as a process other than the main one runs it: no progress bars, no TensorBoard
        (options of role "output": they change no result)."""
        if self.is_main:
            return config
        return dataclasses.replace(config, progress=False, log="none")

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def main_first(self):
        """The main process runs the block first (creating or checking what the others then read);
        the others wait for it, then run the block themselves."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def seed_process(self, seed: int) -> None:
        """A different random stream per process from here on (LoRA dropout): call after what must be
        drawn identically everywhere (the adapters' initial A). One process: the stream is untouched."""
        if self.active:
            torch.manual_seed(seed + self.rank)

    # training -----------------------------------------------------------------------------------
    def step_share(self, micro_batches: Sequence[dict], micro_batch_size: int) -> StepShare:
        """This process's share of one optimiser step's micro-batches (module docstring)."""
        tokens = sum(int(batch["target_tokens"]) for batch in micro_batches)
        if not self.active:
            return StepShare(list(micro_batches), tokens, len(micro_batches))
        rows = [row for batch in micro_batches for row in _rows(batch)]
        per_rank = [len(rows[r::self.world]) for r in range(self.world)]
        count = sum(-(-n // micro_batch_size) for n in per_rank)  # ceil: every process's micro-batches
        mine = rows[self.rank::self.world]
        batches = [_collate(mine[i:i + micro_batch_size], micro_batches[0].get("step"))
                   for i in range(0, len(mine), micro_batch_size)]
        return StepShare(batches, tokens, count, every_process_has_examples=min(per_rank) > 0)

    def all_reduce_step(self, parameters: Sequence[torch.Tensor], sums: dict[str, float],
                        share: StepShare) -> dict[str, float]:
        """Sum the parameters' gradients and the logged terms over all processes, in place; return the
        summed terms. A gradient that is None on every process stays None (AdamW then skips it, as on
        one process); one that is None only here counts as zeros."""
        if not self.active:
            return sums
        names = list(sums)
        if not share.every_process_has_examples:  # a process without examples does not know the terms
            box = [names]
            torch.distributed.broadcast_object_list(box, src=0)
            names = box[0]
        device = parameters[0].device
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1).float() for g in grads]) if grads else torch.zeros(0, device=device)
        meta = torch.tensor([float(p.grad is not None) for p in parameters] + [sums.get(n, 0.0) for n in names],
                            dtype=torch.float64, device=device)
        torch.distributed.all_reduce(flat)
        torch.distributed.all_reduce(meta)
        offset = 0
        for parameter, grad, present in zip(parameters, grads, meta[: len(parameters)].tolist()):
            size = grad.numel()
            if present:
                parameter.grad = flat[offset:offset + size].view_as(grad).to(grad.dtype)
            else:
                parameter.grad = None
            offset += size
        return dict(zip(names, meta[len(parameters):].tolist()))

    # collectives for evaluation and method states ----------------------------------------------------
    def shard(self, items: Sequence) -> list:
        """This process's items, dealt out round-robin: none twice, none left out, whatever the count."""
        return list(items[self.rank::self.world])

    def gather(self, value: Any) -> list:
        """Every process's `value` (picklable), by rank."""
        if not self.active:
            return [value]
        gathered: list = [None] * self.world
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def all_reduce_sum_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum each tensor over all processes, in place."""
        if self.active:
            for tensor in tensors:
                torch.distributed.all_reduce(tensor)


def _rows(batch: dict) -> list[dict]:
    """A training micro-batch's examples, each trimmed of its padding (right-padded: the real tokens
    come first; labels end with the last position that is not -100)."""
    rows = []
    for i in range(batch["input_ids"].shape[0]):
        length = int(batch["attention_mask"][i].sum())
        labels = batch["labels"][i]
        real = (labels != IGNORE_INDEX).nonzero()
        label_length = int(real[-1]) + 1 if len(real) else 0
        # causal: the target ends the sequence, so both lengths agree and the widths stay equal
        rows.append({"input_ids": batch["input_ids"][i, :length],
                     "attention_mask": batch["attention_mask"][i, :length],
                     "labels": labels[:label_length]})
    return rows


def _collate(rows: list[dict], step) -> dict:
    """Rows back into a right-padded micro-batch, as `make_train_batches` makes them; the padded
    input positions are masked (attention 0, label -100), so their token value is never read into
    a loss."""
    def pad(key: str, value: int) -> torch.Tensor:
        width = max(row[key].shape[0] for row in rows)
        out = rows[0][key].new_full((len(rows), width), value)
        for i, row in enumerate(rows):
            out[i, : row[key].shape[0]] = row[key]
        return out

    batch = {"input_ids": pad("input_ids", 0), "attention_mask": pad("attention_mask", 0),
             "labels": pad("labels", IGNORE_INDEX)}
    batch["target_tokens"] = int((batch["labels"] != IGNORE_INDEX).sum())
    if step is not None:
        batch["step"] = step
    return batch


__all__ = ["ScaleOut", "StepShare"]
