"""Which linear layers an adapter wraps: the query and value projections, by architecture.

The paper adapts the query and value matrices. `default_target_modules` names them for the usual
architectures; `find_target_linears` finds the modules given names match, and names a target that
matches nothing (with some names the model does have).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

from jumplora.errors import UserError

T5_FAMILY = frozenset({"t5", "mt5", "umt5", "longt5", "switch_transformers"})
QV_PROJ_FAMILY = frozenset(
    {
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma",
        "gemma2", "gemma3", "gemma3_text", "smollm3", "olmo", "olmo2", "granite", "starcoder2",
        "phi", "stablelm", "cohere", "bart", "mbart", "marian", "pegasus", "opt", "whisper",
    }
)
FUSED_QKV = frozenset({"c_attn", "qkv_proj", "query_key_value", "Wqkv", "qkv", "in_proj"})
FALLBACK_PAIRS = (("q_proj", "v_proj"), ("query", "value"), ("q", "v"))


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def _last(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def default_target_modules(model: nn.Module) -> tuple[str, ...]:
    """The query and value projection names to adapt by default, by architecture.

    T5 family: ("q", "v"); Llama, Mistral, Qwen, SmolLM and alike: ("q_proj", "v_proj").
    Architectures with a fused query/key/value projection (GPT-2's ``c_attn``) have no separate
    query and value matrices: pass the target modules explicitly for them.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "") or ""
    linear_last = {_last(n) for n in _linear_names(model)}
    if model_type in T5_FAMILY and {"q", "v"} <= linear_last:
        return ("q", "v")
    if model_type in QV_PROJ_FAMILY and {"q_proj", "v_proj"} <= linear_last:
        return ("q_proj", "v_proj")
    fused = sorted({_last(n) for n, _ in model.named_modules()} & FUSED_QKV)
    separate = [pair for pair in FALLBACK_PAIRS if set(pair) <= linear_last]
    if fused and not separate:
        raise UserError(
            f"model type {model_type or type(model).__name__!r} has a fused query/key/value "
            f"projection ({fused[0]}), not separate query and value matrices: pass the target "
            "modules explicitly (--target-modules)"
        )
    if separate:
        return separate[0]
    raise UserError(
        f"cannot tell the query and value projections of model type "
        f"{model_type or type(model).__name__!r}: pass --target-modules "
        f"(linear layers here: {_examples(model)})"
    )


def target_names(target_modules: Sequence[str] | str) -> list[str]:
    if isinstance(target_modules, str):
        target_modules = target_modules.split(",")
    names = [t.strip() for t in target_modules if t and t.strip()]
    if not names:
        raise UserError("no target modules given")
    return list(dict.fromkeys(names))


def _examples(model: nn.Module, limit: int = 8) -> str:
    lasts = list(dict.fromkeys(_last(n) for n in _linear_names(model)))
    if not lasts:
        return "none"
    more = f", ... ({len(lasts)} names)" if len(lasts) > limit else ""
    return ", ".join(lasts[:limit]) + more


def find_target_linears(model: nn.Module, target_modules: Iterable[str] | str) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules whose last name component is one of ``target_modules``.

    Keys are fully qualified module names, in model order. A target that matches no linear
    layer raises :class:`UserError` naming it and some linear names the model does have.
    """
    targets = target_names(target_modules if isinstance(target_modules, str) else list(target_modules))
    wanted = set(targets)
    found = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and _last(name) in wanted
    }
    matched = {_last(n) for n in found}
    missing = [t for t in targets if t not in matched]
    if missing:
        raise UserError(
            f"target module{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"match{'' if len(missing) > 1 else 'es'} no linear layer of the model "
            f"(its linear layers: {_examples(model)})"
        )
    return found
