"""`jumplora data` prints the per-task table of an order."""

from __future__ import annotations

import pytest

from jumplora.cli import main
from jumplora.data import ORDERS


def test_data_command_prints_order_4(cl_benchmark_dir, capsys):
    assert main(["data", "--order", "4", "--data-dir", str(cl_benchmark_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"order 4 (long benchmark): 15 tasks from {cl_benchmark_dir}"
    assert out[2].split()[:8] == ["#", "task", "group", "train", "val", "test", "dropped", "sources"]
    rows = {line.split()[1]: line for line in out[3:18]}
    assert list(rows) == list(ORDERS[4])
    assert rows["MNLI"].split()[:8] == ["1", "MNLI", "NLI", "2392", "598", "1500", "test", "131"]
    assert "NLI/MNLI/train.json NLI/MNLI/test.json" in rows["MNLI"]
    assert rows["MNLI"].endswith("neutral, entailment, contradiction")
    assert rows["CB"].split()[:7] == ["2", "CB", "NLI", "200", "50", "56", "0"]
    assert rows["COPA"].split()[3:6] == ["320", "80", "100"]
    # aligned: the train column ends at the same place on every row
    header = out[2]
    end = header.index("train") + len("train")
    assert all(line[end - 1].isdigit() and line[end] == " " for line in out[3:19])


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
