"""Reading old run directories as what they were run with, FWT_final from a single run, ELLA's λ conventions.

The old run directories are the committed `results/runs/` (copied): written before the options added
since, before FWT_final, before task records stated their S_start step and their stage.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from jumplora.analysis import load_run
from jumplora.analysis.groups import group_runs
from jumplora.analysis.report import build_report, threshold_movement
from jumplora.cli import main
from jumplora.config import LEGACY_VALUES, RESULT_AFFECTING, VARIANT_KEYS, RunConfig, with_legacy_values
from jumplora.rundir import RunWarning, load_runs
from jumplora.schedule import JumpSchedule
from rundirs import RESULTS, T5_Q, T5_V, committed_run, lowrank_update, write_run

TASKS_ORDER1 = ("dbpedia", "amazon", "yahoo", "agnews")


def today_defaults() -> dict:
    """The options added since the committed runs, at today's defaults (as a new config.yaml holds them)."""
    defaults = RunConfig().to_dict()
    return {key: defaults[key] for key in LEGACY_VALUES}


def as_run_then(saved: dict) -> dict:
    """The options of a committed run as it was run (legacy values included), to start one like it."""
    values = with_legacy_values(saved)
    return {k: v for k, v in values.items() if k in RESULT_AFFECTING and k not in ("method", "order", "seed")}


# -- legacy configurations -------------------------------------------------------------------------------
def test_a_config_without_the_new_options_reads_as_their_legacy_values(tmp_path):
    run = load_run(committed_run("jumplora-order1-seed42", tmp_path))
    added_since = [key for key in LEGACY_VALUES if key not in run.saved_config]
    assert {"prompt_style", "batching", "threshold_grad", "schedule_rounding", "loss_mean"} <= set(added_since)
    for key in added_since:
        assert run.config[key] == LEGACY_VALUES[key]
    assert run.config["model"] == run.saved_config["model"] == "smollm2-135m-instruct"
    # `threshold` was renamed `threshold_mode`: the old name reads as the new one
    assert run.saved_config["threshold"] == "global" and "threshold_mode" not in run.saved_config
    assert run.threshold_mode == "global" and "threshold" not in run.config
    new = load_run(write_run(tmp_path / "new"))
    assert new.config == new.saved_config  # nothing to complete
    assert new.config["prompt_style"] == "authors" and new.config["ella_scale"] == "authors"


def test_new_settings_runs_are_never_averaged_with_old_ones(tmp_path):
    old = [committed_run(f"jumplora-order1-seed{seed}", tmp_path) for seed in (42, 43)]
    settings = as_run_then(load_run(old[0]).saved_config)
    new = [write_run(tmp_path / f"new{seed}", order=1, seed=seed, tasks=TASKS_ORDER1,
                     **{**settings, **today_defaults()}) for seed in (42, 43)]
    # a new run that stores the legacy values explicitly is the same configuration as the old ones
    explicit = write_run(tmp_path / "explicit", order=1, seed=44, tasks=TASKS_ORDER1, **settings)

    groups = group_runs([load_run(r) for r in old + new + [explicit]])
    by_seeds = {tuple(sorted(g.seeds)): g for g in groups}
    assert set(by_seeds) == {(42, 43, 44), (42, 43)}
    old_group, new_group = by_seeds[(42, 43, 44)], by_seeds[(42, 43)]
    assert {r.name for r in old_group.runs} == {"jumplora-order1-seed42", "jumplora-order1-seed43", "explicit"}
    assert {r.name for r in new_group.runs} == {"new42", "new43"}
    assert "prompt_style=olora" in old_group.label and "prompt_style=authors" in new_group.label
    assert "threshold_grad=abs-sum" in old_group.label and "batching=length" in old_group.label
    assert "ella_scale" not in old_group.label  # not an option of JumpLoRA + IncLoRA

    # the old runs alone group among themselves as before the options existed: no variant brackets
    groups = group_runs([load_run(r) for r in old + [explicit]])
    assert [(g.label, sorted(g.seeds)) for g in groups] == [("JumpLoRA + IncLoRA", [42, 43, 44])]


def test_result_affecting_new_options_are_variant_keys():
    for key in ("split", "prompt_style", "batching", "lora_dropout", "threshold_grad", "threshold_init",
                "schedule_rounding", "ella_scale", "ella_threshold_grad", "max_grad_norm", "loss_mean",
                "answer_match", "max_new_tokens", "max_target_tokens", "unlabelled_test"):
        assert key in VARIANT_KEYS
    # the lists drifted apart once: now each is derived from the fields' roles
    assert {"ewc_fisher_batches", "model_kind", "micro_batch_size"} <= set(VARIANT_KEYS)
    assert set(VARIANT_KEYS) == set(RESULT_AFFECTING) - {"method", "order", "seed"}


def test_options_split_the_runs_of_the_methods_they_act_on_only(tmp_path):
    runs = [
        write_run(tmp_path / "e-authors", method="ella", ella_scale="authors", ella_lambda="100"),
        write_run(tmp_path / "e-sum", method="ella", seed=43, ella_scale="unscaled-sum", ella_lambda="100"),
        write_run(tmp_path / "j-none", method="jumplora", lora_dropout=None),  # unset: 0 for JumpLoRA
        write_run(tmp_path / "j-zero", method="jumplora", seed=43, lora_dropout=0.0, ella_scale="unscaled-sum"),
        write_run(tmp_path / "je-grad", method="jumplora+ella", ella_threshold_grad=False),
        write_run(tmp_path / "je-legacy", method="jumplora+ella", seed=43, ella_threshold_grad=True),
        write_run(tmp_path / "w-16", method="ewc", ewc_fisher_batches=16),
        write_run(tmp_path / "w-4", method="ewc", seed=43, ewc_fisher_batches=4),
        write_run(tmp_path / "i-auto", method="inclora", model_kind=None),
        write_run(tmp_path / "i-seq2seq", method="inclora", seed=43, model_kind="seq2seq"),
    ]
    labels = sorted(g.label for g in group_runs([load_run(r) for r in runs]))
    assert labels == [
        "ELLA [ella_scale=authors]", "ELLA [ella_scale=unscaled-sum]",
        "EWC [ewc_fisher_batches=16]", "EWC [ewc_fisher_batches=4]",
        "IncLoRA [model_kind=None]", "IncLoRA [model_kind=seq2seq]",
        "JumpLoRA + ELLA [ella_threshold_grad=False]", "JumpLoRA + ELLA [ella_threshold_grad=True]",
        "JumpLoRA + IncLoRA",
    ]


def test_legacy_runs_place_s_start_by_rounding_new_ones_by_floor(tmp_path):
    """dbpedia took 44 steps, S_start = 0.2: step 8.8 -> 9 (legacy round), where a new run says 8 (floor)."""
    old = load_run(committed_run("jumplora-order1-seed42", tmp_path))
    first = old.stages[0]
    assert first.record.steps == 44 and first.record.s_start_step is None  # written before it was stated
    assert first.s_start_step == 9
    logged = old.losses()["dbpedia"]
    expected = first.record.thresholds["global"] / logged[9]["thresholds"]["global"] - 1
    assert threshold_movement(old)[0][1] == pytest.approx(expected)
    new = load_run(write_run(tmp_path / "new", tasks=("MNLI",), losses={"MNLI": [{"task_loss": 1.0}] * 44}))
    assert new.stages[0].record.s_start_step == 8 == JumpSchedule.for_task(44, 0.2, 0.8).start


def test_committed_runs_group_among_themselves_as_before():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunWarning)
        runs = load_runs(sorted(RESULTS.iterdir()))
    groups = group_runs(runs)
    assert all("[" not in g.label for g in groups)
    assert sorted((g.label, g.order, len(g.runs)) for g in groups) == sorted([
        ("IncLoRA", 1, 3), ("IncLoRA", 2, 1), ("JumpLoRA + IncLoRA", 1, 3), ("JumpLoRA + IncLoRA", 2, 1),
        ("ELLA", 1, 3), ("ELLA", 2, 1), ("JumpLoRA + ELLA", 1, 3), ("JumpLoRA + ELLA", 2, 1), ("single", 1, 3)])
    for run in runs:
        assert run.config["prompt_style"] == "olora" and run.config["ella_scale"] == "unscaled-sum"


# -- FWT_final for metrics.json written before it existed --------------------------------------------------
def _single_and_cl(tmp_path, single="single-order1-seed42", reference=None):
    """Copies of a committed IncLoRA run and of a single run, named as the IncLoRA run's reference;
    `reference` replaces the recorded path (a folder moved since, or gone)."""
    cl = committed_run("inclora-order1-seed42", tmp_path)
    copied = committed_run(single, tmp_path)
    if copied.name != "single-order1-seed42":  # another seed's single run where the recorded one was
        copied.rename(tmp_path / "single-order1-seed42")
    if reference is not None:
        metrics = json.loads((cl / "metrics.json").read_text())
        (cl / "metrics.json").write_text(json.dumps({**metrics, "fwt_reference": reference}))
    return cl


def test_fwt_final_is_derived_from_the_recorded_single_run(tmp_path):
    run = load_run(_single_and_cl(tmp_path))
    single = load_run(tmp_path / "single-order1-seed42")
    assert "FWT_final" not in run.metrics
    a0 = np.diag(single.accuracy)
    # OA − mean a0 = mean(a_T,i − a0_i), OA at metrics.json's full precision
    assert run.metric("FWT_final") == pytest.approx(run.metrics["OA"] - a0.mean())
    assert run.metric("FWT_final") == pytest.approx(np.mean(run.accuracy[-1] - a0), abs=0.005)
    assert run.metric("FWT") == pytest.approx(np.mean(np.diag(run.accuracy) - a0), abs=0.005)


def test_fwt_final_follows_a_moved_results_folder(tmp_path):
    cl = _single_and_cl(tmp_path, reference="/no/longer/here/single-order1-seed42")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RunWarning)
        run = load_run(cl)
        assert run.fwt_reference() == tmp_path / "single-order1-seed42"
        assert math.isfinite(run.metric("FWT_final"))


def test_fwt_final_from_metrics_json_is_used_as_written(tmp_path):
    root = write_run(tmp_path / "new", method="inclora", metrics={"FWT_final": -1.5})
    assert load_run(root).metric("FWT_final") == -1.5
    root = write_run(tmp_path / "none", method="inclora", metrics={"FWT_final": None})
    assert math.isnan(load_run(root).metric("FWT_final"))


def test_fwt_final_is_left_out_when_the_single_run_is_missing_or_disagrees(tmp_path):
    cl = _single_and_cl(tmp_path / "missing", reference="/no/longer/here/elsewhere")
    with pytest.warns(RunWarning, match="fwt_reference .* is not a run directory"):
        assert math.isnan(load_run(cl).metric("FWT_final"))
    # another seed's single run where the recorded one was: its diagonal does not give the stored FWT
    cl = _single_and_cl(tmp_path / "changed", single="single-order1-seed43", reference="/gone/single-order1-seed42")
    with pytest.warns(RunWarning, match="FWT recomputed from fwt_reference"):
        assert math.isnan(load_run(cl).metric("FWT_final"))


def test_table2_shows_both_fwts_and_compares_the_paper_with_the_script(tmp_path):
    run = load_run(_single_and_cl(tmp_path))
    report = build_report([run])
    tables = {t.name: t for t in report.tables}
    table2 = tables["table2_bwt_fwt"]
    assert table2.columns == ["Method", "SC BWT", "paper", "SC FWT (§4.2)", "SC FWT (authors' script, as Table 2)",
                              "paper"]
    bwt, fwt, fwt_final = run.metric("BWT"), run.metric("FWT"), run.metric("FWT_final")
    assert table2.rows == [["IncLoRA", f"{bwt:.2f}*", "-22.9", f"{fwt:.2f}*", f"{fwt_final:.2f}*", "-17.1"]]
    row = dict(zip(table2.csv_columns, table2.csv_rows[0]))
    assert row["SC_FWT_mean"] == pytest.approx(fwt) and row["SC_FWT_paper"] == -17.1
    assert row["SC_FWT_final_mean"] == pytest.approx(fwt_final) and row["SC_FWT_final_paper"] == -17.1
    assert "FWT_final" in tables["runs"].csv().splitlines()[0].split(",")
    assert {"FWT_final_mean", "FWT_final_std"} <= set(tables["per_order"].csv_columns)


# -- ELLA's λ under the two penalty conventions -------------------------------------------------------------
def test_ella_lambda_conventions_differ_by_beta4_over_m(tmp_path, capsys):
    from jumplora.analysis.ella_lambda import balance_table

    beta = 4.0
    q, v, k = T5_Q.format(0), T5_V.format(0), "encoder.block.0.layer.0.SelfAttention.k"
    # task 1 adapts q and v; task 2 q, v and a new matrix k, which has no past: M = 2 for task 2;
    # task 3 adapts q, v, k, all of which have a past by then: M = 3
    updates = [
        lowrank_update("MNLI", {q: ([[1.0, 0.0]], [[1.0], [2.0]]), v: ([[0.0, 1.0]], [[1.0], [1.0]])}, beta),
        lowrank_update("CB", {q: ([[1.0, 1.0]], [[1.0], [0.0]]), v: ([[0.0, 2.0]], [[1.0], [0.0]]),
                              k: ([[1.0, 1.0]], [[1.0], [1.0]])}, beta),
        lowrank_update("WiC", {q: ([[0.0, 1.0]], [[3.0], [1.0]]), v: ([[1.0, 1.0]], [[0.0], [1.0]]),
                               k: ([[1.0, 0.0]], [[2.0], [0.0]])}, beta),
    ]
    losses = {"MNLI": [7.0], "CB": [2.0, 1.0], "WiC": [4.0, 3.0]}
    root = write_run(tmp_path / "run", method="inclora", updates=updates, alpha=32.0, rank=8,
                     losses={task: [{"task_loss": v} for v in values] for task, values in losses.items()})
    run = load_run(root)

    legacy = balance_table(run, tail=0.5, convention="unscaled-sum")
    authors = balance_table(run, tail=0.5, convention="authors")
    assert balance_table(run, tail=0.5) == authors  # the default
    assert [b.matrices for b in authors] == [2, 3]
    # by hand (unscaled): CB: q ‖[[1,1],[0,0]] ⊙ [[1,0],[2,0]]‖² = 1, v ‖[[0,2],[0,0]] ⊙ [[0,1],[0,1]]‖² = 4;
    # WiC: q ‖[[0,3],[0,1]] ⊙ [[2,1],[2,0]]‖² = 9, v ‖[[0,0],[1,1]] ⊙ [[0,3],[0,1]]‖² = 1,
    #      k ‖[[2,0],[0,0]] ⊙ [[1,1],[1,1]]‖² = 4
    assert [b.penalty for b in legacy] == [5.0, 14.0]
    for old, new in zip(legacy, authors):
        assert new.penalty == old.penalty * beta**4 / new.matrices  # exact: powers of two and small integers
        assert new.cross_entropy == old.cross_entropy
        assert new.balancing_lambda == pytest.approx(old.balancing_lambda * new.matrices / beta**4, rel=1e-12)

    assert main(["ella-lambda", str(root), "--tail", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "penalty convention: authors" in out and "(for --ella-scale authors)" in out
    assert out.count("\nsuggested ella_lambda: ") == 1
    assert main(["ella-lambda", str(root), "--tail", "0.5", "--convention", "unscaled-sum"]) == 0
    assert "penalty convention: unscaled-sum" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # argparse: unknown choice
        main(["ella-lambda", str(root), "--convention", "scaled"])
    assert exit_info.value.code == 2
