"""End to end with the real V1 CLI (`openhands --headless`, PyPI package `openhands` 1.16.0).

Runs with the CLI that `bash examples/install-openhands.sh --version cli-1.16.0` installs (into
${XDG_CACHE_HOME:-~/.cache}/run_batch/openhands-cli-1.16.0/bin/openhands), or with the program in
OPENHANDS_CLI when that is set; skips otherwise, saying which command installs it. No LLM account:
the scripted OpenAI-compatible server of tests/llm_server.py on 127.0.0.1, reached through
LLM_MODEL / LLM_API_KEY / LLM_BASE_URL (run_batch then passes --override-with-envs). HOME and
OPENHANDS_PERSISTENCE_DIR are temporary folders, so nothing of the user's ~/.openhands is read.

The CLI takes 8-50 s to start on a loaded 2-core machine, so the cases share a few runs:
  - `batch`: a timeout while the agent's command runs, started first and alone (so that the
    command runs well before the timeout); once it runs, two more runs side by side. One with no
    agent_settings.json (the environment builds the agent): a finished task and a stuck agent. One
    whose agent_settings.json sets `num_retries: 0` (else the SDK retries a failing LLM for
    ~140 s): an LLM that fails, and an agent that prints the keys of its environment.
  - `signals`: two runners side by side, one stopped with Ctrl-C, one SIGKILLed; then the next run
    in the killed runner's folder cleans up after it, running two tasks in parallel.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SCRIPT, agent_command_running, alive, processes_with, read_jsonl, required, wait_until, when
from llm_server import COMPLETION_TOKENS, PROMPT_TOKENS, ScriptedLLM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INSTALL = "bash examples/install-openhands.sh --version cli-1.16.0"
MODEL = "openai/gpt-4o-2024-11-20"  # a model litellm has prices for
# litellm's prices for gpt-4o-2024-11-20, per token: 2.50 USD / 10.00 USD per million
PRICE_IN, PRICE_OUT = 2.5e-6, 1e-5
CALL_COST = PROMPT_TOKENS * PRICE_IN + COMPLETION_TOKENS * PRICE_OUT  # 0.003 USD per scripted call
KEY = "sk-e2e-cli-secret-0123456789"  # LLM_API_KEY
TOKEN = "ghp-e2e-cli-token-9876543210"  # another secret of the environment (GITHUB_TOKEN)
TIMEOUT = 60  # alone, the CLI reached the agent's first command in 10-40 s here (load 5-23)
GRACE = 30
PARALLEL_LINES = 20000  # what each parallel task writes: `seq 1 20000`
# The agent's long command. It prints, because the CLI's terminal hands a command that stays silent
# for 30 s back to the agent as if done (the scripted model then calls `finish`): a bare `sleep 300`
# would no longer be "running" for the agent after 30 s. `while sleep`: ending the sleep ends it.
WAITS = "Wait a long time.\nRUN: while sleep 2; do echo still waiting; done\n"


def find_cli() -> str | None:
    if os.environ.get("OPENHANDS_CLI"):
        return os.environ["OPENHANDS_CLI"]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    program = cache / "run_batch" / "openhands-cli-1.16.0" / "bin" / "openhands"
    return str(program) if os.access(program, os.X_OK) else None


CLI = find_cli()
NOT_FOUND = f"no V1 CLI found: run `{INSTALL}` (or set OPENHANDS_CLI)"
pytestmark.append(pytest.mark.skipif(CLI is None and not required("cli"), reason=NOT_FOUND))


@pytest.fixture(scope="module", autouse=True)
def cli_is_there() -> None:
    if CLI is None:
        pytest.fail(f"RUN_BATCH_TESTS_REQUIRE asks for the V1 CLI, but {NOT_FOUND}", pytrace=False)


# --- helpers --------------------------------------------------------------------------------------


def by_task(output: Path) -> dict[str, dict[str, Any]]:
    return {r["task_name"]: r for r in read_jsonl(output / "batch_results.jsonl")}


def run_id_of(output: Path, not_this: str | None = None, timeout: float = 30) -> str:
    """The id of the run holding the output folder's lock (written a moment after creation); not_this:
    a killed run's id, whose lock stays there until the next run takes it over."""
    found: list[str] = []

    def written() -> bool:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            run_id = json.loads((output / ".batch_results.jsonl.lock").read_text())["run_id"]
            if run_id != not_this:
                found.append(str(run_id))
        return bool(found)

    assert wait_until(written, timeout), f"no new run took the lock of {output}"
    return found[0]


def tmux_of_run(run_id: str) -> list[int]:
    """Live tmux processes (servers, clients) of a run: carrying its marker, or its tmux folder
    (TMUX_TMPDIR inside /tmp/run_batch-<run id>-...) in their environment or command line."""
    found = []
    for pid in _all_pids():
        try:
            if not Path(f"/proc/{pid}/comm").read_text().startswith("tmux"):
                continue
            seen = Path(f"/proc/{pid}/environ").read_bytes() + Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if (f"RUN_BATCH_RUN_ID={run_id}".encode() in seen or f"run_batch-{run_id}-".encode() in seen) and alive(pid):
            found.append(pid)
    return found


def _all_pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def left_behind(run_id: str) -> list[str]:
    """What of a run still runs: its marked processes and its tmux processes, described."""
    pids = sorted(set(processes_with(f"RUN_BATCH_RUN_ID={run_id}")) | set(tmux_of_run(run_id)))
    described = []
    for pid in pids:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            described.append(f"{pid}: {cmdline[:200]}")
    return described


def nothing_left(run_id: str, patience: float = 5) -> list[str]:
    """[] once nothing of the run is alive (a process reparented to PID 1 takes a moment to be reaped)."""
    wait_until(lambda: not left_behind(run_id), patience, step=0.2)
    return left_behind(run_id)


class Runs:
    """The runners this module starts and their run ids: whatever of them still runs at the end
    (after a failed assertion, say) is killed, by pid: the runners, then their marked processes."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.ids: list[str] = []

    def start(
        self, project: Project, *args: str, quiet: bool = False, after: str | None = None
    ) -> tuple[subprocess.Popen[str], str]:
        """A runner in project's folder, and its marker (after: the id of a killed run in that folder)."""
        proc = project.start(*args, quiet=quiet)
        self.procs.append(proc)
        self.ids.append(run_id_of(project.output, not_this=after))
        return proc, f"RUN_BATCH_RUN_ID={self.ids[-1]}"

    def end(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        for run_id in self.ids:
            for pid in set(processes_with(f"RUN_BATCH_RUN_ID={run_id}")) | set(tmux_of_run(run_id)):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


class Project:
    """A project folder (the CLI's working directory), its prompts, and the runner's environment:
    HOME and OPENHANDS_PERSISTENCE_DIR private, the scripted LLM through LLM_*."""

    def __init__(self, root: Path, server: ScriptedLLM, settings: dict[str, Any] | None = None) -> None:
        self.root, self.project, self.prompts = root, root / "project", root / "prompts"
        persistence = root / "persistence"
        for d in (self.project, self.prompts, root / "home", persistence):
            d.mkdir(parents=True)
        if settings is not None:  # the user's settings; the key stays in the environment
            (persistence / "agent_settings.json").write_text(json.dumps(settings))
        inherited = ("LLM_", "OPENHANDS_", "RUN_BATCH", "TMUX", "LITELLM_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
        env.update(
            {
                "HOME": str(root / "home"),
                "OPENHANDS_PERSISTENCE_DIR": str(persistence),
                "LLM_MODEL": MODEL,
                "LLM_API_KEY": KEY,
                "LLM_BASE_URL": server.base_url,
                "GITHUB_TOKEN": TOKEN,
            }
        )
        self.env = env

    @property
    def output(self) -> Path:
        return self.project / "batch_output"

    def prompt(self, name: str, text: str) -> None:
        (self.prompts / f"{name}.md").write_text(text)

    def command(self, *args: str) -> list[str]:
        return [
            sys.executable,
            str(SCRIPT),
            "--prompt-dir",
            str(self.prompts),
            "--project-dir",
            str(self.project),
            "--command",
            str(CLI),
            "--grace-period",
            str(GRACE),
            *args,
        ]

    def start(self, *args: str, quiet: bool = False) -> subprocess.Popen[str]:
        out = subprocess.DEVNULL if quiet else subprocess.PIPE
        return subprocess.Popen(
            self.command(*args), env=self.env, stdout=out, stderr=out, text=True, stdin=subprocess.DEVNULL
        )


def finished(proc: subprocess.Popen[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs() -> Iterator[Runs]:
    started = Runs()
    yield started
    started.end()


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, server: ScriptedLLM, runs: Runs) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cli")
    times_out = Project(root / "timeout", server)
    times_out.prompt("sleeps", WAITS)
    env_only = Project(root / "env-only", server)
    env_only.prompt("finishes", "Say hello from the shell.\n")
    env_only.prompt("stuck", "Do the same thing for ever.\nLLM: loop\n")
    no_retries = {"llm": {"model": MODEL, "usage_id": "agent", "num_retries": 0}}
    with_settings = Project(root / "settings", server, settings=no_retries)
    with_settings.prompt("llm-fails", "This one breaks.\nLLM: fail\n")
    with_settings.prompt("prints-keys", 'Show the keys.\nRUN: echo "keys: $LLM_API_KEY $GITHUB_TOKEN"\n')

    # The timeout case first, alone, so that its CLI reaches the command well within --timeout even on
    # a busy machine; the others start once it is there.
    started = time.monotonic()
    procs = {}
    procs["timeout"], marker = runs.start(times_out, "--timeout", str(TIMEOUT))
    wait_until(lambda: agent_command_running(marker), TIMEOUT)
    procs["env_only"], _ = runs.start(env_only, "--max-workers", "2", "--timeout", "240")
    procs["settings"], _ = runs.start(with_settings, "--max-workers", "2", "--timeout", "240")
    done = {name: finished(proc) for name, proc in procs.items()}
    outputs = [times_out.output, env_only.output, with_settings.output]
    records = {name: r for output in outputs for name, r in by_task(output).items()}
    return {**done, "records": records, "seconds": time.monotonic() - started, "outputs": outputs}


@pytest.fixture(scope="module")
def signals(tmp_path_factory: pytest.TempPathFactory, server: ScriptedLLM, runs: Runs) -> dict[str, Any]:
    """Two runners whose agent runs a long command: one gets Ctrl-C (SIGINT), the other SIGKILL. Then
    the next run in the killed one's folder: two tasks in parallel, each writing its own file."""
    root = tmp_path_factory.mktemp("cli-signals")
    interrupted, killed = Project(root / "interrupted", server), Project(root / "killed", server)
    for project in (interrupted, killed):
        project.prompt("sleeps", WAITS)
    for name in ("para-a", "para-b"):
        write = f"sleep 4; seq 1 {PARALLEL_LINES} > {name}.part && mv {name}.part {name}.txt"
        killed.prompt(name, f"Write a file.\nRUN: {write}\n")

    markers = {}
    ctrl_c, markers["ctrl_c"] = runs.start(interrupted, "--tasks", "sleeps")
    doomed, markers["killed"] = runs.start(killed, "--tasks", "sleeps", quiet=True)
    result: dict[str, Any] = {"markers": markers, "killed_project": killed}

    assert wait_until(lambda: agent_command_running(markers["ctrl_c"]), 120), "the agent's sleep never started (Ctrl-C)"
    ctrl_c.send_signal(signal.SIGINT)
    assert wait_until(lambda: agent_command_running(markers["killed"]), 120), "the agent's sleep never started (kill)"
    doomed.kill()
    doomed.wait()
    result["left_by_kill"] = [p for p in processes_with(markers["killed"]) if alive(p)]

    # the next run starts while the interrupted one still stops
    killed_id = markers["killed"].split("=", 1)[1]
    next_run, _ = runs.start(
        killed, "--tasks", "para-a,para-b", "--max-workers", "2", "--timeout", "150", after=killed_id
    )
    result["ctrl_c"] = finished(ctrl_c, timeout=GRACE + 120)
    result["ctrl_c_records"] = read_jsonl(interrupted.output / "batch_results.jsonl")
    result["next"] = finished(next_run)
    result["next_records"] = read_jsonl(killed.output / "batch_results.jsonl")
    result["outputs"] = [interrupted.output, killed.output]
    return result


# --- one module-scoped batch ----------------------------------------------------------------------


def test_finished_task_has_exact_cost_and_tokens(batch: dict[str, Any]) -> None:
    r = batch["records"]["finishes"]
    assert (r["status"], r["agent_state"], r["return_code"]) == ("success", "FINISHED", 0), r["stderr"]
    assert r["error"] is None
    # two LLM calls: the command, then `finish`
    assert (r["total_input_tokens"], r["total_output_tokens"]) == (2 * PROMPT_TOKENS, 2 * COMPLETION_TOKENS)
    assert r["total_cost"] == pytest.approx(2 * CALL_COST) == pytest.approx(0.006)
    assert r["metrics_source"] == "state"
    # the record says which model and which release ran (issue 22)
    assert (r["experiment"]["model"], r["experiment"]["openhands_version"]) == (MODEL, "1.16.0")
    assert r["command"][1:5] == ["--headless", "--always-approve", "--override-with-envs", "-f"]
    assert len(r["session_id"]) == 32 and int(r["session_id"], 16) >= 0
    conversation = batch["outputs"][1] / "conversations" / "finishes" / r["session_id"]
    assert json.loads((conversation / "base_state.json").read_text())["execution_status"] == "finished"
    events = json.loads(Path(r["trajectory_path"]).read_text())
    assert [e["kind"] for e in events][:2] == ["SystemPromptEvent", "MessageEvent"]
    assert len(events) == len(list((conversation / "events").glob("event-*.json")))


def test_stuck_agent_is_failed(batch: dict[str, Any]) -> None:
    r = batch["records"]["stuck"]
    assert (r["status"], r["agent_state"], r["return_code"]) == ("failed", "STUCK", 0), r["stderr"]
    assert r["error"].startswith("agent got stuck")
    assert r["total_input_tokens"] >= 2 * PROMPT_TOKENS and r["total_cost"] == pytest.approx(
        r["total_input_tokens"] // PROMPT_TOKENS * CALL_COST
    )


def test_llm_that_fails_is_failed_with_its_reason(batch: dict[str, Any]) -> None:
    r = batch["records"]["llm-fails"]
    assert (r["status"], r["agent_state"], r["return_code"]) == ("failed", "ERROR", 0), r["stderr"]
    assert r["error"].startswith("LLMServiceUnavailableError: ")
    assert r["elapsed_time_seconds"] < 90  # num_retries 0 in agent_settings.json: no ~140 s of retries


def test_timeout_while_the_agent_command_runs(batch: dict[str, Any]) -> None:
    r = batch["records"]["sleeps"]
    assert r["status"] == "timeout" and r["error"] == f"timed out after {TIMEOUT}s", r["stderr"]
    assert r["agent_state"] is not None, f"the CLI did not reach the agent's command in {TIMEOUT} s (machine too busy?)"
    # the CLI saved its state after SIGINT once the agent's command was ended: ERROR, one call counted
    assert r["agent_state"] == "ERROR"
    assert (r["total_input_tokens"], r["total_output_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert r["total_cost"] == pytest.approx(CALL_COST) and r["metrics_source"] == "state"
    assert r["trajectory_path"] and Path(r["trajectory_path"]).is_file()
    assert r["elapsed_time_seconds"] < TIMEOUT + GRACE  # the agent's sleep was ended, not waited for
    assert nothing_left(r["run_id"]) == []
    assert batch["timeout"].returncode == 1  # not every task succeeded


def keys_in(folders: list[Path]) -> list[str]:
    """Files under folders holding LLM_API_KEY's or GITHUB_TOKEN's value: `path: NAME` each."""
    leaks = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                for name, secret in (("LLM_API_KEY", KEY), ("GITHUB_TOKEN", TOKEN)):
                    if secret.encode() in data:
                        leaks.append(f"{path.relative_to(folder.parent)}: {name}")
    return leaks


def test_no_key_of_the_environment_in_the_runners_files(batch: dict[str, Any], signals: dict[str, Any]) -> None:
    """Results, logs, trajectories, batch_run.log: the keys are masked even where the agent printed them."""
    assert batch["records"]["prints-keys"]["status"] == "success", batch["records"]["prints-keys"]["stderr"]
    outputs = [*batch["outputs"], *signals["outputs"]]
    assert [leak for leak in keys_in(outputs) if "/conversations/" not in leak] == []
    assert [p for output in outputs for p in output.rglob("agent_settings.json")] == []  # never copied


def test_no_key_of_the_environment_in_the_conversation_folders(batch: dict[str, Any], signals: dict[str, Any]) -> None:
    """The CLI's own conversation folders are in the output folder too (the agent of `prints-keys`
    echoes both keys: its shell has the CLI's environment)."""
    outputs = [*batch["outputs"], *signals["outputs"]]
    assert [leak for leak in keys_in(outputs) if "/conversations/" in leak] == []


# --- signals, and two tasks side by side ----------------------------------------------------------


def test_ctrl_c_on_the_runner(signals: dict[str, Any]) -> None:
    done = signals["ctrl_c"]
    assert done.returncode == 130, done.stderr
    [r] = signals["ctrl_c_records"]
    assert (r["status"], r["agent_state"]) == ("interrupted", "ERROR"), r["stderr"]
    assert (r["total_input_tokens"], r["total_cost"]) == (PROMPT_TOKENS, pytest.approx(CALL_COST))
    assert r["trajectory_path"] and Path(r["trajectory_path"]).is_file()
    assert nothing_left(r["run_id"]) == []


def test_the_next_run_cleans_up_after_a_killed_runner(signals: dict[str, Any]) -> None:
    assert signals["left_by_kill"], "the killed runner's OpenHands should outlive it"
    done = signals["next"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "did not finish" in done.stdout
    killed_run = signals["markers"]["killed"].split("=", 1)[1]
    assert nothing_left(killed_run) == []  # its OpenHands, its agent's sleep and its tmux server


def test_two_tasks_in_parallel_do_not_disturb_each_other(signals: dict[str, Any]) -> None:
    records = {r["task_name"]: r for r in signals["next_records"]}
    assert sorted(records) == ["para-a", "para-b"]
    a, b = records["para-a"], records["para-b"]
    for r in (a, b):
        assert (r["status"], r["agent_state"]) == ("success", "FINISHED"), r["stderr"]
        assert (r["total_input_tokens"], r["total_output_tokens"]) == (2 * PROMPT_TOKENS, 2 * COMPLETION_TOKENS)
        assert r["total_cost"] == pytest.approx(2 * CALL_COST)
    # they did run side by side
    assert max(when(a["started_at"]), when(b["started_at"])) < min(when(a["finished_at"]), when(b["finished_at"]))
    project = signals["killed_project"].project
    whole = "".join(f"{i}\n" for i in range(1, PARALLEL_LINES + 1))
    for name in ("para-a", "para-b"):
        assert (project / f"{name}.txt").read_text() == whole, name
    assert a["session_id"] != b["session_id"]
    folders = {name: signals["outputs"][1] / "conversations" / name for name in ("para-a", "para-b")}
    assert [p.name for p in folders["para-a"].iterdir()] == [a["session_id"]]
    assert [p.name for p in folders["para-b"].iterdir()] == [b["session_id"]]
    assert nothing_left(a["run_id"]) == []
