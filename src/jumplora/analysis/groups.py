"""Grouping runs by method and order (seeds are what a group averages over).

A group is a method and an order. When runs of one method differ in a setting that changes what
it computes (`jumplora.config.VARIANT_KEYS`: every result-affecting option but the method, the
order and the seed), averaging them would mix configurations, so their label gets the differing
settings appended: "JumpLoRA + IncLoRA [threshold_mode=local]". Settings that are the same for every
run of a method are not shown, nor options the method ignores (`jumplora.config.applies`).

Settings are read from `Run.config`, config.yaml completed with the legacy values of options the
run predates (`jumplora.config.with_legacy_values`): runs written before an option existed count as
run with its legacy value, so they are never averaged with runs of today's defaults, and group
among themselves as they did before the option was added.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from jumplora.config import VARIANT_KEYS, applies
from jumplora.method_names import MethodName
from jumplora.rundir import Run, RunWarning

ABLATION_KEYS = ("threshold_mode", "ella_penalty")


def variant_value(run: Run, key: str) -> str | None:
    value = run.config.get(key)
    if key == "lora_dropout":
        # unset: the authors' value per method; 0 and 0.0 are one setting
        value = float(run.method_name.default_lora_dropout if value is None else value)
    if value is None:
        return None
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return text if len(text) <= 32 else text[:29] + "..."


def ablation_update(run: Run) -> str | None:
    """Sparse/interp for JumpLoRA + ELLA (§4.6); None where ELLA's penalty does not apply."""
    return run.update_mode if applies("ella_penalty", run.method_name) else None


def varying_keys(runs: list[Run]) -> dict[MethodName, list[str]]:
    """Per method, the variant settings whose values differ among its runs."""
    by_method: dict[MethodName, list[Run]] = {}
    for run in runs:
        by_method.setdefault(run.method_name, []).append(run)
    return {
        method: [
            key for key in VARIANT_KEYS
            if applies(key, method) and len({variant_value(r, key) for r in members}) > 1
        ]
        for method, members in by_method.items()
    }


def row_label(run: Run, keys: list[str], exclude: tuple[str, ...] = ()) -> str:
    shown = [k for k in keys if k not in exclude]
    if not shown:
        return run.label
    return f"{run.label} [" + ", ".join(f"{k}={variant_value(run, k)}" for k in shown) + "]"


def method_sort_key(method: MethodName, label: str) -> tuple:
    """The paper's method order (`MethodName.sort_key`), then the label (variants of one method)."""
    return (*method.sort_key, label)


def order_sort_key(order) -> tuple:
    if isinstance(order, int):
        return (0, order, "")
    return (1, 0, "" if order is None else str(order))


def order_label(order: int | str | None) -> str:
    if order is None:
        return "unknown order"
    if isinstance(order, int):
        return f"Order {order}"
    return f"order {order}"


@dataclass
class Stat:
    """Mean and sample standard deviation (ddof = 1; NaN for n < 2) of the finite values."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values) -> "Stat":
        array = np.asarray([v for v in values if v is not None], dtype=float)
        array = array[np.isfinite(array)]
        if not array.size:
            return cls(math.nan, math.nan, 0)
        std = float(array.std(ddof=1)) if array.size >= 2 else math.nan
        return cls(float(array.mean()), std, int(array.size))


@dataclass
class Group:
    """The runs (seeds) of one method variant on one order. `label` is the row's ("JumpLoRA + ELLA
    [ella_lambda=100]"), `method` the method's identity, `method.label` its paper label."""

    label: str
    method: MethodName
    order: int | str | None
    runs: list[Run] = field(default_factory=list)
    threshold_mode: str | None = None
    update: str | None = None

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.runs]

    @property
    def sort_key(self) -> tuple:
        return (*method_sort_key(self.method, self.label), *order_sort_key(self.order))


def group_runs(runs: list[Run]) -> list[Group]:
    """Groups by (row label, order), sorted by the paper's method order, then label, then order."""
    keys = varying_keys(runs)
    groups: dict[tuple, Group] = {}
    for run in runs:
        label = row_label(run, keys.get(run.method_name, []))
        key = (label, run.order)
        if key not in groups:
            groups[key] = Group(label, run.method_name, run.order, threshold_mode=run.threshold_mode,
                                update=ablation_update(run))
        groups[key].runs.append(run)
    for group in groups.values():
        repeated = [seed for seed, count in Counter(group.seeds).items() if count > 1 and seed is not None]
        if repeated:
            warnings.warn(
                f"{group.label}, order {group.order}: seed {repeated[0]} appears in more than one run; "
                "all are averaged", RunWarning, stacklevel=2,
            )
    return sorted(groups.values(), key=lambda g: g.sort_key)
