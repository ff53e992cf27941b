"""What a method name means, without importing a method: its strategy, its gating, its paper label.

A method name is a strategy (`inclora`, `ella`, `ewc`, `olora`, `lori`, `single`, `mtl`), optionally
behind `jumplora+` for JumpLoRA-gated adapters; `jumplora` alone is `jumplora+inclora`. The
configuration, the run directory and the analyses all read a run's identity from here, so none of
them needs the method registry (`jumplora.methods`, which imports torch) and none guesses the
method back from a display label.

The option predicates at the end (`gated`, `uses_schedule`, ...) say which methods an option of
`RunConfig` acts on (its `applies` metadata): runs that differ only in an option their method
ignores are the same configuration.
"""

from __future__ import annotations

from typing import NamedTuple

from jumplora.errors import ConfigError

GATE_PREFIX = "jumplora"

# The strategies `jumplora.methods` registers, in the order reports list them (the paper's: EWC,
# IncLoRA, ELLA; then the other peers, then the references).
STRATEGIES = ("ewc", "inclora", "ella", "olora", "lori", "single", "mtl")

# The paper's names; `single` and `mtl` are this package's references and keep their names.
PAPER_LABELS = {"ewc": "EWC", "inclora": "IncLoRA", "ella": "ELLA", "olora": "O-LoRA", "lori": "LoRI",
                "single": "single", "mtl": "mtl"}
GATED_LABEL = "JumpLoRA + {}"

# The authors' LoRA dropout: their PEFT baselines use 0.1, their JumpLoRA layer none.
PLAIN_LORA_DROPOUT = 0.1
GATED_LORA_DROPOUT = 0.0


class MethodName(NamedTuple):
    """A parsed method name: the CL strategy and whether its adapters are JumpLoRA-gated
    (a pair, so that `strategy, gated = parse_method(name)` reads naturally)."""

    strategy: str
    gated: bool

    @property
    def name(self) -> str:
        """The canonical name; `jumplora+inclora` is written `jumplora`, as runs store it."""
        if not self.gated:
            return self.strategy
        return GATE_PREFIX if self.strategy == "inclora" else f"{GATE_PREFIX}+{self.strategy}"

    @property
    def label(self) -> str:
        """The paper's label: "ELLA", "JumpLoRA + ELLA"."""
        base = PAPER_LABELS[self.strategy]
        return GATED_LABEL.format(base) if self.gated else base

    @property
    def base(self) -> "MethodName":
        """The method a JumpLoRA variant is compared with: the same strategy, ungated."""
        return MethodName(self.strategy, False)

    @property
    def sort_key(self) -> tuple[int, bool]:
        """Reports list strategies in `STRATEGIES` order, each JumpLoRA variant after its base."""
        return STRATEGIES.index(self.strategy), self.gated

    @property
    def default_lora_dropout(self) -> float:
        """The dropout a run uses when `lora_dropout` is unset (the authors' per method)."""
        return GATED_LORA_DROPOUT if self.gated else PLAIN_LORA_DROPOUT


def parse_method(name: str) -> MethodName:
    """`"jumplora+ella"` -> (ella, gated); `"ella"` -> (ella, plain); `"jumplora"` -> (inclora, gated)."""
    if not isinstance(name, str):
        raise ConfigError(f"method must be a name, got {name!r}")
    key = name.strip().lower()
    gated = key == GATE_PREFIX or key.startswith(GATE_PREFIX + "+")
    strategy = key.split("+", 1)[1] if "+" in key else ("inclora" if gated else key)
    if strategy not in STRATEGIES or (not gated and "+" in key):
        known = sorted(STRATEGIES) + [f"{GATE_PREFIX}+{m}" for m in sorted(STRATEGIES)]
        raise ConfigError(f"unknown method {name!r}; known: {GATE_PREFIX}, {', '.join(known)}")
    return MethodName(strategy, gated)


def canonical_method(name: str) -> str:
    """The name as stored and compared: checked, stripped and lower-case ("JumpLoRA" -> "jumplora").

    `jumplora+inclora` stays as given: runs store the name they were started with."""
    parse_method(name)
    return name.strip().lower()


# -- which methods an option acts on (RunConfig's `applies` metadata) ------------------------------------
def every_method(method: MethodName) -> bool:
    return True


def gated(method: MethodName) -> bool:
    """JumpLoRA's own options: the threshold, the gate, the dense → sparse interpolation."""
    return method.gated


def uses_schedule(method: MethodName) -> bool:
    """S_start and its rounding: JumpLoRA's schedule, and LoRI's calibration phase, which ends at S_start."""
    return method.gated or method.strategy == "lori"


def ella(method: MethodName) -> bool:
    return method.strategy == "ella"


def gated_ella(method: MethodName) -> bool:
    """ELLA's penalty on a JumpLoRA update: which update it reads, whether it reaches τ."""
    return method.gated and method.strategy == "ella"


def ewc(method: MethodName) -> bool:
    return method.strategy == "ewc"


def olora(method: MethodName) -> bool:
    return method.strategy == "olora"


def lori(method: MethodName) -> bool:
    return method.strategy == "lori"


__all__ = ["GATE_PREFIX", "MethodName", "PAPER_LABELS", "STRATEGIES", "canonical_method", "parse_method"]
