"""Task registry and orders: names, aliases, Table 6 of the paper, parsing of --order."""

from __future__ import annotations

import json

import pytest

from jumplora.data import ORDERS, TASKS, benchmark_of, get_task, read_labels, resolve_order
from jumplora.errors import DataError

# Table 6 of the paper, verbatim (its short names).
TABLE_6 = {
    1: "dbpedia → amazon → yahoo → ag",
    2: "dbpedia → amazon → ag → yahoo",
    3: "yahoo → amazon → ag → dbpedia",
    4: "mnli → cb → wic → copa → qqp → boolqa → rte → imdb → yelp → amazon → sst-2 → dbpedia → ag "
       "→ multirc → yahoo",
    5: "multirc → boolqa → wic → mnli → cb → copa → qqp → rte → imdb → sst-2 → dbpedia → ag → yelp "
       "→ amazon → yahoo",
    6: "yelp → amazon → mnli → cb → copa → qqp → rte → imdb → sst-2 → dbpedia → ag → yahoo → multirc "
       "→ boolqa → wic",
}
# paper name -> folder name, written out by hand
CANONICAL = {
    "dbpedia": "dbpedia", "amazon": "amazon", "yahoo": "yahoo", "ag": "agnews", "yelp": "yelp",
    "mnli": "MNLI", "qqp": "QQP", "rte": "RTE", "sst-2": "SST-2", "wic": "WiC", "cb": "CB",
    "copa": "COPA", "boolqa": "BoolQA", "multirc": "MultiRC", "imdb": "IMDB",
}


def test_orders_equal_table_6():
    expected = {n: tuple(CANONICAL[t.strip()] for t in seq.split("→")) for n, seq in TABLE_6.items()}
    assert ORDERS == expected
    assert all(len(ORDERS[n]) == 4 for n in (1, 2, 3))
    assert all(sorted(ORDERS[n]) == sorted(TASKS) for n in (4, 5, 6))
    assert [benchmark_of(n) for n in range(1, 7)] == ["standard"] * 3 + ["long"] * 3


def test_registry_matches_folders(cl_benchmark_dir):
    assert len(TASKS) == 15
    for spec in TASKS.values():
        assert spec.folder == f"{spec.group}/{spec.name}"
        assert read_labels(cl_benchmark_dir / spec.folder / "labels.json") == spec.labels
        assert (spec.instruction is None) == (spec.name == "COPA")
    config = json.loads((cl_benchmark_dir / "instruction_config.json").read_text())
    for spec in TASKS.values():
        if spec.group in config:
            assert spec.instruction == config[spec.group][0]["instruction"]


@pytest.mark.parametrize("alias, name", [
    ("ag", "agnews"), ("AGNEWS", "agnews"), ("boolqa", "BoolQA"), ("BoolQ", "BoolQA"),
    ("sst-2", "SST-2"), ("sst2", "SST-2"), ("mnli", "MNLI"), ("cb", "CB"), ("Wic", "WiC"),
    ("multirc", "MultiRC"), (" imdb ", "IMDB"), ("DBpedia", "dbpedia"),
])
def test_get_task_aliases(alias, name):
    assert get_task(alias).name == name


def test_unknown_task_lists_valid_names():
    with pytest.raises(DataError, match=r"unknown task 'squad'.*agnews.*BoolQA"):
        get_task("squad")


def test_resolve_order_forms(tmp_path):
    assert resolve_order(4) == list(ORDERS[4])
    assert resolve_order(" 2 ") == list(ORDERS[2])
    assert resolve_order("ag, sst2,mnli") == ["agnews", "SST-2", "MNLI"]
    assert resolve_order("cb") == ["CB"]
    file = tmp_path / "my_order.txt"
    file.write_text("# my sequence\nmnli\ncb, wic  # two on a line\n\nag\n")
    assert resolve_order(str(file)) == ["MNLI", "CB", "WiC", "agnews"]
    assert resolve_order(file) == ["MNLI", "CB", "WiC", "agnews"]


@pytest.mark.parametrize("spec, message", [
    (7, "unknown order 7"),
    ("0", "unknown order 0"),
    ("ag,foo", "unknown task 'foo'"),
    ("ag,ag", "lists task 'agnews' twice"),
    ("", "empty order"),
    ("orders/none.txt", "order file orders/none.txt not found"),
])
def test_resolve_order_errors(spec, message):
    with pytest.raises(DataError, match=message):
        resolve_order(spec)


def test_order_file_with_unknown_task_names_the_file(tmp_path):
    file = tmp_path / "bad.txt"
    file.write_text("mnli\nsquad\n")
    with pytest.raises(DataError, match=rf"order file {file}: unknown task 'squad'"):
        resolve_order(str(file))
