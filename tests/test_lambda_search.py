"""ELLA's λ per task from the paper's Table 8, and chosen by validation accuracy (`--ella-lambda search`).

The search runs on a tiny random Llama whose evaluation is given a fingerprint of the weights as its
accuracy (a tiny random model scores the same everywhere), so that candidates differ and the one kept
is visibly the best; which split each evaluation read is recorded to show that the test split is
never evaluated before the λ is chosen.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import jumplora.train as train
from jumplora.analysis.report import _lambda_text, build_report
from jumplora.config import RunConfig
from jumplora.ella_lambdas import PAPER_GRID, PAPER_LAMBDAS, TABLE8_LAMBDAS, lambdas_for, parse_grid
from jumplora.errors import ConfigError, RunDirectoryError
from jumplora.methods.ella import ELLA
from jumplora.rundir import load_run
from jumplora.rundir.lambda_search import Candidate, LambdaSearch
from jumplora.testing import tiny_llama
from jumplora.updates import ModuleUpdate, TaskUpdate
from test_reliability import Killed, base_args, fingerprint_accuracy, refused
from test_runner import tiny_config

GRID = parse_grid(PAPER_GRID)
SEARCH = dict(method="jumplora+ella", ella_lambda="search", train_per_class=4, test_per_class=1,
              max_steps_per_task=3, eval_mode="rank")


# -- Table 8 -------------------------------------------------------------------------------------------------
def test_paper_table8_is_the_grid_search_for_the_global_threshold_on_long_sequences_and_table7_elsewhere():
    for order in (4, 5, 6):
        for penalty in ("sparse", "interp"):
            grid_row = TABLE8_LAMBDAS[("global", penalty, order)]
            # a searched row: the first task's λ is 0, every other one a value of the paper's search range
            assert len(grid_row) == 15 and grid_row[0] == 0.0 and set(grid_row[1:]) <= set(GRID)
            assert grid_row != PAPER_LAMBDAS[order]
            assert TABLE8_LAMBDAS[("local", penalty, order)] == PAPER_LAMBDAS[order]  # "default" rows
    for order in (1, 2, 3):
        assert all(TABLE8_LAMBDAS[(t, p, order)] == PAPER_LAMBDAS[order]
                   for t in ("global", "local") for p in ("sparse", "interp"))
    # spot checks against the paper's text: order 6 sparse begins 0, 10^1, 10^0, 10^5, 10^0; order 5 interp
    # has 10^0 at its third and fourth tasks
    assert TABLE8_LAMBDAS[("global", "sparse", 6)][:5] == [0.0, 10.0, 1.0, 1e5, 1.0]
    assert TABLE8_LAMBDAS[("global", "interp", 5)][2:5] == [100.0, 1.0, 1.0]


def test_paper_table8_follows_the_run_threshold_and_penalty():
    def table8(**options):
        return RunConfig(method="jumplora+ella", order="4", ella_lambda="paper-table8", **options).ella_lambdas()

    assert table8(threshold_mode="global", ella_penalty="sparse") == TABLE8_LAMBDAS[("global", "sparse", 4)]
    assert table8(threshold_mode="global", ella_penalty="interp") == TABLE8_LAMBDAS[("global", "interp", 4)]
    # `--threshold table1` is local for JumpLoRA+ELLA on the Long Sequence orders: Table 8's default row
    assert table8(threshold_mode="table1") == lambdas_for("paper", "4", 15)
    with pytest.raises(ConfigError, match="JumpLoRA\\+ELLA only"):
        RunConfig(method="ella", order="4", ella_lambda="paper-table8")
    with pytest.raises(ConfigError, match="orders 1-6"):
        RunConfig(method="jumplora+ella", order="cb,copa", ella_lambda="paper-table8")


@pytest.mark.parametrize("flags, culprit", [
    (["--ella-lambda", "serch"], "ella_lambda"),
    (["--ella-lambda-grid", "1,ten"], "ella_lambda_grid"),
    (["--ella-lambda-grid", "1,1"], "ella_lambda_grid"),
    (["--ella-lambda-grid", "-1"], "ella_lambda_grid"),
    (["--ella-lambda", "search", "--val-per-class", "0"], "val_per_class"),
    (["--ella-lambda", "paper-table8", "--method", "ella"], "paper-table8"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_a_bad_lambda_option_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, flags, culprit):
    args = base_args(tmp_path) + ["--method", "jumplora+ella"] + flags
    assert culprit in refused(tmp_path, monkeypatch, capsys, args)
    assert not (tmp_path / "run").exists()


# -- the search ------------------------------------------------------------------------------------------------
def run_search(config, patch, trained=None):
    """Run `config` with fingerprinted accuracies; `trained` collects (stage, λ) of every pass."""
    patch.setattr(train, "evaluate_task", fingerprint_accuracy(train.evaluate_task))
    if trained is not None:
        before = ELLA.before_task

        def recording(self, ctx):
            before(self, ctx)
            trained.append((ctx.task, self.current_lambda))

        patch.setattr(ELLA, "before_task", recording)
    return train.run_continual(config, loaded=tiny_llama(seed=0))


def read_record(run_dir, stem="01-COPA"):
    return json.loads((run_dir / "lambda_search" / f"{stem}.json").read_text())


def test_the_search_keeps_the_best_candidate_and_evaluates_only_validation_data_until_then(tmp_path, monkeypatch):
    splits = []  # (task, split) of every evaluation, in order
    real_batches = train.make_eval_batches

    def recording(examples, task, *args, **kwargs):
        split = "test" if examples is task.test else "validation" if examples is task.validation else "other"
        splits.append((task.name, split))
        return real_batches(examples, task, *args, **kwargs)

    monkeypatch.setattr(train, "make_eval_batches", recording)
    trained = []
    config = tiny_config(tmp_path, name="search", **SEARCH)
    result = run_search(config, monkeypatch, trained)

    # CB first: no past, so no search (every λ trains the same); COPA: one pass per λ of the grid, in order
    assert trained == [("CB", 0.0)] + [("COPA", value) for value in GRID]
    # before COPA's λ is chosen only validation splits are evaluated (past and current task), then the test splits
    assert splits == [("CB", "test")] + [("CB", "validation"), ("COPA", "validation")] * len(GRID) + [
        ("CB", "test"), ("COPA", "test")]
    assert not (result.run_dir / "lambda_search" / "00-CB.json").exists()

    record = read_record(result.run_dir)
    candidates = record["candidates"]
    assert [c["lambda"] for c in candidates] == GRID and record["complete"] and record["grid"] == GRID
    scores = [c["mean_validation_accuracy"] for c in candidates]
    assert len(set(scores)) > 1  # the candidates differ: keeping the best is not keeping the first
    for c in candidates:
        assert set(c["validation_accuracy"]) == {"CB", "COPA"}
        assert math.isclose(c["mean_validation_accuracy"], sum(c["validation_accuracy"].values()) / 2)
    best = candidates[scores.index(max(scores))]
    assert record["best"] == best["lambda"]
    # the kept candidate's steps are COPA's lines of losses.jsonl; the candidates' updates are gone
    lines = [json.loads(line) for line in (result.run_dir / "losses.jsonl").read_text().splitlines()]
    assert [line for line in lines if line["task"] == "COPA"] == best["losses"]
    assert not (result.run_dir / "lambda_search" / "01-COPA").exists()

    # `jumplora report` shows the search: the λ kept for COPA (none for CB) and every candidate's score
    report = build_report([load_run(result.run_dir)])
    table = next(t for t in report.tables if t.name == "lambda_search")
    [row] = table.rows
    assert row[1] == "COPA" and row[2] == _lambda_text(best["lambda"]) and row[4] == "yes"
    assert row[3].count(":") == len(GRID) and f"**{_lambda_text(best['lambda'])}: " in row[3]
    assert {(r[3], r[6]) for r in table.csv_rows} == {(v, t) for v in GRID for t in ("CB", "COPA")}

    # the sequence continues from the best candidate's model: a run with that λ fixed ends with the same files
    fixed = run_search(tiny_config(tmp_path, name="fixed", **{**SEARCH, "ella_lambda": f"0,{best['lambda']!r}"}),
                       monkeypatch)
    for name in ("updates/01-COPA.safetensors", "accuracy_matrix.csv", "losses.jsonl", "method_state/01.pt"):
        assert (result.run_dir / name).read_bytes() == (fixed.run_dir / name).read_bytes(), name
    assert result.accuracy_matrix == fixed.accuracy_matrix
    assert "lambda_search" not in [t.name for t in build_report([load_run(fixed.run_dir)]).tables]


def kill_after_the_second_record(patch):
    add = LambdaSearch.add

    def adding(self, candidate, update):
        add(self, candidate, update)
        if len(self.candidates()) == 2:
            raise Killed

    patch.setattr(LambdaSearch, "add", adding)


def kill_before_the_third_record(patch):
    """The third candidate trained and evaluated (its update possibly written as the best), its record not."""
    import jumplora.rundir.lambda_search as store

    write = store.atomic_write_json
    calls = []

    def writing(path, value):
        calls.append(path)
        if len(calls) == 3:
            raise Killed
        return write(path, value)

    patch.setattr(store, "atomic_write_json", writing)


@pytest.mark.parametrize("kill", [kill_after_the_second_record, kill_before_the_third_record])
def test_a_killed_search_resumes_at_the_next_untried_candidate_and_ends_as_an_uninterrupted_one(
        tmp_path, monkeypatch, kill):
    with monkeypatch.context() as patch:
        reference = run_search(tiny_config(tmp_path, name="reference", **SEARCH), patch)
    config = tiny_config(tmp_path, name="killed", **SEARCH)
    with monkeypatch.context() as patch:
        kill(patch)
        with pytest.raises(Killed):
            run_search(config, patch)
    assert [c["lambda"] for c in read_record(config.run_dir)["candidates"]] == GRID[:2]

    trained = []
    with monkeypatch.context() as patch:
        resumed = run_search(config, patch, trained)
    # CB was finished: not trained again; COPA's search goes on at its third candidate
    assert trained == [("COPA", value) for value in GRID[2:]]
    assert read_record(resumed.run_dir) == read_record(reference.run_dir)
    for name in ("updates/01-COPA.safetensors", "accuracy_matrix.csv", "losses.jsonl", "method_state/01.pt"):
        assert (resumed.run_dir / name).read_bytes() == (reference.run_dir / name).read_bytes(), name
    assert not (resumed.run_dir / "lambda_search" / "01-COPA").exists()


# -- the record -------------------------------------------------------------------------------------------------
def one_entry_update(value: float) -> TaskUpdate:
    return TaskUpdate("COPA", {"m": ModuleUpdate((2, 2), indices=torch.tensor([1]), values=torch.tensor([value]))})


def candidate(value, accuracy):
    return Candidate(value, {"CB": accuracy, "COPA": accuracy}, [{"task": "COPA", "step": 0, "loss": 1.0}])


def test_the_record_keeps_one_update_the_best_and_prefers_the_earlier_of_equal_scores(tmp_path):
    search = LambdaSearch(tmp_path, 1, "COPA", [1.0, 10.0, 100.0])
    search.add(candidate(1.0, 50.0), one_entry_update(1.0))
    search.add(candidate(10.0, 70.0), one_entry_update(10.0))
    search.add(candidate(100.0, 70.0), one_entry_update(100.0))  # as good as 10: the earlier is kept
    assert search.best().value == 10.0
    assert [p.name for p in search.update_path(10.0).parent.iterdir()] == [search.update_path(10.0).name]
    assert search.best_update().modules["m"].values.tolist() == [10.0]
    # a kill between a new best's update and its record leaves a stray file: read past and removed
    one_entry_update(100.0).save(search.update_path(100.0))
    assert search.best_update().modules["m"].values.tolist() == [10.0]
    assert not search.update_path(100.0).exists()
    with pytest.raises(RunDirectoryError, match="grid"):
        LambdaSearch(tmp_path, 1, "COPA", [1.0, 10.0]).candidates()
    search.path.write_text('{"stage": "COPA", "grid": [1.0, 10.0, 100.0], "candidates": [{"lambda": 1.0}]}')
    with pytest.raises(RunDirectoryError, match="01-COPA.json is damaged"):
        search.candidates()


def test_a_search_that_could_not_finish_is_refused_before_training():
    from types import SimpleNamespace

    from jumplora.distributed import ScaleOut
    from jumplora.errors import ConfigError
    from jumplora.methods.lambda_search import check_search

    config = RunConfig(method="ella", order="cb,copa", ella_lambda="search")
    with_validation = SimpleNamespace(split=lambda name: ["an example"])
    without = SimpleNamespace(split=lambda name: [])
    check_search(config, {"CB": with_validation, "COPA": with_validation}, ScaleOut())
    with pytest.raises(ConfigError, match="task 'COPA' has none; use --split protocol"):
        check_search(config, {"CB": with_validation, "COPA": without}, ScaleOut())
    with pytest.raises(ConfigError, match="runs on one process"):
        check_search(config, {"CB": with_validation}, ScaleOut(rank=0, world=2))
    check_search(RunConfig(method="ella", order="cb,copa", ella_lambda="100"), {"CB": without}, ScaleOut())
