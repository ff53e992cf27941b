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

Parking (`park=True`, `frozen_masters: disk`): inside the block nothing reads the fp32 originals of
the frozen linears that no adapter wraps (the MLPs, k and o for SmolLM2's q/v targets: 93 M of its
135 M parameters, 372 MB in fp32). Each one's bytes go to an unlinked temporary file for the block
and come back bit for bit at exit, so the process holds only their compute-dtype copies meanwhile.
A weight another parameter shares (a tied LM head) stays, and so does anything off the CPU.
"""

from __future__ import annotations

import contextlib
import tempfile

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


def parks_masters(config) -> bool:
    """Whether `frozen_weights_in` parks the fp32 originals on disk for `config` (`frozen_masters`)."""
    return config.frozen_masters == "disk"


class _ParkedWeights:
    """fp32 tensors whose bytes wait in one unlinked temporary file; `restore` puts them back exactly."""

    def __init__(self):
        self.file = None
        self.parked: list[tuple[torch.Tensor, torch.Size]] = []

    def park(self, weight: torch.Tensor) -> None:
        if self.file is None:
            self.file = tempfile.TemporaryFile(prefix="jumplora-frozen-")  # unlinked: gone with the process
        self.file.write(memoryview(weight.data.numpy()).cast("B"))  # no copy of the bytes in memory
        self.parked.append((weight, weight.shape))
        weight.data = weight.data.new_empty(0)  # the same Parameter object, its storage freed

    def restore(self) -> None:
        if self.file is None:
            return
        self.file.seek(0)
        for weight, shape in self.parked:
            data = torch.empty(shape, dtype=weight.dtype)
            view = memoryview(data.numpy()).cast("B")
            if self.file.readinto(view) != view.nbytes:
                raise OSError(f"the parked frozen weights' temporary file {self.file.name} came back short")
            weight.data = data
        self.file.close()
        self.file, self.parked = None, []


def _parkable(weight: torch.Tensor, storage_uses: dict[int, int]) -> bool:
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and weight.is_contiguous()
            and storage_uses.get(weight.untyped_storage().data_ptr(), 0) == 1)


@contextlib.contextmanager
def frozen_weights_in(model: nn.Module, dtype: torch.dtype | None, *, park: bool = False):
    """Hold `model`'s frozen floating-point linear weights in `dtype` inside the block (None: no-op).

    park: also move the fp32 originals no adapter reads to a temporary file until the block ends."""
    if dtype is None:
        yield
        return
    swapped: list[tuple[nn.Linear, nn.Parameter]] = []
    masters: list[LoRALinear] = []
    parked = _ParkedWeights()
    storage_uses: dict[int, int] = {}
    if park:  # a storage two tensors share (tied weights) is not parked
        every = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
        for _, tensor in every:
            key = tensor.untyped_storage().data_ptr()
            storage_uses[key] = storage_uses.get(key, 0) + 1
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
        lora_bases = {id(layer.base) for layer in masters}  # their fp32 originals fold W + β·ΔW
        for module, weight in swapped:
            if park and id(module) not in lora_bases and _parkable(weight, storage_uses):
                parked.park(weight)
        yield
    finally:
        parked.restore()
        for module, weight in swapped:
            module.weight = weight
        for module in masters:
            module.master_weight = None
