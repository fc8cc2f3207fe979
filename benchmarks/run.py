#!/usr/bin/env python3
"""run_batch's own cost, measured against baselines run in the same process on the same machine.

    python benchmarks/run.py [--quick] [--only NAME ...]

Every figure is printed as a ratio to a baseline measured in this run (the machine is shared and
noisy), never compared with a constant from another day:
  overhead   200 trivial tasks on 8 workers: run_batch vs `xargs -P 8` vs GNU `parallel -j 8`
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
             the runner's CPU per task, and what one /proc sweep and one fsynced record cost here
The OpenHands stand-in (tests/fake_openhands.py) is the task everywhere but in `follow`
(benchmarks/event_writer.py: many events over time) and `dispatch` (`true`: no work at all).
--runner PATH benchmarks another copy of run_batch.py (say, before and after a change).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "run_batch.py"  # --runner replaces it
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
        f'save_trajectory_path = "{root / "traj"}"\n[llm]\ninput_cost_per_token = 0.000001\n')
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


def run_batch_argv(project: Path, prompts: Path, workers: int, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--prompt-dir", str(prompts), "--project-dir", str(project),
            "--max-workers", str(workers), "--quiet", "--rerun",
            "--command", f"{shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))}", *extra]


def bench_overhead(quick: bool) -> None:
    tasks, workers = (60 if quick else 200), 8
    root, project, prompts = workspace(tasks, "Trivial.\nRUN: true\n")
    files = "\0".join(str(p) for p in sorted(prompts.glob("*.md"))) + "\0"
    standin = [sys.executable, str(STANDIN), "--config-file", str(project / "config.toml"), "-f"]
    runs: dict[str, list[float]] = {"xargs -P 8": [], "parallel -j 8": [], "run_batch": []}
    for _ in range(1 if quick else 3):  # interleaved, so drift hits all alike
        runs["xargs -P 8"].append(timed(["xargs", "-0", "-P", str(workers), "-n", "1", *standin],
                                        input=files.encode()))
        if shutil.which("parallel"):
            runs["parallel -j 8"].append(timed(["parallel", "-0", "-j", str(workers), *standin, "{}"],
                                               input=files.encode()))
        runs["run_batch"].append(timed(run_batch_argv(project, prompts, workers)))
    base = min(runs["xargs -P 8"])
    print(f"overhead: {tasks} trivial tasks, {workers} workers (best of {len(runs['run_batch'])})")
    for name, times in runs.items():
        if not times:
            print(f"  {name:<14} not installed (apt-get install parallel)")
            continue
        best = min(times)
        per_task = (best - base) / tasks * 1000
        print(f"  {name:<14} {best:6.2f}s  {best / base:5.2f}x xargs  {per_task:+6.1f} ms/task wall")
    ratio = min(runs["run_batch"]) / base
    print(f"  goal <= 1.10x xargs: {'met' if ratio <= 1.10 else 'NOT met'} ({ratio:.3f}x)")
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
        print(f"  {mb:4d} MB per task ({8 * mb / 1024:.1f} GB in all): peak RSS {rss:5.1f} MB "
              f"({rss / baseline:.2f}x the {sizes[0]} MB run)  goal < 60 MB: {'met' if rss < 60 else 'NOT met'}")
        shutil.rmtree(root, ignore_errors=True)


def bench_hostile(quick: bool) -> None:
    """The worst a single task can hand the runner: a huge line with no newline, a huge
    trajectory, a huge error message. Peak RSS against a run of one ordinary task."""
    size = 40 if quick else 200
    cases = {"ordinary task (baseline)": "Say hi.\n",
             f"one {size} MB line, no newline, on stderr": f"Loud.\nSTANDIN: long-line-mb {size}\n",
             f"a {size * 3 // 4} MB trajectory": f"Big.\nSTANDIN: big-trajectory-mb {size * 3 // 4}\n",
             "a 5 MB error message": "Fails.\nSTANDIN: error-mb 5\n"}
    print("hostile: one task's output; runner peak RSS and the longest record line")
    baseline = None
    for label, prompt in cases.items():
        root, project, prompts = workspace(1, prompt)
        timed(run_batch_argv(project, prompts, 1))
        output = project / "batch_output"
        rss = json.loads((output / "summary.json").read_text())["totals"]["runner_peak_rss_mb"]
        longest = max(len(line) for line in (output / "batch_results.jsonl").read_bytes().splitlines())
        baseline = baseline or rss
        print(f"  {label:38s} peak RSS {rss:5.1f} MB ({rss / baseline:.2f}x baseline), record {longest / 1024:.0f} KB"
              f"  goal < 60 MB: {'met' if rss < 60 else 'NOT met'}")
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
        print(f"  {kind:<12} xargs {xargs:5.2f}s ({xargs / ideal:.3f}x ideal)   run_batch {wall:5.2f}s "
              f"({wall / ideal:.3f}x ideal, {wall / xargs:.3f}x xargs)   within 10% of ideal: "
              f"{'met' if wall <= ideal * 1.10 else 'NOT met'}")
    shutil.rmtree(root, ignore_errors=True)


def bench_startup(quick: bool) -> None:
    root, project, _prompts = workspace(1, "x\n")
    out = project / "batch_output"
    out.mkdir()
    with open(out / "batch_results.jsonl", "w") as f:
        for i in range(1000):
            f.write(json.dumps({"task_name": f"task-{i % 250:04d}", "status": "success" if i % 7 else "failed",
                                "elapsed_time_seconds": 12.5, "total_cost": 0.01, "total_input_tokens": 1000,
                                "total_output_tokens": 50, "agent_state": "FINISHED", "error": None,
                                "finished_at": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
                                "stderr": "x" * 2000}) + "\n")
    n = 5 if quick else 15
    bare = statistics.median(timed([sys.executable, "-c", "pass"]) for _ in range(n))
    helps = statistics.median(timed([sys.executable, str(SCRIPT), "--help"]) for _ in range(n))
    reports = statistics.median(timed([sys.executable, str(SCRIPT), "--report", "--output-dir", str(out)])
                                for _ in range(n))
    terminal = statistics.median(on_terminal([sys.executable, str(SCRIPT), "--report", "--output-dir", str(out)])
                                 for _ in range(n))
    print(f"startup (median of {n}): bare python {bare * 1000:.0f} ms")
    for name, t in (("--help", helps), ("--report, 1,000 records", reports),
                    ("--report on a terminal", terminal)):
        print(f"  {name:<24} {t * 1000:5.0f} ms  {t / bare:4.1f}x bare python  goal < 150 ms: "
              f"{'met' if t < 0.150 else 'NOT met'}")
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
    print(f"schedule: 54 tasks, Pareto(1.3) durations, {workers} workers, {trials} random sets; "
          "makespan / lower bound max(total/workers, longest)")
    for name, r in (("file order", ratios_file), ("longest first (run_batch)", ratios_lpt)):
        print(f"  {name:<26} mean {statistics.mean(r):.3f}x  worst {max(r):.3f}x")
    print(f"  longest-first is {statistics.mean(ratios_file) / statistics.mean(ratios_lpt):.2f}x shorter on average")


def bench_launch(quick: bool) -> None:
    poetry = shutil.which("poetry") or str(Path(sys.executable).parent / "poetry")
    if not os.access(poetry, os.X_OK):
        print("launch: Poetry not installed (pip install poetry); skipped")
        return
    root = Path(tempfile.mkdtemp(prefix="rb-bench-poetry-"))
    (root / "pyproject.toml").write_text('[tool.poetry]\nname = "b"\nversion = "0.1.0"\ndescription = ""\n'
                                         'authors = ["b <b@example.com>"]\npackage-mode = false\n'
                                         '[tool.poetry.dependencies]\npython = ">=3.11"\n')
    env = {**os.environ, "POETRY_VIRTUALENVS_IN_PROJECT": "true"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([poetry, "install", "-q"], cwd=root, env=env, check=True, capture_output=True)
    python = root / ".venv" / "bin" / "python"
    n = 5 if quick else 15
    direct = statistics.median(timed([str(python), "-c", "pass"], cwd=root, env=env) for _ in range(n))
    wrapped = statistics.median(timed([poetry, "run", "python", "-c", "pass"], cwd=root, env=env) for _ in range(n))
    print(f"launch (median of {n}): resolved interpreter {direct * 1000:.0f} ms, `poetry run python` "
          f"{wrapped * 1000:.0f} ms: {wrapped / direct:.1f}x, {(wrapped - direct) * 1000:.0f} ms saved per task")
    shutil.rmtree(root, ignore_errors=True)


def runner_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process's own threads, not of its children."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_measured(argv: list[str], env: dict[str, str] | None = None,
                 window: tuple[float, float] | None = None) -> dict[str, float]:
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
        argv = [*run_batch_argv(project, prompts, tasks)[:-2], "--command",
                f"{shlex.quote(sys.executable)} {shlex.quote(str(EVENT_WRITER))}"]
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
    print(f"follow: {tasks} tasks at once, each writing {events:,} event files over {seconds}s ({rate:.0f}/s per "
          f"task, {tasks * rate:,.0f}/s in all); runner CPU from /proc/<pid>/stat, least of {repeats}")
    for label, r in (("events elsewhere (baseline)", base), ("events followed", follow)):
        print(f"  {label:<28} {r['rate']:.3f} CPU s per wall s in the steady state, {r['cpu']:5.2f} CPU s in "
              f"all over {r['wall']:5.1f}s, peak RSS {r['rss']:5.1f} MB, {r['ok']:.0f}/{tasks} success")
    whole = (follow["cpu"] - base["cpu"]) / (tasks * events) * 1e6
    print(f"  following costs {extra:+.3f} CPU s per wall s ({follow['rate'] / max(base['rate'], 1e-9):.2f}x the "
          f"baseline): {per_event:.0f} us of CPU per event read in the steady state, {whole:.0f} us over the "
          f"whole run; at 1 event/s per task that is {per_event * tasks / 1e6 * 100:.3f}% of one CPU")
    print(f"  peak RSS with {events:,} events per task: {follow['rss']:.1f} MB, {follow['rss'] / base['rss']:.2f}x "
          f"the baseline   goal < 60 MB: {'met' if follow['rss'] < 60 else 'NOT met'}")
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


def sweep_and_fsync_costs(folder: Path, n: int = 200) -> tuple[float, float, int]:
    """In this process, on this machine now: seconds per Marker.processes() (the /proc sweep
    every attempt's end makes), seconds per ResultsFile.append() (one fsynced record), and how
    many processes the sweep reads."""
    marker = rb.Marker("bench-run-id", "bench-session")
    t0 = time.perf_counter()
    for _ in range(n // 4):
        marker.processes()
    sweep = (time.perf_counter() - t0) / (n // 4)
    record = rb.AttemptRecord.from_json({"task_name": "t", "status": "success", "stderr": "x" * 1000})
    results = rb.ResultsFile(folder / "fsync-probe.jsonl")
    t0 = time.perf_counter()
    for _ in range(n):
        results.append(record)
    append = (time.perf_counter() - t0) / n
    results.release()
    return sweep, append, sum(1 for p in os.listdir("/proc") if p.isdigit())


def bench_dispatch(quick: bool) -> None:
    """The runner's cost per task when the task costs nothing: `true` takes any arguments."""
    tasks, workers = (300 if quick else 2_000), 16
    true = shutil.which("true") or "/bin/true"
    root, project, prompts = workspace(tasks, "Nothing.\n")
    files = "\0".join(str(p) for p in sorted(prompts.glob("*.md"))) + "\0"
    argv = [*run_batch_argv(project, prompts, workers)[:-2], "--command", true]
    xargs_runs, runner_runs = [], []
    for _ in range(1 if quick else 2):  # interleaved, so drift hits both alike
        xargs_runs.append(timed(["xargs", "-0", "-P", str(workers), "-n", "1", true, "-f"], input=files.encode()))
        shutil.rmtree(project / "batch_output", ignore_errors=True)
        runner_runs.append(run_measured(argv))
    base = min(xargs_runs)
    best = min(runner_runs, key=lambda r: r["wall"])
    sweep, append, procs = sweep_and_fsync_costs(root)
    print(f"dispatch: {tasks:,} instant tasks (`true`), {workers} workers, {os.cpu_count()} CPUs, "
          f"best of {len(xargs_runs)}")
    print(f"  xargs -P {workers}      {base:6.2f}s")
    print(f"  run_batch        {best['wall']:6.2f}s  {best['wall'] / base:5.2f}x xargs  "
          f"{(best['wall'] - base) / tasks * 1000:+5.2f} ms/task wall; runner CPU {best['cpu']:.2f}s = "
          f"{best['cpu'] / tasks * 1000:.2f} ms/task")
    print(f"  one /proc sweep (Marker.processes, {procs} processes now): {sweep * 1000:.2f} ms, mostly CPU; "
          f"{tasks:,} of them (one per attempt at least) = {sweep * tasks:.1f}s, "
          f"{sweep * tasks / best['cpu'] * 100:.0f}% of the runner's CPU")
    print(f"  one fsynced record (ResultsFile.append): {append * 1000:.2f} ms, mostly waiting on the disk, one at a "
          f"time (the file's mutex): {tasks:,} of them = {append * tasks:.1f}s of the run that cannot overlap, "
          f"{append * tasks / best['wall'] * 100:.0f}% of its wall time")
    shutil.rmtree(root, ignore_errors=True)


BENCHES = {"overhead": bench_overhead, "memory": bench_memory, "hostile": bench_hostile, "scaling": bench_scaling,
           "startup": bench_startup, "schedule": bench_schedule, "launch": bench_launch,
           "follow": bench_follow, "dispatch": bench_dispatch}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (a smoke run)")
    p.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run only these")
    p.add_argument("--runner", type=Path, default=SCRIPT, help="the run_batch.py to measure (default: the checkout's)")
    args = p.parse_args()
    load_runner(args.runner)
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {sys.platform}")
    for name in args.only or BENCHES:
        BENCHES[name](args.quick)
        print(flush=True)


if __name__ == "__main__":
    main()
