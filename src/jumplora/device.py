"""Where a run computes: the accelerator (CPU or GPU) and its mixed precision.

`accelerate` keeps one process-wide state; a second run with another precision in the same process
(a notebook, the tests) would be refused by it, so `make_accelerator` starts that state afresh.
"""

from __future__ import annotations

import torch

from jumplora.config import RunConfig
from jumplora.errors import ConfigError

_PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # RunConfig.precision -> accelerate's name


def check_precision(config: RunConfig) -> None:
    """The one option that depends on the machine, so RunConfig cannot check it."""
    if config.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("precision fp16 needs a GPU; use bf16 or fp32 on the CPU")


def make_accelerator(config: RunConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    precision = _PRECISIONS[config.precision]
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())
