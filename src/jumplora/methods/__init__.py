"""Continual-learning methods, each a small `Method` subclass registered by name.

Method names: `inclora`, `ella`, `ewc`, `olora`, `lori`, `single`, `mtl`, and any of them behind
`jumplora+` (JumpLoRA-gated adapters under that strategy); `jumplora` alone is `jumplora+inclora`.
"""

from jumplora.errors import ConfigError
from jumplora.methods import ella, ewc, inclora, lori, multitask, olora, single  # noqa: F401  (register)
from jumplora.methods.base import METHODS, Method, TaskContext, register

GATE_PREFIX = "jumplora"


def parse_method(name: str) -> tuple[str, bool]:
    """`"jumplora+ella"` -> ("ella", True); `"ella"` -> ("ella", False); `"jumplora"` -> ("inclora", True)."""
    key = name.strip().lower()
    gated = key == GATE_PREFIX or key.startswith(GATE_PREFIX + "+")
    strategy = key.split("+", 1)[1] if "+" in key else ("inclora" if gated else key)
    if strategy not in METHODS or (not gated and "+" in key):
        known = sorted(METHODS) + [f"{GATE_PREFIX}+{m}" for m in sorted(METHODS)]
        raise ConfigError(f"unknown method {name!r}; known: jumplora, {', '.join(known)}")
    return strategy, gated


def canonical_method(name: str) -> str:
    """The name as stored and compared: checked, stripped and lower-case ("JumpLoRA" -> "jumplora")."""
    if not isinstance(name, str):
        raise ConfigError(f"method must be a name, got {name!r}")
    parse_method(name)
    return name.strip().lower()


def build_method(config) -> Method:
    strategy, _ = parse_method(config.method)
    return METHODS[strategy](config)


__all__ = ["METHODS", "Method", "TaskContext", "build_method", "canonical_method", "parse_method", "register"]
