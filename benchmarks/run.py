#!/usr/bin/env python3
"""run_batch's own cost, measured against baselines run in the same process on the same machine.

    python benchmarks/run.py [--quick] [--only NAME ...]

Every figure is printed as a ratio to a baseline measured in this run (the machine is shared and
noisy), never compared with a constant from another day:
  overhead   120 trivial tasks on 8 workers: run_batch vs `xargs -P 8` vs GNU `parallel -j 8`, wall and CPU
  memory     8 tasks printing N MB each, two sizes: the runner's peak RSS must not grow with N
  hostile    a 200 MB line without newline, a 150 MB trajectory, a 5 MB error: peak RSS vs an ordinary task
  scaling    32 tasks of 2 s on 8 workers vs the ideal 8 s
  startup    `--help` and `--report` on 1,000 records vs a bare `python -c pass`
  schedule   longest-first vs file order on heavy-tailed durations vs the lower bound
  launch     `poetry run python` vs the resolved interpreter, per launch
  follow     8 tasks writing event files at a steady rate: the runner's CPU seconds per wall second
             with its events followed vs the same events in a folder run_batch never looks at;
             peak RSS with 10,000 events per task
  dispatch   2,000 instant tasks (`true`) on 16 workers vs `xargs -P 16 true` on the same prompts;
             the same runner with `os.fsync` a no-op (the price of durability), and --compare's;
             the runner's CPU per task, one /proc sweep, and 2,000 ResultsFile.append_json with
             and without fsync, on 1 and on 16 threads
  template   --workspace-template of ~1 GB (a git repository, and the same files as a plain folder):
             run_batch.make_workspace per task, time and disk, vs `cp -a --reflink=never` and `=auto`,
             `git clone --shared` and `git worktree add` by hand; says whether reflinks work here
The OpenHands stand-in (tests/fake_openhands.py) is the task everywhere but in `follow`
(benchmarks/event_writer.py: many events over time) and `dispatch` (`true`: no work at all).
--runner PATH benchmarks another copy of run_batch.py (say, before and after a change);
--compare PATH runs a second copy beside it in `dispatch`, interleaved (say, an older commit's).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "run_batch.py"  # --runner replaces it
COMPARE: Path | None = None  # --compare: a second run_batch.py, measured beside SCRIPT in `dispatch`
STANDIN = ROOT / "tests" / "fake_openhands.py"
EVENT_WRITER = Path(__file__).resolve().parent / "event_writer.py"
rb: Any = None  # the run_batch module under test, imported by load_runner()


def load_runner(path: Path) -> None:
    """Import the run_batch.py under test (the checkout's unless --runner names another copy)."""
    global SCRIPT, rb
    SCRIPT = path.resolve()
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("run_batch", SCRIPT)
    assert spec is not None and spec.loader is not None
    rb = importlib.util.module_from_spec(spec)
    sys.modules["run_batch"] = rb  # dataclasses look their module up while the class is made
    spec.loader.exec_module(rb)


def workspace(tasks: int, prompt: str) -> tuple[Path, Path, Path]:
    root = Path(tempfile.mkdtemp(prefix="rb-bench-"))
    project, prompts = root / "project", root / "prompts"
    project.mkdir()
    prompts.mkdir()
    (project / "config.toml").write_text(
        f'[core]\nruntime = "cli"\nfile_store_path = "{root / "fs"}"\n'
        f'save_trajectory_path = "{root / "traj"}"\n[llm]\ninput_cost_per_token = 0.000001\n'
    )
    (root / "traj").mkdir()
    for i in range(tasks):
        (prompts / f"task-{i:04d}.md").write_text(prompt)
    return root, project, prompts


def timed(argv: list[str], **kw: object) -> float:
    """Wall time of one command; exit 1 (some task not a success) is a normal outcome here."""
    t0 = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    if done.returncode not in (0, 1):
        raise SystemExit(f"benchmark command failed ({done.returncode}): {shlex.join(argv)}\n{done.stderr[-2000:]!r}")
    return elapsed


def run_batch_argv(project: Path, prompts: Path, workers: int, *extra: str, script: Path | None = None) -> list[str]:
    return [
        sys.executable,
        str(script or SCRIPT),
        "--prompt-dir",
        str(prompts),
        "--project-dir",
        str(project),
        "--max-workers",
        str(workers),
        "--quiet",
        "--rerun",
        "--command",
        f"{shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))}",
        *extra,
    ]


def timed_cpu(argv: list[str], **kw: object) -> tuple[float, float]:
    """Wall time and CPU seconds (user + system of the command and every process it reaped, from
    this process's RUSAGE_CHILDREN before and after) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = timed(argv, **kw)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_overhead(quick: bool) -> None:
    """Issue 24's comparison: 120 stand-in tasks that each finish in a moment, 8 workers, run_batch
    against `xargs -P 8` starting the same commands; wall time and CPU (runner and tasks)."""
    tasks, workers = (60 if quick else 120), 8
    root, project, prompts = workspace(tasks, "Trivial.\nRUN: true\n")
    files = "\0".join(str(p) for p in sorted(prompts.glob("*.md"))) + "\0"
    standin = [sys.executable, str(STANDIN), "--config-file", str(project / "config.toml"), "-f"]
    runs: dict[str, list[tuple[float, float]]] = {"xargs -P 8": [], "parallel -j 8": [], "run_batch": []}
    for _ in range(1 if quick else 3):  # interleaved, so drift hits all alike
        xargs = ["xargs", "-0", "-P", str(workers), "-n", "1", *standin]
        runs["xargs -P 8"].append(timed_cpu(xargs, input=files.encode()))
        if shutil.which("parallel"):
            runs["parallel -j 8"].append(
                timed_cpu(["parallel", "-0", "-j", str(workers), *standin, "{}"], input=files.encode())
            )
        runs["run_batch"].append(timed_cpu(run_batch_argv(project, prompts, workers)))
    base_wall = min(wall for wall, _ in runs["xargs -P 8"])
    base_cpu = min(cpu for _, cpu in runs["xargs -P 8"])
    best_of = len(runs["run_batch"])
    print(f"overhead: {tasks} trivial tasks, {workers} workers (best of {best_of}; CPU: runner and tasks)")
    for name, measured in runs.items():
        if not measured:
            print(f"  {name:<14} not installed (apt-get install parallel)")
            continue
        wall, cpu = min(w for w, _ in measured), min(c for _, c in measured)
        print(
            f"  {name:<14} {wall:6.2f}s wall {wall / base_wall:5.2f}x xargs  {cpu:6.2f}s CPU {cpu / base_cpu:5.2f}x"
            f"  {(cpu - base_cpu) / tasks * 1000:+6.1f} ms CPU/task"
        )
    ratio = min(w for w, _ in runs["run_batch"]) / base_wall
    print(f"  goal <= 1.20x xargs (issue 24): {'met' if ratio <= 1.20 else 'NOT met'} ({ratio:.3f}x)")
    shutil.rmtree(root, ignore_errors=True)


def bench_memory(quick: bool) -> None:
    sizes = (20, 100) if quick else (100, 500)
    print("memory: 8 tasks printing N MB each to their logs, 8 workers; runner peak RSS")
    baseline = None
    for mb in sizes:
        root, project, prompts = workspace(8, f"Loud.\nSTANDIN: print-mb {mb}\n")
        timed(run_batch_argv(project, prompts, 8))
        summary = json.loads((project / "batch_output" / "summary.json").read_text())
        rss = summary["totals"]["runner_peak_rss_mb"]
        baseline = baseline or rss
        print(
            f"  {mb:4d} MB per task ({8 * mb / 1024:.1f} GB in all): peak RSS {rss:5.1f} MB "
            f"({rss / baseline:.2f}x the {sizes[0]} MB run)  goal < 60 MB: {'met' if rss < 60 else 'NOT met'}"
        )
        shutil.rmtree(root, ignore_errors=True)


def bench_hostile(quick: bool) -> None:
    """The worst a single task can hand the runner: a huge line with no newline, a huge
    trajectory, a huge error message. Peak RSS against a run of one ordinary task."""
    size = 40 if quick else 200
    cases = {
        "ordinary task (baseline)": "Say hi.\n",
        f"one {size} MB line, no newline, on stderr": f"Loud.\nSTANDIN: long-line-mb {size}\n",
        f"a {size * 3 // 4} MB trajectory": f"Big.\nSTANDIN: big-trajectory-mb {size * 3 // 4}\n",
        "a 5 MB error message": "Fails.\nSTANDIN: error-mb 5\n",
    }
    print("hostile: one task's output; runner peak RSS and the longest record line")
    baseline = None
    for label, prompt in cases.items():
        root, project, prompts = workspace(1, prompt)
        timed(run_batch_argv(project, prompts, 1))
        output = project / "batch_output"
        rss = json.loads((output / "summary.json").read_text())["totals"]["runner_peak_rss_mb"]
        longest = max(len(line) for line in (output / "batch_results.jsonl").read_bytes().splitlines())
        baseline = baseline or rss
        print(
            f"  {label:38s} peak RSS {rss:5.1f} MB ({rss / baseline:.2f}x baseline), record {longest / 1024:.0f} KB"
            f"  goal < 60 MB: {'met' if rss < 60 else 'NOT met'}"
        )
        shutil.rmtree(root, ignore_errors=True)


def bench_scaling(quick: bool) -> None:
    tasks, workers, seconds = 32, 8, (1 if quick else 2)
    root, project, prompts = workspace(tasks, f"Work.\nRUN: sleep {seconds}\n")
    ideal = tasks / workers * seconds
    files = "\0".join(str(p) for p in sorted(prompts.glob("*.md"))) + "\0"
    print(f"scaling: {tasks} tasks of {seconds}s, {workers} workers, {os.cpu_count()} CPUs; ideal {ideal:.0f}s")
    # Two kinds of task: the OpenHands stand-in (a Python start-up each: eight at once on a small
    # machine cost time no scheduler can remove) and a bare `sleep` that only measures the runner.
    # xargs starting the same tasks in the same run is the baseline for each.
    kinds = {
        "stand-in": [sys.executable, str(STANDIN), "--config-file", str(project / "config.toml"), "-f"],
        "sh -c sleep": ["sh", "-c", f"sleep {seconds}"],
    }
    for kind, argv in kinds.items():
        xargs = timed(["xargs", "-0", "-P", str(workers), "-n", "1", *argv], input=files.encode())
        command = shlex.join(argv[:-1]) if kind == "stand-in" else shlex.join(argv)
        wall = timed([*run_batch_argv(project, prompts, workers)[:-2], "--command", command])
        print(
            f"  {kind:<12} xargs {xargs:5.2f}s ({xargs / ideal:.3f}x ideal)   run_batch {wall:5.2f}s "
            f"({wall / ideal:.3f}x ideal, {wall / xargs:.3f}x xargs)   within 10% of ideal: "
            f"{'met' if wall <= ideal * 1.10 else 'NOT met'}"
        )
    shutil.rmtree(root, ignore_errors=True)


def bench_startup(quick: bool) -> None:
    root, project, _prompts = workspace(1, "x\n")
    out = project / "batch_output"
    out.mkdir()
    with open(out / "batch_results.jsonl", "w") as f:
        for i in range(1000):
            f.write(
                json.dumps(
                    {
                        "task_name": f"task-{i % 250:04d}",
                        "status": "success" if i % 7 else "failed",
                        "elapsed_time_seconds": 12.5,
                        "total_cost": 0.01,
                        "total_input_tokens": 1000,
                        "total_output_tokens": 50,
                        "agent_state": "FINISHED",
                        "error": None,
                        "finished_at": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
                        "stderr": "x" * 2000,
                    }
                )
                + "\n"
            )
    n = 5 if quick else 15
    bare = statistics.median(timed([sys.executable, "-c", "pass"]) for _ in range(n))
    helps = statistics.median(timed([sys.executable, str(SCRIPT), "--help"]) for _ in range(n))
    reports = statistics.median(
        timed([sys.executable, str(SCRIPT), "--report", "--output-dir", str(out)]) for _ in range(n)
    )
    terminal = statistics.median(
        on_terminal([sys.executable, str(SCRIPT), "--report", "--output-dir", str(out)]) for _ in range(n)
    )
    print(f"startup (median of {n}): bare python {bare * 1000:.0f} ms")
    for name, t in (("--help", helps), ("--report, 1,000 records", reports), ("--report on a terminal", terminal)):
        print(
            f"  {name:<24} {t * 1000:5.0f} ms  {t / bare:4.1f}x bare python  goal < 150 ms: "
            f"{'met' if t < 0.150 else 'NOT met'}"
        )
    shutil.rmtree(root, ignore_errors=True)


def on_terminal(argv: list[str]) -> float:
    """Wall time of a command whose stdout is a pseudo-terminal (rich draws the table there)."""
    import pty

    master, slave = pty.openpty()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=slave, stderr=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "160"})
    os.close(slave)
    while True:
        try:
            if not os.read(master, 65536):
                break
        except OSError:  # the terminal closed with the process
            break
    proc.wait()
    elapsed = time.perf_counter() - t0
    os.close(master)
    return elapsed


def list_schedule(durations: list[float], workers: int) -> float:
    """Makespan when each free worker takes the next task in order (what the thread pool does)."""
    free = [0.0] * workers
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free)


def bench_schedule(quick: bool) -> None:
    rng = random.Random(42)
    workers, trials = 8, (20 if quick else 200)
    ratios_file, ratios_lpt = [], []
    for _ in range(trials):
        durations = [min(3600.0, 30 * rng.paretovariate(1.3)) for _ in range(54)]  # heavy tail
        tasks = [rb.Task(f"t{i:02d}", Path(f"t{i}.md"), f"t{i}", None, None) for i in range(54)]
        by_name = {t.name: d for t, d in zip(tasks, durations, strict=False)}
        bound = max(sum(durations) / workers, max(durations))
        ordered = [by_name[t.name] for t in rb.plan_order(tasks, by_name)]
        ratios_file.append(list_schedule(durations, workers) / bound)
        ratios_lpt.append(list_schedule(ordered, workers) / bound)
    print(
        f"schedule: 54 tasks, Pareto(1.3) durations, {workers} workers, {trials} random sets; "
        "makespan / lower bound max(total/workers, longest)"
    )
    for name, r in (("file order", ratios_file), ("longest first (run_batch)", ratios_lpt)):
        print(f"  {name:<26} mean {statistics.mean(r):.3f}x  worst {max(r):.3f}x")
    print(f"  longest-first is {statistics.mean(ratios_file) / statistics.mean(ratios_lpt):.2f}x shorter on average")


def bench_launch(quick: bool) -> None:
    poetry = shutil.which("poetry") or str(Path(sys.executable).parent / "poetry")
    if not os.access(poetry, os.X_OK):
        print("launch: Poetry not installed (pip install poetry); skipped")
        return
    root = Path(tempfile.mkdtemp(prefix="rb-bench-poetry-"))
    (root / "pyproject.toml").write_text(
        '[tool.poetry]\nname = "b"\nversion = "0.1.0"\ndescription = ""\n'
        'authors = ["b <b@example.com>"]\npackage-mode = false\n'
        '[tool.poetry.dependencies]\npython = ">=3.11"\n'
    )
    env = {**os.environ, "POETRY_VIRTUALENVS_IN_PROJECT": "true"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([poetry, "install", "-q"], cwd=root, env=env, check=True, capture_output=True)
    python = root / ".venv" / "bin" / "python"
    n = 5 if quick else 15
    direct = statistics.median(timed([str(python), "-c", "pass"], cwd=root, env=env) for _ in range(n))
    wrapped = statistics.median(timed([poetry, "run", "python", "-c", "pass"], cwd=root, env=env) for _ in range(n))
    print(
        f"launch (median of {n}): resolved interpreter {direct * 1000:.0f} ms, `poetry run python` "
        f"{wrapped * 1000:.0f} ms: {wrapped / direct:.1f}x, {(wrapped - direct) * 1000:.0f} ms saved per task"
    )
    shutil.rmtree(root, ignore_errors=True)


def runner_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process's own threads, not of its children."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_measured(
    argv: list[str], env: dict[str, str] | None = None, window: tuple[float, float] | None = None
) -> dict[str, float]:
    """Run the runner; its wall time, its own CPU seconds in all (read from /proc/<pid>/stat of the
    exited, not yet reaped process: its tasks' CPU is not in it), and with `window` (seconds after
    the start) its CPU seconds per wall second between the two, from samples every 0.1 s."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    samples: list[tuple[float, float]] = []
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    if window is not None:
        while proc.poll() is None and time.perf_counter() - t0 <= window[1] + 0.2:
            with contextlib.suppress(OSError, ValueError, IndexError):
                samples.append((time.perf_counter() - t0, runner_cpu(proc.pid)))
            time.sleep(0.1)
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, still readable in /proc
    wall = time.perf_counter() - t0
    cpu = runner_cpu(proc.pid)
    proc.wait()
    reader.join()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {shlex.join(argv)}\n{stderr[0][-2000:]!r}")
    result = {"wall": wall, "cpu": cpu}
    if window is not None:
        inside = [s for s in samples if window[0] <= s[0] <= window[1]]
        if len(inside) < 2:
            raise SystemExit(f"the runner ended before the measuring window {window} closed")
        (ta, ca), (tb, cb) = inside[0], inside[-1]
        result["rate"] = (cb - ca) / (tb - ta)
    return result


def bench_follow(quick: bool) -> None:
    """The cost of following running attempts: eight tasks writing event files at a steady rate,
    once where run_batch follows them and once (the baseline) in a folder it never looks at."""
    tasks, events, seconds = 8, (2_000 if quick else 10_000), (10 if quick else 25)
    repeats = 1 if quick else 2
    window = (3.0, seconds - 1.0)  # every task started (the runner's start-up is outside), none ended
    argv_for: dict[str, tuple[Path, list[str]]] = {}
    roots = []
    for where in ("elsewhere", "sessions"):
        root, project, prompts = workspace(tasks, f"Events.\nEVENTS: {events} {seconds} {where}\n")
        roots.append(root)
        argv = [
            *run_batch_argv(project, prompts, tasks)[:-2],
            "--command",
            f"{shlex.quote(sys.executable)} {shlex.quote(str(EVENT_WRITER))}",
        ]
        argv_for[where] = (project, argv)
    env = {**os.environ, "RUN_BATCH_BENCH_DIR": str(SCRIPT.parent)}
    runs: dict[str, list[dict[str, float]]] = {"elsewhere": [], "sessions": []}
    for _ in range(repeats):  # interleaved, so drift hits both alike
        for where, (project, argv) in argv_for.items():
            shutil.rmtree(project / "batch_output", ignore_errors=True)
            shutil.rmtree(project.parent / "fs", ignore_errors=True)
            result = run_measured(argv, env, window)
            output = project / "batch_output"
            result["rss"] = json.loads((output / "summary.json").read_text())["totals"]["runner_peak_rss_mb"]
            records = [json.loads(line) for line in (output / "batch_results.jsonl").read_text().splitlines()]
            result["ok"] = sum(r["status"] == "success" for r in records)
            runs[where].append(result)
    base = min(runs["elsewhere"], key=lambda r: r["rate"])
    follow = min(runs["sessions"], key=lambda r: r["rate"])
    rate = events / seconds
    extra = follow["rate"] - base["rate"]
    per_event = extra / (tasks * rate) * 1e6
    print(
        f"follow: {tasks} tasks at once, each writing {events:,} event files over {seconds}s ({rate:.0f}/s per "
        f"task, {tasks * rate:,.0f}/s in all); runner CPU from /proc/<pid>/stat, least of {repeats}"
    )
    for label, r in (("events elsewhere (baseline)", base), ("events followed", follow)):
        print(
            f"  {label:<28} {r['rate']:.3f} CPU s per wall s in the steady state, {r['cpu']:5.2f} CPU s in "
            f"all over {r['wall']:5.1f}s, peak RSS {r['rss']:5.1f} MB, {r['ok']:.0f}/{tasks} success"
        )
    whole = (follow["cpu"] - base["cpu"]) / (tasks * events) * 1e6
    print(
        f"  following costs {extra:+.3f} CPU s per wall s ({follow['rate'] / max(base['rate'], 1e-9):.2f}x the "
        f"baseline): {per_event:.0f} us of CPU per event read in the steady state, {whole:.0f} us over the "
        f"whole run; at 1 event/s per task that is {per_event * tasks / 1e6 * 100:.3f}% of one CPU"
    )
    print(
        f"  peak RSS with {events:,} events per task: {follow['rss']:.1f} MB, {follow['rss'] / base['rss']:.2f}x "
        f"the baseline   goal < 60 MB: {'met' if follow['rss'] < 60 else 'NOT met'}"
    )
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


def sweep_cost(n: int = 50) -> tuple[float, int]:
    """In this process, on this machine now: seconds per marked_processes() (the /proc sweep every
    attempt's end makes), and how many processes it reads."""
    marker = rb.Marker("bench-run-id", "bench-session")
    t0 = time.perf_counter()
    for _ in range(n):
        rb.marked_processes(marker)
    return (time.perf_counter() - t0) / n, sum(1 for p in os.listdir("/proc") if p.isdigit())


def without_fsync(module: types.ModuleType) -> types.ModuleType:
    """`module` with its `os` replaced by a copy of os whose fsync does nothing (the rest of os,
    and os itself for everyone else, untouched)."""
    fake_os = types.ModuleType("os")
    fake_os.__dict__.update(os.__dict__)
    fake_os.fsync = lambda fd: None  # type: ignore[attr-defined]
    module.os = fake_os  # type: ignore[attr-defined]
    return module


def load_copy(path: Path, name: str) -> types.ModuleType:
    """A second, separate import of a run_batch.py (its own classes, its own globals)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# `python -c NO_FSYNC_MAIN run_batch.py ARGS...`: run_batch's main() with os.fsync a no-op in it only.
NO_FSYNC_MAIN = """
import importlib.util, os, sys, types
script = sys.argv.pop(1)
sys.path.insert(0, os.path.dirname(script))
spec = importlib.util.spec_from_file_location("run_batch", script)
rb = importlib.util.module_from_spec(spec)
sys.modules["run_batch"] = rb
spec.loader.exec_module(rb)
fake_os = types.ModuleType("os")
fake_os.__dict__.update(os.__dict__)
fake_os.fsync = lambda fd: None
rb.os = fake_os
sys.exit(rb.main(sys.argv[1:]))
"""


def append_many(module: types.ModuleType, path: Path, value: dict[str, Any], n: int, threads: int) -> float:
    """Wall seconds per ResultsFile.append_json(value) call, n calls (rounded down to a multiple of
    `threads`) into a fresh file, from `threads` threads."""
    results = module.ResultsFile(path)
    each = n // threads

    def work() -> None:
        for _ in range(each):
            results.append_json(value)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    results.release()
    path.unlink()
    return elapsed / (each * threads)


def fsync_price(folder: Path, value: dict[str, Any], n: int, repeats: int) -> dict[tuple[str, int], float]:
    """Median wall seconds per append (of n), with fsync (the runner as it is) and with os.fsync a
    no-op in a copy of the module, on 1 thread and on 16; interleaved."""
    plain = load_copy(SCRIPT, "run_batch_fsync")
    quick = without_fsync(load_copy(SCRIPT, "run_batch_nofsync"))
    times: dict[tuple[str, int], list[float]] = {}
    for r in range(repeats):
        for label, module in (("fsync", plain), ("no fsync", quick)):
            for threads in (1, 16):
                path = folder / f"append-{label.replace(' ', '-')}-{threads}-{r}.jsonl"
                times.setdefault((label, threads), []).append(append_many(module, path, value, n, threads))
    return {k: statistics.median(v) for k, v in times.items()}


def create_cost(folder: Path, n: int = 500) -> float:
    """Seconds per exclusive create + close of a new file in folder (what claiming an attempt's
    names costs, per name)."""
    inside = Path(tempfile.mkdtemp(dir=folder))
    t0 = time.perf_counter()
    for i in range(n):
        os.close(os.open(inside / f"f{i:04d}.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    elapsed = (time.perf_counter() - t0) / n
    shutil.rmtree(inside)
    return elapsed


def fstype_of(path: Path) -> str:
    try:
        return (
            subprocess.run(
                ["findmnt", "-n", "-o", "FSTYPE", "-T", str(path)], capture_output=True, text=True, check=True
            ).stdout.strip()
            or "?"
        )
    except (OSError, subprocess.CalledProcessError):
        return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True).stdout.strip()


def bench_dispatch(quick: bool) -> None:
    """The runner's cost per task when the task costs nothing: `true` takes any arguments."""
    tasks, workers = (300 if quick else 2_000), 16
    repeats = 1 if quick else 5
    true = shutil.which("true") or "/bin/true"
    root, project, prompts = workspace(tasks, "Nothing.\n")
    files = "\0".join(str(p) for p in sorted(prompts.glob("*.md"))) + "\0"
    runners: dict[str, list[str]] = {
        "run_batch": [*run_batch_argv(project, prompts, workers)[:-2], "--command", true],
    }
    runners["run_batch, os.fsync a no-op"] = [sys.executable, "-c", NO_FSYNC_MAIN, *runners["run_batch"][1:]]
    if COMPARE is not None:
        runners[f"--compare {COMPARE.parent.name}/{COMPARE.name}"] = [
            *run_batch_argv(project, prompts, workers, script=COMPARE)[:-2],
            "--command",
            true,
        ]
    xargs_runs: list[float] = []
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    record: dict[str, Any] = {}
    for _ in range(repeats):  # interleaved, so drift hits all alike
        xargs_runs.append(timed(["xargs", "-0", "-P", str(workers), "-n", "1", true, "-f"], input=files.encode()))
        for name, argv in runners.items():
            shutil.rmtree(project / "batch_output", ignore_errors=True)
            result = run_measured(argv)
            result["load"] = os.getloadavg()[0]
            runs[name].append(result)
            if name == "run_batch":
                lines = (project / "batch_output" / "batch_results.jsonl").read_text().splitlines()
                assert len(lines) == tasks, f"{len(lines)} records for {tasks} tasks"
                record = json.loads(lines[-1])
    base = min(xargs_runs)
    print(
        f"dispatch: {tasks:,} instant tasks (`true`), {workers} workers, {os.cpu_count()} CPUs; best of "
        f"{repeats} interleaved runs (wall) and its runner CPU from /proc/<pid>/stat; medians in brackets"
    )
    print(f"  xargs -P {workers:<27} {base:6.2f}s  (all: {', '.join(f'{t:.2f}' for t in xargs_runs)})")
    best_of = {name: min(r, key=lambda x: x["wall"]) for name, r in runs.items()}

    def walls(results: list[dict[str, float]]) -> str:
        return ", ".join(f"{r['wall']:.2f}" for r in results)

    for name, best in best_of.items():
        mid_wall = statistics.median(r["wall"] for r in runs[name])
        mid_cpu = statistics.median(r["cpu"] for r in runs[name])
        print(
            f"  {name:<36} {best['wall']:6.2f}s  {best['wall'] / base:5.2f}x xargs  "
            f"{(best['wall'] - base) / tasks * 1000:+5.2f} ms/task wall; runner CPU {best['cpu']:.2f}s = "
            f"{best['cpu'] / tasks * 1000:.2f} ms/task  [{mid_wall:.2f}s, {mid_cpu / tasks * 1000:.2f} ms/task]  "
            f"(walls: {walls(runs[name])}; load {best['load']:.1f})"
        )
    head, nofsync = best_of["run_batch"], best_of["run_batch, os.fsync a no-op"]
    print(
        f"  the fsyncs in the run (records, plus run.json and summary.json): "
        f"{(head['wall'] - nofsync['wall']) / tasks * 1000:+.2f} ms/task wall, "
        f"{(head['cpu'] - nofsync['cpu']) / tasks * 1000:+.2f} ms/task runner CPU"
    )
    if hasattr(rb, "Marker"):
        sweep, procs = sweep_cost()
        print(
            f"  one /proc sweep (Marker.processes, {procs} processes now): {sweep * 1000:.2f} ms, mostly CPU; "
            f"{tasks:,} of them (one per attempt at least) = {sweep * tasks:.1f}s, "
            f"{sweep * tasks / head['cpu'] * 100:.0f}% of the runner's CPU"
        )
    create = create_cost(root)
    print(
        f"  one file created and closed in the output folder's file system ({fstype_of(root)}): "
        f"{create * 1000:.3f} ms, CPU in the kernel; an attempt creates 5 (3 claimed names, its config, "
        f"its tmux folder) = {create * 5 * tasks:.1f}s for {tasks:,}"
    )
    n = tasks
    price = fsync_price(root, record, n, repeats)
    print(
        f"  {n:,} x ResultsFile.append_json (a {len(json.dumps(record))}-byte record of this run) into a fresh "
        f"file, median of {repeats}:"
    )
    for threads in (1, 16):
        with_, without = price[("fsync", threads)], price[("no fsync", threads)]
        print(
            f"    {threads:2d} thread{'s' if threads > 1 else ' '}: with fsync {with_ * n:6.3f}s ({with_ * 1000:.3f} "
            f"ms/record), os.fsync a no-op {without * n:6.3f}s ({without * 1000:.3f} ms/record): durability costs "
            f"{(with_ - without) * 1000:.3f} ms/record, {(with_ - without) * n:.2f}s for {n:,}"
        )
    print(f"  load average now {os.getloadavg()[0]:.2f}")
    shutil.rmtree(root, ignore_errors=True)


def du_kib(path: Path) -> int:
    """Disk used under path (KiB, blocks allocated, each hard-linked inode once), as `du -sk`."""
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def run_quietly(argv: list[str], **kw: Any) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise SystemExit(f"benchmark command failed ({done.returncode}): {shlex.join(argv)}\n{done.stderr[-2000:]}")


def reflink_probe(folder: Path) -> str:
    """Whether `cp --reflink=always` works in folder (it fails where the file system cannot share extents)."""
    src, dst = folder / "reflink-probe", folder / "reflink-probe.copy"
    src.write_bytes(os.urandom(1 << 20))
    done = subprocess.run(["cp", "--reflink=always", str(src), str(dst)], capture_output=True, text=True)
    src.unlink()
    dst.unlink(missing_ok=True)
    return "yes" if done.returncode == 0 else f"no ({done.stderr.strip()})"


def warm_up(folder: Path) -> None:
    """Read every file under folder (its .git too), so it is in the page cache."""
    for dirpath, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError), open(os.path.join(dirpath, name), "rb", buffering=0) as f:
                while f.read(1 << 20):
                    pass


def make_template(root: Path, total_mb: int, count: int) -> tuple[Path, Path]:
    """A git repository with total_mb of committed files (random bytes: incompressible, so the
    objects are as big as the files) in `count` files over 10 folders, and the same files as a
    plain folder."""
    repo, plain = root / "template-git", root / "template-plain"
    size = total_mb * (1 << 20) // count
    for i in range(count):
        path = repo / f"dir{i % 10}" / f"file{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    (repo / "README.md").write_text("template\n")
    git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    run_quietly([*git, "init", "-q"])
    run_quietly([*git, "add", "-A"])
    run_quietly([*git, "commit", "-q", "-m", "template"])
    run_quietly(["cp", "-a", "--reflink=never", str(repo), str(plain)])
    shutil.rmtree(plain / ".git")
    return repo, plain


def bench_template(quick: bool) -> None:
    """--workspace-template: what one workspace costs per task, in time and in disk, from a ~1 GB
    template, through run_batch's own make_workspace and by hand. Per workspace: the call's wall
    time (the template read just before, so it is in the page cache: a batch reads it once per task;
    on a VM that reclaims the cache within seconds a cold template costs more), the same until
    os.sync() returned (the copy written out), the CPU of the git/cp it ran, the disk it added
    (`du -sk` of the output folder before and after) and what the template's own folder grew by
    (git worktree keeps its bookkeeping there)."""
    total_mb, count, tasks = (100, 60, 3) if quick else (1024, 300, 5)
    root = Path(tempfile.mkdtemp(prefix="rb-bench-template-"))
    need = (3 * total_mb + tasks * total_mb) * 1.5 * (1 << 20)  # templates, one method's workspaces, margin
    free = shutil.disk_usage(root).free
    if free < need + (10 << 30):
        print(
            f"template: skipped, {free / (1 << 30):.0f} GB free in {root.parent} (needs {need / (1 << 30):.0f} GB "
            "and 10 GB to spare)"
        )
        shutil.rmtree(root)
        return
    fstype = fstype_of(root)
    try:
        t0 = time.perf_counter()
        repo, plain = make_template(root, total_mb, count)
        built = time.perf_counter() - t0
        print(
            f"template: {count} files, {total_mb:,} MB of random bytes; {tasks} workspaces per method, in "
            f"{root.parent} ({fstype}; cp --reflink=always works there: {reflink_probe(root)}); load average "
            f"{os.getloadavg()[0]:.2f}"
        )
        print(
            f"  built in {built:.0f}s: git repository {du_kib(repo) / 1024:,.0f} MB on disk (.git "
            f"{du_kib(repo / '.git') / 1024:,.0f} MB), plain folder {du_kib(plain) / 1024:,.0f} MB"
        )

        def by_hand(out: Path, i: int) -> Path:
            """Where a baseline puts its copy: the folder make_workspace would use (same depth, same
            parent), since ext4 allocates a new folder's blocks by where the folder is."""
            (out / "workspaces").mkdir(exist_ok=True)
            return out / "workspaces" / f"task-{i}"

        def files(out: Path, i: int) -> Any:
            return rb.AttemptFiles(
                out / "trajectories" / f"task-{i}.json",
                out / "logs" / f"task-{i}.stdout.log",
                out / "logs" / f"task-{i}.stderr.log",
            )

        methods: list[tuple[str, Path, Any]] = [
            ("make_workspace, git template", repo, lambda out, i: rb.make_workspace(out, files(out, i), repo)),
            (
                "git clone --shared (by hand)",
                repo,
                lambda out, i: run_quietly(["git", "clone", "--quiet", "--shared", str(repo), str(by_hand(out, i))]),
            ),
            (
                "git worktree add (by hand)",
                repo,
                lambda out, i: run_quietly(
                    ["git", "-C", str(repo), "worktree", "add", "--quiet", "--detach", str(by_hand(out, i))]
                ),
            ),
            ("make_workspace, plain template", plain, lambda out, i: rb.make_workspace(out, files(out, i), plain)),
            (
                "cp -a --reflink=never (by hand)",
                plain,
                lambda out, i: run_quietly(["cp", "-a", "--reflink=never", str(plain), str(by_hand(out, i))]),
            ),
            (  # cp's default since coreutils 9.0 (and make_workspace's): copy_file_range where no reflink
                "cp -a --reflink=auto (by hand)",
                plain,
                lambda out, i: run_quietly(["cp", "-a", "--reflink=auto", str(plain), str(by_hand(out, i))]),
            ),
        ]
        # Interleaved (task i of every method, then task i + 1; the order rotated each round), so drift
        # and the disk's state hit all alike; each workspace is measured, then removed (only one exists
        # at a time: 1 GB, not 25). The template is read right before each call (warm_up), or the
        # first method after a pause would pay the disk reads where the page cache is reclaimed fast.
        calls: dict[str, list[float]] = {name: [] for name, _, _ in methods}
        flushes: dict[str, list[float]] = {name: [] for name, _, _ in methods}
        disk: dict[str, list[int]] = {name: [] for name, _, _ in methods}
        grows: dict[str, list[int]] = {name: [] for name, _, _ in methods}
        cpus: dict[str, list[float]] = {name: [] for name, _, _ in methods}
        loads: list[float] = []
        for i in range(tasks):
            for name, template, make in methods[i % len(methods) :] + methods[: i % len(methods)]:
                out = root / "out"
                out.mkdir()
                os.sync()
                warm_up(template)
                before, template_before = du_kib(out), du_kib(template)
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                make(out, i)
                t1 = time.perf_counter()
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                os.sync()  # the dirty pages written out: what the disk really had to do
                t2 = time.perf_counter()
                cpus[name].append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
                calls[name].append(t1 - t0)
                flushes[name].append(t2 - t0)
                disk[name].append(du_kib(out) - before)
                grows[name].append(du_kib(template) - template_before)
                shutil.rmtree(out)
                if name.startswith("git worktree"):
                    run_quietly(["git", "-C", str(repo), "worktree", "prune"])
            loads.append(os.getloadavg()[0])
        print(
            f"  per task, median of {tasks} (interleaved)  {'call':>8} {'+ sync':>8} {'CPU':>7} {'disk':>9} "
            f"{'template grows':>15}  each call, s"
        )
        for name, _, _ in methods:
            print(
                f"  {name:<34} {statistics.median(calls[name]):7.2f}s {statistics.median(flushes[name]):7.2f}s "
                f"{statistics.median(cpus[name]):6.2f}s {statistics.median(disk[name]) / 1024:6,.0f} MB "
                f"{statistics.median(grows[name]):12,.0f} KB  {' '.join(f'{t:.2f}' for t in calls[name])}"
            )
        print(f"  load average after each round: {' '.join(f'{x:.2f}' for x in loads)}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"  removed {root}; free there now {shutil.disk_usage(root.parent).free / (1 << 30):.0f} GB")


BENCHES = {
    "overhead": bench_overhead,
    "memory": bench_memory,
    "hostile": bench_hostile,
    "scaling": bench_scaling,
    "startup": bench_startup,
    "schedule": bench_schedule,
    "launch": bench_launch,
    "follow": bench_follow,
    "dispatch": bench_dispatch,
    "template": bench_template,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (a smoke run)")
    p.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run only these")
    p.add_argument("--runner", type=Path, default=SCRIPT, help="the run_batch.py to measure (default: the checkout's)")
    p.add_argument("--compare", type=Path, help="another run_batch.py run beside it in `dispatch` (an older commit's)")
    args = p.parse_args()
    load_runner(args.runner)
    global COMPARE
    COMPARE = args.compare.resolve() if args.compare else None
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {sys.platform}; runner {SCRIPT}")
    for name in args.only or BENCHES:
        print(f"[{name}: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start]")
        t0 = time.perf_counter()
        BENCHES[name](args.quick)
        print(
            f"[{name}: {time.perf_counter() - t0:.0f}s, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end]"
        )
        print(flush=True)


if __name__ == "__main__":
    main()
