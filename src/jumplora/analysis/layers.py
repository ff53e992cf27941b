"""Where an adapted matrix sits in the model, and which matrices make up "a layer".

A matrix's transformer block is `jumplora.injection.block_of(name)`: `encoder.block.3`,
`decoder.block.3` (T5) or `model.layers.5` (decoder-only). Here a block is split into its *stack*
(`encoder.block`, `decoder.block`, `model.layers`) and its *index* (3, 5): depth is the index
within a stack, and T5's encoder and decoder are separate stacks.

§5 of the paper reports sparsity and overlap "for the middle layer of the model". `select_modules`
picks the matrices of one layer:

- ``"middle"``: block ``indices[len(indices) // 2]`` of the main stack, where ``indices`` are the
  block indices present, sorted (block 12 of 0-23: for an even count, the upper of the two middle
  blocks). The main stack is the encoder for T5 (so T5's middle layer is the middle *encoder*
  block), the only stack of a decoder-only model, otherwise the stack with the most blocks;
- an ``int`` i: block i of the main stack;
- a block name (``"decoder.block.12"``): that block;
- ``"all"``: every adapted matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from jumplora.errors import UserError
from jumplora.injection import block_of


def parse_block(name: str) -> tuple[str, int] | None:
    """(stack, index) of a module name: `encoder.block.3.layer.0.SelfAttention.q` -> ("encoder.block", 3).

    None for a module outside any numbered block (an `lm_head`, say).
    """
    block = block_of(name)
    stack, _, index = block.rpartition(".")
    if stack and index.isdigit():
        return stack, int(index)
    return None


def stack_label(stack: str) -> str:
    """"encoder" / "decoder" for T5's stacks; other stacks (`model.layers`) by their name."""
    first = stack.split(".", 1)[0]
    return first if first in ("encoder", "decoder") else stack


def blocks_by_stack(names: Iterable[str]) -> dict[str, dict[int, list[str]]]:
    """stack -> block index -> module names, stacks and indices sorted."""
    found: dict[str, dict[int, list[str]]] = {}
    for name in names:
        parsed = parse_block(name)
        if parsed is not None:
            found.setdefault(parsed[0], {}).setdefault(parsed[1], []).append(name)
    return {stack: dict(sorted(found[stack].items())) for stack in sorted(found)}


def main_stack(stacks: dict[str, dict[int, list[str]]]) -> str | None:
    """T5's encoder; else the stack with the most blocks (the first by name among equals)."""
    if not stacks:
        return None
    encoders = sorted(s for s in stacks if stack_label(s) == "encoder")
    if encoders:
        return encoders[0]
    return min(stacks, key=lambda s: (-len(stacks[s]), s))


def parse_layer(value: str | int) -> str | int:
    """A `--layer` value: "middle", "all", a block index or a block name (`decoder.block.12`)."""
    if isinstance(value, bool):
        raise UserError(f"invalid layer {value!r}: give 'middle', 'all', a block index or a block name")
    if isinstance(value, int):
        if value < 0:
            raise UserError(f"invalid layer {value}: a block index is 0 or more")
        return value
    text = str(value).strip()
    if text.lower() in ("middle", "all"):
        return text.lower()
    if text.lstrip("-").isdigit():
        return parse_layer(int(text))
    if parse_block(text) is not None and block_of(text) == text:
        return text
    raise UserError(f"invalid layer {value!r}: give 'middle', 'all', a block index or a block name")


@dataclass(frozen=True)
class LayerSelection:
    """The matrices of one layer, and words that say which layer it is."""

    modules: tuple[str, ...]
    description: str
    stack: str | None = None
    index: int | None = None


def select_modules(names: Iterable[str], layer: str | int = "middle") -> LayerSelection:
    """The adapted matrices (by fully-qualified name) of `layer`; see the module docstring."""
    names = sorted(set(names))
    layer = parse_layer(layer)
    if layer == "all":
        return LayerSelection(tuple(names), f"all {len(names)} adapted matrices")
    stacks = blocks_by_stack(names)
    if not stacks:
        raise UserError("no adapted matrix sits in a numbered transformer block; use --layer all")
    if isinstance(layer, str) and layer != "middle":  # a block name
        stack, index = parse_block(layer)
        if index not in stacks.get(stack, {}):
            raise UserError(f"no adapted matrix in block {layer!r}")
        return LayerSelection(tuple(stacks[stack][index]), f"block {layer}", stack, index)
    stack = main_stack(stacks)
    indices = list(stacks[stack])
    span = f"{indices[0]}-{indices[-1]}" if len(indices) > 1 else str(indices[0])
    named = len(stacks) > 1 or stack_label(stack) in ("encoder", "decoder")
    where = f"{stack_label(stack)} block" if named else "block"
    if layer == "middle":
        index = indices[len(indices) // 2]
        note = " (T5: the middle encoder block)" if stack_label(stack) == "encoder" else ""
        description = f"middle layer: {where} {index} of {span}{note}"
    else:
        index = layer
        if index not in stacks[stack]:
            raise UserError(f"no adapted matrix in {where} {index} (blocks {span})")
        description = f"{where} {index} of {span}"
    return LayerSelection(tuple(stacks[stack][index]), description, stack, index)
