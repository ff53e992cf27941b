"""Sparsity and support overlap of a whole run, from its stored updates, in one pass.

Stages are read one at a time (an update of T5-large is large); only the bit-packed supports of the
chosen layer's matrices are kept for the overlap with later stages. A stage is one task, except a
multi-task run's single stage. Results are cached on the `Run` per layer, so a report and its plots
read each update file once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jumplora.analysis.layers import LayerSelection, parse_layer, select_modules
from jumplora.analysis.overlap import (
    OverlapTracker, PackedSupport, chance_jaccard, mean_over_earlier, mean_over_matrices,
)
from jumplora.analysis.sparsity import counts_by_module, depth_profile, pooled_sparsity


def nanmean(values) -> float:
    array = np.asarray(list(values), dtype=float)
    array = array[~np.isnan(array)]
    return float(array.mean()) if array.size else float("nan")


@dataclass
class RunStats:
    """Per stage (in the run's order; NaN where a stage has no update file):

    - `sparsity_all`: pooled sparsity over every adapted matrix;
    - `sparsity_layer`: pooled sparsity over the matrices of `layer`;
    - `jaccard`: mean Jaccard with every earlier task over `layer`'s matrices (NaN for the first task);
    - `jaccard_chance`: the same mean for independent random supports of the same densities
      (`overlap.chance_jaccard`): what `jaccard` is compared with;
    - `jaccard_pairs[t, k]` (k < t): Jaccard of tasks t and k, averaged over `layer`'s matrices;
    - `depth[t]`: stack -> block index -> pooled sparsity (None without an update);
    - `by_module[t]`: matrix -> sparsity, every adapted matrix (None without an update);
    - `jaccard_by_module[t]`: matrix of `layer` -> mean Jaccard with the earlier tasks;
    - `kinds`: the update kinds seen ("sparse" for JumpLoRA, "lowrank" for plain LoRA).
    """

    layer: LayerSelection | None
    sparsity_all: np.ndarray
    sparsity_layer: np.ndarray
    jaccard: np.ndarray
    jaccard_pairs: np.ndarray
    depth: list
    by_module: list = field(default_factory=list)
    jaccard_by_module: list = field(default_factory=list)
    kinds: set = field(default_factory=set)
    jaccard_chance: np.ndarray | None = None

    @property
    def mean_sparsity_all(self) -> float:
        return nanmean(self.sparsity_all)

    @property
    def mean_sparsity_layer(self) -> float:
        return nanmean(self.sparsity_layer)

    @property
    def mean_jaccard(self) -> float:
        """Mean over tasks 2..T of their mean overlap with earlier tasks."""
        return nanmean(self.jaccard)

    @property
    def mean_jaccard_chance(self) -> float:
        return nanmean(self.jaccard_chance) if self.jaccard_chance is not None else float("nan")

    @property
    def is_sparse(self) -> bool:
        return self.kinds == {"sparse"}

    def mean_depth(self) -> dict[str, dict[int, float]]:
        """Per stack and block index, the sparsity averaged over the tasks that have an update."""
        collected: dict[str, dict[int, list[float]]] = {}
        for profile in self.depth:
            for stack, blocks in (profile or {}).items():
                for index, value in blocks.items():
                    collected.setdefault(stack, {}).setdefault(index, []).append(value)
        return {
            stack: {index: nanmean(values) for index, values in sorted(blocks.items())}
            for stack, blocks in sorted(collected.items())
        }


def run_stats(run, layer: str | int = "middle") -> RunStats:
    """`RunStats` of a `Run` for `layer` ("middle", "all", a block index or a block name)."""
    layer = parse_layer(layer)
    key = ("stats", layer)
    if key in run._cache:
        return run._cache[key]
    n = len(run.stages)
    sparsity_all = np.full(n, np.nan)
    sparsity_layer = np.full(n, np.nan)
    jaccard = np.full(n, np.nan)
    jaccard_chance = np.full(n, np.nan)
    pairs = np.full((n, n), np.nan)
    depth: list = [None] * n
    by_module: list = [None] * n
    jaccard_by_module: list = [None] * n
    kinds: set = set()
    selection = None
    tracker = OverlapTracker()
    for index in range(n):
        update = run.update(index)
        if update is None:
            tracker.add(None)
            continue
        if selection is None:
            selection = select_modules(update.modules, layer)
        kinds.update(module.kind for module in update.modules.values())
        counts = counts_by_module(update)
        sparsity_all[index] = pooled_sparsity(counts.values())
        sparsity_layer[index] = pooled_sparsity(counts[m] for m in selection.modules if m in counts)
        depth[index] = depth_profile(counts)
        by_module[index] = {m: pooled_sparsity([c]) for m, c in counts.items()}
        supports = {m: PackedSupport.of(update.modules[m]) for m in selection.modules if m in update.modules}
        chance_rows = [{m: chance_jaccard(supports[m], past[m]) for m in supports if m in past}
                       for past in tracker.history if past is not None]
        jaccard_chance[index] = mean_over_earlier(chance_rows)
        rows = tracker.add(supports)
        for k, row in enumerate(rows):
            pairs[index, k] = mean_over_matrices(row)
        jaccard[index] = mean_over_earlier(rows)
        jaccard_by_module[index] = {
            m: nanmean(row[m] for row in rows if m in row) for m in supports if any(m in row for row in rows)
        }
        del update
    stats = RunStats(selection, sparsity_all, sparsity_layer, jaccard, pairs, depth, by_module, jaccard_by_module,
                     kinds, jaccard_chance)
    run._cache[key] = stats
    return stats
