"""The sampling protocol (§4.1) on the real benchmark files, seeding, and the `datasets` source."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from jumplora.data import DataProtocol, Example, HFSource, load_hf_split, load_task
from jumplora.errors import ConfigError, DataError

# never let a test reach the Hugging Face hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _file_counts(path) -> Counter:
    return Counter(record["label"] for record in json.loads(path.read_text()))


def _pairs(examples) -> Counter:
    return Counter((e.sentence, e.label) for e in examples)


@pytest.mark.parametrize("task, folder", [("agnews", "TC/agnews"), ("CB", "NLI/CB"),
                                          ("MNLI", "NLI/MNLI")])
def test_caps_and_stratified_split(cl_benchmark_dir, task, folder):
    data = load_task(task, cl_benchmark_dir, DataProtocol())
    train_file = _file_counts(cl_benchmark_dir / folder / "train.json")
    test_file = _file_counts(cl_benchmark_dir / folder / "test.json")
    train, val, test = (Counter(e.label for e in split)
                        for split in (data.train, data.validation, data.test))
    for label in data.labels:
        pool = min(train_file[label], 1000)
        assert val[label] == int(pool * 0.2 + 0.5), label
        assert train[label] == pool - val[label], label
        assert test[label] == min(test_file[label], 500), label
    assert set(train) | set(val) | set(test) <= set(data.labels)
    # samples come from the right file, and train and validation do not share records
    assert not (_pairs(data.train) + _pairs(data.validation)) - _pairs(
        Example(**r) for r in json.loads((cl_benchmark_dir / folder / "train.json").read_text()))
    assert not _pairs(data.test) - _pairs(
        Example(**r) for r in json.loads((cl_benchmark_dir / folder / "test.json").read_text()))
    assert data.sources["train"].endswith(f"{folder}/train.json")
    assert data.sources["test"].endswith(f"{folder}/test.json")


def test_mnli_drops_unlabelled_test_rows(cl_benchmark_dir):
    data = load_task("mnli", cl_benchmark_dir)
    assert data.dropped == {"train": 0, "test": 131}
    assert len(data.test) == 1500


def test_small_classes_keep_everything(cl_benchmark_dir):
    data = load_task("CB", cl_benchmark_dir)
    assert data.label_counts("test") == {"entailment": 23, "contradiction": 28, "neutral": 5}
    assert data.label_counts("validation")["neutral"] == 3
    assert data.label_counts("train")["neutral"] == 13


def test_same_seed_same_samples_and_different_seed_differs(cl_benchmark_dir):
    a = load_task("agnews", cl_benchmark_dir, DataProtocol(seed=1))
    b = load_task("agnews", cl_benchmark_dir, DataProtocol(seed=1))
    c = load_task("agnews", cl_benchmark_dir, DataProtocol(seed=2))
    assert (a.train, a.validation, a.test) == (b.train, b.validation, b.test)
    assert a.train != c.train and a.test != c.test
    assert set(a.validation) != set(c.validation)


def test_scale_knobs_take_a_prefix_and_keep_train_independent_of_test(cl_benchmark_dir):
    full = load_task("CB", cl_benchmark_dir)
    small = load_task("CB", cl_benchmark_dir, DataProtocol(train_per_class=10, val_per_class=2,
                                                           test_per_class=4))
    assert set(small.label_counts("train").values()) == {10}
    assert set(small.label_counts("validation").values()) == {2}
    assert set(small.label_counts("test").values()) == {4}
    assert set(small.train) <= set(full.train) and set(small.validation) <= set(full.validation)
    other_test_cap = load_task("CB", cl_benchmark_dir, DataProtocol(test_per_class=3))
    assert other_test_cap.train == full.train


def test_protocol_to_dict_and_validation():
    protocol = DataProtocol(seed=3, train_per_class=8)
    assert protocol.to_dict() == {
        "seed": 3, "test_per_class": 500, "pool_per_class": 1000, "val_fraction": 0.2,
        "train_per_class": 8, "val_per_class": None, "max_input_tokens": None,
        "split": "protocol", "unlabelled_test": "drop",
    }
    with pytest.raises(ConfigError, match="train_per_class"):
        DataProtocol(train_per_class=-1)
    with pytest.raises(ConfigError, match="val_fraction"):
        DataProtocol(val_fraction=1.0)
    with pytest.raises(ConfigError, match="split must be one of auto, protocol"):
        DataProtocol(split="dev")
    with pytest.raises(ConfigError, match="unlabelled_test must be one of count-wrong, drop"):
        DataProtocol(unlabelled_test="keep")


# --------------------------------------------------------------------------- datasets source

CB_NAMES = {0: "entailment", 1: "contradiction", 2: "neutral"}


def _cb_rows(n_per_class: int = 12) -> list[dict]:
    rows = [{"sentence": f"sentence 1: s{i}\nsentence 2: h{i}", "label": i % 3}
            for i in range(3 * n_per_class)]
    return rows + [{"sentence": "unlabelled", "label": -1}]


def _write_folder(root, task_folder: str, train: list[dict], test: list[dict], labels):
    folder = root / task_folder
    folder.mkdir(parents=True)
    (folder / "train.json").write_text(json.dumps(train))
    (folder / "test.json").write_text(json.dumps(test))
    (folder / "labels.json").write_text(json.dumps(labels))


def test_hf_source_matches_folder_source(tmp_path):
    datasets = pytest.importorskip("datasets")
    train_rows, test_rows = _cb_rows(12), _cb_rows(4)
    source = HFSource(
        {"train": datasets.Dataset.from_list(train_rows),
         "test": datasets.Dataset.from_list(test_rows)},
        CB_NAMES,
    )
    from_hf = load_task("cb", source=source)

    as_words = lambda rows: [{"sentence": r["sentence"], "label": CB_NAMES.get(r["label"], "-")}
                             for r in rows]
    _write_folder(tmp_path, "NLI/CB", as_words(train_rows), as_words(test_rows),
                  ["entailment", "contradiction", "neutral"])
    from_folder = load_task("CB", tmp_path)

    assert from_hf.dropped == from_folder.dropped == {"train": 1, "test": 1}
    assert (from_hf.train, from_hf.validation, from_hf.test) == (
        from_folder.train, from_folder.validation, from_folder.test)
    assert from_hf.instruction == from_folder.instruction


def test_hf_source_from_local_json_file_with_string_labels(tmp_path):
    pytest.importorskip("datasets")
    rows = [{"text": f"review {i}", "stars": "pos" if i % 2 else "neg"} for i in range(20)]
    for split in ("train", "test"):
        (tmp_path / f"{split}.json").write_text("\n".join(json.dumps(r) for r in rows))
    source = HFSource.from_files(
        {"train": tmp_path / "train.json", "test": tmp_path / "test.json"},
        {"pos": "Good", "neg": "Bad"},
        text_column="text", label_column="stars", cache_dir=tmp_path / "cache",
    )
    data = load_task("sst-2", source=source)
    assert data.label_counts("test") == {"Good": 10, "Bad": 10}
    assert data.label_counts("train") == {"Good": 8, "Bad": 8}
    assert data.sources["test"] == str(tmp_path / "test.json")


def test_hf_class_label_names_and_bad_map():
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["False", "True"])})
    ds = datasets.Dataset.from_list([{"sentence": "a", "label": 1}, {"sentence": "b", "label": 0}],
                                    features=features)
    assert load_hf_split(ds) == [Example("a", "True"), Example("b", "False")]
    source = HFSource({"train": ds, "test": ds}, {0: "no", 1: "True"})
    with pytest.raises(DataError, match=r"task QQP: label_map gives \['no'\]"):
        load_task("qqp", source=source)
    with pytest.raises(DataError, match="datasets:QQP/train: row 0 has no 'text' column"):
        load_task("qqp", source=HFSource({"train": ds, "test": ds}, text_column="text"))
