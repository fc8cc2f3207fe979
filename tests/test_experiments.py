"""Experiments (issue 22), end to end against the stand-ins: every record says what produced it
(model, release, configuration, evaluator, label), a folder never mixes two experiments silently,
resume reads every shard's results file, another tool's lines and run_batch 0.4's records, grading
that did not happen is done by the next run, --samples with pass@k and intervals, and
`--report --compare`. The arithmetic is checked against values worked out by hand here."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from conftest import SECRET, Workspace, read_jsonl, summary, wait_until
from test_cli_entrypoint import cws  # noqa: F401 (a fixture: the V1 CLI's workspace, with its clean-up)
from test_cli_entrypoint import run as run_cli

import run_batch as rb

# What a record of run_batch 0.5 carries that one of 0.4 did not (0.4's record: every other field).
NEW_IN_05 = (
    "run_batch",
    "experiment_id",
    "experiment",
    "sample",
    "before_attempt",
    "tags",
    "peak_memory_bytes",
    "cpu_seconds",
    "resource_source",
    "limits",
)
EXPERIMENT_FIELDS = {
    "id",
    "label",
    "model",
    "model_source",
    "llm_base_url_host",
    "entrypoint",
    "openhands_package",
    "openhands_version",
    "config_sha256",
    "evaluator",
    "evaluator_sha256",
    "run_batch_version",
}

# The grader: `grader.py MODE TASK SAMPLE [FLAG]`, exit 0 passed, 1 failed.
#   wait      passes once FLAG exists (until then it waits: a slow evaluator to interrupt)
#   by-task   the task name says: always-* passes, never-* fails, odd-* passes on odd samples
#   fail      fails
GRADER = r"""
import sys, time
from pathlib import Path

mode, task, sample = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("grading", task, "sample", sample, flush=True)
if mode == "wait":
    while not Path(sys.argv[4]).exists():
        time.sleep(0.05)
    sys.exit(0)
if mode == "by-task":
    kind = task.split("-")[0]
    sys.exit(0 if kind == "always" or (kind == "odd" and sample % 2 == 1) else 1)
sys.exit(1)
"""


# --- helpers --------------------------------------------------------------------------------------


def run(ws: Workspace, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The runner with the stand-in, which it is told is core.main: it knows the model then."""
    return ws.run("--entrypoint", "core-main", *args, timeout=timeout)


def set_model(ws: Workspace, model: str) -> None:
    """The base config's [llm] model (the first `model =` line: [llm.cheap] keeps its own)."""
    config = ws.project / "config.toml"
    config.write_text(re.sub(r'^model = ".*"$', f'model = "{model}"', config.read_text(), count=1, flags=re.M))


def evaluator(ws: Workspace, mode: str, *extra: str) -> str:
    script = ws.root / "grader.py"
    script.write_text(GRADER)
    words = [sys.executable, str(script), mode]
    return " ".join([*map(shlex.quote, words), "{task}", "{sample}", *map(shlex.quote, extra)])


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The usage error: exit 2, one line on stderr, nothing on stdout, no traceback."""
    assert done.returncode == 2 and done.stdout == "", (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("run-batch: error: "), done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


def report_json(ws: Workspace, *args: str) -> dict[str, Any]:
    done = run(ws, "--report", "--format", "json", *args)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def records(ws: Workspace) -> list[dict[str, Any]]:
    """Every record of every results file of the output folder (every shard's)."""
    return [r for p in sorted(ws.output.glob("*.jsonl")) if p.name != "evaluations.jsonl" for r in read_jsonl(p)]


def approx(value: Fraction | float) -> Any:
    return pytest.approx(float(value), abs=1e-6)  # summary.json rounds to 6 places


# --- 1. the experiment's identity, and a folder that never mixes two -----------------------------


@pytest.mark.e2e
def test_a_changed_model_stops_before_anything_runs_and_names_the_ways_on(ws: Workspace) -> None:
    set_model(ws, "openai/gpt-4o")
    for name in ("a", "b", "c"):
        ws.prompt(name)
    assert run(ws).returncode == 0
    before = ws.results.read_bytes()
    set_model(ws, "openai/gpt-5-mini")
    error = one_line_error(run(ws))
    assert "model: openai/gpt-4o -> openai/gpt-5-mini" in error
    assert "--output-dir" in error and "--label" in error
    assert len(ws.launches()) == 3 and ws.results.read_bytes() == before  # nothing ran, nothing written

    # the ways on: a --label in the same folder runs every task again, as a second experiment ...
    labelled = run(ws, "--label", "b")
    assert labelled.returncode == 0, labelled.stderr
    assert "3 tasks to run" in labelled.stdout and len(ws.launches()) == 6
    mine = [r for r in read_jsonl(ws.results) if r["experiment"]["label"] == "b"]
    assert sorted(r["task_name"] for r in mine) == ["a", "b", "c"]
    assert {r["experiment"]["model"] for r in mine} == {"openai/gpt-5-mini"}
    # ... and another output folder starts afresh
    elsewhere = run(ws, "--output-dir", str(ws.root / "other"))
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert len(ws.launches()) == 9 and len(read_jsonl(ws.root / "other" / "batch_results.jsonl")) == 3

    # the report keeps the two experiments of the folder apart, never summed
    table = run(ws, "--report")
    headings = [line for line in table.stdout.splitlines() if line.startswith("== Experiment")]
    assert len(headings) == 2, table.stdout
    assert "model openai/gpt-4o;" in headings[0] and "label" not in headings[0]
    assert "model openai/gpt-5-mini;" in headings[1] and "label 'b'" in headings[1]
    assert table.stdout.count("3 tasks: 3 success") == 2 and "6 tasks" not in table.stdout
    data = report_json(ws)
    experiments = data["experiments"]
    assert [e["experiment"]["model"] for e in experiments] == ["openai/gpt-4o", "openai/gpt-5-mini"]
    assert [e["experiment"]["label"] for e in experiments] == [None, "b"]
    for e in experiments:
        assert e["totals"]["tasks"] == 3 and e["totals"]["counts"]["success"] == 3
        assert e["scores"]["tasks"] == 3 and e["scores"]["pass_at_1"] == 1.0
        assert sorted(t["task_name"] for t in e["tasks"]) == ["a", "b", "c"]
    assert data["totals"]["tasks"] == 3  # the newest experiment's at the top, not 6
    markdown = run(ws, "--report", "--format", "markdown").stdout
    assert markdown.count("3 tasks: 3 success") == 2 and "6 tasks" not in markdown
    page = ws.root / "report.html"
    assert run(ws, "--report", "--format", "html", "--output", str(page)).returncode == 0
    assert "openai/gpt-4o" in page.read_text() and "openai/gpt-5-mini" in page.read_text()
    only_b = report_json(ws, "--label", "b")
    assert "experiments" not in only_b and only_b["experiment"]["label"] == "b"


@pytest.mark.e2e
def test_llm_model_in_the_environment_is_another_experiment(ws: Workspace) -> None:
    set_model(ws, "openai/gpt-4o")
    ws.prompt("a")
    assert run(ws).returncode == 0
    ws.env["LLM_MODEL"] = "openai/gpt-5-mini"
    error = one_line_error(run(ws))
    assert "model: openai/gpt-4o -> openai/gpt-5-mini" in error and "--label" in error
    assert len(ws.launches()) == 1
    assert run(ws, "--label", "from-env").returncode == 0
    assert len(ws.launches()) == 2
    record = read_jsonl(ws.results)[-1]
    assert record["experiment"]["model"] == "openai/gpt-5-mini"
    assert record["experiment"]["model_source"] == "LLM_MODEL"
    assert record["experiment"]["label"] == "from-env"


@pytest.mark.e2e
def test_a_changed_agent_settings_model_is_another_experiment_for_the_v1_cli(cws: Workspace) -> None:  # noqa: F811
    ws = cws  # the user's ~/.openhands/agent_settings.json, model openai/scripted
    settings = Path(ws.env["HOME"]) / ".openhands" / "agent_settings.json"
    ws.prompt("a")
    ws.prompt("b")
    first = run_cli(ws)
    assert first.returncode == 0, first.stderr
    [record, _] = read_jsonl(ws.results)
    assert record["experiment"]["entrypoint"] == "cli" and record["experiment"]["model"] == "openai/scripted"
    assert record["experiment"]["model_source"] == str(settings)
    launched = len(ws.launches())
    assert "Nothing to run" in run_cli(ws).stdout and len(ws.launches()) == launched  # unchanged: resumes

    data = json.loads(settings.read_text())
    data["llm"]["model"] = "openai/other-model"
    settings.write_text(json.dumps(data))
    error = one_line_error(run_cli(ws))
    assert "model: openai/scripted -> openai/other-model" in error and "--label" in error
    assert len(ws.launches()) == launched
    again = run_cli(ws, "--label", "other")
    assert again.returncode == 0, again.stderr
    assert "2 tasks to run" in again.stdout
    assert {r["experiment"]["model"] for r in read_jsonl(ws.results)[2:]} == {"openai/other-model"}


@pytest.mark.e2e
def test_a_new_api_key_alone_is_the_same_experiment(ws: Workspace) -> None:
    ws.prompt("a")
    ws.prompt("b")
    assert run(ws).returncode == 0
    config = ws.project / "config.toml"
    config.write_text(config.read_text().replace(SECRET, "sk-test-NEW-KEY-9999999999999999"))
    again = run(ws)
    assert again.returncode == 0, again.stderr
    assert "Nothing to run: 2 selected tasks have already succeeded" in again.stdout
    assert len(ws.launches()) == 2 and len(read_jsonl(ws.results)) == 2


@pytest.mark.e2e
def test_every_record_says_what_produced_it_and_never_the_key(ws: Workspace) -> None:
    ws.prompt("a")
    grader = evaluator(ws, "by-task", SECRET)  # the key among the evaluator's words: masked
    done = run(ws, "--evaluate", grader)
    assert done.returncode == 0, done.stderr
    [record] = read_jsonl(ws.results)
    assert record["run_batch"] == rb.__version__ and record["sample"] == 1
    e = record["experiment"]
    assert set(e) == EXPERIMENT_FIELDS and record["experiment_id"] == e["id"]
    assert re.fullmatch(r"e-[0-9a-f]{12}", e["id"])
    assert (e["model"], e["model_source"]) == ("openai/scripted", "config [llm]")
    assert (e["entrypoint"], e["openhands_package"], e["label"]) == ("core-main", "openhands-ai", None)
    assert "openhands_version" in e and re.fullmatch(r"[0-9a-f]{64}", e["config_sha256"])
    assert e["run_batch_version"] == rb.__version__
    assert e["evaluator"] is not None and SECRET not in e["evaluator"] and "by-task" in e["evaluator"]
    assert re.fullmatch(r"[0-9a-f]{64}", e["evaluator_sha256"])
    assert SECRET not in json.dumps(record)
    # the summary and summary.json say it too
    assert f"Experiment {e['id']}: model openai/scripted" in done.stdout
    assert summary(ws)["experiment"]["id"] == e["id"]


@pytest.mark.e2e
def test_a_wrapper_command_records_the_model_as_unknown_and_says_so(ws: Workspace) -> None:
    ws.prompt("a")
    done = ws.run()  # the stand-in through `python fake_openhands.py`: run_batch cannot know it is core.main
    assert done.returncode == 0, done.stderr
    [record] = read_jsonl(ws.results)
    assert record["experiment"]["model"] is None
    assert "wrapper" in record["experiment"]["model_source"]
    assert "model ? (unknown: --command is a wrapper" in done.stdout


@pytest.mark.e2e
def test_the_model_of_llm_config_and_only_the_host_of_the_endpoint(ws: Workspace) -> None:
    config = ws.project / "config.toml"
    config.write_text(config.read_text() + 'base_url = "https://user:hunter2-password@llm.example.com:8443/v1"\n')
    ws.prompt("a")
    done = run(ws, "--llm-config", "cheap")
    assert done.returncode == 0, done.stderr
    e = read_jsonl(ws.results)[0]["experiment"]
    assert (e["model"], e["model_source"]) == ("openai/cheap", "config [llm.cheap]")
    assert e["llm_base_url_host"] == "llm.example.com:8443"
    assert "hunter2" not in ws.results.read_text() and "hunter2" not in (ws.output / "summary.json").read_text()
    error = one_line_error(run(ws))  # [llm] instead of [llm.cheap]: another model
    assert "model: openai/cheap -> openai/scripted" in error


@pytest.mark.e2e
def test_a_new_evaluator_grades_again_and_never_runs_an_agent_again(ws: Workspace) -> None:
    ws.prompt("always-a")
    ws.prompt("never-b")
    assert run(ws, "--evaluate", evaluator(ws, "by-task")).returncode == 0
    first = read_jsonl(ws.results)
    assert [r["evaluation"]["verdict"] for r in first] == ["passed", "failed"]
    again = run(ws, "--evaluate", evaluator(ws, "fail"))  # a changed evaluator: the same experiment
    assert again.returncode == 0, again.stderr
    assert len(ws.launches()) == 2 and len(read_jsonl(ws.results)) == 2
    assert "Graded without running the agent again: 2 finished attempts." in again.stdout
    assert [t["evaluation"]["verdict"] for t in summary(ws)["tasks"]] == ["failed", "failed"]
    assert summary(ws)["experiment"]["id"] == first[0]["experiment_id"]


@pytest.mark.e2e
def test_summary_json_names_the_evaluator_whose_verdicts_it_holds(ws: Workspace) -> None:
    ws.prompt("always-a")
    assert run(ws, "--evaluate", evaluator(ws, "by-task")).returncode == 0
    assert run(ws, "--evaluate", evaluator(ws, "fail")).returncode == 0
    data = summary(ws)
    assert [t["evaluation"]["verdict"] for t in data["tasks"]] == ["failed"]
    assert data["experiment"]["evaluator"] == evaluator(ws, "fail")


@pytest.mark.e2e
def test_every_report_format_names_the_experiment(ws: Workspace) -> None:
    set_model(ws, "openai/gpt-4o")
    ws.prompt("a")
    assert run(ws).returncode == 0
    experiment = read_jsonl(ws.results)[0]["experiment_id"]
    assert report_json(ws)["experiment"]["model"] == "openai/gpt-4o"
    page = ws.root / "report.html"
    assert run(ws, "--report", "--format", "html", "--output", str(page)).returncode == 0
    assert experiment in page.read_text() and "openai/gpt-4o" in page.read_text()
    for form in ("table", "markdown"):
        shown = run(ws, "--report", "--format", form).stdout
        assert experiment in shown and "openai/gpt-4o" in shown, form


# --- 2. resume reads every results file of the folder ---------------------------------------------


@pytest.mark.e2e
def test_shards_complete_the_folder_and_no_later_selection_runs_anything_again(ws: Workspace) -> None:
    names = [f"task-{i}" for i in range(8)]
    for name in names:
        ws.prompt(name)
    for k in range(1, 5):
        done = run(ws, "--shard", f"{k}/4")
        assert done.returncode == 0, done.stderr
    assert len(ws.launches()) == 8
    assert sorted(r["task_name"] for r in records(ws)) == names
    # summary.json describes every shard, whichever finished last
    covers = summary(ws)["covers"]
    assert covers["results_files"] == [f"batch_results.shard-{k}-of-4.jsonl" for k in range(1, 5)]
    assert covers["shards"] == ["1/4", "2/4", "3/4", "4/4"]
    assert sorted(covers["runs"]) == sorted({r["run_id"] for r in records(ws)}) and len(covers["runs"]) == 4
    assert summary(ws)["totals"]["tasks"] == 8 and len(summary(ws)["tasks"]) == 8

    whole = run(ws)
    assert whole.returncode == 0, whole.stderr
    assert "Nothing to run: 8 selected tasks have already succeeded" in whole.stdout
    other_split = run(ws, "--shard", "2/3")
    assert other_split.returncode == 0, other_split.stderr
    assert "Nothing to run: 3 selected tasks have already succeeded" in other_split.stdout
    assert len(ws.launches()) == 8  # nothing paid for twice
    dry = json.loads(run(ws, "--dry-run", "--format", "json").stdout)
    assert dry["to_run"] == [] and len(dry["skipped"]) == 8
    report = run(ws, "--report")
    assert "8 tasks: 8 success" in report.stdout and report.returncode == 0


# --- 3. another tool's lines ----------------------------------------------------------------------


def gittaskbench_line(task: str, status: str, cost: float) -> dict[str, Any]:
    """A line of GitTaskBench's own batch script (its batch_results.jsonl)."""
    return {
        "task_name": f"{task}.md",
        "prompt_file": f"/benchmark/prompts/{task}.md",
        "stdout": "…",
        "stderr": "",
        "total_cost": cost,
        "total_input_tokens": 120000,
        "total_output_tokens": 4000,
        "total_tokens": 124000,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "session_id": f"{task}-session",
        "status": status,
        "return_code": 0 if status == "success" else 1,
        "elapsed_time_seconds": 321.5,
    }


@pytest.mark.e2e
def test_another_tools_results_are_named_once_and_never_counted_or_rewritten(ws: Workspace) -> None:
    statuses = ("success", "failed", "timeout", "error", "executor_error")
    theirs = [gittaskbench_line(f"repo-{i}", statuses[i % 5], 50.0) for i in range(6)]  # $300 spent
    ws.output.mkdir()
    foreign = ws.output / "batch_results.jsonl"  # the very name GitTaskBench writes
    foreign.write_text("".join(json.dumps(line) + "\n" for line in theirs))
    original = foreign.read_bytes()
    ws.prompt("repo-0")  # one of theirs by name (without the .md)
    ws.prompt("mine")

    report = run(ws, "--report", "--format", "json")
    data = json.loads(report.stdout)
    assert data["totals"]["tasks"] == 0 and not data["totals"]["total_cost"]
    [warning] = [line for line in report.stderr.splitlines() if line.startswith("warning:")]
    assert "batch_results.jsonl" in warning and "lines 1-6" in warning and "6 lines" in warning
    assert "another tool" in warning

    # Their file has our default name: appending to it would mix two tools' lines. Exit 2, one line,
    # nothing run or written, and the way on.
    refused = run(ws)
    assert refused.returncode == 2 and "--results-name" in refused.stderr and refused.stderr.count("\n") == 1
    assert len(ws.launches()) == 0 and foreign.read_bytes() == original

    # a folder budget below their spend still starts our tasks: theirs is not this folder's spend
    ours_name = ("--results-name", "run_batch.jsonl")
    done = run(ws, *ours_name, "--max-total-cost", "1")
    assert done.returncode == 0, done.stderr
    assert len(ws.launches()) == 2
    assert sum("another tool" in line for line in done.stderr.splitlines()) == 1
    assert foreign.read_bytes() == original  # their file untouched, byte for byte
    ours = read_jsonl(ws.output / "run_batch.jsonl")
    assert sorted(r["task_name"] for r in ours) == ["mine", "repo-0"] and all("run_batch" in r for r in ours)

    table = run(ws, "--report")
    assert "2 tasks: 2 success" in table.stdout and ".md" not in table.stdout
    data = report_json(ws)
    assert sorted(t["task_name"] for t in data["tasks"]) == ["mine", "repo-0"]
    assert data["totals"]["total_cost"] < 1  # none of their $300
    again = run(ws, *ours_name)
    assert "Nothing to run" in again.stdout and len(ws.launches()) == 2


@pytest.mark.e2e
def test_another_tools_file_beside_ours_is_left_byte_for_byte(ws: Workspace) -> None:
    ws.output.mkdir()
    foreign = ws.output / "gittaskbench_results.jsonl"
    foreign.write_text("".join(json.dumps(gittaskbench_line(f"t{i}", "success", 200.0)) + "\n" for i in range(3)))
    original = foreign.read_bytes()
    ws.prompt("t0")
    done = run(ws, "--max-total-cost", "100", "--evaluate", evaluator(ws, "by-task"))
    assert done.returncode == 0, done.stderr
    assert len(ws.launches()) == 1 and "t0" in done.stdout
    assert run(ws, "--evaluate-only", "--evaluate", evaluator(ws, "fail")).returncode == 0
    assert run(ws, "--report", "--format", "html").returncode == 0
    assert foreign.read_bytes() == original


# --- 4. records of run_batch 0.4 ------------------------------------------------------------------


def as_04(line: dict[str, Any]) -> dict[str, Any]:
    """A record as run_batch 0.4 wrote it: today's without the fields 0.5 added."""
    return {k: v for k, v in line.items() if k not in NEW_IN_05}


@pytest.mark.e2e
def test_records_of_run_batch_04_resume_with_a_warning_and_report(ws: Workspace) -> None:
    ws.prompt("old-a")
    ws.prompt("old-b", "STANDIN: llm-error\n")
    assert run(ws).returncode == 1
    ws.results.write_text("".join(json.dumps(as_04(r)) + "\n" for r in read_jsonl(ws.results)))
    assert all("run_batch" not in r for r in read_jsonl(ws.results))

    ws.prompt("old-b")  # fixed: runs again (0.4's rule: a failed task runs again); old-a does not
    again = run(ws)
    assert again.returncode == 0, again.stderr
    assert "1 already done, 1 task to run" in again.stdout
    [warning] = [line for line in again.stderr.splitlines() if line.startswith("warning:")]
    assert "2 records of run_batch 0.3/0.4 carry no experiment identity" in warning
    assert len(ws.launches()) == 3
    nothing = run(ws)
    assert "Nothing to run: 2 selected tasks have already succeeded" in nothing.stdout
    assert len(ws.launches()) == 3

    table = run(ws, "--report")
    assert table.returncode == 0 and "2 tasks: 2 success" in table.stdout and "== " not in table.stdout
    data = report_json(ws)
    assert {t["task_name"]: t["status"] for t in data["tasks"]} == {"old-a": "success", "old-b": "success"}
    assert "experiments" not in data  # one experiment: the legacy records counted as this one's
    # a labelled experiment is another one: the legacy records are not its own
    labelled = run(ws, "--label", "fresh")
    assert labelled.returncode == 0 and "2 tasks to run" in labelled.stdout and len(ws.launches()) == 5


# --- 5. grading is complete -----------------------------------------------------------------------


@pytest.mark.e2e
def test_grading_cut_short_by_ctrl_c_is_done_by_the_same_command_without_the_agent(ws: Workspace) -> None:
    flag = ws.root / "grade-now"
    ws.prompt("a")
    ws.prompt("b")
    grader = evaluator(ws, "wait", str(flag))
    runner = subprocess.Popen(
        ws.command("--entrypoint", "core-main", "--max-workers", "2", "--evaluate", grader),
        env=ws.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    logs = [ws.output / "logs" / f"{name}.eval.log" for name in ("a", "b")]
    assert wait_until(lambda: all(log.is_file() and log.stat().st_size > 0 for log in logs), timeout=60)
    runner.send_signal(signal.SIGINT)
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 130, err
    first = read_jsonl(ws.results)
    assert [(r["status"], r["evaluation"]) for r in first] == [("success", None), ("success", None)]
    assert len(ws.launches()) == 2

    plan = json.loads(run(ws, "--dry-run", "--format", "json", "--evaluate", grader).stdout)
    assert plan["to_run"] == [] and sorted(g["task"] for g in plan["to_grade"]) == ["a", "b"]
    assert "Would grade 2 finished attempts" in run(ws, "--dry-run", "--evaluate", grader).stdout

    flag.touch()
    again = run(ws, "--max-workers", "2", "--evaluate", grader)
    assert again.returncode == 0, again.stderr
    assert len(ws.launches()) == 2  # no agent ran again
    assert "Graded without running the agent again: 2 finished attempts." in again.stdout
    assert len(read_jsonl(ws.results)) == 2  # records are never rewritten or added for a grading
    verdicts = read_jsonl(ws.output / "evaluations.jsonl")
    assert sorted((v["task_name"], v["evaluation"]["verdict"]) for v in verdicts) == [("a", "passed"), ("b", "passed")]
    assert all(v["evaluate_command"] == grader for v in verdicts)
    data = summary(ws)
    assert data["totals"]["graded_without_running"] == 2
    assert [t["evaluation"]["verdict"] for t in data["tasks"]] == ["passed", "passed"]
    assert data["scores"]["pass_is"] == "verdict passed" and data["scores"]["passes"] == 2
    # graded once: the same command again has nothing left, neither to run nor to grade
    third = run(ws, "--max-workers", "2", "--evaluate", grader)
    assert "Nothing to run" in third.stdout and "Graded without" not in third.stdout
    assert len(read_jsonl(ws.output / "evaluations.jsonl")) == 2


@pytest.mark.e2e
def test_evaluate_only_writes_summary_json_again_with_its_verdicts(ws: Workspace) -> None:
    ws.prompt("always-a")
    ws.prompt("never-b")
    assert run(ws).returncode == 0
    before = summary(ws)
    assert before["totals"]["evaluation"] is None and all(t["evaluation"] is None for t in before["tasks"])
    page = ws.output / "report.html"
    assert run(ws, "--report", "--format", "html").returncode == 0 and page.is_file()
    graded = run(ws, "--evaluate-only", "--evaluate", evaluator(ws, "by-task"))
    assert graded.returncode == 0, graded.stderr
    after = summary(ws)
    assert {t["task_name"]: t["evaluation"]["verdict"] for t in after["tasks"]} == {
        "always-a": "passed",
        "never-b": "failed",
    }
    assert after["totals"]["evaluation"]["passed"] == 1
    assert after["scores"]["pass_is"] == "verdict passed" and after["scores"]["pass_at_1"] == 0.5
    assert after["experiment"]["id"] == before["experiment"]["id"]
    assert after["totals"]["run_id"] == before["totals"]["run_id"]  # what the run did is kept
    assert page.read_text().count("<td>passed</td>") == 1 and page.read_text().count("<td>failed</td>") == 1
    # a grader with another verdict: the latest verdict wins there too
    assert run(ws, "--evaluate-only", "--evaluate", evaluator(ws, "fail")).returncode == 0
    assert {t["evaluation"]["verdict"] for t in summary(ws)["tasks"]} == {"failed"}
    assert "<td>passed</td>" not in page.read_text() and page.read_text().count("<td>failed</td>") == 2
    assert len(ws.launches()) == 2


# --- 6. samples, pass@k, pass^k, intervals --------------------------------------------------------


@pytest.mark.e2e
def test_samples_give_pass_at_k_and_pass_hat_k_as_worked_out_by_hand(ws: Workspace) -> None:
    for name in ("always-x", "never-y", "odd-z"):
        ws.prompt(name)
    grader = evaluator(ws, "by-task")
    done = run(ws, "--samples", "3", "--max-workers", "3", "--evaluate", grader)
    assert done.returncode == 0, done.stderr
    first = read_jsonl(ws.results)
    assert len(first) == 9 and len(ws.launches()) == 9
    for name in ("always-x", "never-y", "odd-z"):
        mine = [r for r in first if r["task_name"] == name]
        assert sorted(r["sample"] for r in mine) == [1, 2, 3]
        for key in ("session_name", "session_id", "trajectory_path", "stdout_log", "stderr_log"):
            assert len({r[key] for r in mine}) == 3, key
    # passes: always-x 3 of 3, never-y 0 of 3, odd-z samples 1 and 3 (2 of 3)
    scores = summary(ws)["scores"]
    assert (scores["tasks"], scores["samples_per_task"], scores["samples_run"], scores["passes"]) == (3, 3, 9, 5)
    assert scores["pass_is"] == "verdict passed"
    assert scores["pass_at_1"] == approx(Fraction(1 + 0 + Fraction(2, 3), 3))  # 5/9
    # odd-z (n 3, c 2): pass@2 = 1 - C(1,2)/C(3,2) = 1, pass@3 = 1; pass^2 = C(2,2)/C(3,2) = 1/3, pass^3 = 0
    assert {k: v["value"] for k, v in scores["pass_at_k"].items()} == {
        "1": approx(Fraction(5, 9)),
        "2": approx(Fraction(2, 3)),
        "3": approx(Fraction(2, 3)),
    }
    assert {k: v["value"] for k, v in scores["pass_hat_k"].items()} == {
        "1": approx(Fraction(5, 9)),
        "2": approx(Fraction(1 + Fraction(1, 3), 3)),  # 4/9
        "3": approx(Fraction(1, 3)),
    }
    assert all(v["tasks"] == 3 for v in scores["pass_at_k"].values())
    assert scores["flaky"] == ["odd-z"]
    assert scores["interval_method"].startswith("percentile bootstrap over tasks")
    low, high = scores["interval_95"]
    assert 0 <= low < 5 / 9 < high <= 1
    # the tasks' rates in name order (always-x, never-y, odd-z), resampled with run_batch's fixed seed
    assert [low, high] == [approx(x) for x in rb.bootstrap_interval([1.0, 0.0, 2 / 3])]
    assert {t["task"]: (t["samples"], t["passes"]) for t in scores["by_task"]} == {
        "always-x": (3, 3),
        "never-y": (3, 0),
        "odd-z": (3, 2),
    }
    assert "pass@3 66.7%, pass^3 33.3%" in done.stdout and "flaky: 1" in done.stdout

    # raising K runs only the samples not there yet
    more = run(ws, "--samples", "5", "--max-workers", "3", "--evaluate", grader)
    assert more.returncode == 0, more.stderr
    added = read_jsonl(ws.results)[9:]
    assert sorted((r["task_name"], r["sample"]) for r in added) == [
        (name, k) for name in ("always-x", "never-y", "odd-z") for k in (4, 5)
    ]
    assert len(ws.launches()) == 15
    # odd-z now passes samples 1, 3, 5 (n 5, c 3): pass@2 = 1 - C(2,2)/C(5,2) = 9/10, pass@k>2 = 1;
    # pass^2 = C(3,2)/C(5,2) = 3/10, pass^3 = C(3,3)/C(5,3) = 1/10, pass^4 = pass^5 = 0
    scores = summary(ws)["scores"]
    assert (scores["samples_per_task"], scores["samples_run"], scores["passes"]) == (5, 15, 8)
    assert scores["pass_at_1"] == approx(Fraction(1 + Fraction(3, 5), 3))  # 8/15
    assert {k: v["value"] for k, v in scores["pass_at_k"].items()} == {
        "1": approx(Fraction(8, 15)),
        "2": approx(Fraction(1 + Fraction(9, 10), 3)),  # 19/30
        "3": approx(Fraction(2, 3)),
        "4": approx(Fraction(2, 3)),
        "5": approx(Fraction(2, 3)),
    }
    assert {k: v["value"] for k, v in scores["pass_hat_k"].items()} == {
        "1": approx(Fraction(8, 15)),
        "2": approx(Fraction(1 + Fraction(3, 10), 3)),  # 13/30
        "3": approx(Fraction(1 + Fraction(1, 10), 3)),  # 11/30
        "4": approx(Fraction(1, 3)),
        "5": approx(Fraction(1, 3)),
    }
    nothing = run(ws, "--samples", "5", "--evaluate", grader)
    assert "Nothing to run: 3 selected tasks have already run every sample" in nothing.stdout
    assert len(ws.launches()) == 15
    # without --samples the tasks keep the rule of samples, and the words say samples, not successes
    plain = run(ws, "--evaluate", grader)
    assert "Nothing to run: 3 selected tasks have already run every sample" in plain.stdout, plain.stdout
    assert len(ws.launches()) == 15
    told = run(ws, "--report")
    assert "3 tasks, 15 samples: " in told.stdout, told.stdout
    assert "Evaluation: 8 passed of 15 evaluated (53%; 53% of the selected samples)" in told.stdout
    dry = run(ws, "--samples", "6", "--dry-run")
    assert "Would run 3 samples (0 tasks already done, skipped)" in dry.stdout, dry.stdout


@pytest.mark.e2e
def test_samples_that_all_score_alike_and_the_edges_k_equal_n_c_zero_c_n(ws: Workspace) -> None:
    # every sample of every task passes (c = n): pass@k = pass^k = 1 for every k, Wilson over samples
    ws.prompt("fine")
    ws.prompt("also-fine")
    assert run(ws, "--samples", "2", "--max-workers", "2").returncode == 0
    scores = summary(ws)["scores"]
    assert scores["pass_is"] == "status success" and scores["flaky"] == []
    assert scores["pass_at_k"] == {"1": {"value": 1.0, "tasks": 2}, "2": {"value": 1.0, "tasks": 2}}
    assert scores["pass_hat_k"] == {"1": {"value": 1.0, "tasks": 2}, "2": {"value": 1.0, "tasks": 2}}
    assert scores["interval_method"].startswith("Wilson score over every sample")
    assert scores["interval_95"] == [approx(rb.wilson_interval(4, 4)[0]), 1.0]
    # no sample passes (c = 0): everything 0, under a grader that fails them all
    assert run(ws, "--evaluate-only", "--evaluate", evaluator(ws, "fail")).returncode == 0
    scores = summary(ws)["scores"]
    assert scores["pass_is"] == "verdict passed" and scores["passes"] == 0
    assert scores["pass_at_k"]["2"]["value"] == 0.0 and scores["pass_hat_k"]["2"]["value"] == 0.0
    assert scores["interval_95"][0] == 0.0


@pytest.mark.e2e
def test_a_failed_sample_stands_with_samples_but_a_failed_task_runs_again_without(ws: Workspace) -> None:
    ws.prompt("broken", "STANDIN: stuck\n")  # the agent's own failure (an LLM outage would run again)
    first = run(ws, "--samples", "2")
    assert first.returncode == 1
    assert [(r["sample"], r["status"]) for r in read_jsonl(ws.results)] == [(1, "failed"), (2, "failed")]
    again = run(ws, "--samples", "2")
    assert "Nothing to run" in again.stdout and len(ws.launches()) == 2  # the agent's own outcome stands
    assert summary(ws)["scores"]["pass_at_k"]["2"]["value"] == 0.0

    single = ws.root / "single"
    assert run(ws, "--output-dir", str(single)).returncode == 1
    assert run(ws, "--output-dir", str(single)).returncode == 1
    assert [r["attempt"] for r in read_jsonl(single / "batch_results.jsonl")] == [1, 2]  # as in 0.4


@pytest.mark.e2e
def test_a_sample_that_never_reached_the_agent_runs_again(ws: Workspace) -> None:
    ws.prompt("once", "STANDIN: crash-times 1\n")  # the first launch: "Failed to start runtime", exit 1
    run(ws, "--samples", "2")
    [crashed, _] = read_jsonl(ws.results)
    assert "Failed to start runtime" in crashed["error"]
    again = run(ws, "--samples", "2")
    assert again.returncode == 0, again.stdout
    assert [(r["sample"], r["status"]) for r in read_jsonl(ws.results)][2:] == [(1, "success")]
    assert summary(ws)["scores"]["pass_at_1"] == 1.0


@pytest.mark.e2e
def test_the_heartbeat_counts_samples(ws: Workspace) -> None:
    ws.prompt("slow", "RUN: sleep 2.5\n")
    done = run(ws, "--samples", "2", "--max-workers", "2", "--heartbeat", "1")
    assert done.returncode == 0, done.stderr
    beats = [line for line in done.stdout.splitlines() if line.startswith("[heartbeat")]
    assert beats, done.stdout
    assert re.match(r"\[heartbeat \d\d:\d\d:\d\d\] 0/2 samples done, [12] running", beats[0]), beats[0]
    assert "2 samples to run" in done.stdout


# --- 7. comparing runs ----------------------------------------------------------------------------

PASSES, FAILS = "Say hello.\n", "STANDIN: llm-error\n"


def side(ws: Workspace, name: str, prompts: dict[str, str], *args: str) -> Path:
    """An output folder whose outcomes are known: each prompt passes or fails (the stand-in's
    scripted LLM error), run by this side's model and options."""
    folder = ws.root / f"prompts-{name}"
    folder.mkdir()
    for task, text in prompts.items():
        (folder / f"{task}.md").write_text(text)
    output = ws.root / name
    done = run(ws, "--prompt-dir", str(folder), "--output-dir", str(output), "--max-workers", "4", *args)
    assert done.returncode in (0, 1), done.stderr
    return output


def two_models(ws: Workspace) -> tuple[Path, Path]:
    """A (gpt-4o) and B (gpt-5-mini): 6 tasks fail -> pass, 1 pass -> fail, 2 pass on both, 1 fails
    on both, one task only in A, one only in B."""
    a = {f"up-{i}": FAILS for i in range(6)} | {"down": PASSES, "same-1": PASSES, "same-2": PASSES, "stuck": FAILS}
    b = {f"up-{i}": PASSES for i in range(6)} | {"down": FAILS, "same-1": PASSES, "same-2": PASSES, "stuck": FAILS}
    set_model(ws, "openai/gpt-4o")
    folder_a = side(ws, "A", a | {"only-a": PASSES})
    set_model(ws, "openai/gpt-5-mini")
    folder_b = side(ws, "B", b | {"only-b": FAILS})
    return folder_a, folder_b


def common_total(folder: Path, key: str, tasks: set[str]) -> float:
    return sum(r[key] or 0 for r in read_jsonl(folder / "batch_results.jsonl") if r["task_name"] in tasks)


@pytest.mark.e2e
def test_compare_lists_the_flips_apart_from_tasks_one_side_lacks_with_mcnemar(ws: Workspace) -> None:
    a, b = two_models(ws)
    common = {f"up-{i}" for i in range(6)} | {"down", "same-1", "same-2", "stuck"}

    data = json.loads(run(ws, "--report", "--compare", str(a), str(b), "--format", "json").stdout)
    [c] = data["comparisons"]
    assert c["a"]["experiment"]["model"] == "openai/gpt-4o" and c["b"]["experiment"]["model"] == "openai/gpt-5-mini"
    assert c["tasks_compared"] == 10 and c["only_in_a"] == ["only-a"] and c["only_in_b"] == ["only-b"]
    flips = {t["task"]: t["flip"] for t in c["tasks"]}
    assert {t for t, f in flips.items() if f == "fail -> pass"} == {f"up-{i}" for i in range(6)}
    assert {t for t, f in flips.items() if f == "pass -> fail"} == {"down"}
    assert flips["same-1"] == flips["same-2"] == flips["stuck"] == ""
    assert c["discordant"] == [1, 6]
    # exact McNemar, two-sided: 2 * P(X <= 1), X ~ Bin(7, 1/2) = 2 * (1 + 7) / 128
    assert c["p_value"] == pytest.approx(0.125) and c["method"].startswith("exact McNemar")
    # each side over the 10 tasks both have (only-a, a pass, and only-b, a failure, not counted)
    assert c["a"]["scores"]["pass_at_1"] == approx(Fraction(3, 10)) and c["a"]["scores"]["tasks"] == 10
    assert c["b"]["scores"]["pass_at_1"] == approx(Fraction(8, 10))
    assert c["a"]["scores"]["interval_95"] == [approx(x) for x in rb.wilson_interval(3, 10)]
    assert c["b"]["scores"]["interval_95"] == [approx(x) for x in rb.wilson_interval(8, 10)]
    assert c["difference"] == approx(Fraction(5, 10))
    cost_a, cost_b = common_total(a, "total_cost", common), common_total(b, "total_cost", common)
    assert cost_b > cost_a  # five more tasks finished, each paying its LLM calls
    assert c["cost"] == {"a": approx(cost_a), "b": approx(cost_b), "b_minus_a": approx(cost_b - cost_a)}
    time_a, time_b = common_total(a, "elapsed_time_seconds", common), common_total(b, "elapsed_time_seconds", common)
    assert c["time_seconds"]["b_minus_a"] == pytest.approx(time_b - time_a, abs=0.01)

    table = run(ws, "--report", "--compare", str(a), str(b))
    assert table.returncode == 0, table.stderr
    text = table.stdout
    assert "model: openai/gpt-4o -> openai/gpt-5-mini" in text
    assert "10 tasks in both; 7 tasks changed:" in text
    flipped = [line.split() for line in text.splitlines() if line.startswith("  ")]
    assert [(w[0], w[2], w[3]) for w in flipped] == [("pass", "fail", "down")] + [
        ("fail", "pass", f"up-{i}") for i in range(6)
    ]
    assert "Only in A (not counted): only-a" in text and "Only in B (not counted): only-b" in text
    assert "A: pass rate 30.0% [95%" in text and "B: pass rate 80.0% [95%" in text
    assert "p = 0.1250" in text and "1 pass -> fail, 6 fail -> pass" in text and "within noise" in text
    assert f"Cost over the tasks in both: A ${cost_a:.4f}, B ${cost_b:.4f}" in text

    markdown = run(ws, "--report", "--compare", str(a), str(b), "--format", "markdown").stdout
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "task" not in line]
    assert rows[0] == "| down | 1/1 | 0/1 | pass -> fail |"
    assert rows[1:7] == [f"| up-{i} | 0/1 | 1/1 | fail -> pass |" for i in range(6)]
    assert len(rows) == 10 and "only-a" not in "".join(rows) and "Only in A (not counted): only-a" in markdown

    page = ws.root / "x.html"
    html = run(ws, "--report", "--compare", str(a), str(b), "--format", "html", "--output", str(page))
    assert html.returncode == 0 and str(page) in html.stdout
    body = page.read_text()
    first_same = body.index("<tr class=same>")
    assert all(body.index(f"<td>{t}</td>") < first_same for t in ("down", *(f"up-{i}" for i in range(6))))
    assert "Only in A (not counted): only-a" in body and "p = 0.1250" in body
    assert body.count("A trajectory") >= 9 and body.count("B trajectory") >= 9  # a link per task that saved one


@pytest.mark.e2e
def test_compare_with_five_fail_to_pass_and_no_loss(ws: Workspace) -> None:
    prompts_a = {f"t{i}": FAILS for i in range(5)} | {"ok": PASSES}
    prompts_b = {f"t{i}": PASSES for i in range(5)} | {"ok": PASSES}
    set_model(ws, "openai/gpt-4o")
    a = side(ws, "A", prompts_a)
    set_model(ws, "openai/gpt-5-mini")
    b = side(ws, "B", prompts_b)
    [c] = json.loads(run(ws, "--report", "--compare", str(a), str(b), "--format", "json").stdout)["comparisons"]
    assert c["discordant"] == [0, 5] and c["p_value"] == pytest.approx(0.0625)  # 2 / 2**5


@pytest.mark.e2e
def test_compare_notes_sides_that_differ_in_more_than_the_model(ws: Workspace) -> None:
    set_model(ws, "openai/gpt-4o")
    a = side(ws, "A", {"t": PASSES})
    set_model(ws, "openai/gpt-5-mini")
    b = side(ws, "B", {"t": PASSES}, "--openhands-version", "1.6.0")
    text = run(ws, "--report", "--compare", str(a), str(b)).stdout
    [note] = [line for line in text.splitlines() if line.startswith("Note:")]
    assert "more than the model" in note and "openhands version" in note
    [c] = json.loads(run(ws, "--report", "--compare", str(a), str(b), "--format", "json").stdout)["comparisons"]
    assert "openhands_version" in c["differs_beyond_model"]


@pytest.mark.e2e
def test_compare_says_nothing_more_when_only_the_model_changed(ws: Workspace) -> None:
    set_model(ws, "openai/gpt-4o")
    a = side(ws, "A", {"t": PASSES})
    set_model(ws, "openai/gpt-5-mini")
    b = side(ws, "B", {"t": PASSES})
    [c] = json.loads(run(ws, "--report", "--compare", str(a), str(b), "--format", "json").stdout)["comparisons"]
    assert c["differs_beyond_model"] == []
    assert "Note:" not in run(ws, "--report", "--compare", str(a), str(b)).stdout


@pytest.mark.e2e
def test_compare_with_samples_uses_the_paired_bootstrap(ws: Workspace) -> None:
    set_model(ws, "openai/gpt-4o")
    a = side(ws, "A", {"t1": FAILS, "t2": PASSES, "t3": FAILS})
    set_model(ws, "openai/gpt-5-mini")
    b = side(ws, "B", {"t1": PASSES, "t2": PASSES, "t3": FAILS}, "--samples", "2")
    [c] = json.loads(run(ws, "--report", "--compare", str(a), str(b), "--format", "json").stdout)["comparisons"]
    assert c["method"].startswith("paired bootstrap over tasks") and c["discordant"] is None
    assert {t["task"]: (t["a"]["samples"], t["b"]["samples"], t["flip"]) for t in c["tasks"]} == {
        "t1": (1, 2, "better"),
        "t2": (1, 2, ""),
        "t3": (1, 2, ""),
    }
    low, high, p = rb.paired_bootstrap([1.0, 0.0, 0.0])
    assert c["difference"] == approx(Fraction(1, 3)) and c["p_value"] == pytest.approx(p)
    assert c["interval_95"] == [approx(low), approx(high)]
    assert "paired bootstrap" in run(ws, "--report", "--compare", str(a), str(b)).stdout


@pytest.mark.e2e
def test_compare_picks_one_experiment_of_a_folder_that_holds_two(ws: Workspace) -> None:
    set_model(ws, "openai/gpt-4o")
    both = side(ws, "both", {"t1": FAILS, "t2": PASSES})
    set_model(ws, "openai/gpt-5-mini")
    (ws.root / "prompts-both" / "t1.md").write_text(PASSES)
    done = run(ws, "--prompt-dir", str(ws.root / "prompts-both"), "--output-dir", str(both), "--label", "new")
    assert done.returncode == 0, done.stderr
    first_id = read_jsonl(both / "batch_results.jsonl")[0]["experiment_id"]

    error = one_line_error(run(ws, "--report", "--compare", str(both), str(both)))
    assert "holds 2 experiments" in error and f"{both}@new" in error and f"{both}@{first_id}" in error

    [c] = json.loads(
        run(ws, "--report", "--compare", f"{both}@{first_id[:6]}", f"{both}@new", "--format", "json").stdout
    )["comparisons"]
    assert (c["a"]["experiment"]["model"], c["b"]["experiment"]["model"]) == ("openai/gpt-4o", "openai/gpt-5-mini")
    assert c["b"]["experiment"]["label"] == "new" and c["discordant"] == [0, 1]
    assert "label: ? -> new" in " ".join(c["identity_changes"])
    assert one_line_error(run(ws, "--report", "--compare", f"{both}@nosuch", f"{both}@new"))


# --- 8. the dry run -------------------------------------------------------------------------------


@pytest.mark.e2e
def test_dry_run_shows_the_experiment_and_the_samples_to_run(ws: Workspace) -> None:
    set_model(ws, "openai/gpt-4o")
    ws.prompt("a")
    ws.prompt("b")
    assert run(ws, "--tasks", "a").returncode == 0
    plan = json.loads(run(ws, "--dry-run", "--format", "json", "--samples", "2", "--label", "try").stdout)
    e = plan["experiment"]
    assert e["model"] == "openai/gpt-4o" and e["label"] == "try" and re.fullmatch(r"e-[0-9a-f]{12}", e["id"])
    assert plan["samples"] == 2
    assert [(j["task"], j["sample"]) for j in plan["to_run"]] == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    # without a label: this experiment's task a has its first sample, only the rest runs
    plan = json.loads(run(ws, "--dry-run", "--format", "json", "--samples", "2").stdout)
    assert sorted((j["task"], j["sample"]) for j in plan["to_run"]) == [("a", 2), ("b", 1), ("b", 2)]
    assert plan["experiment"]["id"] == read_jsonl(ws.results)[0]["experiment_id"]
    table = run(ws, "--dry-run", "--samples", "2")
    assert table.returncode == 0, table.stderr
    assert "Would run 3 samples" in table.stdout
    assert f"Experiment {plan['experiment']['id']}: model openai/gpt-4o;" in table.stdout
    assert "run   a  (sample 2)" in table.stdout and "run   b  (sample 1)" in table.stdout
    assert len(ws.launches()) == 1


# --- 9. bad input ---------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize(
    "args, words",
    [
        (["--samples", "0"], "--samples"),
        (["--label", ""], "--label"),
        (["--compare", "x", "y"], "--compare goes with --report"),
        (["--report", "--compare", "x"], "--compare needs two output folders"),
    ],
)
def test_bad_experiment_options_are_one_line_usage_errors(ws: Workspace, args: list[str], words: str) -> None:
    ws.prompt("a")
    error = one_line_error(run(ws, *args))
    assert words in error
    assert ws.launches() == [] and not ws.output.exists()
