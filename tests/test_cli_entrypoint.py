"""The runner with the V1 CLI entrypoint (`openhands --headless`, issue 11), end to end against
its stand-in, tests/fake_openhands_cli.py: argv, environment, outcome from the conversation's
base_state.json and events, stopping (tmux included), usage errors and the dry run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import COST_IN, COST_OUT, SECRET, Workspace, alive, processes_with, read_jsonl, wait_until

pytestmark = pytest.mark.e2e  # the runner as a process, against the V1 CLI stand-in

CLI = Path(__file__).resolve().parent / "fake_openhands_cli.py"
ENV_KEY = "sk-env-KEY-from-LLM_API_KEY-0246813579"
# What one stand-in LLM call costs and counts (tests/fake_openhands_cli.py): 1000 prompt and 50
# completion tokens; an agent call reads 100 cached tokens, a condenser call writes 10.
CALL = 1000 * COST_IN + 50 * COST_OUT  # 0.0011


def expected(agent_calls: int, condenser_calls: int) -> dict[str, Any]:
    calls = agent_calls + condenser_calls
    return {
        "total_cost": pytest.approx(calls * CALL, rel=1e-9, abs=1e-12),
        "total_input_tokens": 1000 * calls,
        "total_output_tokens": 50 * calls,
        "cache_read_tokens": 100 * agent_calls,
        "cache_write_tokens": 10 * condenser_calls,
    }


def money(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: record[k]
        for k in ("total_cost", "total_input_tokens", "total_output_tokens", "cache_read_tokens", "cache_write_tokens")
    }


@pytest.fixture
def cws(ws: Workspace) -> Any:
    """The workspace for the V1 CLI: the user's settings in ~/.openhands/agent_settings.json (with
    the key and the prices), no LLM_*, OPENHANDS_*, TMUX* or LITELLM_* inherited from the shell.
    Afterwards ends whatever the stand-ins of this test left (tmux servers, marked processes)."""
    for name in list(ws.env):
        if name.startswith(("LLM_", "OPENHANDS_", "TMUX", "LITELLM_")):
            del ws.env[name]
    write_settings(Path(ws.env["HOME"]) / ".openhands")
    yield ws
    for launch in ws.launches():
        pids = [launch.get("tmux_server_pid"), launch.get("pane_pid")]
        run_id = launch["env"].get("RUN_BATCH_RUN_ID")
        pids += processes_with(f"RUN_BATCH_RUN_ID={run_id}") if run_id else []
        for pid in pids:
            if pid and alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def write_settings(folder: Path, key: str = SECRET) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "agent_settings.json"
    path.write_text(
        json.dumps(
            {
                "llm": {
                    "model": "openai/scripted",
                    "api_key": key,
                    "base_url": "http://127.0.0.1:9/v1",
                    "num_retries": 0,
                    "input_cost_per_token": COST_IN,
                    "output_cost_per_token": COST_OUT,
                },
                "tools": [{"name": "terminal"}],
                "condenser": None,
            }
        )
    )
    return path


def cli_command(ws: Workspace, *args: str) -> list[str]:
    return ws.command("--entrypoint", "cli", *args, standin=CLI)


def run(ws: Workspace, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(ws, *args), env=ws.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def start(ws: Workspace, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(ws, *args),
        env=ws.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def launch_of(ws: Workspace, task: str) -> dict[str, Any]:
    [launch] = [l for l in ws.launches() if Path(l["argv"][l["argv"].index("-f") + 1]).stem == task]
    return launch


def trajectory(ws: Workspace, record: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(record["trajectory_path"])
    events = json.loads((path if path.is_absolute() else ws.output / path).read_text())
    assert isinstance(events, list)
    return events


def conversation_events(launch: dict[str, Any]) -> list[dict[str, Any]]:
    folder = Path(launch["conversations_dir"]) / launch["conversation_id"] / "events"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("event-*.json"))]


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def tmux_sessions(launch: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """`tmux -L openhands ls` on the attempt's own tmux server (its TMUX_TMPDIR)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
    env["TMUX_TMPDIR"] = launch["env"]["TMUX_TMPDIR"]
    return subprocess.run(["tmux", "-L", "openhands", "ls"], env=env, capture_output=True, text=True, timeout=10)


def assert_nothing_left(launch: dict[str, Any]) -> None:
    run_id = launch["env"]["RUN_BATCH_RUN_ID"]
    assert processes_with(f"RUN_BATCH_RUN_ID={run_id}") == []
    assert not alive(launch["tmux_server_pid"]) and not alive(launch["pane_pid"])
    listed = tmux_sessions(launch)
    assert listed.returncode != 0 and "openhands-pool" not in listed.stdout


def wait_for_command(ws: Workspace, task: str) -> tuple[dict[str, Any], int]:
    """The launch of task once its agent's command runs: a child of the tmux pane's shell."""
    assert wait_until(lambda: any("pane_pid" in l for l in ws.launches()), timeout=60)
    launch = launch_of(ws, task)
    assert wait_until(lambda: children(launch["pane_pid"]) != [], timeout=30)
    [command] = children(launch["pane_pid"])
    return launch, command


# --- argv, environment, settings ----------------------------------------------------------------


def test_argv_environment_and_working_directory(cws: Workspace) -> None:
    prompt = cws.prompt("hello", "Say hello.\nRUN: echo greetings\n")
    done = run(cws, "--", "--json")
    assert done.returncode == 0, done.stderr
    launch = launch_of(cws, "hello")
    argv = launch["argv"]
    assert Path(argv[0]) == CLI
    f = argv.index("-f")
    assert argv[f + 1] == str(prompt.absolute()) and Path(argv[f + 1]).is_absolute()
    assert argv[-1] == "--json"  # the words after `--`, last
    rest = argv[1:f] + argv[f + 2 : -1]
    assert sorted(rest) == ["--always-approve", "--headless"]  # no --override-with-envs: no LLM_MODEL
    assert launch["cwd"] == str(cws.project)
    env = launch["env"]
    conversations = Path(env["OPENHANDS_CONVERSATIONS_DIR"])
    assert conversations.parent == cws.output / "conversations" and conversations.name.startswith("hello")
    assert env["TMUX_TMPDIR"]  # a tmux server of the attempt's own
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert env["RUN_BATCH_RUN_ID"] and env["RUN_BATCH_SESSION"]
    assert "OPENHANDS_PERSISTENCE_DIR" not in env  # the user's settings, where the user keeps them
    assert launch["settings_source"] == "file"
    assert launch["persistence_dir"] == str(Path(cws.env["HOME"]) / ".openhands")
    assert launch["tmux_tmpdir"] == env["TMUX_TMPDIR"]


def test_override_with_envs_only_when_llm_model_is_set(cws: Workspace) -> None:
    (Path(cws.env["HOME"]) / ".openhands" / "agent_settings.json").unlink()  # the environment alone
    cws.prompt("envonly")
    cws.env.update(
        {
            "LLM_MODEL": "openai/from-env",
            "LLM_API_KEY": ENV_KEY,
            "STANDIN_COST_IN": str(COST_IN),
            "STANDIN_COST_OUT": str(COST_OUT),
        }
    )
    done = run(cws)
    assert done.returncode == 0, done.stderr
    launch = launch_of(cws, "envonly")
    assert "--override-with-envs" in launch["argv"] and launch["settings_source"] == "env"
    [record] = read_jsonl(cws.results)
    assert record["status"] == "success" and money(record) == expected(2, 1)
    assert not any(ENV_KEY in a for a in launch["argv"])  # the key stays in the environment


def test_the_users_persistence_dir_and_litellm_setting_are_kept(cws: Workspace) -> None:
    elsewhere = cws.root / "my-openhands"
    write_settings(elsewhere)
    (Path(cws.env["HOME"]) / ".openhands" / "agent_settings.json").unlink()
    cws.env.update({"OPENHANDS_PERSISTENCE_DIR": str(elsewhere), "LITELLM_LOCAL_MODEL_COST_MAP": "False"})
    cws.prompt("mine")
    done = run(cws)
    assert done.returncode == 0, done.stderr
    launch = launch_of(cws, "mine")
    assert launch["env"]["OPENHANDS_PERSISTENCE_DIR"] == str(elsewhere) and launch["settings_source"] == "file"
    assert launch["env"]["LITELLM_LOCAL_MODEL_COST_MAP"] == "False"
    # conversations still go to the output folder, not to <persistence dir>/conversations
    assert not (elsewhere / "conversations").exists()
    assert Path(launch["conversations_dir"]).is_relative_to(cws.output)


def test_every_attempt_of_every_task_gets_its_own_conversations_and_tmux_folders(cws: Workspace) -> None:
    cws.prompt("a")
    cws.prompt("b")
    assert run(cws).returncode == 0
    assert run(cws, "--rerun").returncode == 0
    launches, records = cws.launches(), read_jsonl(cws.results)
    assert len(launches) == 4 and len(records) == 4
    folders = [Path(l["env"]["OPENHANDS_CONVERSATIONS_DIR"]) for l in launches]
    tmux_dirs = [l["env"]["TMUX_TMPDIR"] for l in launches]
    assert len(set(folders)) == 4 and len(set(tmux_dirs)) == 4
    assert all(f.parent == cws.output / "conversations" for f in folders)
    for launch in launches:  # each folder holds that attempt's one conversation
        own = [d.name for d in Path(launch["env"]["OPENHANDS_CONVERSATIONS_DIR"]).iterdir()]
        assert own == [launch["conversation_id"]]
    assert sorted(r["session_id"] for r in records) == sorted(l["conversation_id"] for l in launches)
    assert len({r["trajectory_path"] for r in records}) == 4


def test_no_settings_key_in_the_output_folder_argv_or_console(cws: Workspace) -> None:
    cws.prompt("fine")
    cws.prompt("broken", "STANDIN: llm-error\n")
    done = run(cws)
    assert done.returncode == 1
    dry = run(cws, "--dry-run", "--rerun", "--format", "json")
    assert dry.returncode == 0, dry.stderr
    files = [p for p in cws.output.rglob("*") if p.is_file()]
    assert any(p.name == "base_state.json" for p in files)  # the conversations are in there
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
        assert path.name != "agent_settings.json"
    for launch in cws.launches():
        assert not any(SECRET in a for a in launch["argv"])
        assert not any(SECRET in v for v in launch["env"].values())
    for text in (done.stdout, done.stderr, dry.stdout, dry.stderr):
        assert SECRET not in text


# --- outcome: state, cost, tokens, session id, trajectory -----------------------------------------


def test_finished_task_has_exact_cost_summed_over_usage_ids_and_the_conversation(cws: Workspace) -> None:
    cws.prompt("done", "RUN: echo the-output\n")
    done = run(cws)
    assert done.returncode == 0, done.stderr
    [record] = read_jsonl(cws.results)
    launch = launch_of(cws, "done")
    assert record["status"] == "success" and record["agent_state"] == "FINISHED" and record["error"] is None
    assert record["metrics_source"] == "state"
    assert money(record) == expected(agent_calls=2, condenser_calls=1)  # agent + condenser
    assert record["session_id"] == launch["conversation_id"]
    assert len(record["session_id"]) == 32 and int(record["session_id"], 16) >= 0
    saved = Path(record["trajectory_path"])
    assert (saved if saved.is_absolute() else cws.output / saved).parent == cws.output / "trajectories"
    events = trajectory(cws, record)
    assert events == conversation_events(launch)  # every event, in order
    assert [e["kind"] for e in events] == [
        "SystemPromptEvent",
        "MessageEvent",
        "ActionEvent",
        "ObservationEvent",
        "ActionEvent",
        "ObservationEvent",
    ]
    assert [e.get("tool_name") for e in events if e["kind"] == "ActionEvent"] == ["terminal", "finish"]
    assert "the-output" in json.dumps(events[3])


def test_llm_error_is_failed_with_the_error_events_code(cws: Workspace) -> None:
    cws.prompt("outage", "STANDIN: llm-error\n")
    done = run(cws)
    assert done.returncode == 1
    [record] = read_jsonl(cws.results)
    assert record["status"] == "failed" and record["agent_state"] == "ERROR" and record["return_code"] == 0
    assert record["error"].startswith("LLMServiceUnavailableError: ")
    assert "scripted failure" in record["error"]
    assert record["metrics_source"] == "state" and record["total_cost"] == 0  # an end state: 0 is known
    assert [e["kind"] for e in trajectory(cws, record)][-1] == "ConversationErrorEvent"


def test_stuck_is_failed(cws: Workspace) -> None:
    cws.prompt("loop", "STANDIN: stuck\n")
    done = run(cws)
    assert done.returncode == 1
    [record] = read_jsonl(cws.results)
    assert record["status"] == "failed" and record["agent_state"] == "STUCK"
    assert "stuck" in record["error"].lower()
    assert money(record) == expected(agent_calls=4, condenser_calls=1)


def test_no_settings_is_an_error_in_openhands_own_words(cws: Workspace) -> None:
    (Path(cws.env["HOME"]) / ".openhands" / "agent_settings.json").unlink()
    cws.prompt("unset")
    done = run(cws)
    assert done.returncode == 1
    [record] = read_jsonl(cws.results)
    assert launch_of(cws, "unset")["settings_source"] is None  # it did start, and said why it stopped
    assert record["status"] == "error" and record["return_code"] == 0
    assert "Headless mode requires existing settings" in record["error"]
    assert "\x1b" not in record["error"]
    assert record["total_cost"] is None and record["trajectory_path"] is None
    assert record["agent_state"] is None


# --- stopping ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_timeout_during_a_command_stops_fast_saves_the_state_and_leaves_no_tmux(cws: Workspace) -> None:
    cws.prompt("sleepy", "RUN: sleep 300\n")
    runner = start(cws, "--timeout", "4", "--grace-period", "30")
    launch, command = wait_for_command(cws, "sleepy")
    _out, err = runner.communicate(timeout=90)
    assert runner.returncode == 1, err
    [record] = read_jsonl(cws.results)
    assert record["status"] == "timeout"
    assert record["elapsed_time_seconds"] < 4 + 6  # the command was ended: no wait for the grace period
    assert record["agent_state"] == "ERROR"  # OpenHands stopped by itself and saved its state
    assert record["metrics_source"] == "state" and money(record) == expected(agent_calls=1, condenser_calls=0)
    assert not alive(command)
    launch = launch_of(cws, "sleepy")
    assert launch.get("pane_shell_alive_at_command_end") is True  # the command was killed, not the pane's shell
    assert_nothing_left(launch)


@pytest.mark.slow
def test_timeout_of_a_wedged_run_kills_its_tmux_server_and_leaves_cost_unknown(cws: Workspace) -> None:
    cws.prompt("wedged", "STANDIN: hang\n")
    done = run(cws, "--timeout", "3", "--grace-period", "2")
    assert done.returncode == 1, done.stderr
    [record] = read_jsonl(cws.results)
    launch = launch_of(cws, "wedged")
    assert record["status"] == "timeout"
    assert record["agent_state"] == "RUNNING"  # base_state.json as a killed V1 CLI leaves it
    assert record["total_cost"] is None and record["total_input_tokens"] is None  # unknown, never 0
    assert record["total_output_tokens"] is None
    assert record["session_id"] == launch["conversation_id"]
    assert_nothing_left(launch)  # the stand-in never closed its session: the runner ended the server


@pytest.mark.slow
def test_ctrl_c_interrupts_the_task_and_exits_130(cws: Workspace) -> None:
    cws.prompt("a-long", "RUN: sleep 300\n")
    cws.prompt("b-next")
    runner = start(cws, "--grace-period", "30")
    _launch, command = wait_for_command(cws, "a-long")
    t0 = time.monotonic()
    runner.send_signal(signal.SIGINT)
    _out, err = runner.communicate(timeout=90)
    assert runner.returncode == 130, err
    assert time.monotonic() - t0 < 15  # the running command was ended, no grace period waited out
    [record] = read_jsonl(cws.results)
    assert record["task_name"] == "a-long" and record["status"] == "interrupted"
    assert record["agent_state"] == "ERROR" and money(record) == expected(agent_calls=1, condenser_calls=0)
    assert len(cws.launches()) == 1  # b-next never started
    assert not alive(command)
    assert_nothing_left(launch_of(cws, "a-long"))


@pytest.mark.slow
def test_two_tasks_in_parallel_keep_their_own_commands_and_cost(cws: Workspace) -> None:
    cws.prompt("one", "RUN: sleep 2; echo alpha-$((40+2))\n")
    cws.prompt("two", "STANDIN: stuck\nRUN: sleep 0.6; echo beta-$((50+8))\n")
    done = run(cws, "--max-workers", "2")
    assert done.returncode == 1, done.stderr  # `two` is stuck
    one, two = cws.records_of("one")[0], cws.records_of("two")[0]
    at = datetime.fromisoformat
    assert max(at(one["started_at"]), at(two["started_at"])) < min(at(one["finished_at"]), at(two["finished_at"]))
    assert one["status"] == "success" and money(one) == expected(agent_calls=2, condenser_calls=1)
    assert two["status"] == "failed" and two["agent_state"] == "STUCK"
    assert money(two) == expected(agent_calls=4, condenser_calls=1)
    text_one, text_two = json.dumps(trajectory(cws, one)), json.dumps(trajectory(cws, two))
    assert "alpha-42" in text_one and "beta-58" not in text_one
    assert "beta-58" in text_two and "alpha-42" not in text_two
    l1, l2 = launch_of(cws, "one"), launch_of(cws, "two")
    assert l1["env"]["TMUX_TMPDIR"] != l2["env"]["TMUX_TMPDIR"]
    assert l1["tmux_server_pid"] != l2["tmux_server_pid"]
    assert one["session_id"] == l1["conversation_id"] and two["session_id"] == l2["conversation_id"]


# --- choosing the entrypoint, usage errors, dry run ----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--max-iterations", "5"],
        ["--agent-cls", "CodeActAgent"],
        ["--llm-config", "cheap"],
        ["--runtime", "docker"],
        ["--max-budget-per-task", "1.5"],
        ["--base-config", "config.toml"],
    ],
)
def test_options_the_cli_cannot_honour_are_usage_errors(cws: Workspace, args: list[str]) -> None:
    cws.prompt("a")
    if args[0] == "--base-config":
        args = [args[0], str(cws.project / args[1])]  # an existing, valid config
    done = run(cws, *args, timeout=30)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and args[0] in lines[0] and "Traceback" not in done.stderr
    assert not cws.output.exists() and cws.launches() == []


def test_dry_run_json_reports_the_cli_entrypoint(cws: Workspace) -> None:
    cws.prompt("a")
    done = run(cws, "--dry-run", "--format", "json", "--openhands-version", "1.16.0", "--runtime", "local")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["openhands"]["entrypoint"] == "cli" and plan["openhands"]["version"] == "1.16.0"
    assert isinstance(plan["openhands"]["rules"], dict)
    assert not cws.output.exists() and cws.launches() == []


def test_a_program_named_openhands_is_the_cli_without_being_told(cws: Workspace) -> None:
    program = cws.root / "bin" / "openhands"
    program.parent.mkdir()
    program.write_text(
        f"#!{sys.executable}\nimport os, sys\nos.execv(sys.executable, [sys.executable, {str(CLI)!r}, *sys.argv[1:]])\n"
    )
    program.chmod(0o755)
    cws.prompt("auto")
    command = cws.command("--command", str(program), standin=CLI)  # the later --command wins
    plan = subprocess.run(
        [*command, "--dry-run", "--format", "json"], env=cws.env, capture_output=True, text=True, timeout=60
    )
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["openhands"]["entrypoint"] == "cli"
    done = subprocess.run(command, env=cws.env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    [record] = read_jsonl(cws.results)
    assert record["status"] == "success" and record["metrics_source"] == "state"
    assert launch_of(cws, "auto")["argv"][1:3] == ["--headless", "--always-approve"]
