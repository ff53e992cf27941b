"""Task orders 1-6 (Table 6 of the paper) and the parsing of a user's `--order`.

Orders 1-3 are the Standard CL benchmark, orders 4-6 the Long Sequence benchmark. A user can also
give their own sequence, as a comma-separated list of task names or a text file.
"""

from __future__ import annotations

from pathlib import Path

from jumplora.data.tasklist import JSON_SUFFIXES, YAML_SUFFIXES, is_task_list, read_task_list
from jumplora.data.tasks import LONG, STANDARD, get_task
from jumplora.errors import DataError

ORDERS: dict[int, tuple[str, ...]] = {
    1: ("dbpedia", "amazon", "yahoo", "agnews"),
    2: ("dbpedia", "amazon", "agnews", "yahoo"),
    3: ("yahoo", "amazon", "agnews", "dbpedia"),
    4: ("MNLI", "CB", "WiC", "COPA", "QQP", "BoolQA", "RTE", "IMDB", "yelp", "amazon", "SST-2",
        "dbpedia", "agnews", "MultiRC", "yahoo"),
    5: ("MultiRC", "BoolQA", "WiC", "MNLI", "CB", "COPA", "QQP", "RTE", "IMDB", "SST-2", "dbpedia",
        "agnews", "yelp", "amazon", "yahoo"),
    6: ("yelp", "amazon", "MNLI", "CB", "COPA", "QQP", "RTE", "IMDB", "SST-2", "dbpedia", "agnews",
        "yahoo", "MultiRC", "BoolQA", "WiC"),
}


def benchmark_of(order: int) -> str:
    """"standard" for orders 1-3, "long" for orders 4-6."""
    if order not in ORDERS:
        raise DataError(f"unknown order {order!r}; valid orders: 1-{max(ORDERS)}")
    return STANDARD if order <= 3 else LONG


def _names_to_tasks(names: list[str], where: str) -> list[str]:
    tasks = [get_task(name).name for name in names]
    if not tasks:
        raise DataError(f"order {where} names no task")
    seen: set[str] = set()
    for task in tasks:
        if task in seen:
            # results and adapters are keyed by task name, so a task may appear only once
            raise DataError(f"order {where} lists task {task!r} twice")
        seen.add(task)
    return tasks


def _split_names(text: str) -> list[str]:
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        names.extend(part.strip() for part in line.split(",") if part.strip())
    return names


def resolve_order(spec: int | str | Path) -> list[str]:
    """Canonical task names of an order given as a number (1-6 or "1".."6"), a comma-separated list
    of task names, a path to a text file (names one a line or comma-separated, `#` comments), or a
    task list defining its own tasks (.json in the authors' format, .yaml naming `datasets`: the
    names it gives, see `jumplora.data.tasklist`)."""
    if isinstance(spec, bool):
        raise DataError(f"unknown order {spec!r}; valid orders: 1-{max(ORDERS)}")
    if isinstance(spec, int):
        benchmark_of(spec)  # validates
        return list(ORDERS[spec])
    if isinstance(spec, Path):
        spec = str(spec)
    if not isinstance(spec, str):
        raise DataError(f"unknown order {spec!r}: expected a number, task names or a file")
    text = spec.strip()
    if not text:
        raise DataError("empty order: give a number 1-6, task names or a file")
    if text.isdigit():
        return resolve_order(int(text))
    path = Path(text).expanduser()
    if is_task_list(path):  # a JSON or YAML file defining its tasks (jumplora.data.tasklist)
        return read_task_list(path).names
    if path.is_file():
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"cannot read order file {path}: {error}") from None
        try:
            return _names_to_tasks(_split_names(content), f"file {path}")
        except DataError as error:
            raise DataError(f"order file {path}: {error}") from None
    if "," not in text and ("/" in text or path.suffix.lower() in (".txt", *JSON_SUFFIXES, *YAML_SUFFIXES)):
        raise DataError(f"order file {path} not found")
    return _names_to_tasks(_split_names(text), repr(text))
