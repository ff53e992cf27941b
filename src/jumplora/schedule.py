"""The dense → sparse schedule of JumpLoRA (Algorithm 1 lines 7-10, eq. 4).

S_start and S_final are optimiser steps (0-based: step s is the s-th optimiser update of the
task). Each is given either as a fraction of the task's steps (a float, e.g. 0.2) or as an
absolute step (an int, e.g. 50). A fraction becomes a step by `rounding`: "floor" (the authors'
`int(fraction · steps)`) or "round" (jumplora before it matched them).

Short tasks: ΔW = 0 at step 0 (B = 0), so no threshold can be read from it; S_start is at least
1. When a task has so few steps that S_start is never reached (one step, say), the threshold is
initialised after the last step by the same counting rule, so that the merged update is sparse with
the same budget as every other task's; S_final then plays no role. When S_final ≤ S_start, γ jumps
from 0 to 1 at S_start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jumplora import defaults

ROUNDINGS = ("floor", "round")


def resolve_step(value: float | int, total_steps: int, name: str, rounding: str = "floor") -> int:
    """An absolute step from a fraction of the task (float) or a step number (int)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown step rounding {rounding!r}; expected one of {ROUNDINGS}")
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a fraction (float) or a step (int), got {value!r}")
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} as a fraction of the task's steps must lie in [0, 1], got {value}")
        return math.floor(value * total_steps) if rounding == "floor" else round(value * total_steps)
    if value < 0:
        raise ValueError(f"{name} must be a non-negative step, got {value}")
    return int(value)


@dataclass(frozen=True)
class JumpSchedule:
    """γ(s) = clip((s − S_start)/(S_final − S_start), 0, 1); τ is initialised at s = S_start."""

    total_steps: int
    start: int
    final: int

    @classmethod
    def for_task(cls, total_steps: int, s_start: float | int = defaults.S_START,
                 s_final: float | int = defaults.S_FINAL,
                 rounding: str = "floor") -> "JumpSchedule":
        start = max(1, resolve_step(s_start, total_steps, "S_start", rounding))
        final = max(start, resolve_step(s_final, total_steps, "S_final", rounding))
        return cls(total_steps=total_steps, start=start, final=final)

    def gamma(self, step: int) -> float:
        if step < self.start:
            return 0.0
        if self.final == self.start:
            return 1.0
        return min(1.0, max(0.0, (step - self.start) / (self.final - self.start)))

    def initializes_threshold(self, step: int) -> bool:
        return step == self.start

    @property
    def reaches_start(self) -> bool:
        """False when the task ends before S_start: τ is then set after the last step."""
        return self.start < self.total_steps
