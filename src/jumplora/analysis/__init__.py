"""Analyses of finished (or unfinished) run directories: no model, no training.

- `rundir`: read a run directory (`load_run`) into a `Run`;
- `layers`: which transformer block a matrix sits in, and the "middle layer" selection;
- `sparsity`: fraction of zeroed entries of ΔW_jump, per matrix, per task, by depth;
- `overlap`: Jaccard similarity of the binary supports of two tasks' updates;
- `transfer`: per-task backward-transfer profiles from the accuracy matrix;
- `stats`: all of the above for a whole run, in one pass over its stored updates;
- `report` / `plots`: the tables and figures of the paper (§4.5, §4.6, §5) from many runs;
- `command_report` / `command_plot`: the `jumplora report` and `jumplora plot` commands.

matplotlib is imported only by `plots`, and only when a figure is drawn.
"""

from jumplora.analysis.layers import LayerSelection, parse_layer, select_modules
from jumplora.analysis.overlap import jaccard, mean_overlap_with_earlier, overlap_matrix
from jumplora.analysis.rundir import Run, RunWarning, load_run, method_label
from jumplora.analysis.sparsity import matrix_sparsity, sparsity, sparsity_by_depth, sparsity_by_module
from jumplora.analysis.transfer import bwt_profile, final_task_bwt

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
    "method_label",
    "overlap_matrix",
    "parse_layer",
    "select_modules",
    "sparsity",
    "sparsity_by_depth",
    "sparsity_by_module",
]
