"""What the test files share: where things are, the real programs' whereabouts, a throw-away
OpenHands "checkout" with prompts, config and the stand-in (the `ws` fixture), records built in
process, the scripted LLM server (the `server` fixture), and small readers of processes and of
what a run wrote. Nothing here starts a process until a fixture is used."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from llm_server import ScriptedLLM

import run_batch as rb

# --- where things are -----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "run_batch.py"
STANDIN = Path(__file__).resolve().parent / "fake_openhands.py"
SECRET = "sk-test-SECRET-0123456789abcdef"
ENV_SECRET = "env-secret-token-9876543210"
COST_IN, COST_OUT = 0.000001, 0.000002  # per token: one stand-in LLM call costs 0.0011


# --- the real programs ----------------------------------------------------------------------------


def openhands_python() -> str | None:
    """The interpreter of a real OpenHands (openhands-ai 1.6.0) for the end-to-end tests:
    OPENHANDS_PYTHON when set, else the one `bash examples/install-openhands.sh` installs (and
    `bash examples/run-examples.sh` through it) in its default place, if it is there; else None.
    Nothing is started: looking costs no OpenHands import."""
    if os.environ.get("OPENHANDS_PYTHON"):
        return os.environ["OPENHANDS_PYTHON"]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    python = cache / "run_batch" / "openhands-1.6.0" / "bin" / "python"
    return str(python) if os.access(python, os.X_OK) else None


def required(part: str) -> bool:
    """Whether a run asks that the tests of a real part fail rather than skip when it is missing:
    RUN_BATCH_TESTS_REQUIRE lists the parts (openhands, cli, sdk-1.58, openhands-0.33, slurm,
    chromium, cgroups, or all), as .ci/run does once it has installed them; there a skip would hide
    a broken install path.
    RUN_BATCH_TESTS_REQUIRE_OPENHANDS and RUN_BATCH_TESTS_REQUIRE_CHROMIUM are the older spellings."""
    listed = {p.strip() for p in os.environ.get("RUN_BATCH_TESTS_REQUIRE", "").split(",") if p.strip()}
    older = os.environ.get(f"RUN_BATCH_TESTS_REQUIRE_{part.upper()}")
    return "all" in listed or part in listed or bool(older)


# --- a throw-away OpenHands checkout: the `ws` fixture --------------------------------------------


@dataclass
class Workspace:
    root: Path
    project: Path
    prompts: Path
    records: Path  # where the stand-in writes what it was started with
    file_store: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def output(self) -> Path:
        return self.project / "batch_output"

    @property
    def results(self) -> Path:
        return self.output / "batch_results.jsonl"

    def prompt(self, name: str, text: str = "Say hello.\n") -> Path:
        path = self.prompts / f"{name}.md"
        path.write_text(text)
        return path

    def command(self, *args: str, standin: Path = STANDIN) -> list[str]:
        return [
            sys.executable,
            str(SCRIPT),
            "--prompt-dir",
            str(self.prompts),
            "--project-dir",
            str(self.project),
            "--command",
            f"{shlex.quote(sys.executable)} {shlex.quote(str(standin))}",
            *args,
        ]

    def run(self, *args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            **kw,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )

    def launches(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.records.glob("*.json"))]

    def records_of(self, task: str) -> list[dict[str, Any]]:
        return [r for r in read_jsonl(self.results) if r["task_name"] == task]


def make_workspace(root: Path) -> Workspace:
    """The checkout in root: an OpenHands project folder whose config.toml names the scripted model,
    the key (SECRET) and the prices, a prompt folder, and an environment with a token (ENV_SECRET)
    and a HOME of its own. The `ws` fixture gives one per test; a module-scoped fixture calls this
    with a folder of its own."""
    project = root / "openhands"
    prompts = root / "prompts"
    records = root / "launches"
    file_store = root / "file_store"
    for d in (project, prompts, records):
        d.mkdir(parents=True)
    (project / "config.toml").write_text(
        "[core]\n"
        'runtime = "cli"\n'
        f'file_store_path = "{file_store}"\n'
        f'workspace_base = "{root / "workspace"}"\n'
        "[llm]\n"
        'model = "openai/scripted"\n'
        f'api_key = "{SECRET}"\n'
        f"input_cost_per_token = {COST_IN}\n"
        f"output_cost_per_token = {COST_OUT}\n"
        "[llm.cheap]\n"
        'model = "openai/cheap"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUN_BATCH", "STANDIN"))}
    env.update(
        {
            "STANDIN_RECORD_DIR": str(records),
            "HOME": str(root / "home"),
            "GITHUB_TOKEN": ENV_SECRET,
            "NO_COLOR": "1",
        }
    )
    return Workspace(root, project, prompts, records, file_store, env)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A throw-away checkout per test (make_workspace in tmp_path)."""
    return make_workspace(tmp_path)


# --- records built in process (no run, no file) ---------------------------------------------------


def task(name: str, sha: str | None = None, problem: str | None = None) -> rb.Task:
    """A task of prompt /p/<name>.md (never read) whose prompt hash is sha-<name> unless given."""
    return rb.Task(name, Path(f"/p/{name}.md"), name, sha if sha is not None else f"sha-{name}", problem)


# What every record below says produced it.
EXPERIMENT = rb.Experiment("core-main", "openhands-ai", "1.6.0", "openai/m", "config [llm]", None, "0" * 64)


def record(t: rb.Task | str, status: str = "success", **changes: Any) -> rb.AttemptRecord:
    """The record of attempt 1 of t in run1, with status and any field changed; an evaluation may
    be given as the dict a results file holds."""
    t = task(t) if isinstance(t, str) else t
    blank = rb.Attempt(t, 1, 1, "run1", f"{t.name}-1", EXPERIMENT).record(f"{t.name}-1-sid")
    if isinstance(changes.get("evaluation"), dict):  # written as the record holds it
        changes["evaluation"] = rb.Evaluation.from_json({"elapsed_seconds": 1.0, **changes["evaluation"]})
    return dataclasses.replace(blank, status=status, **changes)


# --- the scripted LLM: the `server` fixture -------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLM]:
    """The scripted OpenAI-compatible server of tests/llm_server.py on 127.0.0.1, one per module
    that asks for it (test_real_openhands_sdk.py overrides it with its recording subclass)."""
    llm = ScriptedLLM().start()
    yield llm
    llm.shutdown()


# --- processes ------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while pid runs; a zombie (finished, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] not in (b"Z", b"X")


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment contains marker (e.g. RUN_BATCH_RUN_ID=...)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in environ and alive(int(entry)):
            found.append(int(entry))
    return found


def wait_until(predicate: Any, timeout: float = 30.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def agent_command_running(marker: str) -> bool:
    """True while the agent's long command runs: a process with marker in its environment (a run's
    RUN_BATCH_RUN_ID=...) whose program is sleep."""
    for pid in processes_with(marker):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep":
                return True
        except OSError:
            pass
    return False


# --- reading what a run wrote ---------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summary(ws: Workspace) -> dict[str, Any]:
    """The output folder's summary.json."""
    data: dict[str, Any] = json.loads((ws.output / "summary.json").read_text())
    return data


def gradings(ws: Workspace) -> list[dict[str, Any]]:
    """What a test's grader saw, one dict per grading: the graders of test_evaluation.py and
    test_hardening_round3.py write it to $GRADER_SPY/<pid>.json, with GRADER_SPY = ws.root / "spy"."""
    return [json.loads(p.read_text()) for p in sorted((ws.root / "spy").glob("*.json"))]


def when(stamp: str) -> float:
    """A record's ISO 8601 time (started_at, finished_at) as a Unix time."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
