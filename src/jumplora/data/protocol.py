"""The sampling protocol of the paper (§4.1) and `load_task`, which applies it.

Test: at most 500 examples per class. Train + validation: a pool of at most 1000 examples per class,
split 80/20 within each class. Sampling is seeded per task from (seed, task name) through SHA-256,
never Python's salted hash(), so a seed gives the same samples in every process and on every
machine. Train and test are drawn from separate streams, so a change to the test cap does not
change the training sample. The scale knobs (`train_per_class`, `val_per_class`) keep a prefix of
each class's shuffled split, so a smaller run's examples are a subset of a larger run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from jumplora.data.sources import Example, FolderSource, Source, SplitRecords, warn_once
from jumplora.data.tasks import TaskSpec, get_task
from jumplora.errors import ConfigError, DataError


@dataclass(frozen=True)
class DataProtocol:
    """How a task's files become train / validation / test sets.

    `test_per_class` and `pool_per_class` are the paper's caps; `train_per_class` and
    `val_per_class` further cap the splits for smaller runs (None: no further cap);
    `max_input_tokens` bounds the encoded prompt (the sentence is cut, see `prompts.encode_prompt`).
    """

    seed: int = 42
    test_per_class: int | None = 500
    pool_per_class: int | None = 1000
    val_fraction: float = 0.2
    train_per_class: int | None = None
    val_per_class: int | None = None
    max_input_tokens: int | None = None

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"data protocol: seed must be an integer, got {self.seed!r}")
        for name in ("test_per_class", "pool_per_class", "train_per_class", "val_per_class",
                     "max_input_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise ConfigError(f"data protocol: {name} must be a non-negative integer or None, "
                                  f"got {value!r}")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ConfigError(
                f"data protocol: val_fraction must be in [0, 1), got {self.val_fraction!r}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DataProtocol:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"data protocol: unknown keys {unknown}; valid: {sorted(known)}")
        return cls(**values)


@dataclass(frozen=True)
class TaskData:
    """One task after the protocol. `labels` and `instruction` are those of the source (the files on
    disk for a folder). Validation is drawn from the train file, so `dropped` (records whose label
    is outside the label set) is keyed by file: "train" and "test"."""

    spec: TaskSpec
    labels: tuple[str, ...]
    instruction: str | None
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    sources: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def group(self) -> str:
        return self.spec.group

    def split(self, name: str) -> list[Example]:
        if name not in ("train", "validation", "test"):
            raise DataError(f"task {self.name}: unknown split {name!r}")
        return getattr(self, name)

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}

    def label_counts(self, split: str) -> dict[str, int]:
        counts = Counter(example.label for example in self.split(split))
        return {label: counts.get(label, 0) for label in self.labels}


def task_seed(seed: int, task: str, stream: str = "") -> int:
    """A 64-bit seed derived stably from (seed, task name, stream name)."""
    digest = hashlib.sha256(f"{seed}/{task}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _cap(items: list, limit: int | None) -> list:
    return items if limit is None else items[:limit]


def _by_class(examples: list[Example], labels: tuple[str, ...], rng: random.Random) -> dict:
    """Label -> that class's examples, shuffled, in label-set order."""
    groups: dict[str, list[Example]] = {label: [] for label in labels}
    for example in examples:
        groups[example.label].append(example)
    for items in groups.values():
        rng.shuffle(items)
    return groups


def _keep_labelled(records: SplitRecords, labels: tuple[str, ...], task: str) -> tuple[list, int]:
    """Drop the records whose label is outside the label set, warning once with the count."""
    allowed = set(labels)
    kept = [example for example in records.examples if example.label in allowed]
    dropped = len(records.examples) - len(kept)
    if dropped:
        bad = Counter(e.label for e in records.examples if e.label not in allowed)
        shown = ", ".join(f"{label!r} x{n}" for label, n in bad.most_common(5))
        warn_once(
            ("dropped", records.origin, dropped),
            f"task {task}: dropped {dropped} of {len(records.examples)} records of {records.origin} "
            f"with labels outside the label set ({shown})",
        )
    return kept, dropped


def apply_protocol(
    spec: TaskSpec,
    labels: tuple[str, ...],
    train_records: SplitRecords,
    test_records: SplitRecords,
    protocol: DataProtocol,
) -> tuple[list[Example], list[Example], list[Example], dict[str, int]]:
    """(train, validation, test, dropped) from a task's two files, following the protocol."""
    train_pool, dropped_train = _keep_labelled(train_records, labels, spec.name)
    test_pool, dropped_test = _keep_labelled(test_records, labels, spec.name)

    rng = random.Random(task_seed(protocol.seed, spec.name, "test"))
    test = []
    for items in _by_class(test_pool, labels, rng).values():
        test.extend(_cap(items, protocol.test_per_class))
    rng.shuffle(test)

    rng = random.Random(task_seed(protocol.seed, spec.name, "pool"))
    train, validation = [], []
    for items in _by_class(train_pool, labels, rng).values():
        pool = _cap(items, protocol.pool_per_class)
        n_val = int(len(pool) * protocol.val_fraction + 0.5)
        validation.extend(_cap(pool[:n_val], protocol.val_per_class))
        train.extend(_cap(pool[n_val:], protocol.train_per_class))
    rng.shuffle(train)
    rng.shuffle(validation)

    val_wanted = protocol.val_fraction > 0 and protocol.val_per_class != 0
    for split, examples, records, dropped, wanted in (
        ("train", train, train_records, dropped_train, True),
        ("validation", validation, train_records, dropped_train, val_wanted),
        ("test", test, test_records, dropped_test, True),
    ):
        if wanted and not examples:
            raise DataError(
                f"task {spec.name}: {split} split is empty after sampling "
                f"({len(records.examples)} records in {records.origin}, {dropped} dropped)"
            )
    return train, validation, test, {"train": dropped_train, "test": dropped_test}


def load_task(
    name: str,
    data_dir: str | Path | None = None,
    protocol: DataProtocol | None = None,
    *,
    source: Source | None = None,
) -> TaskData:
    """Task `name` from `data_dir` (a benchmark folder) or from `source` (e.g. an `HFSource`),
    sampled by `protocol` (default: the paper's, seed 42)."""
    spec = get_task(name)
    protocol = protocol or DataProtocol()
    if source is None:
        if data_dir is None:
            raise DataError(f"task {spec.name}: no data folder or source given")
        source = FolderSource(data_dir)
    labels = source.labels(spec)
    instruction = source.instruction(spec)
    train_records = source.records(spec, "train")
    test_records = source.records(spec, "test")
    train, validation, test, dropped = apply_protocol(
        spec, labels, train_records, test_records, protocol
    )
    return TaskData(
        spec=spec,
        labels=labels,
        instruction=instruction,
        train=train,
        validation=validation,
        test=test,
        sources={
            "train": train_records.origin,
            "validation": train_records.origin,
            "test": test_records.origin,
        },
        dropped=dropped,
    )
