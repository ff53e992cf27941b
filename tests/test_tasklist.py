"""Task lists as orders: the authors' JSON format (their short_order_1.json's fields) and a YAML list of
Hugging Face datasets, run end to end on a tiny model; each bad file is one line naming file, task, field."""

import json
from pathlib import Path

import pytest
import yaml

from jumplora.cli import main
from jumplora.config import RunConfig
from jumplora.data import DataProtocol, load_tasks, resolve_order
from jumplora.errors import ConfigError, DataError
from jumplora.models import load_model
from jumplora.rundir import load_run
from jumplora.testing import save_tiny, tiny_llama
from jumplora.train import run_continual

MOODS = [{"text": f"I feel {'great' if i % 2 else 'awful'} today, number {i}", "label": "happy" if i % 2 else "sad"}
         for i in range(12)]
STARS = [{"review": f"{'loved' if i % 3 else 'hated'} it ({i})", "stars": 5 if i % 3 else 1} for i in range(9)]


def authors_list(folder: Path) -> Path:
    """Two tasks as the authors write them: one with JSON-lines files and max_samples, one with its own
    record keys and numeric labels; paths relative to the list's folder."""
    data = folder / "data"
    data.mkdir(parents=True)
    (data / "moods_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MOODS[:10]))
    (data / "moods_test.json").write_text(json.dumps(MOODS[10:]))
    (data / "stars_train.json").write_text(json.dumps(STARS[:6]))
    (data / "stars_test.json").write_text(json.dumps(STARS[6:]))
    entries = [
        {"task_name": "moods", "train_file": "data/moods_train.jsonl", "validation_file": "data/moods_test.json",
         "instruction": "How does the writer feel? Choose one from the option.\n", "options": ["happy", "sad"],
         "text_key": "text", "label_key": "label", "max_samples": 6},
        {"task_name": "stars", "train_file": "data/stars_train.json", "validation_file": "data/stars_test.json",
         "instruction": "How many stars? Choose one from the option.\n", "options": ["1", "5"],
         "text_key": "review", "label_key": "stars", "max_samples": None, "num_epochs": 1, "output_dir": "ignored"},
    ]
    path = folder / "my_order.json"
    path.write_text(json.dumps(entries, indent=2))
    return path


def tiny_config(tmp_path, order, out="run", **overrides) -> RunConfig:
    model_dir = tmp_path / "tiny"
    if not model_dir.exists():
        save_tiny(tiny_llama(seed=0), model_dir)
    values = dict(method="jumplora", order=str(order), seed=42, model=str(model_dir), max_input_tokens=128,
                  batch_size=2, micro_batch_size=2, learning_rate=5e-3, eval_batch_size=8, progress=False,
                  eval_mode="rank", output_dir=str(tmp_path / out))
    return RunConfig(**{**values, **overrides})


def test_the_authors_format_defines_the_tasks_and_their_files(tmp_path):
    order = authors_list(tmp_path)
    assert resolve_order(str(order)) == ["moods", "stars"]
    data = load_tasks(str(order), None, DataProtocol(seed=42, split="auto"))
    moods, stars = data["moods"], data["stars"]
    assert moods.labels == ("happy", "sad") and moods.instruction.startswith("How does the writer feel?")
    assert [e.sentence for e in moods.train] == [r["text"] for r in MOODS[:6]]  # the first max_samples, in order
    assert [e.label for e in moods.test] == [r["label"] for r in MOODS[10:]] and moods.validation == []
    assert [(e.sentence, e.label) for e in stars.train] == [(r["review"], str(r["stars"])) for r in STARS[:6]]
    assert set(moods.files) == {"data/moods_train.jsonl", "data/moods_test.json", "task-list-entry:moods"}


def test_an_authors_task_list_runs_end_to_end(tmp_path):
    order = authors_list(tmp_path / "list")
    config = tiny_config(tmp_path, order)
    result = run_continual(config, loaded=load_model(config.model, progress=False))
    assert result.tasks == ["moods", "stars"]
    run = load_run(result.run_dir)
    assert run.finished and [s.name for s in run.stages] == ["moods", "stars"]
    assert all(0 <= v <= 100 for v in run.stages[-1].record.accuracy.values())
    recorded = json.loads((result.run_dir / "data.json").read_text())["tasks"]
    assert recorded["moods"]["counts"] == {"train": 6, "validation": 0, "test": 2}
    assert recorded["stars"]["labels"] == ["1", "5"] and "task-list-entry:stars" in recorded["stars"]["files"]
    assert run.losses()["moods"] and len(run.losses()["moods"]) == 3  # 6 examples, batches of 2


def test_a_changed_task_entry_is_refused_on_resume(tmp_path, monkeypatch):
    order = authors_list(tmp_path / "list")
    config = tiny_config(tmp_path, order)
    import jumplora.train

    real = jumplora.train.train_task
    calls = {"n": 0}

    def killed_in_the_second_task(ctx, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(ctx, *args)

    monkeypatch.setattr(jumplora.train, "train_task", killed_in_the_second_task)
    with pytest.raises(KeyboardInterrupt):
        run_continual(config, loaded=load_model(config.model, progress=False))
    entries = json.loads(order.read_text())
    entries[0]["instruction"] = "Something else entirely.\n"
    order.write_text(json.dumps(entries))
    with pytest.raises(ConfigError, match=r"moods: task-list-entry:moods changed"):
        run_continual(tiny_config(tmp_path, order), loaded=load_model(config.model, progress=False))


def _mutated(tmp_path, change) -> Path:
    order = authors_list(tmp_path)
    entries = json.loads(order.read_text())
    change(entries, tmp_path / "data")
    order.write_text(json.dumps(entries))
    return order


def _bad_label(entries, data):
    (data / "moods_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in
                                                    [MOODS[0], MOODS[1], {"text": "meh", "label": "angry"}]))


def _no_text(entries, data):
    (data / "stars_test.json").write_text(json.dumps([{"stars": 5}]))


@pytest.mark.parametrize("change, message", [
    (lambda e, d: e[0].pop("options"), "task 'moods': missing field 'options'"),
    (lambda e, d: e[1].update(label_keys="x"), "task 'stars': unknown field 'label_keys'"),
    (lambda e, d: e[0].update(train_file="data/nope.json"), "task 'moods': field 'train_file': data file"),
    (lambda e, d: e[1].update(task_name="moods"), "task 'moods' appears twice"),
    (lambda e, d: e[0].update(task_name="a+b"), "field 'task_name' must be a name"),
    (lambda e, d: e[0].update(options=["happy", "happy"]), "task 'moods': field 'options' repeats"),
    (lambda e, d: e[0].update(max_samples=0), "task 'moods': field 'max_samples' must be"),
    (_bad_label, "task 'moods': train_file"),
    (_no_text, "task 'stars': validation_file"),
])
def test_a_bad_task_list_is_one_line_naming_file_task_and_field(tmp_path, change, message):
    order = _mutated(tmp_path, change)
    with pytest.raises(DataError) as caught:
        load_tasks(str(order), None, DataProtocol(seed=42, split="auto"))
    text = str(caught.value)
    assert message in text and str(order) in text and "\n" not in text, text
    if change is _bad_label:
        assert "record 2 field 'label' is 'angry', not one of options ['happy', 'sad']" in text
    if change is _no_text:
        assert "record 0 has no field 'review' (text_key)" in text


def test_the_command_line_refuses_a_bad_task_list_in_one_line(tmp_path, capsys):
    order = _mutated(tmp_path, lambda e, d: e[0].pop("instruction"))
    assert main(["run", "--order", str(order), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing field 'instruction'" in err and not (tmp_path / "out").exists()
    assert main(["run", "--order", str(tmp_path / "absent.json")]) == 2
    assert "order file" in capsys.readouterr().err


# -- a YAML list of Hugging Face datasets ---------------------------------------------------------------------
def hf_list(folder: Path) -> Path:
    """Two datasets saved to disk (no hub): one with a ClassLabel column, one mapped by label_map."""
    # the optional [hf] extra, pinned in requirements/cpu.txt (as tests/test_data_protocol.py's HFSource tests)
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["sad", "happy"])})
    rows = {"sentence": [r["text"] for r in MOODS], "label": [1 if r["label"] == "happy" else 0 for r in MOODS]}
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({k: v[:8] for k, v in rows.items()}, features=features),
        "validation": datasets.Dataset.from_dict({k: v[8:] for k, v in rows.items()}, features=features),
    }).save_to_disk(str(folder / "moods_ds"))
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"review": [r["review"] for r in STARS[:6]],
                                             "stars": [r["stars"] for r in STARS[:6]]}),
        "test": datasets.Dataset.from_dict({"review": [r["review"] for r in STARS[6:]],
                                            "stars": [r["stars"] for r in STARS[6:]]}),
    }).save_to_disk(str(folder / "stars_ds"))
    entries = [
        {"task_name": "moods", "dataset": "moods_ds", "test_split": "validation", "text_key": "sentence",
         "instruction": "How does the writer feel?\n", "options": ["happy", "sad"], "max_samples": 4},
        {"task_name": "stars", "dataset": "stars_ds", "text_key": "review", "label_key": "stars",
         "label_map": {1: "bad", 5: "good"}, "instruction": "Was it liked?\n", "options": ["bad", "good"]},
    ]
    path = folder / "hf_order.yaml"
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


def test_a_yaml_list_of_datasets_runs_end_to_end(tmp_path):
    order = hf_list(tmp_path)
    data = load_tasks(str(order), None, DataProtocol(seed=42, split="auto"))
    assert [e.label for e in data["moods"].train] == [r["label"] for r in MOODS[:4]]  # ClassLabel names
    assert [e.label for e in data["stars"].test] == ["good" if r["stars"] == 5 else "bad" for r in STARS[6:]]
    assert any(key.startswith("moods_ds/") for key in data["moods"].files)
    config = tiny_config(tmp_path, order)
    result = run_continual(config, loaded=load_model(config.model, progress=False))
    assert result.tasks == ["moods", "stars"] and load_run(result.run_dir).finished
    counts = json.loads((result.run_dir / "data.json").read_text())["tasks"]["moods"]["counts"]
    assert counts == {"train": 4, "validation": 0, "test": 4}


@pytest.mark.parametrize("change, message", [
    (lambda e: e[0].update(test_split="test"), "task 'moods': field 'test_split': dataset"),
    (lambda e: e[1].update(label_map={1: "bad", 5: "great"}), "task 'stars': field 'label_map' gives 'great'"),
    (lambda e: e[1].pop("label_map"), "task 'stars': dataset"),  # labels '1'/'5' are not options
    (lambda e: e[0].update(dataset="missing_ds"), "task 'moods': field 'dataset': cannot load"),
    (lambda e: e[0].pop("dataset"), "task 'moods': missing field 'dataset'"),
])
def test_a_bad_yaml_list_is_one_line_naming_file_task_and_field(tmp_path, change, message, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # a name that is no folder must not reach for the hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    order = hf_list(tmp_path)
    entries = yaml.safe_load(order.read_text())
    change(entries)
    order.write_text(yaml.safe_dump(entries, sort_keys=False))
    with pytest.raises(DataError) as caught:
        load_tasks(str(order), None, DataProtocol(seed=42, split="auto"))
    text = str(caught.value)
    assert message in text and str(order) in text and "\n" not in text, text


def test_a_task_list_run_extends_with_a_longer_list(tmp_path, capsys):
    from jumplora.extend import extend_run

    order = authors_list(tmp_path / "list")
    first = order.with_name("first.json")
    first.write_text(json.dumps(json.loads(order.read_text())[:1]))
    config = tiny_config(tmp_path, first, out="first")
    part = run_continual(config, loaded=load_model(config.model, progress=False))
    assert main(["run", "--continue-from", str(part.run_dir), "--order", "+stars"]) == 2
    assert "extend it with --order LIST" in capsys.readouterr().err
    extended = extend_run(part.run_dir, str(order), output_dir=tmp_path / "both",
                          loaded=load_model(config.model, progress=False))
    full = run_continual(tiny_config(tmp_path, order, out="full"), loaded=load_model(config.model, progress=False))
    assert extended.tasks == ["moods", "stars"] and extended.accuracy_matrix == full.accuracy_matrix
