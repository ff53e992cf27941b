"""Analyses on run directories produced by the runner itself (tiny models, real training)."""

import json

import numpy as np
import pytest

from jumplora.analysis.report import build_report, table_runs
from jumplora.analysis.stats import run_stats
from jumplora.cli import main
from jumplora.rundir import load_run
from jumplora.testing import tiny_llama, tiny_t5
from jumplora.train import run_continual
from jumplora.updates import TaskUpdate

from test_runner import tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    paths = []
    for method in ("inclora", "jumplora"):
        for seed in (42, 43):
            config = tiny_config(root, method, name=f"{method}-seed{seed}", seed=seed, rank=2)
            paths.append(run_continual(config, loaded=tiny_t5(seed=0)).run_dir)
    return paths


def test_sparsity_from_updates_matches_the_runner(runs):
    for path in runs:
        metrics = json.loads((path / "metrics.json").read_text())
        for index, task in enumerate(metrics["tasks"]):
            update = TaskUpdate.load(path / "updates" / f"{index:02d}-{task}.safetensors")
            assert update.sparsity() == pytest.approx(metrics["sparsity"][task])
            if "jumplora" in path.name:
                # by hand: zeroed entries over all adapted entries
                zeros = sum(m.numel - int(m.support().sum()) for m in update.modules.values())
                total = sum(m.numel for m in update.modules.values())
                assert metrics["sparsity"][task] == pytest.approx(zeros / total) and zeros > 0


def test_report_aggregates_the_two_seeds(runs, tmp_path, capsys):
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "report")]) == 0
    markdown = capsys.readouterr().out
    assert "JumpLoRA + IncLoRA" in markdown and "IncLoRA" in markdown
    oa = [json.loads((p / "metrics.json").read_text())["OA"] for p in runs if p.name.startswith("jumplora")]
    mean, std = np.mean(oa), np.std(oa, ddof=1)
    assert f"{mean:.2f} ± {std:.2f}" in markdown
    assert (tmp_path / "report" / "report.md").read_text().strip()


def test_plot_writes_figures_from_real_runs(runs, tmp_path):
    assert main(["plot", *map(str, runs), "--out", str(tmp_path / "plots"), "--formats", "png"]) == 0
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pngs) >= 4 and all(p.stat().st_size > 1000 for p in pngs)
    assert load_run(runs[0]).finished


# -- every gated method is a JumpLoRA variant of its base, wherever the report compares them ----------------
PEERS = ("ewc", "olora", "lori")


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    """EWC, O-LoRA and LoRI, plain and behind jumplora+, one seed each (tiny Llama, CB then COPA)."""
    root = tmp_path_factory.mktemp("peers")
    methods = [m for peer in PEERS for m in (peer, f"jumplora+{peer}")]
    return {m: load_run(run_continual(tiny_config(root, m), loaded=tiny_llama(seed=0)).run_dir) for m in methods}


def test_gated_peers_appear_in_the_threshold_and_paired_tables(peers):
    tables = {t.name: t for t in build_report(list(peers.values())).tables}
    thresholds = {row[0] for row in tables["thresholds"].rows}
    assert thresholds == {str(peers[f"jumplora+{peer}"].path) for peer in PEERS}
    assert {row[1] for row in tables["thresholds"].csv_rows} == {
        "JumpLoRA + EWC", "JumpLoRA + O-LoRA", "JumpLoRA + LoRI"}
    paired = {row[0]: row for row in tables["paired"].rows}
    assert set(paired) == {"JumpLoRA + EWC − EWC", "JumpLoRA + O-LoRA − O-LoRA", "JumpLoRA + LoRI − LoRI"}
    strategy = {"EWC": "ewc", "O-LoRA": "olora", "LoRI": "lori"}
    for row in tables["paired"].csv_rows:  # jumplora label, base label, order, n, Δ OA mean, ...
        jump, base = peers[f"jumplora+{strategy[row[1]]}"], peers[strategy[row[1]]]
        assert row[3] == 1 and row[4] == pytest.approx(jump.metric("OA") - base.metric("OA"))


def test_a_multi_task_stage_reads_back_as_one_stage_of_both_tasks(tmp_path):
    result = run_continual(tiny_config(tmp_path, "mtl"), loaded=tiny_llama(seed=0))
    run = load_run(result.run_dir)
    assert run.tasks == ["CB", "COPA"] and run.finished and run.completed == 1
    (stage,) = run.stages
    assert stage.tasks == ("CB", "COPA") and stage.name == "CB+COPA"
    assert stage.update_path.name == "00-CB+COPA.safetensors" and stage.record.stage == ("CB", "COPA")
    assert set(stage.record.accuracy) == {"CB", "COPA"}  # evaluated on both after the one stage
    assert len(run.losses()["CB+COPA"]) == stage.record.steps
    assert len(run_stats(run).sparsity_all) == 1
    assert table_runs([run]).rows[0][4] == "1/1"
