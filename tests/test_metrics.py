"""The CL metrics (paper §4.2) against hand-computed matrices."""

import json
import math

import numpy as np
import pytest

from jumplora.metrics import (
    backward_transfer,
    compute_metrics,
    forgetting,
    forward_transfer,
    forward_transfer_final,
    overall_accuracy,
)

NAN = float("nan")

# 3 tasks; row i = after training task i, column j = task j; NaN above the diagonal.
M3 = [
    [80.0, NAN, NAN],
    [70.0, 90.0, NAN],
    [60.0, 85.0, 75.0],
]
SINGLE3 = [82.0, 88.0, 80.0]

# 4 tasks; the upper triangle holds (zero-shot) values that no metric may use, one intermediate
# entry a[2][0] is higher than the diagonal, and a[1][2], a[1][3], a[2][3] are missing.
M4 = [
    [50.0, 10.0, 20.0, 30.0],
    [45.0, 70.0, NAN, NAN],
    [55.0, 65.0, 60.0, NAN],
    [40.0, 68.0, 58.0, 90.0],
]
TASKS4 = ["dbpedia", "amazon", "yahoo", "agnews"]
SINGLE4 = {"dbpedia": 52.0, "amazon": 69.0, "yahoo": 65.0, "agnews": 85.0}


def test_3x3_by_hand():
    # OA = (60 + 85 + 75) / 3 = 220 / 3
    assert overall_accuracy(M3) == pytest.approx(220 / 3)
    # BWT = ((60 − 80) + (85 − 90)) / 2 = (−20 − 5) / 2 = −12.5
    assert backward_transfer(M3) == pytest.approx(-12.5)
    # FWT = ((80 − 82) + (90 − 88) + (75 − 80)) / 3 = (−2 + 2 − 5) / 3 = −5/3
    assert forward_transfer(M3, SINGLE3) == pytest.approx(-5 / 3)
    # forgetting: task 0: max(80, 70) − 60 = 20; task 1: max(90) − 85 = 5; last task: None
    assert forgetting(M3) == [pytest.approx(20.0), pytest.approx(5.0), None]


def test_fwt_two_definitions_on_3x3_by_hand():
    """§4.2's FWT uses the diagonal a[i][i]; the authors' script (and Table 2) the final row a[T-1][i]."""
    # §4.2: ((80 − 82) + (90 − 88) + (75 − 80)) / 3 = −5/3
    assert forward_transfer(M3, SINGLE3) == pytest.approx(-5 / 3)
    # script: ((60 − 82) + (85 − 88) + (75 − 80)) / 3 = (−22 − 3 − 5) / 3 = −10
    assert forward_transfer_final(M3, SINGLE3) == pytest.approx(-10.0)
    # = OA − mean single-task accuracy = 220/3 − 250/3
    assert forward_transfer_final(M3, SINGLE3) == pytest.approx(overall_accuracy(M3) - sum(SINGLE3) / 3)
    by_name = dict(zip(["a", "b", "c"], SINGLE3))
    assert forward_transfer_final(M3, by_name, ["a", "b", "c"]) == pytest.approx(-10.0)
    metrics = compute_metrics(M3, ["a", "b", "c"], by_name)
    assert metrics["FWT"] == pytest.approx(-5 / 3) and metrics["FWT_final"] == pytest.approx(-10.0)
    assert type(metrics["FWT_final"]) is float
    # the script's FWT does not read the diagonal, §4.2's does not read the final row's earlier cells
    a = np.array(M3)
    a[1, 1] = NAN
    assert forward_transfer_final(a, SINGLE3) == pytest.approx(-10.0)
    a = np.array(M3)
    a[2, 0] = NAN
    assert forward_transfer(a, SINGLE3) == pytest.approx(-5 / 3)
    with pytest.raises(ValueError, match=r"FWT_final.*a\[2\]\[0\]"):
        forward_transfer_final(a, SINGLE3)


def test_4x4_by_hand():
    a = np.array(M4)
    # OA = (40 + 68 + 58 + 90) / 4 = 256 / 4 = 64
    assert overall_accuracy(a) == pytest.approx(64.0)
    # BWT = ((40 − 50) + (68 − 70) + (58 − 60)) / 3 = (−10 − 2 − 2) / 3 = −14/3
    assert backward_transfer(a) == pytest.approx(-14 / 3)
    # FWT = ((50 − 52) + (70 − 69) + (60 − 65) + (90 − 85)) / 4 = (−2 + 1 − 5 + 5) / 4 = −1/4
    assert forward_transfer(a, SINGLE4, TASKS4) == pytest.approx(-0.25)
    assert forward_transfer(a, [52.0, 69.0, 65.0, 85.0]) == pytest.approx(-0.25)
    # forgetting: task 0: max(50, 45, 55) − 40 = 15 (the max is after task 2, not the diagonal);
    # task 1: max(70, 65) − 68 = 2; task 2: max(60) − 58 = 2; last task: None
    assert forgetting(a) == [pytest.approx(15.0), pytest.approx(2.0), pytest.approx(2.0), None]

    metrics = compute_metrics(M4, TASKS4, SINGLE4)
    assert set(metrics) == {"OA", "BWT", "FWT", "FWT_final", "forgetting"}
    assert metrics["OA"] == pytest.approx(64.0)
    assert metrics["BWT"] == pytest.approx(-14 / 3)
    assert metrics["FWT"] == pytest.approx(-0.25)
    # FWT_final = ((40 − 52) + (68 − 69) + (58 − 65) + (90 − 85)) / 4 = (−12 − 1 − 7 + 5) / 4 = −15/4
    assert metrics["FWT_final"] == pytest.approx(-3.75)
    assert list(metrics["forgetting"]) == TASKS4
    assert metrics["forgetting"]["dbpedia"] == pytest.approx(15.0)
    assert metrics["forgetting"]["agnews"] is None
    # full precision kept, plain Python floats (JSON-serialisable); rounding only for display
    assert metrics["BWT"] == -14 / 3 and type(metrics["BWT"]) is float
    json.dumps(metrics)


def test_upper_triangle_is_ignored():
    a = np.array(M4)
    b = a.copy()
    b[np.triu_indices(4, k=1)] = NAN
    assert compute_metrics(b, TASKS4, SINGLE4) == compute_metrics(a, TASKS4, SINGLE4)


def test_single_task():
    m = [[72.5]]
    assert overall_accuracy(m) == 72.5
    assert backward_transfer(m) is None
    assert forgetting(m) == [None]
    assert forward_transfer(m, [70.0]) == pytest.approx(2.5)
    metrics = compute_metrics(m, ["sst2"])
    assert metrics == {"OA": 72.5, "BWT": None, "FWT": None, "FWT_final": None, "forgetting": {"sst2": None}}
    assert compute_metrics(m, ["sst2"], [70.0])["FWT_final"] == pytest.approx(2.5)  # T = 1: both are a − a0


def test_missing_single_results_give_no_fwt():
    assert forward_transfer(M3, None) is None
    assert forward_transfer(M3, [82.0, None, 80.0]) is None
    assert forward_transfer(M3, [82.0, NAN, 80.0]) is None
    partial = {k: v for k, v in SINGLE4.items() if k != "yahoo"}
    assert forward_transfer(M4, partial, TASKS4) is None
    assert compute_metrics(M4, TASKS4, partial)["FWT"] is None
    assert compute_metrics(M4, TASKS4)["FWT"] is None
    assert forward_transfer_final(M3, [82.0, None, 80.0]) is None
    assert compute_metrics(M4, TASKS4, partial)["FWT_final"] is None
    assert compute_metrics(M4, TASKS4)["FWT_final"] is None
    with pytest.raises(ValueError, match="task names"):
        forward_transfer(M4, SINGLE4)  # a dict needs the task names
    with pytest.raises(ValueError, match="single-task"):
        forward_transfer(M3, [1.0, 2.0])


def test_none_cells_read_as_nan():
    m = [[80.0, None, None], [70.0, 90.0, None], [60.0, 85.0, 75.0]]
    assert compute_metrics(m, ["a", "b", "c"], SINGLE3) == compute_metrics(
        M3, ["a", "b", "c"], SINGLE3
    )


def test_intermediate_nan_is_left_out_of_forgetting():
    a = np.array(M4)
    a[2, 0] = NAN  # task 0 not evaluated after task 2: max(50, 45) − 40 = 10
    assert forgetting(a)[0] == pytest.approx(10.0)


@pytest.mark.parametrize(
    "cell, fn",
    [
        ((2, 1), overall_accuracy),  # final row
        ((2, 0), backward_transfer),  # final row
        ((1, 1), backward_transfer),  # diagonal
        ((2, 2), lambda m: forward_transfer(m, SINGLE3)),  # diagonal
        ((0, 0), forgetting),
        ((2, 0), forgetting),
    ],
)
def test_nan_where_required_raises(cell, fn):
    a = np.array(M3)
    a[cell] = NAN
    with pytest.raises(ValueError, match=rf"a\[{cell[0]}\]\[{cell[1]}\]"):
        fn(a)


def test_nan_on_unused_cells_is_fine():
    # OA reads only the final row; the diagonal's NaN does not matter to it
    a = np.array(M3)
    a[1, 1] = NAN
    assert overall_accuracy(a) == pytest.approx(220 / 3)
    assert math.isnan(a[0, 1])


@pytest.mark.parametrize("bad", [[[1.0, 2.0]], [[1.0], [2.0]], [1.0, 2.0], [], [[1.0, 2.0], [3.0]]])
def test_non_square_raises(bad):
    with pytest.raises(ValueError):
        overall_accuracy(bad)


def test_task_count_must_match():
    with pytest.raises(ValueError, match="task names"):
        compute_metrics(M3, ["a", "b"])
    with pytest.raises(ValueError, match="repeat"):
        compute_metrics(M3, ["a", "b", "a"])
