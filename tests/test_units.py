"""Fast in-process tests of pure functions otherwise only reached through real processes."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import run_batch as rb

# --- helpers --------------------------------------------------------------------------------------


def task(name: str, sha: str | None = None, problem: str | None = None) -> rb.Task:
    return rb.Task(name, Path(f"/p/{name}.md"), name, sha if sha is not None else f"sha-{name}", problem)


EXPERIMENT = rb.Experiment("core-main", "openhands-ai", "1.6.0", "openai/m", "config [llm]", None, "0" * 64)


def record(t: rb.Task | str, status: str = "success", **changes: Any) -> rb.AttemptRecord:
    t = task(t) if isinstance(t, str) else t
    blank = rb.Attempt(t, 1, 1, "run1", f"{t.name}-1", EXPERIMENT).record(f"{t.name}-1-sid")
    if isinstance(changes.get("evaluation"), dict):  # written as the record holds it
        changes["evaluation"] = rb.Evaluation.from_json({"elapsed_seconds": 1.0, **changes["evaluation"]})
    return dataclasses.replace(blank, status=status, **changes)


def launch(
    rc: int | None = 0,
    timed_out: bool = False,
    interrupted: bool = False,
    error: str | None = None,
    halted: str | None = None,
    halt_reason: str | None = None,
    timeout: float | None = 30.0,
) -> rb.Launch:
    return rb.Launch(rc, timed_out, interrupted, "s", "f", 1.0, error, halted, halt_reason, timeout)


def names(ts: list[rb.Task] | list[rb.Job]) -> list[str]:
    return [t.task.name if isinstance(t, rb.Job) else t.name for t in ts]


# --- plan_batch -----------------------------------------------------------------------------------


def test_plan_skips_a_success_with_the_same_prompt_only() -> None:
    a, b, c = task("a"), task("b"), task("c")
    recorded = [record(a), record(b, prompt_sha256="old-sha"), record("zz")]  # zz: no longer a prompt
    plan = rb.plan_batch([a, b, c], rb.Selection(), recorded, rerun=False)
    assert names(plan.done) == ["a"]
    assert sorted(names(plan.to_run)) == ["b", "c"]  # b's prompt changed, c never ran
    assert names(plan.selected) == ["a", "b", "c"]


def test_plan_rerun_runs_everything_selected() -> None:
    ts = [task("a"), task("b")]
    plan = rb.plan_batch(ts, rb.Selection(), [record(ts[0]), record(ts[1])], rerun=True)
    assert plan.done == [] and sorted(names(plan.to_run)) == ["a", "b"]


def test_plan_looks_at_the_latest_record_only() -> None:
    a, b = task("a"), task("b")
    recorded = [record(a), record(a, "failed"), record(b, "failed"), record(b)]
    plan = rb.plan_batch([a, b], rb.Selection(), recorded, rerun=False)
    assert names(plan.to_run) == ["a"]  # success then failure: runs again
    assert names(plan.done) == ["b"]  # failure then success: done


@pytest.mark.parametrize("status", ["failed", "timeout", "stalled", "error", "interrupted"])
def test_plan_runs_again_whatever_did_not_succeed(status: str) -> None:
    a = task("a")
    plan = rb.plan_batch([a], rb.Selection(), [record(a, status)], rerun=False)
    assert names(plan.to_run) == ["a"] and plan.done == []


def test_plan_order_longest_known_first_unknown_first_in_file_order() -> None:
    ts = [task(n) for n in "abcdefg"]
    recorded = [
        record("b", "failed", elapsed_time_seconds=5.0),
        record("c", "timeout", elapsed_time_seconds=50.0),
        record("d", "interrupted", elapsed_time_seconds=100.0),  # cut short: its time says nothing
        record("e", "success", prompt_sha256="old", elapsed_time_seconds=20.0),
        record("f", "error", elapsed_time_seconds=999.0),
        record("g", "failed", elapsed_time_seconds=20.0),  # ties keep file order
    ]
    plan = rb.plan_batch(ts, rb.Selection(), recorded, rerun=False)
    assert names(plan.to_run) == ["a", "d", "f", "c", "e", "g", "b"]


def test_plan_order_with_no_durations_is_file_order() -> None:
    ts = [task(n) for n in ("z", "a", "m")]
    assert names(rb.plan_batch(ts, rb.Selection(), [], rerun=False).to_run) == ["z", "a", "m"]


def test_plan_selection_comes_before_skipping() -> None:
    ts = [task(n) for n in ("a1", "a2", "b1", "b2", "c1", "c2")]
    recorded = [record("a1")]
    plan = lambda **kw: rb.plan_batch(ts, rb.Selection(**kw), recorded, rerun=False)
    assert names(plan(tasks=("c1", "a1")).selected) == ["a1", "c1"]  # file order, not --tasks order
    assert names(plan(tasks=("c1", "a1")).to_run) == ["c1"]
    assert names(plan(include=("a*", "c2")).to_run) == ["a2", "c2"]
    assert names(plan(exclude=("*2",)).selected) == ["a1", "b1", "c1"]
    assert names(plan(include=("a*", "b*"), exclude=("b2",)).selected) == ["a1", "a2", "b1"]
    assert names(plan(shard=(2, 3)).selected) == ["a2", "c1"]  # every third from the second
    assert names(plan(shard=(1, 2), limit=2).selected) == ["a1", "b1"]  # the shard, then the limit
    limited = plan(limit=2)
    assert names(limited.selected) == ["a1", "a2"] and names(limited.done) == ["a1"] and names(limited.to_run) == ["a2"]
    assert plan(limit=0).selected == []
    with pytest.raises(rb.UsageError, match="matches no task"):  # a selection that selects nothing is a mistake
        plan(include=("nothing*",))


def test_plan_selection_is_case_sensitive() -> None:
    ts = [task("Alpha"), task("alpha")]
    assert names(rb.plan_batch(ts, rb.Selection(include=("a*",)), [], rerun=False).selected) == ["alpha"]


def test_plan_unknown_task_name_is_a_usage_error() -> None:
    with pytest.raises(rb.UsageError, match=r"no prompt named 'nope' in /prompts"):
        rb.plan_batch(
            [task("a")],
            rb.Selection(tasks=("a", "nope")),
            [],
            rerun=False,
            rules=rb.PlanRules(prompt_dir=Path("/prompts")),
        )
    with pytest.raises(rb.UsageError, match="'A'"):
        rb.plan_batch([task("a")], rb.Selection(tasks=("A",)), [], rerun=False)


def test_plan_never_skips_a_prompt_whose_hash_is_unknown() -> None:
    unreadable = rb.Task("a", Path("/p/a.md"), "a", None, "cannot read prompt: Permission denied")
    old = record(unreadable, "success", prompt_sha256=None)  # an older record, before prompt_sha256
    plan = rb.plan_batch([unreadable], rb.Selection(), [old], rerun=False)
    assert names(plan.to_run) == ["a"] and plan.done == []


# --- verdict_of and loads_json --------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, verdict, reason",
    [
        (0, "passed", None),
        (1, "failed", None),
        (2, "error", "the evaluator ended with exit code 2"),
        (127, "error", "the evaluator ended with exit code 127"),
        (-9, "error", "the evaluator was killed by signal 9"),
        (-15, "error", "the evaluator was killed by signal 15"),
    ],
)
def test_verdict_from_the_exit_code(code: int, verdict: str, reason: str | None) -> None:
    assert rb.verdict_of(code, "all good", False, 60.0, None) == (verdict, None, None, reason)


def test_verdict_timeout_and_start_error_win_over_everything() -> None:
    line = '{"score": 1.0, "details": {"a": 1}}'
    assert rb.verdict_of(None, line, True, 60.0, None) == ("error", None, None, "timed out after 60s")
    assert rb.verdict_of(0, line, True, 1.5, None) == ("error", None, None, "timed out after 1.5s")
    assert rb.verdict_of(0, line, False, 60.0, "could not start x") == ("error", None, None, "could not start x")


def test_verdict_score_and_details_from_a_json_last_line() -> None:
    line = '{"score": 0.75, "details": {"tests": 3, "passed": 2}, "other": "ignored"}'
    assert rb.verdict_of(0, line, False, 60.0, None) == ("passed", 0.75, {"tests": 3, "passed": 2}, None)
    assert rb.verdict_of(1, '{"score": 0}', False, 60.0, None) == ("failed", 0.0, None, None)
    assert rb.verdict_of(3, '{"score": 0.5}', False, 60.0, None)[:2] == ("error", 0.5)
    score = rb.verdict_of(0, '{"score": 1}', False, 60.0, None)[1]
    assert score == 1.0 and isinstance(score, float)


@pytest.mark.parametrize(
    "line",
    [
        '{"score": "0.9", "details": ["a"]}',  # wrong types
        '{"score": true, "details": "text"}',  # a bool is not a score
        '{"score": null}',
        "[0.9]",  # not an object
        "0.9",
        '"0.9"',
        "score: 0.9",  # not JSON
        '{"score": 0.9',  # cut off
        "",
        "[" * 100_000,  # too deep for the decoder
    ],
)
def test_verdict_without_a_usable_score(line: str) -> None:
    assert rb.verdict_of(0, line, False, 60.0, None) == ("passed", None, None, None)


@pytest.mark.parametrize(
    "line", ['{"score": NaN, "details": {"a": 1}}', '{"score": Infinity}', '{"score": -Infinity}', '{"score": 1e400}']
)
def test_verdict_never_gives_a_score_that_is_not_finite(line: str) -> None:
    verdict, score, _, reason = rb.verdict_of(0, line, False, 60.0, None)
    assert (verdict, score, reason) == ("passed", None, None)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", '{"a": NaN}', "[1, Infinity]", b'{"x": -Infinity}'])
def test_loads_json_rejects_nan_and_infinity(text: str | bytes) -> None:
    with pytest.raises(ValueError, match="not a JSON number"):
        rb.loads_json(text)


def test_loads_json_reads_ordinary_json() -> None:
    assert rb.loads_json('{"a": [1, 2.5, null, true, "x"]}') == {"a": [1, 2.5, None, True, "x"]}
    assert rb.loads_json(b'"\\u00e9"') == "é"
    with pytest.raises(ValueError):
        rb.loads_json("{'a': 1}")


# --- pass rates and cost outliers -----------------------------------------------------------------


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


# --- check_attempt: stalls and task budgets -------------------------------------------------------


class FakeFollower:
    def __init__(self, *progress: rb.Progress) -> None:
        self.progress = list(progress)

    def poll(self) -> rb.Progress:
        return self.progress.pop(0) if self.progress else rb.Progress()


def live_attempt(*progress: rb.Progress, cost: float | None = None) -> rb.LiveAttempt:
    files = rb.AttemptFiles(Path("/nonexistent/t.json"), Path("/nonexistent/t.out"), Path("/nonexistent/t.err"))
    live = rb.LiveAttempt("t", "t-1", files, FakeFollower(*progress), rb.Halt(), started=0.0, last_progress=100.0)
    live.metrics = rb.Metrics(total_cost=cost)
    return live


def test_stall_timeout_counts_from_the_last_progress() -> None:
    live = live_attempt()
    rb.check_attempt(live, 159.9, 60.0, None)
    assert live.halt.kind is None
    rb.check_attempt(live, 160.0, 60.0, None)
    assert (live.halt.kind, live.halt.reason) == ("stalled", "no progress for 60s; last event: none")


def test_no_stall_timeout_and_no_budget_never_halt() -> None:
    live = live_attempt(cost=1e9)
    rb.check_attempt(live, 1e9, None, None)
    assert live.halt.kind is None and live.halt.reason is None


def test_new_events_reset_the_stall_clock() -> None:
    metrics = rb.Metrics(total_cost=0.25, source="events")
    live = live_attempt(
        rb.Progress(events=2, steps=1, metrics=metrics, last_event="run ls"),
        rb.Progress(),  # nothing new
    )
    live.look(150.0)
    assert live.last_progress == 150.0 and live.steps == 1 and live.cost == 0.25
    live.look(200.0)
    assert live.last_progress == 150.0 and live.metrics is metrics and live.last_event == "run ls"
    rb.check_attempt(live, 209.0, 60.0, None)
    assert live.halt.kind is None
    rb.check_attempt(live, 210.0, 60.0, None)
    assert live.halt.kind == "stalled" and live.halt.reason == "no progress for 60s; last event: run ls"


def test_task_budget_is_stopped_once_spent_over() -> None:
    live = live_attempt(cost=1.0)
    rb.check_attempt(live, 101.0, 60.0, 1.0)  # exactly the budget: not over
    assert live.halt.kind is None
    live.metrics = rb.Metrics(total_cost=1.00001)
    rb.check_attempt(live, 101.0, 60.0, 1.0)
    assert live.halt.kind == "task-budget"
    assert live.halt.reason == "spent $1.0000, over --max-budget-per-task 1 (stopped by run_batch)"
    assert live_attempt(cost=None).cost == 0.0  # unknown spend is not over any budget


def test_halt_keeps_the_first_reason() -> None:
    live = live_attempt(cost=5.0)
    rb.check_attempt(live, 1000.0, 60.0, 1.0)  # stalled and over budget at once
    assert live.halt.kind == "stalled" and live.halt.reason is not None and "no progress" in live.halt.reason
    halt = rb.Halt()
    halt.request("task-budget", "first")
    halt.request("stalled", "second")
    assert (halt.kind, halt.reason) == ("task-budget", "first")


# --- parse_evaluator and evaluator_argv -----------------------------------------------------------


def test_evaluator_is_split_like_a_shell() -> None:
    assert rb.parse_evaluator("python grade.py 'a b' \"c d\" e\\ f {task}") == (
        "python",
        "grade.py",
        "a b",
        "c d",
        "e f",
        "{task}",
    )
    assert rb.parse_evaluator("  check  --x={status}  ") == ("check", "--x={status}")
    assert rb.parse_evaluator("echo '{{not a placeholder}}'") == ("echo", "{{not a placeholder}}")


@pytest.mark.parametrize(
    "text, message",
    [
        ("grade {nope}", r"unknown placeholder \{nope\}; the known ones are \{task\}, \{prompt\}"),
        ("grade {Task}", r"unknown placeholder \{Task\}"),
        ("grade {}", r"unknown placeholder \{\}"),
        ("grade {0}", r"unknown placeholder \{0\}"),
        ("grade {task.name}", r"unknown placeholder \{task.name\}"),
        ("grade {task[0]}", r"unknown placeholder"),
        ("grade {task", r"literal brace"),
        ("grade }", r"literal brace"),
        ("grade 'unclosed", r"check the quotes"),
        ("", r"--evaluate is empty"),
        ("   ", r"--evaluate is empty"),
    ],
)
def test_evaluator_mistakes_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(rb.UsageError, match=message):
        rb.parse_evaluator(text)


@pytest.mark.parametrize("text", ["grade {task:{bogus}}", "grade {task!x}", "grade {task:d}"])
def test_evaluator_format_mistakes_are_usage_errors_too(text: str) -> None:
    with pytest.raises(rb.UsageError):
        rb.parse_evaluator(text)


VALUES = {
    "task": "t",
    "prompt": "/p/t.md",
    "output_dir": "/out dir",
    "trajectory": "",
    "workspace": "/ws",
    "status": "success",
}


def test_evaluator_argv_fills_the_placeholders() -> None:
    words = rb.parse_evaluator("grade --task={task} {prompt} {output_dir} '{trajectory}' {status} {{x}} {workspace}")
    assert rb.evaluator_argv(words, VALUES) == [
        "grade",
        "--task=t",
        "/p/t.md",
        "/out dir",
        "",
        "success",
        "{x}",
        "/ws",
    ]


@pytest.mark.parametrize("name", ["with space", "quote'\"s", "-rf", "--help", "a;rm -rf ~", "{status}", "$(x) `y`"])
def test_evaluator_argv_keeps_an_odd_task_name_one_word(name: str) -> None:
    words = rb.parse_evaluator("grade {task} --name={task}")
    assert rb.evaluator_argv(words, {**VALUES, "task": name}) == ["grade", name, f"--name={name}"]


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


# --- classify, explain, is_retryable --------------------------------------------------------------

# (launch, agent_state, problem, status, retryable with no facts)
OUTCOMES = [
    (launch(0), "FINISHED", None, "success", False),
    (launch(0), None, None, "success", False),
    (launch(0), "ERROR", None, "failed", False),
    (launch(0), "RUNNING", None, "failed", False),
    (launch(1), "FINISHED", None, "failed", False),  # the agent ran: its outcome
    (launch(1), None, None, "failed", True),  # died before the agent ran
    (launch(1), "LOADING", None, "failed", True),
    (launch(1), "RUNNING", None, "failed", False),
    (launch(-9), None, None, "failed", True),  # OOM killer
    (launch(-15), "RUNNING", None, "interrupted", False),  # SIGTERM from outside
    (launch(-9, interrupted=True), None, None, "interrupted", False),
    (launch(0, interrupted=True), "FINISHED", None, "interrupted", False),
    (launch(-9, timed_out=True), "RUNNING", None, "timeout", False),
    (launch(0, timed_out=True), "FINISHED", None, "timeout", False),
    (launch(None, error="could not start"), None, None, "error", True),
    (launch(0), "FINISHED", "the prompt went away", "error", False),  # an empty prompt stays empty
    (launch(-9, interrupted=True), None, "problem", "interrupted", False),
    (launch(-9, timed_out=True), None, "problem", "timeout", False),
    (launch(-9, halted="stalled", halt_reason="no progress"), "RUNNING", None, "stalled", True),
    (launch(-9, halted="task-budget", halt_reason="spent"), "RUNNING", None, "failed", False),
    (launch(0, halted="task-budget", halt_reason="spent"), "FINISHED", None, "failed", False),
    (launch(-2, interrupted=True, halted="stalled"), None, None, "interrupted", False),
]


@pytest.mark.parametrize("l, state, problem, status, retryable", OUTCOMES)
def test_classify_and_retry(l: rb.Launch, state: str | None, problem: str | None, status: str, retryable: bool) -> None:
    assert rb.classify(l, state, problem) == status
    assert rb.is_retryable(status, l, rb.OutputFacts(), state) is retryable


@pytest.mark.parametrize(
    "facts, retryable",
    [
        (rb.OutputFacts(reason="STATUS$ERROR_LLM_INTERNAL_SERVER_ERROR"), True),
        (rb.OutputFacts(reason="STATUS$ERROR_LLM_SERVICE_UNAVAILABLE"), True),
        (rb.OutputFacts(reason="STATUS$ERROR_LLM_AUTHENTICATION"), False),
        (rb.OutputFacts(last_exception="litellm.RateLimitError: slow down"), True),
        (rb.OutputFacts(last_exception="openai.APIConnectionError: Connection error."), True),
        (rb.OutputFacts(last_exception="litellm.ServiceUnavailableError: 503"), True),
        (rb.OutputFacts(last_exception="httpx.ReadTimeout: timed out"), True),
        (rb.OutputFacts(last_exception="ValueError: bad tool call"), False),
        (rb.OutputFacts(last_error_line="RateLimitError in a line that is not the exception"), False),
    ],
)
def test_retry_an_agent_error_only_for_the_llm_service(facts: rb.OutputFacts, retryable: bool) -> None:
    assert rb.is_retryable("failed", launch(0), facts, "ERROR") is retryable
    assert not rb.is_retryable("failed", launch(0, halted="task-budget"), facts, "ERROR")  # halted: never
    assert not rb.is_retryable("timeout", launch(0, timed_out=True), facts, "ERROR")


EXPLAINED = [
    ("success", launch(0), rb.OutputFacts(reason="ignored"), "FINISHED", None),
    ("error", launch(None, error="could not\nstart: [Errno 2]"), rb.OutputFacts(), None, "could not start: [Errno 2]"),
    ("timeout", launch(-9, timed_out=True), rb.OutputFacts(reason="x"), "RUNNING", "timed out after 30s"),
    (
        "stalled",
        launch(-9, halted="stalled", halt_reason="no progress\tfor 60s"),
        rb.OutputFacts(),
        None,
        "no progress for 60s",
    ),
    ("failed", launch(-9, halted="task-budget", halt_reason="spent $2"), rb.OutputFacts(reason="x"), None, "spent $2"),
    ("interrupted", launch(-2, interrupted=True), rb.OutputFacts(), None, "runner stopped: SIGINT received"),
    (
        "interrupted",
        launch(-15),
        rb.OutputFacts(),
        "RUNNING",
        "killed by SIGTERM from outside the runner (a scheduler's time limit or scancel?)",
    ),
    (
        "failed",
        launch(1),
        rb.OutputFacts(reason="STATUS$ERROR_LLM", last_exception="litellm.Err: boom"),
        "ERROR",
        "exit code 1: STATUS$ERROR_LLM: litellm.Err: boom",
    ),
    (
        "failed",
        launch(0),
        rb.OutputFacts(reason="Agent got stuck in a loop", last_exception="E: x"),
        "ERROR",
        "Agent got stuck in a loop",
    ),
    (
        "failed",
        launch(0),
        rb.OutputFacts(last_exception="RuntimeError: x", last_error_line="y"),
        "ERROR",
        "RuntimeError: x",
    ),
    ("failed", launch(2), rb.OutputFacts(last_error_line="usage: bad flag"), None, "exit code 2: usage: bad flag"),
    ("failed", launch(0), rb.OutputFacts(), "ERROR", "agent ended in ERROR"),
    ("failed", launch(-9), rb.OutputFacts(), None, "killed by SIGKILL"),
    ("failed", launch(-11), rb.OutputFacts(), "RUNNING", "killed by SIGSEGV: agent ended in RUNNING"),
    ("failed", launch(-1000), rb.OutputFacts(), None, "exit code -1000"),  # not a signal number
    ("failed", launch(137), rb.OutputFacts(), None, "exit code 137"),
]


@pytest.mark.parametrize("status, l, facts, state, why", EXPLAINED)
def test_explain(status: str, l: rb.Launch, facts: rb.OutputFacts, state: str | None, why: str | None) -> None:
    assert rb.explain(status, l, facts, state, "SIGINT received") == why


def test_explain_timeouts_and_budget_stops() -> None:
    t = launch(-9, timed_out=True, timeout=None)
    assert rb.explain("timeout", t, rb.OutputFacts(), None, "") == "timed out"
    t = launch(-9, timed_out=True, timeout=1.5)
    assert rb.explain("timeout", t, rb.OutputFacts(), None, "") == "timed out after 1.5s"
    stopped = launch(-2, interrupted=True)
    for why in ("batch budget of $5 reached (--max-total-cost)", "run budget of $1 reached (--max-run-cost)"):
        assert rb.explain("interrupted", stopped, rb.OutputFacts(), None, why) == why


def test_explain_is_one_short_line() -> None:
    facts = rb.OutputFacts(last_exception="E: " + "x\x1b[31m\n" * 1000)
    why = rb.explain("failed", launch(1), facts, "ERROR", "")
    assert why is not None and len(why) == rb.REASON_CHARS and why.endswith("…") and why.startswith("exit code 1: ")
    assert why.isprintable()


# --- one_line and agent_state_name ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("plain", "plain"),
        ("  a \n\n b\t\tc  ", "a b c"),
        ("red \x1b[31mtext\x1b[0m", "red [31mtext [0m"),
        ("nul\x00bell\x07del\x7fend", "nul bell del end"),
        ("bidi \u202eevil\u202c zero\u200bwidth", "bidi evil zero width"),
        ("line\r\nbreak\u2028sep", "line break sep"),
        ("ünïcødé ✓", "ünïcødé ✓"),
        ("", ""),
        ("\n\t ", ""),
    ],
)
def test_one_line_removes_control_characters(text: str, expected: str) -> None:
    assert rb.one_line(text) == expected


def test_one_line_limit() -> None:
    assert rb.one_line("x" * 500) == "x" * 500
    assert rb.one_line("x" * 501) == "x" * 499 + "…"
    assert rb.one_line("abcdefghijkl", 10) == "abcdefghi…"
    assert rb.one_line("abc", 3) == "abc"
    assert rb.one_line("a \n" * 2_000_000, 20) == "a a a a a a a a a a…"  # a huge text is cut first


@pytest.mark.parametrize(
    "value, name",
    [
        ("finished", "FINISHED"),
        ("AWAITING_USER_INPUT", "AWAITING_USER_INPUT"),
        ("Error", "ERROR"),
        ("x" * 32, "X" * 32),
        ("x" * 33, None),
        ("", None),
        ("AgentState.FINISHED", None),
        ("finished\n", None),
        ("fin ished", None),
        ("ÉTAT", None),
        ("sk-secret-123", None),
        (5, None),
        (None, None),
        (["FINISHED"], None),
        ({"state": "FINISHED"}, None),
    ],
)
def test_agent_state_name(value: Any, name: str | None) -> None:
    assert rb.agent_state_name(value) == name


# --- AttemptRecord.from_json ----------------------------------------------------------------------


def full_json(**changes: Any) -> dict[str, Any]:
    data = record("a", total_cost=0.5, total_input_tokens=10, return_code=0, command=["oh", "-f", "a.md"]).as_json()
    data.update(changes)
    return data


def test_record_round_trips() -> None:
    r = record("a", "failed", total_cost=0.5, total_input_tokens=10, command=["x"], evaluation={"verdict": "passed"})
    assert rb.AttemptRecord.from_json(r.as_json()) == r


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"task_name": None}, "no task_name"),
        ({"task_name": 5}, "no task_name"),
        ({"status": "succeeded"}, "is not one of success"),
        ({"status": None}, "is not one of"),
        ({"return_code": "0"}, "return_code has the wrong type"),
        ({"return_code": 0.0}, "return_code has the wrong type"),
        ({"attempt": True}, "attempt has the wrong type"),
        ({"total_input_tokens": 1.5}, "total_input_tokens has the wrong type"),
        ({"total_cost": "0.5"}, "total_cost has the wrong type"),
        ({"total_cost": False}, "total_cost has the wrong type"),
        ({"stdout": ["a"]}, "stdout has the wrong type"),
        ({"evaluation": "passed"}, "evaluation has the wrong type"),
        ({"command": "oh -f a.md"}, "command has the wrong type"),
        ({"command": ["oh", 1]}, "not a list of strings"),
        ({"total_cost": -0.01}, "total_cost is not a number of zero or more"),
        ({"elapsed_time_seconds": -1}, "elapsed_time_seconds is not a number"),
        ({"total_output_tokens": -5}, "total_output_tokens is not a number"),
        ({"attempt": -1}, "attempt is not a number"),
        ({"total_cost": float("nan")}, "total_cost is not a number"),
        ({"elapsed_time_seconds": float("inf")}, "elapsed_time_seconds is not a number"),
        ({"total_cost": float("-inf")}, "total_cost is not a number"),
    ],
)
def test_record_fields_must_have_their_types(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rb.AttemptRecord.from_json(full_json(**changes))


@pytest.mark.parametrize("data", [None, [], "a record", 5, [{"task_name": "a"}]])
def test_record_must_be_an_object(data: Any) -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        rb.AttemptRecord.from_json(data)


def test_record_negative_return_code_is_a_signal() -> None:
    assert rb.AttemptRecord.from_json(full_json(return_code=-9)).return_code == -9


def test_older_records_without_newer_fields_are_read() -> None:
    old = {"task_name": "a", "status": "success", "elapsed_time_seconds": 12, "total_cost": 1, "attempt": 2}
    r = rb.AttemptRecord.from_json(old)
    assert (r.task_name, r.status, r.attempt) == ("a", "success", 2)
    assert r.elapsed_time_seconds == 12.0 and isinstance(r.elapsed_time_seconds, float)
    assert r.total_cost == 1.0 and isinstance(r.total_cost, float)
    assert r.prompt_sha256 is None and r.evaluation is None and r.workspace is None and r.cache_read_tokens is None
    assert r.stdout == "" and r.run_id == "" and r.command is None
    assert rb.AttemptRecord.from_json({"task_name": "a", "status": "failed"}).attempt == 1


def test_record_unknown_fields_are_ignored_and_nulls_take_the_empty_value() -> None:
    r = rb.AttemptRecord.from_json(
        full_json(future_field={"x": 1}, stdout=None, attempt=None, elapsed_time_seconds=None)
    )
    assert not hasattr(r, "future_field")
    assert (r.stdout, r.attempt, r.elapsed_time_seconds) == ("", 1, 0.0)


# --- line_ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "numbers, text",
    [
        ([3], "line 3"),
        ([3, 4], "lines 3-4"),
        ([1, 2, 3, 4, 9], "lines 1-4, 9"),
        ([1, 3, 5], "lines 1, 3, 5"),
        ([2, 3, 7, 8, 9, 20], "lines 2-3, 7-9, 20"),
    ],
)
def test_line_ranges(numbers: list[int], text: str) -> None:
    assert rb.line_ranges(numbers) == text


def test_line_ranges_name_how_many_more() -> None:
    assert rb.line_ranges([1, 3, 5, 6, 7, 10], most=2) == "lines 1, 3 and 4 more"
    many = list(range(1, 200, 2))  # 100 single lines
    text = rb.line_ranges(many)
    assert text.startswith("lines 1, 3, 5") and text.endswith(", 79 and 60 more")
    assert rb.line_ranges(list(range(1, 10_001))) == "lines 1-10000"


# --- with_workspace_mount and set_workspace -------------------------------------------------------

WS = Path("/out/ws/t-1")


@pytest.mark.parametrize(
    "volumes, expected",
    [
        ("", f"{WS}:/workspace:rw"),
        ("/data:/data:ro", f"{WS}:/workspace:rw,/data:/data:ro"),
        ("/old:/workspace:rw,/data:/data:ro", f"{WS}:/workspace:rw,/data:/data:ro"),
        (
            "/data:/data:ro,/old:/workspace,/cache:/root/.cache",
            f"{WS}:/workspace:rw,/data:/data:ro,/cache:/root/.cache",
        ),
        ("/src:/workspace/sub:ro", f"{WS}:/workspace:rw,/src:/workspace/sub:ro"),  # inside it: kept
        ("/workspace:/mnt", f"{WS}:/workspace:rw,/workspace:/mnt"),  # host side named so: kept
        (",,/a:/b, ,", f"{WS}:/workspace:rw,/a:/b"),
        ("/a:/workspace:ro,/b:/workspace:rw", f"{WS}:/workspace:rw"),
    ],
)
def test_workspace_mount_replaces_only_the_workspace(volumes: str, expected: str) -> None:
    assert rb.with_workspace_mount(volumes, WS) == expected


def test_set_workspace_everywhere_the_releases_read_it() -> None:
    config: dict[str, Any] = {
        "core": {"workspace_base": "/old", "runtime": "docker"},
        "sandbox": {"volumes": "/data:/data:ro,/old:/workspace:rw", "timeout": 120},
    }
    env: dict[str, str] = {"KEEP": "1"}
    environ = {"SANDBOX_VOLUMES": "/x:/x,/y:/workspace", "HOME": "/root"}
    rb.set_workspace(config, env, environ, WS)
    assert config["core"] == {"workspace_base": str(WS), "workspace_mount_path": str(WS), "runtime": "docker"}
    assert config["sandbox"] == {"volumes": f"{WS}:/workspace:rw,/data:/data:ro", "timeout": 120}
    assert env == {
        "KEEP": "1",
        "WORKSPACE_BASE": str(WS),
        "WORKSPACE_MOUNT_PATH": str(WS),
        "SANDBOX_VOLUMES": f"{WS}:/workspace:rw,/x:/x",
    }
    assert environ == {"SANDBOX_VOLUMES": "/x:/x,/y:/workspace", "HOME": "/root"}  # untouched


def test_set_workspace_adds_no_volumes_where_the_user_has_none() -> None:
    config: dict[str, Any] = {"core": {}}  # 0.33 rejects [sandbox] volumes: it must not appear
    env: dict[str, str] = {}
    rb.set_workspace(config, env, {"SANDBOX_VOLUMES": ""}, WS)
    assert config == {"core": {"workspace_base": str(WS), "workspace_mount_path": str(WS)}}
    assert "SANDBOX_VOLUMES" not in env
    config = {"core": {}, "sandbox": {"timeout": 5, "volumes": ["not", "a", "string"]}}
    rb.set_workspace(config, env, {}, WS)
    assert config["sandbox"] == {"timeout": 5, "volumes": ["not", "a", "string"]}
    assert "SANDBOX_VOLUMES" not in env


# --- task_identities ------------------------------------------------------------------------------

TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*-[0-9a-f]{8,64}")


def check_identities(names: list[str]) -> dict[str, tuple[str, str]]:
    ids = rb.task_identities(names)
    assert set(ids) == set(names)
    stems = [stem for stem, _ in ids.values()]
    tags = [tag for _, tag in ids.values()]
    assert len({s.casefold() for s in stems}) == len(names)  # distinct even on a case-blind file system
    assert len(set(tags)) == len(names)
    for name, (stem, tag) in ids.items():
        assert tag.isascii() and TAG.fullmatch(tag), tag
        assert len(tag) <= 24 + 1 + 64
        assert "/" not in stem and stem not in ("", ".", "..")
        assert len(f"{stem}.attempt-99.stdout.log".encode("utf-8", "surrogateescape")) <= 255
        if "~" not in stem:
            assert stem == name  # a plain stem is the name itself
    return ids


def test_identities_of_names_that_share_24_characters() -> None:
    common = "a-very-long-common-prefix"  # 25 characters: the slugs are the same
    ids = check_identities([f"{common}-1", f"{common}-2", common])
    assert all(stem == name for name, (stem, _) in ids.items())
    assert len({tag.rsplit("-", 1)[0] for _, tag in ids.values()}) == 1  # only the hash tells them apart


def test_identities_of_names_that_slug_alike() -> None:
    ids = check_identities(["a b", "a-b", "a!b", "a  b", "-a b-", "a\tb", "a.b", "a_b", "a--b"])
    assert ids["a b"][1].startswith("a-b-") and ids["a!b"][1].startswith("a-b-")


def test_identities_of_non_ascii_names() -> None:
    ids = check_identities(["ünïcødé", "日本語", "中文", "😀", "naïve", "naive"])
    assert ids["日本語"][1].startswith("task-") and ids["😀"][1].startswith("task-")
    assert ids["ünïcødé"][0] == "ünïcødé"  # safe: kept as it is


def test_identities_of_very_long_names() -> None:
    long1, long2 = "y" * 200 + "1", "y" * 200 + "2"
    wide = "é" * 51  # 102 bytes, 51 characters
    ids = check_identities([long1, long2, wide, "z" * 100, "z" * 101])
    for name in (long1, long2, wide, "z" * 101):
        assert "~" in ids[name][0]
    assert ids["z" * 100][0] == "z" * 100  # exactly the limit: plain
    assert ids[wide][0].startswith("é" * 30 + "~")  # cut on a character boundary


def test_identities_of_names_differing_only_in_case() -> None:
    ids = check_identities(["Task", "task", "TASK", "other", "Straße", "STRASSE", "strasse"])
    for name in ("Task", "task", "TASK", "Straße", "STRASSE", "strasse"):
        assert "~" in ids[name][0]
    assert ids["other"][0] == "other"


def test_identities_of_names_that_look_hashed() -> None:
    ids = check_identities(["a~b", "a_b", "a", "x~" + "0" * 8])
    assert "~" in ids["a~b"][0] and ids["a_b"][0] == "a_b"


def test_identities_of_many_names_mixed() -> None:
    names = [
        *(f"t{i}" for i in range(200)),
        *(f"T{i}" for i in range(0, 200, 7)),
        *("q" * 150 + str(i) for i in range(20)),
        "bad\udcff",  # a file name that is not UTF-8, kept by Python as a surrogate
        "bad\udcfe",
        "new\nline",
    ]
    ids = check_identities(names)
    assert ids == rb.task_identities(list(reversed(names)))  # independent of order


# --- the SDK driver entrypoint ----------------------------------------------------------------------


def sdk_entrypoint(*args: str, environ: dict[str, str] | None = None) -> rb.Entrypoint:
    env = {"PATH": os.environ.get("PATH", ""), **(environ or {})}
    settings = rb.settings_from_args(
        ["--prompt-dir", ".", "--entrypoint", "sdk", "--command", sys.executable, "--grace-period", "30", *args], env
    )
    return rb.choose_entrypoint(settings, {}, env)


def test_sdk_driver_argv_carries_the_step_limit_and_the_budget() -> None:
    driver = sdk_entrypoint(
        "--max-iterations", "7", "--max-budget-per-task", "0.5", environ={"LLM_MODEL": "m", "LLM_API_KEY": "k"}
    )
    assert isinstance(driver, rb.SdkDriver)
    t = rb.Task("t", Path("/p/t.md"), "t", "sha", None)
    argv = driver.argv(rb.Attempt(t, 1, 1, "run1", "s", EXPERIMENT), Path("/private"))
    assert argv[:4] == [sys.executable, str(Path(rb.__file__).absolute()), "--sdk-driver", "-f"]
    assert argv[argv.index("--max-iterations") + 1] == "7" and argv[argv.index("--max-budget") + 1] == "0.5"
    assert argv[argv.index("--grace") + 1] == "25"  # saved before run_batch's grace period ends
    assert argv[-1] == "--override-with-envs"
    parsed = rb.parse_driver_args(argv[3:])
    assert (parsed.prompt, parsed.max_iterations, parsed.max_budget, parsed.override_with_envs) == (
        Path("/p/t.md"),
        7,
        0.5,
        True,
    )


@pytest.mark.parametrize(
    "args", [("--agent-cls", "X"), ("--llm-config", "x"), ("--runtime", "docker"), ("--", "--selected-repo", "x")]
)
def test_sdk_driver_refuses_what_it_cannot_honour(args: tuple[str, ...]) -> None:
    with pytest.raises(rb.UsageError):
        sdk_entrypoint(*args)


# --- relocated: a moved or copied output folder -----------------------------------------------------


def test_relocated_names_the_runners_own_files_where_they_are_now(tmp_path: Path) -> None:
    here = tmp_path / "copy"
    (here / "logs").mkdir(parents=True)
    (here / "logs" / "a.stdout.log").write_text("x")
    (here / "workspaces" / "a").mkdir(parents=True)
    r = record(
        "a",
        stdout_log="/cluster/out/logs/a.stdout.log",
        stderr_log="/cluster/out/logs/a.stderr.log",  # not copied: kept as recorded
        trajectory_path="/elsewhere/a.json",  # not one of the runner's folders: kept
        workspace="/cluster/out/workspaces/a",
    )
    now = rb.relocated(r, here)
    assert now.stdout_log == str(here / "logs" / "a.stdout.log")
    assert now.workspace == str(here / "workspaces" / "a")
    assert (now.stderr_log, now.trajectory_path) == (r.stderr_log, r.trajectory_path)
    inside = record("a", stdout_log=str(here / "logs" / "a.stdout.log"))
    assert rb.relocated(inside, here) is inside


def test_attempts_to_grade_skips_errors_the_never_run_and_the_already_graded() -> None:
    latest = {
        "new": record("new", stdout_log="/o/logs/new.stdout.log"),
        "graded": record("graded", stdout_log="/o/logs/graded.stdout.log", evaluate_command="ev"),
        "other-cmd": record("other-cmd", stdout_log="/o/logs/o.stdout.log", evaluate_command="old"),
        "broken": record("broken", "error", stdout_log="/o/logs/b.stdout.log"),
        "no-log": record("no-log", stdout_log=None),
    }
    assert [r.task_name for r in rb.attempts_to_grade(list(latest.values()), "ev", rerun=False)] == [
        "new",
        "other-cmd",
    ]
    assert [r.task_name for r in rb.attempts_to_grade(list(latest.values()), "ev", rerun=True)] == [
        "new",
        "graded",
        "other-cmd",
    ]
