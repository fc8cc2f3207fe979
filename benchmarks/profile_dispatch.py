#!/usr/bin/env python3
"""Where run_batch's time goes when the tasks cost nothing: a profile of the dispatch benchmark.

    python benchmarks/profile_dispatch.py [--mode profile|timers|none] [--clock cpu|wall] [--no-fsync]
                                          [--tasks 2000] [--workers 16] [--runner PATH] [--top 30]
                                          [--save FILE.pstats]

The same batch as `run.py --only dispatch` (N prompts, `--command true`, --quiet --rerun), run
in this process by `run_batch.main(argv)` of the run_batch.py under test, with one
`cProfile.Profile` per thread: the main thread (planning, the pool's loop, the summary at the
end), every worker of the thread pool (`concurrent.futures.thread._worker` is wrapped before the
pool starts its threads, so the pool's own queueing is in it too) and the monitor thread
(`Batch.watch`). `python -m cProfile` would see the main thread only, which mostly waits.
The stats of all threads are merged and printed per task (ms per task = seconds / N * 1000):

  --clock cpu   (default) each thread's own CPU time (`time.thread_time`): what the runner burns,
                the figure to compare with its CPU seconds in `run.py --only dispatch`
  --clock wall  each thread's wall time (`time.perf_counter`): where the workers wait as well
                (the disk under an fsync, the GIL, a child's exit); summed over 16 workers it
                is about 16 x the run's wall time

cProfile's own overhead inflates call-heavy pure-Python code (a few µs per call, about twice the
runner's CPU in all); functions that make few calls but wait or run C code (fsync, fork/exec,
reading /proc) are measured closely. In a wall-clock profile of 16 threads under one GIL, a C call
that lets the GIL go (open, read, fsync) is charged the wait to get it back as well.

--mode timers instead wraps a fixed list of run_batch's functions (TIMED) in a timer each (about
1 µs per call, nothing else slowed), and prints per function its calls, CPU ms and wall ms per task,
each including what it calls (so nested rows overlap): the closest figure to an unprofiled run.
--mode none runs the batch bare (wall and CPU only), --no-fsync with `os.fsync` a no-op in
run_batch only (a copy of os as its `os`): together, the price of the fsyncs in the whole run.
"""

from __future__ import annotations

import argparse
import concurrent.futures.thread as cf_thread
import contextlib
import cProfile
import importlib.util
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load(path: Path) -> Any:
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("run_batch", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_batch"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def folder(tasks: int) -> tuple[Path, Path, Path]:
    root = Path(tempfile.mkdtemp(prefix="rb-prof-"))
    project, prompts = root / "project", root / "prompts"
    project.mkdir()
    prompts.mkdir()
    (root / "traj").mkdir()
    (project / "config.toml").write_text(
        f'[core]\nruntime = "cli"\nfile_store_path = "{root / "fs"}"\n'
        f'save_trajectory_path = "{root / "traj"}"\n[llm]\ninput_cost_per_token = 0.000001\n'
    )
    for i in range(tasks):
        (prompts / f"task-{i:04d}.md").write_text("Nothing.\n")
    return root, project, prompts


# Functions timed by --mode timers (those missing from the runner under test are left out).
TIMED = [
    "Batch.run_task",
    "Batch.run_attempt",
    "Batch.may_start",
    "claim_attempt_files",
    "make_workspace",
    "Batch.launch",
    "CoreMain.prepare",
    "task_config",
    "write_private_config",
    "make_tmux_dir",
    "child_environment",
    "launch_and_wait",
    "subprocess.Popen.__init__",
    "wait_for_exit",
    "kill_everything",
    "marked_processes",
    "CoreMain.containers",
    "follower_for",
    "Batch.read_outcome",
    "read_attempt_outcome",
    "CoreMain.event_folders",
    "read_outcome",
    "Batch.collect_evidence",
    "redact_file",
    "tail",
    "build_record",
    "Batch.finish",
    "ResultsFile.append",
    "ResultsFile.append_json",
    "AttemptRecord.as_json",
    "Batch.write_status",
    "sum_up",
    "write_summary_json",
    "shutil.rmtree",
]


def install_timers(rb: Any, calls: list[tuple[str, float, float]]) -> list[str]:
    """Wrap each TIMED function in place; every call appends (name, thread CPU s, wall s)."""
    done = []
    for dotted in TIMED:
        owner_name, _, attr = dotted.rpartition(".")
        owner: Any = {"subprocess.Popen": subprocess.Popen, "shutil": shutil}.get(owner_name)
        if owner is None:
            owner = getattr(rb, owner_name, None) if owner_name else rb
        original = getattr(owner, attr, None) if owner is not None else None
        if original is None:
            continue

        def timed(*a: Any, __f: Any = original, __n: str = dotted, **kw: Any) -> Any:
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                return __f(*a, **kw)
            finally:
                calls.append((__n, time.thread_time() - c0, time.perf_counter() - w0))

        setattr(owner, attr, timed)
        done.append(dotted)
    if hasattr(rb, "ResultsFile"):  # how long each record holds the results file's mutex (write + fsync)
        init = rb.ResultsFile.__init__

        def timed_init(self: Any, *a: Any, **kw: Any) -> None:
            init(self, *a, **kw)
            self._mutex = HeldTimer(self._mutex, calls)

        rb.ResultsFile.__init__ = timed_init
        done.append(HeldTimer.NAME)
    return done


class HeldTimer:
    """A lock that records, per acquisition, the holder's CPU and the wall time it was held."""

    NAME = "ResultsFile._mutex held"

    def __init__(self, lock: Any, calls: list[tuple[str, float, float]]) -> None:
        self.lock, self.calls, self.local = lock, calls, threading.local()

    def __enter__(self) -> None:
        self.lock.acquire()
        self.local.start = (time.thread_time(), time.perf_counter())

    def __exit__(self, *exc: object) -> None:
        c0, w0 = self.local.start
        self.calls.append((self.NAME, time.thread_time() - c0, time.perf_counter() - w0))
        self.lock.release()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--mode", choices=("profile", "timers", "none"), default="profile")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="for --mode profile")
    p.add_argument("--no-fsync", action="store_true", help="os.fsync a no-op in run_batch (durability off)")
    p.add_argument("--runner", type=Path, default=ROOT / "run_batch.py")
    p.add_argument("--top", type=int, default=30, help="lines of each table (default: 30)")
    p.add_argument("--save", type=Path, help="also write the merged stats (pstats format) here")
    args = p.parse_args()

    rb = load(args.runner.resolve())
    if args.no_fsync:
        fake_os = types.ModuleType("os")
        fake_os.__dict__.update(os.__dict__)
        fake_os.fsync = lambda fd: None  # type: ignore[attr-defined]
        rb.os = fake_os
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def profiled(target: Any) -> Any:
        def run(*a: Any, **kw: Any) -> Any:
            prof = cProfile.Profile(clock)
            with lock:
                profiles.append(prof)
            prof.enable()
            try:
                return target(*a, **kw)
            finally:
                prof.disable()

        return run

    calls: list[tuple[str, float, float]] = []
    if args.mode == "profile":
        cf_thread._worker = profiled(cf_thread._worker)  # type: ignore[attr-defined]
        if hasattr(rb.Batch, "watch"):  # the monitor thread (older runners have none)
            rb.Batch.watch = profiled(rb.Batch.watch)
    elif args.mode == "timers":
        install_timers(rb, calls)

    root, project, prompts = folder(args.tasks)
    true = shutil.which("true") or "/bin/true"
    argv = [
        "--prompt-dir",
        str(prompts),
        "--project-dir",
        str(project),
        "--max-workers",
        str(args.workers),
        "--quiet",
        "--rerun",
        "--command",
        true,
    ]
    load1 = os.getloadavg()[0]
    cpu0, t0 = time.process_time(), time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = (profiled(rb.main) if args.mode == "profile" else rb.main)(argv)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    timed_calls = list(calls)
    calls.clear()
    n = args.tasks
    shutil.rmtree(root, ignore_errors=True)
    if code not in (0, 1):
        raise SystemExit(f"run_batch exited {code}")
    head = (
        f"{n:,} instant tasks, {args.workers} workers, runner {args.runner}"
        f"{', os.fsync a no-op' if args.no_fsync else ''}; load average {load1:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end"
    )
    if args.mode != "profile":
        print(f"{args.mode}: {head}")
        print(f"  wall {wall:.2f}s, process CPU {cpu:.2f}s ({cpu / n * 1000:.2f} ms/task)")
    if args.mode == "timers":
        per: dict[str, list[float]] = {}
        for name, c, w in timed_calls:
            row = per.setdefault(name, [0, 0.0, 0.0])
            row[0] += 1
            row[1] += c
            row[2] += w
        print("  per task, each including its callees: calls, thread CPU ms, wall ms (a worker's, GIL waits in)")
        for name in [*TIMED, HeldTimer.NAME]:
            if name in per:
                k, c, w = per[name]
                print(f"    {name:<28} {k / n:6.2f} {c / n * 1000:8.3f} {w / n * 1000:9.3f}")
    if args.mode != "profile":
        return

    out = io.StringIO()
    stats = pstats.Stats(profiles[0], stream=out)
    for prof in profiles[1:]:
        stats.add(prof)
    if args.save:
        stats.dump_stats(str(args.save))
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    print(f"profile ({args.clock} clock, {len(profiles)} threads): {head}")
    print(
        f"  wall {wall:.2f}s, process CPU {cpu:.2f}s ({cpu / n * 1000:.2f} ms/task, cProfile's overhead "
        f"included); profiled {args.clock} time {total:.2f}s = {total / n * 1000:.2f} ms/task"
    )
    rows = [(k, v) for k, v in stats.stats.items()]  # type: ignore[attr-defined]

    def name(key: tuple[str, int, str]) -> str:
        file, line, func = key
        where = "run_batch" if file.endswith("run_batch.py") else (Path(file).name if file != "~" else "")
        return f"{where}:{line}({func})" if where else func

    for title, index in (("own time (tottime)", 2), ("including callees (cumtime)", 3)):
        print(f"\n  top {args.top} by {title}: ms/task, share of the profiled time, calls/task")
        for key, v in sorted(rows, key=lambda kv: -kv[1][index])[: args.top]:
            print(f"    {v[index] / n * 1000:8.3f}  {v[index] / total * 100:5.1f}%  {v[1] / n:8.2f}  {name(key)}")
    del out


if __name__ == "__main__":
    main()
