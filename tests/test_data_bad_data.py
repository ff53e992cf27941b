"""Each kind of bad data gives a one-line message naming the file, task, record or count."""

from __future__ import annotations

import json
import logging

import pytest

from jumplora.data import DataProtocol, load_task, resolve_data_dir
from jumplora.errors import DataError

GOOD = [{"sentence": f"sentence 1: p{i}\nsentence 2: h{i}",
         "label": ("entailment", "contradiction", "neutral")[i % 3]} for i in range(30)]
CB_LABELS = ["entailment", "contradiction", "neutral"]


def _cb_folder(root, train=GOOD, test=GOOD, labels=CB_LABELS):
    """Write a tiny CB task under root/NLI/CB; a value of None leaves that file out; a str is
    written verbatim."""
    folder = root / "NLI" / "CB"
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (("train", train), ("test", test), ("labels", labels)):
        if content is not None:
            text = content if isinstance(content, str) else json.dumps(content)
            (folder / f"{name}.json").write_text(text)
    return folder


def _one_line_error(call) -> str:
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_data_dir_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("JUMPLORA_DATA", raising=False)
    assert "pass --data-dir or set $JUMPLORA_DATA" in _one_line_error(lambda: resolve_data_dir(None))
    missing = tmp_path / "nowhere"
    assert f"data folder {missing} not found" in _one_line_error(lambda: resolve_data_dir(str(missing)))
    monkeypatch.setenv("JUMPLORA_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path


def test_task_folder_and_file_missing(tmp_path):
    message = _one_line_error(lambda: load_task("cb", tmp_path))
    assert f"task CB: folder {tmp_path / 'NLI' / 'CB'} not found" in message
    folder = _cb_folder(tmp_path, test=None)
    assert f"missing file {folder / 'test.json'}" in _one_line_error(lambda: load_task("cb", tmp_path))


def test_malformed_json_names_file_and_position(tmp_path):
    folder = _cb_folder(tmp_path, train='[\n {"label": "neutral", "sentence": "x"},\n {"label": }\n]')
    message = _one_line_error(lambda: load_task("cb", tmp_path))
    assert message.startswith(f"{folder / 'train.json'}: malformed JSON at line 3 column 12")


@pytest.mark.parametrize("records, expected", [
    ({"label": "neutral"}, "expected a JSON array of records, got dict"),
    ([{"label": "neutral", "sentence": "a"}, ["neutral", "b"]], "record 1 is a list, not an object"),
    ([{"label": "neutral", "sentence": "a"}, {"label": "neutral"}], "record 1 has no 'sentence' field"),
    ([{"sentence": "a"}], "record 0 has no 'label' field"),
    ([{"label": 1, "sentence": "a"}], "record 0 field 'label' has type int, not str"),
])
def test_bad_records_name_file_and_index(tmp_path, records, expected):
    folder = _cb_folder(tmp_path, test=records)
    message = _one_line_error(lambda: load_task("cb", tmp_path))
    assert message == f"{folder / 'test.json'}: {expected}"


def test_labels_outside_the_set_are_dropped_with_a_warning(tmp_path, caplog):
    folder = _cb_folder(tmp_path, test=GOOD + [{"sentence": "?", "label": "-"}] * 3)
    with caplog.at_level(logging.WARNING, logger="jumplora.data"):
        data = load_task("cb", tmp_path)
    assert data.dropped == {"train": 0, "test": 3}
    assert len(data.test) == 30
    [record] = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert record.getMessage().startswith(
        f"task CB: dropped 3 of 33 records of {folder / 'test.json'} with labels outside")


def test_task_empty_after_sampling(tmp_path):
    folder = _cb_folder(tmp_path, train=[{"sentence": "?", "label": "maybe"}])
    message = _one_line_error(lambda: load_task("cb", tmp_path))
    assert message == (f"task CB: train split is empty after sampling "
                       f"(1 records in {folder / 'train.json'}, 1 dropped)")
    _cb_folder(tmp_path, train=GOOD)
    message = _one_line_error(lambda: load_task("cb", tmp_path, DataProtocol(test_per_class=0)))
    assert message.startswith("task CB: test split is empty after sampling")


def test_labels_file_problems(tmp_path, caplog):
    folder = _cb_folder(tmp_path, labels=["entailment", "entailment"])
    assert f"{folder / 'labels.json'}: label words repeat" in _one_line_error(
        lambda: load_task("cb", tmp_path))
    _cb_folder(tmp_path, labels={"a": 1})
    assert "expected a non-empty JSON array of label words" in _one_line_error(
        lambda: load_task("cb", tmp_path))
    # a label set that differs from the registry: the file wins, with a warning
    _cb_folder(tmp_path, labels=["neutral", "entailment", "contradiction"])
    with caplog.at_level(logging.WARNING, logger="jumplora.data"):
        data = load_task("cb", tmp_path)
    assert data.labels == ("neutral", "entailment", "contradiction")
    assert any(f"task CB: {folder / 'labels.json'} lists labels" in r.getMessage()
               for r in caplog.records)


def test_instruction_config_on_disk_is_authoritative(tmp_path):
    _cb_folder(tmp_path)
    (tmp_path / "instruction_config.json").write_text(
        json.dumps({"NLI": [{"instruction_type": "zero-shot", "instruction": "Decide."}]}))
    assert load_task("cb", tmp_path).instruction == "Decide.\n"
    (tmp_path / "instruction_config.json").write_text('{"NLI": [')
    assert "instruction_config.json: malformed JSON at line 1" in _one_line_error(
        lambda: load_task("cb", tmp_path))


def test_unknown_task_name():
    assert "unknown task 'squad'; valid tasks: dbpedia" in _one_line_error(
        lambda: load_task("squad", "."))


def test_files_are_read_once_until_they_change(tmp_path):
    from jumplora.data import read_records

    folder = _cb_folder(tmp_path)
    first = read_records(folder / "train.json")
    assert read_records(folder / "train.json") is first
    (folder / "train.json").write_text(json.dumps(GOOD[:3]))
    assert len(read_records(folder / "train.json")) == 3
