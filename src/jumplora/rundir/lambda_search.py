"""What `--ella-lambda search` keeps of a stage in the run directory, so that a kill loses one candidate at most.

    lambda_search/NN-STAGE.json                       every λ tried so far: its validation accuracies,
                                                      their mean, its losses; the best so far
    lambda_search/NN-STAGE/lambda-VALUE.safetensors   the best candidate's update (one file, the best's)

A candidate counts as tried once the record names it. When a new candidate is the best, its update
is written first, then the record that names it best, then the previous best's update is deleted:
a kill between any two leaves a record whose best has its update (a stray file of a candidate the
record does not name best is removed when the record is next read). Once the stage is done
(`state.json`), the updates go (`RunDirectory.remove_finished_search_updates`); the record stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jumplora.atomic import atomic_write_json, is_temporary
from jumplora.errors import RunDirectoryError
from jumplora.rundir import layout
from jumplora.rundir.formats import RESTORE, _damaged, first_line, read_json_object
from jumplora.updates import TaskUpdate

FORMAT = 1
SELECTION = ("the mean over the tasks so far (past and current) of the validation accuracy; ties: the earlier "
             "value of the grid")


@dataclass(frozen=True)
class Candidate:
    """One λ tried on the stage: the validation accuracy (%) of each task so far, and its losses.jsonl lines."""

    value: float
    validation_accuracy: dict[str, float]
    losses: list[dict]

    @property
    def score(self) -> float:
        """What the search maximises (`SELECTION`)."""
        return sum(self.validation_accuracy.values()) / max(len(self.validation_accuracy), 1)

    def to_json(self) -> dict:
        return {"lambda": self.value, "validation_accuracy": self.validation_accuracy,
                "mean_validation_accuracy": self.score, "steps": len(self.losses), "losses": self.losses}

    @classmethod
    def from_json(cls, value, path: Path) -> "Candidate":
        try:
            accuracy = {str(task): float(a) for task, a in value["validation_accuracy"].items()}
            losses = value["losses"]
            if not isinstance(losses, list) or not all(isinstance(line, dict) for line in losses):
                raise TypeError("losses is not a list of loss records")
            return cls(float(value["lambda"]), accuracy, losses)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise _damaged(path, f"a candidate is not a λ with its accuracies ({first_line(error)})", RESTORE) from None


class LambdaSearch:
    """The λ search record of stage `index` of the run at `root`, over `grid` (tried in its order)."""

    def __init__(self, root: Path, index: int, name: str, grid: list[float]):
        self.root, self.index, self.name, self.grid = Path(root), index, name, [float(v) for v in grid]
        self.path = layout.lambda_search_record_path(self.root, index, name)

    def update_path(self, value: float) -> Path:
        return layout.lambda_search_update_path(self.root, self.index, self.name, value)

    def candidates(self) -> list[Candidate]:
        """The candidates tried so far, in the order they ran ([] before the first)."""
        if not self.path.exists():
            return []
        record = read_json_object(self.path, RESTORE)
        if record.get("stage") != self.name or not isinstance(record.get("candidates"), list):
            raise _damaged(self.path, f"not the λ search record of stage {self.name}", RESTORE)
        if [float(v) for v in record.get("grid", [])] != self.grid:
            raise RunDirectoryError(f"{self.path} searched the grid {record.get('grid')}, the run's is {self.grid}; "
                                    "use the grid it began with, or another --output-dir")
        found = [Candidate.from_json(value, self.path) for value in record["candidates"]]
        if any(c.value not in self.grid for c in found) or len({c.value for c in found}) != len(found):
            raise _damaged(self.path, "its candidates are not distinct values of its grid", RESTORE)
        return found

    def best(self, candidates: list[Candidate] | None = None) -> Candidate | None:
        candidates = self.candidates() if candidates is None else candidates
        # max() keeps the first of equal scores: the earlier value of the grid, as the candidates ran in its order
        return max(candidates, key=lambda c: c.score) if candidates else None

    def add(self, candidate: Candidate, update: TaskUpdate) -> None:
        """Record a tried candidate (and keep its update if it is the best so far): see the module docstring."""
        candidates = self.candidates()
        previous = self.best(candidates)
        candidates.append(candidate)
        best = self.best(candidates)
        if best is candidate:
            update.save(self.update_path(candidate.value))
        atomic_write_json(self.path, {
            "format": FORMAT, "stage": self.name, "grid": self.grid, "selection": SELECTION,
            "candidates": [c.to_json() for c in candidates], "best": best.value,
            "complete": len(candidates) == len(self.grid),
        })
        if best is candidate and previous is not None:
            self.update_path(previous.value).unlink(missing_ok=True)

    def best_update(self) -> TaskUpdate:
        """The best candidate's update, as it was merged; a stray update of another candidate is removed."""
        best = self.best()
        if best is None:
            raise RunDirectoryError(f"{self.path} names no candidate; {RESTORE}")
        path = self.update_path(best.value)
        for stray in path.parent.glob("*.safetensors"):
            if stray != path and not is_temporary(stray):
                stray.unlink(missing_ok=True)
        if not path.is_file():
            raise RunDirectoryError(f"cannot resume the λ search, {path} is missing; {RESTORE}")
        try:
            return TaskUpdate.load(path)
        except Exception as error:  # safetensors, json (metadata) and key errors alike: the file is bad
            raise RunDirectoryError(f"{path} is damaged ({first_line(error)}); {RESTORE}") from None


__all__ = ["Candidate", "LambdaSearch", "SELECTION"]
