"""End to end with `--entrypoint sdk`: run_batch's own driver, run by the Python of the real V1 CLI's
environment (openhands-sdk 1.21.0 and openhands-tools, installed with the CLI by
`bash examples/install-openhands.sh --version cli-1.16.0`), against the scripted LLM server.

What the driver adds over the CLI, each shown for real: the step limit (`--max-iterations`), the
budget per task, an exit status that tells, a stop in a second or two at a timeout or Ctrl-C with
the state and its cost saved, and the spend saved after every LLM call, so that even a SIGKILLed
attempt's conversation still holds its cost. The runners share the helpers of the CLI's tests
(`Project`, `Runs`), started side by side to keep the module to about a minute.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import alive, processes_with, read_jsonl, required, wait_until
from llm_server import COMPLETION_TOKENS, PROMPT_TOKENS, ScriptedLLM
from test_real_openhands_cli import (
    CALL_COST,
    CLI,
    MODEL,
    NOT_FOUND,
    WAITS,
    Project,
    Runs,
    agent_command_running,
    by_task,
    finished,
    nothing_left,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(CLI is None and not required("cli"), reason=NOT_FOUND),
]
TIMEOUT = 90  # the driver starts in 5-15 s here; the timeout case then waits in its command
SDK = ("--entrypoint", "sdk")


def sdk_version() -> str | None:
    """The openhands-sdk release installed beside the V1 CLI, from its dist-info folder (no Python
    started): what the driver runs, and what its records name as the release."""
    found = sorted(Path(CLI).parent.parent.glob("lib/python3.*/site-packages/openhands_sdk-*.dist-info")) if CLI else []
    return found[-1].name.removeprefix("openhands_sdk-").removesuffix(".dist-info") if found else None


SDK_VERSION = sdk_version()


@pytest.fixture(scope="module", autouse=True)
def sdk_is_there() -> None:
    if CLI is None:
        pytest.fail(f"RUN_BATCH_TESTS_REQUIRE asks for the V1 CLI (its SDK), but {NOT_FOUND}", pytrace=False)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLM]:
    llm = ScriptedLLM().start()
    yield llm
    llm.shutdown()


@pytest.fixture(scope="module")
def runs() -> Iterator[Runs]:
    started = Runs()
    yield started
    started.end()


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, server: ScriptedLLM, runs: Runs) -> dict[str, Any]:
    """Four runners side by side: a finished task in its own workspace; a step limit; a budget;
    a timeout while the agent's command runs."""
    root = tmp_path_factory.mktemp("sdk")
    plain, steps, budget, times_out = (Project(root / n, server) for n in ("plain", "steps", "budget", "timeout"))
    plain.prompt("finishes", "Write a file.\nRUN: echo made > made.txt\n")
    steps.prompt("loops", "Never done.\nLLM: loop\nRUN: echo again\n")
    budget.prompt("spends", "Never done.\nLLM: loop\nRUN: echo again\n")
    times_out.prompt("sleeps", WAITS)
    started = time.monotonic()
    procs = {}
    procs["timeout"], _ = runs.start(times_out, *SDK, "--timeout", str(TIMEOUT))
    procs["plain"], _ = runs.start(plain, *SDK, "--timeout", "240", "--workspace-per-task")
    procs["steps"], _ = runs.start(steps, *SDK, "--timeout", "240", "--max-iterations", "3")
    procs["budget"], _ = runs.start(budget, *SDK, "--timeout", "240", "--max-budget-per-task", "0.007")
    done = {name: finished(proc) for name, proc in procs.items()}
    projects = {"plain": plain, "steps": steps, "budget": budget, "timeout": times_out}
    records = {name: r for p in projects.values() for name, r in by_task(p.output).items()}
    return {**done, "records": records, "projects": projects, "seconds": time.monotonic() - started}


def test_finished_task_with_exact_cost_in_its_own_workspace(batch: dict[str, Any]) -> None:
    r = batch["records"]["finishes"]
    assert (r["status"], r["agent_state"], r["return_code"]) == ("success", "FINISHED", 0), r["stderr"]
    assert (r["total_input_tokens"], r["total_output_tokens"]) == (2 * PROMPT_TOKENS, 2 * COMPLETION_TOKENS)
    assert r["total_cost"] == pytest.approx(2 * CALL_COST) and r["metrics_source"] == "state"
    # the record says which model and which release ran (issue 22): the SDK of the 1.16.0 CLI
    assert SDK_VERSION and (r["experiment"]["model"], r["experiment"]["openhands_version"]) == (MODEL, SDK_VERSION)
    assert r["command"][1:3] == [str(Path(__file__).parent.parent / "run_batch.py"), "--sdk-driver"]
    assert Path(r["command"][0]).name.startswith("python")  # the CLI's own interpreter
    assert (Path(r["workspace"]) / "made.txt").read_text() == "made\n"
    events = json.loads(Path(r["trajectory_path"]).read_text())
    assert [e["kind"] for e in events][:2] == ["SystemPromptEvent", "MessageEvent"]
    # the task's own text, as `-f` gives it to openhands.core.main (the CLI wraps it in a preamble)
    first = events[1]["llm_message"]["content"][0]["text"]
    assert first.startswith("Write a file.")
    assert batch["plain"].returncode == 0


def test_the_step_limit_holds(batch: dict[str, Any]) -> None:
    r = batch["records"]["loops"]
    assert (r["status"], r["agent_state"], r["return_code"]) == ("failed", "ERROR", 1), r["stderr"]
    assert r["error"] == "exit code 1: MaxIterationsReached: Agent reached maximum iterations limit (3)."
    assert r["total_input_tokens"] == 3 * PROMPT_TOKENS  # three steps, not the SDK's 500


def test_the_budget_per_task_holds(batch: dict[str, Any]) -> None:
    r = batch["records"]["spends"]
    assert r["status"] == "failed" and "0.007" in r["error"], r["error"]
    # stopped at the first call past the budget (by the driver or by run_batch, whichever sees it first)
    assert r["total_cost"] == pytest.approx(3 * CALL_COST)


def test_timeout_stops_at_once_and_keeps_the_cost(batch: dict[str, Any]) -> None:
    r = batch["records"]["sleeps"]
    assert r["status"] == "timeout" and r["error"] == f"timed out after {TIMEOUT}s", r["stderr"]
    assert r["agent_state"] == "PAUSED", "the driver saves its state as paused after a stop"
    assert (r["total_input_tokens"], r["total_cost"]) == (PROMPT_TOKENS, pytest.approx(CALL_COST))
    assert r["elapsed_time_seconds"] < TIMEOUT + 10  # not the 30 s grace period: the driver stopped itself
    assert r["return_code"] == 128 + signal.SIGINT
    assert nothing_left(r["run_id"]) == []


@pytest.fixture(scope="module")
def signals(tmp_path_factory: pytest.TempPathFactory, server: ScriptedLLM, runs: Runs) -> dict[str, Any]:
    """Two runners whose agent runs a long command: one gets Ctrl-C, the other SIGKILL; then the
    next run in the killed one's folder."""
    root = tmp_path_factory.mktemp("sdk-signals")
    interrupted, killed = Project(root / "interrupted", server), Project(root / "killed", server)
    for project in (interrupted, killed):
        project.prompt("sleeps", WAITS)
    killed.prompt("after", "Say hello.\n")
    markers = {}
    ctrl_c, markers["ctrl_c"] = runs.start(interrupted, *SDK)
    doomed, markers["killed"] = runs.start(killed, *SDK, "--tasks", "sleeps", quiet=True)
    assert wait_until(lambda: agent_command_running(markers["ctrl_c"]), 120), "the agent's sleep never started"
    stopped_at = time.monotonic()
    ctrl_c.send_signal(signal.SIGINT)
    assert wait_until(lambda: agent_command_running(markers["killed"]), 120), "the agent's sleep never started"
    doomed.kill()
    doomed.wait()
    result: dict[str, Any] = {
        "markers": markers,
        "left_by_kill": [p for p in processes_with(markers["killed"]) if alive(p)],
    }
    result["ctrl_c"] = finished(ctrl_c, timeout=120)
    result["ctrl_c_seconds"] = time.monotonic() - stopped_at
    result["ctrl_c_records"] = read_jsonl(interrupted.output / "batch_results.jsonl")
    result["killed_states"] = [
        json.loads(p.read_text()) for p in (killed.output / "conversations").glob("sleeps/*/base_state.json")
    ]
    killed_id = markers["killed"].split("=", 1)[1]
    next_run, _ = runs.start(killed, *SDK, "--tasks", "after", after=killed_id)
    result["next"] = finished(next_run)
    return result


def test_ctrl_c_stops_the_driver_gracefully(signals: dict[str, Any]) -> None:
    assert signals["ctrl_c"].returncode == 130, signals["ctrl_c"].stderr
    [r] = signals["ctrl_c_records"]
    assert (r["status"], r["agent_state"]) == ("interrupted", "PAUSED"), r["stderr"]
    assert (r["total_input_tokens"], r["total_cost"]) == (PROMPT_TOKENS, pytest.approx(CALL_COST))
    assert signals["ctrl_c_seconds"] < 20  # the driver's own stop, well inside the grace period
    assert nothing_left(r["run_id"]) == []


def test_a_killed_attempt_keeps_its_cost_and_the_next_run_cleans_up(signals: dict[str, Any]) -> None:
    assert signals["left_by_kill"], "the killed runner's driver should outlive it"
    [state] = signals["killed_states"]
    usage = state["stats"]["usage_to_metrics"]
    # saved after the first LLM call, while it ran: the V1 CLI's file says 0 here
    assert sum(m["accumulated_cost"] for m in usage.values()) == pytest.approx(CALL_COST)
    done = signals["next"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "did not finish" in done.stdout
    assert nothing_left(signals["markers"]["killed"].split("=", 1)[1]) == []
