"""Records and the files they live in, in process (real files, no processes): a record's one schema
(AttemptRecord.from_json: types, older and newer fields), strict JSON (no NaN or Infinity), the
results file (torn lines, appends that share an fsync, a failed fsync), the bad lines it names, the
files an attempt writes (secrets redacted, the V1 CLI's conversation folder read back), and the
records of an output folder that was moved or copied."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import record

import run_batch as rb

# --- the files an attempt writes: secrets redacted ------------------------------------------------


def test_redact_file_masks_a_secret_across_chunk_borders(tmp_path: Path) -> None:
    path = tmp_path / "log"
    secret = "sk-SECRET-0123456789"
    path.write_bytes(b"a" * 1000 + secret.encode() + b"b" * 1000 + secret.encode())
    assert rb.redact_file(path, (secret,), chunk=1010)
    data = path.read_bytes()
    assert secret.encode() not in data and data.count(b"****") == 2 and len(data) == 2000 + 8
    assert not rb.redact_file(path, (secret,))


# --- the results file -----------------------------------------------------------------------------


def test_torn_last_line_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"run_batch": "0.5.0", "task_name": "a", "status": "success"}\n{"task_name": "b", "sta')
    records, warnings = rb.read_records(path)
    assert [r.task_name for r in records] == ["a"] and len(warnings) == 1 and "line 2" in warnings[0]


def test_appending_after_a_torn_line_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"run_batch": "0.5.0", "task_name": "a", "status": "success"}\n{"task_name": "b", "sta')
    results = rb.ResultsFile(path)
    results.append(rb.AttemptRecord.from_json({"run_batch": "0.5.0", "task_name": "c", "status": "failed"}))
    results.release()
    records, warnings = rb.read_records(path)
    assert [r.task_name for r in records] == ["a", "c"] and len(warnings) == 1
    assert path.read_text().startswith(
        '{"run_batch": "0.5.0", "task_name": "a", "status": "success"}\n{"task_name": "b", "sta\n'
    )


class SlowDisk:
    """os.fsync, slowed to 20 ms (a busy disk), recording the file's size at each call and able
    to fail once (EIO, as a dying disk or a full NFS share answers)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.real = os.fsync
        self.sizes: list[int] = []
        self.fail_at = fail_at
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        with self.lock:
            self.sizes.append(os.fstat(fd).st_size)
            call = len(self.sizes)
        time.sleep(0.02)
        if call == self.fail_at:
            raise OSError(errno.EIO, "Input/output error")
        self.real(fd)


def append_from_threads(results: rb.ResultsFile, names: list[str]) -> dict[str, BaseException | int]:
    """Each name's record appended by a thread of its own, all at once; per name, the file's
    durable size when its append returned (the largest size an fsync had seen), or its error."""
    outcome: dict[str, BaseException | int] = {}
    start = threading.Barrier(len(names))

    def one(name: str) -> None:
        start.wait()
        try:
            results.append(rb.AttemptRecord.from_json({"run_batch": "0.5.0", "task_name": name, "status": "success"}))
            outcome[name] = results.path.stat().st_size
        except OSError as exc:
            outcome[name] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome


def test_records_that_end_together_share_an_fsync_and_each_returns_once_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = SlowDisk()
    monkeypatch.setattr(rb.os, "fsync", disk)
    results = rb.ResultsFile(tmp_path / "r.jsonl")
    names = [f"t{i:02d}" for i in range(16)]
    outcome = append_from_threads(results, names)
    results.release()
    records, warnings = rb.read_records(tmp_path / "r.jsonl")
    assert sorted(r.task_name for r in records) == names and warnings == []
    assert 1 <= len(disk.sizes) < len(names)  # group commit: 16 records, fewer fsyncs
    # every line is whole, and each append returned only after an fsync that covered its line
    lines = (tmp_path / "r.jsonl").read_bytes().splitlines(keepends=True)
    ends = {json.loads(line)["task_name"]: sum(map(len, lines[: i + 1])) for i, line in enumerate(lines)}
    for name in names:
        assert not isinstance(outcome[name], BaseException), outcome[name]
        assert any(size >= ends[name] for size in disk.sizes), (name, ends[name], disk.sizes)


def test_a_failed_fsync_cuts_back_every_line_it_covered_and_their_appends_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.jsonl"
    results = rb.ResultsFile(path)
    results.append(rb.AttemptRecord.from_json({"run_batch": "0.5.0", "task_name": "before", "status": "success"}))
    monkeypatch.setattr(rb.os, "fsync", SlowDisk(fail_at=1))
    outcome = append_from_threads(results, [f"t{i}" for i in range(8)])
    failed = sorted(n for n, o in outcome.items() if isinstance(o, OSError))
    assert failed  # the first fsync failed: its lines, at least, are refused
    for name in failed:
        assert isinstance(outcome[name], OSError) and outcome[name].errno == errno.EIO
    records, warnings = rb.read_records(path)
    # the file holds exactly the lines whose appends returned, each whole: none of a raised one
    assert sorted(r.task_name for r in records) == sorted({"before", *outcome} - set(failed))
    assert warnings == [] and path.read_bytes().endswith(b"\n")
    results.append(rb.AttemptRecord.from_json({"run_batch": "0.5.0", "task_name": "after", "status": "success"}))
    results.release()
    assert [r.task_name for r in rb.read_records(path)[0]][-1] == "after"


# --- the V1 CLI's conversation folder, read back --------------------------------------------------


def cli_conversation(root: Path, status: str, cost: float, error: dict[str, str] | None = None) -> Path:
    conversation = root / "0123456789abcdef0123456789abcdef"
    (conversation / "events").mkdir(parents=True)
    (conversation / "base_state.json").write_text(
        json.dumps(
            {
                "execution_status": status,
                "stats": {
                    "usage_to_metrics": {
                        "agent": {
                            "accumulated_cost": cost,
                            "accumulated_token_usage": {
                                "prompt_tokens": 1000 if cost else 0,
                                "completion_tokens": 50 if cost else 0,
                            },
                        }
                    }
                },
            }
        )
    )
    events = [{"kind": "SystemPromptEvent"}, {"kind": "MessageEvent"}]
    if error:
        events.append({"kind": "ConversationErrorEvent", **error})
    for i, event in enumerate(events):
        (conversation / "events" / f"event-{i:05d}-x.json").write_text(json.dumps(event))
    return conversation


def attempt_files(tmp_path: Path) -> rb.AttemptFiles:
    files = rb.AttemptFiles(tmp_path / "t.json", tmp_path / "t.stdout.log", tmp_path / "t.stderr.log")
    for path in (files.trajectory, files.stdout_log, files.stderr_log):
        path.write_text("")
    return files


def test_cli_outcome_from_base_state_and_events(tmp_path: Path) -> None:
    files = attempt_files(tmp_path)
    cli_conversation(tmp_path / "conv", "error", 0.003, {"code": "LLMServiceUnavailableError", "detail": "down"})
    outcome = rb.read_cli_outcome(files, tmp_path / "conv")
    assert outcome.agent_state == "ERROR" and outcome.session_id == "0123456789abcdef0123456789abcdef"
    assert outcome.facts.reason == "LLMServiceUnavailableError: down"
    assert outcome.metrics.total_cost == 0.003 and outcome.metrics.source == "state"
    assert [e["kind"] for e in json.loads(files.trajectory.read_text())] == [
        "SystemPromptEvent",
        "MessageEvent",
        "ConversationErrorEvent",
    ]


def test_cli_state_saved_before_its_calls_were_counted_is_unknown_not_zero(tmp_path: Path) -> None:
    files = attempt_files(tmp_path)
    cli_conversation(tmp_path / "conv", "running", 0.0)  # what a SIGTERM leaves
    outcome = rb.read_cli_outcome(files, tmp_path / "conv")
    assert outcome.agent_state == "RUNNING" and not outcome.metrics.known


def test_cli_without_a_conversation_is_an_error_in_its_own_words(tmp_path: Path) -> None:
    files = attempt_files(tmp_path)
    files.stdout_log.write_text(
        "Headless mode requires existing settings. Run openhands first.\nConversation ID: abc\n"
    )
    (tmp_path / "conv").mkdir()
    outcome = rb.read_cli_outcome(files, tmp_path / "conv")
    assert outcome.problem is not None and "requires existing settings" in outcome.problem
    launch = rb.Launch(0, False, False, "s", "f", 1.0)
    assert rb.classify(launch, outcome.agent_state, outcome.problem) == "error"


# --- AttemptRecord.from_json: the one schema of a record ------------------------------------------


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


# --- loads_json: strict JSON ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", '{"a": NaN}', "[1, Infinity]", b'{"x": -Infinity}'])
def test_loads_json_rejects_nan_and_infinity(text: str | bytes) -> None:
    with pytest.raises(ValueError, match="not a JSON number"):
        rb.loads_json(text)


def test_loads_json_reads_ordinary_json() -> None:
    assert rb.loads_json('{"a": [1, 2.5, null, true, "x"]}') == {"a": [1, 2.5, None, True, "x"]}
    assert rb.loads_json(b'"\\u00e9"') == "é"
    with pytest.raises(ValueError):
        rb.loads_json("{'a': 1}")


# --- line_ranges: the bad lines of a results file, named ------------------------------------------


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


# --- relocated: a moved or copied output folder ---------------------------------------------------


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
