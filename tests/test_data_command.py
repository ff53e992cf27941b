"""`jumplora data` prints the per-task table of an order."""

from __future__ import annotations

import pytest

from jumplora.cli import main
from jumplora.data import ORDERS


def test_data_command_prints_order_4(cl_benchmark_dir, capsys):
    assert main(["data", "--order", "4", "--data-dir", str(cl_benchmark_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"order 4 (long benchmark): 15 tasks from {cl_benchmark_dir}"
    assert out[2].split()[:9] == ["#", "task", "group", "train", "val", "test", "dropped",
                                  "unlabelled", "sources"]
    rows = {line.split()[1]: line for line in out[3:18]}
    assert list(rows) == list(ORDERS[4])
    # the run's default: MNLI's 131 unlabelled test records are kept (counted as wrong)
    assert rows["MNLI"].split()[:8] == ["1", "MNLI", "NLI", "2392", "598", "1631", "0", "131"]
    assert "NLI/MNLI/train.json NLI/MNLI/test.json" in rows["MNLI"]
    assert rows["MNLI"].endswith("neutral, entailment, contradiction")
    assert rows["CB"].split()[:8] == ["2", "CB", "NLI", "200", "50", "56", "0", "0"]
    assert rows["COPA"].split()[3:6] == ["320", "80", "100"]
    # aligned: the train column ends at the same place on every row
    header = out[2]
    end = header.index("train") + len("train")
    assert all(line[end - 1].isdigit() and line[end] == " " for line in out[3:19])


def test_data_command_drop_unlabelled_and_given_split(cl_benchmark_dir, capsys):
    assert main(["data", "--order", "mnli", "--data-dir", str(cl_benchmark_dir),
                 "--unlabelled-test", "drop"]) == 0
    row = capsys.readouterr().out.splitlines()[3]
    assert row.split()[:9] == ["1", "MNLI", "NLI", "2392", "598", "1500", "test", "131", "0"]
    dev_dir = cl_benchmark_dir.parent / "CL_Benchmark_dev"
    assert main(["data", "--order", "mnli,cb", "--data-dir", str(dev_dir)]) == 0
    out = capsys.readouterr().out
    assert "split=auto" in out and "unlabelled_test=count-wrong" in out
    mnli, cb = out.splitlines()[3:5]
    assert mnli.split()[:8] == ["1", "MNLI", "NLI", "2400", "600", "1631", "0", "131"]
    assert "NLI/MNLI/train.json NLI/MNLI/dev.json NLI/MNLI/test.json" in mnli
    assert cb.split()[3:6] == ["199", "51", "56"]
    assert main(["data", "--order", "cb", "--data-dir", str(dev_dir), "--split", "protocol"]) == 0
    # the protocol resamples the dev folder's train.json (199 records) 80/20
    assert capsys.readouterr().out.splitlines()[3].split()[3:6] == ["160", "39", "56"]


def test_data_command_scale_knobs_and_errors(cl_benchmark_dir, capsys, monkeypatch):
    assert main(["data", "--order", "cb,copa", "--data-dir", str(cl_benchmark_dir),
                 "--train-per-class", "5", "--val-per-class", "2", "--test-per-class", "3"]) == 0
    out = capsys.readouterr().out
    assert "train_per_class=5" in out
    assert [line.split()[3:6] for line in out.splitlines()[3:5]] == [["15", "6", "9"],
                                                                    ["10", "4", "6"]]
    monkeypatch.delenv("JUMPLORA_DATA", raising=False)
    assert main(["data", "--order", "4"]) == 2
    assert capsys.readouterr().err.strip() == (
        "jumplora data: error: no data folder given: pass --data-dir or set $JUMPLORA_DATA")
    assert main(["data", "--order", "9", "--data-dir", str(cl_benchmark_dir)]) == 2
    assert "unknown order 9" in capsys.readouterr().err


def test_data_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    assert "(default: 42)" in out and "(default: 500)" in out
