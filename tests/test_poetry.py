"""The default command inside a Poetry project: `poetry run` resolved once per batch must give
OpenHands the same interpreter and environment as `poetry run` at every launch (real Poetry)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SCRIPT, STANDIN, Workspace, read_jsonl

POETRY = shutil.which("poetry") or str(Path(sys.executable).parent / "poetry")
pytestmark = [
    pytest.mark.e2e,  # real Poetry: seconds
    pytest.mark.skipif(
        not os.access(POETRY, os.X_OK),
        reason="Poetry is not installed: the README's test command installs it (pip install -e '.[test]')",
    ),
]

PER_TASK = {"RUN_BATCH_RUN_ID", "RUN_BATCH_SESSION", "RUN_BATCH_RUNNER", "SAVE_TRAJECTORY_PATH", "_", "TMUX_TMPDIR"}


def test_resolved_interpreter_gives_the_same_environment_as_poetry_run(ws: Workspace) -> None:
    (ws.project / "pyproject.toml").write_text(
        '[tool.poetry]\nname = "oh"\nversion = "0.1.0"\ndescription = ""\nauthors = ["t <t@example.com>"]\n'
        'package-mode = false\n[tool.poetry.dependencies]\npython = ">=3.11"\n'
    )
    # `python -m openhands.core.main` from the checkout finds this package first: the stand-in
    module = ws.project / "openhands" / "core"
    module.mkdir(parents=True)
    (ws.project / "openhands" / "__init__.py").write_text("")
    (module / "__init__.py").write_text("")
    (module / "main.py").write_text(f"import runpy\nrunpy.run_path({str(STANDIN)!r}, run_name='__main__')\n")
    env = {
        **ws.env,
        "PATH": f"{Path(POETRY).parent}:{ws.env['PATH']}",
        "POETRY_VIRTUALENVS_IN_PROJECT": "true",
        "POETRY_CACHE_DIR": str(ws.root / "poetry-cache"),
    }
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([POETRY, "install", "-q"], cwd=ws.project, env=env, check=True, timeout=300, capture_output=True)
    base = [sys.executable, str(SCRIPT), "--prompt-dir", str(ws.prompts), "--project-dir", str(ws.project)]
    ws.prompt("one")
    direct = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
    assert direct.returncode == 0, direct.stderr
    wrapped = subprocess.run(
        [*base, "--keep-poetry-run", "--rerun"], env=env, capture_output=True, text=True, timeout=120
    )
    assert wrapped.returncode == 0, wrapped.stderr
    first, second = sorted(ws.launches(), key=lambda l: l["sid"] != read_jsonl(ws.results)[0]["session_id"])
    r1, r2 = read_jsonl(ws.results)
    assert r1["command"][:3] == [str(ws.project / ".venv" / "bin" / "python"), "-m", "openhands.core.main"]
    assert Path(r2["command"][0]).name == "poetry" and r2["command"][1:3] == ["run", "python"]
    assert first["executable"] == second["executable"] and first["sys_path_prefix"] == second["sys_path_prefix"]
    strip = lambda e: {k: v for k, v in e.items() if k not in PER_TASK}
    assert strip(first["env"]) == strip(second["env"])
    assert first["env"]["VIRTUAL_ENV"] == str(ws.project / ".venv")
