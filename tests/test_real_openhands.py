"""End to end with the real OpenHands (openhands-ai with `openhands.core.main`).

Runs with the OpenHands that `bash examples/install-openhands.sh` installs (the README's first
command, `bash examples/run-examples.sh`, does it), or with OPENHANDS_PYTHON when that is set;
skips otherwise, saying which command installs it. No Docker and no LLM account: the CLI runtime
and the scripted OpenAI-compatible server of tests/llm_server.py on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    SCRIPT,
    agent_command_running,
    alive,
    openhands_python,
    processes_with,
    read_jsonl,
    required,
    wait_until,
)
from llm_server import COMPLETION_TOKENS, PROMPT_TOKENS, ScriptedLLM

OPENHANDS_PYTHON = openhands_python() or ""
COST_IN, COST_OUT = 0.000001, 0.000002
KEY = "sk-e2e-secret-0123456789"


def why_skip() -> str | None:
    """None when OPENHANDS_PYTHON can run `-m openhands.core.main`, else why not. Finding the
    module costs milliseconds; importing it would cost seconds."""
    install = "run `bash examples/install-openhands.sh` (or set OPENHANDS_PYTHON)"
    if not OPENHANDS_PYTHON:
        return f"no OpenHands 1.6.0 found: {install}"
    find = "import importlib.util, sys; sys.exit(importlib.util.find_spec('openhands.core.main') is None)"
    try:
        missing = subprocess.run([OPENHANDS_PYTHON, "-c", find], capture_output=True, timeout=60).returncode != 0
    except OSError as e:
        return f"{OPENHANDS_PYTHON} cannot run ({e.strerror}): {install}"
    if missing:
        return f"{OPENHANDS_PYTHON} has no openhands.core.main (openhands-ai <= 1.6.0 needed): {install}"
    return None


SKIP = why_skip()
# CI sets RUN_BATCH_TESTS_REQUIRE_OPENHANDS after installing OpenHands: there a skip would hide a
# broken install path, so these tests fail instead.
REQUIRED = required("openhands")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(SKIP is not None and not REQUIRED, reason=SKIP or ""),
]


@pytest.fixture(scope="module", autouse=True)
def openhands_is_there() -> None:
    if SKIP:
        pytest.fail(f"RUN_BATCH_TESTS_REQUIRE asks for the real OpenHands, but {SKIP}", pytrace=False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens there


def make_project(root: Path, server: ScriptedLLM) -> tuple[Path, Path, dict[str, str], list[str]]:
    """An OpenHands project folder with a CLI-runtime config, a prompt folder, the environment
    and the run-batch command line for it."""
    project, prompts = root / "project", root / "prompts"
    for d in (project, prompts, root / "workspace", root / "home"):
        d.mkdir()
    (project / "config.toml").write_text(f"""
[core]
runtime = "cli"
workspace_base = "{root / "workspace"}"
file_store_path = "{root / "file_store"}"
[agent]
enable_browsing = false
enable_jupyter = false
enable_mcp = false
[llm]
model = "openai/scripted"
base_url = "{server.base_url}"
api_key = "{KEY}"
native_tool_calling = true
num_retries = 0
input_cost_per_token = {COST_IN}
output_cost_per_token = {COST_OUT}
[llm.unreachable]
model = "openai/scripted"
base_url = "http://127.0.0.1:{closed_port()}/v1"
api_key = "{KEY}"
native_tool_calling = true
num_retries = 0
""")
    env = {**os.environ, "HOME": str(root / "home"), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("LLM_API_KEY", None)
    command = f"{shlex.quote(OPENHANDS_PYTHON)} -m openhands.core.main"
    base = [
        sys.executable,
        str(SCRIPT),
        "--prompt-dir",
        str(prompts),
        "--project-dir",
        str(project),
        "--command",
        command,
        "--grace-period",
        "60",
    ]
    return project, prompts, env, base


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, server: ScriptedLLM) -> dict[str, object]:
    project, prompts, env, base = make_project(tmp_path_factory.mktemp("real"), server)
    # The batch's --timeout 30 is for `sleeps`; the others get 180 s in their front matter, since
    # three start-ups at once on 2 loaded cores took over 30 s to end (seen on 2026-12-07).
    roomy = "---\ntimeout: 180\n---\n"
    (prompts / "finishes.md").write_text(roomy + "Say hello from the shell.\n")
    (prompts / "llm-fails.md").write_text(roomy + "This one breaks.\nLLM: fail\n")
    (prompts / "sleeps.md").write_text("Wait a long time.\nRUN: sleep 300\n")
    (prompts / "unreachable.md").write_text("Nobody answers.\n")
    first = subprocess.run(
        [*base, "--max-workers", "3", "--timeout", "30", "--exclude", "unreachable"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    second = subprocess.run(
        # another endpoint is another experiment (issue 22): kept apart in the same folder by a label
        [*base, "--tasks", "unreachable", "--llm-config", "unreachable", "--label", "unreachable", "--timeout", "120"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    records = {r["task_name"]: r for r in read_jsonl(project / "batch_output" / "batch_results.jsonl")}
    return {"first": first, "second": second, "records": records, "output": project / "batch_output"}


def test_finished_task_has_exact_cost_and_tokens(batch: dict) -> None:
    r = batch["records"]["finishes"]
    assert (r["status"], r["agent_state"], r["return_code"]) == ("success", "FINISHED", 0), r["stderr"]
    assert r["total_input_tokens"] == 2 * PROMPT_TOKENS and r["total_output_tokens"] == 2 * COMPLETION_TOKENS
    assert r["total_cost"] == pytest.approx(2 * (PROMPT_TOKENS * COST_IN + COMPLETION_TOKENS * COST_OUT))
    assert r["metrics_source"] == "trajectory" and Path(r["trajectory_path"]).is_file()
    # the record says which model and which release ran (issue 22)
    assert (r["experiment"]["model"], r["experiment"]["openhands_version"]) == ("openai/scripted", "1.6.0")


def test_llm_error_exits_zero_but_is_failed(batch: dict) -> None:
    r = batch["records"]["llm-fails"]
    assert (r["status"], r["agent_state"], r["return_code"]) == ("failed", "ERROR", 0)
    assert r["error"].startswith("STATUS$ERROR_LLM_")


def test_unreachable_llm_is_failed(batch: dict) -> None:
    r = batch["records"]["unreachable"]
    assert (r["status"], r["agent_state"], r["return_code"]) == ("failed", "ERROR", 0), r["stderr"]
    assert r["error"]
    assert batch["second"].returncode == 1


def test_timeout_while_the_agent_command_runs(batch: dict) -> None:
    r = batch["records"]["sleeps"]
    assert r["status"] == "timeout" and r["agent_state"] == "STOPPED"
    assert r["trajectory_path"] and Path(r["trajectory_path"]).is_file()  # saved after SIGINT
    assert r["elapsed_time_seconds"] < 30 + 30  # the agent's `sleep 300` was ended, not waited for
    assert r["total_input_tokens"] == PROMPT_TOKENS  # one LLM call before the command started
    assert processes_with(f"RUN_BATCH_RUN_ID={r['run_id']}") == []
    assert batch["first"].returncode == 1


def test_no_secret_in_output_folder(batch: dict) -> None:
    for path in batch["output"].rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def run_marker_of(output: Path) -> str:
    """The marker of the run holding the lock (the lock file is created a moment before it is written)."""
    lock: dict[str, str] = {}

    def written() -> bool:
        with contextlib.suppress(OSError, ValueError):
            lock.update(json.loads((output / ".batch_results.jsonl.lock").read_text()))
        return "run_id" in lock

    assert wait_until(written, 10)
    return f"RUN_BATCH_RUN_ID={lock['run_id']}"


def test_ctrl_c_on_the_runner_stops_the_real_openhands_gracefully(tmp_path: Path, server: ScriptedLLM) -> None:
    project, prompts, env, base = make_project(tmp_path, server)
    (prompts / "sleeps.md").write_text("Wait a long time.\nRUN: sleep 300\n")
    runner = subprocess.Popen(base, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output = project / "batch_output"
    assert wait_until(lambda: (output / ".batch_results.jsonl.lock").exists(), 30)
    marker = run_marker_of(output)
    assert wait_until(lambda: agent_command_running(marker), 90)
    runner.send_signal(signal.SIGINT)
    _out, err = runner.communicate(timeout=120)
    assert runner.returncode == 130, err
    [record] = read_jsonl(output / "batch_results.jsonl")
    assert (record["status"], record["agent_state"]) == ("interrupted", "STOPPED")
    assert record["trajectory_path"] and Path(record["trajectory_path"]).is_file()
    assert record["total_input_tokens"] == PROMPT_TOKENS
    assert processes_with(marker) == []


def test_the_next_run_cleans_up_after_a_killed_runner(tmp_path: Path, server: ScriptedLLM) -> None:
    project, prompts, env, base = make_project(tmp_path, server)
    (prompts / "sleeps.md").write_text("Wait a long time.\nRUN: sleep 300\n")
    (prompts / "quick.md").write_text("Say hello.\n")
    runner = subprocess.Popen(
        [*base, "--tasks", "sleeps"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    output = project / "batch_output"
    assert wait_until(lambda: (output / ".batch_results.jsonl.lock").exists(), 30)
    marker = run_marker_of(output)
    assert wait_until(lambda: agent_command_running(marker), 90)
    runner.kill()
    runner.wait()
    left = processes_with(marker)
    assert left and all(alive(p) for p in left)  # OpenHands and the agent's command outlive it
    done = subprocess.run([*base, "--tasks", "quick"], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "did not finish" in done.stdout
    assert processes_with(marker) == []
    assert [r["status"] for r in read_jsonl(output / "batch_results.jsonl")] == ["success"]


def test_an_llm_that_stops_answering_is_stalled_with_its_spend_so_far(tmp_path: Path, server: ScriptedLLM) -> None:
    project, prompts, env, base = make_project(tmp_path, server)
    (prompts / "hangs.md").write_text("Run one command, then wait on the model.\nRUN: echo step one\nLLM: hang\n")
    done = subprocess.run(
        [*base, "--stall-timeout", "45", "--grace-period", "10"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1, done.stderr
    [record] = read_jsonl(project / "batch_output" / "batch_results.jsonl")
    assert record["status"] == "stalled", record
    assert record["error"].startswith("no progress for 45s; last event:")
    assert record["total_input_tokens"] == PROMPT_TOKENS  # the one call that was answered
    assert record["total_cost"] == pytest.approx(PROMPT_TOKENS * COST_IN + COMPLETION_TOKENS * COST_OUT)
    assert processes_with(f"RUN_BATCH_RUN_ID={record['run_id']}") == []
