"""The paired test-set bootstrap of the OA difference (analysis/bootstrap.py)."""

import numpy as np
import pytest

from jumplora.analysis.bootstrap import final_correct, paired_oa_bootstrap


def _c(bits):
    return np.array([int(b) for b in bits], dtype=np.uint8)


def test_identical_runs_give_a_zero_width_interval():
    run = {"a": _c("0110"), "b": _c("101")}
    assert paired_oa_bootstrap([(run, run)], replicates=200) == (0.0, 0.0, 0.0)


def test_observed_difference_is_the_oa_difference_and_lies_inside():
    gen = np.random.default_rng(0)
    jump = {"a": (gen.random(400) < 0.7).astype(np.uint8), "b": (gen.random(300) < 0.5).astype(np.uint8)}
    base = {"a": (gen.random(400) < 0.6).astype(np.uint8), "b": (gen.random(300) < 0.5).astype(np.uint8)}
    delta, lower, upper = paired_oa_bootstrap([(jump, base)], replicates=4000)
    oa = lambda run: 100 * np.mean([run["a"].mean(), run["b"].mean()])  # noqa: E731
    assert delta == pytest.approx(oa(jump) - oa(base))
    assert lower < delta < upper
    # the half-width is about 1.96 standard errors of the mean of the two tasks' differences
    se = 100 * 0.5 * np.sqrt(sum(np.var(jump[t].astype(int) - base[t].astype(int)) / len(jump[t]) for t in "ab"))
    assert (upper - lower) / 2 == pytest.approx(1.96 * se, rel=0.1)


def test_more_seeds_narrow_the_interval_and_pairing_matters():
    gen = np.random.default_rng(1)
    shared = (gen.random(200) < 0.6).astype(np.uint8)
    flip = (gen.random(200) < 0.05).astype(np.uint8)
    jump, base = {"t": shared ^ flip}, {"t": shared}
    one = paired_oa_bootstrap([(jump, base)], replicates=2000)
    three = paired_oa_bootstrap([(jump, base)] * 3, replicates=2000)
    assert three[2] - three[1] < one[2] - one[1]
    # unpaired (independent examples with the same accuracies) would be far wider than paired
    assert one[2] - one[1] < 10


def test_mismatched_runs_are_refused():
    with pytest.raises(ValueError, match="same examples"):
        paired_oa_bootstrap([({"t": _c("01")}, {"t": _c("011")})])
    with pytest.raises(ValueError, match="different tasks"):
        paired_oa_bootstrap([({"t": _c("01")}, {"u": _c("01")})])


def test_final_correct_reads_the_last_task_record(tmp_path):
    """A tiny real run keeps each test example's correctness; a run made before that has none."""
    from jumplora.rundir import load_run
    from rundirs import committed_run
    from test_runner import run

    real = load_run(run(tmp_path, method="inclora").run_dir)
    got = final_correct(real)
    last = real.stages[-1].record.correct
    assert set(got) == set(real.tasks) == set(last)
    for task in real.tasks:
        assert "".join(map(str, got[task].tolist())) == last[task]
        assert got[task].mean() * 100 == pytest.approx(real.stages[-1].record.accuracy[task])
    assert final_correct(load_run(committed_run("inclora-order1-seed42", tmp_path))) is None


def test_report_shows_the_interval_for_real_paired_runs(tmp_path):
    """Two tiny real runs of one seed: the paired table's interval contains their Δ OA."""
    from jumplora.analysis.report import build_report
    from jumplora.rundir import load_run
    from test_runner import run

    base = run(tmp_path, method="inclora", test_per_class=6)
    jump = run(tmp_path, method="jumplora", test_per_class=6)
    report = build_report([load_run(base.run_dir), load_run(jump.run_dir)])
    table = {t.name: t for t in report.tables}["paired"]
    row = dict(zip(table.csv_columns, table.csv_rows[0]))
    delta = jump.metrics["OA"] - base.metrics["OA"]
    assert row["delta_OA_mean"] == pytest.approx(delta)
    assert row["delta_OA_ci_low"] <= delta + 1e-9 <= row["delta_OA_ci_high"] + 2e-9
    assert table.rows[0][4].startswith("[")
