"""Behaviour kept: the report of the committed runs is, byte for byte, the committed report.

`results/report/` is what `jumplora report results/runs/* --out results/report` wrote; any change to
how runs are read, grouped or tabulated that moves a number (or a word) shows here. To accept an
intended change, regenerate it with that command and say why in the commit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jumplora.cli import main

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "report"


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="no committed report")
def test_the_committed_runs_give_the_committed_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the runs table names each run by the path it was given, as the shell does
    runs = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "results" / "runs").iterdir())
    assert main(["report", *runs, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    expected = sorted(path.name for path in REFERENCE.iterdir())
    assert sorted(path.name for path in tmp_path.iterdir()) == expected
    assert sum(name.endswith(".csv") for name in expected) == 8
    for name in expected:
        assert (tmp_path / name).read_text(encoding="utf-8") == (REFERENCE / name).read_text(encoding="utf-8"), name
