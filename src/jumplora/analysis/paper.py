"""The paper's reported numbers (arXiv 2604.16171), for side-by-side columns in reports.

Keyed by method label (`jumplora.method_names.MethodName.label`) and order or benchmark
("SC": Standard CL, orders 1-3; "LS": Long Sequence, orders 4-6). All are means over seeds 42-44.
EWC's numbers are the paper's, quoted from Biswas et al. (2026).
"""

from __future__ import annotations

PAPER = "arXiv 2604.16171"

# The paper's two benchmarks and their orders: Standard CL (SC) and Long Sequence (LS).
BENCHMARKS = {"SC": (1, 2, 3), "LS": (4, 5, 6)}


def benchmark_of(order) -> str | None:
    """"SC" for orders 1-3, "LS" for orders 4-6, None for other orders."""
    return next((bench for bench, orders in BENCHMARKS.items() if order in orders), None)

# Table 1: OA (%) per order, and the SC / LS means.
TABLE1_OA: dict[str, dict[int | str, float]] = {
    "EWC": {1: 46.30, 2: 45.30, 3: 52.10, "SC": 47.90, 4: 44.90, 5: 44.00, 6: 45.40, "LS": 44.80},
    "IncLoRA": {1: 59.25, 2: 58.69, 3: 69.86, "SC": 62.60, 4: 56.83, 5: 56.40, 6: 54.32, "LS": 55.89},
    "JumpLoRA + IncLoRA": {1: 70.76, 2: 69.26, 3: 74.78, "SC": 71.60, 4: 65.35, 5: 61.84, 6: 64.06, "LS": 63.75},
    "ELLA": {1: 78.09, 2: 78.37, 3: 78.23, "SC": 78.23, 4: 72.64, 5: 67.91, 6: 74.15, "LS": 71.57},
    "JumpLoRA + ELLA": {1: 78.84, 2: 79.05, 3: 78.67, "SC": 78.85, 4: 73.60, 5: 68.76, 6: 75.81, "LS": 72.72},
}

# Table 2: (BWT, FWT) per benchmark, means over its three orders.
TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "IncLoRA": {"SC": (-22.9, -17.1), "LS": (-22.1, -21.2)},
    "JumpLoRA + IncLoRA": {"SC": (-13.9, -9.6), "LS": (-15.5, -13.3)},
    "ELLA": {"SC": (-0.5, -1.5), "LS": (-4.8, -5.5)},
    "JumpLoRA + ELLA": {"SC": (-1.9, -0.8), "LS": (-4.5, -4.4)},
}

# Table 3: OA (%) per (method, threshold, update) and benchmark. JumpLoRA + IncLoRA has no ELLA
# penalty, hence no sparse/interpolated choice (update None).
TABLE3: dict[tuple[str, str, str | None], dict[str, float]] = {
    ("JumpLoRA + IncLoRA", "global", None): {"SC": 68.83, "LS": 63.75},
    ("JumpLoRA + IncLoRA", "local", None): {"SC": 71.60, "LS": 62.96},
    ("JumpLoRA + ELLA", "global", "sparse"): {"SC": 78.85, "LS": 71.90},
    ("JumpLoRA + ELLA", "global", "interp"): {"SC": 78.54, "LS": 72.15},
    ("JumpLoRA + ELLA", "local", "sparse"): {"SC": 78.48, "LS": 72.72},
    ("JumpLoRA + ELLA", "local", "interp"): {"SC": 78.46, "LS": 72.31},
}

# §5 (Figure 3): middle layer, Long Order 4: mean sparsity (fraction) and mean Jaccard overlap.
SECTION5: dict[tuple[str, int], dict[str, float]] = {
    ("JumpLoRA + IncLoRA", 4): {"sparsity": 0.876, "jaccard": 0.065},
    ("JumpLoRA + ELLA", 4): {"sparsity": 0.949, "jaccard": 0.012},
}


def table1(label: str, key: int | str) -> float | None:
    return TABLE1_OA.get(label, {}).get(key)


def table2(label: str, benchmark: str, which: str) -> float | None:
    pair = TABLE2.get(label, {}).get(benchmark)
    if pair is None:
        return None
    return pair[0] if which == "BWT" else pair[1]


def table3(label: str, threshold: str | None, update: str | None, benchmark: str) -> float | None:
    return TABLE3.get((label, threshold, update), {}).get(benchmark)


def section5(label: str, order, which: str) -> float | None:
    return SECTION5.get((label, order), {}).get(which)
