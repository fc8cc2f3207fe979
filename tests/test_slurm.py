"""Scale-out on a real Slurm: examples/schedulers/slurm-array.sh, the very file users copy, run
by a single-node Slurm started here (tests/slurm_cluster.py), with the stand-in as OpenHands.

What a real cluster does that setting SLURM_ARRAY_* by hand does not: array tasks start at
different times and share one output folder; at the time limit and on `scancel` Slurm signals
every process of the job (OpenHands too, before run_batch can stop it gracefully) and kills them
KillWait seconds later. The time limit is reached quickly by moving a running job's end time
(`scontrol update EndTime=`): Slurm then treats it exactly as its time limit (the same periodic
check, the early --signal, the SIGTERM to every process, state TIMEOUT).

Skips, with the reason, where Slurm is not installed (`bash .ci/install-slurm.sh`) or cannot start.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import COST_IN, COST_OUT, ROOT, SCRIPT, STANDIN, Workspace, read_jsonl, required, wait_until
from slurm_cluster import (
    FINISHED,
    INSTALL_HINT,
    SlurmCluster,
    SlurmUnavailable,
    command_line,
    missing_programs,
    processes_with,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLE = ROOT / "examples" / "schedulers" / "slurm-array.sh"
ONE_CALL = 1000 * COST_IN + 50 * COST_OUT  # what the stand-in has spent when its command runs
# The example asks for 4 CPUs and 16 GB per array task; the test node has neither to spare.
SMALL = ["--cpus-per-task=1", "--mem=50M"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    cannot = pytest.fail if required("slurm") else pytest.skip  # CI installs it: there it must run
    missing = missing_programs()
    if missing:
        cannot(f"Slurm is not installed (no {', '.join(missing)}); {INSTALL_HINT}")
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except SlurmUnavailable as exc:
        cannot(f"a test Slurm could not start: {exc}")
    yield c
    c.close()


@dataclass
class ArrayBatch:
    """One output folder shared by the shards of slurm-array.sh, submitted from `submit_dir`."""

    ws: Workspace
    cluster: SlurmCluster
    submit_dir: Path
    submitted: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        # The example's own knobs: where things are, and how run_batch starts.
        return {
            **self.ws.env,
            "PROJECT_DIR": str(self.ws.project),
            "PROMPT_DIR": str(self.ws.prompts),
            "OUTPUT_DIR": str(self.ws.output),
            "RUN_BATCH": f"{sys.executable} {SCRIPT}",
        }

    def submit(self, array: str, *sbatch: str, run_batch: tuple[str, ...] = ()) -> str:
        # Arguments after the script go to run_batch (they win over the example's): the stand-in
        # instead of OpenHands, with the CLI runtime (no Docker here), no retries, and run_batch.
        runner = [
            "--runtime",
            "cli",
            "--retries",
            "0",
            "--command",
            f"{shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))}",
            *run_batch,
        ]
        job = self.cluster.sbatch(
            [f"--array={array}", *SMALL, *sbatch, str(EXAMPLE), *runner], env=self.env, cwd=self.submit_dir
        )
        self.submitted.append(job)
        return job

    def shard(self, k: int, n: int) -> list[dict[str, Any]]:
        path = self.ws.output / f"batch_results.shard-{k}-of-{n}.jsonl"
        return read_jsonl(path) if path.exists() else []

    def launches(self) -> dict[str, int]:
        """How many times each task was started, from what the stand-in recorded."""
        counts: dict[str, int] = {}
        for launch in self.ws.launches():
            task = Path(launch["argv"][launch["argv"].index("-f") + 1]).stem
            counts[task] = counts.get(task, 0) + 1
        return counts

    def report(self) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "--report", "--format", "json", "--output-dir", str(self.ws.output)],
            env=self.ws.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    def job_logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((self.submit_dir / "logs").glob("*.out"))
        )

    def left_running(self) -> list[str]:
        """Processes of this batch's tasks still alive: the stand-in, its agent's commands."""
        marker = f"STANDIN_RECORD_DIR={self.ws.records}"
        wait_until(lambda: not processes_with(marker), timeout=3)
        return [command_line(p) for p in processes_with(marker)]

    def agent_commands_running(self) -> int:
        """Agent commands (the `sleep` of a held task) running now."""
        return sum(
            1 for p in processes_with(f"STANDIN_RECORD_DIR={self.ws.records}") if command_line(p).startswith("sleep ")
        )


@pytest.fixture
def batch(ws: Workspace, cluster: SlurmCluster) -> Iterator[ArrayBatch]:
    submit_dir = ws.root / "submit"
    (submit_dir / "logs").mkdir(parents=True)  # the example's --output=logs/...: Slurm does not create it
    batch = ArrayBatch(ws, cluster, submit_dir)
    yield batch
    # A failed test must not leave its jobs to the next one.
    for job in batch.submitted:
        if set(cluster.states(job).values()) - FINISHED:
            cluster.call("scancel", job)
            cluster.wait_finished(job, timeout=cluster.kill_wait + 10)


def held_prompts(ws: Workspace, quick: list[str], held: list[str]) -> Path:
    """Quick tasks, and tasks whose agent command runs until `release` exists. The prompt text
    does not change when it is released, so a resubmission sees the same tasks."""
    release = ws.root / "release"
    for name in quick:
        ws.prompt(name, "Say hello.\n")
    for name in held:
        ws.prompt(name, f"RUN: [ -e {shlex.quote(str(release))} ] || sleep 300\n")
    return release


def in_seconds(seconds: int) -> str:
    return (dt.datetime.now() + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


# ------------------------------------------------------------------------------------------------


def test_example_script_is_what_users_copy() -> None:
    text = EXAMPLE.read_text()
    # The early SIGTERM, to the batch shell only, longer ahead than run_batch's graceful stop
    # (--grace-period, 30 s by default) takes.
    early = re.findall(r"^#SBATCH --signal=B:TERM@(\d+)$", text, re.M)
    assert early and int(early[0]) >= 60, early
    assert re.search(r"^exec ", text, re.M), "run_batch must replace the batch shell to get that signal"
    assert subprocess.run(["bash", "-n", str(EXAMPLE)]).returncode == 0


def test_array_of_four_shards_runs_every_prompt_once_into_one_folder(batch: ArrayBatch) -> None:
    names = [f"p{n:02d}" for n in range(12)]
    for n, name in enumerate(names):
        batch.ws.prompt(name, f"RUN: sleep {n % 3}\n")  # shards run unevenly and overlap
    job = batch.submit("0-3")
    states = batch.cluster.wait_finished(job, timeout=120)
    assert states == {f"{job}_{i}": "COMPLETED" for i in range(4)}, batch.job_logs()

    assert batch.launches() == dict.fromkeys(names, 1)  # every prompt ran, exactly once
    for k in range(1, 5):
        records = batch.shard(k, 4)
        assert sorted(r["task_name"] for r in records) == names[k - 1 :: 4]  # shard K: every 4th from K
        assert {r["status"] for r in records} == {"success"}
    assert not (batch.ws.output / "batch_results.jsonl").exists()
    report = batch.report()
    assert sorted(r["task_name"] for r in report["tasks"]) == names  # --report merges the shards
    assert report["totals"]["counts"]["success"] == 12
    assert report["totals"]["total_cost"] == pytest.approx(12 * 2 * ONE_CALL)  # two LLM calls each


def stop_mid_run(batch: ArrayBatch, quick: list[str], held: list[str], running: int) -> tuple[str, Path]:
    """Submit two shards; return once the quick tasks have succeeded and `running` held tasks'
    agent commands run (their LLM call, and so their cost, is then in their event files)."""
    release = held_prompts(batch.ws, quick, held)
    job = batch.submit("0-1")
    ok = wait_until(
        lambda: batch.agent_commands_running() == running and sum(len(batch.shard(k, 2)) for k in (1, 2)) == len(quick),
        timeout=60,
    )
    assert ok, (batch.cluster.states(job), batch.launches(), batch.job_logs())
    return job, release


def check_stopped(batch: ArrayBatch, running: list[str], not_started: list[str], graceful: bool) -> None:
    """The tasks that ran when the job stopped: interrupted, cost kept, nothing left alive."""
    records = {r["task_name"]: r for k in (1, 2) for r in batch.shard(k, 2)}
    for name in running:
        r = records.get(name)
        assert r is not None, f"{name} has no record: {batch.job_logs()}"
        assert r["status"] == "interrupted", (
            f"{name}: {r['status']} ({r['error']}), return code {r['return_code']}, agent "
            f"{r['agent_state']}, cost {r['total_cost']} from {r['metrics_source']}"
        )
        if graceful:  # stopped by run_batch's SIGINT: OpenHands saved its trajectory
            assert r["error"] == "runner stopped: SIGTERM received", r["error"]
            assert r["agent_state"] == "STOPPED" and r["trajectory_path"], r
            assert (r["total_cost"], r["metrics_source"]) == (pytest.approx(ONE_CALL), "trajectory")
        else:
            # Killed by Slurm's SIGTERM: the cost is what its event files show. Slurm signals the
            # processes one by one, in no set order: the agent's command may die first and the
            # agent make its next LLM call (or even finish) before its own SIGTERM arrives.
            assert r["total_cost"] is not None and r["total_cost"] >= ONE_CALL - 1e-12, r
            assert r["metrics_source"] in ("events", "trajectory"), r
    assert not any(name in records for name in not_started)
    assert batch.left_running() == []


def resubmit_finishes_the_rest(batch: ArrayBatch, release: Path, quick: list[str], held: list[str]) -> None:
    """The same array again: only the tasks that had not succeeded run, and all succeed."""
    before = batch.launches()
    release.touch()
    again = batch.submit("0-1")
    states = batch.cluster.wait_finished(again, timeout=90)
    assert set(states.values()) == {"COMPLETED"}, (states, batch.job_logs())
    ran_now = {name: batch.launches().get(name, 0) - before.get(name, 0) for name in quick + held}
    assert ran_now == {**dict.fromkeys(quick, 0), **dict.fromkeys(held, 1)}
    report = batch.report()
    assert {r["task_name"]: r["status"] for r in report["tasks"]} == dict.fromkeys(quick + held, "success")
    assert batch.left_running() == []


# Two shards of four tasks with --max-workers 2 (the example's): shard 1 gets t1 t3 t5 t7, shard 2
# t2 t4 t6 t8. t1 and t2 finish at once; then t3 t5 (and t4 t6) run until released, t7 and t8 wait.
QUICK, HELD = ["t1", "t2"], ["t3", "t4", "t5", "t6", "t7", "t8"]
RUNNING, NOT_STARTED = ["t3", "t4", "t5", "t6"], ["t7", "t8"]


def test_time_limit_stops_running_tasks_gracefully_and_resubmitting_resumes(batch: ArrayBatch) -> None:
    """The example as it is: Slurm's early B:TERM reaches run_batch alone, well before the limit."""
    job, release = stop_mid_run(batch, QUICK, HELD, len(RUNNING))
    # The time limit is now a minute away: the early signal (120 s ahead) comes at Slurm's next
    # periodic check (every 30 s), the limit itself no sooner than 30 s after it.
    for i in (0, 1):
        batch.cluster.call("scontrol", "update", f"JobId={job}_{i}", f"EndTime={in_seconds(60)}")
    states = batch.cluster.wait_finished(job, timeout=75)
    jobs = batch.cluster.jobs(job)
    # run_batch stopped by itself before the limit: exit 143, which Slurm calls FAILED.
    assert {n: (j["JobState"], j["ExitCode"]) for n, j in jobs.items()} == {
        f"{job}_{i}": ("FAILED", "143:0") for i in (0, 1)
    }, (states, batch.job_logs())
    check_stopped(batch, RUNNING, NOT_STARTED, graceful=True)
    resubmit_finishes_the_rest(batch, release, QUICK, HELD)


def test_time_limit_without_early_warning_still_records_interrupted(batch: ArrayBatch) -> None:
    """When the early signal comes too late (or a copy of the script lost it), Slurm's SIGTERM at
    the time limit reaches every process at once: OpenHands is killed, not stopped."""
    job, release = stop_mid_run(batch, QUICK, HELD, len(RUNNING))
    for i in (0, 1):  # a second away: the early signal and the limit come in the same check
        batch.cluster.call("scontrol", "update", f"JobId={job}_{i}", f"EndTime={in_seconds(1)}")
    states = batch.cluster.wait_finished(job, timeout=75)
    assert set(states.values()) == {"TIMEOUT"}, (states, batch.job_logs())
    check_stopped(batch, RUNNING, NOT_STARTED, graceful=False)
    resubmit_finishes_the_rest(batch, release, QUICK, HELD)


@pytest.mark.parametrize("how", ["scancel", "scancel --batch --signal=TERM"])
def test_scancel_of_one_array_task(batch: ArrayBatch, how: str) -> None:
    """Cancelling shard 2 alone: its running tasks end interrupted, shard 1 is not touched."""
    quick = ["t1", "t2", "t3", "t5", "t7"]  # all of shard 1, and shard 2's first
    held = ["t4", "t6", "t8"]
    release = held_prompts(batch.ws, quick, held)
    job = batch.submit("0-1")
    ok = wait_until(
        lambda: batch.agent_commands_running() == 2 and len(batch.shard(1, 2)) == 4 and len(batch.shard(2, 2)) == 1,
        timeout=60,
    )
    assert ok, (batch.cluster.states(job), batch.launches(), batch.job_logs())
    done = batch.cluster.call(*how.split(), f"{job}_1")
    assert done.returncode == 0, done.stderr
    batch.cluster.wait_finished(job, timeout=60)
    jobs = batch.cluster.jobs(job)
    ended = {n: (j["JobState"], j["ExitCode"]) for n, j in jobs.items()}
    assert ended[f"{job}_0"] == ("COMPLETED", "0:0")
    if how == "scancel":
        assert ended[f"{job}_1"][0] == "CANCELLED", (ended, batch.job_logs())
    else:  # only run_batch was signalled: it stopped by itself, exit 143
        assert ended[f"{job}_1"] == ("FAILED", "143:0"), (ended, batch.job_logs())
    check_stopped(batch, ["t4", "t6"], ["t8"], graceful=how != "scancel")
    resubmit_finishes_the_rest(batch, release, quick, held)


# Four shards of two ticking tasks each, all at once (--max-workers 2, the example's): eight tasks
# spending ONE_CALL every 0.5 s each, $0.0176/s together. Alone, one shard (two tasks) would need
# ~34 s to reach BUDGET; only together (~9 s) do they reach it, well before their 40 s end.
TICKING = [f"b{n}" for n in range(1, 9)]
BUDGET = 0.15
CALLS_PER_SECOND = 2  # the stand-in's `tick`: one more LLM call every 0.5 s
# How far past the budget the folder can get, per running task. A shard sees its own tasks' spend
# as of its last look, the other shards' as of their last status file (rewritten every 2 s: up to
# 2 s old), and looks every 2 s: it sees the budget reached at most 2 + 2 s after the tasks
# together reached it. Its tasks then get SIGINT within 0.5 s (the wait between checks on a task)
# and the stand-in ends within one more tick (0.5 s), without another LLM call. That is 5 s, and
# 2 s more for a slow start of a stop on a busy 2-core machine: 7 s of spend per running task.
LAG_SECONDS = 2 + 2 + 0.5 + 0.5 + 2
MARGIN = len(TICKING) * LAG_SECONDS * CALLS_PER_SECOND * ONE_CALL  # 8 x 14 calls = $0.1232


def test_shards_share_one_budget_and_stop_together_near_it(batch: ArrayBatch) -> None:
    """--max-total-cost over an array: each shard adds the others' recorded and live spend, so the
    array stops together near the budget, not at four times it; a higher budget resumes it."""
    for name in TICKING:  # shard K gets b{K} and b{K+4}
        batch.ws.prompt(name, "STANDIN: tick 40\n")
    job = batch.submit("0-3", run_batch=("--max-total-cost", str(BUDGET), "--grace-period", "5"))
    states = batch.cluster.wait_finished(job, timeout=40)
    jobs = batch.cluster.jobs(job)
    # Stopped by the budget, not by a signal: exit 1 (tasks left unfinished), which Slurm calls FAILED.
    assert {n: (j["JobState"], j["ExitCode"]) for n, j in jobs.items()} == {
        f"{job}_{i}": ("FAILED", "1:0") for i in range(4)
    }, (states, batch.job_logs())

    records = [r for k in range(1, 5) for r in batch.shard(k, 4)]
    assert sorted(r["task_name"] for r in records) == TICKING, batch.job_logs()  # each started once
    for r in records:
        assert r["status"] == "interrupted", r
        assert f"batch budget of ${BUDGET:g} reached" in (r["error"] or ""), r["error"]
        assert r["agent_state"] == "STOPPED" and r["metrics_source"] == "trajectory", r  # stopped gracefully
        assert r["elapsed_time_seconds"] < 30, r  # stopped while they ran, not at their end
    total = sum(r["total_cost"] for r in records)
    spent = {r["task_name"]: r["total_cost"] for r in records}
    # Every shard counted only what had been spent: together at least the budget, and past it by
    # no more than what eight tasks spend while the stop spreads (MARGIN above). Shards that each
    # counted their own spend alone would have run ~34 s, to ~$0.6 together.
    assert BUDGET <= total <= BUDGET + MARGIN, (total, spent)
    logs = batch.job_logs()
    assert logs.count(f"Stopped: batch budget of ${BUDGET:g} reached") == 4, logs  # every shard says why
    assert batch.left_running() == []

    # The same array with a higher budget runs the interrupted tasks again, to the end.
    again = batch.submit("0-3", run_batch=("--max-total-cost", "2", "--grace-period", "5"))
    states = batch.cluster.wait_finished(again, timeout=75)
    assert set(states.values()) == {"COMPLETED"}, (states, batch.job_logs())
    assert batch.launches() == dict.fromkeys(TICKING, 2)
    report = batch.report()
    assert {r["task_name"]: r["status"] for r in report["tasks"]} == dict.fromkeys(TICKING, "success")
    assert report["totals"]["total_cost"] <= 2
    assert batch.left_running() == []
