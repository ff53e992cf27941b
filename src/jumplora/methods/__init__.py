"""Continual-learning methods, each a small `Method` subclass registered by name.

Method names: `inclora`, `ella`, `ewc`, `olora`, `lori`, `single`, `mtl`, and any of them behind
`jumplora+` (JumpLoRA-gated adapters under that strategy); `jumplora` alone is `jumplora+inclora`.
What a name means is `jumplora.method_names`' (torch-free); this package holds what the methods do.
"""

from jumplora.method_names import STRATEGIES, canonical_method, parse_method
from jumplora.methods import ella, ewc, inclora, lori, multitask, olora, single  # noqa: F401  (register)
from jumplora.methods.base import METHODS, Method, StageRunner, TaskContext, TrainedStage, register

# method_names lists the strategies without importing this package: the two must agree
assert set(METHODS) == set(STRATEGIES), f"registered {sorted(METHODS)}, method_names knows {sorted(STRATEGIES)}"


def build_method(config) -> Method:
    return METHODS[parse_method(config.method).strategy](config)


__all__ = ["METHODS", "Method", "StageRunner", "TaskContext", "TrainedStage", "build_method", "canonical_method", "parse_method", "register"]
