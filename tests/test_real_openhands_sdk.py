"""End to end with `--entrypoint sdk`: run_batch's own driver on two real SDKs, in both of its
start-ups, against the scripted LLM server.

The SDKs, each found where the project's installer puts it (or named by a variable); missing, its
tests skip and say which command installs it, or fail when RUN_BATCH_TESTS_REQUIRE names its part:
  - 1.21.0, the V1 CLI's (`bash examples/install-openhands.sh --version cli-1.16.0`, OPENHANDS_CLI;
    `--command` is the CLI's program, whose Python run_batch then uses); part `cli`.
  - 1.58.2, the SDK alone (`bash examples/install-openhands.sh --version sdk-1.58.2`,
    OPENHANDS_SDK_PYTHON; `--command` is its Python); part `sdk-1.58`.
The start-ups: preloaded (the default: the SDK imported once per batch by `run_batch.py
--sdk-server`, each attempt forked from it) and per attempt (`--no-preload`: a fresh interpreter).

What the driver adds over the CLI, each shown for real: the step limit (`--max-iterations`), the
budget per task, an exit status that tells, a stop in a second or two at a timeout or Ctrl-C with
the state and its cost saved, and the spend saved after every LLM call, so that even a SIGKILLed
attempt's conversation still holds its cost. The full set runs once per SDK (1.21.0 per attempt,
1.58.2 preloaded), a smaller one (a finished task with its exact cost, a timeout, Ctrl-C) in the
other start-up; every preloaded run also shows that its attempts were forked from its server.
Every runner of one combination starts at once (`Runs`, `Project` of the CLI's tests; the tasks
that need no runner of their own share one), so each combination takes about as long as its
timeout case: 70-95 s on a loaded 2-core machine.

Then, per SDK, preloaded: four attempts forked side by side share nothing (environment, working
folder, conversation folder, LLM client), each forked attempt shows its own session marker in
/proc/<pid>/environ (what the sweep reads), a SIGKILLed runner's forked attempts are cleaned up
by the next run, and with `--task-memory` (root and cgroup v1, as in test_limits.py) the forked
attempt runs in its control group: 40-50 s per SDK. The whole module: about 7 minutes at load 5-8.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import SCRIPT, agent_command_running, alive, processes_with, read_jsonl, required, wait_until
from llm_server import COMPLETION_TOKENS, PROMPT_TOKENS, ScriptedLLM, _Handler, task_of
from test_limits import CGROUP_PROBLEM
from test_real_openhands_cli import (
    CALL_COST,
    CLI,
    GRACE,
    INSTALL,
    MODEL,
    WAITS,
    Project,
    Runs,
    by_task,
    finished,
    nothing_left,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SDK = ("--entrypoint", "sdk")
# From the attempt's start: per attempt, the driver's own import (10-40 s here with six imports at
# once); preloaded, the import is done before the attempt starts and the fork reaches the LLM in seconds.
TIMEOUT = {False: 90, True: 40}
PLACEHOLDER = "~" * 120  # the server's RUN_BATCH_SESSION, which each fork overwrites with its own


# --- the SDKs and the start-ups -------------------------------------------------------------------


def installed(python_or_program: str | None) -> str | None:
    """The openhands-sdk release of the environment of a Python (or of a program in its bin
    folder), from its dist-info folder (no Python started): what the records must name."""
    if not python_or_program:
        return None
    env = Path(python_or_program).parent.parent
    found = sorted(env.glob("lib/python3.*/site-packages/openhands_sdk-*.dist-info"))
    return found[-1].name.removeprefix("openhands_sdk-").removesuffix(".dist-info") if found else None


def find_sdk_158() -> str | None:
    if os.environ.get("OPENHANDS_SDK_PYTHON"):
        return os.environ["OPENHANDS_SDK_PYTHON"]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    python = cache / "run_batch" / "openhands-sdk-1.58.2" / "bin" / "python"
    return str(python) if os.access(python, os.X_OK) else None


@dataclass(frozen=True)
class Sdk:
    release: str  # what the tests are written for
    command: str | None  # --command: the V1 CLI's program, or the SDK environment's Python
    part: str  # its name in RUN_BATCH_TESTS_REQUIRE
    install: str  # the command that installs it
    variable: str  # the variable that names another install

    @property
    def version(self) -> str | None:
        return installed(self.command)

    def check(self) -> None:
        """Skip, or fail when required, without the install."""
        if self.command is None:
            missing = f"no openhands-sdk {self.release}: run `{self.install}` (or set {self.variable})"
            if required(self.part):
                pytest.fail(f"RUN_BATCH_TESTS_REQUIRE asks for {self.part}, but {missing}", pytrace=False)
            pytest.skip(missing)


SDK_121 = Sdk("1.21.0", CLI, "cli", INSTALL, "OPENHANDS_CLI")
SDK_158 = Sdk(
    "1.58.2",
    find_sdk_158(),
    "sdk-1.58",
    "bash examples/install-openhands.sh --version sdk-1.58.2",
    "OPENHANDS_SDK_PYTHON",
)


@dataclass(frozen=True)
class Mode:
    sdk: Sdk
    preloaded: bool
    full: bool  # the whole set of cases, or the smaller one

    @property
    def args(self) -> tuple[str, ...]:
        return SDK if self.preloaded else (*SDK, "--no-preload")

    @property
    def timeout(self) -> int:
        return TIMEOUT[self.preloaded]

    def __str__(self) -> str:
        return f"{self.sdk.release}-{'preloaded' if self.preloaded else 'per-attempt'}"


MODES = [
    Mode(SDK_121, preloaded=False, full=True),
    Mode(SDK_121, preloaded=True, full=False),
    Mode(SDK_158, preloaded=True, full=True),
    Mode(SDK_158, preloaded=False, full=False),
]
FULL = [m for m in MODES if m.full]
PRELOADED = [m for m in MODES if m.preloaded]
every_mode = pytest.mark.parametrize("mode", MODES, ids=str, indirect=True)
full_modes = pytest.mark.parametrize("mode", FULL, ids=str, indirect=True)
preloaded_modes = pytest.mark.parametrize("mode", PRELOADED, ids=str, indirect=True)
each_sdk = pytest.mark.parametrize("sdk", [SDK_121, SDK_158], ids=lambda s: s.release, indirect=True)


class SdkProject(Project):
    """The CLI tests' project, run with this SDK's --command."""

    def __init__(self, root: Path, server: ScriptedLLM, sdk: Sdk) -> None:
        super().__init__(root, server)
        self.sdk = sdk

    def command(self, *args: str) -> list[str]:
        base = [sys.executable, str(SCRIPT), "--prompt-dir", str(self.prompts), "--project-dir", str(self.project)]
        return [*base, "--command", str(self.sdk.command), "--grace-period", str(GRACE), *args]


# --- what the processes show ----------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One process of a run, as /proc showed it."""

    pid: int
    ppid: int
    role: str  # server (run_batch.py --sdk-server, or a fork of it) | driver (--sdk-driver)
    session: str | None  # its RUN_BATCH_SESSION in /proc/<pid>/environ


def drivers_and_servers() -> dict[str, list[Seen]]:
    """run_batch's SDK servers and drivers alive now (their command line, then their environment),
    by run id."""
    found: dict[str, list[Seen]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            role = "server" if b"--sdk-server" in cmdline else "driver" if b"--sdk-driver" in cmdline else None
            if role is None:
                continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            environ = dict(
                e.split(b"=", 1) for e in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0") if b"=" in e
            )
        except OSError:
            continue
        if not alive(int(entry)) or b"RUN_BATCH_RUN_ID" not in environ:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        session = environ.get(b"RUN_BATCH_SESSION")
        seen = Seen(int(entry), ppid, role, session.decode(errors="replace") if session is not None else None)
        found.setdefault(environ[b"RUN_BATCH_RUN_ID"].decode(errors="replace"), []).append(seen)
    return found


class Watch:
    """What /proc showed of one run's servers and drivers while it was watched: which is whose
    child, and which marker each showed."""

    def __init__(self) -> None:
        self.seen: dict[int, Seen] = {}
        self.alive_at_once: dict[str, int] = {}  # role: the most alive together
        self.watching = True

    def update(self, now: list[Seen]) -> None:
        counts: dict[str, int] = {}
        for seen in now:
            # its parent as first seen (the server's forks outlive it), its marker as last seen (a
            # fork overwrites the server's placeholder a moment after it starts)
            first = self.seen.setdefault(seen.pid, seen)
            if seen.session not in (first.session, PLACEHOLDER):
                self.seen[seen.pid] = dataclasses.replace(first, session=seen.session)
            key = f"{seen.role}-{'fork' if self._forked(seen) else 'own'}"
            counts[key] = counts.get(key, 0) + 1
        for key, n in counts.items():
            self.alive_at_once[key] = max(n, self.alive_at_once.get(key, 0))

    def _forked(self, seen: Seen) -> bool:
        """A child of the run's server (not a fork of one of its attempts, a moment before an exec)."""
        parent = self.seen.get(seen.ppid)
        return parent is not None and parent.role == "server" and parent.session == PLACEHOLDER

    def stop(self) -> Watch:
        WATCHER.look()  # once more, then no longer
        self.watching = False
        return self

    def servers(self, runner: int) -> list[Seen]:
        return [s for s in self.seen.values() if s.role == "server" and s.ppid == runner]

    def forks(self) -> list[Seen]:
        """The attempts forked by the run's server."""
        return [s for s in self.seen.values() if s.role == "server" and self._forked(s)]

    def drivers(self, runner: int) -> list[Seen]:
        """The attempts the runner started in an interpreter of their own."""
        return [s for s in self.seen.values() if s.role == "driver" and s.ppid == runner]


class Watcher:
    """One thread for every run watched: /proc every 0.3 s (the command lines first: cheap)."""

    def __init__(self) -> None:
        self.runs: dict[str, Watch] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, run_id: str) -> Watch:
        with self._lock:
            self.runs[run_id] = watch = Watch()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()
        return watch

    def look(self) -> None:
        with self._lock:
            now = drivers_and_servers()
            for run_id, watch in self.runs.items():
                if watch.watching:
                    watch.update(now.get(run_id, []))

    def _run(self) -> None:
        while True:
            if any(w.watching for w in list(self.runs.values())):
                self.look()
            time.sleep(0.3)


WATCHER = Watcher()


# --- the scripted LLM, with every request kept ----------------------------------------------------


class Recording(_Handler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with contextlib.suppress(ValueError):
            self.server.seen.append((self.client_address, json.loads(body)))  # type: ignore[attr-defined]
        self.rfile = io.BytesIO(body)
        super().do_POST()


class RecordingLLM(ScriptedLLM):
    """The scripted server, keeping each request and the client's address it came from."""

    def __init__(self) -> None:
        super().__init__()
        self.RequestHandlerClass = Recording
        self.seen: list[tuple[tuple[str, int], dict[str, Any]]] = []

    def of_task(self, word: str) -> list[tuple[tuple[str, int], list[dict[str, Any]]]]:
        """The requests whose task text (the first user message) contains word."""
        return [
            (addr, r.get("messages") or []) for addr, r in list(self.seen) if word in task_of(r.get("messages") or [])
        ]


def said_back(messages: list[dict[str, Any]]) -> str:
    """What the LLM was sent besides the system prompt and the task: the observations."""
    return json.dumps([m for m in messages if m.get("role") not in ("system", "user")])


# --- fixtures -------------------------------------------------------------------------------------


# Overrides conftest's `server` (a plain ScriptedLLM): these tests read what each request carried
# and which client sent it, so the server here is the recording subclass above.
@pytest.fixture(scope="module")
def server() -> Iterator[RecordingLLM]:
    llm = RecordingLLM().start()
    yield llm
    llm.shutdown()


@pytest.fixture(scope="module")
def runs() -> Iterator[Runs]:
    started = Runs()
    yield started
    started.end()


@pytest.fixture(scope="module")
def mode(request: pytest.FixtureRequest) -> Mode:
    chosen: Mode = request.param
    chosen.sdk.check()
    return chosen


@pytest.fixture(scope="module")
def sdk(request: pytest.FixtureRequest) -> Sdk:
    chosen: Sdk = request.param
    chosen.check()
    return chosen


@dataclass
class Started:
    proc: subprocess.Popen[str]
    marker: str
    watch: Watch

    @property
    def run_id(self) -> str:
        return self.marker.split("=", 1)[1]


def start(runs: Runs, project: Project, *args: str, quiet: bool = False, after: str | None = None) -> Started:
    proc, marker = runs.start(project, *args, quiet=quiet, after=after)
    return Started(proc, marker, WATCHER.watch(marker.split("=", 1)[1]))


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, server: RecordingLLM, runs: Runs, mode: Mode) -> dict[str, Any]:
    """Every runner of one combination at once. One runs the tasks side by side, in workspaces of
    their own: a finished task; a timeout while the agent's command runs; for the full set, a step
    limit and a budget (the runner's options, and a task's front matter over them). One gets Ctrl-C
    while its agent's command runs. For the full set, one is SIGKILLed while its agent's command
    runs, then the next run in its folder cleans up."""
    root = tmp_path_factory.mktemp(str(mode))
    names = ["batch", "interrupted"] + (["killed"] if mode.full else [])
    projects = {n: SdkProject(root / n, server, mode.sdk) for n in names}
    tasks = projects["batch"]
    tasks.prompt("finishes", "Write a file.\nRUN: echo made > made.txt\n")
    tasks.prompt("sleeps", f"---\ntimeout: {mode.timeout}\n---\n{WAITS}")
    projects["interrupted"].prompt("waits", WAITS)
    args = {"batch": ["--timeout", "240", "--workspace-per-task", "--max-workers", "4"], "interrupted": []}
    if mode.full:
        # --max-iterations 3 and --max-budget-per-task 0.007 for every task; each of these two lifts
        # the other limit in its front matter, so that its own is the one that stops it
        tasks.prompt("loops", "---\nmax_budget_per_task: 1\n---\nNever done.\nLLM: loop\nRUN: echo again\n")
        tasks.prompt("spends", "---\nmax_iterations: 10\n---\nNever done.\nLLM: loop\nRUN: echo again\n")
        args["batch"] += ["--max-iterations", "3", "--max-budget-per-task", "0.007"]
        projects["killed"].prompt("sleeps", WAITS)
        projects["killed"].prompt("after", "Say hello.\n")
        args["killed"] = ["--tasks", "sleeps"]
    started = time.monotonic()
    runners = {n: start(runs, projects[n], *mode.args, *args[n], quiet=n == "killed") for n in names}
    result: dict[str, Any] = {"mode": mode, "projects": projects, "runners": runners}

    ctrl_c, stopped = runners["interrupted"], dict[str, Any]()
    assert wait_until(lambda: agent_command_running(ctrl_c.marker), 150, 0.5), "the agent's sleep never started"
    stopped_at = time.monotonic()
    ctrl_c.proc.send_signal(signal.SIGINT)

    def wait_for_the_stop() -> None:  # while the SIGKILL case goes on
        stopped["done"] = finished(ctrl_c.proc, timeout=120)
        stopped["seconds"] = time.monotonic() - stopped_at

    waiting = threading.Thread(target=wait_for_the_stop, daemon=True)
    waiting.start()
    if mode.full:
        doomed = runners["killed"]
        assert wait_until(lambda: agent_command_running(doomed.marker), 150, 0.5), "the agent's sleep never started"
        doomed.proc.kill()
        doomed.proc.wait()
        result["left_by_kill"] = [p for p in processes_with(doomed.marker) if alive(p)]
        result["killed_states"] = [
            json.loads(p.read_text())
            for p in (projects["killed"].output / "conversations").glob("sleeps/*/base_state.json")
        ]
        next_run = start(runs, projects["killed"], *mode.args, "--tasks", "after", after=doomed.run_id)
        result["next"] = finished(next_run.proc)
        next_run.watch.stop()
    waiting.join(130)
    result["interrupted"], result["ctrl_c_seconds"] = stopped["done"], stopped["seconds"]
    for name, runner in runners.items():
        if name not in ("killed", "interrupted"):
            result[name] = finished(runner.proc)
        runner.watch.stop()
    result["records"] = by_task(tasks.output)
    result["seconds"] = time.monotonic() - started
    return result


@every_mode
def test_finished_task_with_exact_cost_in_its_own_workspace(batch: dict[str, Any], mode: Mode) -> None:
    r = batch["records"]["finishes"]
    assert (r["status"], r["agent_state"], r["return_code"]) == ("success", "FINISHED", 0), r["stderr"]
    assert (r["total_input_tokens"], r["total_output_tokens"]) == (2 * PROMPT_TOKENS, 2 * COMPLETION_TOKENS)
    assert r["total_cost"] == pytest.approx(2 * CALL_COST) and r["metrics_source"] == "state"
    # the record says which model and which release ran (issue 22)
    assert mode.sdk.version == mode.sdk.release
    assert (r["experiment"]["model"], r["experiment"]["openhands_version"]) == (MODEL, mode.sdk.release)
    assert r["command"][1:3] == [str(Path(__file__).parent.parent / "run_batch.py"), "--sdk-driver"]
    assert Path(r["command"][0]).name.startswith("python")  # the SDK environment's own interpreter
    assert (Path(r["workspace"]) / "made.txt").read_text() == "made\n"
    events = json.loads(Path(r["trajectory_path"]).read_text())
    assert [e["kind"] for e in events][:2] == ["SystemPromptEvent", "MessageEvent"]
    # the task's own text, as `-f` gives it to openhands.core.main (the CLI wraps it in a preamble)
    first = events[1]["llm_message"]["content"][0]["text"]
    assert first.startswith("Write a file.")
    assert batch["batch"].returncode == 1  # not every task succeeded


@every_mode
def test_each_attempt_starts_the_way_its_mode_says(batch: dict[str, Any], mode: Mode) -> None:
    """Preloaded: one server per run (its log in logs/), the runner's child, and each attempt its
    fork, showing the attempt's own marker, with far less CPU than an import. Per attempt: each
    attempt the runner's own child running the driver, and no server."""
    for name in ("batch", "interrupted"):
        runner, project = batch["runners"][name], batch["projects"][name]
        sessions = sorted(r["session_name"] for r in by_task(project.output).values())
        server_log = project.output / "logs" / f"sdk-server.{runner.run_id}.log"
        watch, pid = runner.watch, runner.proc.pid
        if mode.preloaded:
            assert server_log.is_file(), sorted(p.name for p in (project.output / "logs").iterdir())
            [server] = watch.servers(pid)
            assert sorted(f.session for f in watch.forks()) == sessions
            assert {f.ppid for f in watch.forks()} == {server.pid}
            assert [s for s in watch.seen.values() if s.role == "driver"] == [], (
                "no attempt has an interpreter of its own"
            )
        else:
            assert not server_log.exists() and watch.servers(pid) == [] and watch.forks() == []
            assert sorted(d.session for d in watch.drivers(pid)) == sessions
    if mode.preloaded:  # an import costs 7-12 s of CPU here; a forked attempt about 1 s (sampled)
        cpu = [r["cpu_seconds"] for r in batch["records"].values()]
        assert all(r["resource_source"] == "sampled" for r in batch["records"].values())
        assert max(cpu) < 4, cpu


@full_modes
def test_the_step_limit_holds(batch: dict[str, Any]) -> None:
    r = batch["records"]["loops"]
    assert (r["status"], r["agent_state"], r["return_code"]) == ("failed", "ERROR", 1), r["stderr"]
    assert r["error"] == "exit code 1: MaxIterationsReached: Agent reached maximum iterations limit (3)."
    assert r["total_input_tokens"] == 3 * PROMPT_TOKENS  # three steps, not the SDK's 500


@full_modes
def test_the_budget_per_task_holds(batch: dict[str, Any]) -> None:
    r = batch["records"]["spends"]
    assert r["status"] == "failed" and "0.007" in r["error"], r["error"]
    # stopped at the first call past the budget (by the driver or by run_batch, whichever sees it first)
    assert r["total_cost"] == pytest.approx(3 * CALL_COST)


@every_mode
def test_timeout_stops_at_once_and_keeps_the_cost(batch: dict[str, Any], mode: Mode) -> None:
    r = batch["records"]["sleeps"]
    assert r["status"] == "timeout" and r["error"] == f"timed out after {mode.timeout}s", r["stderr"]
    assert r["agent_state"] == "PAUSED", "the driver saves its state as paused after a stop"
    assert (r["total_input_tokens"], r["total_cost"]) == (PROMPT_TOKENS, pytest.approx(CALL_COST))
    assert r["elapsed_time_seconds"] < mode.timeout + 10  # not the 30 s grace period: the driver stopped itself
    assert r["return_code"] == 128 + signal.SIGINT
    assert nothing_left(r["run_id"]) == []


@every_mode
def test_ctrl_c_stops_the_driver_gracefully(batch: dict[str, Any]) -> None:
    assert batch["interrupted"].returncode == 130, batch["interrupted"].stderr
    [r] = read_jsonl(batch["projects"]["interrupted"].output / "batch_results.jsonl")
    assert (r["status"], r["agent_state"]) == ("interrupted", "PAUSED"), r["stderr"]
    assert (r["total_input_tokens"], r["total_cost"]) == (PROMPT_TOKENS, pytest.approx(CALL_COST))
    assert batch["ctrl_c_seconds"] < 20  # the driver's own stop, well inside the grace period
    assert nothing_left(r["run_id"]) == []


@full_modes
def test_a_killed_attempt_keeps_its_cost_and_the_next_run_cleans_up(batch: dict[str, Any], mode: Mode) -> None:
    assert batch["left_by_kill"], "the killed runner's driver should outlive it"
    killed = batch["runners"]["killed"]
    if mode.preloaded:  # the attempt forked by the killed run's server outlives both
        [fork] = killed.watch.forks()
        assert fork.pid in batch["left_by_kill"]
    [state] = batch["killed_states"]
    usage = state["stats"]["usage_to_metrics"]
    # saved after the first LLM call, while it ran: the V1 CLI's file says 0 here
    assert sum(m["accumulated_cost"] for m in usage.values()) == pytest.approx(CALL_COST)
    done = batch["next"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "did not finish" in done.stdout
    assert nothing_left(killed.run_id) == []


# --- preloaded: attempts side by side -------------------------------------------------------------

PARALLEL = 4
SHOW = 'RUN: echo "task={name} session=$RUN_BATCH_SESSION tmux=$TMUX_TMPDIR"; pwd; sleep 5\n'


@pytest.fixture(scope="module")
def parallel(tmp_path_factory: pytest.TempPathFactory, server: RecordingLLM, runs: Runs, sdk: Sdk) -> dict[str, Any]:
    """Preloaded, side by side: four tasks at once, each printing its marker, tmux folder and working
    folder; three attempts whose runner is SIGKILLed while they run, then the next run in its folder;
    with control groups, one task under --task-memory that prints its own groups."""
    root = tmp_path_factory.mktemp(f"parallel-{sdk.release}")
    side, doomed_project = SdkProject(root / "side", server, sdk), SdkProject(root / "killed", server, sdk)
    tag = f"side-by-side-{sdk.release}"  # the text that tells this module's requests apart
    for i in range(1, PARALLEL + 1):
        side.prompt(f"p{i}", f"Show where you are ({tag} p{i}).\n" + SHOW.format(name=f"p{i}"))
    for i in range(1, 4):
        doomed_project.prompt(f"sleeps-{i}", f"Wait ({i}).\n{WAITS.split(chr(10), 1)[1]}")
    doomed_project.prompt("after", "Say hello.\n")
    common = ("--timeout", "240", "--max-workers", str(PARALLEL))
    started = time.monotonic()
    side_run = start(runs, side, *SDK, *common, "--workspace-per-task")
    doomed = start(runs, doomed_project, *SDK, *common, "--tasks", "sleeps-1,sleeps-2,sleeps-3", quiet=True)
    limited = None
    if CGROUP_PROBLEM is None:
        grouped = SdkProject(root / "grouped", server, sdk)
        grouped.prompt("grouped", f"Show your groups ({tag} grouped).\nRUN: cat /proc/self/cgroup\n")
        limited = (grouped, start(runs, grouped, *SDK, "--timeout", "240", "--task-memory", "2G"))
    result: dict[str, Any] = {"tag": tag, "side_run": side_run, "doomed": doomed}

    def sleeping() -> int:  # the killed run's attempts whose agent's command runs, by their marker
        sessions = set()
        for pid in processes_with(doomed.marker):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep":
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                    sessions |= {e for e in environ if e.startswith(b"RUN_BATCH_SESSION=")}
        return len(sessions)

    assert wait_until(lambda: sleeping() == 3, 180, 0.5), f"the agents' sleeps never all ran ({sleeping()})"
    [doomed_server] = doomed.watch.servers(doomed.proc.pid)
    doomed.proc.kill()
    doomed.proc.wait()
    result["left_by_kill"] = [p for p in processes_with(doomed.marker) if alive(p)]
    result["server_ended"] = wait_until(lambda: not alive(doomed_server.pid), 10)
    next_run = start(runs, doomed_project, *SDK, "--tasks", "after", after=doomed.run_id)
    result["next"] = finished(next_run.proc)
    next_run.watch.stop()
    doomed.watch.stop()
    result["side"] = finished(side_run.proc)
    side_run.watch.stop()
    result["records"], result["side_output"] = by_task(side.output), side.output
    if limited is not None:
        result["grouped"] = finished(limited[1].proc)
        limited[1].watch.stop()
        result["grouped_record"] = by_task(limited[0].output)["grouped"]
    result["seconds"] = time.monotonic() - started
    return result


@each_sdk
def test_parallel_forked_attempts_each_have_their_own_environment_and_folders(parallel: dict[str, Any]) -> None:
    assert parallel["side"].returncode == 0, parallel["side"].stdout + parallel["side"].stderr
    records = parallel["records"]
    assert sorted(records) == [f"p{i}" for i in range(1, PARALLEL + 1)]
    for r in records.values():
        assert (r["status"], r["agent_state"]) == ("success", "FINISHED"), r["stderr"]
        assert r["total_cost"] == pytest.approx(2 * CALL_COST)
    forks = parallel["side_run"].watch.forks()
    assert parallel["side_run"].watch.alive_at_once.get("server-fork") == PARALLEL, "not side by side"
    assert sorted(f.session for f in forks) == sorted(r["session_name"] for r in records.values())
    # own conversation folders: conversations/<task>/<its conversation id>/, the one in its folder
    output = parallel["side_output"]
    assert len({r["session_id"] for r in records.values()}) == PARALLEL
    for name, r in records.items():
        [folder] = (output / "conversations" / name).iterdir()
        assert folder.name == r["session_id"]
        state = json.loads((folder / "base_state.json").read_text())
        assert state["id"].replace("-", "") == r["session_id"] and state["execution_status"] == "finished"
        assert Path(r["workspace"]).is_relative_to(output / "workspaces") and Path(r["workspace"]).is_dir()
    assert len({r["workspace"] for r in records.values()}) == PARALLEL  # its pwd: the other test


@each_sdk
def test_parallel_forked_attempts_each_have_their_own_llm_client(
    parallel: dict[str, Any], server: RecordingLLM
) -> None:
    """Each task's requests carry its own prompt and only its own observations (its marker, tmux
    folder and working folder, never another's), two per task, over connections of its own."""
    records = parallel["records"]
    ports: dict[str, set[int]] = {}
    for name, r in records.items():
        requests = server.of_task(f"({parallel['tag']} {name})")
        assert len(requests) == 2, f"{name}: {len(requests)} requests"  # the command, then finish
        ports[name] = {addr[1] for addr, _ in requests}
        observed = said_back(requests[1][1])
        assert f"task={name} session={r['session_name']} tmux=" in observed
        assert r["workspace"] in observed  # pwd: its own working folder
        for other_name, other in records.items():
            if other_name != name:
                assert other["session_name"] not in observed and other["workspace"] not in observed
    tmux_dirs = set()
    for name in records:
        observed = said_back(server.of_task(f"({parallel['tag']} {name})")[1][1])
        tmux_dirs.add(observed.split("tmux=", 1)[1].split("\\n", 1)[0])
    assert len(tmux_dirs) == PARALLEL, tmux_dirs
    for name, mine in ports.items():  # no connection served two tasks
        assert all(not (mine & theirs) for other, theirs in ports.items() if other != name), ports


@each_sdk
def test_forked_attempts_show_their_own_marker_in_proc(parallel: dict[str, Any]) -> None:
    """/proc/<pid>/environ of each fork, which the sweep reads, carries its own session marker (the
    server's placeholder overwritten), and the server's children are all the attempts."""
    watch, records = parallel["side_run"].watch, parallel["records"]
    [server] = watch.servers(parallel["side_run"].proc.pid)
    assert server.session == PLACEHOLDER
    forks = watch.forks()
    assert len(forks) == PARALLEL and {f.ppid for f in forks} == {server.pid}
    assert {f.session for f in forks} == {r["session_name"] for r in records.values()}


@each_sdk
def test_a_killed_runners_forked_attempts_are_cleaned_by_the_next_run(parallel: dict[str, Any]) -> None:
    doomed = parallel["doomed"]
    forks = doomed.watch.forks()
    assert len(forks) == 3
    assert {f.pid for f in forks} <= set(parallel["left_by_kill"]), "the forked attempts outlive their runner"
    assert parallel["server_ended"], "the server ends with its runner (its stdin closed)"
    done = parallel["next"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "did not finish" in done.stdout
    assert [f.pid for f in forks if alive(f.pid)] == []
    assert nothing_left(doomed.run_id) == []


@each_sdk
def test_task_memory_puts_the_forked_attempt_in_its_control_group(
    parallel: dict[str, Any], server: RecordingLLM
) -> None:
    if CGROUP_PROBLEM is not None:
        if required("cgroups"):
            pytest.fail(f"RUN_BATCH_TESTS_REQUIRE asks for control groups, but {CGROUP_PROBLEM}", pytrace=False)
        pytest.skip(f"per-task limits: {CGROUP_PROBLEM}")
    assert parallel["grouped"].returncode == 0, parallel["grouped"].stdout + parallel["grouped"].stderr
    r = parallel["grouped_record"]
    assert r["status"] == "success" and r["resource_source"] == "cgroup", r
    assert r["limits"]["memory_bytes"] == 2 << 30
    # the agent's command, started by the forked attempt, ran in the attempt's own memory group
    [_, second] = server.of_task(f"({parallel['tag']} grouped)")
    observed = said_back(second[1])
    assert f":memory:/run_batch/{r['run_id']}-" in observed and f"/{r['session_name']}" in observed, observed[:2000]
    # its CPU is the group's: a fork's, not an import's (7-12 s here)
    assert 0 < r["cpu_seconds"] < 4, r["cpu_seconds"]


# --- a --command of openhands-ai without core.main ------------------------------------------------


def test_openhands_ai_without_core_main_is_a_usage_error_naming_the_sdk_entrypoint(tmp_path: Path) -> None:
    """openhands-ai >= 1.7 has no openhands.core.main; its environment has the SDK: the usage error
    names the way that works, which does (here the SDK 1.58.2 environment, with openhands-ai 1.11.0's
    metadata added beside it, as pip would leave it)."""
    sdk = SDK_158 if SDK_158.command else SDK_121
    sdk.check()
    python = sdk.command if sdk is SDK_158 else None
    if python is None:  # the V1 CLI's program: its interpreter
        python = str(Path(str(sdk.command)).parent / "python")
    site = tmp_path / "site"
    meta = site / "openhands_ai-1.11.0.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: openhands-ai\nVersion: 1.11.0\n")
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "hello.md").write_text("Say hello.\n")
    env = {**os.environ, "PYTHONPATH": str(site), "LLM_MODEL": MODEL, "LLM_API_KEY": "sk-x"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(SCRIPT), "--prompt-dir", str(prompts), "--project-dir", str(tmp_path), *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    done = run("--command", f"{python} -m openhands.core.main", "--dry-run")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == (
        "run-batch: error: --command runs openhands-ai 1.11.0, which has no openhands.core.main (gone since "
        f"1.7); its environment has the OpenHands SDK: run it with --entrypoint sdk --command {python}"
    )
    advised = run("--entrypoint", "sdk", "--command", python, "--dry-run")
    assert advised.returncode == 0, advised.stdout + advised.stderr
    assert sdk.release in advised.stdout  # --dry-run names the SDK's release
    # the environment's Python alone (no -m): the same advice, not a run that fails at each attempt
    bare = run("--command", python, "--dry-run")
    assert bare.returncode == 2 and bare.stderr.strip() == done.stderr.strip(), bare.stdout + bare.stderr


# --- stops at the edges of the preloaded server's life ---------------------------------------------


def sdk_env(root: Path, server: ScriptedLLM, **more: str) -> dict[str, str]:
    inherited = ("LLM_", "OPENHANDS_", "RUN_BATCH", "TMUX", "LITELLM_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    (root / "home").mkdir(parents=True, exist_ok=True)
    return {
        **env,
        "HOME": str(root / "home"),
        "LLM_MODEL": MODEL,
        "LLM_API_KEY": "sk-x",
        "LLM_BASE_URL": server.base_url,
        **more,
    }


def sdk_python(sdk: Sdk) -> str:
    """The SDK environment's Python (the V1 CLI's program sits beside it)."""
    command = str(sdk.command)
    return command if Path(command).name.startswith("python") else str(Path(command).parent / "python")


@each_sdk
def test_a_stop_sent_the_moment_a_fork_is_answered_reaches_it(tmp_path: Path, server: RecordingLLM, sdk: Sdk) -> None:
    """The server answers with a fork's pid only once the fork has its own session: a SIGINT to
    that process group at once is delivered (it was lost 2 times in 5 before), and nothing is spent."""
    import run_batch as rb

    env = sdk_env(tmp_path, server, RUN_BATCH_RUN_ID="edge", RUN_BATCH_SESSION="edge-1")
    (tmp_path / "p.md").write_text("Say hello.\n")
    preloaded = rb.PreloadedSdk(sdk_python(sdk), env, tmp_path / "server.log", rb.Marker("edge", "sdk-server"), print)
    before = len(server.seen)
    try:
        assert preloaded.ready(rb.StopSignal()), preloaded.why
        files = rb.AttemptFiles.named(tmp_path, "edge")
        for log in (files.stdout_log, files.stderr_log):
            log.parent.mkdir(parents=True, exist_ok=True)
            log.touch()
        codes = []
        for _ in range(5):
            proc = preloaded.spawn(["-f", str(tmp_path / "p.md"), "--override-with-envs"], env, tmp_path, files, None)
            os.killpg(proc.pid, signal.SIGINT)  # ESRCH here was the lost stop
            codes.append(proc.wait(60))
    finally:
        preloaded.close()
    assert codes == [-signal.SIGINT] * 5 and len(server.seen) == before


@each_sdk
def test_ctrl_c_while_the_server_still_imports_starts_nothing(tmp_path: Path, server: RecordingLLM, sdk: Sdk) -> None:
    """A Ctrl-C in the seconds the server spends importing: the runner does not wait for the
    import (it took 10-14 s more before), no LLM call is made, and the task is interrupted."""
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "hello.md").write_text("Say hello.\n")
    argv = [sys.executable, str(SCRIPT), "--prompt-dir", str(prompts), "--project-dir", str(tmp_path), *SDK]
    before = len(server.seen)
    proc = subprocess.Popen(
        [*argv, "--command", str(sdk.command)],
        env=sdk_env(tmp_path, server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert wait_until(
        lambda: (
            (tmp_path / "batch_output" / "logs").is_dir()
            and any((tmp_path / "batch_output" / "logs").glob("sdk-server.*.log"))
        ),
        60,
        0.1,
    ), "the server never started"
    time.sleep(1)  # well inside its import (10 s and more)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    done = finished(proc, timeout=120)
    assert time.monotonic() - sent < 8, done.stdout + done.stderr
    assert done.returncode == 128 + signal.SIGINT, done.stdout + done.stderr
    assert len(server.seen) == before
    [record] = read_jsonl(tmp_path / "batch_output" / "batch_results.jsonl")
    assert record["status"] == "interrupted" and record["total_cost"] in (None, 0), record
    assert not [p for p in drivers_and_servers().get(record["run_id"], []) if alive(p.pid)]


STRIP_BLOCK_ACTION = """\
# Test stand-in for an SDK release without ConversationState.block_action (run_batch's private hook).
import importlib.abc, importlib.machinery, sys

class _Strip(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "openhands.sdk.conversation.state":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.ConversationState.block_action = None
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Strip())
"""


@pytest.mark.parametrize("preload", [True, False], ids=["preloaded", "per-attempt"])
def test_a_release_without_a_private_hook_is_said_once_at_start(
    tmp_path: Path, server: RecordingLLM, preload: bool
) -> None:
    """An SDK whose ConversationState has no block_action (stood in for by a sitecustomize that
    removes it after the import): in either start-up, one line says what it lacks and what is lost,
    once for the batch, and the tasks still run."""
    SDK_158.check()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(STRIP_BLOCK_ACTION)
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    for name in ("one", "two"):
        (prompts / f"{name}.md").write_text("Say hello.\n")
    argv = [sys.executable, str(SCRIPT), "--prompt-dir", str(prompts), "--project-dir", str(tmp_path), *SDK]
    argv += ["--command", str(SDK_158.command), "--max-workers", "2"] + ([] if preload else ["--no-preload"])
    done = subprocess.run(
        argv, env=sdk_env(tmp_path, server, PYTHONPATH=str(site)), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    said = "openhands-sdk 1.58.2 lacks ConversationState.block_action: a stop lets the step in flight run its action"
    assert (done.stdout + done.stderr).count(said) == 1, done.stdout + done.stderr
    assert (tmp_path / "batch_output" / "batch_run.log").read_text().count(said) == 1
