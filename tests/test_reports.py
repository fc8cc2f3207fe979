"""The numbers and lines the reports are made of, in process (no processes, no files): pass rates
over the evaluated and the selected tasks with the summary's line, cost outliers (over three
times the median) with theirs, and the lanes of the HTML page's timeline. The reports themselves
are checked end to end in test_watch.py, test_evaluation.py, test_live.py and test_html_report.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from conftest import record

import run_batch as rb

# --- pass rates -----------------------------------------------------------------------------------


def evaluated(name: str, verdict: str | None, score: Any = None) -> rb.AttemptRecord:
    evaluation = None if verdict is None else {"verdict": verdict, "score": score, "elapsed_seconds": 1.0}
    return record(name, evaluation=evaluation)


def test_pass_rates_over_the_evaluated_and_the_selected() -> None:
    latest = [
        evaluated("a", "passed", 1.0),
        evaluated("b", "failed", 0.0),
        evaluated("c", "error"),
        evaluated("d", None),  # not evaluated
        record("e", evaluation={"verdict": "maybe", "score": 0.3}),  # not a verdict: not evaluated
    ]
    rates = rb.pass_rates(latest)
    assert rates is not None and dataclasses.asdict(rates) == {
        "evaluated": 3,
        "passed": 1,
        "failed": 1,
        "error": 1,
        "pass_rate_evaluated": 0.3333,
        "pass_rate_selected": 0.2,
        "mean_score": 0.5,
    }
    assert rb.pass_rate_line(rates) == (
        "Evaluation: 1 passed of 3 evaluated (33%; 20% of the selected tasks), 1 failed, 1 error, mean score 0.5."
    )
    assert "(33%; 20% of the selected samples)" in (rb.pass_rate_line(rates, sampled=True) or "")


def test_pass_rates_mean_score_only_over_finite_scores() -> None:
    rates = rb.pass_rates([evaluated("a", "passed", float("nan")), evaluated("b", "passed", True)])
    assert rates is not None and rates.mean_score is None and rates.pass_rate_evaluated == 1.0
    line = rb.pass_rate_line(rates)
    assert line is not None and "mean score" not in line and "nan" not in line.lower()
    assert line.startswith("Evaluation: 2 passed of 2 evaluated (100%; 100% of the selected tasks)")


def test_no_pass_rates_when_nothing_was_evaluated() -> None:
    assert rb.pass_rates([]) is None
    assert rb.pass_rates([evaluated("a", None), record("b", evaluation={"score": 1})]) is None
    assert rb.pass_rate_line(None) is None


# --- cost outliers --------------------------------------------------------------------------------


def costs(*values: float | None) -> list[rb.AttemptRecord]:
    return [record(f"t{i}", total_cost=v) for i, v in enumerate(values)]


def outlier_costs(records: list[rb.AttemptRecord]) -> list[float | None]:
    return [r.total_cost for r in rb.cost_outliers(records)]


def test_cost_outliers_over_three_times_the_median() -> None:
    assert outlier_costs(costs(1.0, 1.0, 1.0, 10.0)) == [10.0]
    assert outlier_costs(costs(1.0, 1.0, 3.0)) == []  # exactly 3x is not over
    assert outlier_costs(costs(1.0, 1.0, 3.01)) == [3.01]
    assert outlier_costs(costs(1.0, 2.0, 3.0, 7.0)) == []  # even count: median 2.5, 7 < 7.5
    assert outlier_costs(costs(1.0, 2.0, 3.0, 7.6)) == [7.6]
    assert outlier_costs(costs(0.1, 0.1, 0.1, 0.1, 0.5, 2.0)) == [2.0, 0.5]  # the dearest first


def test_cost_outliers_need_three_known_costs() -> None:
    assert outlier_costs(costs(1.0, 100.0)) == []
    assert outlier_costs(costs(1.0, None, None, None, 100.0)) == []  # unknown costs are not zero
    assert outlier_costs(costs(1.0, 1.0, None, 100.0)) == [100.0]  # and never outliers
    assert outlier_costs(costs(0.0, 0.0, 0.0, 5.0)) == []  # a median of zero says nothing
    assert rb.outlier_line(costs(1.0, 2.0)) is None
    line = rb.outlier_line(costs(1.0, 1.0, 1.0, 10.0))
    assert line is not None and line.startswith("Cost outliers (over 3x the median): t3 ")


# --- timeline_lanes -------------------------------------------------------------------------------


def at(seconds: float) -> str:
    return f"2026-01-01T00:{int(seconds) // 60:02}:{seconds % 60:06.3f}Z"


def timed(name: str, start: float, end: float, run_id: str = "r1") -> rb.AttemptRecord:
    return record(name, started_at=at(start), finished_at=at(end), run_id=run_id)


def test_overlapping_attempts_get_their_own_lanes_and_free_lanes_are_reused() -> None:
    records = [
        timed("a", 0, 10),
        timed("b", 5, 15),  # overlaps a
        timed("c", 10, 20),  # starts as a ends: a's lane
        timed("d", 15.005, 16),  # starts as b ends (within 10 ms): b's lane
        timed("e", 12, 13),  # all lanes busy: a third
    ]
    lanes = {r.task_name: (group, lane) for group, lane, r, _, _ in rb.timeline_lanes(records)}
    assert lanes == {"a": ("r1", 0), "b": ("r1", 1), "c": ("r1", 0), "d": ("r1", 1), "e": ("r1", 2)}


def test_sequential_attempts_share_one_lane() -> None:
    placed = rb.timeline_lanes([timed(f"t{i}", 10 * i, 10 * i + 9) for i in range(5)])
    assert [lane for _, lane, _, _, _ in placed] == [0] * 5
    starts = [start for _, _, _, start, _ in placed]
    assert starts == sorted(starts) and starts[1] - starts[0] == pytest.approx(10.0)


def test_each_run_has_its_own_lanes_earliest_run_first() -> None:
    records = [timed("late", 100, 200, "r2"), timed("a", 0, 300, "r1"), timed("b", 50, 60, "r1"), timed("c", 150, 160)]
    placed = [(group, lane, r.task_name) for group, lane, r, _, _ in rb.timeline_lanes(records)]
    assert placed == [("r1", 0, "a"), ("r1", 1, "b"), ("r1", 1, "c"), ("r2", 0, "late")]


def test_timeline_skips_attempts_without_times_and_clamps_backwards_ends() -> None:
    records = [
        record("x", started_at="", finished_at=""),
        record("y", started_at="soon", finished_at=at(1)),
        timed("z", 30, 20, run_id=""),
    ]
    placed = rb.timeline_lanes(records)
    assert [(group, r.task_name) for group, _, r, _, _ in placed] == [("?", "z")]
    _, _, _, start, end = placed[0]
    assert end == start
