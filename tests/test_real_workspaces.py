"""--workspace-per-task and --evaluate with the real OpenHands (openhands-ai 1.6.0 `core.main`):
the CLI runtime works in the workspace run_batch gives each attempt, and the evaluator sees it.

The OpenHands of `bash examples/install-openhands.sh` (or OPENHANDS_PYTHON), the CLI runtime and
the scripted LLM of tests/llm_server.py, as in test_real_openhands.py (whose make_project builds
the project); skipped with the install command when there is no OpenHands, failed instead when
RUN_BATCH_TESTS_REQUIRE asks for openhands.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from conftest import processes_with, read_jsonl
from llm_server import ScriptedLLM
from test_real_openhands import (
    REQUIRED,
    SKIP,
    make_project,
    openhands_is_there,  # noqa: F401 (an autouse fixture: fails when required but missing)
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(SKIP is not None and not REQUIRED, reason=SKIP or ""),
]

# The evaluator: passed when <workspace>/result.txt holds `made-by-agent`; says what it found.
CHECK = r"""
import json, sys
from pathlib import Path
task, workspace = sys.argv[1], sys.argv[2]
found = Path(workspace, "result.txt").read_text() if Path(workspace, "result.txt").is_file() else None
listing = sorted(p.name for p in Path(workspace).iterdir()) if workspace and Path(workspace).is_dir() else None
ok = found == "made-by-agent\n"
print(json.dumps({"score": 1 if ok else 0, "details": {"task": task, "found": found, "listing": listing}}))
sys.exit(0 if ok else 1)
"""


def test_each_task_works_in_its_own_workspace_and_the_evaluator_sees_it(tmp_path: Path, server: ScriptedLLM) -> None:
    project, prompts, env, base = make_project(tmp_path, server)
    (prompts / "first.md").write_text("Write the result file.\nRUN: echo made-by-agent > result.txt\n")
    (prompts / "second.md").write_text("Write the result file too.\nRUN: echo made-by-agent > result.txt\n")
    check = tmp_path / "check.py"
    check.write_text(CHECK)
    evaluate = f"{shlex.quote(sys.executable)} {shlex.quote(str(check))} {{task}} {{workspace}}"
    done = subprocess.run(
        [
            *base,
            "--workspace-per-task",
            "--max-workers",
            "2",
            "--timeout",
            "240",
            "--evaluate",
            evaluate,
            "--fail-on-evaluation",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = project / "batch_output"
    records = {r["task_name"]: r for r in read_jsonl(output / "batch_results.jsonl")}
    assert set(records) == {"first", "second"}, done.stdout + done.stderr
    for name, r in records.items():
        assert (r["status"], r["agent_state"]) == ("success", "FINISHED"), r["stderr"]
        workspace = Path(r["workspace"])
        assert workspace == output / "workspaces" / name
        assert (workspace / "result.txt").read_text() == "made-by-agent\n"  # the agent wrote it there
        ev = r["evaluation"]
        assert ev["verdict"] == "passed", json.dumps(ev)
        assert ev["details"]["task"] == name and ev["details"]["found"] == "made-by-agent\n"
    assert done.returncode == 0, done.stdout + done.stderr
    assert records["first"]["workspace"] != records["second"]["workspace"]
    spans = sorted(
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in records.values()
    )
    assert spans[1][0] < spans[0][1]  # the two ran at the same time
    assert not (tmp_path / "workspace" / "result.txt").exists()  # not in the config's shared workspace
    assert not (project / "result.txt").exists()
    assert "Evaluation: 2 passed of 2 evaluated" in done.stdout
    assert processes_with(f"RUN_BATCH_RUN_ID={records['first']['run_id']}") == []
