#!/usr/bin/env python3
"""The HTML report at scale: 1,000 tasks whose trajectories total about 100 MB.

    python benchmarks/report_bench.py [--tasks 1000] [--mb 100] [--repeats 3] [--runner PATH] [--keep]

The output folder is synthetic, written directly into a temporary folder (no task runs): a
results file with one record per attempt (about 10% of the tasks retried, so attempts > tasks, on
8 worker lanes), a stdout/stderr log per attempt, and a trajectory per attempt whose sizes follow
a long tail (most 20-300 KB, a few of several MB, one over the page's per-file cap, which the page
only links). Then it measures, each the median of --repeats, against baselines taken in the same
run (the machine is shared and noisy):
  report   `run-batch --report --format html` (run_batch.py under this Python): wall time and
           peak RSS, against `--report --format json` on the same folder (reading the records
           without drawing a page) and a bare `python -c pass`; the page's size
  browser  headless Chromium loading the page with --dump-dom (it prints the DOM after the load
           event): wall time against the same for a trivial page, and the DOM's size
Chromium is `chromium` or `chromium-browser` on PATH, or --chromium PATH; without one the browser
part is skipped with a line naming `bash .ci/install-chromium.sh`.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "run_batch.py"
STATUSES = [("success", 70), ("failed", 15), ("timeout", 8), ("error", 4), ("stalled", 3)]
STATE = {"success": "FINISHED", "failed": "ERROR", "timeout": "STOPPED", "error": None, "stalled": "RUNNING"}
VOCABULARY = "def class return import self value error file path test run build install config print for while if else"
WORDS = (VOCABULARY + " try except with open read write json list dict str int None True False").split()


def text_pool(rng: random.Random, size: int = 1 << 20) -> str:
    """About size characters of code-like lines to cut trajectory text from (fast to slice)."""
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(3, 14)))
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)


def cut(pool: str, rng: random.Random, n: int) -> str:
    start = rng.randrange(0, len(pool) - n) if n < len(pool) else 0
    return pool[start : start + n]


def write_trajectory(path: Path, target_bytes: int, pool: str, rng: random.Random) -> int:
    """A core.main-style trajectory of about target_bytes: a system prompt and a user message,
    then agent run actions (thought, command, growing llm_metrics) each with its observation."""
    calls = 0
    events: list[str] = [
        json.dumps({"id": 0, "source": "agent", "action": "system", "message": cut(pool, rng, 3000), "args": {}}),
        json.dumps(
            {
                "id": 1,
                "source": "user",
                "action": "message",
                "message": cut(pool, rng, 800),
                "args": {"content": "do the task"},
            }
        ),
    ]
    size = sum(len(e) for e in events)
    while size < target_bytes:
        calls += 1
        command = cut(pool, rng, rng.randint(10, 120)).replace("\n", " ")
        metrics = {
            "accumulated_cost": round(calls * 0.0031, 6),
            "accumulated_token_usage": {
                "prompt_tokens": 2500 * calls,
                "completion_tokens": 120 * calls,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
            },
        }
        action = {
            "id": len(events),
            "source": "agent",
            "action": "run",
            "message": f"Running command: {command}",
            "args": {"command": command, "thought": cut(pool, rng, rng.randint(50, 600))},
            "llm_metrics": metrics,
        }
        output = cut(pool, rng, min(int(rng.paretovariate(1.2) * 400), 200_000))
        observation = {
            "id": len(events) + 1,
            "source": "environment",
            "observation": "run",
            "content": output,
            "extras": {"command": command, "exit_code": rng.choice([0, 0, 0, 1])},
            "message": "",
        }
        for event in (action, observation):
            events.append(json.dumps(event))
            size += len(events[-1]) + 2
    with open(path, "w") as f:
        f.write("[" + ", ".join(events) + "]")
    return path.stat().st_size


def make_folder(root: Path, tasks: int, total_mb: float, rng: random.Random) -> dict[str, float]:
    """The synthetic output folder; returns what it holds."""
    out = root / "batch_output"
    (out / "trajectories").mkdir(parents=True)
    (out / "logs").mkdir()
    pool = text_pool(rng)
    names = [f"task-{i:04d}-{rng.choice(WORDS)}" for i in range(tasks)]
    attempts = [(name, 1) for name in names] + [(name, 2) for name in rng.sample(names, tasks // 10)]
    # trajectory sizes: a long tail scaled to total_mb, plus one file over the page's per-file cap
    weights = [min(rng.lognormvariate(0, 0.9), 40.0) for _ in attempts]
    huge = 40 << 20
    budget = max(int(total_mb * (1 << 20)) - huge, len(attempts) * 4096)
    scale = budget / sum(weights)
    sizes = [max(4096, int(w * scale)) for w in weights]
    sizes[rng.randrange(len(sizes))] = huge
    # start and end times: 8 worker lanes, each taking the next attempt when free (retries last)
    lanes = [0.0] * 8
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    records: list[dict[str, Any]] = []
    written = 0
    for (name, attempt), size in zip(attempts, sizes, strict=True):
        lane = lanes.index(min(lanes))
        duration = min(rng.lognormvariate(5.0, 0.9), 3600.0)
        start, lanes[lane] = lanes[lane], lanes[lane] + duration + 0.5
        stem = name if attempt == 1 else f"{name}.attempt-{attempt}"
        status = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
        if attempt == 1 and (name, 2) in attempts:
            status = "error"  # what was retried
        trajectory = out / "trajectories" / f"{stem}.json"
        written += write_trajectory(trajectory, size, pool, rng)
        logs = (out / "logs" / f"{stem}.stdout.log", out / "logs" / f"{stem}.stderr.log")
        logs[0].write_text("")
        logs[1].write_text(cut(pool, rng, 600))
        calls = rng.randint(3, 80)
        records.append(
            {
                "task_name": name,
                "prompt_file": str(root / "prompts" / f"{name}.md"),
                "status": status,
                "return_code": 0 if status != "error" else 1,
                "elapsed_time_seconds": round(duration, 3),
                "stdout": "",
                "stderr": cut(pool, rng, 300),
                "total_cost": round(calls * 0.0031, 6) if status != "error" else None,
                "total_input_tokens": 2500 * calls,
                "total_output_tokens": 120 * calls,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
                "metrics_source": "trajectory",
                "agent_state": STATE[status],
                "error": None if status == "success" else f"{status}: " + cut(pool, rng, 120).replace("\n", " "),
                "trajectory_path": str(trajectory),
                "attempt": attempt,
                "started_at": (t0 + timedelta(seconds=start)).isoformat().replace("+00:00", "Z"),
                "finished_at": (t0 + timedelta(seconds=start + duration)).isoformat().replace("+00:00", "Z"),
                "session_name": stem,
                "session_id": f"{stem[:16]}-0123456789abcde",
                "stdout_log": str(logs[0]),
                "stderr_log": str(logs[1]),
                "command": ["python", "-m", "openhands.core.main"],
                "prompt_sha256": None,
                "run_id": "bench001",
            }
        )
    records.sort(key=lambda r: r["finished_at"])
    with open(out / "batch_results.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return {
        "tasks": tasks,
        "attempts": len(records),
        "trajectory_mb": written / (1 << 20),
        "largest_mb": max(sizes) / (1 << 20),
        "over_cap": sum(s > 32 << 20 for s in sizes),
    }


# Runs the command and prints its peak RSS: a small parent, so the figure is the command's own (a
# child forked from this process would start with this process's high-water mark).
RSS_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:], stdin=subprocess.DEVNULL, "
    "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)"
)


def measured(argv: list[str], cwd: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit code of one run, its output discarded."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", RSS_WRAPPER, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=True,
    )
    wall = time.perf_counter() - t0
    rss, code = done.stdout.split()
    return wall, int(rss) / 1024, int(code)


def chromium_argv(chromium: str, profile: Path, url: str) -> list[str]:
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
    ]


def dump_dom(chromium: str, root: Path, url: str) -> tuple[float, int]:
    """Wall time of `chromium --dump-dom url` with a fresh profile, and the DOM's size."""
    profile = Path(tempfile.mkdtemp(prefix="profile-", dir=root))
    try:
        t0 = time.perf_counter()
        done = subprocess.run(
            chromium_argv(chromium, profile, url), capture_output=True, timeout=300, stdin=subprocess.DEVNULL
        )
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if done.returncode != 0 or not done.stdout:
        raise SystemExit(f"{chromium} --dump-dom {url} failed ({done.returncode}): {done.stderr[-500:]!r}")
    return wall, len(done.stdout)


def cdp_load_times(chromium: str, root: Path, trivial: Path, page: Path, n: int) -> None:
    """One browser, one tab per load: from Page.navigate to the load event, over the DevTools
    protocol (the client of tests/test_html_report.py, stdlib only but for pytest, which the test
    extras bring), and the page's own navigation timing."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    try:
        from test_html_report import Browser
    except ImportError as exc:
        print(f"  (load over DevTools skipped: {exc}; install the test extras)")
        return
    browser = Browser(chromium, Path(tempfile.mkdtemp(prefix="profile-", dir=root)))
    try:
        figures: dict[str, list[tuple[float, float, float]]] = {"trivial": [], "report": []}
        for _ in range(n + 1):  # the first round warms up
            for name, path in (("trivial", trivial), ("report", page)):
                tab = browser.page()
                try:
                    for domain in ("Page", "Runtime"):
                        tab.call(f"{domain}.enable")
                    t0 = time.perf_counter()
                    tab.call("Page.navigate", url=path.as_uri())
                    tab.wait_for("Page.loadEventFired", timeout=120)
                    wall = time.perf_counter() - t0
                    timing = tab.js(
                        "(t => [t.domContentLoadedEventEnd, t.loadEventStart])"
                        "(performance.getEntriesByType('navigation')[0])"
                    )
                    figures[name].append((wall, timing[0] / 1000, timing[1] / 1000))
                finally:
                    tab.close()
    finally:
        browser.stop()
    print(f"browser over DevTools (one Chromium, a new tab per load, median of {n} after a warm-up):")
    for name, runs in figures.items():
        wall, dcl, load = (statistics.median(r[i] for r in runs[1:]) for i in range(3))
        print(
            f"  {name:<8} navigate -> load event {wall * 1000:7.0f} ms  (page's own timing: DOMContentLoaded "
            f"{dcl * 1000:.0f} ms, load {load * 1000:.0f} ms)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--mb", type=float, default=100.0, help="trajectories in all, in MB (default: 100)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--runner", type=Path, default=SCRIPT, help="the run_batch.py to measure (default: the checkout's)")
    p.add_argument("--chromium", help="the browser (default: chromium or chromium-browser on PATH)")
    p.add_argument("--keep", action="store_true", help="keep the synthetic folder and say where it is")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        t0 = time.perf_counter()
        held = make_folder(root, args.tasks, args.mb, random.Random(42))
        made = time.perf_counter() - t0
        out = root / "batch_output"
        print(
            f"data: {held['tasks']:.0f} tasks, {held['attempts']:.0f} attempts, trajectories "
            f"{held['trajectory_mb']:.1f} MB in all (largest {held['largest_mb']:.1f} MB, {held['over_cap']:.0f} "
            f"over the page's per-file cap), written in {made:.1f} s"
        )
        n = args.repeats
        py = sys.executable
        bare = statistics.median(measured([py, "-c", "pass"], root)[0] for _ in range(n))
        report = [py, str(args.runner), "--report", "--output-dir", str(out)]
        json_runs = [measured([*report, "--format", "json"], root) for _ in range(n)]
        html_runs = [measured([*report, "--format", "html"], root) for _ in range(n)]
        page = out / "report.html"
        if not page.exists():
            raise SystemExit(f"--report --format html wrote no {page} (exit {html_runs[-1][2]})")
        size = page.stat().st_size
        html_wall, json_wall = statistics.median(r[0] for r in html_runs), statistics.median(r[0] for r in json_runs)
        print(f"report (median of {n}): bare python {bare * 1000:.0f} ms")
        print(f"  --report --format json   {json_wall:6.2f} s  peak RSS {max(r[1] for r in json_runs):6.1f} MB")
        print(
            f"  --report --format html   {html_wall:6.2f} s  peak RSS {max(r[1] for r in html_runs):6.1f} MB  "
            f"({html_wall - json_wall:+.2f} s for the page over json, {html_wall / bare:.0f}x bare python)"
        )
        print(
            f"  page: {size / (1 << 20):.2f} MB ({size:,} bytes) for {held['trajectory_mb']:.0f} MB of trajectories, "
            f"{size / held['tasks'] / 1024:.1f} KB per task"
        )
        chromium = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
        if not chromium:
            print("browser: skipped, no Chromium (install it with `bash .ci/install-chromium.sh`)")
            return
        trivial = root / "trivial.html"
        trivial.write_text(
            "<!doctype html><html><head><meta charset=utf-8><title>t</title></head><body>hi</body></html>"
        )
        dump_dom(chromium, root, trivial.as_uri())  # warm the disk cache for both
        base_runs = [dump_dom(chromium, root, trivial.as_uri()) for _ in range(n)]
        page_runs = [dump_dom(chromium, root, page.as_uri()) for _ in range(n)]
        base, loaded = statistics.median(r[0] for r in base_runs), statistics.median(r[0] for r in page_runs)
        print(f"browser (headless Chromium --dump-dom: start, load, print the DOM; fresh profile each, median of {n}):")
        print(f"  trivial page             {base:6.2f} s")
        print(
            f"  the report               {loaded:6.2f} s  ({loaded - base:+.2f} s over the trivial page; "
            f"DOM {page_runs[-1][1] / (1 << 20):.2f} MB)"
        )
        cdp_load_times(chromium, root, trivial, page, n)
    finally:
        if args.keep:
            print(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
