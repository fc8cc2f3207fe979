#!/usr/bin/env python3
"""The runner's own cost of per-task limits: --task-memory (and --task-cpus) on against off.

    python benchmarks/limits.py [--tasks 60] [--workers 4] [--repeats 5] [--memory 1G] [--cpus 2]
                                [--seconds 0] [--runner PATH]

The same batch of stand-in tasks (tests/fake_openhands.py) runs with and without limits,
interleaved ABBA (off, on, on, off, ...) so drift hits both alike, each run in a fresh output
folder. Each task runs `true` (the worst case: the runner's fixed cost per attempt is all there
is), or `sleep S` with --seconds S (an attempt that lasts, followed all along). Measured per run:
the runner's own CPU seconds (its threads only, from /proc/<pid>/stat read after it exited and
before it is reaped: its tasks' CPU is not in it) and the wall time. Printed: each side's median
and best, and the ratio on/off of the medians, against the issue's goal (issue 25: within 5 %),
with the difference per attempt in milliseconds. With limits on, each attempt is a control group
of its own (made, limited, joined, read, removed); without, the monitor samples the attempt's
processes instead. Needs what --task-memory needs (cgroup v2 delegated to you, or v1 as root);
says so and stops otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import STANDIN, run_measured, workspace  # noqa: E402  (the benchmarks' shared helpers)

ROOT = HERE.parent


def argv_for(script: Path, project: Path, prompts: Path, output: Path, workers: int, limits: list[str]) -> list[str]:
    return [
        sys.executable,
        str(script),
        "--prompt-dir",
        str(prompts),
        "--project-dir",
        str(project),
        "--output-dir",
        str(output),
        "--max-workers",
        str(workers),
        "--quiet",
        "--command",
        f"{shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))}",
        *limits,
    ]


def check_limits_work(script: Path, project: Path, prompts: Path, limits: list[str]) -> str | None:
    """None when the runner accepts the limits here, else its usage error."""
    probe = Path(tempfile.mkdtemp(prefix="rb-limits-probe-"))
    done = subprocess.run(
        [*argv_for(script, project, prompts, probe, 1, limits), "--limit", "1"], capture_output=True, text=True
    )
    shutil.rmtree(probe, ignore_errors=True)
    return None if done.returncode in (0, 1) else done.stderr.strip()


def one_run(script: Path, project: Path, prompts: Path, workers: int, limits: list[str], tasks: int) -> dict:
    output = Path(tempfile.mkdtemp(prefix="rb-limits-out-"))
    try:
        result = run_measured(argv_for(script, project, prompts, output, workers, limits))
        lines = (output / "batch_results.jsonl").read_text().splitlines()
        assert len(lines) == tasks, f"{len(lines)} records for {tasks} tasks"
        sources = {json.loads(line).get("resource_source") for line in lines}
        result["sources"] = sources
        result["load"] = os.getloadavg()[0]
        return result
    finally:
        shutil.rmtree(output, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each side (interleaved)")
    parser.add_argument("--memory", default="1G", help="--task-memory of the limited side (default: 1G)")
    parser.add_argument("--cpus", default=None, help="--task-cpus of the limited side too (default: none)")
    parser.add_argument("--seconds", type=float, default=0, help="each task sleeps this long (default: 0, `true`)")
    parser.add_argument("--runner", type=Path, default=ROOT / "run_batch.py", help="the run_batch.py to measure")
    args = parser.parse_args()
    script = args.runner.resolve()
    limits = ["--task-memory", args.memory] + (["--task-cpus", args.cpus] if args.cpus else [])
    work = f"sleep {args.seconds:g}" if args.seconds else "true"
    root, project, prompts = workspace(args.tasks, f"Trivial.\nRUN: {work}\n")
    try:
        problem = check_limits_work(script, project, prompts, limits)
        if problem:
            raise SystemExit(f"limits: cannot measure here: {problem}")
        sides: dict[str, list[str]] = {"off": [], "on": limits}
        runs: dict[str, list[dict]] = {"off": [], "on": []}
        for i in range(args.repeats):  # ABBA: off on, on off, ...
            for side in ("off", "on") if i % 2 == 0 else ("on", "off"):
                runs[side].append(one_run(script, project, prompts, args.workers, sides[side], args.tasks))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert all(r["sources"] == {"cgroup"} for r in runs["on"]), "the limited runs' records do not say cgroup"
    print(
        f"limits: {args.tasks} stand-in tasks running `{work}`, {args.workers} workers, {os.cpu_count()} CPUs; "
        f"{args.repeats} runs of each side, interleaved ABBA; limited side: {shlex.join(limits)}; runner CPU from "
        "/proc/<pid>/stat (its own threads), medians [best]"
    )
    median: dict[str, dict[str, float]] = {}
    for side in ("off", "on"):
        cpu = [r["cpu"] for r in runs[side]]
        wall = [r["wall"] for r in runs[side]]
        median[side] = {"cpu": statistics.median(cpu), "wall": statistics.median(wall)}
        print(
            f"  {side:<4} runner CPU {median[side]['cpu']:6.2f}s [{min(cpu):.2f}] = "
            f"{median[side]['cpu'] / args.tasks * 1000:5.2f} ms/attempt; wall {median[side]['wall']:6.2f}s "
            f"[{min(wall):.2f}]  (CPU: {', '.join(f'{c:.2f}' for c in cpu)}; "
            f"load {statistics.median(r['load'] for r in runs[side]):.1f})"
        )
    cpu_ratio = median["on"]["cpu"] / median["off"]["cpu"]
    wall_ratio = median["on"]["wall"] / median["off"]["wall"]
    extra = (median["on"]["cpu"] - median["off"]["cpu"]) / args.tasks * 1000
    print(f"  on/off: runner CPU {cpu_ratio:.3f}x ({extra:+.2f} ms per attempt), wall {wall_ratio:.3f}x")
    print(f"  goal: the runner's CPU with limits within 5 % of without: {'met' if cpu_ratio <= 1.05 else 'NOT met'}")


if __name__ == "__main__":
    main()
