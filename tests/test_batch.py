"""The runner end to end against the OpenHands stand-in: real processes, files, signals, timeouts."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ENV_SECRET, SECRET, Workspace, alive, processes_with, read_jsonl

RECORD_FIELDS = {
    "task_name",
    "prompt_file",
    "status",
    "return_code",
    "elapsed_time_seconds",
    "stdout",
    "stderr",
    "total_cost",
    "total_input_tokens",
    "total_output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "metrics_source",
    "agent_state",
    "error",
    "trajectory_path",
    "attempt",
    "started_at",
    "finished_at",
    "session_name",
    "session_id",
    "stdout_log",
    "stderr_log",
    "command",
    "prompt_sha256",
    "run_id",
}

pytestmark = pytest.mark.e2e  # the runner as a process, against the OpenHands stand-in


# --- 1. discovery ---------------------------------------------------------------------------------


def test_discovers_md_prompts_in_sorted_order_and_ignores_other_files(ws: Workspace) -> None:
    for name in ("zeta", "alpha", "Mid"):
        ws.prompt(name)
    (ws.prompts / "notes.txt").write_text("not a task")
    (ws.prompts / "folder.md").mkdir()
    done = ws.run()
    assert done.returncode == 0, done.stderr
    assert [r["task_name"] for r in read_jsonl(ws.results)] == ["Mid", "alpha", "zeta"]
    assert all(r["status"] == "success" for r in read_jsonl(ws.results))


def test_empty_prompt_is_an_error_record_and_never_launched(ws: Workspace) -> None:
    ws.prompt("blank", "  \n\t\n")
    ws.prompt("fine")
    done = ws.run()
    assert done.returncode == 1
    blank = ws.records_of("blank")[0]
    assert blank["status"] == "error" and blank["error"] == "prompt is empty"
    assert blank["return_code"] is None and blank["command"] is None
    assert [Path(l["argv"][l["argv"].index("-f") + 1]).name for l in ws.launches()] == ["fine.md"]


# --- 2. configuration -----------------------------------------------------------------------------


def test_task_config_keeps_base_settings_adds_trajectory_and_wins_over_environment(ws: Workspace) -> None:
    ws.prompt("one")
    ws.env["SAVE_TRAJECTORY_PATH"] = str(ws.root / "elsewhere.json")
    ws.env["RUNTIME"] = "docker"
    done = ws.run(
        "--runtime",
        "cli",
        "--max-iterations",
        "7",
        "--max-budget-per-task",
        "1.5",
        "--llm-config",
        "cheap",
        "--agent-cls",
        "CodeActAgent",
    )
    launch = ws.launches()[0]
    expected = str(ws.output / "trajectories" / "one.json")
    assert launch["config"]["core"]["save_trajectory_path"] == expected
    assert launch["config"]["core"]["runtime"] == "cli"
    assert launch["config"]["llm"]["api_key"] == SECRET  # the base config is kept
    assert launch["env"]["SAVE_TRAJECTORY_PATH"] == expected
    assert launch["env"]["RUNTIME"] == "cli"
    argv = launch["argv"]
    assert argv[argv.index("-i") + 1] == "7" and argv[argv.index("-b") + 1] == "1.5"
    assert argv[argv.index("-l") + 1] == "cheap" and argv[argv.index("-c") + 1] == "CodeActAgent"
    assert launch["config_mode"] == "0o600"
    assert not (ws.root / "elsewhere.json").exists()
    assert Path(expected).is_file(), done.stderr


def test_temporary_configs_are_private_unique_and_removed(ws: Workspace) -> None:
    for n in range(3):
        ws.prompt(f"t{n}")
    ws.run("--max-workers", "3")
    config_paths = [Path(l["argv"][l["argv"].index("--config-file") + 1]) for l in ws.launches()]
    assert len(set(config_paths)) == 3
    folder = config_paths[0].parent
    assert all(p.parent == folder for p in config_paths)
    assert not folder.exists()  # removed at the end
    assert not (ws.project / "batch_config.toml").exists()  # nothing shared in the checkout


def test_two_concurrent_runs_use_separate_private_folders(ws: Workspace) -> None:
    ws.prompt("slow", "RUN: sleep 1\n")
    first = ws.start("--results-name", "a.jsonl")
    second = ws.start("--results-name", "b.jsonl")
    assert first.wait(60) == 0 and second.wait(60) == 0
    folders = {Path(l["argv"][l["argv"].index("--config-file") + 1]).parent for l in ws.launches()}
    assert len(folders) == 2


def test_broken_base_config_is_reported_before_anything_starts(ws: Workspace) -> None:
    ws.prompt("one")
    (ws.project / "config.toml").write_text("[core\nruntime = cli\n")
    done = ws.run()
    assert done.returncode == 2
    assert "config.toml" in done.stderr and "not valid TOML" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not ws.output.exists() and ws.launches() == []


# --- 3. launch ------------------------------------------------------------------------------------


def test_launch_argv_working_directory_stdin_and_own_session(ws: Workspace) -> None:
    prompt = ws.prompt("one")
    ws.run("--", "--selected-repo", "me/repo")
    launch = ws.launches()[0]
    argv = launch["argv"]
    assert argv[argv.index("-f") + 1] == str(prompt)
    assert Path(argv[argv.index("--config-file") + 1]).is_absolute()
    assert argv[-2:] == ["--selected-repo", "me/repo"]
    assert launch["cwd"] == str(ws.project)
    assert launch["stdin_is_devnull"]
    assert launch["sid_unix"] == launch["pid"]  # its own session: terminal Ctrl-C goes to the runner
    record = ws.records_of("one")[0]
    assert record["command"][1:] == argv[1:] or record["command"][-2:] == ["--selected-repo", "me/repo"]


def test_every_attempt_gets_a_fresh_session_name(ws: Workspace) -> None:
    ws.prompt("one")
    ws.run()
    ws.run("--rerun")
    names = [r["session_name"] for r in ws.records_of("one")]
    assert len(names) == 2 and names[0] != names[1]
    assert [l["sid"] for l in ws.launches()] == sorted(r["session_id"] for r in ws.records_of("one")) or {
        l["sid"] for l in ws.launches()
    } == {r["session_id"] for r in ws.records_of("one")}


def test_whole_output_goes_to_log_files(ws: Workspace) -> None:
    ws.prompt("loud", "STANDIN: print-mb 3\n")
    ws.run()
    record = ws.records_of("loud")[0]
    assert Path(record["stderr_log"]).stat().st_size > 3 * 1024 * 1024
    assert len(record["stderr"]) <= 4000 and len(record["stdout"]) <= 4000
    assert record["status"] == "success"


# --- 4. timeout -----------------------------------------------------------------------------------


def test_timeout_stops_openhands_gracefully_and_leaves_nothing_alive(ws: Workspace) -> None:
    ws.prompt("sleepy", "RUN: sleep 300\n")
    done = ws.run("--timeout", "2", "--grace-period", "20")
    record = ws.records_of("sleepy")[0]
    assert record["status"] == "timeout" and done.returncode == 1
    assert record["agent_state"] == "STOPPED"  # SIGINT reached OpenHands: graceful stop
    assert record["trajectory_path"] and Path(record["trajectory_path"]).is_file()
    assert record["elapsed_time_seconds"] < 15  # the running command was ended, not waited for
    assert processes_with(f"RUN_BATCH_RUN_ID={record['run_id']}") == []


def test_timeout_kills_an_openhands_that_ignores_sigint_after_the_grace_period(ws: Workspace) -> None:
    ws.prompt("wedged", "STANDIN: hang\n")
    ws.run("--timeout", "1", "--grace-period", "1")
    record = ws.records_of("wedged")[0]
    assert record["status"] == "timeout" and record["return_code"] == -9
    assert 2 <= record["elapsed_time_seconds"] < 10
    pid = ws.launches()[0]["pid"]
    assert not alive(pid)


def test_processes_left_behind_by_a_finished_task_are_killed(ws: Workspace) -> None:
    ws.prompt("leaky", "STANDIN: background\n")
    ws.run()
    record = ws.records_of("leaky")[0]
    assert record["status"] == "success"
    assert processes_with(f"RUN_BATCH_RUN_ID={record['run_id']}") == []


# --- 5. outcome -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, status, state, error",
    [
        ("Say hi.\n", "success", "FINISHED", None),
        ("STANDIN: llm-error\n", "failed", "ERROR", "STATUS$ERROR_LLM_INTERNAL_SERVER_ERROR"),
        ("STANDIN: max-iterations\n", "failed", "ERROR", "Agent reached maximum iteration"),
        ("STANDIN: stuck\n", "failed", "ERROR", "Agent got stuck in a loop"),
        ("STANDIN: crash\n", "failed", None, "RuntimeError: Failed to start runtime"),
        ("STANDIN: no-state\n", "success", "FINISHED", None),  # state read from the event files
    ],
)
def test_status_comes_from_the_final_agent_state_not_the_exit_code(
    ws: Workspace, prompt: str, status: str, state: str | None, error: str | None
) -> None:
    ws.prompt("task", prompt)
    done = ws.run()
    record = ws.records_of("task")[0]
    assert (record["status"], record["agent_state"]) == (status, state)
    if error is None:
        assert record["error"] is None and done.returncode == 0
    else:
        assert error in record["error"] and done.returncode == 1
    if status == "failed" and state == "ERROR":
        assert record["return_code"] == 0  # OpenHands exits 0 on ERROR


def test_command_that_fails_to_start_is_an_error_record(ws: Workspace, tmp_path: Path) -> None:
    ws.prompt("one")
    script = tmp_path / "oh"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent.parent / "run_batch.py"),
            "--prompt-dir",
            str(ws.prompts),
            "--project-dir",
            str(ws.project),
            "--command",
            str(script),
        ],
        env=ws.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    record = ws.records_of("one")[0]
    assert record["status"] == "error" and "could not start" in record["error"]
    assert done.returncode == 1


# --- 6. cost and tokens ---------------------------------------------------------------------------


def test_cost_and_tokens_from_the_trajectory(ws: Workspace) -> None:
    ws.prompt("one")
    ws.run()
    r = ws.records_of("one")[0]
    assert r["total_cost"] == pytest.approx(0.0022) and r["metrics_source"] == "trajectory"
    assert (r["total_input_tokens"], r["total_output_tokens"]) == (2000, 100)
    assert (r["cache_read_tokens"], r["cache_write_tokens"]) == (0, 0)


def test_cost_of_a_killed_task_comes_from_the_session_events(ws: Workspace) -> None:
    ws.prompt("killed", "RUN: sleep 300\n")
    ws.run("--timeout", "1", "--grace-period", "0")
    r = ws.records_of("killed")[0]
    assert r["trajectory_path"] is None  # killed before it could save
    assert r["metrics_source"] == "events" and r["total_cost"] == pytest.approx(0.0011)
    assert r["total_input_tokens"] == 1000 and r["agent_state"] == "RUNNING"


def test_unknown_cost_stays_null(ws: Workspace) -> None:
    ws.prompt("broken", "STANDIN: crash\n")
    ws.run()
    r = ws.records_of("broken")[0]
    assert r["total_cost"] is None and r["total_input_tokens"] is None and r["metrics_source"] is None


# --- 7, 8. results, log, console ------------------------------------------------------------------


def test_record_fields_log_and_console(ws: Workspace) -> None:
    ws.prompt("a")
    ws.prompt("b", "STANDIN: llm-error\n")
    done = ws.run()
    records = read_jsonl(ws.results)
    assert all(set(r) >= RECORD_FIELDS for r in records)
    a = records[0]
    assert a["attempt"] == 1 and a["started_at"].endswith("Z") and a["finished_at"] >= a["started_at"]
    assert isinstance(a["command"], list) and a["command"][0] == sys.executable
    assert Path(a["stdout_log"]).is_file() and Path(a["stderr_log"]).is_file()
    assert "\x1b" not in a["stderr"] and "AgentState.FINISHED" in a["stderr"]
    lines = [l for l in done.stdout.splitlines() if l.startswith("[")]
    assert len(lines) == 2 and "success" in lines[0] and "failed" in lines[1]
    log = (ws.output / "batch_run.log").read_text()
    assert "success" in log and "failed" in log


def test_results_are_appended_never_rewritten(ws: Workspace) -> None:
    ws.prompt("a")
    ws.run()
    before = ws.results.read_bytes()
    ws.run("--rerun")
    after = ws.results.read_bytes()
    assert after.startswith(before) and len(read_jsonl(ws.results)) == 2


# --- 9. exit status and usage errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["--max-workers", "0"], "--max-workers"),
        (["--timeout", "0"], "--timeout"),
        (["--timeout", "-5"], "--timeout"),
        (["--command", "no-such-openhands-binary -m x"], "not found"),
        (["--prompt-dir", "/nonexistent/prompts"], "--prompt-dir"),
        (["--base-config", "/nonexistent/config.toml"], "--base-config"),
    ],
)
def test_usage_errors_exit_2_with_one_line_and_write_nothing(ws: Workspace, args: list[str], words: str) -> None:
    ws.prompt("a")
    cmd = ws.command()
    # later options win in argparse, so appending overrides the workspace defaults
    done = subprocess.run(cmd + args, env=ws.env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr
    assert "Traceback" not in done.stderr
    assert not ws.output.exists() and ws.launches() == []


def test_prompt_dir_that_is_a_file_is_a_usage_error(ws: Workspace) -> None:
    not_a_dir = ws.root / "prompts.md"
    not_a_dir.write_text("x")
    done = subprocess.run(
        ws.command("--prompt-dir", str(not_a_dir)), env=ws.env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "not a folder" in done.stderr


def test_exit_status_zero_only_when_every_task_succeeded(ws: Workspace) -> None:
    ws.prompt("a")
    assert ws.run().returncode == 0
    ws.prompt("b", "STANDIN: llm-error\n")
    assert ws.run().returncode == 1


# --- 10. secrets ----------------------------------------------------------------------------------


def test_api_keys_never_reach_output_console_or_command_line(ws: Workspace) -> None:
    ws.prompt("leak", "STANDIN: print-secret\n")
    ws.env["LLM_API_KEY"] = "sk-env-LLM-KEY-abcdefghijkl"
    done = ws.run("--", "--selected-repo", "x")
    launch = ws.launches()[0]
    assert SECRET not in " ".join(launch["argv"])
    secrets = [SECRET, ENV_SECRET, "sk-env-LLM-KEY-abcdefghijkl"]
    for path in ws.output.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(s.encode() in data for s in secrets), path
    assert not any(s in done.stdout + done.stderr for s in secrets)
    # the stand-in did print it: the log was masked, not silent
    assert "****" in Path(ws.records_of("leak")[0]["stderr_log"]).read_text()


def test_output_files_are_not_world_readable_when_umask_is_strict(ws: Workspace) -> None:
    ws.prompt("a")
    ws.run()
    config_mode = ws.launches()[0]["config_mode"]
    assert config_mode == "0o600"
    private = Path(ws.launches()[0]["argv"][ws.launches()[0]["argv"].index("--config-file") + 1]).parent
    assert private.name.startswith("run_batch-") and not private.exists()
    assert stat.S_IMODE(os.stat(ws.results).st_mode) & 0o002 == 0
