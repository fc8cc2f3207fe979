"""End to end with the real OpenHands (openhands-ai with `openhands.core.main`).

Runs when OPENHANDS_PYTHON names an interpreter that has it (e.g. the one
../shared/real-openhands/setup.sh prints); skips otherwise. No Docker and no LLM account: the CLI
runtime and the scripted OpenAI-compatible server of tests/llm_server.py on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SCRIPT, alive, processes_with, read_jsonl, wait_until
from llm_server import COMPLETION_TOKENS, PROMPT_TOKENS, ScriptedLLM

OPENHANDS_PYTHON = os.environ.get("OPENHANDS_PYTHON", "")
COST_IN, COST_OUT = 0.000001, 0.000002
KEY = "sk-e2e-secret-0123456789"

pytestmark = pytest.mark.skipif(
    not OPENHANDS_PYTHON or subprocess.run([OPENHANDS_PYTHON, "-c", "import openhands.core.main"],
                                           capture_output=True).returncode != 0,
    reason="set OPENHANDS_PYTHON to an interpreter with openhands-ai (<=1.6.0) installed")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens there


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLM]:
    llm = ScriptedLLM().start()
    yield llm
    llm.shutdown()


def make_project(root: Path, server: ScriptedLLM) -> tuple[Path, Path, dict[str, str], list[str]]:
    """An OpenHands project folder with a CLI-runtime config, a prompt folder, the environment
    and the run-batch command line for it."""
    project, prompts = root / "project", root / "prompts"
    for d in (project, prompts, root / "workspace", root / "home"):
        d.mkdir()
    (project / "config.toml").write_text(f"""
[core]
runtime = "cli"
workspace_base = "{root / 'workspace'}"
file_store_path = "{root / 'file_store'}"
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
    base = [sys.executable, str(SCRIPT), "--prompt-dir", str(prompts), "--project-dir", str(project),
            "--command", command, "--grace-period", "60"]
    return project, prompts, env, base


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, server: ScriptedLLM) -> dict[str, object]:
    project, prompts, env, base = make_project(tmp_path_factory.mktemp("real"), server)
    (prompts / "finishes.md").write_text("Say hello from the shell.\n")
    (prompts / "llm-fails.md").write_text("This one breaks.\nLLM: fail\n")
    (prompts / "sleeps.md").write_text("Wait a long time.\nRUN: sleep 300\n")
    (prompts / "unreachable.md").write_text("Nobody answers.\n")
    first = subprocess.run(base + ["--max-workers", "3", "--timeout", "30", "--exclude", "unreachable"],
                           env=env, capture_output=True, text=True, timeout=400)
    second = subprocess.run(base + ["--tasks", "unreachable", "--llm-config", "unreachable",
                                    "--timeout", "120"], env=env, capture_output=True, text=True, timeout=400)
    records = {r["task_name"]: r for r in read_jsonl(project / "batch_output" / "batch_results.jsonl")}
    return {"first": first, "second": second, "records": records, "output": project / "batch_output"}


def test_finished_task_has_exact_cost_and_tokens(batch: dict) -> None:
    r = batch["records"]["finishes"]
    assert (r["status"], r["agent_state"], r["return_code"]) == ("success", "FINISHED", 0), r["stderr"]
    assert r["total_input_tokens"] == 2 * PROMPT_TOKENS and r["total_output_tokens"] == 2 * COMPLETION_TOKENS
    assert r["total_cost"] == pytest.approx(2 * (PROMPT_TOKENS * COST_IN + COMPLETION_TOKENS * COST_OUT))
    assert r["metrics_source"] == "trajectory" and Path(r["trajectory_path"]).is_file()


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


def agent_command_running(run_marker: str) -> bool:
    """True once the agent's `sleep 300` runs (a process of the task whose program is sleep)."""
    for pid in processes_with(run_marker):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep":
                return True
        except OSError:
            pass
    return False


def run_marker_of(output: Path) -> str:
    lock = json.loads((output / ".batch_results.jsonl.lock").read_text())
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
    out, err = runner.communicate(timeout=120)
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
    runner = subprocess.Popen(base + ["--tasks", "sleeps"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    output = project / "batch_output"
    assert wait_until(lambda: (output / ".batch_results.jsonl.lock").exists(), 30)
    marker = run_marker_of(output)
    assert wait_until(lambda: agent_command_running(marker), 90)
    runner.kill()
    runner.wait()
    left = processes_with(marker)
    assert left and all(alive(p) for p in left)  # OpenHands and the agent's command outlive it
    done = subprocess.run(base + ["--tasks", "quick"], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "did not finish" in done.stdout
    assert processes_with(marker) == []
    assert [r["status"] for r in read_jsonl(output / "batch_results.jsonl")] == ["success"]
