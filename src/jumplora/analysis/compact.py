"""`jumplora compact`'s choice: which layer's supports a run keeps once its large update files go.

The compact form itself (counts for every matrix, the packed supports of one layer) and its file are
`jumplora.rundir.supports`'; here the layer is picked from the update's matrices, the same way the
report and the plots pick it (`jumplora.analysis.layers`), so they find its supports later.
"""

from __future__ import annotations

from pathlib import Path

from jumplora.analysis.layers import parse_layer, select_modules
from jumplora.errors import UserError
from jumplora.rundir import Run, compact, save_supports
from jumplora.updates import TaskUpdate


def write_supports(run: Run, layer: str | int = "middle") -> list[Path]:
    """Write the compact supports of every stage of `run` that has a full (sparse) update."""
    layer = parse_layer(layer)
    written = []
    for stage in run.stages:
        update = run.update(stage.index)
        if not isinstance(update, TaskUpdate):
            continue  # no full update to compact (a compact one is already all there is)
        selection = select_modules(update.modules, layer)
        try:
            compacted = compact(update, selection.modules, selection.description)
        except UserError as error:
            raise UserError(f"{stage.update_path}: {error}") from None
        written.append(save_supports(run.path, stage.index, stage.name, compacted))
    if not written:
        raise UserError(f"{run.path}: no update files to compact")
    return written
