"""Where task records come from: a benchmark folder, or a Hugging Face `datasets` object.

Both sources hand the protocol the same thing: for a task and a split ("train" or "test") a list of
`Example(sentence, label)` plus a string naming where they came from. Label filtering, sampling and
splitting then follow one code path (`jumplora.data.protocol`) whatever the source.

Folder layout (O-LoRA's CL_Benchmark): ``<root>/<group>/<task>/{train,test,labels}.json`` and
``<root>/instruction_config.json``; a task folder may also hold a ``dev.json`` (the JumpLoRA
authors' CL_Benchmark_dev: their own train / dev / test split), read as the split "dev". Each JSON
file is read once per process (cached on path, mtime and size), because a run loads the same task
several times.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from jumplora.data.tasks import TaskSpec
from jumplora.errors import DataError

log = logging.getLogger("jumplora.data")

DATA_ENV = "JUMPLORA_DATA"
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True, slots=True)
class Example:
    """One input sentence (already holding every field of the record) and its label word(s)."""

    sentence: str
    label: str


@dataclass(frozen=True)
class SplitRecords:
    """The records of one split of one task, and where they were read from."""

    examples: tuple[Example, ...]
    origin: str


class Source(Protocol):
    """What `load_task` needs from a source of records."""

    def labels(self, spec: TaskSpec) -> tuple[str, ...]: ...

    def instruction(self, spec: TaskSpec) -> str | None: ...

    def records(self, spec: TaskSpec, split: str) -> SplitRecords: ...


def has_split(source: Source, spec: TaskSpec, split: str) -> bool:
    """Whether `source` holds `split` for the task (a source without `has_split`: train and test)."""
    check = getattr(source, "has_split", None)
    return bool(check(spec, split)) if check is not None else split in ("train", "test")


def resolve_data_dir(arg: str | os.PathLike | None) -> Path:
    """The benchmark folder: `arg` (the CLI's --data-dir) if given, else $JUMPLORA_DATA."""
    if arg is None or str(arg) == "":
        arg = os.environ.get(DATA_ENV) or None
        if arg is None:
            raise DataError(f"no data folder given: pass --data-dir or set ${DATA_ENV}")
    path = Path(arg).expanduser()
    if not path.is_dir():
        raise DataError(f"data folder {path} not found")
    return path


# --------------------------------------------------------------------------- JSON files, cached


def _stat_key(path: Path) -> tuple[str, int, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DataError(f"missing file {path}") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror}") from None
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def _load_json(path: Path) -> Any:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}: malformed JSON at line {error.lineno} column {error.colno} "
            f"(char {error.pos}): {error.msg}"
        ) from None


@functools.lru_cache(maxsize=64)
def _read_records_cached(path: str, mtime_ns: int, size: int) -> tuple[Example, ...]:
    data = _load_json(Path(path))
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    examples = []
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise DataError(f"{path}: record {index} is a {type(record).__name__}, not an object")
        for key in ("label", "sentence"):
            if key not in record:
                raise DataError(f"{path}: record {index} has no {key!r} field")
            if not isinstance(record[key], str):
                raise DataError(
                    f"{path}: record {index} field {key!r} has type "
                    f"{type(record[key]).__name__}, not str"
                )
        examples.append(Example(sentence=record["sentence"], label=record["label"]))
    return tuple(examples)


def read_records(path: str | os.PathLike) -> tuple[Example, ...]:
    """The records of one `{train,test}.json` file (a JSON array of {"label", "sentence"})."""
    return _read_records_cached(*_stat_key(Path(path)))


@functools.lru_cache(maxsize=64)
def _read_json_cached(path: str, mtime_ns: int, size: int) -> Any:
    return _load_json(Path(path))


def read_labels(path: str | os.PathLike) -> tuple[str, ...]:
    """The label words of a `labels.json` file (a JSON array of distinct, non-empty strings)."""
    path = Path(path)
    data = _read_json_cached(*_stat_key(path))
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty JSON array of label words")
    for index, label in enumerate(data):
        if not isinstance(label, str) or not label.strip():
            raise DataError(f"{path}: label {index} is {label!r}, not a non-empty string")
    if len(set(data)) != len(data):
        raise DataError(f"{path}: label words repeat: {data}")
    return tuple(data)


def read_instructions(path: str | os.PathLike) -> dict[str, str]:
    """Group -> instruction from an `instruction_config.json` (the first zero-shot entry of each
    group, else its first entry). Instructions are given a final newline if they lack one, since the
    prompt puts the options on the next line."""
    path = Path(path)
    data = _read_json_cached(*_stat_key(path))
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object mapping group -> list of instructions")
    result = {}
    for group, entries in data.items():
        if not isinstance(entries, list) or not entries:
            raise DataError(f"{path}: group {group!r} must hold a non-empty list of instructions")
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("instruction"), str):
                raise DataError(
                    f"{path}: group {group!r} entry {index} lacks a string 'instruction' field"
                )
        chosen = next((e for e in entries if e.get("instruction_type") == "zero-shot"), entries[0])
        text = chosen["instruction"]
        result[group] = text if text.endswith("\n") else text + "\n"
    return result


# --------------------------------------------------------------------------- folder source


class FolderSource:
    """Tasks stored as ``<root>/<group>/<task>/{train,test,labels}.json``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"data folder {self.root} not found")

    def task_dir(self, spec: TaskSpec) -> Path:
        path = self.root / spec.folder
        if not path.is_dir():
            raise DataError(f"task {spec.name}: folder {path} not found")
        return path

    def labels(self, spec: TaskSpec) -> tuple[str, ...]:
        """The labels.json on disk (authoritative); a difference from the registry is warned about."""
        path = self.task_dir(spec) / "labels.json"
        labels = read_labels(path)
        if labels != spec.labels:
            warn_once(
                ("labels", str(path), labels),
                f"task {spec.name}: {path} lists labels {list(labels)}, the registry expects "
                f"{list(spec.labels)}; using the file's",
            )
        return labels

    def instruction(self, spec: TaskSpec) -> str | None:
        """The group's entry in <root>/instruction_config.json when there is one, else the registry's."""
        path = self.root / "instruction_config.json"
        if not path.exists():
            return spec.instruction
        return read_instructions(path).get(spec.group, spec.instruction)

    def has_split(self, spec: TaskSpec, split: str) -> bool:
        return split in SPLITS and (self.task_dir(spec) / f"{split}.json").is_file()

    def files_read(self, spec: TaskSpec, split_files: Iterable[str | os.PathLike]) -> list[Path]:
        """Every file reading the task touched: its split files, labels.json and, when there is one,
        the root's instruction_config.json (what a run directory's data.json fingerprints)."""
        files = {Path(p) for p in split_files} | {self.task_dir(spec) / "labels.json"}
        if (self.root / "instruction_config.json").exists():
            files.add(self.root / "instruction_config.json")
        return sorted(files)

    def records(self, spec: TaskSpec, split: str) -> SplitRecords:
        if split not in SPLITS:
            raise DataError(f"task {spec.name}: unknown split {split!r}; valid: {', '.join(SPLITS)}")
        path = self.task_dir(spec) / f"{split}.json"
        return SplitRecords(read_records(path), str(path))


_warned: set = set()


def warn_once(key, message: str) -> None:
    """Log a data warning once per process (a run loads each task several times)."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


# --------------------------------------------------------------------------- Hugging Face datasets


def _require_datasets():
    try:
        import datasets  # noqa: PLC0415 (optional dependency, imported on use)
    except ImportError:
        raise DataError(
            "the Hugging Face source needs the 'datasets' package: pip install 'jumplora[hf]'"
        ) from None
    return datasets


def _class_label_names(dataset: Any, column: str) -> list[str] | None:
    """The names of a `datasets.ClassLabel` column, when the dataset has one."""
    features = getattr(dataset, "features", None)
    feature = features.get(column) if isinstance(features, Mapping) else None
    names = getattr(feature, "names", None)
    return list(names) if names else None


def load_hf_split(
    dataset: Iterable[Mapping[str, Any]],
    label_map: Mapping[Any, str] | None = None,
    *,
    text_column: str = "sentence",
    label_column: str = "label",
    text_fn: Callable[[Mapping[str, Any]], str] | None = None,
    origin: str = "datasets",
) -> list[Example]:
    """Records of a `datasets.Dataset` (or any iterable of row dicts) as `Example`s.

    The label column's value (int or string) is looked up in `label_map`; without a map, a
    `ClassLabel` column gives its class names and other values are used as strings. A value absent
    from the map is kept as its string form, so that the protocol drops it with the same warning as
    an out-of-label-set record from a folder (e.g. GLUE's unlabeled `-1` test rows). `text_fn`
    builds the sentence from a row when the text spans columns (premise + hypothesis, ...).
    """
    names = None if label_map is not None else _class_label_names(dataset, label_column)
    examples = []
    for index, row in enumerate(dataset):
        if not isinstance(row, Mapping):
            raise DataError(f"{origin}: row {index} is a {type(row).__name__}, not a mapping")
        if label_column not in row:
            raise DataError(f"{origin}: row {index} has no {label_column!r} column")
        if text_fn is not None:
            sentence = text_fn(row)
        elif text_column not in row:
            raise DataError(f"{origin}: row {index} has no {text_column!r} column")
        else:
            sentence = row[text_column]
        if not isinstance(sentence, str):
            raise DataError(f"{origin}: row {index} text is a {type(sentence).__name__}, not a string")
        value = row[label_column]
        if label_map is not None:
            label = label_map.get(value, str(value))
        elif names is not None and isinstance(value, int) and 0 <= value < len(names):
            label = names[value]
        else:
            label = str(value)
        examples.append(Example(sentence=sentence, label=label))
    return examples


class HFSource:
    """One task's splits as `datasets.Dataset` objects (or lists of row dicts).

    `splits` maps "train" and "test" (and optionally "dev", a given validation split) to datasets,
    e.g. ``datasets.load_dataset("json", data_files=...)`` done by the caller on local files, or the
    GLUE validation split as "test" (as O-LoRA does). `label_map` maps the label column's values to
    the task's label words; its words must belong to the task's label set. Labels and instruction
    default to the registry's.
    """

    def __init__(
        self,
        splits: Mapping[str, Any],
        label_map: Mapping[Any, str] | None = None,
        *,
        text_column: str = "sentence",
        label_column: str = "label",
        text_fn: Callable[[Mapping[str, Any]], str] | None = None,
        labels: Iterable[str] | None = None,
        instruction: str | None = None,
        origins: Mapping[str, str] | None = None,
    ):
        self.splits = dict(splits)
        self.label_map = dict(label_map) if label_map is not None else None
        self.text_column = text_column
        self.label_column = label_column
        self.text_fn = text_fn
        self._labels = tuple(labels) if labels is not None else None
        self._instruction = instruction
        self.origins = dict(origins or {})

    @classmethod
    def from_files(
        cls,
        data_files: Mapping[str, str | os.PathLike],
        label_map: Mapping[Any, str] | None = None,
        *,
        builder: str = "json",
        cache_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> HFSource:
        """Load local files with ``datasets.load_dataset(builder, data_files=...)`` (never the hub)."""
        datasets = _require_datasets()
        for split, path in data_files.items():
            if not Path(path).is_file():
                raise DataError(f"missing file {path} (split {split!r})")
        files = {split: str(path) for split, path in data_files.items()}
        try:
            loaded = datasets.load_dataset(
                builder, data_files=files, cache_dir=str(cache_dir) if cache_dir else None
            )
        except Exception as error:  # datasets wraps parse errors in its own exception types
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DataError(f"cannot load {', '.join(files.values())} with datasets: {first}") from None
        return cls(dict(loaded), label_map, origins=files, **kwargs)

    def labels(self, spec: TaskSpec) -> tuple[str, ...]:
        labels = self._labels if self._labels is not None else spec.labels
        if self.label_map is not None:
            unknown = sorted({w for w in self.label_map.values() if w not in labels})
            if unknown:
                raise DataError(
                    f"task {spec.name}: label_map gives {unknown}, not in the label set {list(labels)}"
                )
        return labels

    def instruction(self, spec: TaskSpec) -> str | None:
        return self._instruction if self._instruction is not None else spec.instruction

    def has_split(self, spec: TaskSpec, split: str) -> bool:
        return split in self.splits

    def records(self, spec: TaskSpec, split: str) -> SplitRecords:
        origin = self.origins.get(split, f"datasets:{spec.name}/{split}")
        if split not in self.splits:
            raise DataError(f"task {spec.name}: the datasets source has no {split!r} split")
        examples = load_hf_split(
            self.splits[split],
            self.label_map,
            text_column=self.text_column,
            label_column=self.label_column,
            text_fn=self.text_fn,
            origin=origin,
        )
        return SplitRecords(tuple(examples), origin)
