"""The sampling protocol of the paper (§4.1), the authors' given split, and `load_task`.

Two ways to make train / validation / test sets (`DataProtocol.split`):

- "protocol" (and "auto" on a task folder without dev.json), the paper's protocol below.
- "auto" on a task folder with a dev.json (the JumpLoRA authors' CL_Benchmark_dev): train.json,
  dev.json and test.json are used as given, in file order, without resampling. The caps
  `train_per_class`, `val_per_class` and `test_per_class` still apply: a class with more records
  than its cap keeps a seeded random subset of that size (the same seed streams as the protocol),
  and the kept records stay in file order. `pool_per_class` and `val_fraction` do not apply.

Test records whose label is outside the label set (MNLI's 131 "-") are dropped with a warning
(`unlabelled_test="drop"`) or kept (`"count-wrong"`, as the authors' evaluation counts them: an
exact match can never hit them), each such label capped as a class of its own. Train and
validation records outside the label set are always dropped.

The paper's protocol. Test: at most 500 examples per class. Train + validation: a pool of at most
1000 examples per class, split 80/20 within each class. Sampling is seeded per task from (seed, task
name) through SHA-256, never Python's salted hash(), so a seed gives the same samples in every
process and on every machine. Train and test are drawn from separate streams, so a change to the
test cap does not change the training sample. The scale knobs (`train_per_class`, `val_per_class`)
keep a prefix of each class's shuffled split, so a smaller run's examples are a subset of a larger
run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from jumplora.data.orders import resolve_order
from jumplora.data.sources import (
    Example, FolderSource, Source, SplitRecords, has_split, resolve_data_dir, warn_once,
)
from jumplora.data.tasklist import is_task_list, read_task_list
from jumplora.data.tasks import TaskSpec, get_task
from jumplora.errors import ConfigError, DataError

SPLIT_MODES = ("auto", "protocol")
UNLABELLED_MODES = ("count-wrong", "drop")


@dataclass(frozen=True)
class DataProtocol:
    """How a task's files become train / validation / test sets.

    `test_per_class` and `pool_per_class` are the paper's caps; `train_per_class` and
    `val_per_class` further cap the splits for smaller runs (None: no further cap);
    `max_input_tokens` bounds the encoded prompt (see `prompts.encode_prompt`); `split` and
    `unlabelled_test` choose the given split and the fate of unlabelled test records (module
    docstring). The defaults are the historical behaviour: always the protocol, drop unlabelled.
    """

    seed: int = 42
    test_per_class: int | None = 500
    pool_per_class: int | None = 1000
    val_fraction: float = 0.2
    train_per_class: int | None = None
    val_per_class: int | None = None
    max_input_tokens: int | None = None
    split: str = "protocol"
    unlabelled_test: str = "drop"

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
        for name, choices in (("split", SPLIT_MODES), ("unlabelled_test", UNLABELLED_MODES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"data protocol: {name} must be one of {', '.join(choices)}, "
                                  f"got {getattr(self, name)!r}")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ConfigError(
                f"data protocol: val_fraction must be in [0, 1), got {self.val_fraction!r}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TaskData:
    """One task after the protocol. `labels` and `instruction` are those of the source (the files on
    disk for a folder). `sources` names the file of each split. `dropped` counts the records whose
    label is outside the label set that were dropped, keyed by file: "train" and "test" under the
    protocol (validation is drawn from the train file), "train", "validation" (dev.json) and
    "test" for a given split. `unlabelled` counts the test records kept although their label is
    outside the label set (`unlabelled_test="count-wrong"`)."""

    spec: TaskSpec
    labels: tuple[str, ...]
    instruction: str | None
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    sources: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    unlabelled: int = 0
    files: dict[str, str] | None = None  # sha256 of what a task list's task read (`ListedTask.fingerprints`)

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
    """Label -> that class's examples, shuffled, in label-set order; labels outside the set (kept
    unlabelled test records) follow as classes of their own, in order of first appearance."""
    groups: dict[str, list[Example]] = {label: [] for label in labels}
    for example in examples:
        groups.setdefault(example.label, []).append(example)
    for items in groups.values():
        rng.shuffle(items)
    return groups


def _cap_in_file_order(examples: list[Example], labels: tuple[str, ...], limit: int | None,
                       rng: random.Random) -> list[Example]:
    """At most `limit` examples per class (a seeded random subset where a class has more), kept in
    their original order. Every class is shuffled whatever the cap, so that a smaller cap keeps a
    subset of a larger one's examples."""
    if limit is None:
        return list(examples)
    groups: dict[str, list[int]] = {label: [] for label in labels}
    for index, example in enumerate(examples):
        groups.setdefault(example.label, []).append(index)
    keep: set[int] = set()
    for indices in groups.values():
        rng.shuffle(indices)
        keep.update(indices[:limit])
    return [examples[i] for i in sorted(keep)]


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


def _keep_test(records: SplitRecords, labels: tuple[str, ...], task: str,
               unlabelled_test: str) -> tuple[list, int, int]:
    """(kept records, dropped, kept with a label outside the set) of a test file."""
    if unlabelled_test == "drop":
        kept, dropped = _keep_labelled(records, labels, task)
        return kept, dropped, 0
    allowed = set(labels)
    bad = Counter(e.label for e in records.examples if e.label not in allowed)
    unlabelled = sum(bad.values())
    if unlabelled:
        shown = ", ".join(f"{label!r} x{n}" for label, n in bad.most_common(5))
        warn_once(
            ("unlabelled", records.origin, unlabelled),
            f"task {task}: keeping {unlabelled} of {len(records.examples)} records of "
            f"{records.origin} with labels outside the label set ({shown}); they count as wrong",
        )
    return list(records.examples), 0, unlabelled


def _check_not_empty(spec: TaskSpec, splits) -> None:
    for split, examples, records, dropped, wanted in splits:
        if wanted and not examples:
            raise DataError(
                f"task {spec.name}: {split} split is empty after sampling "
                f"({len(records.examples)} records in {records.origin}, {dropped} dropped)"
            )


def apply_given_split(
    spec: TaskSpec,
    labels: tuple[str, ...],
    train_records: SplitRecords,
    dev_records: SplitRecords | None,
    test_records: SplitRecords,
    protocol: DataProtocol,
) -> tuple[list[Example], list[Example], list[Example], dict[str, int], int]:
    """(train, validation, test, dropped, unlabelled) from a task's train / dev / test files used
    as given: file order, no resampling, only the per-class caps (module docstring). Without dev
    records (a task list's task) the validation set is empty."""
    wants_dev = dev_records is not None and protocol.val_per_class != 0
    dev_records = dev_records if dev_records is not None else SplitRecords((), "none")
    train_pool, dropped_train = _keep_labelled(train_records, labels, spec.name)
    dev_pool, dropped_dev = _keep_labelled(dev_records, labels, spec.name)
    test_pool, dropped_test, unlabelled = _keep_test(test_records, labels, spec.name,
                                                     protocol.unlabelled_test)

    def capped(pool, limit, stream):
        return _cap_in_file_order(pool, labels, limit, random.Random(task_seed(protocol.seed, spec.name,
                                                                               stream)))

    train = capped(train_pool, protocol.train_per_class, "pool")
    validation = capped(dev_pool, protocol.val_per_class, "dev")
    test = capped(test_pool, protocol.test_per_class, "test")
    allowed = set(labels)
    unlabelled = sum(e.label not in allowed for e in test)
    _check_not_empty(spec, (
        ("train", train, train_records, dropped_train, True),
        ("validation", validation, dev_records, dropped_dev, wants_dev),
        ("test", test, test_records, dropped_test, True),
    ))
    dropped = {"train": dropped_train, "validation": dropped_dev, "test": dropped_test}
    return train, validation, test, dropped, unlabelled


def apply_protocol(
    spec: TaskSpec,
    labels: tuple[str, ...],
    train_records: SplitRecords,
    test_records: SplitRecords,
    protocol: DataProtocol,
) -> tuple[list[Example], list[Example], list[Example], dict[str, int]]:
    """(train, validation, test, dropped) from a task's two files, following the protocol."""
    train_pool, dropped_train = _keep_labelled(train_records, labels, spec.name)
    test_pool, dropped_test, _ = _keep_test(test_records, labels, spec.name,
                                            protocol.unlabelled_test)

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
    _check_not_empty(spec, (
        ("train", train, train_records, dropped_train, True),
        ("validation", validation, train_records, dropped_train, val_wanted),
        ("test", test, test_records, dropped_test, True),
    ))
    return train, validation, test, {"train": dropped_train, "test": dropped_test}


def load_task(
    name: str,
    data_dir: str | Path | None = None,
    protocol: DataProtocol | None = None,
    *,
    source: Source | None = None,
    spec: TaskSpec | None = None,
) -> TaskData:
    """Task `name` from `data_dir` (a benchmark folder) or from `source` (e.g. an `HFSource`),
    sampled by `protocol` (default: the paper's, seed 42). With `protocol.split == "auto"` and a
    dev split in the source (a dev.json in the task folder) the given train / dev / test files are
    used instead (module docstring). `spec` replaces the registry's (a task list's own task), and
    a source with `split_given` gives its train and test as given under "auto", without validation."""
    spec = spec or get_task(name)
    protocol = protocol or DataProtocol()
    if source is None:
        if data_dir is None:
            raise DataError(f"task {spec.name}: no data folder or source given")
        source = FolderSource(data_dir)
    labels = source.labels(spec)
    instruction = source.instruction(spec)
    train_records = source.records(spec, "train")
    test_records = source.records(spec, "test")
    given = getattr(source, "split_given", False)
    if protocol.split == "auto" and (has_split(source, spec, "dev") or given):
        dev_records = source.records(spec, "dev") if has_split(source, spec, "dev") else None
        train, validation, test, dropped, unlabelled = apply_given_split(
            spec, labels, train_records, dev_records, test_records, protocol
        )
        validation_origin = dev_records.origin if dev_records is not None else "none"
    else:
        train, validation, test, dropped = apply_protocol(
            spec, labels, train_records, test_records, protocol
        )
        allowed = set(labels)
        unlabelled = sum(e.label not in allowed for e in test)
        validation_origin = train_records.origin
    return TaskData(
        spec=spec,
        labels=labels,
        instruction=instruction,
        train=train,
        validation=validation,
        test=test,
        sources={
            "train": train_records.origin,
            "validation": validation_origin,
            "test": test_records.origin,
        },
        dropped=dropped,
        unlabelled=unlabelled,
    )


def load_tasks(order: str, data_dir: str | Path | None, protocol: DataProtocol) -> dict[str, TaskData]:
    """Every task of a run's order, in order: a task list's from its own files (`jumplora.data.tasklist`),
    the registry's from the data folder (`data_dir`, else $JUMPLORA_DATA)."""
    if is_task_list(order):
        listed = read_task_list(order)
        return {
            name: dataclasses.replace(load_task(name, protocol=protocol, source=task.source, spec=task.spec),
                                      files=task.fingerprints())
            for name, task in listed.tasks.items()
        }
    root = resolve_data_dir(data_dir)
    return {name: load_task(name, root, protocol) for name in resolve_order(order)}
