"""ELLA's λ per task: Table 7 of the paper and the other forms of the `ella_lambda` option.

Torch-free, so that `RunConfig` checks a λ when it is built, before any model loads.
"""

from __future__ import annotations

from jumplora.errors import ConfigError

# Table 7 of the paper: λ per task position, by order (identical for ELLA and JumpLoRA+ELLA).
_SC = [0.0] + [3e4] * 3
PAPER_LAMBDAS: dict[int, list[float]] = {
    1: _SC,
    2: _SC,
    3: _SC,
    4: [0.0] + [5e5] * 13 + [5e7],
    5: [0.0] + [5e6] * 11 + [5e7] * 3,
    6: [0.0] + [5e5] * 14,
}


def lambdas_for(spec, order: str, n_tasks: int) -> list[float]:
    """Resolve the per-task λ list from the configuration."""
    if isinstance(spec, str) and spec.strip().lower() == "paper":
        try:
            values = PAPER_LAMBDAS[int(order)]
        except (KeyError, ValueError):
            raise ConfigError(
                f"ella_lambda 'paper' has values for orders 1-6 only, not {order!r}: give a number or a list"
            ) from None
    elif isinstance(spec, (int, float)):
        values = [0.0] + [float(spec)] * (n_tasks - 1)
    elif isinstance(spec, str) and "," not in spec:
        try:
            return lambdas_for(float(spec), order, n_tasks)
        except ValueError:
            raise ConfigError(f"ella_lambda must be 'paper', a number or a list, got {spec!r}") from None
    else:
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        try:
            values = [float(v) for v in items]
        except ValueError:
            raise ConfigError(f"ella_lambda list has a non-number: {spec!r}") from None
    if len(values) != n_tasks:
        raise ConfigError(f"ella_lambda gives {len(values)} values for {n_tasks} tasks")
    return values
