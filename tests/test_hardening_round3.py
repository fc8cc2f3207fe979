"""Hardening, third round (issue 21): no paid attempt unrecorded, no secret in a file others can
read, no report that crashes on odd bytes. One test per case of the issue, named after it, each
asserting what the user expects. Real processes and files throughout: the runner against the
OpenHands stand-in, with graders and agent wrappers the tests write into their temporary folder."""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import math
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from conftest import ENV_SECRET, STANDIN, Workspace, gradings, read_jsonl

pytestmark = pytest.mark.e2e  # the runner as a process, against the OpenHands stand-in

# A password with a quote, a backslash, an accent and HTML's special characters: each escaping
# (JSON, TOML, HTML, URL) changes it, so masking only the raw text misses every escaped copy.
PASSWORD = 'Pa"ss\\wörd&<x>-1234'


# --- helpers --------------------------------------------------------------------------------------


def run(
    ws: Workspace, *args: str, timeout: float = 60, standin: Path = STANDIN, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """The runner as a process (ws.run, with another agent command when asked); a hang is a test
    failure, not a stuck test run."""
    try:
        return subprocess.run(
            ws.command(*args, standin=standin),
            env=ws.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            **kw,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"run-batch {' '.join(args)} hung: not finished after {timeout:g}s")


def run_bytes(ws: Workspace, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """The runner with its console kept as bytes: whether it writes valid UTF-8 is the question."""
    try:
        return subprocess.run(
            ws.command(*args), env=ws.env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"run-batch {' '.join(args)} hung: not finished after {timeout:g}s")


def assert_clean(stderr: str | bytes) -> None:
    """No traceback, no exception Python could only report on its way out."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    for word in ("Traceback", "Exception ignored", "internal error"):
        assert word not in text, text[-3000:]


def assert_one_line_naming(done: subprocess.CompletedProcess[str], option: str) -> None:
    """A usage error: exit 2, one line on stderr that names the option, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert_clean(done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert option in lines[0], lines[0]


def strict_json(text: str) -> Any:
    """JSON as every reader takes it: no NaN or Infinity, and no number that overflows to one."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} in JSON")

    def finite(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"{literal} overflows to {value}")
        return value

    return json.loads(text, parse_constant=no_constant, parse_float=finite)


def strict_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a results file: valid UTF-8, each line strict JSON."""
    text = path.read_bytes().decode("utf-8")  # strict: a lone surrogate written raw fails here
    return [strict_json(line) for line in text.splitlines() if line.strip()]


def parsable_records(path: Path) -> list[dict[str, Any]]:
    """The lines of a results file that are JSON records (a foreign or broken line is skipped)."""
    found = []
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("task_name"), str):
            found.append(value)
    return found


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under folder: (mtime, sha256), to tell that nothing was written."""
    if not folder.exists():
        return {}
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(folder))] = (
                path.stat().st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return found


def escaped_forms(secret: str) -> dict[str, str]:
    """The secret and every escaped form it takes in the files and on the console."""
    as_json = json.dumps(secret)[1:-1]
    as_json_utf8 = json.dumps(secret, ensure_ascii=False)[1:-1]
    forms = {
        "raw": secret,
        "JSON": as_json,
        "JSON (UTF-8)": as_json_utf8,
        "TOML basic string": secret.replace("\\", "\\\\").replace('"', '\\"'),
        "HTML": html.escape(secret, quote=True),
        "HTML (no quotes)": html.escape(secret, quote=False),
        "HTML of JSON": html.escape(as_json, quote=True),
        "HTML of JSON (UTF-8)": html.escape(as_json_utf8, quote=True),
        "URL": urllib.parse.quote(secret),
        "URL (nothing safe)": urllib.parse.quote(secret, safe=""),
        "URL (form)": urllib.parse.quote_plus(secret),
    }
    return {k: v for k, v in forms.items() if v}


def leaks(text: str, secret: str) -> list[str]:
    return [name for name, form in escaped_forms(secret).items() if form in text]


def stamp(when: dt.datetime) -> str:
    """A time as the runner writes it (utc_now)."""
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_script(ws: Workspace, name: str, text: str) -> Path:
    path = ws.root / name
    path.write_text(text)
    return path


# The grader: `grader.py MODE ARGS...`; it writes its argv to $GRADER_SPY/<pid>.json, then
#   surrogate          its JSON details hold a file name that is not UTF-8 (a lone surrogate)
#   overflow           its JSON details hold 1e999 (a float overflow: Infinity to Python)
#   half-line FILE     appends half a line, no newline, to FILE (the results file), then passes
#   pass               passes
GRADER = r"""
import json, os, sys
from pathlib import Path

mode, args = sys.argv[1], sys.argv[2:]
Path(os.environ["GRADER_SPY"], f"{os.getpid()}.json").write_text(json.dumps({"mode": mode, "args": args}))
if mode == "surrogate":
    print(json.dumps({"details": {"file": os.fsdecode(b"r\xe9sum")}}))
elif mode == "overflow":
    print('{"details": {"r": 1e999}}')
elif mode == "half-line":
    with open(args[0], "a") as f:
        f.write('{"note": 1')
    print(json.dumps({"details": {"graded": True}}))
sys.exit(0)
"""


def grader(ws: Workspace, args: str) -> str:
    """An --evaluate value: this Python, the grader, then args (placeholders and all)."""
    script = ws.root / "grader.py"
    if not script.exists():
        script.write_text(GRADER)
        (ws.root / "spy").mkdir()
        ws.env["GRADER_SPY"] = str(ws.root / "spy")
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {args}"


# === A paid attempt is lost or run again ==========================================================


def test_01_evaluator_details_with_a_non_utf8_file_name_are_recorded_once(ws: Workspace) -> None:
    ws.prompt("t")
    evaluate = ("--evaluate", grader(ws, "surrogate"))
    done = run(ws, *evaluate)
    assert_clean(done.stderr)
    records = [r for r in strict_lines(ws.results) if r.get("task_name") == "t"]
    assert len(records) == 1, records
    [record] = records
    assert record["status"] == "success", record
    assert record["evaluation"]["details"] == {"file": "r\ufffdsum"}, record["evaluation"]
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(ws.launches()) == 1
    again = run(ws, *evaluate)
    assert_clean(again.stderr)
    assert len(ws.launches()) == 1, "the agent was paid for again"
    assert "Nothing to run" in again.stdout, again.stdout


def test_02_evaluator_details_with_an_overflowing_number_stay_strict_json(ws: Workspace) -> None:
    ws.prompt("t")
    evaluate = ("--evaluate", grader(ws, "overflow"))
    done = run(ws, *evaluate)
    assert_clean(done.stderr)
    records = [r for r in strict_lines(ws.results) if r.get("task_name") == "t"]
    assert len(records) == 1, ws.results.read_text()[-3000:]
    assert records[0]["evaluation"]["details"] == {"r": None}, records[0]["evaluation"]
    summary = strict_json((ws.output / "summary.json").read_text())
    assert summary["tasks"][0]["evaluation"]["details"] == {"r": None}
    again = run(ws, *evaluate)
    assert_clean(again.stderr)
    assert len(ws.launches()) == 1, "the agent was paid for again"
    assert "Nothing to run" in again.stdout, again.stdout
    strict_json((ws.output / "summary.json").read_text())


def test_03_half_a_line_appended_by_a_grader_never_swallows_a_record(ws: Workspace) -> None:
    """The grader appends `{"note": 1` (no newline) to the results file each time it grades: the
    runner's next record must still start on a line of its own, whatever is already open."""
    ws.prompt("a")
    ws.prompt("b")
    evaluate = ("--evaluate", grader(ws, "half-line {output_dir}/batch_results.jsonl"), "--max-workers", "1")
    done = run(ws, *evaluate)
    assert_clean(done.stderr)
    assert len(gradings(ws)) == 2
    records = parsable_records(ws.results)
    assert sorted(r["task_name"] for r in records) == ["a", "b"], ws.results.read_text()[-3000:]
    assert all(r["status"] == "success" for r in records), records
    again = run(ws, *evaluate)
    assert_clean(again.stderr)
    assert "Nothing to run" in again.stdout, again.stdout
    assert len(ws.launches()) == 2, "a task was paid for again"


AGENT_WITH_PRICE = r"""
import os, sys
from pathlib import Path

with open(Path(os.environ["PRICE_AGENT_LAUNCHES"]), "a") as f:
    f.write("launched\n")
sys.stderr.write(
    "\x1b[92m12:00:00 - openhands:INFO\x1b[0m: agent_controller.py:679 - [Agent Controller x] "
    "Setting agent(CodeActAgent) state from AgentState.RUNNING to AgentState.FINISHED\n"
)
print("Total Cost: $12.50.")
"""


def test_04_a_price_followed_by_a_full_stop_is_the_attempts_cost(ws: Workspace) -> None:
    agent = write_script(ws, "price_agent.py", AGENT_WITH_PRICE)
    launches = ws.root / "price-launches.txt"
    ws.env["PRICE_AGENT_LAUNCHES"] = str(launches)
    ws.prompt("t")
    done = run(ws, standin=agent)
    assert_clean(done.stderr)
    [record] = read_jsonl(ws.results)
    assert record["status"] == "success", record["error"]
    assert record["total_cost"] == 12.5, record
    assert done.returncode == 0
    again = run(ws, standin=agent)
    assert_clean(again.stderr)
    assert launches.read_text().count("launched") == 1, "the task was paid for again"


def test_05_a_start_delay_too_long_to_wait_is_a_usage_error(ws: Workspace) -> None:
    ws.prompt("t")
    done = run(ws, "--start-delay", "1e10", timeout=15)
    assert_one_line_naming(done, "--start-delay")
    assert not ws.output.exists(), sorted(snapshot(ws.output))
    assert ws.launches() == []


def test_05_a_retry_backoff_too_long_to_wait_is_a_usage_error(ws: Workspace) -> None:
    ws.prompt("t", "STANDIN: crash\n")  # fails to start: retried, after the backoff
    # Accepted, the retry would wait 0.8-1.2 times 1e10 s: a hang, or an OverflowError past the
    # longest wait Python takes (threading.TIMEOUT_MAX, 9.2e9 s); refused, it ends at once.
    done = run(ws, "--retries", "1", "--retry-backoff", "1e10", timeout=15)
    assert_one_line_naming(done, "--retry-backoff")
    assert not ws.output.exists(), sorted(snapshot(ws.output))
    assert ws.launches() == []


@pytest.mark.parametrize("name", ["summary.json", "evaluations.jsonl", "run.json", "report.html", "batch_run.log"])
def test_06_a_results_name_of_another_runner_file_is_refused(ws: Workspace, name: str) -> None:
    ws.prompt("t")
    assert run(ws, "--html").returncode == 0
    before = snapshot(ws.output)
    records = ws.results.read_bytes()
    done = run(ws, "--results-name", name, "--html", timeout=30)
    assert done.returncode == 2, (done.stdout[-2000:], done.stderr[-2000:])
    assert_clean(done.stderr)
    assert "--results-name" in done.stderr, done.stderr
    assert snapshot(ws.output) == before, "a refused run wrote into the output folder"
    assert ws.results.read_bytes() == records
    assert len(ws.launches()) == 1


def test_06_an_html_page_never_replaces_the_records(ws: Workspace) -> None:
    ws.prompt("t")
    assert run(ws).returncode == 0
    before = snapshot(ws.output)
    records = ws.results.read_bytes()
    done = run(ws, "--html", "--output", str(ws.results), timeout=30)
    assert done.returncode == 2, (done.stdout[-2000:], done.stderr[-2000:])
    assert_clean(done.stderr)
    assert ws.results.read_bytes() == records
    assert snapshot(ws.output) == before
    done = run(ws, "--report", "--format", "html", "--output", str(ws.results), timeout=30)
    assert done.returncode == 2, (done.stdout[-2000:], done.stderr[-2000:])
    assert ws.results.read_bytes() == records
    # --output is a page: a name that does not end in .html or .htm is refused, and nothing written
    for args in (("--html",), ("--report", "--format", "html")):
        page = ws.root / "page.txt"
        done = run(ws, *args, "--output", str(page), timeout=30)
        assert done.returncode == 2, (args, done.stdout[-2000:], done.stderr[-2000:])
        assert "--output" in done.stderr, done.stderr
        assert not page.exists()
    assert snapshot(ws.output) == before
    assert len(ws.launches()) == 1
    done = run(ws, "--report", "--format", "html", "--output", str(ws.root / "page.htm"), timeout=30)
    assert done.returncode == 0, done.stderr
    assert (ws.root / "page.htm").is_file()


# === A secret in the open =========================================================================


def use_password_as_api_key(ws: Workspace) -> None:
    config = ws.project / "config.toml"
    lines = config.read_text().splitlines()
    lines = [f"api_key = '{PASSWORD}'" if line.startswith("api_key = ") else line for line in lines]
    config.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_07_dry_run_masks_every_escaped_form_of_a_config_secret(ws: Workspace, fmt: str) -> None:
    use_password_as_api_key(ws)
    ws.prompt("t")
    done = run(ws, "--dry-run", "--format", fmt, timeout=30)
    assert done.returncode == 0, done.stderr
    assert_clean(done.stderr)
    assert "api_key" in done.stdout  # the effective config is shown
    assert leaks(done.stdout + done.stderr, PASSWORD) == [], done.stdout
    assert not ws.output.exists()


def test_08_a_password_the_agent_printed_is_in_no_file(ws: Workspace) -> None:
    ws.env["DB_PASSWORD"] = PASSWORD
    ws.prompt("t", 'RUN: echo "$DB_PASSWORD"\n')
    done = run(ws, "--html")
    assert_clean(done.stderr)
    assert done.returncode == 0, done.stderr
    assert ws.launches()[0]["env"]["DB_PASSWORD"] == PASSWORD  # the agent had it, and printed it
    [record] = read_jsonl(ws.results)
    assert Path(record["trajectory_path"]).is_file() and (ws.output / "report.html").is_file()
    found = {}
    for path in sorted(ws.output.rglob("*")):
        if path.is_file() and (named := leaks(path.read_bytes().decode("utf-8", "replace"), PASSWORD)):
            found[str(path.relative_to(ws.output))] = named
    assert found == {}, found
    assert leaks(done.stdout + done.stderr, PASSWORD) == []


def test_09_the_status_file_never_shows_a_token_the_agent_put_in_a_command(ws: Workspace) -> None:
    """The agent writes the token into its command (as an agent does with `git clone
    https://oauth2:$GITHUB_TOKEN@...` once it has read the variable): the status file, refreshed
    every 2 s while the command runs, must neither show it nor be readable by others."""
    url = f"https://oauth2:{ENV_SECRET}@github.com/x/y"
    ws.prompt("t", f"RUN: echo git clone {url}; sleep 5\n")
    proc = ws.start()
    status = ws.output / "run.json"
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                seen.append((status.read_text(), stat.S_IMODE(status.stat().st_mode)))
            except (OSError, UnicodeDecodeError):
                pass
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert_clean(stderr)
    assert proc.returncode == 0, stderr[-2000:]
    seen.append((status.read_text(), stat.S_IMODE(status.stat().st_mode)))
    running = [
        data
        for data in (json.loads(text) for text, _ in seen)
        if data.get("state") == "running" and [r.get("task") for r in data.get("running") or []] == ["t"]
    ]
    assert running, "run.json never showed the running task"
    assert [text for text, _ in seen if ENV_SECRET in text] == [], "run.json showed the token"
    assert {mode for _, mode in seen if mode & 0o077} == set(), sorted({oct(m) for _, m in seen})


SECRET_HOLDERS = ("summary.json", "run.json", "report.html", "batch_results.jsonl", "batch_run.log")


def test_10_files_that_may_hold_a_secret_are_private_whatever_the_umask(ws: Workspace) -> None:
    ws.prompt("t")
    ws.output.mkdir(mode=0o755)
    ws.output.chmod(0o755)
    done = run(ws, "--html", umask=0o077)
    assert done.returncode == 0, done.stderr
    modes = {
        name: stat.S_IMODE((ws.output / name).stat().st_mode) for name in ("summary.json", "run.json", "report.html")
    }
    assert {n: oct(m) for n, m in modes.items() if m & 0o077} == {}, "umask 077 not honoured"

    out = ws.root / "out-022"
    done = run(ws, "--html", "--output-dir", str(out), umask=0o022)
    assert done.returncode == 0, done.stderr
    files = [out / name for name in SECRET_HOLDERS]
    files += [p for sub in ("logs", "trajectories") for p in (out / sub).iterdir() if p.is_file()]
    assert len(files) >= len(SECRET_HOLDERS) + 3  # a trajectory and two logs at least
    wide = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    wide = {n: m for n, m in wide.items() if int(m, 8) & ~0o600}
    assert wide == {}, "wider than 0600 with umask 022"


# === A report that crashes or misleads ============================================================


def add_non_utf8_file_name(trajectory: Path) -> None:
    """An agent's `ls` of a file whose name is not UTF-8, as Python's json.dumps writes it: "\\udce9"."""
    events = json.loads(trajectory.read_text())
    events.append(
        {
            "id": len(events),
            "source": "agent",
            "observation": "run",
            "content": os.fsdecode(b"r\xe9sum.txt") + "\n",
            "extras": {"command": "ls", "exit_code": 0},
            "message": "",
        }
    )
    trajectory.write_text(json.dumps(events))
    assert "\\udce9" in trajectory.read_text()


def test_11_a_trajectory_with_a_non_utf8_file_name_gives_a_valid_page(ws: Workspace) -> None:
    ws.prompt("t")
    assert run(ws).returncode == 0
    [record] = read_jsonl(ws.results)
    add_non_utf8_file_name(Path(record["trajectory_path"]))
    page = ws.output / "report.html"
    for args in (("--report", "--format", "html"), ("--html",)):
        page.unlink(missing_ok=True)
        done = run(ws, *args, timeout=60)
        assert_clean(done.stderr)
        assert done.returncode in (0, 1), (args, done.stderr[-2000:])
        text = page.read_bytes().decode("utf-8")  # strict
        assert "\ufffd" in text, args
        assert sorted(p.name for p in ws.output.glob(".report-*")) == [], args
    assert len(ws.launches()) == 1


def test_12_a_foreign_results_file_with_lone_surrogates_is_reported_in_valid_utf8(ws: Workspace) -> None:
    ws.prompt("good")
    assert run(ws).returncode == 0
    [good] = read_jsonl(ws.results)
    foreign = [
        {**good, "task_name": "bad\ud800name"},
        {**good, "task_name": "other", "status": "failed", "error": "oops \ud800 here"},
    ]
    (ws.output / "foreign.jsonl").write_text("".join(json.dumps(r) + "\n" for r in foreign))
    assert "\\ud800" in (ws.output / "foreign.jsonl").read_text()

    done = run_bytes(ws, "--report", "--format", "json")
    assert_clean(done.stderr)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = json.loads(done.stdout.decode("utf-8"))  # strict UTF-8
    assert "good" in [t["task_name"] for t in report["tasks"]]

    page = ws.output / "report.html"
    done = run_bytes(ws, "--report", "--format", "html")
    assert_clean(done.stderr)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    page.read_bytes().decode("utf-8")  # strict
    done.stdout.decode("utf-8")


def write_status_file(output: Path, name: str, **fields: Any) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / name).write_text(json.dumps(fields))


@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_13_a_status_file_with_a_text_elapsed_does_not_crash_the_report(ws: Workspace, fmt: str) -> None:
    now = stamp(dt.datetime.now(dt.UTC))
    write_status_file(
        ws.output,
        "run.other.json",
        run_id="r13",
        pid=os.getpid(),  # alive, on this host: a run that is running
        host=socket.gethostname(),
        state="running",
        started_at=now,
        updated_at=now,
        running=[{"task": "t", "session": "s", "started_at": now, "elapsed": "5m", "spend": 0.1, "steps": 3}],
        spend={"this_run": 0.1, "running": 0.1, "folder": 0.1},
    )
    done = run(ws, "--report", "--format", fmt, timeout=30)
    assert_clean(done.stderr)
    assert done.returncode in (0, 1), done.stderr[-2000:]


def test_14_a_status_file_not_refreshed_for_a_month_is_stale_whoever_wrote_it(ws: Workspace) -> None:
    ws.prompt("a")
    ws.prompt("b")
    month_ago = stamp(dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
    write_status_file(
        ws.output,
        "run.batch_results.shard-2-of-2.json",
        run_id="deadbeef",
        pid=4242,
        host="elsewhere",
        shard=[2, 2],
        results_file="batch_results.shard-2-of-2.jsonl",
        state="running",
        started_at=month_ago,
        updated_at=month_ago,
        tasks={"selected": 1, "done": 0, "running": 1},
        running=[{"task": "b", "session": "b-x-1", "started_at": month_ago, "elapsed": 60.0, "spend": 4.5, "steps": 9}],
        spend={"this_run": 4.5, "running": 4.5, "folder": 4.5},
    )
    done = run(ws, "--shard", "1/2", "--max-total-cost", "2")
    assert_clean(done.stderr)
    results = ws.output / "batch_results.shard-1-of-2.jsonl"
    records = read_jsonl(results) if results.exists() else []
    assert [(r["task_name"], r["status"]) for r in records] == [("a", "success")], done.stdout[-2000:]
    summary = json.loads((ws.output / "summary.json").read_text())
    assert summary["totals"]["skipped_for_budget"] == []
    assert done.returncode == 0
    report = run(ws, "--report", timeout=30)
    assert_clean(report.stderr)
    running_now = [line for line in report.stdout.splitlines() if line.startswith("Running now")]
    assert running_now == [], report.stdout  # a note that a stale status was left out is fine


def test_15_the_latest_attempt_is_the_highest_attempt_number_whatever_the_clock(ws: Workspace) -> None:
    ws.prompt("t")
    assert run(ws).returncode == 0
    [real] = read_jsonl(ws.results)
    # Attempt 2's own files, beside attempt 1's.
    second_files = {}
    for key, suffix in (("trajectory_path", ".json"), ("stdout_log", ".stdout.log"), ("stderr_log", ".stderr.log")):
        source = Path(real[key])
        target = source.with_name(f"t.attempt-2{suffix}")
        shutil.copyfile(source, target)
        second_files[key] = str(target)
    tomorrow = stamp(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    first = {**real, "attempt": 1, "status": "failed", "error": "the agent gave up", "agent_state": "ERROR"}
    first.update(started_at=tomorrow, finished_at=tomorrow)  # written before the clock stepped back
    run2 = "0123abcd"  # attempt 2 ran in a later run, after the clock stepped back
    session2 = real["session_name"].removesuffix(f"-{real['run_id']}-1") + f"-{run2}-2"
    second = {**real, **second_files, "attempt": 2, "status": "success", "run_id": run2}
    second.update(
        session_name=session2, session_id=f"{session2[:16]}-{hashlib.sha256(session2.encode()).hexdigest()[:15]}"
    )
    ws.results.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")

    done = run(ws)  # selects t: nothing to do
    assert_clean(done.stderr)
    assert len(ws.launches()) == 1, "the task ran again"
    [summary] = json.loads((ws.output / "summary.json").read_text())["tasks"]
    assert (summary["attempt"], summary["status"]) == (2, "success")

    report = run(ws, "--report", timeout=30)
    assert_clean(report.stderr)
    assert report.returncode == 0, report.stdout
    report = run(ws, "--report", "--format", "json", timeout=30)
    [shown] = json.loads(report.stdout)["tasks"]
    assert (shown["attempt"], shown["status"]) == (2, "success")

    done = run(ws, "--evaluate-only", "--evaluate", grader(ws, "pass {trajectory}"), timeout=60)
    assert_clean(done.stderr)
    assert done.returncode == 0, done.stderr
    assert [g["args"] for g in gradings(ws)] == [[second_files["trajectory_path"]]]
    [verdict] = read_jsonl(ws.output / "evaluations.jsonl")
    assert (verdict["attempt"], verdict["session_name"]) == (2, session2)


# === Files and options ============================================================================


def test_16_a_template_named_through_a_link_never_copies_the_output_folder(ws: Workspace) -> None:
    (ws.project / "README.txt").write_text("the checkout\n")
    link = ws.root / "checkout-link"
    link.symlink_to(ws.project, target_is_directory=True)
    ws.prompt("a")
    ws.prompt("b")
    done = run(ws, "--workspace-template", str(link), "--max-workers", "1")
    assert_clean(done.stderr)
    records = read_jsonl(ws.results)
    assert [(r["task_name"], r["status"]) for r in records] == [("a", "success"), ("b", "success")], [
        r["error"] for r in records
    ]
    assert done.returncode == 0
    workspaces = sorted((ws.output / "workspaces").iterdir())
    assert len(workspaces) == 2
    for workspace in workspaces:
        assert (workspace / "README.txt").is_file()  # the template was copied
        inside = sorted(str(p.relative_to(workspace)) for p in workspace.rglob("batch_output"))
        assert inside == [], f"{workspace.name} holds copies of the output folder: {inside[:5]}"


def test_17_evaluate_only_on_a_copied_results_file_writes_only_into_its_own_folder(ws: Workspace) -> None:
    ws.prompt("t")
    assert run(ws).returncode == 0
    copy = ws.root / "copied-run"
    copy.mkdir()
    shutil.copyfile(ws.results, copy / "batch_results.jsonl")
    original = snapshot(ws.output)
    done = run(ws, "--evaluate-only", "--evaluate", grader(ws, "pass {task}"), "--output-dir", str(copy), timeout=60)
    assert_clean(done.stderr)
    assert done.returncode == 0, done.stderr
    assert len(gradings(ws)) == 1
    assert snapshot(ws.output) == original, "the original run's folder was written"
    logs = sorted(str(p.relative_to(copy)) for p in copy.rglob("*.eval.*") if p.is_file() and p.suffix == ".log")
    assert logs, f"no evaluator log in {copy}: {sorted(snapshot(copy))}"


def test_18_an_empty_task_list_is_a_usage_error(ws: Workspace) -> None:
    ws.prompt("a")
    ws.prompt("b")
    done = run(ws, "--tasks", "", timeout=30)
    assert_one_line_naming(done, "--tasks")
    assert ws.launches() == []
    assert not ws.output.exists()
