"""Frozen linear weights held in the compute dtype for a while (a task's training, an evaluation).

Under bf16 autocast every `F.linear` casts its fp32 weight to bf16 again on every call: for a
135 M-parameter model that is a full read of the fp32 weights and a write of their bf16 copy per
micro-batch, and the LM head's cast costs three times its matmul over a step's few target rows.
The cast result is the same every time, since the weights are frozen. `frozen_weights_in(model,
dtype)` therefore swaps each frozen `nn.Linear` weight for its `dtype` copy on entry and puts the
fp32 originals back on exit, so that autocast's own cast becomes a no-op. The forward computes
exactly what autocast computed (the same rounded weights, the same bf16 matmuls).

What stays fp32: A, B, τ and ΔW (trainable, not `nn.Linear` weights), embeddings and norms (not
linears: a tied embedding keeps its fp32 table while the LM head gets the bf16 copy), and the fp32
originals themselves, which the merge writes into after exit. `LoRALinear` is told where its base's
original is (`master_weight`) so that its folded weight W + β·ΔW is summed in fp32, as before.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from jumplora.adapter import LoRALinear

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def compute_dtype(accelerator) -> torch.dtype | None:
    """The autocast dtype of the run (None under fp32)."""
    return AUTOCAST_DTYPES.get(str(accelerator.mixed_precision))


def held_dtype(config, accelerator) -> torch.dtype | None:
    """The dtype `frozen_weights_in` holds the frozen weights in for `config` (None: they stay fp32)."""
    return compute_dtype(accelerator) if config.frozen_weights == "compute-dtype" else None


@contextlib.contextmanager
def frozen_weights_in(model: nn.Module, dtype: torch.dtype | None):
    """Hold `model`'s frozen floating-point linear weights in `dtype` inside the block (None: no-op)."""
    if dtype is None:
        yield
        return
    swapped: list[tuple[nn.Linear, nn.Parameter]] = []
    masters: list[LoRALinear] = []
    try:
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.master_weight = module.base.weight  # before its base is swapped below
                masters.append(module)
            elif isinstance(module, nn.Linear):
                weight = module.weight
                if weight.requires_grad or not weight.is_floating_point() or weight.dtype == dtype:
                    continue
                swapped.append((module, weight))
                # a plain attribute set: a tied weight (LM head = embedding) is untied for the block only
                module.weight = nn.Parameter(weight.detach().to(dtype), requires_grad=False)
        yield
    finally:
        for module, weight in swapped:
            module.weight = weight
        for module in masters:
            module.master_weight = None
