"""The analysis layer: sparsity, Jaccard overlap, layer selection, BWT profiles, reading runs, the report
and its command, on run directories the real writer wrote with chosen numbers (tests/rundirs.py)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from jumplora.analysis import (
    bwt_profile, final_task_bwt, jaccard, load_run, matrix_sparsity, mean_overlap_with_earlier, overlap_matrix,
    select_modules, sparsity, sparsity_by_depth, sparsity_by_module,
)
from jumplora.analysis.paper import benchmark_of
from jumplora.analysis.report import build_report
from jumplora.analysis.stats import run_stats
from jumplora.cli import build_parser, main
from jumplora.errors import UserError
from jumplora.rundir import RunWarning
from jumplora.updates import ModuleUpdate, TaskUpdate
from rundirs import T5_Q, T5_V, lowrank_update, sparse_update, three_task_updates, write_run


def file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


# -- sparsity -------------------------------------------------------------------------------------
def test_sparsity_of_known_masks():
    update = sparse_update("t", {"q": [0, 1, 2, 3], "v": [5, 10]})
    # q: 4 of 16 entries changed -> 12/16 zeroed; v: 2 of 16 -> 14/16; pooled: 1 - 6/32
    assert matrix_sparsity(update.modules["q"]) == pytest.approx(0.75)
    assert matrix_sparsity(update.modules["v"]) == pytest.approx(0.875)
    assert sparsity_by_module(update) == pytest.approx({"q": 0.75, "v": 0.875})
    assert sparsity(update) == pytest.approx(0.8125)
    assert sparsity(update) == pytest.approx(update.sparsity())
    assert sparsity(update, ["v"]) == pytest.approx(0.875)
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, :3] = True
    assert matrix_sparsity(mask) == pytest.approx(13 / 16)


def test_lowrank_update_has_no_zeroed_entries():
    update = TaskUpdate(task="t", modules={"q": ModuleUpdate(shape=(4, 4), lora_A=torch.ones(2, 4),
                                                             lora_B=torch.ones(4, 2), scale=2.0)})
    assert update.modules["q"].kind == "lowrank"
    assert sparsity(update) == 0.0


def test_sparsity_by_depth_separates_encoder_and_decoder():
    update = sparse_update("t", {
        "encoder.block.0.layer.0.SelfAttention.q": [0, 1, 2, 3],  # 12/16
        "encoder.block.0.layer.0.SelfAttention.v": [0, 1],  # 14/16 -> block 0 pooled: 1 - 6/32
        "encoder.block.1.layer.0.SelfAttention.q": list(range(8)),  # 8/16
        "decoder.block.0.layer.0.SelfAttention.q": [],  # 16/16
        "decoder.block.0.layer.1.EncDecAttention.q": list(range(16)),  # 0/16 -> block 0 pooled: 0.5
    })
    depth = sparsity_by_depth(update)
    assert list(depth) == ["decoder.block", "encoder.block"]
    assert depth["decoder.block"] == pytest.approx({0: 0.5})
    assert depth["encoder.block"] == pytest.approx({0: 0.8125, 1: 0.5})
    llama = sparse_update("t", {"model.layers.0.self_attn.q_proj": [0], "model.layers.1.self_attn.v_proj": [0, 1]})
    depth = sparsity_by_depth(llama)
    assert list(depth) == ["model.layers"] and depth["model.layers"] == pytest.approx({0: 15 / 16, 1: 14 / 16})


# -- overlap ----------------------------------------------------------------------------------------
def _mask(entries, shape=(4, 4)):
    mask = np.zeros(shape[0] * shape[1], dtype=bool)
    mask[list(entries)] = True
    return mask.reshape(shape)


def test_jaccard_of_known_masks():
    a, b = _mask([0, 1, 2, 3]), _mask([2, 3, 4, 5])
    assert jaccard(a, b) == pytest.approx(2 / 6)  # {2, 3} of {0, ..., 5}
    assert jaccard(a, a) == 1.0
    assert jaccard(a, _mask([8, 9])) == 0.0
    assert jaccard(_mask([]), _mask([])) == 0.0  # 0/0 is defined as 0
    assert jaccard(_mask([]), _mask([1])) == 0.0
    assert jaccard(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(1 / 3)
    ua, ub = sparse_update("a", {"q": [0, 1, 2, 3]}), sparse_update("b", {"q": [2, 3, 4, 5]})
    assert jaccard(ua.modules["q"], ub.modules["q"]) == pytest.approx(1 / 3)
    big_a, big_b = _mask(range(0, 600), (40, 30)), _mask(range(300, 1200), (40, 30))  # not a multiple of 8
    assert jaccard(big_a, big_b) == pytest.approx(300 / 1200)
    with pytest.raises(UserError):
        jaccard(_mask([0]), _mask([0], (2, 8)))


def test_mean_overlap_with_earlier_tasks_by_hand():
    updates = three_task_updates()
    # block 1 (the middle of blocks 0-2), q and v:
    # CB vs MNLI: q {2,3}/{0..5} = 1/3; v {1}/{0,1,2} = 1/3            -> 1/3
    # wic vs mnli: q {0}/{0,1,2,3,5,8,9} = 1/7; v: ∅ vs {0,1} = 0       -> 1/14
    # wic vs cb:   q {5}/{0,2,3,4,5,8,9} = 1/7; v: ∅ vs {1,2} = 0       -> 1/14
    # wic: mean over earlier tasks = 1/14
    expected = [math.nan, 1 / 3, 1 / 14]
    assert mean_overlap_with_earlier(updates, "middle") == pytest.approx(expected, nan_ok=True)
    assert mean_overlap_with_earlier(updates, 1) == pytest.approx(expected, nan_ok=True)
    matrix, names = overlap_matrix(updates, [T5_Q.format(1), T5_V.format(1)])
    assert matrix.shape == (3, 3, 2)
    assert matrix[2, 0] == pytest.approx([1 / 7, 0.0])
    assert matrix[0, 2] == pytest.approx(matrix[2, 0])
    assert matrix[0, 0] == pytest.approx([1.0, 1.0])
    assert matrix[2, 2, 1] == 0.0  # an empty support against itself: 0/0 := 0


# -- layer selection --------------------------------------------------------------------------------
def t5_names(blocks=24):
    names = []
    for i in range(blocks):
        names += [f"encoder.block.{i}.layer.0.SelfAttention.{m}" for m in ("q", "v")]
        names += [f"decoder.block.{i}.layer.0.SelfAttention.{m}" for m in ("q", "v")]
        names += [f"decoder.block.{i}.layer.1.EncDecAttention.{m}" for m in ("q", "v")]
    return names


def llama_names(layers):
    return [f"model.layers.{i}.self_attn.{m}_proj" for i in range(layers) for m in ("q", "v")]


def test_middle_layer_of_t5_is_the_middle_encoder_block():
    selection = select_modules(t5_names(24), "middle")
    assert selection.modules == ("encoder.block.12.layer.0.SelfAttention.q", "encoder.block.12.layer.0.SelfAttention.v")
    assert (selection.stack, selection.index) == ("encoder.block", 12)
    assert "encoder" in selection.description and "12" in selection.description
    assert select_modules(t5_names(5), "middle").index == 2
    assert select_modules(t5_names(24), 3).modules == (
        "encoder.block.3.layer.0.SelfAttention.q", "encoder.block.3.layer.0.SelfAttention.v")
    decoder = select_modules(t5_names(24), "decoder.block.3")
    assert len(decoder.modules) == 4 and all(m.startswith("decoder.block.3.") for m in decoder.modules)
    assert len(select_modules(t5_names(24), "all").modules) == 24 * 6


def test_middle_layer_of_llama():
    assert select_modules(llama_names(7), "middle").modules == (
        "model.layers.3.self_attn.q_proj", "model.layers.3.self_attn.v_proj")
    assert select_modules(llama_names(8), "middle").index == 4
    assert select_modules(llama_names(8), "5").index == 5
    with pytest.raises(UserError, match="block 9"):
        select_modules(llama_names(8), 9)
    with pytest.raises(UserError):
        select_modules(llama_names(8), "deepest")


# -- BWT profile ------------------------------------------------------------------------------------
def test_bwt_profile_by_hand():
    a = np.array([[80.0, np.nan, np.nan], [70.0, 90.0, np.nan], [60.0, 85.0, 75.0]])
    profile = bwt_profile(a)
    assert [p.tolist() for p in profile] == [[0.0, -10.0, -20.0], [0.0, -5.0], [0.0]]
    assert final_task_bwt(a).tolist() == [-20.0, -5.0, 0.0]
    unfinished = a.copy()
    unfinished[2] = np.nan
    assert final_task_bwt(unfinished) == pytest.approx([-10.0, 0.0, np.nan], nan_ok=True)


# -- reading runs -----------------------------------------------------------------------------------
def test_load_run_reads_every_file(tmp_path):
    accuracy = np.array([[80.0, np.nan, np.nan], [70.0, 90.0, np.nan], [60.0, 85.0, 75.0]])
    root = write_run(tmp_path / "run", accuracy=accuracy, updates=three_task_updates(), metrics={"OA": 73.3})
    run = load_run(root)
    assert run.tasks == ["MNLI", "CB", "WiC"]
    np.testing.assert_array_equal(run.accuracy, accuracy)
    assert run.finished and run.completed == 3
    assert (run.label, run.order, run.seed, run.threshold_mode) == ("JumpLoRA + IncLoRA", 4, 42, "global")
    assert benchmark_of(run.order) == "LS" and run.gated and run.method == "jumplora"
    assert run.metric("OA") == 73.3 and math.isnan(run.metric("FWT"))
    assert [s.update_path.name for s in run.stages] == ["00-MNLI.safetensors", "01-CB.safetensors",
                                                        "02-WiC.safetensors"]
    assert [s.record.accuracy for s in run.stages][1] == {"MNLI": 70.0, "CB": 90.0}  # full precision
    update = run.update(1)
    assert update.modules[T5_Q.format(1)].support().flatten().nonzero().flatten().tolist() == [2, 3, 4, 5]
    stats = run_stats(run, "middle")
    assert stats.jaccard == pytest.approx([math.nan, 1 / 3, 1 / 14], nan_ok=True)
    # block 1: MNLI 6/32, CB 6/32, WiC 4/32 entries changed
    assert stats.sparsity_layer == pytest.approx([26 / 32, 26 / 32, 28 / 32])
    assert stats.mean_jaccard == pytest.approx((1 / 3 + 1 / 14) / 2)
    assert stats.is_sparse
    assert stats.by_module[2][T5_V.format(1)] == 1.0 and stats.by_module[0][T5_Q.format(1)] == 0.75
    assert stats.jaccard_by_module[2] == pytest.approx({T5_Q.format(1): 1 / 7, T5_V.format(1): 0.0})
    assert stats.jaccard_by_module[0] == {}
    assert stats.mean_depth()["encoder.block"][1] == pytest.approx((26 + 26 + 28) / 3 / 32)


def test_unfinished_run_warns_and_is_usable(tmp_path):
    root = write_run(tmp_path / "run", updates=three_task_updates(), finished=False, completed=2)
    with pytest.warns(RunWarning, match="unfinished .2 of 3 tasks"):
        run = load_run(root)
    assert not run.finished
    assert np.isnan(run.accuracy[2]).all() and not np.isnan(run.accuracy[1, :2]).any()
    assert run.stages[2].update_path is None and run.stages[2].record is None
    assert run_stats(run).jaccard == pytest.approx([math.nan, 1 / 3, math.nan], nan_ok=True)


@pytest.mark.parametrize("case", ["missing", "file", "no-config"])
def test_bad_path_is_a_one_line_error(tmp_path, capsys, case):
    path = tmp_path / "thing"
    if case == "file":
        path.write_text("x")
    elif case == "no-config":
        path.mkdir()
        (path / "metrics.json").write_text("{}")
    with pytest.raises(UserError) as error:
        load_run(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    if case == "no-config":
        assert "config.yaml missing" in message
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jumplora report: error: ") and str(path) in err


# -- report -----------------------------------------------------------------------------------------
def _runs_for_report(tmp_path):
    """JumpLoRA + IncLoRA on order 4 (seeds 42, 43) and order 5; ELLA on order 4; one unfinished run."""
    updates = three_task_updates()
    roots = [
        write_run(tmp_path / "j-o4-s42", seed=42, metrics={"OA": 70.0, "BWT": -10.0, "FWT": -3.0}, updates=updates),
        write_run(tmp_path / "j-o4-s43", seed=43, metrics={"OA": 74.0, "BWT": -6.0, "FWT": -1.0}, updates=updates),
        write_run(tmp_path / "j-o5-s42", order=5, metrics={"OA": 60.0, "BWT": -2.0}, updates=updates),
        write_run(tmp_path / "e-o4-s42", method="ella", metrics={"OA": 72.5, "BWT": -4.0, "FWT": -5.0},
                  keep_updates=False),
        write_run(tmp_path / "j-o4-s44", seed=44, finished=False, completed=1, updates=updates),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunWarning)
        return roots, [load_run(root) for root in roots]


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_report_aggregates_seeds_and_groups_by_method_and_order(tmp_path):
    _, runs = _runs_for_report(tmp_path)
    report = build_report(runs)
    groups = {(g.label, g.order): g for g in report.groups}
    assert set(groups) == {("JumpLoRA + IncLoRA", 4), ("JumpLoRA + IncLoRA", 5), ("ELLA", 4)}
    assert sorted(r.seed for r in groups[("JumpLoRA + IncLoRA", 4)].runs) == [42, 43, 44]

    tables = {t.name: t for t in report.tables}
    t1 = tables["table1_oa"]
    assert t1.columns == ["Method", "Order 4", "paper", "Order 5", "paper", "LS OA", "paper"]
    rows = {row[0]: row for row in t1.rows}
    assert list(rows) == ["JumpLoRA + IncLoRA", "ELLA"]  # the paper's order; unfinished seed 44 left out
    std = math.sqrt(((70 - 72) ** 2 + (74 - 72) ** 2) / 1)  # sample std, ddof = 1
    assert rows["JumpLoRA + IncLoRA"] == [
        "JumpLoRA + IncLoRA", f"72.00 ± {std:.2f}", "65.35", "60.00", "61.84", "66.00*", "63.75"]
    assert rows["ELLA"] == ["ELLA", "72.50", "72.64", "—", "67.91", "72.50*", "71.57"]
    csv_row = dict(zip(t1.csv_columns, t1.csv_rows[0]))
    assert csv_row["order_4_mean"] == pytest.approx(72.0)
    assert csv_row["order_4_std"] == pytest.approx(2.8284271)
    assert csv_row["order_4_n"] == 2
    assert csv_row["LS_mean"] == pytest.approx(66.0) and csv_row["LS_orders"] == 2

    t2 = {row[0]: row for row in tables["table2_bwt_fwt"].rows}
    assert tables["table2_bwt_fwt"].columns == [
        "Method", "LS BWT", "paper", "LS FWT (§4.2)", "LS FWT (authors' script, as Table 2)", "paper"]
    # BWT: order 4 mean -8, order 5 -2 -> -5; FWT: order 4 mean -2, order 5 missing -> -2 over one order;
    # FWT_final: no single run recorded -> missing; the paper's FWT sits next to the script's definition
    assert t2["JumpLoRA + IncLoRA"][1:] == ["-5.00*", "-15.5", "-2.00*", "—", "-13.3"]

    t3 = tables["table3_ablation"]
    assert t3.rows == [["JumpLoRA + IncLoRA", "global", "—", "66.00*", "63.75"]]

    markdown = report.markdown()
    assert "| Method | Order 4 | paper | Order 5 | paper | LS OA | paper |" in markdown
    assert f"| JumpLoRA + IncLoRA | 72.00 ± {std:.2f} | 65.35 |" in markdown
    assert "ddof = 1" in markdown

    sparsity_rows = {(row[0], row[1]): row for row in tables["sparsity_overlap"].rows}
    row = sparsity_rows[("JumpLoRA + IncLoRA", "Order 4")]
    # per finished run: mean of 26/32, 26/32, 28/32; the unfinished one: 26/32 over its one task
    per_run = (26 + 26 + 28) / 3 / 32
    assert row[2] == "3"
    assert row[3].startswith(f"{100 * np.mean([per_run, per_run, 26 / 32]):.1f} ± ")
    assert row[4] == "87.6 %" and row[6] == "0.065"
    assert row[5] == f"{(1 / 3 + 1 / 14) / 2:.3f} ± 0.000"  # the unfinished run has no overlap yet
    assert ("ELLA", "Order 4") not in sparsity_rows  # no updates


def test_variants_get_their_own_rows_and_table3_paper_values(tmp_path):
    roots = [
        write_run(tmp_path / "g", threshold_mode="global", metrics={"OA": 63.0}),
        write_run(tmp_path / "l", threshold_mode="local", metrics={"OA": 61.0}),
        write_run(tmp_path / "es", method="jumplora+ella", ella_penalty="sparse", metrics={"OA": 72.0}),
        write_run(tmp_path / "ei", method="jumplora+ella", ella_penalty="interp", metrics={"OA": 71.0}),
    ]
    report = build_report([load_run(r) for r in roots])
    tables = {t.name: t for t in report.tables}
    labels = [row[0] for row in tables["table1_oa"].rows]
    assert labels == ["JumpLoRA + IncLoRA [threshold_mode=global]", "JumpLoRA + IncLoRA [threshold_mode=local]",
                      "JumpLoRA + ELLA [ella_penalty=interp]", "JumpLoRA + ELLA [ella_penalty=sparse]"]
    assert tables["table3_ablation"].rows == [
        ["JumpLoRA + IncLoRA", "global", "—", "63.00*", "63.75"],
        ["JumpLoRA + IncLoRA", "local", "—", "61.00*", "62.96"],
        ["JumpLoRA + ELLA", "global", "interp.", "71.00*", "72.15"],
        ["JumpLoRA + ELLA", "global", "sparse", "72.00*", "71.90"],
    ]


def test_report_command_writes_files_and_leaves_inputs_alone(tmp_path, capsys):
    roots, _ = _runs_for_report(tmp_path / "runs")
    before = file_digests(tmp_path / "runs")
    out = tmp_path / "out"
    assert main(["report", *map(str, roots), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# JumpLoRA report")
    assert "unfinished" in captured.err and "jumplora report: warning:" in captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "report.md", "table1_oa.csv", "table2_bwt_fwt.csv", "table3_ablation.csv", "sparsity_overlap.csv",
        "per_order.csv", "runs.csv", "thresholds.csv", "paired.csv"])
    assert (out / "report.md").read_text() == captured.out
    per_order = {(r["method"], r["order"]): r for r in _csv(out / "per_order.csv")}
    assert float(per_order[("JumpLoRA + IncLoRA", "4")]["OA_mean"]) == pytest.approx(72.0)
    assert float(per_order[("JumpLoRA + IncLoRA", "4")]["OA_std"]) == pytest.approx(2.828427, rel=1e-5)
    assert per_order[("JumpLoRA + IncLoRA", "5")]["OA_std"] == ""
    assert file_digests(tmp_path / "runs") == before

    assert main(["report", str(roots[0]), "--out", str(out), "--format", "csv"]) == 0
    assert main(["report", str(roots[0]), "--out", str(roots[0])]) == 2
    assert "choose another folder" in capsys.readouterr().err
    assert file_digests(tmp_path / "runs") == before
    assert main(["report", str(roots[0]), "--out", str(out), "--format", "xls"]) == 2


def test_report_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser(only="report").parse_args(["report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: ./report)" in text and "(default: md,csv)" in text and "(default: middle)" in text


# -- ELLA λ by the balancing rule ----------------------------------------------------------------------
def test_ella_lambda_balances_end_of_task_loss_and_penalty_by_hand(tmp_path, capsys):
    from jumplora.analysis.ella_lambda import balance_table, suggested_lambda

    # ΔW1 = [[1,0],[2,0]], ΔW2 = [[1,1],[0,0]], ΔW3 = [[0,3],[0,1]] (unscaled; the files hold β = 4)
    q = T5_Q.format(0)
    updates = [
        lowrank_update("MNLI", {q: ([[1.0, 0.0]], [[1.0], [2.0]])}),
        lowrank_update("CB", {q: ([[1.0, 1.0]], [[1.0], [0.0]])}),
        lowrank_update("WiC", {q: ([[0.0, 1.0]], [[3.0], [1.0]])}),
    ]
    losses = {"MNLI": [7.0, 7.0], "CB": [5.0, 3.0, 1.0, 1.0, 1.0], "WiC": [9.0, 9.0, 9.0, 9.0, 18.0]}
    root = write_run(tmp_path / "run", method="inclora", updates=updates,
                     losses={task: [{"task_loss": v} for v in values] for task, values in losses.items()})

    balances = balance_table(load_run(root), tail=0.4, convention="unscaled-sum")
    # CB: ‖ΔW2 ⊙ ΔW1‖² = 1, CE = mean(1, 1) = 1; WiC: ‖ΔW3 ⊙ (ΔW1+ΔW2)‖² = (3·1)² = 9, CE = 13.5
    assert [b.task for b in balances] == ["CB", "WiC"]
    assert [b.penalty for b in balances] == pytest.approx([1.0, 9.0])
    assert [b.cross_entropy for b in balances] == pytest.approx([1.0, 13.5])
    assert [b.balancing_lambda for b in balances] == pytest.approx([1.0, 1.5])
    assert suggested_lambda(balances) == 1  # geometric mean 1.22, one significant figure

    assert main(["ella-lambda", str(root), "--tail", "0.4", "--convention", "unscaled-sum"]) == 0
    out = capsys.readouterr().out
    assert "suggested ella_lambda: 1\n" in out and "penalty convention: unscaled-sum" in out


def test_ella_lambda_without_updates_is_a_one_line_error(tmp_path, capsys):
    root = write_run(tmp_path / "run", method="inclora", keep_updates=False)
    assert main(["ella-lambda", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no update files" in err and str(root) in err


def test_runs_table_shows_wall_time_and_peak_memory(tmp_path):
    from jumplora.analysis.report import table_runs

    fast = write_run(tmp_path / "a", metrics={"wall_time_s": 1389.4, "peak_memory_mb": 6500.4})
    slow = write_run(tmp_path / "b", seed=43, metrics={"wall_time_s": 7325.0, "peak_memory_mb": None})
    table = table_runs([load_run(fast), load_run(slow)])
    cells = {row[0]: row for row in table.rows}
    assert cells[str(fast)][-2:] == ["23 min 09 s", "6.3 GiB"]
    assert cells[str(slow)][-2:] == ["2 h 02 min", "—"]
    assert "23 min 09 s" in table.markdown()
    assert table.csv().splitlines()[0].endswith("wall_time_s,peak_memory_mb")


# -- compact supports ------------------------------------------------------------------------------
def test_compact_supports_give_the_same_sparsity_and_overlap_without_updates(tmp_path, capsys):
    import shutil

    root = write_run(tmp_path / "run", updates=three_task_updates())
    before = run_stats(load_run(root), "middle")
    assert main(["compact", str(root), "--layer", "1"]) == 0  # block 1 is the middle of blocks 0-2
    assert "wrote 3 supports files" in capsys.readouterr().out
    assert sorted(p.name for p in (root / "supports").iterdir()) == sorted(p.name for p in (root / "updates").iterdir())
    shutil.rmtree(root / "updates")

    run = load_run(root)
    after = run_stats(run, "middle")
    np.testing.assert_allclose(after.sparsity_all, before.sparsity_all)
    np.testing.assert_allclose(after.sparsity_layer, before.sparsity_layer)
    np.testing.assert_allclose(after.jaccard, before.jaccard)
    np.testing.assert_allclose(after.jaccard_pairs, before.jaccard_pairs)
    assert after.depth == before.depth and after.kinds == {"sparse"}
    # by hand, block 1's q: mnli {0,1,2,3}, cb {2,3,4,5} -> J = 2/6
    assert run.update(1).modules[T5_Q.format(1)].support().flatten().nonzero().flatten().tolist() == [2, 3, 4, 5]

    # another layer's supports were not kept: a one-line error naming the file
    with pytest.raises(UserError, match=r"supports/00-MNLI.safetensors keeps the supports of .* only"):
        run_stats(run, 0)


def test_compact_refuses_plain_lora_updates(tmp_path, capsys):
    root = write_run(tmp_path / "run", method="inclora", tasks=("MNLI",),
                     updates=[lowrank_update("MNLI", {T5_Q.format(0): ([[1.0, 0.0]], [[1.0], [2.0]])})])
    assert main(["compact", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "plain-LoRA update has no sparse support" in err
    assert not (root / "supports").exists() or not any((root / "supports").iterdir())


def test_threshold_movement_from_losses_and_task_records(tmp_path):
    from jumplora.analysis.report import table_thresholds, threshold_movement

    # MNLI: 10 steps, S_start = step 2 (floor of 0.2 · 10), where τ is 0.010 after its first update;
    # 0.0102 · 1.05 at the merge. CB: one step, never reaches S_start: τ is set after the last step,
    # so it did not move.
    losses = {"MNLI": [{"task_loss": 1.0, "thresholds": {"global": 0.5 if s < 2 else 0.010 + s / 1e4}}
                       for s in range(10)],
              "CB": [{"task_loss": 1.0, "thresholds": {"global": 0.5}}]}
    updates = [sparse_update("MNLI", {"q": [0, 1, 2, 3]}), sparse_update("CB", {"q": [0, 1]})]  # 75 %, 87.5 %
    root = write_run(tmp_path / "run", tasks=("MNLI", "CB"), s_start=0.2, s_final=0.8, losses=losses,
                     updates=updates, thresholds={"MNLI": {"global": 0.0102 * 1.05}, "CB": {"global": 0.02}})
    run = load_run(root)
    assert [stage.s_start_step for stage in run.stages] == [2, 1]  # as the task records state them
    movement = threshold_movement(run)
    assert [m[0] for m in movement] == ["MNLI", "CB"]
    assert movement[0][1] == pytest.approx(0.05) and movement[0][2] == 0.75
    assert movement[1][1] == pytest.approx(0.0) and movement[1][2] == 0.875
    table = table_thresholds([run])
    assert table.rows == [[str(root), "MNLI, CB", "+5.00 %, +0.00 %", "75.0 %, 87.5 %"]]
    assert table_thresholds([load_run(write_run(tmp_path / "plain", method="inclora"))]).rows == []


def test_chance_jaccard_of_independent_supports_by_hand_and_by_sampling():
    from jumplora.analysis.overlap import PackedSupport, chance_jaccard

    a = PackedSupport.of(_mask(range(4), shape=(4, 4)))  # density 1/4
    b = PackedSupport.of(_mask(range(8), shape=(4, 4)))  # density 1/2
    # pq / (p + q − pq) = (1/8) / (3/4 − 1/8) = 0.2
    assert chance_jaccard(a, b) == pytest.approx(0.2)
    generator = np.random.default_rng(0)
    x, y = generator.random((2, 400, 400))
    observed = PackedSupport.of(x < 0.25).jaccard(PackedSupport.of(y < 0.5))
    expected = chance_jaccard(PackedSupport.of(x < 0.25), PackedSupport.of(y < 0.5))
    assert observed == pytest.approx(expected, abs=0.005)
    # disjoint supports are below chance, identical ones above
    c = PackedSupport.of(_mask(range(8, 12), shape=(4, 4)))
    assert a.jaccard(c) == 0.0 < chance_jaccard(a, c) < a.jaccard(a)


def test_report_shows_jaccard_at_chance(tmp_path):
    run = load_run(write_run(tmp_path / "run", updates=three_task_updates()))
    stats = run_stats(run, "middle")
    # block 1: q is 4x4 (16 entries), v is 4x4; cb vs mnli: q 4/16 & 4/16, v 2/16 & 2/16
    q = (1 / 16) / (8 / 16 - 1 / 16)
    v = (4 / 256) / (4 / 16 - 4 / 256)
    assert stats.jaccard_chance[1] == pytest.approx((q + v) / 2)
    assert np.isnan(stats.jaccard_chance[0])
    table = next(t for t in build_report([run]).tables if t.name == "sparsity_overlap")
    assert table.columns[7] == "Jaccard at chance"
    assert table.rows[0][7] == f"{stats.mean_jaccard_chance:.3f}"


def test_paired_table_differences_seed_by_seed(tmp_path):
    """JumpLoRA − base on matching seeds only; a seed without its base run is not paired."""
    roots = [
        write_run(tmp_path / "i42", method="inclora", seed=42, metrics={"OA": 60.0, "BWT": -10.0, "FWT": 1.0,
                                                                        "FWT_final": -5.0}),
        write_run(tmp_path / "i43", method="inclora", seed=43, metrics={"OA": 62.0, "BWT": -9.0, "FWT": 0.0}),
        write_run(tmp_path / "j42", method="jumplora", seed=42, metrics={"OA": 63.0, "BWT": -6.0, "FWT": 0.5,
                                                                         "FWT_final": -2.0}),
        write_run(tmp_path / "j43", method="jumplora", seed=43, metrics={"OA": 61.0, "BWT": -8.0, "FWT": 1.0}),
        write_run(tmp_path / "j44", method="jumplora", seed=44, metrics={"OA": 90.0, "BWT": 0.0}),
        write_run(tmp_path / "e42", method="ella", seed=42, metrics={"OA": 50.0}),
    ]
    report = build_report([load_run(root) for root in roots])
    table = {t.name: t for t in report.tables}["paired"]
    # OA differences +3, -1 (seed 44 has no IncLoRA run): mean 1, sample std sqrt(8); BWT +4, +1
    assert table.rows == [[
        "JumpLoRA + IncLoRA − IncLoRA", "Order 4", "42, 43", f"1.00 ± {math.sqrt(8):.2f}", "n/a",
        f"2.50 ± {math.sqrt(4.5):.2f}", f"0.25 ± {math.sqrt(1.125):.2f}", "3.00", "1 of 2 seeds"]]
    csv_row = dict(zip(table.csv_columns, table.csv_rows[0]))
    assert csv_row["n"] == 2 and csv_row["oa_wins"] == 1
    assert csv_row["delta_OA_mean"] == pytest.approx(1.0)
    assert "JumpLoRA against its base method" in report.markdown()
