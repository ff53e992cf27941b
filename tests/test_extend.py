"""`jumplora run --continue-from RUN --order +TASK,...`: a finished run extended with further tasks equals
the uninterrupted run of the full order, and the run extended is never written."""

import json
import math
from pathlib import Path

import pytest
import yaml

from jumplora.cli import main
from jumplora.config import RunConfig
from jumplora.extend import extend_run, extension_config
from jumplora.models import load_model
from jumplora.rundir import RunWarning, load_run
from jumplora.testing import save_tiny, tiny_llama
from jumplora.train import run_continual
from rundirs import write_run
from tinyruns import DATA

FIRST = "cb,copa,sst-2,wic"
ADDED = "rte,qqp"
# losses.jsonl of the extension and of the uninterrupted run: the same steps from the same weights and
# seeds; equality is expected, a float32 rounding of the restored weights is what this would allow
LOSS_TOLERANCE = 1e-6
# what differs between two runs of the same work: the clock and the process's memory
UNTIMED = ("wall_time_s", "peak_memory_mb", "cpu_time_s")


def tiny_config(tmp_path: Path, model_dir: Path, order: str, out: str, **overrides) -> RunConfig:
    values = dict(
        method="jumplora+ella", order=order, data_dir=str(DATA), seed=42, model=str(model_dir), train_per_class=4,
        val_per_class=2, test_per_class=2, max_input_tokens=320, batch_size=4, micro_batch_size=2,
        learning_rate=5e-3, eval_batch_size=8, progress=False, output_dir=str(tmp_path / out), ella_lambda="100",
    )
    return RunConfig(**{**values, **overrides})


def files_of(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def untimed(value):
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in UNTIMED}
    return value


def same_matrix(a, b) -> bool:
    return len(a) == len(b) and all(
        len(r) == len(s) and all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(r, s))
        for r, s in zip(a, b))


@pytest.mark.parametrize("method, options", [
    ("jumplora+ella", {}),  # sparse updates, ELLA's W_past carried over
    ("ewc", {"eval_scope": "all", "eval_mode": "both"}),  # low-rank updates, EWC's Fisher; every cell evaluated
])
def test_an_extension_equals_the_uninterrupted_run(tmp_path, method, options):
    model_dir = save_tiny(tiny_llama(seed=0), tmp_path / "tiny")
    full = run_continual(tiny_config(tmp_path, model_dir, f"{FIRST},{ADDED}", "full", method=method, **options),
                         loaded=load_model(model_dir, progress=False))
    part = run_continual(tiny_config(tmp_path, model_dir, FIRST, "part", method=method, **options),
                         loaded=load_model(model_dir, progress=False))
    before = files_of(part.run_dir)

    extended = extend_run(part.run_dir, f"+{ADDED}", loaded=load_model(model_dir, progress=False))

    assert files_of(part.run_dir) == before  # the run extended is only read
    assert extended.run_dir == tmp_path / "part+RTE+QQP"
    expected = [list(row) for row in full.accuracy_matrix]
    if options.get("eval_scope") == "all":
        # the source never evaluated its models on tasks it did not have: those cells stay empty
        for row in range(4):
            expected[row][4:] = [math.nan, math.nan]
    assert same_matrix(extended.accuracy_matrix, expected)
    assert untimed(extended.metrics) == untimed(full.metrics)
    ext, ref = load_run(extended.run_dir), load_run(full.run_dir)
    assert ext.finished and ext.tasks == ref.tasks == ["CB", "COPA", "SST-2", "WiC", "RTE", "QQP"]
    for a, b in zip(ext.stages, ref.stages):
        zeroed = dict.fromkeys(UNTIMED, 0)
        mine, theirs = {**a.record.to_json(), **zeroed}, {**b.record.to_json(), **zeroed}
        if options.get("eval_scope") == "all" and a.index < 4:  # the empty cells above, per test example too
            for key in ("accuracy", "accuracy_labelled", "correct", "accuracy_rank"):
                theirs[key] = {task: v for task, v in theirs[key].items() if task not in ("RTE", "QQP")}
        assert mine == theirs
        assert a.update_path.read_bytes() == b.update_path.read_bytes()
    ext_losses, ref_losses = ext.losses(), ref.losses()
    assert list(ext_losses) == list(ref_losses)
    for stage, lines in ref_losses.items():
        assert len(ext_losses[stage]) == len(lines)
        for mine, theirs in zip(ext_losses[stage], lines):
            assert mine.keys() == theirs.keys()
            for key, value in theirs.items():
                if isinstance(value, float):
                    assert mine[key] == pytest.approx(value, abs=LOSS_TOLERANCE, rel=0), key
                else:
                    assert mine[key] == value, key
    config = yaml.safe_load((extended.run_dir / "config.yaml").read_text())
    assert config["order"] == f"{FIRST},{ADDED}" and config["method"] == method  # as the uninterrupted run's
    assert config["continue_from"] == str(part.run_dir.resolve())
    assert json.loads((extended.run_dir / "data.json").read_text())["tasks"].keys() == \
        json.loads((full.run_dir / "data.json").read_text())["tasks"].keys()

    # a finished extension is read-only, as any run: the same call changes nothing
    done = files_of(extended.run_dir)
    again = extend_run(part.run_dir, f"+{ADDED}")
    assert again.already_finished and files_of(extended.run_dir) == done


def test_an_interrupted_extension_resumes(tmp_path, monkeypatch):
    model_dir = save_tiny(tiny_llama(seed=0), tmp_path / "tiny")
    part = run_continual(tiny_config(tmp_path, model_dir, FIRST, "part"), loaded=load_model(model_dir, progress=False))
    full = run_continual(tiny_config(tmp_path, model_dir, f"{FIRST},{ADDED}", "full"),
                         loaded=load_model(model_dir, progress=False))
    import jumplora.train

    calls = {"n": 0}
    real = jumplora.train.train_task

    def killed_in_the_second_added_task(ctx, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(ctx, *args)

    monkeypatch.setattr(jumplora.train, "train_task", killed_in_the_second_added_task)
    with pytest.raises(KeyboardInterrupt):
        extend_run(part.run_dir, f"+{ADDED}", output_dir=tmp_path / "ext", loaded=load_model(model_dir, progress=False))
    with pytest.warns(RunWarning, match="run unfinished"):
        assert load_run(tmp_path / "ext").completed == 5
    monkeypatch.setattr(jumplora.train, "train_task", real)
    # the same command again (here from the command line, the model loaded from config.yaml) resumes
    assert main(["run", "--continue-from", str(part.run_dir), "--order", f"+{ADDED}",
                 "--output-dir", str(tmp_path / "ext")]) == 0
    resumed = load_run(tmp_path / "ext")
    assert resumed.finished and resumed.completed == 6
    assert same_matrix(resumed.accuracy.tolist(), load_run(full.run_dir).accuracy.tolist())
    assert untimed(resumed.metrics) == untimed(load_run(full.run_dir).metrics)


# -- refusals: one line each, nothing written ------------------------------------------------------------

@pytest.fixture
def finished(tmp_path):
    """A finished 3-task run (written by the run directory's writer, updates and method states kept)."""
    from jumplora.updates import TaskUpdate

    root = write_run(tmp_path / "src", method="jumplora+ella", order="cb,copa,wic", tasks=("CB", "COPA", "WiC"),
                     data_dir=str(DATA), ella_lambda="100", updates=[TaskUpdate(task=t) for t in ("CB", "COPA", "WiC")])
    return root


def refusal(capsys, *argv) -> str:
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["--seed", "43"], "--seed 43 differs from"),
    (["--method", "inclora"], "--method 'inclora' differs from"),
    (["--learning-rate", "1e-2"], "--learning-rate 0.01 differs from"),
    (["--ella-lambda", "0,5,100,100"], "--ella-lambda '0,5,100,100' gives the tasks of"),
])
def test_a_changed_option_is_refused_naming_it(finished, tmp_path, capsys, argv, message):
    before = files_of(finished)
    err = refusal(capsys, "--continue-from", str(finished), "--order", "+rte", *argv)
    assert message in err and str(finished) in err
    assert files_of(finished) == before and not (tmp_path / "src+RTE").exists()


def test_new_lambdas_for_the_added_tasks_are_accepted(finished):
    config = extension_config(finished, {"order": "+rte,qqp", "ella_lambda": "0,100,100,7,8"})
    assert config.task_list == ["CB", "COPA", "WiC", "RTE", "QQP"] and config.ella_lambda == "0,100,100,7,8"
    assert extension_config(finished, {"order": "CB,COPA,WiC,RTE"}).task_list[-1] == "RTE"  # the full order


@pytest.mark.parametrize("order, message", [
    ("+copa", "task 'COPA' is already in"),
    ("+", "adds no task"),
    ("cb,wic,copa,rte", "does not begin with"),
    ("cb,copa,wic", "adds no task"),
])
def test_an_order_that_adds_nothing_new_is_refused(finished, capsys, order, message):
    assert message in refusal(capsys, "--continue-from", str(finished), "--order", order)


def test_an_unfinished_run_or_a_non_run_is_refused(tmp_path, capsys):
    unfinished = write_run(tmp_path / "half", order="cb,copa,wic", tasks=("CB", "COPA", "WiC"), completed=2,
                           finished=False)
    assert "not finished (2 of 3 tasks done)" in refusal(capsys, "--continue-from", str(unfinished), "--order", "+rte")
    assert "is not a run directory" in refusal(capsys, "--continue-from", str(tmp_path), "--order", "+rte")


def test_a_deleted_update_is_refused(tmp_path, capsys):
    source = write_run(tmp_path / "src", order="cb,copa", tasks=("CB", "COPA"))  # updates/ deleted, as the study does
    assert "the update of task 'CB' was deleted" in refusal(capsys, "--continue-from", str(source), "--order", "+rte")


def test_an_occupied_output_dir_is_refused_unless_it_extends_the_same_source(finished, tmp_path, capsys):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    err = refusal(capsys, "--continue-from", str(finished), "--order", "+rte", "--output-dir", str(occupied))
    assert "exists and is not empty" in err and (occupied / "notes.txt").read_text() == "mine"
    other = write_run(tmp_path / "other", order="cb,copa,wic", tasks=("CB", "COPA", "WiC"))
    before = files_of(other)
    err = refusal(capsys, "--continue-from", str(finished), "--order", "+rte", "--output-dir", str(other))
    assert "is not an extension of" in err and files_of(other) == before
    err = refusal(capsys, "--continue-from", str(finished), "--order", "+rte", "--output-dir", str(finished / "x"))
    assert "is inside" in err


def test_an_extension_of_order_paper_lambdas_asks_for_lambdas(tmp_path, capsys):
    source = write_run(tmp_path / "src", method="ella", order=1, tasks=("dbpedia", "amazon", "yahoo", "agnews"))
    err = refusal(capsys, "--continue-from", str(source), "--order", "+yelp")
    assert "used --ella-lambda paper" in err
