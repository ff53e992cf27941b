"""Reading old run directories as what they were run with, FWT_final from a single run, ELLA's λ conventions."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from jumplora.analysis import load_run
from jumplora.analysis.groups import VARIANT_KEYS, group_runs
from jumplora.analysis.report import build_report, threshold_movement
from jumplora.analysis.rundir import RunWarning, load_runs
from jumplora.cli import main
from jumplora.config import LEGACY_VALUES, RunConfig
from jumplora.updates import ModuleUpdate, TaskUpdate
from test_analysis import T5_Q, T5_V, write_run

RESULTS = Path(__file__).resolve().parents[1] / "results" / "runs"


def today_defaults() -> dict:
    """The options added since the committed runs, at today's defaults (as a new config.yaml holds them)."""
    defaults = RunConfig().to_dict()
    return {key: defaults[key] for key in LEGACY_VALUES}


# -- legacy configurations -------------------------------------------------------------------------------
def test_a_config_without_the_new_options_reads_as_their_legacy_values(tmp_path):
    run = load_run(write_run(tmp_path / "old"))
    for key, value in LEGACY_VALUES.items():
        assert run.config[key] == value
        assert key not in run.saved_config
    assert run.config["model"] == run.saved_config["model"] == "t5-large"
    new = load_run(write_run(tmp_path / "new", **today_defaults()))
    assert new.config == new.saved_config  # nothing to complete
    assert new.config["prompt_style"] == "authors" and new.config["ella_scale"] == "authors"


def test_a_key_in_a_nested_section_is_not_shadowed_by_its_legacy_value(tmp_path):
    root = write_run(tmp_path / "nested")
    (root / "config.yaml").write_text("method: jumplora\norder: 4\nseed: 42\ntraining:\n  batching: random\n")
    run = load_run(root)
    assert "batching" not in run.config and run.config["training"]["batching"] == "random"
    assert run.config["prompt_style"] == "olora"


def test_new_settings_runs_are_never_averaged_with_old_ones(tmp_path):
    old = [write_run(tmp_path / f"old{seed}", seed=seed) for seed in (42, 43)]
    new = [write_run(tmp_path / f"new{seed}", seed=seed, **today_defaults()) for seed in (42, 43)]
    # a new run that stores the legacy values explicitly is the same configuration as the old ones
    explicit = write_run(tmp_path / "explicit", seed=44, **LEGACY_VALUES)

    groups = group_runs([load_run(r) for r in old + new + [explicit]])
    by_seeds = {tuple(sorted(g.seeds)): g for g in groups}
    assert set(by_seeds) == {(42, 43, 44), (42, 43)}
    old_group, new_group = by_seeds[(42, 43, 44)], by_seeds[(42, 43)]
    assert {r.name for r in old_group.runs} == {"old42", "old43", "explicit"}
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


def test_ella_options_split_ella_runs_only_and_unset_dropout_is_the_methods_value(tmp_path):
    runs = [
        write_run(tmp_path / "e-authors", method="ella", ella_scale="authors"),
        write_run(tmp_path / "e-legacy", method="ella", seed=43),  # legacy: unscaled-sum
        write_run(tmp_path / "j-none", method="jumplora", lora_dropout=None),  # unset: 0 for JumpLoRA
        write_run(tmp_path / "j-zero", method="jumplora", seed=43),  # legacy 0.0
        write_run(tmp_path / "je-grad", method="jumplora+ella", ella_threshold_grad=False),
        write_run(tmp_path / "je-legacy", method="jumplora+ella", seed=43),  # legacy: True
    ]
    labels = sorted(g.label for g in group_runs([load_run(r) for r in runs]))
    assert labels == [
        "ELLA [ella_scale=authors]", "ELLA [ella_scale=unscaled-sum]",
        "JumpLoRA + ELLA [ella_threshold_grad=False]", "JumpLoRA + ELLA [ella_threshold_grad=True]",
        "JumpLoRA + IncLoRA",
    ]


def test_legacy_runs_place_s_start_by_rounding_new_ones_by_floor(tmp_path):
    """13 steps, S_start = 0.2: step 2.6 -> 3 (legacy round) or 2 (floor, today's default)."""
    movement = {}
    for name, extra in (("legacy", {}), ("new", {"schedule_rounding": "floor"})):
        root = write_run(tmp_path / name, tasks=("mnli", "cb"), s_start=0.2, s_final=0.8, **extra)
        losses = [{"task": "mnli", "step": s, "task_loss": 1.0, "thresholds": {"global": 0.01 * (s + 1)}}
                  for s in range(13)]
        (root / "losses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in losses))
        (root / "tasks").mkdir()
        (root / "tasks" / "00-mnli.json").write_text(json.dumps({"task": "mnli", "thresholds": {"global": 0.12},
                                                                 "sparsity": 0.5}))
        movement[name] = threshold_movement(load_run(root))[0][1]
    assert movement["legacy"] == pytest.approx(0.12 / 0.04 - 1)  # τ after step 3
    assert movement["new"] == pytest.approx(0.12 / 0.03 - 1)  # τ after step 2


@pytest.mark.skipif(not RESULTS.is_dir(), reason="no committed runs")
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
TASKS = ("mnli", "cb", "wic")
SINGLE_DIAGONAL = [90.0, 80.0, 70.0]
CL = np.array([[85.0, np.nan, np.nan], [75.0, 82.0, np.nan], [65.0, 70.0, 72.0]])


def _single_and_cl(tmp_path, reference=None, fwt=None, **metrics):
    runs = tmp_path / "runs"
    single = write_run(runs / "single-s42", method="single", accuracy=np.diag(SINGLE_DIAGONAL),
                       metrics={"OA": None, "BWT": None, "FWT": None})
    # the CSV holds two decimals; metrics.json's OA is the runner's full-precision value
    oa = float(np.mean(CL[-1])) + 0.001
    fwt = float(np.mean(np.diag(CL) - SINGLE_DIAGONAL)) if fwt is None else fwt
    values = {"OA": oa, "FWT": fwt, "fwt_reference": str(single if reference is None else reference), **metrics}
    cl = write_run(runs / "inclora-s42", method="inclora", accuracy=CL, metrics=values)
    return single, cl, oa


def test_fwt_final_is_derived_from_the_recorded_single_run(tmp_path):
    _, cl, oa = _single_and_cl(tmp_path)
    run = load_run(cl)
    assert "FWT_final" not in run.metrics
    # OA − mean a0 = mean(a_T,i − a0_i): (65 − 90 + 70 − 80 + 72 − 70) / 3 plus OA's extra precision
    assert run.metric("FWT_final") == pytest.approx(oa - 80.0)
    assert run.metric("FWT_final") == pytest.approx((65 - 90 + 70 - 80 + 72 - 70) / 3 + 0.001)
    assert run.metric("FWT") == pytest.approx((85 - 90 + 82 - 80 + 72 - 70) / 3)


def test_fwt_final_follows_a_moved_results_folder(tmp_path):
    _, cl, oa = _single_and_cl(tmp_path, reference="/no/longer/here/single-s42")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RunWarning)
        assert load_run(cl).metric("FWT_final") == pytest.approx(oa - 80.0)


def test_fwt_final_from_metrics_json_is_used_as_written(tmp_path):
    _, cl, _ = _single_and_cl(tmp_path, FWT_final=-1.5)
    assert load_run(cl).metric("FWT_final") == -1.5
    _, cl, _ = _single_and_cl(tmp_path / "none", FWT_final=None)
    assert math.isnan(load_run(cl).metric("FWT_final"))


def test_fwt_final_is_left_out_when_the_single_run_is_missing_or_disagrees(tmp_path):
    _, cl, _ = _single_and_cl(tmp_path / "missing", reference="/no/longer/here/elsewhere")
    with pytest.warns(RunWarning, match="fwt_reference .* is not a run directory"):
        assert math.isnan(load_run(cl).metric("FWT_final"))
    _, cl, _ = _single_and_cl(tmp_path / "changed", fwt=5.0)
    with pytest.warns(RunWarning, match="FWT recomputed from fwt_reference"):
        assert math.isnan(load_run(cl).metric("FWT_final"))
    root = write_run(tmp_path / "no-reference", method="inclora")  # FWT null, no single run
    assert math.isnan(load_run(root).metric("FWT_final"))


def test_table2_shows_both_fwts_and_compares_the_paper_with_the_script(tmp_path):
    _, cl, oa = _single_and_cl(tmp_path)
    report = build_report([load_run(cl)])
    tables = {t.name: t for t in report.tables}
    table2 = tables["table2_bwt_fwt"]
    assert table2.columns == ["Method", "LS BWT", "paper", "LS FWT (§4.2)", "LS FWT (authors' script, as Table 2)",
                              "paper"]
    fwt = (85 - 90 + 82 - 80 + 72 - 70) / 3
    assert table2.rows == [["IncLoRA", "-5.00*", "-22.1", f"{fwt:.2f}*", f"{oa - 80:.2f}*", "-21.2"]]
    row = dict(zip(table2.csv_columns, table2.csv_rows[0]))
    assert row["LS_FWT_mean"] == pytest.approx(fwt) and row["LS_FWT_paper"] == -21.2
    assert row["LS_FWT_final_mean"] == pytest.approx(oa - 80) and row["LS_FWT_final_paper"] == -21.2
    assert "FWT_final" in tables["runs"].csv().splitlines()[0].split(",")
    assert {"FWT_final_mean", "FWT_final_std"} <= set(tables["per_order"].csv_columns)


# -- ELLA's λ under the two penalty conventions -------------------------------------------------------------
def _lowrank(task: str, factors: dict[str, tuple], scale: float) -> TaskUpdate:
    update = TaskUpdate(task=task)
    for name, (lora_a, lora_b) in factors.items():
        update.modules[name] = ModuleUpdate(shape=(2, 2), lora_A=torch.tensor(lora_a), lora_B=torch.tensor(lora_b),
                                            scale=scale)
    return update


def test_ella_lambda_conventions_differ_by_beta4_over_m(tmp_path, capsys):
    from jumplora.analysis.ella_lambda import balance_table

    beta = 4.0
    q, v, k = T5_Q.format(0), T5_V.format(0), "encoder.block.0.layer.0.SelfAttention.k"
    # task 1 adapts q and v; task 2 q, v and a new matrix k, which has no past: M = 2 for task 2;
    # task 3 adapts q, v, k, all of which have a past by then: M = 3
    updates = [
        _lowrank("mnli", {q: ([[1.0, 0.0]], [[1.0], [2.0]]), v: ([[0.0, 1.0]], [[1.0], [1.0]])}, beta),
        _lowrank("cb", {q: ([[1.0, 1.0]], [[1.0], [0.0]]), v: ([[0.0, 2.0]], [[1.0], [0.0]]),
                        k: ([[1.0, 1.0]], [[1.0], [1.0]])}, beta),
        _lowrank("wic", {q: ([[0.0, 1.0]], [[3.0], [1.0]]), v: ([[1.0, 1.0]], [[0.0], [1.0]]),
                         k: ([[1.0, 0.0]], [[2.0], [0.0]])}, beta),
    ]
    root = write_run(tmp_path / "run", method="inclora", updates=updates, alpha=32.0, rank=8)
    losses = {"mnli": [7.0], "cb": [2.0, 1.0], "wic": [4.0, 3.0]}
    (root / "losses.jsonl").write_text("".join(
        json.dumps({"task": task, "step": step, "task_loss": value}) + "\n"
        for task, values in losses.items() for step, value in enumerate(values)))
    run = load_run(root)

    legacy = balance_table(run, tail=0.5, convention="unscaled-sum")
    authors = balance_table(run, tail=0.5, convention="authors")
    assert balance_table(run, tail=0.5) == authors  # the default
    assert [b.matrices for b in authors] == [2, 3]
    # by hand (unscaled): cb: q ‖[[1,1],[0,0]] ⊙ [[1,0],[2,0]]‖² = 1, v ‖[[0,2],[0,0]] ⊙ [[0,1],[0,1]]‖² = 4;
    # wic: q ‖[[0,3],[0,1]] ⊙ [[2,1],[2,0]]‖² = 9, v ‖[[0,0],[1,1]] ⊙ [[0,3],[0,1]]‖² = 1,
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
