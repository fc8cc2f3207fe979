"""Hardening (issue 9): one task never touches another's processes or files, and hostile input
never costs memory, data or a traceback. One section per class of the issue, each with cases
beyond the issue's examples. Real processes, signals, pipes and files throughout; the only
time limits are hang guards, never performance assertions."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ENV_SECRET, SECRET, STANDIN, Workspace, processes_with, read_jsonl, summary, wait_until

import run_batch as rb

ONE_TASK_COST = 0.0022  # two stand-in LLM calls (see conftest COST_IN / COST_OUT)
ONE_TASK_TOKENS = (2000, 100)
ARTEFACTS = ("trajectory_path", "stdout_log", "stderr_log")
STATUS_WORDS = "success|failed|timeout|error|interrupted"


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def hws(ws: Workspace) -> Iterator[Workspace]:
    """The usual workspace with a TMPDIR of its own (the runner's private folder goes there, so a
    leftover is seen), and afterwards nothing any of its runs started is left running."""
    tmp = ws.root / "tmp"
    tmp.mkdir()
    ws.env["TMPDIR"] = str(tmp)
    yield ws
    for launch in ws.launches():
        run_id = launch.get("env", {}).get("RUN_BATCH_RUN_ID")
        for pid in processes_with(f"RUN_BATCH_RUN_ID={run_id}") if run_id else []:
            kill_quietly(pid)


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def private_leftovers(ws: Workspace) -> list[Path]:
    return sorted(Path(ws.env["TMPDIR"]).glob("run_batch-*"))


def run(ws: Workspace, *args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    """ws.run, with a hang reported as a test failure (subprocess.run kills the runner)."""
    try:
        return ws.run(*args, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        pytest.fail(f"run-batch {' '.join(args)} hung: not finished after {timeout:g}s")


def assert_clean(done: subprocess.CompletedProcess[str]) -> None:
    """No traceback, no exception Python could only report on its way out."""
    for word in ("Traceback", "Exception ignored", "MemoryError"):
        assert word not in done.stderr, done.stderr[-3000:]


def all_records(ws: Workspace) -> list[dict[str, Any]]:
    """Every JSON object line of every results file in the output folder, oldest first."""
    found = []
    for path in sorted(ws.output.glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict) and isinstance(value.get("finished_at"), str):
                found.append(value)
    return sorted(found, key=lambda r: r["finished_at"])


def assert_distinct_artefacts(records: list[dict[str, Any]]) -> None:
    """No two attempts share a trajectory or log file, even on a case-blind disk, and every file
    name fits the OS (255 bytes per path component)."""
    for key in ARTEFACTS:
        paths = [r[key] for r in records if r.get(key)]
        assert len({p.casefold() for p in paths}) == len(paths), f"{key} shared: {sorted(paths)}"
        for p in paths:
            assert max(len(os.fsencode(part)) for part in Path(p).parts) <= 255, p


def assert_exact_cost(record: dict[str, Any], source: str = "trajectory") -> None:
    assert record["metrics_source"] == source, record
    assert record["total_cost"] == pytest.approx(ONE_TASK_COST)
    assert (record["total_input_tokens"], record["total_output_tokens"]) == ONE_TASK_TOKENS


def launch_of(ws: Workspace, record: dict[str, Any]) -> dict[str, Any]:
    [launch] = [l for l in ws.launches() if l["sid"] == record["session_id"]]
    return launch


def snapshot(record: dict[str, Any]) -> dict[str, bytes]:
    return {key: Path(record[key]).read_bytes() for key in ARTEFACTS if record.get(key)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# === 1. A task's identity is unique ===============================================================

# Pairs of names whose old session names were equal (slug cut to 24 characters).
COLLIDING = [
    ("repository_analysis_task_001", "repository_analysis_task_002"),  # same first 24 characters
    ("a b", "a-b"),  # slug alike
    ("名前", "タスク"),  # non-ASCII: both became "task"
]


@pytest.mark.e2e
def test_tasks_whose_names_collided_run_side_by_side_with_their_own_processes_and_cost(hws: Workspace) -> None:
    """The short task's clean-up sweep must not kill its long twin, nor take its cost."""
    for long, short in COLLIDING:
        hws.prompt(long, "RUN: sleep 2\n")
        hws.prompt(short, "RUN: echo hi\n")
    done = run(hws, "--max-workers", str(2 * len(COLLIDING)))
    assert_clean(done)
    records = read_jsonl(hws.results)
    assert sorted(r["task_name"] for r in records) == sorted(n for pair in COLLIDING for n in pair)
    for r in records:
        assert (r["status"], r["return_code"], r["error"]) == ("success", 0, None), r
        assert_exact_cost(r)
    assert done.returncode == 0
    assert len({r["session_name"] for r in records}) == len(records)
    assert len({r["session_id"] for r in records}) == len(records)


@pytest.mark.e2e
def test_everything_derived_from_a_task_name_is_distinct(hws: Workspace) -> None:
    """Session name, sid, process markers, container name and labels, log and trajectory names:
    one per task, for names equal but for case, slugging alike, sharing a long prefix, non-ASCII,
    or spelled like another task's file stem."""
    names = [
        "repository_analysis_task_001",
        "repository_analysis_task_002",
        "a b",
        "a-b",
        "a_b",
        "名前",
        "タスク",
        "ü",
        "task",
        "Task",
        "x!",
        "x?",
        f"Task~{hashlib.sha256(b'Task').hexdigest()[:8]}",
    ]  # the old case-collision stem of "Task"
    for name in names:
        hws.prompt(name)
    bin_dir = hws.root / "bin"
    bin_dir.mkdir()
    calls = hws.root / "docker-calls.txt"
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "docker").chmod(0o755)
    hws.env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    done = run(hws, "--runtime", "docker", "--max-workers", "4")
    assert_clean(done)
    records = read_jsonl(hws.results)
    assert sorted(r["task_name"] for r in records) == sorted(names)
    assert [r["status"] for r in records] == ["success"] * len(names), [r["error"] for r in records]
    assert len({r["session_name"] for r in records}) == len(names)
    assert len({r["session_id"] for r in records}) == len(names)
    for r in records:  # it ends up in a container name: readable characters only
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", r["session_name"]), r["session_name"]
    assert_distinct_artefacts(records)
    assert len(hws.launches()) == len(names)  # one stand-in record per sid: none overwritten
    labels = set()
    for r in records:
        launch = launch_of(hws, r)
        assert launch["env"]["RUN_BATCH_SESSION"] == r["session_name"]
        assert launch["env"]["RUN_BATCH_RUN_ID"] == r["run_id"]
        labels.add(launch["config"]["sandbox"]["docker_runtime_kwargs"]["labels"]["run_batch.session"])
    assert len(labels) == len(names)
    removed = [c for c in calls.read_text().splitlines() if c.startswith("rm -f openhands-runtime-")]
    assert sorted(removed) == sorted(f"rm -f openhands-runtime-{r['session_id']}" for r in records)


# === 2. Files of other runs are never overwritten =================================================


@pytest.mark.e2e
@pytest.mark.parametrize(
    "first, second",
    [
        (["--results-name", "monday.jsonl"], ["--results-name", "tuesday.jsonl", "--rerun"]),
        (["--shard", "1/1"], ["--shard", "1/2", "--rerun"]),  # a changed shard count: another results file
        ([], ["--results-name", "other.jsonl", "--rerun"]),
    ],
    ids=["monday-tuesday", "shard-count", "default-then-named"],
)
def test_runs_on_other_results_files_never_overwrite_earlier_files(
    hws: Workspace, first: list[str], second: list[str]
) -> None:
    hws.prompt("a", "RUN: date +%s%N\n")  # every attempt's files differ
    assert run(hws, *first).returncode == 0
    [earlier] = all_records(hws)
    before = snapshot(earlier)
    assert set(before) == set(ARTEFACTS)
    done = run(hws, *second)
    assert done.returncode == 0, done.stderr
    earlier_again, later = all_records(hws)
    assert earlier_again == earlier and later["run_id"] != earlier["run_id"]
    for key in ARTEFACTS:
        assert later[key] != earlier[key] and Path(later[key]).is_file()
    assert snapshot(earlier) == before  # the earlier record still points at its own, untouched files


@pytest.mark.e2e
def test_a_later_attempt_never_takes_another_tasks_file_names(hws: Workspace) -> None:
    """Attempt 2 of `a` and attempt 1 of a task named `a.attempt-2` must not share files."""
    hws.prompt("a", "RUN: date +%s%N\n")
    hws.prompt("a.attempt-2", "RUN: date +%s%N\n")
    assert run(hws).returncode == 0
    [other] = hws.records_of("a.attempt-2")
    before = snapshot(other)
    assert run(hws, "--rerun", "--tasks", "a").returncode == 0
    assert [r["attempt"] for r in hws.records_of("a")] == [1, 2]
    assert_distinct_artefacts(read_jsonl(hws.results))
    assert snapshot(other) == before


@pytest.mark.e2e
def test_symlinked_log_and_trajectory_files_are_not_written_through(hws: Workspace) -> None:
    outside = hws.root / "outside"
    outside.mkdir()
    for sub in ("logs", "trajectories"):
        (hws.output / sub).mkdir(parents=True)
    planted = {}
    for name, link in (
        ("stdout", "logs/a.stdout.log"),
        ("stderr", "logs/a.stderr.log"),
        ("trajectory", "trajectories/a.json"),
    ):
        target = outside / f"{name}.txt"
        target.write_text(f"someone else's {name}\n")
        (hws.output / link).symlink_to(target)
        planted[target] = target.read_bytes()
    missing = [outside / "b-stdout", outside / "b-stderr", outside / "b-trajectory"]  # dangling links
    (hws.output / "logs/b.stdout.log").symlink_to(missing[0])
    (hws.output / "logs/b.stderr.log").symlink_to(missing[1])
    (hws.output / "trajectories/b.json").symlink_to(missing[2])
    hws.prompt("a")
    hws.prompt("b")
    done = run(hws)
    assert_clean(done)
    assert {t: t.read_bytes() for t in planted} == planted
    assert not any(m.exists() for m in missing)
    records = read_jsonl(hws.results)
    assert [(r["task_name"], r["status"]) for r in records] == [("a", "success"), ("b", "success")]
    for r in records:
        assert_exact_cost(r)
        for key in ARTEFACTS:
            path = Path(r[key])
            assert path.is_file() and not path.is_symlink(), path
            assert path.resolve().is_relative_to(hws.output.resolve())


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["batch_results.jsonl", "batch_run.log", ".batch_results.jsonl.lock", "summary.json"])
def test_symlinked_results_lock_log_and_summary_are_not_written_through(hws: Workspace, name: str) -> None:
    """Either a usage error naming the link (exit 2, one line), or a run that never writes through it."""
    hws.output.mkdir()
    target = hws.root / "outside.txt"
    target.write_text('{"note": "not the runner\'s file"}\n')
    (hws.output / name).symlink_to(target)
    hws.prompt("a")
    done = run(hws)
    assert_clean(done)
    assert target.read_text() == '{"note": "not the runner\'s file"}\n'
    if done.returncode == 2:
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert name in done.stderr and re.search(r"symbolic link|symlink", done.stderr), done.stderr
    else:
        assert done.returncode == 0, done.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("folder", ["logs", "trajectories"])
def test_symlinked_logs_or_trajectories_folder_is_a_usage_error(hws: Workspace, folder: str) -> None:
    outside = hws.root / "elsewhere"
    outside.mkdir()
    hws.output.mkdir()
    (hws.output / folder).symlink_to(outside, target_is_directory=True)
    hws.prompt("a")
    done = run(hws)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and folder in done.stderr, done.stderr
    assert re.search(r"symbolic link|symlink", done.stderr), done.stderr
    assert list(outside.iterdir()) == [] and hws.launches() == []


# === 3. Every way a run ends is handled ===========================================================


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT], ids=["SIGHUP", "SIGQUIT"])
def test_hangup_and_quit_stop_the_batch_like_sigterm(hws: Workspace, sig: int) -> None:
    hws.prompt("a-long", "RUN: sleep 30\n")
    hws.prompt("b-next")
    runner = hws.start("--grace-period", "10")
    try:
        assert wait_until(lambda: len(hws.launches()) == 1)
        lock = json.loads((hws.output / ".batch_results.jsonl.lock").read_text())
        run_id, private = lock["run_id"], Path(lock["private_dir"])
        assert private.is_dir() and private.name.startswith("run_batch-")
        assert private.parent == Path(hws.env["TMPDIR"])
        assert wait_until(lambda: len(processes_with(f"RUN_BATCH_RUN_ID={run_id}")) >= 2)  # stand-in + sleep
        runner.send_signal(sig)
        _, err = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
    assert "Traceback" not in err, err
    assert runner.returncode == 128 + sig, (runner.returncode, err)
    [record] = read_jsonl(hws.results)
    assert (record["task_name"], record["status"]) == ("a-long", "interrupted")
    assert signal.Signals(sig).name in (record["error"] or "")
    assert len(hws.launches()) == 1  # b-next never started
    assert processes_with(f"RUN_BATCH_RUN_ID={run_id}") == []
    assert not private.exists() and private_leftovers(hws) == []


def read_first_line_then_close(fd: int) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    os.close(fd)
    return data


@pytest.mark.e2e
def test_dry_run_into_a_pipe_closed_early_is_quiet(hws: Workspace) -> None:
    """`run-batch --dry-run | head -1`, with more output than a pipe holds."""
    for n in range(1000):
        (hws.prompts / f"{'p' * 90}{n:04d}.md").write_text("hi\n")
    read_end, write_end = os.pipe()
    runner = subprocess.Popen(
        hws.command("--dry-run"),
        env=hws.env,
        stdout=write_end,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    os.close(write_end)
    try:
        first = read_first_line_then_close(read_end)
        _, err = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
    assert first.startswith(b"Would run")
    assert err == "", err
    assert runner.returncode in (0, 141, -signal.SIGPIPE)


@pytest.mark.e2e
def test_a_run_that_loses_its_console_stops_cleanly(hws: Workspace) -> None:
    """stdout is a pipe whose reader goes away after the first line: exit 141, finished records
    kept, the rest interrupted or not started, nothing left running, no traceback."""
    for n in range(3):
        hws.prompt(f"t{n}", "RUN: sleep 1\n")
    read_end, write_end = os.pipe()
    runner = subprocess.Popen(
        hws.command("--max-workers", "1", "--grace-period", "10"),
        env=hws.env,
        stdout=write_end,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    os.close(write_end)
    try:
        first = read_first_line_then_close(read_end)
        _, err = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
    assert first.startswith(b"run ")
    for word in ("Traceback", "Exception ignored", "error:"):
        assert word not in err, err
    assert runner.returncode == 141, (runner.returncode, err)
    records = read_jsonl(hws.results)
    assert (records[0]["task_name"], records[0]["status"]) == ("t0", "success")
    assert all(r["status"] == "interrupted" for r in records[1:]), records
    assert len(hws.launches()) < 3  # it stopped instead of running on without a console
    run_id = records[0]["run_id"]
    assert processes_with(f"RUN_BATCH_RUN_ID={run_id}") == [] and private_leftovers(hws) == []


def test_an_exception_in_a_worker_neither_escapes_nor_leaves_anything_behind(
    hws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the per-task console path (after the record is written) must not end the batch
    with a traceback, lose another task, or leave the private folder or the lock behind."""
    hws.prompt("a")
    hws.prompt("b")
    real = rb.PlainView.finished

    def broken(self: rb.PlainView, record: Any, line: str, last: bool) -> None:
        name = record["task_name"] if isinstance(record, dict) else record.task_name
        if name == "a":
            raise RuntimeError("view broke")
        real(self, record, line, last)

    monkeypatch.setattr(rb.PlainView, "finished", broken)
    monkeypatch.setattr(os, "environ", dict(hws.env))
    monkeypatch.setattr(tempfile, "tempdir", hws.env["TMPDIR"])
    code = rb.main(hws.command("--max-workers", "1")[2:])  # raises if anything escapes
    assert code in (0, 1)
    assert {r["task_name"]: r["status"] for r in read_jsonl(hws.results)} == {"a": "success", "b": "success"}
    assert "view broke" in (hws.output / "batch_run.log").read_text()
    assert private_leftovers(hws) == []
    assert summary(hws)["totals"]["tasks"] == 2
    again = run(hws)  # the lock was let go: the same command runs (nothing left to do)
    assert again.returncode == 0, again.stderr


# === 4. Memory stays bounded whatever a task prints or saves ======================================


@pytest.mark.e2e
@pytest.mark.slow  # 2 s here, but each writes and reads 100-200 MiB: slower on a slow disk
@pytest.mark.parametrize(
    "prompt, source",
    [
        ("STANDIN: long-line-mb 200\n", "trajectory"),  # one 200 MiB stderr line, no newline
        ("STANDIN: no-state\nSTANDIN: long-line-mb 100 stdout\n", "trajectory"),  # stdout is read too
        ("STANDIN: big-trajectory-mb 150\n", "trajectory"),  # only its last llm_metrics is needed
        ("STANDIN: big-event-mb 150\nSTANDIN: no-trajectory\n", "events"),  # a huge event file
    ],
    ids=["stderr-line", "stdout-line", "trajectory", "event-file"],
)
def test_memory_stays_bounded_whatever_a_task_prints_or_saves(hws: Workspace, prompt: str, source: str) -> None:
    hws.prompt("big", prompt)
    done = run(hws, timeout=120)
    assert_clean(done)
    [record] = read_jsonl(hws.results)
    assert (record["status"], record["agent_state"]) == ("success", "FINISHED"), record["error"]
    assert_exact_cost(record, source)
    assert len(hws.results.read_bytes()) < 64 * 1024
    assert summary(hws)["totals"]["runner_peak_rss_mb"] < 150


@pytest.mark.e2e
def test_a_megabytes_long_failure_message_becomes_one_short_line(hws: Workspace) -> None:
    hws.prompt("loud", "STANDIN: error-mb 5\n")
    done = run(hws)
    assert_clean(done)
    [record] = read_jsonl(hws.results)
    assert record["status"] == "failed" and record["return_code"] == 1
    error = record["error"]
    assert error and "RuntimeError" in error
    assert len(error) <= 1000 and "\n" not in error and "\r" not in error
    for line in hws.results.read_bytes().splitlines():
        assert len(line) < 64 * 1024
    assert summary(hws)["tasks"][0]["error"] == error
    assert all(len(line) <= 2000 for line in done.stdout.splitlines())
    assert summary(hws)["totals"]["runner_peak_rss_mb"] < 150


@pytest.mark.e2e
@pytest.mark.slow  # writes and reads 200 MiB
def test_a_huge_line_in_the_results_file_costs_no_memory(hws: Workspace) -> None:
    hws.prompt("a")
    hws.prompt("b")
    assert run(hws, "--tasks", "a").returncode == 0
    with open(hws.results, "a") as f:  # line 2: 200 MiB of junk, then a newline
        block = "j" * (1 << 20)
        for _ in range(200):
            f.write(block)
        f.write("\n")
    size = hws.results.stat().st_size
    done = run(hws, timeout=120)
    assert_clean(done)
    assert done.returncode == 0, done.stderr[-2000:]
    assert reported_lines(done.stderr, "batch_results.jsonl", 2) == 1, done.stderr[-2000:]
    assert hws.results.stat().st_size > size  # appended to, not rewritten
    assert len(hws.launches()) == 2  # a was not run again
    assert summary(hws)["totals"]["runner_peak_rss_mb"] < 150


# === 5. The results folder is data from outside ===================================================


def plant_bad_records(ws: Workspace) -> tuple[dict[int, str], dict[int, str]]:
    """A real success record for `good`, then records with wrong types, and a foreign `other.jsonl`.
    Returns the bad line numbers of each file (number -> what is wrong)."""
    ws.prompt("good")
    assert run(ws, "--tasks", "good").returncode == 0
    [good] = read_jsonl(ws.results)
    x1 = ws.prompt("x1")

    def like_good(**changes: Any) -> str:
        return json.dumps({**good, **changes})

    bad = {  # an otherwise valid record with one field of the wrong type, or no record at all
        2: like_good(task_name="x1", prompt_sha256=sha256(x1), elapsed_time_seconds="abc"),  # a "success"
        3: like_good(task_name="good", status="failed", elapsed_time_seconds="abc"),  # not good's latest
        4: like_good(task_name="x2", status=5),
        5: like_good(task_name=None),
        6: like_good(task_name={}),
        7: json.dumps([1, 2, 3]),
        8: json.dumps("just a string"),
        9: like_good(task_name="x3", total_cost="lots"),
        10: like_good(task_name="x4", finished_at=5),
        11: like_good(task_name="x5", total_input_tokens="many"),
        12: like_good(task_name="x6", error=12345, status="failed"),
        13: like_good(task_name="x7", agent_state=7),
        14: like_good(task_name=["good"]),
    }
    with open(ws.results, "a") as f:
        for number in sorted(bad):
            f.write(bad[number] + "\n")
    assert len(ws.results.read_text().splitlines()) == max(bad)
    (ws.output / "other.jsonl").write_text(
        '{"event": "deploy", "ok": true}\n{"task_name": "good", "comment": "no status here"}\n'
    )
    return bad, {1: "no status", 2: "no status"}


def reported_lines(stderr: str, file_name: str, number: int) -> int:
    """How many times stderr names line `number` of `file_name`: `<file>:N`, or `<file> ... line N`
    / `lines N-M, K` up to the next colon (a count such as `and 8 more` names nothing)."""
    named = 0
    for line in stderr.splitlines():
        if file_name not in line:
            continue
        rest = line.split(file_name, 1)[1]
        numbers = re.findall(r"^:(\d+)\b", rest)
        if m := re.search(r"\blines?\b", rest):
            segment = rest[m.start() :].split(":", 1)[0]
            for first, last in re.findall(r"\b(\d+)(?:-(\d+))?\b(?! more)", segment):
                numbers += [str(n) for n in range(int(first), int(last or first) + 1)]
        named += numbers.count(str(number))
    return named


@pytest.mark.e2e
def test_bad_records_are_reported_once_and_ignored_by_a_run(hws: Workspace) -> None:
    bad, _ = plant_bad_records(hws)
    hws.prompt("fresh")
    results_before = hws.results.read_bytes()
    other_before = (hws.output / "other.jsonl").read_bytes()

    dry = run(hws, "--dry-run")
    assert_clean(dry)
    assert dry.returncode == 0
    assert re.search(r"skip +good", dry.stdout) and re.search(r"run +x1", dry.stdout), dry.stdout

    done = run(hws)
    assert_clean(done)
    assert done.returncode in (0, 1)
    for number, text in bad.items():
        assert reported_lines(done.stderr, "batch_results.jsonl", number) == 1, (number, text, done.stderr)
    assert reported_lines(done.stderr, "batch_results.jsonl", 1) == 0  # the good record is fine
    run_id = summary(hws)["totals"]["run_id"]
    this_run = [r for r in all_records(hws) if r.get("run_id") == run_id]
    assert sorted(r["task_name"] for r in this_run) == ["fresh", "x1"]  # good's success honoured; x1's was bad
    assert all(r["status"] == "success" for r in this_run)
    totals = summary(hws)["totals"]
    assert totals["tasks"] == 3 and totals["counts"]["success"] == 3
    assert totals["total_cost"] == pytest.approx(3 * ONE_TASK_COST)  # no "lots" in the sum
    assert hws.results.read_bytes().startswith(results_before)  # appended to, nothing rewritten
    assert (hws.output / "other.jsonl").read_bytes() == other_before

    again = run(hws)  # and every later run is just as fine
    assert_clean(again)
    assert again.returncode in (0, 1) and len(hws.launches()) == 3  # nothing left to run
    assert hws.results.read_bytes().startswith(results_before)


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["table", "json", "markdown"])
def test_report_survives_bad_records_and_names_them(hws: Workspace, fmt: str) -> None:
    bad, foreign = plant_bad_records(hws)
    before = {p.name: p.read_bytes() for p in hws.output.glob("*.jsonl")}
    done = run(hws, "--report", "--output-dir", str(hws.output), "--format", fmt)
    assert_clean(done)
    assert done.returncode in (0, 1), done.stderr
    for number in bad:
        assert reported_lines(done.stderr, "batch_results.jsonl", number) == 1, (number, done.stderr)
    for number in foreign:
        assert reported_lines(done.stderr, "other.jsonl", number) == 1, (number, done.stderr)
    assert reported_lines(done.stderr, "batch_results.jsonl", 1) == 0
    assert "good" in done.stdout
    if fmt == "json":
        report = json.loads(done.stdout)
        assert [(t["task_name"], t["status"]) for t in report["tasks"]] == [("good", "success")]
        assert report["totals"]["total_cost"] == pytest.approx(ONE_TASK_COST)
    assert {p.name: p.read_bytes() for p in hws.output.glob("*.jsonl")} == before


# === 6. Names and files the OS allows are handled =================================================


@pytest.mark.e2e
def test_long_prompt_names_run_and_rerun_with_short_unique_file_names(hws: Workspace) -> None:
    names = [
        "a" * 247,  # 250 bytes with .md: too long for "<name>.stdout.log"
        "a" * 246 + "b",  # differs from the one before only at the end
        "名" * 82,  # 249 bytes of UTF-8
        "名" * 81 + "x",
        "b" * 237,
    ]  # 240 bytes: attempt 1 fitted, "<name>.attempt-2.stdout.log" did not
    for name in names:
        hws.prompt(name)
    first = run(hws, "--max-workers", "5")
    assert_clean(first)
    assert first.returncode == 0, first.stderr
    second = run(hws, "--max-workers", "5", "--rerun")
    assert_clean(second)
    assert second.returncode == 0, second.stderr
    records = read_jsonl(hws.results)
    for name in names:
        assert [(r["status"], r["attempt"]) for r in hws.records_of(name)] == [("success", 1), ("success", 2)]
    assert_distinct_artefacts(records)
    for r in records:
        assert all(Path(r[key]).is_file() for key in ARTEFACTS)
        assert_exact_cost(r)


NOT_REGULAR = ["fifo", "fifo-symlink", "dev-zero-symlink"]


def make_not_regular(ws: Workspace, kind: str) -> None:
    path = ws.prompts / "x.md"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "fifo-symlink":
        os.mkfifo(ws.root / "a-pipe")
        path.symlink_to(ws.root / "a-pipe")
    else:
        path.symlink_to("/dev/zero")


def limited_memory() -> None:
    """Today's code reads /dev/zero until memory runs out: make that quick, not the machine's RAM."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.e2e
@pytest.mark.parametrize("kind", NOT_REGULAR)
def test_a_prompt_that_is_not_a_regular_file_never_hangs_or_crashes(hws: Workspace, kind: str) -> None:
    make_not_regular(hws, kind)
    hws.prompt("good")
    dry = run(hws, "--dry-run", timeout=15, preexec_fn=limited_memory)
    assert_clean(dry)
    assert dry.returncode == 0 and "good" in dry.stdout
    done = run(hws, timeout=30, preexec_fn=limited_memory)
    assert_clean(done)
    records = {r["task_name"]: r for r in read_jsonl(hws.results)}
    assert records["good"]["status"] == "success"
    if "x" in records:  # an error record saying why ...
        assert records["x"]["status"] == "error" and "regular file" in records["x"]["error"]
        assert done.returncode == 1
    else:  # ... or left out with a warning
        assert "x.md" in done.stderr and done.returncode == 0
    assert len(hws.launches()) == 1  # only good ran


@pytest.mark.e2e
def test_a_prompt_over_the_size_limit_is_an_error_record(hws: Workspace) -> None:
    (hws.prompts / "huge.md").write_bytes(b"Fix it.\n" + b"x" * (11 << 20))
    hws.prompt("good")
    done = run(hws)
    assert_clean(done)
    assert done.returncode == 1
    records = {r["task_name"]: r for r in read_jsonl(hws.results)}
    assert records["good"]["status"] == "success"
    assert records["huge"]["status"] == "error"
    assert re.search(r"10 ?Mi?B|10485760|10,485,760", records["huge"]["error"]), records["huge"]["error"]
    assert len(hws.launches()) == 1  # never given to OpenHands


# === 7. Output stays well-formed under load =======================================================

SLOW_CONSOLE = """\
import os, sys, time
if "RUN_BATCH_RUN_ID" not in os.environ:  # the runner only, not its tasks
    class SlowConsole:  # a console that takes a moment per write, as over ssh
        def __init__(self, real):
            self._real = real
        def write(self, text):
            time.sleep(0.002)
            return self._real.write(text)
        def __getattr__(self, name):
            return getattr(self._real, name)
    sys.stdout = SlowConsole(sys.stdout)
"""


@pytest.mark.e2e
def test_finished_lines_from_many_workers_never_run_together(hws: Workspace) -> None:
    """16 workers, 48 instant tasks, stdout a pipe that is slow to take each write: a line is
    written whole or not at all (a slow console widens the race; it does not create it)."""
    site = hws.root / "slow-console"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_CONSOLE)
    hws.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), hws.env.get("PYTHONPATH")]))
    for n in range(48):
        hws.prompt(f"t{n:02d}", "RUN: true\n")
    done = run(hws, "--max-workers", "16", timeout=180)
    assert_clean(done)
    assert done.returncode == 0, done.stderr[-2000:]
    pattern = re.compile(rf"^\[(\d+)/48\] ({STATUS_WORDS}) +t\d\d  ")
    lines = [l for l in done.stdout.splitlines() if l.startswith("[")]
    numbers = []
    for line in lines:
        m = pattern.match(line)
        assert m and len(re.findall(r"\[\d+/48\]", line)) == 1, line
        numbers.append(int(m.group(1)))
    assert len(re.findall(r"\[\d+/48\]", done.stdout)) == 48
    assert sorted(numbers) == list(range(1, 49))


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk that can really fill up (ENOSPC). Needs root."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root to mount")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill_up(disk: Path) -> None:
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with pytest.raises(OSError):
        (disk / "probe").write_bytes(b"x" * 4096)


def error_lines(stderr: str) -> list[str]:
    return [l for l in stderr.splitlines() if "error:" in l]


@pytest.mark.e2e
def test_a_full_disk_leaves_no_temporary_file_and_names_the_file(hws: Workspace, tiny_disk: Path) -> None:
    out = tiny_disk / "out"
    hws.prompt("a")
    assert run(hws, "--output-dir", str(out)).returncode == 0
    results = out / "batch_results.jsonl"
    before = results.read_bytes()
    fill_up(tiny_disk)
    done = run(hws, "--output-dir", str(out), "--rerun")
    assert_clean(done)
    assert done.returncode != 0
    assert list(out.glob(".summary-*")) == []
    errors = error_lines(done.stderr)
    assert errors, done.stderr
    for line in errors:
        assert "error: :" not in line and ("summary.json" in line or str(out) in line), line
    assert results.read_bytes().startswith(before)
    assert private_leftovers(hws) == []


@pytest.mark.e2e
def test_a_summary_that_cannot_be_replaced_leaves_no_temporary_file_and_names_it(hws: Workspace) -> None:
    """summary.json is a folder (works as root too, unlike permissions)."""
    hws.prompt("a")
    (hws.output / "summary.json").mkdir(parents=True)
    done = run(hws)
    assert_clean(done)
    assert done.returncode in (1, 2)
    assert list(hws.output.glob(".summary-*")) == []
    errors = error_lines(done.stderr)
    assert errors and all("error: :" not in l for l in errors), done.stderr
    assert any("summary.json" in l for l in errors), done.stderr
    assert (hws.output / "summary.json").is_dir()
    if done.returncode == 1:  # found out at the end: the task's record is kept
        assert [r["status"] for r in read_jsonl(hws.results)] == ["success"]


# === 8. Regressions of the audit (FIFOs, locks, signals, strict numbers, secrets) =================

CLI_STANDIN = Path(__file__).resolve().parent / "fake_openhands_cli.py"


def dead_pid() -> int:
    """The pid of a process that has finished and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait(timeout=10)
    return child.pid


def lock_of(output: Path) -> dict[str, Any]:
    """The lock file's content, once it is whole (a run writes it truncate-then-write)."""
    found: dict[str, Any] = {}

    def whole() -> bool:
        try:
            found.update(json.loads((output / ".batch_results.jsonl.lock").read_text()))
        except (OSError, ValueError):
            return False
        return "run_id" in found

    assert wait_until(whole, timeout=10), "no lock file"
    return found


def started(ws: Workspace) -> int:
    """How many launches the stand-in has recorded (counted, not read: one may be half written)."""
    return len(list(ws.records.glob("*.json")))


def start_long_run(ws: Workspace, task: str = "long") -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """A run of `task` (a 4 s command) in the usual output folder, seen running: its lock and at
    least the stand-in and its command carrying the run's marker."""
    runner = ws.start("--tasks", task)
    try:
        assert wait_until(lambda: started(ws) == 1)
        lock = lock_of(ws.output)
        assert wait_until(lambda: len(processes_with(f"RUN_BATCH_RUN_ID={lock['run_id']}")) >= 2)
    except BaseException:
        stop_runner(runner)
        raise
    return runner, lock


def stop_runner(runner: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """The runner's output once it ends by itself; killed (and the test failed) if it hangs."""
    try:
        return runner.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        runner.kill()
        runner.communicate()
        pytest.fail(f"the runner hung: not finished after {timeout:g}s")
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()


def plant_lock(output: Path, **fields: Any) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / ".batch_results.jsonl.lock").write_text(json.dumps(fields))


@pytest.mark.e2e
def test_a_copied_output_folder_never_touches_the_live_run_it_was_copied_from(hws: Workspace) -> None:
    """`cp -a` of a folder whose run is still going, lock file included, then a run on the copy:
    the lock names a live runner, so nothing of that run (processes, private folder) is acted on."""
    hws.prompt("long", "RUN: sleep 4\n")
    hws.prompt("quick")
    runner, lock = start_long_run(hws)
    copy = hws.root / "copy"
    try:
        subprocess.run(["cp", "-a", str(hws.output), str(copy)], check=True, timeout=30)
        assert lock_of(copy)["run_id"] == lock["run_id"]
        second = run(hws, "--output-dir", str(copy), "--tasks", "quick")
        alive_after = processes_with(f"RUN_BATCH_RUN_ID={lock['run_id']}")
    finally:
        _, err = stop_runner(runner)
    assert alive_after, "the copied lock's run lost its processes"
    assert runner.returncode == 0, err
    [record] = hws.records_of("long")
    assert (record["status"], record["error"]) == ("success", None), record
    assert Path(lock["private_dir"]).parent == Path(hws.env["TMPDIR"])
    assert_clean(second)
    assert second.returncode == 0, second.stderr
    assert re.search(rf"pid {runner.pid}\b.*still running", second.stderr), second.stderr
    assert [r["status"] for r in read_jsonl(copy / "batch_results.jsonl")] == ["success"]  # quick


@pytest.mark.e2e
def test_a_forged_lock_never_makes_the_runner_delete_the_folder_it_names(hws: Workspace) -> None:
    keep = hws.root / "victim" / "run_batch-keep"
    keep.mkdir(parents=True)
    (keep / "precious.txt").write_text("not the runner's\n")
    plant_lock(hws.output, pid=dead_pid(), host=socket.gethostname(), run_id="zz", private_dir=str(keep))
    hws.prompt("a")
    done = run(hws)
    assert_clean(done)
    assert done.returncode == 0, done.stderr
    assert (keep / "precious.txt").read_text() == "not the runner's\n"
    assert [r["status"] for r in read_jsonl(hws.results)] == ["success"]
    assert private_leftovers(hws) == []


@pytest.mark.e2e
def test_a_forged_lock_naming_a_live_runs_id_never_sweeps_that_runs_processes(hws: Workspace) -> None:
    """The lock in another output folder says: run <the live run's id>, of a dead pid on this
    host. Only processes whose runner is gone may be swept: the live run's task survives."""
    hws.prompt("long", "RUN: sleep 4\n")
    hws.prompt("quick")
    keep = hws.root / "victim" / "run_batch-keep"
    keep.mkdir(parents=True)
    other = hws.root / "other-output"
    runner, lock = start_long_run(hws)
    try:
        plant_lock(other, pid=dead_pid(), host=socket.gethostname(), run_id=lock["run_id"], private_dir=str(keep))
        second = run(hws, "--output-dir", str(other), "--tasks", "quick")
        alive_after = processes_with(f"RUN_BATCH_RUN_ID={lock['run_id']}")
    finally:
        _, err = stop_runner(runner)
    assert_clean(second)
    assert second.returncode == 0, second.stderr
    assert alive_after, "the forged lock's run id swept the live run's processes"
    assert runner.returncode == 0, err
    [record] = hws.records_of("long")
    assert (record["status"], record["error"]) == ("success", None), record
    assert keep.is_dir()


@pytest.mark.e2e
@pytest.mark.parametrize("folder", ["workspaces", "conversations"])
def test_symlinked_workspaces_or_conversations_folder_is_a_usage_error(hws: Workspace, folder: str) -> None:
    """workspaces/ (--workspace-per-task) and conversations/ (the V1 CLI) hold what the runner
    makes per attempt: a link there would have it make the folders, and the agent write, elsewhere."""
    outside = hws.root / "elsewhere"
    outside.mkdir()
    hws.output.mkdir()
    (hws.output / folder).symlink_to(outside, target_is_directory=True)
    hws.prompt("a", "RUN: echo agent-was-here > note.txt\n")
    if folder == "workspaces":
        done = run(hws, "--workspace-per-task", timeout=30)
    else:
        home = Path(hws.env["HOME"]) / ".openhands"
        home.mkdir(parents=True)
        (home / "agent_settings.json").write_text(
            json.dumps(
                {
                    "llm": {
                        "model": "openai/scripted",
                        "api_key": SECRET,
                        "base_url": "http://127.0.0.1:9/v1",
                        "num_retries": 0,
                    },
                    "tools": [{"name": "terminal"}],
                    "condenser": None,
                }
            )
        )
        command = hws.command("--entrypoint", "cli", standin=CLI_STANDIN)
        try:
            done = subprocess.run(
                command, env=hws.env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            pytest.fail("run-batch --entrypoint cli hung")
    assert_clean(done)
    assert list(outside.iterdir()) == [], "written through the link"
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1 and folder in done.stderr, done.stderr
    assert re.search(r"symbolic link|symlink", done.stderr), done.stderr
    assert hws.launches() == []


@pytest.mark.e2e
def test_a_stray_workspace_folder_gives_the_attempt_another_name(hws: Workspace) -> None:
    """workspaces/a is already there (made by hand, or left by a run that died): the attempt gets
    a workspace of its own under another name, and the stray folder is left as it is."""
    stray = hws.output / "workspaces" / "a"
    stray.mkdir(parents=True)
    (stray / "keep.txt").write_text("left here\n")
    hws.prompt("a", "RUN: echo agent-was-here > note.txt\n")
    done = run(hws, "--workspace-per-task")
    assert_clean(done)
    assert done.returncode == 0, done.stderr
    [record] = read_jsonl(hws.results)
    assert (record["status"], record["error"]) == ("success", None), record
    workspace = Path(record["workspace"])
    assert workspace != stray and workspace.parent == stray.parent
    assert (workspace / "note.txt").read_text() == "agent-was-here\n"
    assert sorted(p.name for p in stray.iterdir()) == ["keep.txt"]
    assert Path(record["trajectory_path"]).stem == workspace.name  # files and folder share the name
    assert_exact_cost(record)


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGALRM], ids=["SIGUSR1", "SIGALRM"])
def test_user_signals_and_alarms_stop_the_batch_gracefully(hws: Workspace, sig: int) -> None:
    """Their default would end the runner on the spot, its task left running with no timeout and
    its private configs behind."""
    hws.prompt("a-long", "RUN: sleep 30\n")
    hws.prompt("b-next")
    runner = hws.start("--grace-period", "10")
    try:
        assert wait_until(lambda: started(hws) == 1)
        lock = lock_of(hws.output)
        run_id, private = lock["run_id"], Path(lock["private_dir"])
        assert private.is_dir()
        assert wait_until(lambda: len(processes_with(f"RUN_BATCH_RUN_ID={run_id}")) >= 2)  # stand-in + sleep
        runner.send_signal(sig)
    except BaseException:
        stop_runner(runner, timeout=1)
        raise
    _, err = stop_runner(runner)
    assert "Traceback" not in err, err
    assert runner.returncode == 128 + sig, (runner.returncode, err)
    assert processes_with(f"RUN_BATCH_RUN_ID={run_id}") == []
    [record] = read_jsonl(hws.results)
    assert (record["task_name"], record["status"]) == ("a-long", "interrupted")
    assert signal.Signals(sig).name in (record["error"] or "")
    assert len(hws.launches()) == 1  # b-next never started
    assert not private.exists() and private_leftovers(hws) == []


@pytest.mark.e2e
def test_a_fifo_planted_in_the_session_events_folder_never_hangs_the_run(hws: Workspace) -> None:
    """The agent's command makes a FIFO among its session's event files: reading it would block
    for ever (the live follower and the end-of-run reading both look at that folder)."""
    hws.prompt("a", f"RUN: for d in {hws.file_store}/sessions/*/events; do mkfifo $d/7.json; done; sleep 2\n")
    hws.prompt("b")
    done = run(hws, "--timeout", "20", "--max-workers", "1", timeout=40)
    assert_clean(done)
    assert done.returncode == 0, done.stderr
    fifos = list(hws.file_store.glob("sessions/*/events/7.json"))
    assert fifos and all(stat_is_fifo(p) for p in fifos)  # the FIFO was really there
    records = {r["task_name"]: r for r in read_jsonl(hws.results)}
    assert {n: r["status"] for n, r in records.items()} == {"a": "success", "b": "success"}
    assert_exact_cost(records["a"])


def stat_is_fifo(path: Path) -> bool:
    return stat.S_ISFIFO(path.lstat().st_mode)


NEAR_MISSES = """\
import os, sys
line = ("Action metrics - accumulated_cost: 1," * 1800)[:65535]
for _ in range(128):  # 8 MiB of near-misses, no newline at all
    sys.stderr.write(line)
sys.stderr.write("\\n")
sys.stderr.flush()
os.execv(sys.executable, [sys.executable, {standin!r}, *sys.argv[1:]])
"""


@pytest.mark.e2e
def test_a_log_full_of_near_miss_cost_lines_is_scanned_in_seconds(hws: Workspace) -> None:
    """8 MiB of `Action metrics - accumulated_cost: 1,` without the rest of the line: a scan whose
    cost grows with the square of a piece would take hours. A hang guard, not a benchmark."""
    wrapper = hws.root / "near_misses.py"
    wrapper.write_text(NEAR_MISSES.format(standin=str(STANDIN)))
    hws.prompt("a")
    started = time.monotonic()
    try:
        done = subprocess.run(
            hws.command(standin=wrapper),
            env=hws.env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the runner hung on a log of near-miss cost lines")
    wall = time.monotonic() - started
    assert_clean(done)
    assert done.returncode == 0, done.stderr[-2000:]
    assert wall < 30, f"{wall:.1f}s"
    [record] = read_jsonl(hws.results)
    assert record["status"] == "success"
    assert_exact_cost(record)


PLANT_STATE = """\
import glob, json
for d in glob.glob({events!r}):
    with open(d + "/99.json", "w") as f:
        json.dump({{"id": 99, "source": "environment", "observation": "agent_state_changed",
                   "extras": {{"agent_state": {state!r}}}}}, f)
"""


@pytest.mark.e2e
@pytest.mark.parametrize("state", ["x" * 900_000, ENV_SECRET], ids=["900k-characters", "a-secret"])
def test_agent_state_from_an_event_file_is_a_short_name_or_nothing(hws: Workspace, state: str) -> None:
    """No state line in the log (an old OpenHands), so the state comes from the event files; the
    agent's command adds one whose agent_state is a megabyte of text, or a key."""
    plant = hws.root / "plant_state.py"
    plant.write_text(PLANT_STATE.format(events=f"{hws.file_store}/sessions/*/events", state=state))
    hws.prompt("a", f"STANDIN: no-state\nRUN: {shlex.quote(sys.executable)} {shlex.quote(str(plant))}\n")
    done = run(hws)
    assert_clean(done)
    assert list(hws.file_store.glob("sessions/*/events/99.json"))  # the planted event is there
    [record] = read_jsonl(hws.results)
    assert record["agent_state"] is None or re.fullmatch(r"[A-Z_]{1,32}", record["agent_state"]), record["agent_state"][
        :100
    ]
    for text in (hws.results.read_text(), (hws.output / "summary.json").read_text(), done.stdout, done.stderr):
        assert state[:64] not in text and state.upper()[:64] not in text
    assert len(hws.results.read_bytes()) < 64 * 1024


def strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in JSON")

    return json.loads(text, parse_constant=refuse)


def plant_nan_record(ws: Workspace) -> None:
    """A real success record for `good`, then one for `odd-numbers` whose cost is Infinity and time NaN
    (Python's JSON writer and reader take NaN and Infinity; no other reader does)."""
    ws.prompt("good")
    assert run(ws).returncode == 0
    [good] = read_jsonl(ws.results)
    bad = {**good, "task_name": "odd-numbers", "total_cost": float("inf"), "elapsed_time_seconds": float("nan")}
    with open(ws.results, "a") as f:
        f.write(json.dumps(bad) + "\n")
    assert "Infinity" in ws.results.read_text() and "NaN" in ws.results.read_text()


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["table", "markdown", "json", "html"])
def test_report_of_a_record_with_nan_and_infinity_is_clean_and_strict(hws: Workspace, fmt: str) -> None:
    plant_nan_record(hws)
    done = run(hws, "--report", "--output-dir", str(hws.output), "--format", fmt, timeout=30)
    assert_clean(done)
    assert done.returncode in (0, 1), done.stderr
    shown = (hws.output / "report.html").read_text() if fmt == "html" else done.stdout
    assert not re.search(r"\b(nan|inf|infinity)\b", shown, re.I), shown[-3000:]
    if fmt == "json":
        report = strict_json(done.stdout)
        assert [t["task_name"] for t in report["tasks"]] == ["good"]
        assert report["totals"]["total_cost"] == pytest.approx(ONE_TASK_COST)
    strict_json((hws.output / "summary.json").read_text())


@pytest.mark.e2e
def test_a_nan_cost_in_another_results_file_does_not_disable_the_budget(hws: Workspace) -> None:
    """NaN plus anything is NaN, and NaN >= budget is never true: the folder's spend must stay a
    number, so --max-total-cost still stops the run."""
    hws.prompt("a")
    assert run(hws).returncode == 0  # $0.0022 recorded
    [good] = read_jsonl(hws.results)
    (hws.output / "other.jsonl").write_text(json.dumps({**good, "task_name": "z", "total_cost": float("nan")}) + "\n")
    hws.prompt("b")
    done = run(hws, "--max-total-cost", "0.002")
    assert_clean(done)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Stopped: batch budget of $0.002 reached" in done.stdout, done.stdout
    assert len(hws.launches()) == 1  # b never started
    assert hws.records_of("b") == []
    strict_json((hws.output / "summary.json").read_text())


def plant_not_regular(output: Path, kind: str) -> list[str]:
    """FIFOs and devices where the runner reads files of the output folder; returns their names."""
    output.mkdir(parents=True, exist_ok=True)
    if kind == "foreign-jsonl":
        os.mkfifo(output / "foreign.jsonl")
        (output / "zero.jsonl").symlink_to("/dev/zero")
        return ["foreign.jsonl", "zero.jsonl"]
    os.mkfifo(output / kind)
    return [kind]


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["foreign-jsonl", "evaluations.jsonl", "run.other.json"])
def test_fifos_and_devices_in_the_output_folder_never_hang_a_report_a_dry_run_or_a_run(
    hws: Workspace, kind: str
) -> None:
    hws.prompt("a")
    assert run(hws, "--tasks", "a").returncode == 0
    names = plant_not_regular(hws.output, kind)
    hws.prompt("b")
    for args in (("--report", "--output-dir", str(hws.output)), ("--dry-run",), ()):
        done = run(hws, *args, timeout=20, preexec_fn=limited_memory)
        assert_clean(done)
        assert done.returncode == 0, (args, done.stderr)
        if kind == "foreign-jsonl" and "--dry-run" not in args:  # skipped with a warning naming it
            for name in names:
                assert re.search(rf"warning: .*{re.escape(name)}", done.stderr), (args, done.stderr)
    assert {r["task_name"]: r["status"] for r in read_jsonl(hws.results)} == {"a": "success", "b": "success"}
    assert all(stat_is_fifo(hws.output / n) or (hws.output / n).is_symlink() for n in names)  # left as they are


@pytest.mark.e2e
def test_a_fifo_in_place_of_the_results_file_is_a_usage_error(hws: Workspace) -> None:
    hws.output.mkdir()
    os.mkfifo(hws.results)
    hws.prompt("a")
    for args in ((), ("--dry-run",)):
        done = run(hws, *args, timeout=20)
        assert_clean(done)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "batch_results.jsonl" in done.stderr, done.stderr
    assert hws.launches() == [] and stat_is_fifo(hws.results)


@pytest.mark.e2e
@pytest.mark.parametrize("where", ["dev-zero", "outside"])
def test_html_report_never_shows_a_trajectory_from_outside_the_output_folder(hws: Workspace, where: str) -> None:
    hws.prompt("a")
    assert run(hws).returncode == 0
    [good] = read_jsonl(hws.results)
    if where == "dev-zero":
        target = Path("/dev/zero")
    else:
        target = hws.root / "elsewhere.json"
        events = json.loads(Path(good["trajectory_path"]).read_text())
        for event in events:
            if event.get("message"):
                event["message"] = "SOMEONE-ELSES-FILE"
        target.write_text(json.dumps(events))
    with open(hws.results, "a") as f:
        f.write(json.dumps({**good, "trajectory_path": str(target), "finished_at": "2999-01-01T00:00:00+00:00"}) + "\n")
    done = run(
        hws, "--report", "--output-dir", str(hws.output), "--format", "html", timeout=30, preexec_fn=limited_memory
    )
    assert_clean(done)
    assert done.returncode == 0, done.stderr
    page = (hws.output / "report.html").read_text()
    assert "SOMEONE-ELSES-FILE" not in page
    assert "\0" not in page


@pytest.mark.e2e
def test_non_utf8_prompt_names_that_read_alike_get_distinct_records(hws: Workspace) -> None:
    """`bad\\xff.md` (not UTF-8) and `bad\\ufffd.md` (UTF-8) both read `bad\\ufffd`."""
    (hws.prompts / os.fsdecode(b"bad\xff.md")).write_text("hi\n")
    (hws.prompts / os.fsdecode("bad\ufffd.md".encode())).write_text("hi\n")
    hws.prompt("ok")
    dry = run(hws, "--dry-run", timeout=30, errors="replace")  # the example command names the file as it is
    assert_clean(dry)
    assert dry.returncode in (0, 1), dry.stderr
    done = run(hws, timeout=60, errors="replace")
    assert_clean(done)
    assert done.returncode in (0, 1), done.stderr
    records = read_jsonl(hws.results)
    names = [r["task_name"] for r in records]
    assert len(records) == 3 and len(set(names)) == 3, names
    by_name = {r["task_name"]: r for r in records}
    assert by_name["ok"]["status"] == "success" and by_name["bad\ufffd"]["status"] == "success"
    [other] = [r for n, r in by_name.items() if n not in ("ok", "bad\ufffd")]
    assert other["status"] == "error" and "UTF-8" in other["error"]
    assert len(hws.launches()) == 2  # ok and bad\ufffd: the other cannot be passed on


@pytest.mark.e2e
def test_an_attempt_whose_record_cannot_be_written_is_not_counted(hws: Workspace) -> None:
    hws.prompt("t0")
    hws.prompt("t1")
    assert run(hws, "--tasks", "t0").returncode == 0  # one record already there
    with open(hws.results, "a") as f:  # and a blank line (skipped): the limit below leaves room for
        f.write(" " * (1 << 20) + "\n")  # every other file of the run, but not for one more record
    size = hws.results.stat().st_size

    def small_files() -> None:  # the next record does not fit (EFBIG, as on a full disk)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1000, size + 1000))

    done = run(hws, preexec_fn=small_files)
    assert_clean(done)
    assert done.returncode == 1
    assert "cannot write" in done.stderr
    assert re.search(r"t1 .*NOT RECORDED", done.stdout), done.stdout
    assert [r["task_name"] for r in read_jsonl(hws.results)] == ["t0"]
    assert len(hws.launches()) == 2  # t1 ran, and its record is lost
    data = summary(hws)
    recorded_successes = [t["task_name"] for t in data["tasks"] if t["status"] == "success"]
    assert "t1" not in recorded_successes, data["tasks"]
    assert data["totals"]["counts"].get("success", 0) == len(recorded_successes) <= 1, data["totals"]


CRASH_WITH_KEY = """\
import sys
sys.stderr.write("Traceback (most recent call last):\\n  File \\"x.py\\", line 1\\n"
                 "RuntimeError: " + "p" * 444 + {secret!r} + " rest\\n")
sys.exit(1)
"""


@pytest.mark.e2e
def test_a_key_inside_a_long_error_line_is_masked_before_the_line_is_cut(hws: Workspace) -> None:
    """The key starts just before the 500th character of the reason: cutting first and masking
    after would leave most of it in the record."""
    crash = hws.root / "crash.py"
    crash.write_text(CRASH_WITH_KEY.format(secret=SECRET))
    hws.prompt("a")
    done = subprocess.run(
        hws.command("--retries", "0", standin=crash),
        env=hws.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert_clean(done)
    [record] = read_jsonl(hws.results)
    assert record["status"] == "failed" and "RuntimeError: ppp" in (record["error"] or ""), record["error"]
    for text in (hws.results.read_text(), (hws.output / "summary.json").read_text(), done.stdout, done.stderr):
        for i in range(len(SECRET) - 11):
            assert SECRET[i : i + 12] not in text, SECRET[i : i + 12]


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_escape_sequences_in_a_records_error_never_reach_the_report(hws: Workspace, fmt: str) -> None:
    hws.prompt("a")
    assert run(hws).returncode == 0
    [good] = read_jsonl(hws.results)
    error = "boom \x1b[2J\x1b[H\x1b]0;pwned\x07 \x9b31m done"
    with open(hws.results, "a") as f:
        f.write(json.dumps({**good, "status": "failed", "error": error}) + "\n")
    done = run(hws, "--report", "--output-dir", str(hws.output), "--format", fmt)
    assert_clean(done)
    assert done.returncode == 1, done.stderr
    assert "boom" in done.stdout
    for char in ("\x1b", "\x07", "\x9b"):
        assert char not in done.stdout, repr(done.stdout)
