"""`jumplora forget`: a task's stored update subtracted from the final model, every task evaluated again."""

import json

import pytest
import torch

from jumplora.cli import main
from jumplora.errors import UserError
from jumplora.export import model_after, stored_update
from jumplora.forget import forget_task, model_without
from jumplora.rundir import load_removal, load_run
from tinyruns import BUILD, logits, tiny_run

# subtracting the float32 values that were added gives the base weights back up to float32 rounding
# (x + d − d is x to within an ulp of |x| + |d|): weights to within this, absolutely
WEIGHT_TOLERANCE = 1e-6
OUTPUT_TOLERANCE = 1e-5  # logits of the model rebuilt after forget + re-apply


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_forgetting_the_only_task_restores_the_base_weights(tmp_path, kind):
    run_dir, after, _ = tiny_run(tmp_path, kind, order="cb")
    base = BUILD[kind](seed=0).model.state_dict()
    trained = after["CB"]
    assert any(not torch.equal(trained[k], base[k]) for k in base)
    forgotten = model_without(run_dir, "CB").loaded.model.state_dict()
    for key, value in base.items():
        assert torch.allclose(forgotten[key], value, atol=WEIGHT_TOLERANCE, rtol=0), key


def test_forgetting_then_reapplying_gives_the_same_outputs(tmp_path):
    run_dir, after, _ = tiny_run(tmp_path, "causal")
    run = load_run(run_dir)
    rebuilt = model_without(run, "CB")
    model = rebuilt.loaded.model
    assert rebuilt.applied == [1]
    final = model_after(run).loaded.model
    assert not torch.allclose(logits(model, "causal"), logits(final, "causal"), atol=OUTPUT_TOLERANCE)
    stored_update(run, 0).apply(model)
    assert torch.allclose(logits(model, "causal"), logits(final, "causal"), atol=OUTPUT_TOLERANCE, rtol=0)


def test_forget_writes_a_removal_beside_the_run_and_leaves_the_run_alone(tmp_path, capsys):
    run_dir, _, _ = tiny_run(tmp_path, "causal")
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert main(["forget", str(run_dir), "--task", "CB"]) == 0
    out = capsys.readouterr().out
    assert "without CB's update" in out and "change" in out
    removal = load_removal(run_dir.parent / f"{run_dir.name}-forget-CB")
    assert removal.removed == "CB" and removal.tasks == ["CB", "COPA"] and removal.method == "jumplora"
    assert removal.source_run == str(run_dir.resolve())
    assert set(removal.accuracy) == {"CB", "COPA"}
    assert removal.source_accuracy == load_run(run_dir).stages[-1].record.accuracy
    assert all(0 <= v <= 100 for v in removal.accuracy.values())
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before  # the source run is only read

    # refused, one line each, nothing written over
    assert main(["forget", str(run_dir), "--task", "CB"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["forget", str(run_dir), "--task", "WiC", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no task 'WiC'" in err and err.count("\n") == 1 and not (tmp_path / "x").exists()


def test_forgetting_the_original_weights_reproduces_the_runs_accuracy(tmp_path, monkeypatch):
    """Nothing subtracted (a zero update), the evaluation gives the run's own final row: the same protocol."""
    run_dir, _, _ = tiny_run(tmp_path, "causal")
    import jumplora.updates

    monkeypatch.setattr(jumplora.updates.TaskUpdate, "remove_from", lambda self, model: None)
    removal = forget_task(run_dir, "CB", tmp_path / "nothing-removed")
    for task, value in removal.source_accuracy.items():
        assert removal.accuracy[task] == pytest.approx(value, abs=1e-9)
    assert json.loads((tmp_path / "nothing-removed" / "forget.json").read_text())["removed"] == "CB"


def test_a_single_run_has_nothing_to_forget(tmp_path):
    run_dir, _, _ = tiny_run(tmp_path, "causal", method="single", order="cb")
    with pytest.raises(UserError, match="keeps no merged model"):
        forget_task(run_dir, "CB", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_tabulates_leave_one_task_out_jumplora_beside_its_base(tmp_path, capsys):
    from jumplora.rundir import Removal, write_removal

    tasks = ["dbpedia", "amazon", "yahoo"]
    final = {"dbpedia": 90.0, "amazon": 50.0, "yahoo": 70.0}
    # removing amazon: JumpLoRA's other tasks move by -1 and +1 (seed 42), -2 and 0 (seed 43); IncLoRA's by -6, -4
    cases = [("jumplora", 42, {"dbpedia": 89.0, "amazon": 30.0, "yahoo": 71.0}),
             ("jumplora", 43, {"dbpedia": 88.0, "amazon": 32.0, "yahoo": 70.0}),
             ("inclora", 42, {"dbpedia": 84.0, "amazon": 40.0, "yahoo": 66.0})]
    paths = []
    for method, seed, accuracy in cases:
        out = tmp_path / f"{method}-{seed}-forget-amazon"
        write_removal(out, Removal(source_run=f"/runs/{method}-{seed}", method=method, order="1", seed=seed,
                                   removed="amazon", tasks=tasks, accuracy=accuracy, source_accuracy=final,
                                   base_model="t5-large"))
        paths.append(str(out))
    assert main(["report", *paths, "--out", str(tmp_path / "report")]) == 0
    markdown = capsys.readouterr().out
    assert "## Leave-one-task-out" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| Order 1 | amazon"))
    cells = [c.strip() for c in row.split(" | ")]
    assert "42, 43" in cells[3] and cells[3].endswith("42")
    assert cells[4] == "-19.00 \\| -10.00"  # removed task: mean of -20, -18 | -10
    assert cells[5] == "-0.50 \\| -5.00"  # other tasks: mean of (0, -1) | -5
    assert "dbpedia -1.50, yahoo +0.50" in cells[6] and "dbpedia -6.00, yahoo -4.00" in cells[6]
    written = (tmp_path / "report" / "leave_one_out.csv").read_text().splitlines()
    assert written[0].startswith("order,removed,method") and len(written) == 1 + 4


def test_forget_refuses_data_that_changed_since_the_run(tmp_path):
    from jumplora.errors import ConfigError
    from jumplora.rundir.removal import check_same_data

    run_dir, _, _ = tiny_run(tmp_path, "causal", order="cb")
    summary = json.loads((run_dir / "data.json").read_text())
    check_same_data(run_dir, summary)  # the same files: fine
    name = next(iter(summary["tasks"]["CB"]["files"]))
    summary["tasks"]["CB"]["files"][name] = "0" * 64
    with pytest.raises(ConfigError, match=f"CB: {name} changed since the run read them"):
        check_same_data(run_dir, summary)
