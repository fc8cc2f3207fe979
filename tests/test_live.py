"""Following running attempts (issue 12): stalls, live spend and steps, budgets held while tasks
run (per task, per run, per folder, across shards), run.json, the heartbeat, cost outliers. Most
tests run the runner as a process against the OpenHands stand-in (marked e2e); the stall clock and
the task budget are also checked in process on a LiveAttempt fed by hand (no mark, nothing started).

The stand-in's `STANDIN: tick S` adds an agent action with a grown llm_metrics every 0.5 s (one
LLM call, $0.0011, each) for S seconds; `hang-after-events N` writes N actions and then blocks
without a word, like a hung LLM call. The runner looks at running attempts every 2 s and writes
run.json every 5 s, so every timing bound below allows for those intervals plus a loaded machine.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, processes_with, read_jsonl, wait_until

import run_batch as rb

CALL = 0.0011  # what one stand-in LLM call costs at the workspace's prices
POLL = 2.0  # how often the runner looks at running attempts
STATUS_EVERY = 5.0  # how often it rewrites run.json while running


def status(ws: Workspace, name: str = "run.json") -> dict[str, Any] | None:
    try:
        return json.loads((ws.output / name).read_text())
    except FileNotFoundError:
        return None


def running_entries(ws: Workspace, name: str = "run.json") -> list[dict[str, Any]]:
    data = status(ws, name)
    return data["running"] if data and data.get("state") == "running" else []


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, str, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


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


# --- stalls --------------------------------------------------------------------------------------


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


@pytest.mark.e2e
@pytest.mark.slow
def test_a_hung_agent_is_recorded_stalled_and_retried(ws: Workspace) -> None:
    ws.prompt("hung", "STANDIN: hang-after-events 2\n")
    done = ws.run("--stall-timeout", "3", "--grace-period", "2", "--retries", "1", "--retry-backoff", "0")
    assert done.returncode == 1, done.stdout + done.stderr
    records = ws.records_of("hung")
    assert [r["status"] for r in records] == ["stalled", "stalled"]
    assert [r["attempt"] for r in records] == [1, 2]
    for r in records:
        assert r["error"] == "no progress for 3s; last event: run step 2"
        # stall timeout + grace period, plus up to two looks (2 s apart) and a loaded machine
        assert 3 <= r["elapsed_time_seconds"] <= 3 + 2 + 2 * POLL + 6, r["elapsed_time_seconds"]
        assert r["return_code"] == -signal.SIGKILL  # it ignored SIGINT: killed after the grace period
        assert r["total_cost"] == pytest.approx(2 * CALL)  # what its events said
    assert not processes_with(f"RUN_BATCH_SESSION={records[0]['session_name']}")
    assert re.search(r"1 task: 1 stalled\.", done.stdout), done.stdout
    assert "stalled     hung: no progress for 3s" in done.stdout
    report = ws.run("--report")
    assert report.returncode == 1
    assert "1 task: 1 stalled;" in report.stdout, report.stdout
    assert re.search(r"^hung\s+stalled\s", report.stdout, re.M)
    as_json = json.loads(ws.run("--report", "--format", "json").stdout)
    assert as_json["totals"]["counts"]["stalled"] == 1 and as_json["totals"]["counts"]["failed"] == 0


@pytest.mark.e2e
@pytest.mark.slow
def test_steady_events_past_the_stall_timeout_are_left_alone(ws: Workspace) -> None:
    ws.prompt("ticking", "STANDIN: tick 6\n")
    done = ws.run("--stall-timeout", "2", "--grace-period", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    [record] = ws.records_of("ticking")
    assert record["status"] == "success" and record["agent_state"] == "FINISHED"
    assert record["elapsed_time_seconds"] >= 6
    assert record["total_cost"] >= 12 * CALL - 1e-9  # every tick happened


# --- live spend ----------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_run_json_shows_the_live_spend_and_steps_of_a_running_task(ws: Workspace) -> None:
    ws.prompt("ticking", "STANDIN: tick 14\n")
    proc = ws.start("--grace-period", "5")
    try:
        seen: list[dict[str, Any]] = []

        def live_spend() -> bool:
            entries = running_entries(ws)
            seen[:] = entries
            return bool(entries) and (entries[0].get("spend") or 0) > 0 and (entries[0].get("steps") or 0) > 0

        assert wait_until(live_spend, timeout=20, step=0.2), f"run.json never showed spend: {status(ws)}"
        entry = seen[0]
        assert entry["task"] == "ticking" and entry["last_event"] == "run tick"
        data = status(ws)
        assert data is not None and data["spend"]["running"] > 0 and data["spend"]["this_run"] > 0
    finally:
        code, out, err = stop(proc, signal.SIGTERM)
    assert code == 143, out + err


@pytest.mark.e2e
@pytest.mark.slow
def test_a_task_killed_at_its_timeout_keeps_its_spend(ws: Workspace) -> None:
    ws.prompt("ticking", "STANDIN: tick 60\n")
    done = ws.run("--timeout", "4", "--grace-period", "5")
    [record] = ws.records_of("ticking")
    assert record["status"] == "timeout"
    assert record["total_cost"] is not None and record["total_cost"] > 0
    assert done.returncode == 1


@pytest.mark.e2e
@pytest.mark.slow
def test_with_nothing_left_on_disk_the_spend_seen_last_is_kept(ws: Workspace) -> None:
    # on SIGINT the stand-in removes its event files and saves no trajectory: only what the
    # runner saw while the task ran can tell its cost
    ws.prompt("ticking", "STANDIN: tick 60\nSTANDIN: wipe-on-stop\n")
    ws.run("--timeout", "6", "--grace-period", "5")
    [record] = ws.records_of("ticking")
    assert record["status"] == "timeout"
    assert record["trajectory_path"] is None
    assert record["total_cost"] is not None and record["total_cost"] >= CALL, record
    assert record["total_input_tokens"] is not None and record["total_input_tokens"] >= 1000
    assert record["metrics_source"] == "live"


# --- budgets -------------------------------------------------------------------------------------


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


@pytest.mark.e2e
@pytest.mark.slow
def test_a_batch_budget_reached_by_running_tasks_stops_them_and_the_same_command_resumes(ws: Workspace) -> None:
    for name in ("a", "b", "c"):
        ws.prompt(name, "STANDIN: tick 8\n")
    first = ws.run("--max-workers", "2", "--max-total-cost", "0.005", "--grace-period", "5")
    assert first.returncode == 1, first.stdout + first.stderr
    records = read_jsonl(ws.results)
    assert sorted(r["task_name"] for r in records) == ["a", "b"]  # c never started
    assert len(ws.launches()) == 2
    for r in records:
        assert r["status"] == "interrupted", r
        assert "batch budget of $0.005 reached" in r["error"]
        assert r["elapsed_time_seconds"] < 8  # stopped while it ran, not at its end
    assert "Stopped: batch budget" in first.stdout and "1 task skipped" in first.stdout, first.stdout
    summary = json.loads((ws.output / "summary.json").read_text())
    assert summary["totals"]["skipped_for_budget"] == ["c"]

    again = ws.run("--max-workers", "2", "--max-total-cost", "1", "--grace-period", "5")
    assert again.returncode == 0, again.stdout + again.stderr
    latest = {r["task_name"]: r for r in read_jsonl(ws.results)}
    assert {n: r["status"] for n, r in latest.items()} == {"a": "success", "b": "success", "c": "success"}
    assert latest["a"]["attempt"] == 2 and latest["c"]["attempt"] == 1


@pytest.mark.e2e
def test_max_run_cost_counts_this_run_and_max_total_cost_the_whole_folder(ws: Workspace) -> None:
    for name in ("a", "b", "c"):
        ws.prompt(name)  # $0.0022 each
    assert ws.run().returncode == 0  # $0.0066 recorded in the folder
    second = ws.run("--rerun", "--max-run-cost", "0.006")
    assert second.returncode == 0, second.stdout + second.stderr
    records = read_jsonl(ws.results)
    assert len(records) == 6 and all(r["status"] == "success" for r in records)  # earlier spend not counted

    ws.prompt("d")
    third = ws.run("--max-total-cost", "0.005")  # the folder holds $0.0132 already
    assert third.returncode == 1, third.stdout + third.stderr
    assert len(read_jsonl(ws.results)) == 6  # d never started
    assert "Stopped: batch budget of $0.005 reached" in third.stdout and "1 task skipped" in third.stdout

    fourth = ws.run("--max-run-cost", "0.005")  # this run has spent nothing yet
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert [r["status"] for r in ws.records_of("d")] == ["success"]


@pytest.mark.e2e
@pytest.mark.slow
def test_two_shards_at_once_share_one_folder_budget(ws: Workspace) -> None:
    ws.prompt("s1", "STANDIN: tick 60\n")  # shard 1/2
    ws.prompt("s2", "STANDIN: tick 60\n")  # shard 2/2
    budget = 0.08  # each alone would reach it after ~36 s; the two together after ~18 s
    procs = [
        subprocess.Popen(
            ws.command("--shard", shard, "--max-total-cost", str(budget), "--grace-period", "5"),
            env=ws.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for shard in ("1/2", "2/2")
    ]
    outputs = [p.communicate(timeout=150) for p in procs]
    records = [
        *read_jsonl(ws.output / "batch_results.shard-1-of-2.jsonl"),
        *read_jsonl(ws.output / "batch_results.shard-2-of-2.jsonl"),
    ]
    assert sorted(r["task_name"] for r in records) == ["s1", "s2"], outputs
    for r in records:
        assert r["status"] == "interrupted" and "batch budget of $0.08 reached" in (r["error"] or ""), r
    total = sum(r["total_cost"] for r in records)
    # Seen together: stopped at the budget plus what they spend while the other's spend is looked
    # up and the stop takes effect (generous: $0.0044/s for ~10 s). Each alone would stop at $0.08.
    assert budget <= total <= budget + 0.045, (total, [(r["task_name"], r["total_cost"]) for r in records])


@pytest.mark.e2e
@pytest.mark.slow
def test_max_budget_per_task_is_held_by_the_runner(ws: Workspace) -> None:
    ws.prompt("spender", "STANDIN: tick 40\n")  # the stand-in ignores -b, like a budget OpenHands misses
    done = ws.run("--max-budget-per-task", "0.005", "--grace-period", "5", "--retries", "1", "--retry-backoff", "0")
    assert done.returncode == 1
    [launch] = ws.launches()
    assert "-b" in launch["argv"] and launch["argv"][launch["argv"].index("-b") + 1] == "0.005"
    [record] = ws.records_of("spender")  # an agent outcome: not retried
    assert record["status"] == "failed", record
    assert "--max-budget-per-task" in record["error"] and "run_batch" in record["error"]
    assert record["elapsed_time_seconds"] < 40
    assert 0.005 < record["total_cost"] <= 0.005 + 0.01  # stopped soon after it passed the budget


# --- run.json ------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_run_json_is_valid_json_at_every_moment(ws: Workspace) -> None:
    ws.prompt("ticking", "STANDIN: tick 7\n")
    ws.prompt("quick")
    proc = ws.start("--max-workers", "2")
    path = ws.output / "run.json"
    reads, states = 0, set()
    first: dict[str, Any] = {}  # the first read that showed a running task
    while proc.poll() is None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        data = json.loads(text)  # never a torn file
        reads += 1
        states.add(data["state"])
        if data["running"] and not first:
            first = data
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert reads > 100 and "running" in states and states <= {"running", "finished"}  # finished: its last write
    final = json.loads(path.read_text())
    assert final["state"] == "finished"
    assert final["running"] == [] and final["tasks"]["done"] == 2 and final["tasks"]["selected"] == 2
    assert final["spend"]["this_run"] == pytest.approx(sum(r["total_cost"] for r in read_jsonl(ws.results)))
    assert first, "run.json never showed a running task"
    assert first["pid"] == proc.pid and first["host"] == socket.gethostname()
    assert re.fullmatch(r"[0-9a-f]{8}", first["run_id"]) and first["run_id"] == read_jsonl(ws.results)[0]["run_id"]
    assert {"selected", "done", "running"} <= set(first["tasks"]) and "this_run" in first["spend"]
    assert {e["task"] for e in first["running"]} <= {"ticking", "quick"}
    assert all({"task", "session", "elapsed", "spend", "steps", "last_event"} <= set(e) for e in first["running"])


@pytest.mark.e2e
@pytest.mark.slow
def test_run_json_says_interrupted_after_sigterm(ws: Workspace) -> None:
    ws.prompt("ticking", "STANDIN: tick 30\n")
    proc = ws.start("--grace-period", "5")
    assert wait_until(lambda: bool(running_entries(ws)), timeout=20)
    code, out, err = stop(proc, signal.SIGTERM)
    assert code == 143, out + err
    data = status(ws)
    assert data is not None and data["state"] == "interrupted" and data["running"] == []
    [record] = ws.records_of("ticking")
    assert record["status"] == "interrupted"


@pytest.mark.e2e
@pytest.mark.slow
def test_a_sigkilled_run_is_reported_died_by_the_next(ws: Workspace) -> None:
    prompt = ws.prompt("ticking", "STANDIN: tick 60\n")
    proc = ws.start("--grace-period", "2")
    try:
        assert wait_until(lambda: bool(running_entries(ws)), timeout=20), status(ws)
        old = status(ws)
        assert old is not None
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    old_run = old["run_id"]
    assert processes_with(f"RUN_BATCH_RUN_ID={old_run}")  # its OpenHands outlived it
    stale = status(ws)
    assert stale is not None and stale["state"] == "running" and stale["run_id"] == old_run  # nobody said otherwise

    prompt.write_text("STANDIN: tick 6\n")  # the next run need not take a minute
    nxt = ws.start()
    previous: list[dict[str, Any]] = []

    def new_status_written() -> bool:
        data = status(ws)
        if data and data["run_id"] != old_run:
            previous[:] = [data["previous_run"]]
            return True
        return False

    assert wait_until(new_status_written, timeout=30)
    out, err = nxt.communicate(timeout=60)
    assert nxt.returncode == 0, out + err
    assert previous[0] is not None and previous[0]["state"] == "died" and previous[0]["run_id"] == old_run
    assert previous[0]["pid"] == proc.pid
    final = status(ws)
    assert final is not None and final["state"] == "finished" and final["previous_run"]["run_id"] == old_run
    assert not processes_with(f"RUN_BATCH_RUN_ID={old_run}")  # cleaned up by the next run


# --- the heartbeat and --report ------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_heartbeat_lines_off_a_terminal_and_none_when_off(ws: Workspace) -> None:
    ws.prompt("four", "RUN: sleep 4\n")
    beating = ws.run("--heartbeat", "1")
    assert beating.returncode == 0
    beats = [line for line in beating.stdout.splitlines() if line.startswith("[heartbeat")]
    assert len(beats) >= 2, beating.stdout
    assert re.match(r"\[heartbeat \d\d:\d\d:\d\d\] 0/1 done, 1 running, \$\d+\.\d{4} spent this run", beats[0])
    silent = ws.run("--heartbeat", "0", "--rerun")
    assert silent.returncode == 0
    assert "[heartbeat" not in silent.stdout + silent.stderr
    assert [r["status"] for r in ws.records_of("four")] == ["success", "success"]


@pytest.mark.e2e
@pytest.mark.slow
def test_report_shows_a_live_runs_running_tasks(ws: Workspace) -> None:
    ws.prompt("done-before")
    assert ws.run().returncode == 0
    ws.prompt("ticking", "STANDIN: tick 30\n")
    proc = ws.start("--grace-period", "5")
    try:
        assert wait_until(lambda: any((e.get("steps") or 0) > 0 for e in running_entries(ws)), timeout=20)
        run_id = status(ws)["run_id"]  # type: ignore[index]
        report = ws.run("--report")
        assert f"Running now: run {run_id} (pid {proc.pid}" in report.stdout, report.stdout
        assert re.search(r"^  ticking  \d+s  \$0\.\d{4}  \d+ steps$", report.stdout, re.M), report.stdout
        as_json = json.loads(ws.run("--report", "--format", "json").stdout)
        assert [r["run_id"] for r in as_json["live_runs"]] == [run_id]
    finally:
        stop(proc, signal.SIGTERM)
    after = ws.run("--report")
    assert "Running now" not in after.stdout


# --- cost outliers -------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_cost_outliers_in_the_summary_and_the_report(ws: Workspace) -> None:
    for name in ("a", "b", "c", "d"):
        ws.prompt(name)  # $0.0022 each
    ws.prompt("pricey", "STANDIN: tick 4\n")  # ~$0.011
    done = ws.run("--max-workers", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("Cost outliers")]
    assert len(lines) == 1 and "pricey $" in lines[0], done.stdout
    assert not re.search(r"\b[abcd] \$", lines[0])
    report = ws.run("--report")
    [line] = [line for line in report.stdout.splitlines() if line.startswith("Cost outliers")]
    assert "pricey $" in line and not re.search(r"\b[abcd] \$", line)
    as_json = json.loads(ws.run("--report", "--format", "json").stdout)
    assert as_json["cost_outliers"] == ["pricey"]
