"""Analyses on run directories produced by the runner itself (tiny T5, two seeds, two methods)."""

import json

import numpy as np
import pytest

from jumplora.analysis.rundir import load_run
from jumplora.cli import main
from jumplora.models import tiny_t5
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
