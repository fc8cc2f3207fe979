"""A batch you can watch and steer: progress, summary, report, selection, budget, shards."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import pty
import re
import select
import subprocess
import time

import pytest
from conftest import SECRET, Workspace, read_jsonl

pytestmark = pytest.mark.e2e  # the runner as a process, against the OpenHands stand-in


def run_on_terminal(ws: Workspace, *args: str, timeout: float = 60) -> tuple[int, str]:
    """Run the runner with a pseudo-terminal as stdout, as a person would see it."""
    master, slave = pty.openpty()
    env = {**ws.env, "TERM": "xterm-256color", "COLUMNS": "120"}
    proc = subprocess.Popen(ws.command(*args), env=env, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(10), b"".join(chunks).decode(errors="replace")


def test_live_progress_on_a_terminal(ws: Workspace) -> None:
    ws.prompt("quick")
    ws.prompt("slowpoke", "RUN: sleep 2\n")
    code, screen = run_on_terminal(ws, "--max-workers", "2")
    assert code == 0
    assert "running" in screen and "slowpoke" in screen  # the running-tasks panel
    assert re.search(r"\d/2 done", screen) and "so far" in screen and "ETA" in screen
    assert "[1/2] success" in screen and "[2/2] success" in screen  # finished tasks scroll above


def test_not_a_terminal_gives_plain_lines_without_control_characters(ws: Workspace) -> None:
    ws.prompt("a")
    ws.prompt("b", "STANDIN: llm-error\n")
    done = ws.run()
    assert "\x1b" not in done.stdout + done.stderr
    assert len([l for l in done.stdout.splitlines() if re.match(r"\[\d/2\] ", l)]) == 2


def test_quiet_prints_only_the_final_summary(ws: Workspace) -> None:
    ws.prompt("a")
    ws.prompt("b", "STANDIN: llm-error\n")
    done = ws.run("--quiet")
    assert "[1/2]" not in done.stdout and "run " not in done.stdout.splitlines()[0]
    assert done.stdout.startswith("Done in") and "1 success, 1 failed" in done.stdout
    assert "STATUS$ERROR_LLM_INTERNAL_SERVER_ERROR" in done.stdout  # failures with reasons


def test_summary_and_summary_json(ws: Workspace) -> None:
    ws.prompt("a")
    ws.prompt("b", "STANDIN: llm-error\n")
    ws.prompt("c", "RUN: sleep 1\n")
    done = ws.run("--max-workers", "3")
    assert "Slowest: c" in done.stdout and str(ws.results) in done.stdout
    assert "Cost $0.0044" in done.stdout and "mean $0.0022 per task" in done.stdout
    summary = json.loads((ws.output / "summary.json").read_text())
    assert summary["totals"]["counts"]["success"] == 2 and summary["totals"]["counts"]["failed"] == 1
    assert summary["totals"]["total_cost"] == pytest.approx(0.0044)
    assert [t["task_name"] for t in summary["tasks"]] == ["a", "b", "c"]
    ws.prompt("b", "fixed now\n")
    ws.run()
    summary = json.loads((ws.output / "summary.json").read_text())
    assert summary["totals"]["counts"]["success"] == 3  # the latest attempt of every task
    assert [p.name for p in ws.output.iterdir() if p.name.startswith(".summary")] == []


@pytest.mark.parametrize("fmt", ["table", "json", "markdown"])
def test_report_merges_every_results_file_and_runs_nothing(ws: Workspace, fmt: str) -> None:
    ws.prompt("a")
    ws.prompt("b", "STANDIN: llm-error\n")
    ws.run("--shard", "1/2")
    ws.run("--shard", "2/2")
    assert sorted(p.name for p in ws.output.glob("*.jsonl")) == [
        "batch_results.shard-1-of-2.jsonl",
        "batch_results.shard-2-of-2.jsonl",
    ]
    launches = len(ws.launches())
    done = ws.run("--report", "--output-dir", str(ws.output), "--format", fmt)
    assert done.returncode == 1  # one task failed
    assert len(ws.launches()) == launches
    if fmt == "json":
        report = json.loads(done.stdout)
        assert {t["task_name"]: t["status"] for t in report["tasks"]} == {"a": "success", "b": "failed"}
    else:
        assert "a" in done.stdout and "failed" in done.stdout and "STATUS$ERROR_LLM" in done.stdout
        if fmt == "markdown":
            assert done.stdout.startswith("| task | status |")


def test_report_on_a_missing_folder_is_a_usage_error(ws: Workspace) -> None:
    done = ws.run("--report", "--output-dir", str(ws.root / "nothing-here"))
    assert done.returncode == 2 and "nothing to report" in done.stderr


def test_dry_run_shows_plan_command_and_masked_config_and_writes_nothing(ws: Workspace) -> None:
    ws.prompt("a")
    ws.prompt("b")
    ws.run("--tasks", "a")
    before = sorted(p.name for p in ws.output.rglob("*"))
    results = ws.results.read_bytes()
    done = ws.run("--dry-run", "--runtime", "cli")
    assert done.returncode == 0
    assert "run   b" in done.stdout and "skip  a" in done.stdout
    assert "-f " in done.stdout and "--config-file" in done.stdout
    assert "save_trajectory_path" in done.stdout and 'runtime = "cli"' in done.stdout
    assert SECRET not in done.stdout and "****" in done.stdout
    assert sorted(p.name for p in ws.output.rglob("*")) == before and ws.results.read_bytes() == results
    assert len(ws.launches()) == 1


def test_selection_flags_on_the_command_line(ws: Workspace) -> None:
    for name in ("api-1", "api-2", "ui-1", "ui-2", "db-1"):
        ws.prompt(name)
    ws.run("--include", "api-*", "--include", "ui-*", "--exclude", "*-2", "--limit", "5")
    assert [r["task_name"] for r in read_jsonl(ws.results)] == ["api-1", "ui-1"]
    ws.run("--tasks", "db-1,api-2", "--limit", "1")
    assert [r["task_name"] for r in read_jsonl(ws.results)][2:] == ["api-2"]


def test_budget_stops_new_tasks_and_reports_the_rest_as_skipped(ws: Workspace) -> None:
    for n in range(5):
        ws.prompt(f"t{n}")
    done = ws.run("--max-total-cost", "0.004")  # each task costs 0.0022
    assert [r["task_name"] for r in read_jsonl(ws.results)] == ["t0", "t1"]
    assert "3 tasks skipped, not failed" in done.stdout
    summary = json.loads((ws.output / "summary.json").read_text())
    assert summary["totals"]["skipped_for_budget"] == ["t2", "t3", "t4"]
    assert summary["totals"]["counts"]["failed"] == 0


def test_start_delay_spaces_task_starts(ws: Workspace) -> None:
    for n in range(3):
        ws.prompt(f"t{n}")
    ws.run("--max-workers", "3", "--start-delay", "0.7")
    starts = sorted(dt.datetime.fromisoformat(r["started_at"].replace("Z", "+00:00")) for r in read_jsonl(ws.results))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert all(g >= 0.5 for g in gaps), gaps  # without --start-delay they start together (~0 s)


def test_shards_share_one_folder_at_the_same_time(ws: Workspace) -> None:
    for n in range(6):
        ws.prompt(f"t{n}", "RUN: sleep 1\n")
    env_slurm = [{"SLURM_ARRAY_TASK_ID": str(k), "SLURM_ARRAY_TASK_COUNT": "3"} for k in range(3)]
    procs = []
    for extra in env_slurm:
        procs.append(
            subprocess.Popen(
                ws.command("--shard", "auto"),
                env={**ws.env, **extra},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    per_shard = [
        sorted(r["task_name"] for r in read_jsonl(ws.output / f"batch_results.shard-{k}-of-3.jsonl")) for k in (1, 2, 3)
    ]
    assert per_shard == [["t0", "t3"], ["t1", "t4"], ["t2", "t5"]]


def test_report_on_a_terminal_colours_rows_unless_no_color(ws: Workspace) -> None:
    ws.prompt("a")
    ws.prompt("b", "STANDIN: llm-error\n")
    ws.run()
    ws.env.pop("NO_COLOR", None)
    code, screen = run_on_terminal(ws, "--report", "--output-dir", str(ws.output))
    assert code == 1 and "\x1b[" in screen
    assert "task" in screen and "STATUS$ERROR_LLM" in screen
    ws.env["NO_COLOR"] = "1"
    code, screen = run_on_terminal(ws, "--report", "--output-dir", str(ws.output))
    assert code == 1 and "\x1b[3" not in screen and "b" in screen and "failed" in screen


def test_without_rich_a_terminal_gets_plain_lines_and_a_one_line_hint(ws: Workspace) -> None:
    no_rich = ws.root / "no-rich"
    (no_rich / "rich").mkdir(parents=True)
    (no_rich / "rich" / "__init__.py").write_text("raise ImportError('rich is not installed')\n")
    ws.env["PYTHONPATH"] = str(no_rich)
    ws.prompt("a")
    code, screen = run_on_terminal(ws)
    assert code == 0
    hints = [l for l in screen.splitlines() if "pip install rich" in l]
    assert len(hints) == 1 and "live progress needs the package rich" in hints[0]
    assert "[1/1] success" in screen and "Traceback" not in screen
    ws.env.pop("NO_COLOR", None)
    code, screen = run_on_terminal(ws, "--report", "--output-dir", str(ws.output))
    assert code == 0 and "success" in screen and "\x1b[" not in screen
