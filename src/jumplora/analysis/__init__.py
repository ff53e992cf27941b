"""Analyses of finished (or unfinished) run directories: no model, no training.

Every analysis reads runs through `jumplora.rundir.load_run` (re-exported here); none names a file
of a run directory.

- `layers`: which transformer block a matrix sits in, and the "middle layer" selection;
- `sparsity`: fraction of zeroed entries of ΔW_jump, per matrix, per task, by depth;
- `overlap`: Jaccard similarity of the binary supports of two tasks' updates;
- `transfer`: per-task backward-transfer profiles from the accuracy matrix;
- `stats`: all of the above for a whole run, in one pass over its stored updates;
- `groups`: runs grouped by method (and variant) and order;
- `report`, `bootstrap`: the tables of the paper (§4.5, §4.6, §5) from many runs, with a paired
  test-set bootstrap;
- `figures` / `plots`: which figures (Figures 2-4, heatmaps) and how they are drawn;
- `ella_lambda`: ELLA's λ for a new model; `compact`: which layer's supports a run keeps.

The commands (`jumplora report`, `plot`, ...) are in `jumplora.commands`.

matplotlib is imported only by `plots`, and only when a figure is drawn.
"""

from jumplora.analysis.layers import LayerSelection, parse_layer, select_modules
from jumplora.analysis.overlap import jaccard, mean_overlap_with_earlier, overlap_matrix
from jumplora.analysis.sparsity import matrix_sparsity, sparsity, sparsity_by_depth, sparsity_by_module
from jumplora.analysis.transfer import bwt_profile, final_task_bwt
from jumplora.rundir import Run, RunWarning, load_run

__all__ = [
    "LayerSelection",
    "Run",
    "RunWarning",
    "bwt_profile",
    "final_task_bwt",
    "jaccard",
    "load_run",
    "matrix_sparsity",
    "mean_overlap_with_earlier",
    "overlap_matrix",
    "parse_layer",
    "select_modules",
    "sparsity",
    "sparsity_by_depth",
    "sparsity_by_module",
]
