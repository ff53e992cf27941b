"""Grouping runs by method and order (seeds are what a group averages over).

A group is a method label and an order. When runs of one method differ in a setting that changes
the method (the threshold mode, ELLA's penalty target or λ, the model, rank, alpha), averaging them
would mix configurations, so their label gets the differing settings appended:
"JumpLoRA + IncLoRA [threshold=local]". Settings that are the same for every run of a method are
not shown.

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

from jumplora.analysis.rundir import Run, RunWarning, config_get

# Settings that change what a run computes (config.yaml keys, see `jumplora.config.RunConfig`).
VARIANT_KEYS = (
    "model", "threshold", "ella_penalty", "ella_lambda", "ewc_lambda", "olora_lambda", "olora_l2",
    "lori_sparsity", "rank", "alpha", "target_modules", "s_start", "s_final", "bandwidth", "learning_rate",
    "warmup_steps", "weight_decay", "batch_size", "epochs", "max_steps_per_task", "train_per_class",
    "val_per_class", "test_per_class", "max_input_tokens", "prompt_header", "precision", "eval_mode",
    # added later; runs that predate them read as their legacy values (jumplora.config.LEGACY_VALUES)
    "split", "unlabelled_test", "max_target_tokens", "prompt_style", "batching", "lora_dropout",
    "threshold_grad", "threshold_init", "schedule_rounding", "ella_scale", "ella_threshold_grad",
    "max_grad_norm", "loss_mean", "max_new_tokens", "answer_match",
)
ABLATION_KEYS = ("threshold", "ella_penalty")
METHOD_ORDER = ("EWC", "ewc", "IncLoRA", "JumpLoRA + IncLoRA", "ELLA", "JumpLoRA + ELLA")
_JUMP_ONLY = ("threshold", "s_start", "s_final", "bandwidth", "threshold_grad", "threshold_init", "schedule_rounding")
_JUMP_ELLA_ONLY = ("ella_penalty", "ella_threshold_grad")


def _relevant(label: str, key: str) -> bool:
    """Whether a setting matters to a method (defaults of other methods' options are ignored)."""
    name = label.lower()
    if key in _JUMP_ONLY:
        return name.startswith("jumplora")
    if key in _JUMP_ELLA_ONLY:
        return label == "JumpLoRA + ELLA"
    for prefix in ("ella", "ewc", "olora", "lori"):
        if key.startswith(prefix + "_"):
            return prefix in name.replace("jumplora", "")
    return True


def variant_value(run: Run, key: str) -> str | None:
    if key == "threshold":
        return run.threshold
    if key == "ella_penalty":
        return run.update_mode
    value = config_get(run.config, key)
    if key == "lora_dropout" and value is None:
        # unset: the authors' value per method (jumplora.methods.base.Method.lora_dropout)
        value = 0.0 if str(run.method).lower().startswith("jumplora") else 0.1
    if key == "lora_dropout" and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)  # 0 and 0.0 are one setting
    if value is None:
        return None
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return text if len(text) <= 32 else text[:29] + "..."


def ablation_update(run: Run) -> str | None:
    """Sparse/interp for JumpLoRA + ELLA (§4.6); None where ELLA's penalty does not apply."""
    return run.update_mode if run.label == "JumpLoRA + ELLA" else None


def varying_keys(runs: list[Run]) -> dict[str, list[str]]:
    """Per method label, the variant settings whose values differ among its runs."""
    by_label: dict[str, list[Run]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    return {
        label: [
            key for key in VARIANT_KEYS
            if _relevant(label, key) and len({variant_value(r, key) for r in members}) > 1
        ]
        for label, members in by_label.items()
    }


def row_label(run: Run, keys: list[str], exclude: tuple[str, ...] = ()) -> str:
    shown = [k for k in keys if k not in exclude]
    if not shown:
        return run.label
    return f"{run.label} [" + ", ".join(f"{k}={variant_value(run, k)}" for k in shown) + "]"


def method_sort_key(label: str) -> tuple:
    base = label.split(" [", 1)[0]
    rank = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
    return (rank, base.lower(), label)


def order_sort_key(order) -> tuple:
    if isinstance(order, int):
        return (0, order, "")
    return (1, 0, "" if order is None else str(order))


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
    """The runs (seeds) of one method variant on one order."""

    label: str
    method: str
    order: int | str | None
    runs: list[Run] = field(default_factory=list)
    threshold: str | None = None
    update: str | None = None

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.runs]


def group_runs(runs: list[Run]) -> list[Group]:
    """Groups by (row label, order), sorted by the paper's method order, then label, then order."""
    keys = varying_keys(runs)
    groups: dict[tuple, Group] = {}
    for run in runs:
        label = row_label(run, keys.get(run.label, []))
        key = (label, run.order)
        if key not in groups:
            groups[key] = Group(label, run.label, run.order, threshold=run.threshold, update=ablation_update(run))
        groups[key].runs.append(run)
    for group in groups.values():
        repeated = [seed for seed, count in Counter(group.seeds).items() if count > 1 and seed is not None]
        if repeated:
            warnings.warn(
                f"{group.label}, order {group.order}: seed {repeated[0]} appears in more than one run; "
                "all are averaged", RunWarning, stacklevel=2,
            )
    return sorted(groups.values(), key=lambda g: (method_sort_key(g.label), order_sort_key(g.order)))
