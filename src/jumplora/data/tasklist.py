"""Task lists: an order file that defines its own tasks instead of naming the registry's.

Two formats, chosen by the file's suffix (`--order FILE.json` / `--order FILE.yaml`):

- **the authors' JSON** (`short_order_1.json` and the like in alexandra-dragomir/JumpLoRA): a list
  of objects with `task_name`, `train_file`, `validation_file`, `instruction`, `options` and
  optionally `text_key` (default "text"), `label_key` (default "label"), `max_samples`, and the two
  fields their `TaskConfig` accepts and jumplora ignores, `num_epochs` (their training script ignores
  it too) and `output_dir` (the run directory holds everything). The files are what their script
  reads with `datasets.load_dataset("json")`: a JSON array of records or JSON lines. As there,
  `validation_file` is the set evaluated after every task (their order files point it at
  test.json), `max_samples` keeps the first records of `train_file`, the prompt shows
  `instruction` as written and `options` as the label words.
- **a YAML list of Hugging Face datasets**: the same keys, with `dataset` (a folder written by
  `DatasetDict.save_to_disk`, or a name or builder for `datasets.load_dataset`) instead of the two
  files, and optionally `name` (its configuration), `data_files`, `train_split` ("train"),
  `test_split` ("test") and `label_map` (label value -> option; a `ClassLabel` column gives its
  names). Read through `HFSource`.

Relative paths are relative to the task list's folder. Each task's train and test sets are used as
given under `--split auto` (train = the train file, capped by `max_samples`; test = the validation
file; no validation set), the per-class caps still cutting them; `--split protocol` resamples the
train file as for the registry's tasks. A training record whose label is not one of `options` is an
error; a test record's follows `--unlabelled-test` (the authors' long orders evaluate MNLI's
test.json with its 131 "-" records, counted as wrong). Bad files are one line naming the task list,
the task and the field.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jumplora.data.sources import Example, HFSource, SplitRecords, _load_json, _require_datasets, _stat_key
from jumplora.data.tasks import TaskSpec, get_task
from jumplora.errors import DataError

JSON_SUFFIXES = (".json",)
YAML_SUFFIXES = (".yaml", ".yml")

_COMMON = {"task_name", "instruction", "options", "text_key", "label_key", "max_samples"}
_REQUIRED_JSON = ("task_name", "train_file", "validation_file", "instruction", "options")
_FIELDS_JSON = _COMMON | {"train_file", "validation_file", "num_epochs", "output_dir"}
_REQUIRED_YAML = ("task_name", "dataset", "instruction", "options")
_FIELDS_YAML = _COMMON | {"dataset", "name", "data_files", "train_split", "test_split", "label_map"}
# a task's name names its files in a run directory (tasks/00-NAME.json); "+" joins a stage's tasks
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_task_list(order: Any) -> bool:
    """Whether an order names a task-list file (a .json or .yaml file that exists)."""
    if not isinstance(order, (str, os.PathLike)):
        return False
    path = Path(str(order).strip()).expanduser()
    return path.suffix.lower() in JSON_SUFFIXES + YAML_SUFFIXES and path.is_file()


@dataclass(frozen=True)
class ListedTask:
    """One task of a task list: what it is (`spec`), where its records come from (`source`), the
    files it reads and its entry as written (both fingerprinted in a run's data.json)."""

    spec: TaskSpec
    source: Any
    entry: dict
    list_path: Path

    @property
    def name(self) -> str:
        return self.spec.name

    def fingerprints(self) -> dict[str, str]:
        """sha256 of every file the task reads (by path relative to the task list's folder, else
        absolute) and of its entry (`task-list-entry:TASK`): a resumed run refuses a changed one."""
        root = self.list_path.parent.resolve()
        digests = {_relative(path, root): _sha256_file(path) for path in self.source.files_read()}
        entry = json.dumps(self.entry, sort_keys=True, ensure_ascii=False, default=str).encode()
        # keyed by the task, not the list's file name: a longer list with the same entries extends a run
        digests[f"task-list-entry:{self.name}"] = hashlib.sha256(entry).hexdigest()
        return digests


@dataclass(frozen=True)
class TaskList:
    path: Path
    tasks: dict[str, ListedTask] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.tasks)


def read_task_list(path: str | os.PathLike) -> TaskList:
    """The tasks a task-list file defines, checked (fields, types, files there, names distinct)."""
    path = Path(str(path).strip()).expanduser()
    return _read_cached(*_stat_key(path))


@functools.lru_cache(maxsize=16)
def _read_cached(path: str, mtime_ns: int, size: int) -> TaskList:
    file = Path(path)
    if file.suffix.lower() in YAML_SUFFIXES:
        entries, required, known, make = _yaml_entries(file), _REQUIRED_YAML, _FIELDS_YAML, _dataset_task
    else:
        entries, required, known, make = _load_json(file), _REQUIRED_JSON, _FIELDS_JSON, _file_task
    if isinstance(entries, dict) and isinstance(entries.get("tasks"), list):
        entries = entries["tasks"]
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{file}: expected a non-empty list of task objects")
    tasks: dict[str, ListedTask] = {}
    for index, entry in enumerate(entries):
        where = f"{file}: entry {index}"
        if not isinstance(entry, dict):
            raise DataError(f"{where} is a {type(entry).__name__}, not an object with task_name, ...")
        name = entry.get("task_name")
        if isinstance(name, str) and name:
            where = f"{file}: task {name!r}"
        unknown = sorted(set(entry) - known)
        if unknown:
            raise DataError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(known))})")
        for key in required:
            if key not in entry:
                raise DataError(f"{where}: missing field {key!r}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise DataError(f"{where}: field 'task_name' must be a name of letters, digits, '_', '.', '-', "
                            f"got {name!r}")
        if name in tasks:
            raise DataError(f"{file}: task {name!r} appears twice; task names must differ")
        tasks[name] = make(file, where, entry)
    return TaskList(file, tasks)


def _yaml_entries(file: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {file}: {error}") from None
    except yaml.YAMLError as error:
        raise DataError(f"{file}: not valid YAML ({str(error).splitlines()[0]})") from None


# -- checking an entry ----------------------------------------------------------------------------------
def _string(where: str, entry: dict, key: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or not value:
        raise DataError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def _options(where: str, entry: dict) -> tuple[str, ...]:
    options = entry["options"]
    if (not isinstance(options, list) or not options
            or not all(isinstance(o, str) and o.strip() for o in options)):
        raise DataError(f"{where}: field 'options' must be a non-empty list of label words, got {options!r}")
    if len(set(options)) != len(options):
        raise DataError(f"{where}: field 'options' repeats a label word: {options}")
    return tuple(options)


def _max_samples(where: str, entry: dict) -> int | None:
    value = entry.get("max_samples")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DataError(f"{where}: field 'max_samples' must be a whole number >= 1 (or null), got {value!r}")
    return value


def _data_file(list_file: Path, where: str, entry: dict, key: str) -> Path:
    value = _string(where, entry, key)
    path = Path(value).expanduser()
    path = path if path.is_absolute() else list_file.parent / path
    if not path.is_file():
        raise DataError(f"{where}: field {key!r}: data file {path} not found")
    return path


def _spec(name: str, labels: tuple[str, ...], instruction: str) -> TaskSpec:
    """A listed task's spec: its own labels and instruction; a registry name keeps its group."""
    try:
        group = get_task(name).group
    except DataError:
        group = "custom"
    return TaskSpec(name=name, group=group, folder="", labels=labels, instruction=instruction, paper_name=name,
                    benchmarks=())


def _file_task(list_file: Path, where: str, entry: dict) -> ListedTask:
    name = entry["task_name"]
    labels, instruction = _options(where, entry), _string(where, entry, "instruction")
    if entry.get("num_epochs") is not None and (isinstance(entry["num_epochs"], bool)
                                                or not isinstance(entry["num_epochs"], (int, float))):
        raise DataError(f"{where}: field 'num_epochs' must be a number, got {entry['num_epochs']!r}")
    source = ListedFileSource(
        list_file=list_file, task=name, labels=labels, instruction=instruction,
        train_file=_data_file(list_file, where, entry, "train_file"),
        test_file=_data_file(list_file, where, entry, "validation_file"),
        text_key=_string(where, entry, "text_key", "text"), label_key=_string(where, entry, "label_key", "label"),
        max_samples=_max_samples(where, entry),
    )
    return ListedTask(_spec(name, labels, instruction), source, dict(entry), list_file)


def _dataset_task(list_file: Path, where: str, entry: dict) -> ListedTask:
    name = entry["task_name"]
    labels, instruction = _options(where, entry), _string(where, entry, "instruction")
    label_map = entry.get("label_map")
    if label_map is not None:
        if not isinstance(label_map, dict) or not label_map:
            raise DataError(f"{where}: field 'label_map' must map label values to options, got {label_map!r}")
        outside = sorted({str(v) for v in label_map.values() if v not in labels})
        if outside:
            raise DataError(f"{where}: field 'label_map' gives {outside[0]!r}, not one of options {list(labels)}")
    dataset = _string(where, entry, "dataset")
    local = Path(dataset).expanduser()
    local = local if local.is_absolute() else list_file.parent / local
    data_files = entry.get("data_files")
    if data_files is not None:
        if not isinstance(data_files, dict) or not all(isinstance(v, str) for v in data_files.values()):
            raise DataError(f"{where}: field 'data_files' must map split names to files, got {data_files!r}")
        data_files = {split: _data_file(list_file, where, {"data_files": path}, "data_files")
                      for split, path in data_files.items()}
    source = ListedDatasetSource(
        list_file=list_file, task=name, labels=labels, instruction=instruction,
        dataset=str(local) if local.exists() else dataset, config_name=entry.get("name"), data_files=data_files,
        train_split=_string(where, entry, "train_split", "train"), test_split=_string(where, entry, "test_split", "test"),
        text_key=_string(where, entry, "text_key", "text"), label_key=_string(where, entry, "label_key", "label"),
        label_map=label_map, max_samples=_max_samples(where, entry),
    )
    return ListedTask(_spec(name, labels, instruction), source, dict(entry), list_file)


# -- the sources --------------------------------------------------------------------------------------------
class _ListedSource:
    """What both formats share: the task's own labels and instruction, a given train/test split."""

    split_given = True  # `load_task` under split "auto": the files as given, no validation set

    def __init__(self, list_file: Path, task: str, labels: tuple[str, ...], instruction: str,
                 max_samples: int | None):
        self.list_file, self.task = list_file, task
        self._labels, self._instruction, self.max_samples = labels, instruction, max_samples

    def labels(self, spec: TaskSpec) -> tuple[str, ...]:
        return self._labels

    def instruction(self, spec: TaskSpec) -> str:
        return self._instruction

    def has_split(self, spec: TaskSpec, split: str) -> bool:
        return split in ("train", "test")

    def _where(self) -> str:
        return f"{self.list_file}: task {self.task!r}"

    def _checked_train(self, examples: list[Example], what: str) -> tuple[Example, ...]:
        """The first `max_samples` training records (as the authors' `select(range(n))`), each
        labelled with one of the options."""
        if self.max_samples is not None:
            examples = examples[: self.max_samples]
        allowed = set(self._labels)
        for index, example in enumerate(examples):
            if example.label not in allowed:
                raise DataError(f"{self._where()}: {what} record {index} field {self.label_key!r} is "
                                f"{example.label!r}, not one of options {list(self._labels)}")
        return tuple(examples)


class ListedFileSource(_ListedSource):
    """A task of the authors' JSON format: its train and validation files (JSON array or lines)."""

    def __init__(self, *, list_file, task, labels, instruction, train_file: Path, test_file: Path, text_key: str,
                 label_key: str, max_samples):
        super().__init__(list_file, task, labels, instruction, max_samples)
        self.files = {"train": train_file, "test": test_file}
        self.keys = {"train": "train_file", "test": "validation_file"}
        self.text_key, self.label_key = text_key, label_key

    def files_read(self) -> list[Path]:
        return sorted(set(self.files.values()))

    def records(self, spec: TaskSpec, split: str) -> SplitRecords:
        if split not in self.files:
            raise DataError(f"{self._where()}: no {split!r} split (a task list gives train and test)")
        path = self.files[split]
        what = f"{self.keys[split]} {path}"
        examples = [self._example(record, index, what) for index, record in enumerate(_read_rows(path, self._where(),
                                                                                                 what))]
        if split == "train":
            return SplitRecords(self._checked_train(examples, what), str(path))
        return SplitRecords(tuple(examples), str(path))

    def _example(self, record: Any, index: int, what: str) -> Example:
        if not isinstance(record, dict):
            raise DataError(f"{self._where()}: {what} record {index} is a {type(record).__name__}, not an object")
        for key, role in ((self.text_key, "text_key"), (self.label_key, "label_key")):
            if key not in record:
                raise DataError(f"{self._where()}: {what} record {index} has no field {key!r} ({role})")
        text, label = record[self.text_key], record[self.label_key]
        if not isinstance(text, str):
            raise DataError(f"{self._where()}: {what} record {index} field {self.text_key!r} is a "
                            f"{type(text).__name__}, not a string")
        if isinstance(label, (dict, list)) or label is None:
            raise DataError(f"{self._where()}: {what} record {index} field {self.label_key!r} is {label!r}, not a "
                            "label word")
        return Example(sentence=text, label=str(label))  # str(): as the authors' preprocessing


def _read_rows(path: Path, where: str, what: str) -> list:
    """A JSON array of records, or JSON lines (what `datasets.load_dataset("json")` reads)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{where}: cannot read {what}: {error}") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: {what} is not valid JSON (line {error.lineno}: {error.msg})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: {what} line {number} is not valid JSON ({error.msg})") from None
    return rows


class ListedDatasetSource(_ListedSource):
    """A task of the YAML format: two splits of a Hugging Face dataset, read through `HFSource`."""

    def __init__(self, *, list_file, task, labels, instruction, dataset: str, config_name, data_files,
                 train_split: str, test_split: str, text_key: str, label_key: str, label_map, max_samples):
        super().__init__(list_file, task, labels, instruction, max_samples)
        self.dataset, self.config_name, self.data_files = dataset, config_name, data_files
        self.split_names = {"train": train_split, "test": test_split}
        self.text_key, self.label_key, self.label_map = text_key, label_key, label_map
        self._hf: HFSource | None = None

    def files_read(self) -> list[Path]:
        if self.data_files:
            return sorted(set(self.data_files.values()))
        folder = Path(self.dataset)
        return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []

    def _source(self) -> HFSource:
        if self._hf is None:
            loaded = self._load()
            missing = [name for name in self.split_names.values() if name not in loaded]
            if missing:
                key = "train_split" if missing[0] == self.split_names["train"] else "test_split"
                raise DataError(f"{self._where()}: field {key!r}: dataset {self.dataset} has no split {missing[0]!r} "
                                f"(its splits: {', '.join(loaded)})")
            self._hf = HFSource({split: loaded[name] for split, name in self.split_names.items()}, self.label_map,
                                text_column=self.text_key, label_column=self.label_key, labels=self._labels,
                                instruction=self._instruction,
                                origins={s: f"{self.dataset}[{n}]" for s, n in self.split_names.items()})
        return self._hf

    def _load(self):
        datasets = _require_datasets()
        folder = Path(self.dataset)
        try:
            if folder.is_dir() and (folder / "dataset_dict.json").is_file():
                return datasets.load_from_disk(str(folder))
            files = {k: str(v) for k, v in self.data_files.items()} if self.data_files else None
            return datasets.load_dataset(self.dataset, self.config_name, data_files=files)
        except Exception as error:  # datasets raises many types (missing builder, offline hub, bad file)
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DataError(f"{self._where()}: field 'dataset': cannot load {self.dataset} ({first})") from None

    def records(self, spec: TaskSpec, split: str) -> SplitRecords:
        try:
            records = self._source().records(spec, split)
        except DataError as error:
            if str(error).startswith(str(self.list_file)):
                raise
            raise DataError(f"{self._where()}: {error}") from None
        if split == "train":
            what = f"dataset {self.dataset} split {self.split_names['train']!r}"
            return SplitRecords(self._checked_train(list(records.examples), what), records.origin)
        return records


# -- digests ------------------------------------------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _relative(path: Path, root: Path) -> str:
    resolved = Path(path).resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else resolved.as_posix()


__all__ = ["ListedDatasetSource", "ListedFileSource", "ListedTask", "TaskList", "is_task_list", "read_task_list"]
