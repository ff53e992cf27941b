"""A confidence interval for a paired OA difference that accounts for test-set sampling.

Two runs of one seed (a JumpLoRA variant and its base method) are tested on the same examples, so
their difference in OA is paired example by example. The interval resamples the test examples of
each task with replacement (a paired bootstrap: the same resampled examples for both runs), within
each seed, and combines the seeds by averaging their differences replicate by replicate:

    Δ^(r) = 1/S · Σ_s  1/T · Σ_j  mean_{i ∈ sample_r(s, j)} (c_J[s, j, i] − c_B[s, j, i])

with c = 1 where a test example was answered correctly after the last task. The 2.5 and 97.5
percentiles of Δ^(r) bound the 95 % interval. It says how far the same training runs could land on
another draw of test examples of the same size; the seed-to-seed spread of training is the other
part of the uncertainty (the paired table's ± shows it).
"""

from __future__ import annotations

import numpy as np

from jumplora.rundir import Run


def final_correct(run: Run) -> dict[str, np.ndarray] | None:
    """Per task, the 0/1 correctness of each test example after the last stage, from its task
    record's "correct" strings; None for an unfinished run or one written before these were recorded."""
    record = run.stages[-1].record if run.finished and run.stages else None
    correct = record.correct if record is not None else None
    if not correct or any(not correct.get(task) for task in run.tasks):
        return None
    return {task: np.frombuffer(correct[task].encode(), dtype=np.uint8) - ord("0") for task in run.tasks}


def paired_oa_bootstrap(pairs: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
                        replicates: int = 10_000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float, float]:
    """(Δ OA, lower, upper) in percentage points for (jumplora, base) correctness pairs, one per seed."""
    if not pairs:
        raise ValueError("paired bootstrap: no pairs")
    rng = np.random.default_rng(seed)
    total = np.zeros(replicates)
    observed = 0.0
    for jump, base in pairs:
        if set(jump) != set(base):
            raise ValueError(f"paired bootstrap: the runs test different tasks ({sorted(jump)} vs {sorted(base)})")
        per_seed = np.zeros(replicates)
        for task in jump:
            if len(jump[task]) != len(base[task]):
                raise ValueError(f"paired bootstrap: task {task} has {len(jump[task])} and {len(base[task])} "
                                 "test examples; the runs were not tested on the same examples")
            difference = jump[task].astype(np.int8) - base[task].astype(np.int8)
            n = len(difference)
            samples = rng.integers(0, n, size=(replicates, n))
            per_seed += difference[samples].mean(axis=1)
            observed += difference.mean() / len(jump) / len(pairs)
        total += per_seed / len(jump)
    total /= len(pairs)
    alpha = (1 - level) / 2
    lower, upper = np.quantile(total, [alpha, 1 - alpha])
    return 100 * observed, 100 * float(lower), 100 * float(upper)
