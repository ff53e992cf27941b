"""ELLA's λ per task: Tables 7 and 8 of the paper, the search grid, and the other forms of `ella_lambda`.

    paper          Table 7 (the λ of Table 1's runs), by order: identical for ELLA and JumpLoRA+ELLA
    paper-table8   Table 8 (the λ of Table 3's JumpLoRA+ELLA ablation), by threshold, update and order
    search         chosen at each task by validation accuracy over `ella_lambda_grid` (Appendix A.2;
                   `jumplora.methods.lambda_search`)
    NUMBER, LIST   one λ for every task, or one per task

Torch-free, so that `RunConfig` checks a λ when it is built, before any model loads.
"""

from __future__ import annotations

import math

from jumplora.errors import ConfigError

PAPER, TABLE8, SEARCH = "paper", "paper-table8", "search"
NAMED = (PAPER, TABLE8, SEARCH)

# Appendix A.2: "The search range is set to [1, 10, 10^2, 10^3, 10^4, 10^5]".
PAPER_GRID = "1,10,100,1000,10000,100000"

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


def _powers(*exponents: int) -> list[float]:
    return [0.0] + [10.0 ** e for e in exponents]


# Table 8 of the paper (arXiv:2604.16171, Appendix A.2): the λ of the JumpLoRA+ELLA ablation of Table 3,
# by (threshold, ELLA update, order). Only the global threshold on the Long Sequence orders 4-6 used
# λ chosen by the grid search ("grid" rows, transcribed below); every other row is "default", Table 7's.
_TABLE8_GRID: dict[tuple[str, str, int], list[float]] = {
    ("global", "sparse", 4): _powers(3, 5, 5, 5, 2, 4, 5, 4, 5, 5, 5, 4, 3, 5),
    ("global", "sparse", 5): _powers(5, 2, 4, 5, 5, 5, 5, 5, 5, 4, 4, 5, 4, 5),
    ("global", "sparse", 6): _powers(1, 0, 5, 0, 5, 5, 5, 2, 4, 5, 5, 5, 2, 5),
    ("global", "interp", 4): _powers(4, 5, 5, 1, 5, 5, 5, 3, 4, 5, 4, 4, 5, 4),
    ("global", "interp", 5): _powers(4, 2, 0, 0, 5, 4, 5, 4, 5, 5, 5, 4, 5, 5),
    ("global", "interp", 6): _powers(4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 4, 3, 5),
}
TABLE8_LAMBDAS: dict[tuple[str, str, int], list[float]] = {
    (threshold, penalty, order): _TABLE8_GRID.get((threshold, penalty, order), PAPER_LAMBDAS[order])
    for threshold in ("global", "local") for penalty in ("sparse", "interp") for order in PAPER_LAMBDAS
}


def is_search(spec) -> bool:
    return isinstance(spec, str) and spec.strip().lower() == SEARCH


def parse_grid(spec) -> list[float]:
    """`ella_lambda_grid`: the λ values `--ella-lambda search` tries, in order (distinct, finite, >= 0)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        raise ConfigError(f"ella_lambda_grid must be comma-separated numbers, got {spec!r}") from None
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ConfigError(f"ella_lambda_grid must be one or more numbers >= 0, got {spec!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"ella_lambda_grid names a value twice: {spec!r}")
    return values


def lambdas_for(spec, order: str, n_tasks: int, threshold_mode: str = "global", penalty: str = "sparse",
                gated: bool = True) -> list[float]:
    """Resolve the per-task λ list from the configuration (not for `search`, whose λ are chosen as it runs).

    `threshold_mode`, `penalty` and `gated` pick Table 8's row; the other forms ignore them."""
    name = spec.strip().lower() if isinstance(spec, str) else None
    if name == PAPER:
        values = _by_order(PAPER_LAMBDAS, order, PAPER)
    elif name == TABLE8:
        if not gated:
            raise ConfigError("ella_lambda 'paper-table8' is Table 8's, for JumpLoRA+ELLA only; plain ELLA "
                              "has Table 7's ('paper')")
        values = _by_order({o: TABLE8_LAMBDAS[(threshold_mode, penalty, o)] for o in PAPER_LAMBDAS}, order, TABLE8)
    elif name == SEARCH:
        raise ConfigError("ella_lambda 'search' chooses λ while the run trains: there is no list to resolve")
    elif isinstance(spec, (int, float)):
        values = [0.0] + [float(spec)] * (n_tasks - 1)
    elif isinstance(spec, str) and "," not in spec:
        try:
            return lambdas_for(float(spec), order, n_tasks)
        except ValueError:
            raise ConfigError(f"ella_lambda must be {', '.join(map(repr, NAMED))}, a number or a list, "
                              f"got {spec!r}") from None
    else:
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        try:
            values = [float(v) for v in items]
        except ValueError:
            raise ConfigError(f"ella_lambda list has a non-number: {spec!r}") from None
    if len(values) != n_tasks:
        raise ConfigError(f"ella_lambda gives {len(values)} values for {n_tasks} tasks")
    return values


def _by_order(table: dict[int, list[float]], order: str, name: str) -> list[float]:
    try:
        return list(table[int(order)])
    except (KeyError, ValueError):
        raise ConfigError(
            f"ella_lambda {name!r} has values for orders 1-6 only, not {order!r}: give a number, a list or 'search'"
        ) from None
