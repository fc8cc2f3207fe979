#!/usr/bin/env python3
"""Grade one attempt of an example prompt (examples/prompts/*.md) for `run-batch --evaluate`.

    evaluate.py TASK WORKSPACE [TRAJECTORY]

run_batch fills these in from `--evaluate '... evaluate.py {task} {workspace} {trajectory}'`, with
`--workspace-per-task` so that WORKSPACE is the attempt's own folder ({workspace} is empty
without it, and {trajectory} is empty when OpenHands saved none). Each prompt asks for something
that can be checked:

    hello-file      WORKSPACE/hello.txt holds the single line `hello, world`
    count-files     the agent reported the number of files in WORKSPACE (hidden ones included)
    python-version  the agent reported the version `python3 --version` (or `python --version`) gives
                    in WORKSPACE
    slow-task       the agent reported an ISO 8601 date and time at least ~5 s after the task began

"Reported" means said in the trajectory: an agent message, its finish message, or the output of a
command it ran. Exit 0 passed, 1 failed, 2 could not grade (unknown task, no workspace): run_batch
records `error` for the last. The last line printed is JSON: {"score": 0..1, "details": {...}}.
Standard library only; Python 3.9 or later.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Checks = dict[str, Any]


def reported_texts(trajectory: str) -> list[str]:
    """What the agent said or saw: its messages, its finish message, its commands' output."""
    if not trajectory:
        return []
    try:
        with open(trajectory, encoding="utf-8") as f:
            events = json.load(f)
    except (OSError, ValueError):
        return []
    texts: list[str] = []
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict):
            continue
        args: dict[str, Any] = event["args"] if isinstance(event.get("args"), dict) else {}
        if event.get("observation") == "run" and isinstance(event.get("content"), str):
            texts.append(event["content"])  # a command's output
        elif event.get("source") == "agent" and event.get("action") in ("message", "finish"):
            for key in ("content", "final_thought", "thought"):
                if isinstance(args.get(key), str):
                    texts.append(args[key])
            if event.get("action") == "message" and isinstance(event.get("message"), str):
                texts.append(event["message"])
        else:
            texts += v1_texts(event)
    return texts


def v1_texts(event: dict[str, Any]) -> list[str]:
    """The same from a V1 CLI event (its trajectory is its conversation's events): a terminal
    ObservationEvent's output, an agent MessageEvent's text, a FinishAction's message."""
    found: list[str] = []
    kind = event.get("kind")
    observation = event.get("observation") if isinstance(event.get("observation"), dict) else {}
    action = event.get("action") if isinstance(event.get("action"), dict) else {}
    if kind == "ObservationEvent" and event.get("tool_name") == "terminal":
        found += [
            c["text"] for c in observation.get("content", []) if isinstance(c, dict) and isinstance(c.get("text"), str)
        ]
    elif kind == "ActionEvent" and action.get("kind") == "FinishAction" and isinstance(action.get("message"), str):
        found.append(action["message"])
    elif kind == "MessageEvent" and event.get("source") == "agent":
        message = event.get("llm_message") if isinstance(event.get("llm_message"), dict) else {}
        content = message.get("content") if isinstance(message.get("content"), list) else []
        found += [c["text"] for c in content if isinstance(c, dict) and isinstance(c.get("text"), str)]
    return found


def event_times(trajectory: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(the task's message, the last event) as local times, from the trajectory's timestamps."""
    try:
        with open(trajectory, encoding="utf-8") as f:
            events = json.load(f)
    except (OSError, ValueError):
        return None, None
    times = []
    start = None
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict) or not isinstance(event.get("timestamp"), str):
            continue
        try:
            when = dt.datetime.fromisoformat(event["timestamp"])
        except ValueError:
            continue
        when = when.astimezone() if when.tzinfo else when.replace(tzinfo=dt.datetime.now().astimezone().tzinfo)
        times.append(when)
        said = event.get("action") == "message" or event.get("kind") == "MessageEvent"  # V0, V1
        if start is None and event.get("source") == "user" and said:
            start = when
    return start, (max(times) if times else None)


def check_hello_file(workspace: Path, _trajectory: str) -> Checks:
    path = workspace / "hello.txt"
    exists = path.is_file()
    content = path.read_text(encoding="utf-8", errors="replace") if exists else None
    return {
        "hello.txt exists": exists,
        "content is `hello, world`": content is not None and content.rstrip("\n") == "hello, world",
        "content": None if content is None else content[:200],
    }


def count_files(workspace: Path) -> int:
    return sum(len(files) for _root, _dirs, files in os.walk(workspace))


def check_count_files(workspace: Path, trajectory: str) -> Checks:
    expected = count_files(workspace)
    texts = reported_texts(trajectory)
    numbers = [int(n) for text in texts for n in re.findall(r"(?<![\w.])(\d+)(?![\w.])", text)]
    return {
        "trajectory read": bool(texts),
        "files in workspace": expected,
        "number reported": expected in numbers,
        "numbers seen": numbers[-10:],
    }


def python_versions(workspace: Path) -> list[str]:
    found = []
    for program in ("python3", "python"):
        try:
            done = subprocess.run([program, "--version"], cwd=workspace, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        match = re.search(r"\d+\.\d+\.\d+\S*", done.stdout + done.stderr)
        if match:
            found.append(match.group(0))
    return found


def check_python_version(workspace: Path, trajectory: str) -> Checks:
    versions = python_versions(workspace)
    texts = reported_texts(trajectory)
    said = [v for text in texts for v in re.findall(r"\d+\.\d+\.\d+\S*", text)]
    return {
        "trajectory read": bool(texts),
        "installed": versions,
        "reported": said[-5:],
        "version reported": any(v in versions for v in said),
    }


ISO_8601 = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?")


def parse_iso(text: str) -> dt.datetime | None:
    text = text.replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.astimezone() if when.tzinfo else when.replace(tzinfo=dt.datetime.now().astimezone().tzinfo)


def check_slow_task(_workspace: Path, trajectory: str) -> Checks:
    start, last = event_times(trajectory)
    dates = [d for text in reported_texts(trajectory) for d in map(parse_iso, ISO_8601.findall(text)) if d]
    # seconds are cut, and the agent may start its wait at once: 4 s after the task began is enough
    waited = [
        d
        for d in dates
        if start is not None
        and d >= start + dt.timedelta(seconds=4)
        and (last is None or d <= last + dt.timedelta(seconds=60))
    ]
    return {
        "trajectory read": start is not None,
        "dates reported": [d.isoformat() for d in dates[-5:]],
        "task began": start.isoformat() if start else None,
        "a date at least 4 s after the start": bool(waited),
    }


CHECKS: dict[str, tuple[Callable[[Path, str], Checks], tuple[str, ...]]] = {
    "hello-file": (check_hello_file, ("hello.txt exists", "content is `hello, world`")),
    "count-files": (check_count_files, ("trajectory read", "number reported")),
    "python-version": (check_python_version, ("trajectory read", "version reported")),
    "slow-task": (check_slow_task, ("trajectory read", "a date at least 4 s after the start")),
}


def verdict(details: dict[str, Any], score: float | None, code: int) -> int:
    print(json.dumps({"score": score, "details": details}, ensure_ascii=False))
    return code


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return verdict({"error": "usage: evaluate.py TASK WORKSPACE [TRAJECTORY]"}, None, 2)
    task, workspace = argv[0], argv[1]
    trajectory = argv[2] if len(argv) == 3 else ""
    if task not in CHECKS:
        return verdict({"error": f"no check for task {task!r}; known: {', '.join(sorted(CHECKS))}"}, None, 2)
    if not workspace or not Path(workspace).is_dir():
        return verdict({"error": f"no workspace {workspace!r}: run run-batch with --workspace-per-task"}, None, 2)
    check, required = CHECKS[task]
    details = check(Path(workspace), trajectory)
    passed = [bool(details[name]) for name in required]
    score = round(sum(passed) / len(passed), 3)
    for name in required:
        print(f"{'ok  ' if details[name] else 'FAIL'} {name}")
    return verdict(details, score, 0 if all(passed) else 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
