"""The run directory (docs/run-directory.md): its layout, its file formats, its writer and its reader.

This package owns the contract between the training side and the analyses; nothing else names a
file of a run directory.

- `layout`: file names and paths (`tasks/NN-STAGE.json`, ...), stages and their names;
- `formats`: how each file is written and parsed (state.json, the accuracy CSV, losses.jsonl, the
  task records); the atomic writer itself is `jumplora.atomic`, a leaf module (the default model's
  conversion and the update files use it too), re-exported here;
- `writer`: `RunDirectory`, what `jumplora.train` writes, resumes and checks (`FollowerRunDirectory`:
  the same read by the other processes of a data-parallel run, which write nothing);
- `single`: `find_single_run`, the neighbouring `single` run that gives FWT its a_0,i;
- `supports`: the compact form of an update (`supports/`);
- `reader`: `load_run`, a finished or unfinished run as the analyses read it;
- `removal`: `Removal`, what `jumplora forget` writes beside a run (forget.json), and its reader.
"""

from jumplora.atomic import atomic_save_safetensors, atomic_write, atomic_write_json, atomic_write_text
from jumplora.rundir.formats import State, TaskRecord
from jumplora.rundir.layout import is_removal_directory, is_run_directory
from jumplora.rundir.reader import Run, RunWarning, Stage, load_run, load_runs
from jumplora.rundir.removal import Removal, load_removal, write_removal
from jumplora.rundir.single import RunDirectoryWarning, find_single_run
from jumplora.rundir.supports import CompactUpdate, compact, load_supports, save_supports
from jumplora.rundir.writer import FollowerRunDirectory, Resume, RunDirectory, data_summary, file_digests

__all__ = [
    "CompactUpdate", "FollowerRunDirectory", "Removal", "Resume", "Run", "RunDirectory", "RunDirectoryWarning",
    "RunWarning", "Stage",
    "State", "TaskRecord", "atomic_save_safetensors", "atomic_write", "atomic_write_json", "atomic_write_text", "compact",
    "data_summary", "file_digests", "find_single_run", "is_removal_directory", "is_run_directory", "load_removal",
    "load_run", "load_runs", "load_supports", "save_supports", "write_removal",
]
