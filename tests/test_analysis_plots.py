"""Figures of the analysis layer: axes, titles, labels, and PNG files of the asked pixel size."""

from __future__ import annotations

import struct
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from jumplora.analysis import load_run  # noqa: E402
from jumplora.analysis import plots  # noqa: E402
from jumplora.analysis.figures import figures  # noqa: E402
from jumplora.cli import build_parser, main  # noqa: E402
from jumplora.errors import UserError  # noqa: E402
from jumplora.rundir import RunWarning  # noqa: E402
from rundirs import three_task_updates, write_run  # noqa: E402


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def run(tmp_path):
    accuracy = np.array([[80.0, np.nan, np.nan], [70.0, 90.0, np.nan], [60.0, 85.0, 75.0]])
    return load_run(write_run(tmp_path / "run", accuracy=accuracy, updates=three_task_updates()))


def test_accuracy_heatmap_axes_and_png_size(run, tmp_path):
    figure = plots.accuracy_heatmap(run, figsize=(6, 4), dpi=100)
    ax, colorbar = figure.axes
    assert ax.get_title() == "Accuracy (%)\nJumpLoRA + IncLoRA, Order 4, seed 42"
    assert (ax.get_xlabel(), ax.get_ylabel(), colorbar.get_ylabel()) == (
        "evaluated task", "after training task", "accuracy (%)")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["MNLI", "CB", "WiC"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["MNLI", "CB", "WiC"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["80.0", "70.0", "90.0", "60.0", "85.0", "75.0"])
    (path,) = plots.save_figure(figure, tmp_path, "heat", ["png"])
    assert path.stat().st_size > 0 and png_size(path) == (600, 400)
    assert not list(tmp_path.glob(".*.tmp"))


def test_bwt_radial_one_polar_plot_per_order():
    panels = [
        (4, ["mnli", "cb", "wic"], {"IncLoRA": [-20.0, -5.0, 0.0], "JumpLoRA + IncLoRA": [-8.0, -2.0, 0.0]}),
        (5, ["wic", "mnli"], {"ELLA": [-1.0, 0.0]}),
    ]
    figure = plots.bwt_radial(panels, figsize=(8, 4), dpi=50)
    assert len(figure.axes) == 2
    assert [ax.name for ax in figure.axes] == ["polar", "polar"]
    assert [ax.get_title() for ax in figure.axes] == ["Order 4", "Order 5"]
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["mnli", "cb", "wic"]
    lines = {line.get_label(): line for line in figure.axes[0].lines}
    assert list(lines["IncLoRA"].get_ydata()) == [-20.0, -5.0, 0.0, -20.0]  # closed around the circle
    assert lines["IncLoRA"].get_color() == plots.METHOD_COLOURS["IncLoRA"]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["IncLoRA", "JumpLoRA + IncLoRA", "ELLA"]
    assert "BWT" in figure.get_suptitle()


def test_sparsity_overlap_two_panels():
    series = {"JumpLoRA + ELLA": ([0.95, 0.96, 0.94], [np.nan, 0.01, 0.02]),
              "JumpLoRA + IncLoRA": ([0.87, 0.88, 0.86], [np.nan, 0.06, 0.07])}
    figure = plots.sparsity_overlap(4, ["mnli", "cb", "wic"], series, "middle layer", figsize=(8, 4), dpi=50)
    left, right = figure.axes
    assert (left.get_title(), left.get_ylabel()) == ("Sparsity of ΔW_jump", "sparsity (%)")
    assert (right.get_title(), right.get_ylabel()) == ("Mean Jaccard overlap with earlier tasks", "Jaccard similarity")
    assert left.get_xlabel() == right.get_xlabel() == "task (training order)"
    assert [t.get_text() for t in right.get_xticklabels()] == ["mnli", "cb", "wic"]
    assert left.lines[0].get_ydata() == pytest.approx([95.0, 96.0, 94.0])
    assert left.lines[1].get_color() == right.lines[1].get_color() == plots.METHOD_COLOURS["JumpLoRA + IncLoRA"]
    assert figure.get_suptitle() == "Order 4: middle layer"


def test_sparsity_overlap_draws_the_chance_level_dotted():
    series = {"JumpLoRA + IncLoRA": ([0.87, 0.88, 0.86], [np.nan, 0.06, 0.07], [np.nan, 0.065, 0.07])}
    figure = plots.sparsity_overlap(4, ["mnli", "cb", "wic"], series, "middle layer", figsize=(8, 4), dpi=50)
    right = figure.axes[1]
    assert len(right.lines) == 2 and right.lines[1].get_linestyle() == ":"
    assert right.lines[1].get_ydata()[1:] == pytest.approx([0.065, 0.07])
    assert right.lines[1].get_color() == right.lines[0].get_color()
    assert "chance" in right.get_title()
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["JumpLoRA + IncLoRA"]


def test_sparsity_depth_panels_per_stack():
    t5 = {"JumpLoRA + ELLA": {"encoder.block": {0: 0.9, 1: 0.95}, "decoder.block": {0: 0.8, 1: 0.85}}}
    figure = plots.sparsity_depth(4, t5, figsize=(8, 4), dpi=50)
    assert [ax.get_title() for ax in figure.axes] == ["Encoder", "Decoder"]
    assert figure.axes[0].get_xlabel() == "block index (depth)" and figure.axes[0].get_ylabel() == "sparsity (%)"
    assert list(figure.axes[1].lines[0].get_xdata()) == [0, 1]
    assert figure.axes[1].lines[0].get_ydata() == pytest.approx([80.0, 85.0])
    llama = {"JumpLoRA + IncLoRA": {"model.layers": {0: 0.9, 1: 0.8, 2: 0.7}}}
    figure = plots.sparsity_depth(5, llama, figsize=(4, 4), dpi=50)
    assert [ax.get_title() for ax in figure.axes] == ["model.layers"]


def test_method_colours_are_fixed():
    assert plots.method_colour("JumpLoRA + ELLA [threshold_mode=local]") == plots.METHOD_COLOURS["JumpLoRA + ELLA"]
    assert plots.method_colour("mystery") == plots.method_colour("mystery")


def test_figures_of_runs(tmp_path):
    roots = [write_run(tmp_path / f"s{seed}", seed=seed, updates=three_task_updates()) for seed in (42, 43)]
    roots.append(write_run(tmp_path / "ella", method="ella"))
    runs = [load_run(r) for r in roots]
    made = dict(figures(runs, dpi=40, size=(4, 3)))
    assert list(made) == ["accuracy-s42", "accuracy-s43", "accuracy-ella", "bwt-radial",
                          "sparsity-overlap-order4", "sparsity-depth-order4"]
    radial = made["bwt-radial"]
    assert [line.get_label() for line in radial.axes[0].lines if not line.get_label().startswith("_")] == [
        "JumpLoRA + IncLoRA", "ELLA"]
    left, right = made["sparsity-overlap-order4"].axes
    assert [line.get_label() for line in left.lines] == ["JumpLoRA + IncLoRA"]  # ELLA has no updates
    assert right.lines[0].get_ydata() == pytest.approx([np.nan, 1 / 3, 1 / 14], nan_ok=True)
    assert "encoder block 1" in made["sparsity-overlap-order4"].get_suptitle()


def test_plot_command_writes_pngs_of_the_asked_size(tmp_path, capsys):
    roots = [write_run(tmp_path / "runs" / "a", updates=three_task_updates()),
             write_run(tmp_path / "runs" / "b", method="jumplora+ella", order=5, updates=three_task_updates())]
    out = tmp_path / "figs"
    assert main(["plot", *map(str, roots), "--out", str(out), "--formats", "png", "--dpi", "50",
                 "--size", "8,6"]) == 0
    printed = capsys.readouterr().out.split()
    names = ["accuracy-a.png", "accuracy-b.png", "bwt-radial.png", "sparsity-overlap-order4.png",
             "sparsity-depth-order4.png", "sparsity-overlap-order5.png", "sparsity-depth-order5.png"]
    assert printed == [str(out / name) for name in names]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for name in names:
        assert (out / name).stat().st_size > 0 and png_size(out / name) == (400, 300)
    assert main(["plot", str(roots[0]), "--out", str(out / "svg")]) == 0
    assert sorted(p.suffix for p in (out / "svg").iterdir()).count(".svg") == 4


def test_plot_command_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jumplora plot: error: ") and err.count("\n") == 1
    root = write_run(tmp_path / "r")
    assert main(["plot", str(root), "--formats", "gif", "--out", str(tmp_path / "o")]) == 2
    assert "unknown format 'gif'" in capsys.readouterr().err


def test_plot_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser(only="plot").parse_args(["plot", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: ./plots)" in text and "(default: png,svg)" in text and "(default: 150.0)" in text


def test_missing_matplotlib_is_a_user_error(monkeypatch, run):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(UserError, match=r"pip install 'jumplora\[plot\]'"):
        plots.accuracy_heatmap(run)


def test_unfinished_runs_are_drawn_but_not_in_the_radial_plot(tmp_path):
    root = write_run(tmp_path / "u", finished=False, completed=2, updates=three_task_updates())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunWarning)
        run = load_run(root)
        made = dict(figures([run], dpi=30, size=(3, 3)))
    assert "accuracy-u" in made and "bwt-radial" not in made
    assert made["sparsity-overlap-order4"].axes[0].lines[0].get_ydata() == pytest.approx(
        [2600 / 32, 2600 / 32, np.nan], nan_ok=True)
