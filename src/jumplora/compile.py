"""`compile: blocks`: each transformer block through `torch.compile`, to fuse its element-wise work.

What is left of a step outside the GEMMs on CPU is element-wise (norms, SiLU·mul, RoPE, residuals,
casts: issue 16's profile put it near 14 % of the step). Inductor fuses such chains into single
loops, forward and backward. The blocks are the repeated children of the model's longest
`nn.ModuleList`s (a Llama's `model.layers`, T5's `encoder.block` and `decoder.block`), compiled in
place with `nn.Module.compile` (parameter names and the state dict unchanged) and dynamic shapes, so
that the length buckets of a task share one graph and every block shares it too (torch inlines the
modules and passes their parameters as inputs).

The adapters inside need nothing: under the per-step fold their forward is one `F.linear` with the
step's folded weight. The compiler is optional: `probe()` compiles and runs a two-op function once;
when that fails (no C++ compiler, a torch without inductor) the run warns in one line and stays eager,
and a later graph the compiler fails on runs eager too (dynamo's `suppress_errors`).
Whether it pays is measured by `benchmarks/step_time.py` (variant `sparse_compiled`): compile time
against the saving per step.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch
from torch import nn

MODES = ("none", "blocks")
RECOMPILE_LIMIT = 32


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks: children of each `nn.ModuleList` of ≥ 2 modules of one class, outermost lists only."""
    blocks, inside = [], set()
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in inside):
            continue
        if isinstance(module, nn.ModuleList) and len(module) >= 2 and len({type(m) for m in module}) == 1:
            blocks.extend(module)
            inside.add(name + ".")
    return blocks


@functools.lru_cache(maxsize=1)
def probe() -> str | None:
    """None when torch.compile works here, else why not (one line)."""
    try:
        compiled = torch.compile(lambda x: torch.nn.functional.silu(x) * x + 1, dynamic=True)
        compiled(torch.ones(3))
        return None
    except Exception as error:  # the compiler's errors have no common base class
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def compile_blocks(model: nn.Module, mode: str) -> int:
    """Compile `model`'s transformer blocks in place when `mode` is "blocks"; returns how many were."""
    if mode not in MODES:
        raise ValueError(f"unknown compile mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "none":
        return 0
    why = probe()
    if why is not None:
        warnings.warn(f"compile: blocks: torch.compile does not work here ({why}); running eager", stacklevel=2)
        return 0
    # a stage's blocks trace up to 8 variants (the first block's input needs no gradient, the others'
    # do; dense steps and folded steps; with and without a padding mask): above dynamo's default limit
    # of 8 per function, where it would silently fall back to eager
    config = torch._dynamo.config
    limit_name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, limit_name, max(getattr(config, limit_name), RECOMPILE_LIMIT))
    config.suppress_errors = True  # a graph the compiler fails on runs eager: a compile never ends a run
    blocks = transformer_blocks(model)
    for block in blocks:
        block.compile(dynamic=True)
    return len(blocks)


def uncompile_blocks(model: nn.Module) -> None:
    """Undo `compile_blocks` (the modules are the same objects; only their call goes eager again)."""
    for block in transformer_blocks(model):
        if getattr(block, "_compiled_call_impl", None) is not None:
            block._compiled_call_impl = None


@contextlib.contextmanager
def compiled_blocks(model: nn.Module, mode: str):
    """The blocks compiled for a task's training, eager again after it (evaluation's KV-cached greedy
    loop stays eager: its cache objects would make a graph per generated position)."""
    count = compile_blocks(model, mode)
    try:
        yield count
    finally:
        if count:
            uncompile_blocks(model)


__all__ = ["MODES", "compile_blocks", "compiled_blocks", "probe", "transformer_blocks", "uncompile_blocks"]
