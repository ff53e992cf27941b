"""Where a run computes: the accelerator (CPU or GPU) and its mixed precision.

`accelerate` keeps one process-wide state; a second run with another precision in the same process
(a notebook, the tests) would be refused by it, so `make_accelerator` starts that state afresh.

Under `accelerate launch` the Accelerator joins the launcher's process group (NCCL on GPUs, gloo
on CPUs); the data parallelism itself is `jumplora.distributed`'s. An accelerate config for
DeepSpeed or FSDP launches the processes the same way, but jumplora never hands the model to
`accelerator.prepare`: what those would shard is the trainable state (A, B, τ and their AdamW
moments: tens of MB for T5-large) or the frozen base model, which the per-task injection and merge
rewrite in place. So their plugin is not built (nor DeepSpeed needed), a warning says so, and the
run is the plain data-parallel one (docs/scale-out.md).
"""

from __future__ import annotations

import contextlib
import os
import warnings

import torch

from jumplora.config import RunConfig
from jumplora.errors import ConfigError

_PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # RunConfig.precision -> accelerate's name


def check_precision(config: RunConfig) -> None:
    """The one option that depends on the machine, so RunConfig cannot check it."""
    if config.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("precision fp16 needs a GPU; use bf16 or fp32 on the CPU")


# what `accelerate launch` sets for an accelerate config that shards through `prepare`
SHARDING_LAUNCHES = {"ACCELERATE_USE_DEEPSPEED": "DeepSpeed", "ACCELERATE_USE_FSDP": "FSDP"}


def make_accelerator(config: RunConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    precision = _PRECISIONS[config.precision]
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state(reset_partial_state=True)
    sharding = [name for variable, name in SHARDING_LAUNCHES.items()
                if os.environ.get(variable, "false").lower() == "true"]
    with _environment_without(SHARDING_LAUNCHES):
        accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())
    if sharding and accelerator.is_main_process:
        warnings.warn(f"the accelerate config asks for {sharding[0]}: jumplora runs its {accelerator.num_processes} "
                      "processes data-parallel with its own all-reduce of A, B and tau (nothing to shard: "
                      "docs/scale-out.md); the precision is --precision's", stacklevel=2)
    return accelerator


@contextlib.contextmanager
def _environment_without(names):
    saved = {name: os.environ.pop(name) for name in list(names) if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
