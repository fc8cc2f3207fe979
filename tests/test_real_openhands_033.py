"""End to end with the real openhands-ai 0.33.0 and its `local` runtime (tmux, a jupyter
kernelgateway, a browser check): the old generation's rules (docs/openhands.md).

Runs with the install of `bash examples/install-openhands.sh --version 0.33.0` (its wrapper
bin/openhands-core-main), or with OPENHANDS_033_PYTHON (that venv's wrapper, else its python with
the environment the wrapper would set); skips otherwise, naming the install command. No Docker
and no LLM account: the scripted OpenAI-compatible server of tests/llm_server.py on 127.0.0.1,
model `openai/gpt-4o-2024-11-20` (0.33 calls tools natively only for models it knows).

0.33 takes 47-95 s to start one task on 2 cores, so the cases run as three batches that overlap
(module fixture), and the tests look at their records:
  local   most cases, one run of run_batch (--max-workers 6 --start-delay 60, config
          max_iterations = 3). The stagger matters: 0.33 waits only about 65 s for its action
          server, and with 7 start-ups at once (load 12-16) every task died of `RetryError`. One
          start-up costs about 55 s of CPU (its browser check, jupyter, the action server's
          browser; 2026-12-07); with a start every 30 s on 2 cores the start-ups overlapped
          until every task timed out, so they are 60 s apart, with 300 s per task.
  default no file_store_path in the config: 0.33's default /tmp/openhands_file_store; started
          half a stagger after `local`
  docker  runtime docker with no daemon: only the container name run_batch removes is looked at;
          started a stagger after `default` (a 0.33 start-up too, without the browser check)
Started at once, the first three start-ups all missed the ~65 s wait on a CI machine (2026-12-07);
--retries 1 runs such an attempt again (docs/operations.md: not a reason to stop the batch).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SCRIPT, alive, processes_with, read_jsonl, required
from llm_server import COMPLETION_TOKENS, PROMPT_TOKENS, ScriptedLLM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INSTALL = "run `bash examples/install-openhands.sh --version 0.33.0` (or set OPENHANDS_033_PYTHON)"
MODEL = "openai/gpt-4o-2024-11-20"
COST_IN, COST_OUT = 0.000001, 0.000002
ONE_CALL = PROMPT_TOKENS * COST_IN + COMPLETION_TOKENS * COST_OUT
KEY = "sk-e2e-033-secret-0123456789"
USER = "rb033"  # any name but root/openhands: with those, 0.33's action server adds the user
TIMEOUT, GRACE = 300, 30  # per task: a start-up under load, then the command
WAITS = "Wait a long time.\nRUN: echo ready\nRUN: while sleep 2; do echo still waiting; done\n"
STAGGER = 60  # seconds between two start-ups in the big batch (see the module's doc)
DEFAULT_STORE = Path("/tmp/openhands_file_store")  # 0.33's file_store_path default


def find_install() -> tuple[list[str], dict[str, str], Path | None, str | None]:
    """(command, extra environment, venv, why not). Decided from files: no Python is started."""
    given = os.environ.get("OPENHANDS_033_PYTHON")
    if given:
        python = Path(given)
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        python = cache / "run_batch" / "openhands-0.33.0" / "bin" / "python"
    venv = python.parent.parent
    if not os.access(python, os.X_OK):
        return [], {}, None, f"no openhands-ai 0.33.0 at {venv}: {INSTALL}"
    if not list(venv.glob("lib/python3.*/site-packages/openhands_ai-0.33.0.dist-info")):
        return [], {}, None, f"{venv} holds no openhands-ai 0.33.0: {INSTALL}"
    wrapper = venv / "bin" / "openhands-core-main"
    if os.access(wrapper, os.X_OK):
        return [str(wrapper)], {}, venv, None
    # A venv of 0.33 without the wrapper: what the wrapper would set.
    env = {"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
    if (venv / "ms-playwright").is_dir():
        env["PLAYWRIGHT_BROWSERS_PATH"] = str(venv / "ms-playwright")
    return [str(python), "-m", "openhands.core.main"], env, venv, None


COMMAND, COMMAND_ENV, VENV, SKIP = find_install()
pytestmark.append(pytest.mark.skipif(SKIP is not None and not required("openhands-0.33"), reason=SKIP or ""))


@pytest.fixture(scope="module", autouse=True)
def openhands_033_is_there() -> None:
    if SKIP:
        pytest.fail(f"RUN_BATCH_TESTS_REQUIRE asks for openhands-ai 0.33.0, but {SKIP}", pytrace=False)


def config(root: Path, server: ScriptedLLM, core: str) -> str:
    return f"""
[core]
workspace_base = "{root / "workspace"}"
{core}
[llm]
model = "{MODEL}"
base_url = "{server.base_url}"
api_key = "{KEY}"
num_retries = 0
input_cost_per_token = {COST_IN}
output_cost_per_token = {COST_OUT}
[sandbox]
timeout = 600
"""


def start_batch(
    root: Path, server: ScriptedLLM, core: str, prompts: dict[str, str], *args: str, path_first: Path | None = None
) -> dict[str, Any]:
    """Starts run_batch on a project of its own; returns what the tests need to find its results."""
    project, prompt_dir, home = root / "project", root / "prompts", root / "home"
    for d in (project, prompt_dir, home, root / "workspace"):
        d.mkdir(parents=True)
    (project / "config.toml").write_text(config(root, server, core))
    for name, text in prompts.items():
        (prompt_dir / f"{name}.md").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUN_BATCH", "LLM_", "TMUX"))}
    env.update(COMMAND_ENV)
    env.update({"HOME": str(home), "USER": USER, "LOGNAME": USER, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    if path_first:
        env["PATH"] = f"{path_first}:{env['PATH']}"
    argv = [
        sys.executable,
        str(SCRIPT),
        "--prompt-dir",
        str(prompt_dir),
        "--project-dir",
        str(project),
        "--command",
        shlex.join(COMMAND),
        "--openhands-version",
        "0.33.0",
        *args,
    ]
    log = open(root / "run_batch.out", "w")  # noqa: SIM115 (closed when the run is collected)
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return {"proc": proc, "log": log, "root": root, "output": project / "batch_output", "started": time.monotonic()}


def collect(run: dict[str, Any], limit: float) -> dict[str, Any]:
    proc: subprocess.Popen[bytes] = run["proc"]
    try:
        proc.wait(timeout=max(1.0, limit - (time.monotonic() - run["started"])))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    run["log"].close()
    run["returncode"] = proc.returncode
    run["seconds"] = round(time.monotonic() - run["started"], 1)
    run["stdout"] = (run["root"] / "run_batch.out").read_text(errors="replace")
    results = run["output"] / "batch_results.jsonl"
    run["records"] = {r["task_name"]: r for r in read_jsonl(results)} if results.exists() else {}
    return run


def default_store_sessions() -> set[str]:
    with contextlib.suppress(OSError):
        return set(os.listdir(DEFAULT_STORE / "sessions"))
    return set()


def kernelgateways() -> set[int]:
    """Live jupyter kernelgateways started for these tests (their environment has our USER)."""
    found = set()
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if (
                entry.isdigit()
                and b"kernelgateway" in Path(f"/proc/{entry}/cmdline").read_bytes()
                and f"USER={USER}".encode() in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
                and alive(int(entry))
            ):
                found.add(int(entry))
    return found


def default_tmux_sessions() -> list[str]:
    """Sessions of 0.33's shell (`openhands-<USER>-...`) on the default tmux server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
    try:
        done = subprocess.run(
            ["tmux", "ls", "-F", "#{session_name}"], env=env, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [s for s in done.stdout.split() if s.startswith(f"openhands-{USER}-")]


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The three runs of run_batch, started one after another, and waited for."""
    server = ScriptedLLM().start()
    root = tmp_path_factory.mktemp("oh033")
    shared = root / "shared"  # where the two parallel tasks' commands write
    shared.mkdir()
    store_existed, sessions_before = DEFAULT_STORE.exists(), default_store_sessions()
    gateways_before = kernelgateways()

    def both(me: str, other: str, wait: int) -> str:  # meet the other task, then work, then write
        # The work prints every second: 0.33 hands a command that is silent for 10 s back to the
        # agent (docs/openhands.md), which would then finish while it still runs.
        s = shlex.quote(str(shared))
        return (
            f"Both at once.\nRUN: echo ready\n"
            f"RUN: touch {s}/{me}.started; for i in $(seq 180); do [ -e {s}/{other}.started ] "
            f"&& break; echo waiting $i; sleep 1; done; for i in $(seq {wait}); do echo working $i; sleep 1; done; "
            f"[ -e {s}/{other}.started ] && echo met > {s}/{me}.done; echo complete >> {s}/{me}.done\n"
        )

    fake_docker = root / "fakebin"
    fake_docker.mkdir()
    (fake_docker / "docker").write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(root / "docker.calls"))}\n')
    (fake_docker / "docker").chmod(0o755)
    # --retries 1: a start-up that misses 0.33's ~65 s wait for its action server (a loaded machine)
    # is an infrastructure failure that run_batch retries; the tests look at the last attempt.
    common = ["--grace-period", str(GRACE), "--timeout", str(TIMEOUT), "--retries", "1"]
    runs = {
        "local": start_batch(
            root / "local",
            server,
            f'runtime = "local"\nfile_store_path = "{root / "local" / "file_store"}"\nmax_iterations = 3',
            {
                "both-1": both("both-1", "both-2", 5),  # ends first: its clean-up must spare both-2's command
                "both-2": both("both-2", "both-1", 20),
                "finishes": "Say hello from the shell.\n",
                "llm-fails": "This one breaks.\nLLM: fail\n",
                "loops": "Never done.\nLLM: loop\nRUN: echo again\n",
                "sleeps": WAITS,
            },
            "--max-workers",
            "6",
            "--start-delay",
            str(STAGGER),
            *common,
        ),
    }
    # The other two start between the big batch's start-ups, not beside its first one: three 0.33
    # start-ups at once on 2 cores all missed the action server's wait on a CI machine.
    time.sleep(STAGGER / 2)
    default_store = {"sleeps-default-store": WAITS}
    runs["default"] = start_batch(root / "default", server, 'runtime = "local"', default_store, *common)
    time.sleep(STAGGER)
    runs["docker"] = start_batch(
        root / "docker", server, 'runtime = "docker"', {"in-docker": "Say hello.\n"}, *common, path_first=fake_docker
    )
    limit = TIMEOUT + GRACE + 7 * STAGGER + 100  # the last start-up (a retry) after six staggered ones
    for run in runs.values():
        collect(run, limit)
    runs["docker"]["calls"] = (root / "docker.calls").read_text() if (root / "docker.calls").exists() else ""
    new_sessions = default_store_sessions() - sessions_before
    found: dict[str, Any] = {
        **runs,
        "shared": shared,
        "left": {name: run_leftovers(run) for name, run in runs.items()},
        "new_gateways": kernelgateways() - gateways_before,
        "tmux_sessions": default_tmux_sessions(),
        "default_store_new": new_sessions,
    }
    yield found
    # Tidy: what these runs left (the tests have said so already), then 0.33's default file store.
    server.shutdown()
    for run in runs.values():
        for record in run["records"].values():
            for pid in processes_with(f"RUN_BATCH_RUN_ID={record['run_id']}"):
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
    for session in found["tmux_sessions"]:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)
    for sid in new_sessions:
        shutil.rmtree(DEFAULT_STORE / "sessions" / sid, ignore_errors=True)
    if not store_existed:  # made by these runs: gone again, unless someone else uses it meanwhile
        with contextlib.suppress(OSError):
            (DEFAULT_STORE / ".jwt_secret").unlink(missing_ok=True)
            (DEFAULT_STORE / "sessions").rmdir()
            DEFAULT_STORE.rmdir()


def run_leftovers(run: dict[str, Any]) -> dict[str, list[str]]:
    """Live processes of each run id in the run's records, as `pid command` lines."""
    left: dict[str, list[str]] = {}
    for run_id in {r["run_id"] for r in run["records"].values()}:
        for pid in processes_with(f"RUN_BATCH_RUN_ID={run_id}"):
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                left.setdefault(run_id, []).append(f"{pid} {cmd[:120]}")
    return left


def record(batches: dict[str, Any], run: str, task: str) -> dict[str, Any]:
    records: dict[str, dict[str, Any]] = batches[run]["records"]
    assert task in records, f"no record of {task}; run_batch said:\n{batches[run]['stdout'][-3000:]}"
    return records[task]


def events_of(store: Path, sid: str) -> list[dict[str, Any]]:
    folder = store / "sessions" / sid / "events"
    files = sorted(folder.glob("*.json"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
    return [json.loads(p.read_text()) for p in files]


def openhands_names(config_file: Path, names: list[str]) -> dict[str, str]:
    """What 0.33 itself makes of each session name: {name: its Docker container name}, from its own
    code: the config loaded as a run loads it (that sets the jwt secret the sid hashes), its
    generate_sid and its container name prefix."""
    assert VENV is not None
    code = (
        "import json, sys\n"
        "from openhands.core.config import load_app_config\n"
        "from openhands.core.setup import generate_sid\n"
        "from openhands.runtime.impl.docker.docker_runtime import CONTAINER_NAME_PREFIX\n"
        "c = load_app_config(config_file=sys.argv[1])\n"
        "print(json.dumps({n: CONTAINER_NAME_PREFIX + generate_sid(c, n) for n in sys.argv[2:]}))\n"
    )
    store = config_file.parent / "names_file_store"  # where it keeps the jwt secret
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "FILE_STORE_PATH": str(store)}
    done = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", code, str(config_file), *names],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    made: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return made


def test_finished_task_has_exact_cost_and_tokens(batches: dict[str, Any]) -> None:
    r = record(batches, "local", "finishes")
    assert (r["status"], r["agent_state"], r["return_code"]) == ("success", "FINISHED", 0), r["error"]
    assert (r["total_input_tokens"], r["total_output_tokens"]) == (2 * PROMPT_TOKENS, 2 * COMPLETION_TOKENS)
    assert r["total_cost"] == pytest.approx(2 * ONE_CALL)
    assert r["metrics_source"] == "trajectory"
    # the record says which model and which release ran (issue 22)
    assert (r["experiment"]["model"], r["experiment"]["openhands_version"]) == (MODEL, "0.33.0")
    trajectory = json.loads(Path(r["trajectory_path"]).read_text())
    last = [e["llm_metrics"] for e in trajectory if e.get("llm_metrics")][-1]
    assert r["total_cost"] == pytest.approx(last["accumulated_cost"])
    assert r["total_input_tokens"] == last["accumulated_token_usage"]["prompt_tokens"]


def test_llm_error_is_failed(batches: dict[str, Any]) -> None:
    r = record(batches, "local", "llm-fails")
    assert (r["status"], r["agent_state"], r["return_code"]) == ("failed", "ERROR", 0), r["error"]
    assert r["error"].startswith("STATUS$ERROR_LLM_"), r["error"]


def test_timeout_during_a_command_keeps_its_cost(batches: dict[str, Any]) -> None:
    r = record(batches, "local", "sleeps")
    assert r["status"] == "timeout", r["error"]
    ran = [e for e in events_of(batches["local"]["root"] / "file_store", r["session_id"]) if e.get("action") == "run"]
    # 0.33 hands a silent command back after 10 s, and a fresh pane's first command can come back
    # empty at once (docs/openhands.md): a harmless first command, then one that prints as it runs.
    assert (
        ran and ran[-1]["args"]["command"] == "while sleep 2; do echo still waiting; done"
    )  # the timeout came during the command
    assert r["elapsed_time_seconds"] < TIMEOUT + GRACE + 20  # its command was not waited for
    # 0.33 saves no trajectory after SIGINT: the money comes from the session's events.
    assert r["metrics_source"] == "events"
    # two calls answered: `echo ready`, then the waiting command
    assert (r["total_input_tokens"], r["total_output_tokens"]) == (2 * PROMPT_TOKENS, 2 * COMPLETION_TOKENS)
    assert r["total_cost"] == pytest.approx(2 * ONE_CALL)


def test_nothing_of_a_run_is_left_running(batches: dict[str, Any]) -> None:
    """No process with a run's marker (OpenHands, its action server, the jupyter kernelgateway 0.33
    leaves behind, the waiting command, the attempt's tmux server), and no session on the default tmux server."""
    assert batches["left"] == {"local": {}, "default": {}, "docker": {}}
    assert batches["new_gateways"] == set(), "a jupyter kernelgateway outlived the runs"
    assert batches["tmux_sessions"] == [], "0.33's shell went to the default tmux server"


def test_two_tasks_in_parallel_both_run_their_commands_to_the_end(batches: dict[str, Any]) -> None:
    for task in ("both-1", "both-2"):
        r = record(batches, "local", task)
        assert (r["status"], r["agent_state"]) == ("success", "FINISHED"), r["error"]
        done = batches["shared"] / f"{task}.done"
        assert done.exists(), f"{task}'s command did not run to its end"
        assert done.read_text() == "met\ncomplete\n"  # it ran while the other task's command did


def test_config_max_iterations_is_honoured(batches: dict[str, Any]) -> None:
    r = record(batches, "local", "loops")
    assert (r["status"], r["agent_state"]) == ("failed", "ERROR"), r["error"]
    assert "maximum iteration" in r["error"] and "Current iteration: 3, max iteration: 3" in r["error"], r["error"]
    # At most 3 LLM calls, not 250: seen 3, and 2 when 0.33 counted its recall step as one.
    assert r["total_input_tokens"] in (2 * PROMPT_TOKENS, 3 * PROMPT_TOKENS), r["total_input_tokens"]


def test_session_id_names_the_session_folder(batches: dict[str, Any]) -> None:
    store = batches["local"]["root"] / "file_store"
    records = batches["local"]["records"]
    assert records
    config_file = batches["local"]["root"] / "project" / "config.toml"
    names = openhands_names(config_file, [r["session_name"] for r in records.values()])
    for r in records.values():
        assert (store / "sessions" / r["session_id"] / "events").is_dir(), r["task_name"]
        assert names[r["session_name"]] == f"openhands-runtime-{r['session_id']}"


def test_default_file_store_is_where_a_killed_tasks_cost_is_found(batches: dict[str, Any]) -> None:
    r = record(batches, "default", "sleeps-default-store")
    assert r["session_id"] in batches["default_store_new"]
    assert (DEFAULT_STORE / "sessions" / r["session_id"] / "events").is_dir()
    assert r["status"] == "timeout", r["error"]
    assert (r["metrics_source"], r["total_input_tokens"]) == ("events", 2 * PROMPT_TOKENS)
    assert r["total_cost"] == pytest.approx(2 * ONE_CALL)


def test_docker_container_name_is_the_one_033_makes(batches: dict[str, Any]) -> None:
    r = record(batches, "docker", "in-docker")
    config_file = batches["docker"]["root"] / "project" / "config.toml"
    container = openhands_names(config_file, [r["session_name"]])[r["session_name"]]
    assert container == f"openhands-runtime-{r['session_id']}"
    assert f"rm -f {container}" in batches["docker"]["calls"].splitlines(), batches["docker"]["calls"]


def test_no_secret_in_the_output_folders(batches: dict[str, Any]) -> None:
    for run in ("local", "default", "docker"):
        for path in batches[run]["output"].rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path
