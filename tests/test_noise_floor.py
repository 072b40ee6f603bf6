"""report.noise_floor and the verdict engine's floor: a change inside the numeric floor across CPUs is noise."""
import math

import pandas as pd

from acttail_lab.report.noise_floor import floor_sentence, floor_table, numeric_floor
from acttail_lab.report.verdicts import BETTER, NOISE, WORSE, judge

ROWS = pd.DataFrame({
    "model": ["smollm2-135m"] * 5,
    "strategy": ["uniform", "acttail", "uniform", "acttail", "dense"],
    "sparsity": [0.5, 0.5, 0.8, 0.8, 0.0],
    "perplexity": [41.35, 44.9, 4773.7, 3990.0, 25.14],
    "perplexity_old": [41.17, 44.9, 4756.3, 3900.0, 25.14],
})
ROWS = ROWS.assign(drift=ROWS["perplexity"] / ROWS["perplexity_old"] - 1.0)


def test_floor_is_the_largest_drift_at_the_nearest_measured_target_below():
    table = floor_table(ROWS[ROWS["sparsity"] > 0])
    assert list(table["sparsity"]) == [0.5, 0.8] and list(table["rows"]) == [2, 2]
    assert math.isclose(numeric_floor(0.5, ROWS[ROWS["sparsity"] > 0]), 100 * (41.35 / 41.17 - 1))
    assert math.isclose(numeric_floor(0.7, ROWS[ROWS["sparsity"] > 0]), numeric_floor(0.5, ROWS[ROWS["sparsity"] > 0]))
    assert math.isclose(numeric_floor(0.8, ROWS[ROWS["sparsity"] > 0]), 100 * (3990 / 3900 - 1))
    assert numeric_floor(0.4, ROWS[ROWS["sparsity"] > 0]) == numeric_floor(0.5, ROWS[ROWS["sparsity"] > 0])
    assert numeric_floor(0.0, ROWS) == 0.0 and numeric_floor(float("nan"), ROWS) == 0.0
    assert numeric_floor(0.5, ROWS.iloc[0:0]) == 0.0
    assert "50%: 0.44% (2 rows)" in floor_sentence(ROWS[ROWS["sparsity"] > 0])


def test_judge_calls_a_change_inside_the_floor_noise():
    assert judge(-3.0, -1.0) == BETTER and judge(-3.0, -1.0, floor=0.5) == BETTER
    assert judge(-3.0, -0.3, floor=0.5) == NOISE  # reaches into the floor: another CPU could reverse it
    assert judge(0.2, 0.4, floor=0.5) == NOISE and judge(0.6, 2.0, floor=0.5) == WORSE
    assert judge(0.2, 0.4) == WORSE  # without a floor: beyond 0


def test_the_committed_floor_is_measured_and_covers_the_targets_verdicts_use():
    table = floor_table()
    assert not table.empty, "data/results/numeric_floor.csv is missing: run scripts/measure_numeric_floor.py"
    assert set(table["sparsity"]) >= {0.5, 0.6, 0.7, 0.8} and (table["rows"] > 0).all()
    assert (table["floor_pct"] > 0).all() and numeric_floor(0.8) > 0.5  # across CPUs TopK@80% moves by > 0.5%


def test_how_judged_names_the_method_and_the_floor_once():
    from acttail_lab.report.verdicts import FLOOR_MARK, how_judged

    table = pd.DataFrame({"method": [f"95% paired bootstrap over 32 windows{FLOOR_MARK}0.63%",
                                     f"95% paired bootstrap over 32 windows{FLOOR_MARK}1.75%",
                                     "no per-window losses committed"]})
    assert how_judged(table) == ("95% paired bootstrap over 32 windows, beyond the numeric floor across CPUs "
                                 "(0.63-1.75% by target)")
    assert how_judged(table, short=True) == "95% paired bootstrap, CPU floor 0.6%-1.8%"
    assert how_judged(table.iloc[2:]) == ""
