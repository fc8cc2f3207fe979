"""--evaluate, --evaluate-only, --fail-on-evaluation, --workspace-per-task and --workspace-template.
Most tests run end to end (marked e2e): the runner as a process against the OpenHands stand-in,
with a grader script of the test's own (tests write it into the temporary folder) as the
evaluator. The evaluator's words and placeholders, its verdict from an exit code and a last line,
and which attempts --evaluate-only grades are also checked in process (no mark, nothing started)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import ENV_SECRET, SECRET, Workspace, alive, gradings, processes_with, read_jsonl, record

import run_batch as rb

# The grader: `grader.py MODE ARGS...`. It writes what it was given to $GRADER_SPY/<pid>.json, then
#   pass / fail / exit3 / crash   exit 0 / exit 1 / exit 3 / SIGKILL itself (noise lines first,
#                                 the last line a JSON verdict: score 1 or 0.25, details {"args"})
#   by-task TASK ...              the mode is the task name's first word (before `-`)
#   hang                          starts `sleep 300` in a session of its own, then sleeps
#   background                    starts `sleep 300` in a session of its own, then exits 0
#   secret                        prints the config's key and the environment's token, and puts
#                                 them in its JSON details
#   file WORKSPACE NAME CONTENT   passed when WORKSPACE/NAME holds CONTENT (one line)
GRADER = r"""
import json, os, signal, subprocess, sys, time
from pathlib import Path

mode, args = sys.argv[1], sys.argv[2:]
spy = Path(os.environ["GRADER_SPY"])
seen = {"mode": mode, "args": args, "cwd": os.getcwd(), "pid": os.getpid(),
        "marker": {k: v for k, v in os.environ.items() if k.startswith("RUN_BATCH")}}
(spy / f"{os.getpid()}.json").write_text(json.dumps(seen))
if mode == "by-task":
    mode = args[0].split("-")[0]
print("grading", json.dumps(args), flush=True)
print("some noise: {not json", flush=True)
if mode == "pass":
    print(json.dumps({"score": 1, "details": {"args": args}}))
    sys.exit(0)
if mode == "fail":
    print(json.dumps({"score": 0.25, "details": {"args": args, "why": "wrong answer"}}))
    sys.exit(1)
if mode == "exit3":
    print(json.dumps({"score": 0, "details": {"why": "grader broke"}}))
    sys.exit(3)
if mode == "crash":
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
if mode in ("hang", "background"):
    child = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (spy / f"{os.getpid()}.child").write_text(str(child.pid))
    if mode == "hang":
        time.sleep(300)
    sys.exit(0)
if mode == "secret":
    print("config key", SECRET_VALUE, "environment token", os.environ.get("GITHUB_TOKEN"))
    print(json.dumps({"score": 1, "details": {"key": SECRET_VALUE, "token": os.environ.get("GITHUB_TOKEN")}}))
    sys.exit(0)
if mode == "file":
    workspace, name, content = args
    path = Path(workspace) / name
    text = path.read_text() if path.is_file() else None
    print(json.dumps({"score": 1 if text == content + "\n" else 0, "details": {"found": text}}))
    sys.exit(0 if text == content + "\n" else 1)
sys.exit(99)
""".replace("SECRET_VALUE", repr(SECRET))


def grader(ws: Workspace) -> Path:
    """Install the grader script and its spy folder in the test's workspace; returns the script."""
    script = ws.root / "grader.py"
    if not script.exists():
        script.write_text(GRADER)
        (ws.root / "spy").mkdir()
        ws.env["GRADER_SPY"] = str(ws.root / "spy")
    return script


def evaluate(ws: Workspace, args: str) -> str:
    """An --evaluate value: this Python, the grader, then args (placeholders and all)."""
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(grader(ws)))} {args}"


def latest(ws: Workspace) -> dict[str, dict[str, Any]]:
    return {r["task_name"]: r for r in read_jsonl(ws.results)}


def report_json(ws: Workspace) -> dict[str, Any]:
    done = ws.run("--report", "--format", "json")
    return json.loads(done.stdout)


# --- verdicts -------------------------------------------------------------------------------------


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


@pytest.mark.e2e
def test_verdict_comes_from_the_exit_code_and_score_and_details_from_the_last_line(ws: Workspace) -> None:
    for name in ("pass-one", "fail-one", "exit3-one", "crash-one"):
        ws.prompt(name)
    done = ws.run("--evaluate", evaluate(ws, "by-task {task}"))
    assert done.returncode == 0, done.stderr  # every agent succeeded; verdicts alone do not fail the run
    records = latest(ws)
    assert {n: r["status"] for n, r in records.items()} == dict.fromkeys(records, "success")
    ev = {n: r["evaluation"] for n, r in records.items()}
    assert (ev["pass-one"]["verdict"], ev["pass-one"]["exit_code"], ev["pass-one"]["reason"]) == ("passed", 0, None)
    assert ev["pass-one"]["score"] == 1 and ev["pass-one"]["details"] == {"args": ["pass-one"]}
    assert (ev["fail-one"]["verdict"], ev["fail-one"]["exit_code"]) == ("failed", 1)
    assert ev["fail-one"]["score"] == 0.25 and ev["fail-one"]["details"]["why"] == "wrong answer"
    assert (ev["exit3-one"]["verdict"], ev["exit3-one"]["exit_code"]) == ("error", 3)
    assert ev["exit3-one"]["reason"] == "the evaluator ended with exit code 3"
    assert ev["crash-one"]["verdict"] == "error" and ev["crash-one"]["exit_code"] == -9
    assert "killed by signal 9" in ev["crash-one"]["reason"]
    for name, r in records.items():
        log = Path(r["evaluation"]["log"])
        assert log == ws.output / "logs" / f"{name}.eval.log"
        assert f'grading ["{name}"]' in log.read_text()
        assert r["evaluate_command"] == evaluate(ws, "by-task {task}")
    assert len(gradings(ws)) == 4  # once per attempt


@pytest.mark.e2e
def test_an_evaluator_that_is_not_there_is_a_usage_error_before_anything_runs(ws: Workspace) -> None:
    ws.prompt("one")
    for grader in (f"{ws.root / 'no-such-grader'} {{task}}", "no-such-grader-on-path {task}"):
        done = ws.run("--evaluate", grader)
        assert done.returncode == 2 and "no-such-grader" in done.stderr and "Traceback" not in done.stderr
        assert done.stderr.count("\n") == 1 and ws.launches() == [] and not ws.output.exists()


@pytest.mark.e2e
def test_an_evaluator_that_cannot_start_at_grading_is_an_error_verdict(ws: Workspace) -> None:
    ws.prompt("one")
    # Named by a placeholder, it is known only once the attempt has a workspace: checked then.
    done = ws.run("--workspace-per-task", "--evaluate", "{workspace}/no-such-grader {task}")
    assert done.returncode == 0, done.stderr
    [record] = read_jsonl(ws.results)
    assert record["status"] == "success"
    ev = record["evaluation"]
    assert ev["verdict"] == "error" and ev["exit_code"] is None
    assert ev["reason"].startswith("could not start the evaluator") and "no-such-grader" in ev["reason"]
    assert "Evaluation: 0 passed of 1 evaluated" in done.stdout


@pytest.mark.e2e
def test_a_hanging_evaluator_is_stopped_at_its_timeout_with_everything_it_started(ws: Workspace) -> None:
    ws.prompt("one")
    t0 = time.monotonic()
    done = ws.run("--evaluate", evaluate(ws, "hang {task}"), "--evaluate-timeout", "2")
    took = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    [record] = read_jsonl(ws.results)
    ev = record["evaluation"]
    assert ev["verdict"] == "error" and ev["reason"] == "timed out after 2s" and ev["exit_code"] is None
    assert 2 <= ev["elapsed_seconds"] < 10 and took < 30
    [seen] = gradings(ws)
    child = int((ws.root / "spy" / f"{seen['pid']}.child").read_text())
    assert seen["marker"]["RUN_BATCH_RUN_ID"] == record["run_id"]
    assert not alive(seen["pid"]) and not alive(child)
    assert processes_with(f"RUN_BATCH_RUN_ID={record['run_id']}") == []


@pytest.mark.e2e
def test_what_an_evaluator_leaves_running_is_killed(ws: Workspace) -> None:
    ws.prompt("one")
    done = ws.run("--evaluate", evaluate(ws, "background {task}"))
    assert done.returncode == 0, done.stderr
    [record] = read_jsonl(ws.results)
    assert record["evaluation"]["verdict"] == "passed"
    [seen] = gradings(ws)
    assert not alive(int((ws.root / "spy" / f"{seen['pid']}.child").read_text()))
    assert processes_with(f"RUN_BATCH_RUN_ID={record['run_id']}") == []


# --- placeholders ---------------------------------------------------------------------------------


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


ODD_NAMES = ("with space", "quo'te\"d", "ünï€ode 名前", "-leading-dash", "{status}", "semi;colon $HOME")


@pytest.mark.e2e
def test_each_placeholder_arrives_as_one_argv_word_exactly(ws: Workspace) -> None:
    for name in ODD_NAMES:
        ws.prompt(name)
    ws.prompt("agent-fails", "STANDIN: stuck\n")
    done = ws.run(
        "--workspace-per-task",
        "--max-workers",
        "3",
        "--evaluate",
        evaluate(
            ws,
            "pass {task} --name={task} {prompt} {output_dir} {trajectory} {workspace} {status} "
            "'{task} and {status}' literal{{task}}",
        ),
    )
    assert done.returncode == 1, done.stderr  # agent-fails failed
    records = latest(ws)
    assert set(records) == {*ODD_NAMES, "agent-fails"}
    by_task = {g["args"][0]: g["args"] for g in gradings(ws)}
    assert set(by_task) == set(records)
    for name, r in records.items():
        expected = [
            name,
            f"--name={name}",
            str(ws.prompts / f"{name}.md"),
            str(ws.output),
            r["trajectory_path"],
            r["workspace"],
            r["status"],
            f"{name} and {r['status']}",
            "literal{task}",
        ]
        assert by_task[name] == expected, name
        assert r["evaluation"]["verdict"] == "passed"
        assert r["evaluation"]["details"]["args"] == expected
    assert records["agent-fails"]["status"] == "failed"  # a failed agent is graded too, with {status}
    assert by_task["agent-fails"][6] == "failed"


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["grade {tsak}", "grade {task", "grade {0}", "grade {}", "grade {task.upper}"])
def test_a_bad_placeholder_is_a_usage_error_before_anything_runs(ws: Workspace, command: str) -> None:
    ws.prompt("one")
    done = ws.run("--evaluate", command)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("run-batch: error: --evaluate")
    assert ws.launches() == [] and not ws.output.exists()


@pytest.mark.e2e
def test_evaluate_only_and_fail_on_evaluation_need_an_evaluator(ws: Workspace) -> None:
    ws.prompt("one")
    for option in ("--evaluate-only", "--fail-on-evaluation"):
        done = ws.run(option)
        assert done.returncode == 2 and "needs --evaluate" in done.stderr
    assert ws.launches() == []


# --- --evaluate-only ------------------------------------------------------------------------------


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


@pytest.mark.e2e
@pytest.mark.slow
def test_evaluate_only_grades_an_existing_folder_without_running_an_agent_and_resumes(ws: Workspace) -> None:
    ws.prompt("works")
    ws.prompt("agent-fails", "STANDIN: stuck\n")
    ws.prompt("blank", "  \n")
    first = ws.run()
    assert first.returncode == 1
    before = ws.results.read_bytes()
    launched = len(ws.launches())
    verdicts = ws.output / "evaluations.jsonl"

    graded = ws.run("--evaluate-only", "--evaluate", evaluate(ws, "pass {task}"))
    assert graded.returncode == 0, graded.stderr
    assert len(ws.launches()) == launched  # no agent started
    assert ws.results.read_bytes() == before  # records never rewritten
    lines = read_jsonl(verdicts)
    assert sorted(line["task_name"] for line in lines) == ["agent-fails", "works"]  # not the error attempt
    assert {line["evaluation"]["verdict"] for line in lines} == {"passed"}
    assert "Evaluation: 2 passed of 2 evaluated" in graded.stdout

    again = ws.run("--evaluate-only", "--evaluate", evaluate(ws, "pass {task}"))
    assert again.returncode == 0, again.stderr
    assert len(read_jsonl(verdicts)) == 2  # the same command grades nothing
    assert "evaluating 0 attempts" in again.stdout
    assert len(gradings(ws)) == 2

    other = ws.run("--evaluate-only", "--evaluate", evaluate(ws, "fail {task}"))
    assert other.returncode == 0, other.stderr  # without --fail-on-evaluation verdicts do not fail it
    assert len(read_jsonl(verdicts)) == 4
    assert {t["task_name"]: (t["evaluation"] or {}).get("verdict") for t in report_json(ws)["tasks"]} == {
        "works": "failed",
        "agent-fails": "failed",
        "blank": None,
    }

    rerun = ws.run("--evaluate-only", "--rerun", "--evaluate", evaluate(ws, "fail {task}"))
    assert rerun.returncode == 0 and len(read_jsonl(verdicts)) == 6
    back = ws.run("--evaluate-only", "--evaluate", evaluate(ws, "pass {task}"))
    assert back.returncode == 0 and len(read_jsonl(verdicts)) == 8  # another command than the latest one's
    report = report_json(ws)
    assert {t["task_name"]: (t["evaluation"] or {}).get("verdict") for t in report["tasks"]} == {
        "works": "passed",
        "agent-fails": "passed",
        "blank": None,
    }
    assert report["totals"]["evaluation"]["passed"] == 2
    table = ws.run("--report").stdout
    assert "verdict" in table.splitlines()[0]
    assert [line.split()[0:2] for line in table.splitlines()[1:4]] == [
        ["agent-fails", "failed"],
        ["blank", "error"],
        ["works", "success"],
    ]
    assert ws.results.read_bytes() == before and len(ws.launches()) == launched


@pytest.mark.e2e
def test_evaluate_only_with_fail_on_evaluation_exits_1_when_a_verdict_is_not_passed(ws: Workspace) -> None:
    ws.prompt("pass-a")
    ws.prompt("fail-b")
    assert ws.run().returncode == 0
    done = ws.run("--evaluate-only", "--fail-on-evaluation", "--evaluate", evaluate(ws, "by-task {task}"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Evaluation: 1 passed of 2 evaluated" in done.stdout
    only = ws.run(
        "--evaluate-only",
        "--fail-on-evaluation",
        "--tasks",
        "pass-a",
        "--rerun",
        "--evaluate",
        evaluate(ws, "by-task {task}"),
    )
    assert only.returncode == 0, only.stdout + only.stderr


# --- pass rates and the exit status ---------------------------------------------------------------


@pytest.mark.e2e
def test_pass_rate_in_the_summary_summary_json_and_report(ws: Workspace) -> None:
    for name in ("pass-a", "pass-b", "fail-c"):
        ws.prompt(name)
    ws.prompt("blank", "\n")
    done = ws.run("--evaluate", evaluate(ws, "by-task {task}"))
    assert done.returncode == 1  # the blank prompt
    assert "Evaluation: 2 passed of 3 evaluated" in done.stdout
    totals = json.loads((ws.output / "summary.json").read_text())["totals"]
    ev = totals["evaluation"]
    assert (ev["evaluated"], ev["passed"], ev["failed"], ev["error"]) == (3, 2, 1, 0)
    assert ev["pass_rate_evaluated"] == pytest.approx(2 / 3, abs=1e-3)
    assert ev["pass_rate_selected"] == pytest.approx(2 / 4, abs=1e-3)
    assert ev["mean_score"] == pytest.approx((1 + 1 + 0.25) / 3, abs=1e-3)
    report = report_json(ws)
    assert report["totals"]["evaluation"]["passed"] == 2
    assert {t["task_name"]: (t["evaluation"] or {}).get("verdict") for t in report["tasks"]} == {
        "pass-a": "passed",
        "pass-b": "passed",
        "fail-c": "failed",
        "blank": None,
    }
    table = ws.run("--report").stdout.splitlines()
    assert table[0].split()[-2:] == ["verdict", "why"]
    rows = {line.split()[0]: line.split() for line in table[1:5]}
    assert rows["fail-c"][-1] == "failed" and rows["pass-a"][-1] == "passed"
    assert "2/3 evaluated passed" in "\n".join(table)
    same = ws.run("--evaluate-only", "--evaluate", evaluate(ws, "by-task {task}"))  # graded in the run already
    assert same.returncode == 0 and "evaluating 0 attempts" in same.stdout, same.stdout
    assert "Evaluation: 2 passed of 3 evaluated" in same.stdout


@pytest.mark.e2e
def test_fail_on_evaluation_changes_the_exit_status(ws: Workspace) -> None:
    ws.prompt("pass-a")
    ws.prompt("fail-b")
    without = ws.run("--evaluate", evaluate(ws, "by-task {task}"))
    assert without.returncode == 0, without.stderr  # a failed verdict alone: still 0
    assert latest(ws)["fail-b"]["evaluation"]["verdict"] == "failed"
    with_it = ws.run("--evaluate", evaluate(ws, "by-task {task}"), "--fail-on-evaluation", "--rerun")
    assert with_it.returncode == 1, with_it.stderr
    all_pass = ws.run("--evaluate", evaluate(ws, "pass {task}"), "--fail-on-evaluation", "--rerun")
    assert all_pass.returncode == 0, all_pass.stdout + all_pass.stderr


# --- secrets and what is not evaluated ------------------------------------------------------------


@pytest.mark.e2e
def test_a_secret_the_evaluator_prints_is_masked_in_its_log_and_the_record(ws: Workspace) -> None:
    ws.prompt("one")
    done = ws.run("--evaluate", evaluate(ws, "secret {task}"))
    assert done.returncode == 0, done.stderr
    [record] = read_jsonl(ws.results)
    log = ws.output / "logs" / "one.eval.log"
    text = log.read_text()
    assert "config key ****" in text and "environment token ****" in text
    assert SECRET not in text and ENV_SECRET not in text
    assert record["evaluation"]["details"] == {"key": "****", "token": "****"}
    for path in ws.output.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data and ENV_SECRET.encode() not in data, path


@pytest.mark.e2e
def test_a_secret_in_the_evaluate_command_is_masked_in_the_record(ws: Workspace) -> None:
    """The record's `command` is masked; the --evaluate command it keeps must be too."""
    ws.prompt("one")
    done = ws.run("--evaluate", evaluate(ws, f"pass {{task}} --token {ENV_SECRET}"))
    assert done.returncode == 0, done.stderr
    assert gradings(ws)[0]["args"] == ["one", "--token", ENV_SECRET]  # the evaluator gets it
    again = ws.run("--evaluate-only", "--rerun", "--evaluate", evaluate(ws, f"pass {{task}} --token {ENV_SECRET}"))
    assert again.returncode == 0, again.stderr
    assert ENV_SECRET not in again.stdout + again.stderr
    leaks = sorted(
        str(p.relative_to(ws.output))
        for p in ws.output.rglob("*")
        if p.is_file() and ENV_SECRET.encode() in p.read_bytes()
    )
    assert leaks == []


@pytest.mark.e2e
def test_an_error_attempt_is_not_evaluated(ws: Workspace) -> None:
    ws.prompt("blank", "   \n")
    ws.prompt("fine")
    done = ws.run("--evaluate", evaluate(ws, "pass {task}"))
    assert done.returncode == 1
    records = latest(ws)
    assert records["blank"]["status"] == "error" and records["blank"]["evaluation"] is None
    assert records["fine"]["evaluation"]["verdict"] == "passed"
    assert [g["args"] for g in gradings(ws)] == [["fine"]]
    assert not (ws.output / "logs" / "blank.eval.log").exists()


# --- workspaces -----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_parallel_tasks_each_write_in_their_own_workspace(ws: Workspace) -> None:
    for name in ("alpha", "beta"):  # both write same.txt, wait, then read it back
        ws.prompt(name, f"RUN: echo {name} > same.txt; sleep 1.5; cat same.txt > seen.txt\n")
    done = ws.run(
        "--workspace-per-task", "--max-workers", "2", "--evaluate", evaluate(ws, "file {workspace} same.txt {task}")
    )
    assert done.returncode == 0, done.stderr
    records = latest(ws)
    spans = sorted(
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in records.values()
    )
    assert spans[1][0] < spans[0][1]  # they ran at the same time
    launches = {Path(launch["argv"][launch["argv"].index("-f") + 1]).stem: launch for launch in ws.launches()}
    for name, r in records.items():
        workspace = Path(r["workspace"])
        assert workspace == ws.output / "workspaces" / name
        assert sorted(p.name for p in workspace.iterdir()) == ["same.txt", "seen.txt"]
        assert (workspace / "same.txt").read_text() == f"{name}\n"
        assert (workspace / "seen.txt").read_text() == f"{name}\n"
        assert launches[name]["workspace"] == str(workspace)  # what OpenHands was told
        assert launches[name]["env"]["WORKSPACE_BASE"] == str(workspace)
        assert launches[name]["config"]["core"]["workspace_base"] == str(workspace)
        assert r["evaluation"]["verdict"] == "passed"  # {workspace} reached the evaluator
    assert not (ws.root / "workspace" / "same.txt").exists()  # the config's shared workspace stays unused


LOOK_AND_LEAVE = "ls -A | grep -vx seen.txt > seen.txt; echo left > left.txt"


@pytest.mark.e2e
@pytest.mark.slow
def test_a_retry_gets_a_fresh_workspace(ws: Workspace) -> None:
    flag = ws.root / "stalled-once"
    ws.prompt("flaky", f"RUN: {LOOK_AND_LEAVE}; test -e {flag} || {{ touch {flag}; sleep 300; }}\n")
    done = ws.run(
        "--workspace-per-task",
        "--stall-timeout",
        "2",
        "--retries",
        "1",
        "--retry-backoff",
        "0.05",
        "--grace-period",
        "10",
        "--evaluate",
        evaluate(ws, "file {workspace} left.txt left"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    first, second = ws.records_of("flaky")
    assert (first["status"], second["status"]) == ("stalled", "success")
    assert first["workspace"] != second["workspace"]
    assert (Path(first["workspace"]) / "left.txt").read_text() == "left\n"  # the failed attempt's, kept
    assert (Path(second["workspace"]) / "seen.txt").read_text() == ""  # nothing of it in the retry's
    assert second["evaluation"]["verdict"] == "passed"


@pytest.mark.e2e
def test_a_rerun_gets_a_fresh_workspace(ws: Workspace) -> None:
    ws.prompt("again", f"RUN: {LOOK_AND_LEAVE}\n")
    assert ws.run("--workspace-per-task").returncode == 0
    assert ws.run("--workspace-per-task", "--rerun").returncode == 0
    first, second = ws.records_of("again")
    assert Path(second["workspace"]) == ws.output / "workspaces" / "again.attempt-2"
    assert (Path(first["workspace"]) / "left.txt").exists()
    assert (Path(second["workspace"]) / "seen.txt").read_text() == ""


@pytest.mark.e2e
def test_workspace_template_folder_is_copied_and_the_copy_is_independent(ws: Workspace) -> None:
    template = ws.root / "template"
    (template / "sub").mkdir(parents=True)
    (template / "a.txt").write_text("original\n")
    (template / "sub" / "b.txt").write_text("nested\n")
    (template / ".hidden").write_text("hidden\n")
    ws.prompt("edits", "RUN: cat a.txt > before.txt; echo changed >> a.txt; rm sub/b.txt\n")
    done = ws.run(
        "--workspace-template", str(template), "--evaluate", evaluate(ws, "file {workspace} before.txt original")
    )
    assert done.returncode == 0, done.stderr
    [record] = read_jsonl(ws.results)
    workspace = Path(record["workspace"])
    assert workspace.parent == ws.output / "workspaces"
    assert (workspace / "a.txt").read_text() == "original\nchanged\n"
    assert (workspace / ".hidden").read_text() == "hidden\n"
    assert not (workspace / "sub" / "b.txt").exists()
    assert (template / "a.txt").read_text() == "original\n"  # the template is untouched
    assert (template / "sub" / "b.txt").read_text() == "nested\n"
    assert sorted(p.name for p in template.iterdir()) == [".hidden", "a.txt", "sub"]
    assert os.stat(workspace / ".hidden").st_ino != os.stat(template / ".hidden").st_ino  # no hard links
    assert record["evaluation"]["verdict"] == "passed"


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.e2e
def test_workspace_template_git_repository_is_cloned(ws: Workspace) -> None:
    template = ws.root / "repo"
    template.mkdir()
    git("init", "-q", cwd=template)
    (template / "f.txt").write_text("committed\n")
    git("add", "f.txt", cwd=template)
    git("commit", "-qm", "first", cwd=template)
    head = git("rev-parse", "HEAD", cwd=template)
    ws.prompt(
        "edits",
        "RUN: cat f.txt > before.txt; echo agent >> f.txt; git add -A; "
        "git -c user.name=a -c user.email=a@example.com commit -qm agent\n",
    )
    done = ws.run(
        "--workspace-template",
        str(template),
        "--max-workers",
        "2",
        "--evaluate",
        evaluate(ws, "file {workspace} before.txt committed"),
    )
    assert done.returncode == 0, done.stderr
    [record] = read_jsonl(ws.results)
    workspace = Path(record["workspace"])
    assert (workspace / ".git").is_dir()
    assert git("rev-parse", "HEAD~1", cwd=workspace) == head  # a clone at the template's HEAD, one commit on
    assert (workspace / "f.txt").read_text() == "committed\nagent\n"
    assert (template / "f.txt").read_text() == "committed\n"  # the template's work tree untouched
    assert git("status", "--porcelain", cwd=template) == ""
    assert git("rev-parse", "HEAD", cwd=template) == head
    assert record["evaluation"]["verdict"] == "passed"


@pytest.mark.e2e
@pytest.mark.slow
def test_ctrl_c_while_the_evaluator_runs_stops_it_and_the_runner_promptly(ws: Workspace) -> None:
    """A Ctrl-C means `stop`: the runner must not sit out a grader's --evaluate-timeout (120 s here),
    and a second Ctrl-C (`kill at once`) certainly not."""
    import signal

    ws.prompt("one")
    runner = ws.start("--evaluate", evaluate(ws, "hang {task}"), "--evaluate-timeout", "120", "--grace-period", "5")
    spy = ws.root / "spy"
    deadline = time.monotonic() + 30
    while not list(spy.glob("*.child")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(spy.glob("*.child")), "the evaluator never started"
    [seen] = gradings(ws)
    child = int((spy / f"{seen['pid']}.child").read_text())
    t0 = time.monotonic()
    stopped_after: list[str] = []
    try:
        runner.send_signal(signal.SIGINT)
        try:
            runner.communicate(timeout=20)
            stopped_after.append(f"first Ctrl-C, {time.monotonic() - t0:.0f}s")
        except subprocess.TimeoutExpired:
            runner.send_signal(signal.SIGINT)  # the second Ctrl-C: "killing every running task"
            try:
                runner.communicate(timeout=15)
                stopped_after.append(f"second Ctrl-C, {time.monotonic() - t0:.0f}s")
            except subprocess.TimeoutExpired:
                stopped_after.append("never: still waiting 35 s after two Ctrl-C")
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
        for pid in (seen["pid"], child):
            if alive(pid):
                os.kill(pid, 9)
    assert stopped_after[0].startswith("first Ctrl-C"), stopped_after[0]
    assert runner.returncode == 130
    assert not alive(child)


@pytest.mark.e2e
def test_workspace_template_holding_the_output_folder(ws: Workspace) -> None:
    """The project folder as the template (its output folder inside): each workspace must not be
    a copy of the output folder, workspaces and all (cp into itself)."""
    (ws.project / "code.py").write_text("print('hi')\n")
    ws.prompt("one", "RUN: cat code.py\n")
    done = ws.run("--workspace-template", str(ws.project))
    [record] = read_jsonl(ws.results)
    assert (record["status"], done.returncode) == ("success", 0), (record["error"], done.stderr)
    workspace = Path(record["workspace"])
    assert (workspace / "code.py").read_text() == "print('hi')\n"
    assert not (workspace / "batch_output" / "workspaces").exists()


# --- examples/evaluate.py, the example prompts' evaluator ----------------------------------------

EXAMPLE_EVALUATOR = Path(__file__).resolve().parent.parent / "examples" / "evaluate.py"


def run_example_evaluator(*args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([sys.executable, str(EXAMPLE_EVALUATOR), *args], capture_output=True, text=True, timeout=60)
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def trajectory_with(path: Path, *outputs: str, start: str = "2030-01-01T10:00:00+00:00") -> str:
    events = [{"id": 0, "timestamp": start, "source": "user", "action": "message", "message": "task", "args": {}}]
    events += [
        {"id": n, "timestamp": start, "source": "agent", "observation": "run", "content": out, "extras": {}}
        for n, out in enumerate(outputs, 1)
    ]
    path.write_text(json.dumps(events))
    return str(path)


@pytest.mark.e2e
@pytest.mark.slow
def test_example_evaluator_checks_what_each_example_prompt_asks_for(tmp_path: Path) -> None:
    prompts = {p.stem for p in (EXAMPLE_EVALUATOR.parent / "prompts").glob("*.md")}
    workspace = tmp_path / "ws"
    workspace.mkdir()
    assert run_example_evaluator("hello-file", str(workspace))[0] == 1
    (workspace / "hello.txt").write_text("hello, world\n")
    code, verdict = run_example_evaluator("hello-file", str(workspace))
    assert (code, verdict["score"]) == (0, 1.0)
    (workspace / "hello.txt").write_text("goodbye\n")
    code, verdict = run_example_evaluator("hello-file", str(workspace))
    assert (code, verdict["score"], verdict["details"]["content"]) == (1, 0.5, "goodbye\n")
    assert run_example_evaluator("count-files", str(workspace), trajectory_with(tmp_path / "t1", "1\n"))[0] == 0
    assert run_example_evaluator("count-files", str(workspace), trajectory_with(tmp_path / "t2", "7\n"))[0] == 1
    assert run_example_evaluator("count-files", str(workspace), "")[0] == 1  # no trajectory: nothing reported
    assert (
        run_example_evaluator("slow-task", str(workspace), trajectory_with(tmp_path / "t3", "2030-01-01T10:00:06Z\n"))[
            0
        ]
        == 0
    )
    assert (
        run_example_evaluator("slow-task", str(workspace), trajectory_with(tmp_path / "t4", "2030-01-01T10:00:01Z\n"))[
            0
        ]
        == 1
    )  # did not wait
    assert (
        run_example_evaluator("python-version", str(workspace), trajectory_with(tmp_path / "t5", "Python 0.0.1\n"))[0]
        == 1
    )
    assert run_example_evaluator("no-such-task", str(workspace))[0] == 2
    assert run_example_evaluator("hello-file", "")[0] == 2  # no --workspace-per-task
    assert prompts <= {"hello-file", "count-files", "python-version", "slow-task"}  # a check for every prompt


def v1_trajectory_with(path: Path, *outputs: str, start: str = "2030-01-01T10:00:00") -> str:
    """The shape of a V1 CLI trajectory (its conversation's events, as run_batch writes them)."""
    text = [{"type": "text", "text": "task"}]
    events: list[dict[str, Any]] = [
        {"kind": "MessageEvent", "source": "user", "timestamp": start, "llm_message": {"role": "user", "content": text}}
    ]
    events += [
        {
            "kind": "ObservationEvent",
            "source": "environment",
            "tool_name": "terminal",
            "timestamp": start,
            "observation": {"kind": "TerminalObservation", "content": [{"type": "text", "text": out}]},
        }
        for out in outputs
    ]
    events.append(
        {
            "kind": "ActionEvent",
            "source": "agent",
            "timestamp": start,
            "tool_name": "finish",
            "action": {"kind": "FinishAction", "message": "Done."},
        }
    )
    path.write_text(json.dumps(events))
    return str(path)


@pytest.mark.e2e
@pytest.mark.slow
def test_example_evaluator_reads_a_v1_cli_trajectory(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "a").write_text("")
    assert run_example_evaluator("count-files", str(workspace), v1_trajectory_with(tmp_path / "t1", "1"))[0] == 0
    assert run_example_evaluator("count-files", str(workspace), v1_trajectory_with(tmp_path / "t2", "3"))[0] == 1
    code, verdict = run_example_evaluator(
        "slow-task", str(workspace), v1_trajectory_with(tmp_path / "t3", "2030-01-01T10:00:06")
    )
    assert code == 0, verdict
    assert verdict["details"]["task began"] is not None  # the user's MessageEvent is the start
