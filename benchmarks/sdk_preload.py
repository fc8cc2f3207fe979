#!/usr/bin/env python3
"""The preloaded SDK (issue 24) beside the per-attempt interpreter, in one run on one machine.

    .venv/bin/python benchmarks/sdk_preload.py [--python PATH] [--repeats 2] [--startup-tasks 3]
                                     [--concurrent 8] [--batch 16] [--workers 4] [--runner PATH]
                                     [--only startup memory batch]

--entrypoint sdk with the SDK imported once per batch and each attempt forked from it (the
default, "fork") against `--no-preload`, a fresh interpreter per attempt ("fresh"), each batch in
a fresh output folder and HOME, the modes interleaved ABBA (fresh, fork, fork, fresh, ...) so
that drift hits both alike. The LLM is the scripted one (tests/llm_server.py) in this process;
it notes the time of each task's first request and, at that moment, the CPU seconds of the
attempt's process (found in /proc by its session marker and role: `--sdk-driver`, or a fork of
`--sdk-server`). --python is the SDK environment's interpreter (default: the one
`bash examples/install-openhands.sh --version sdk-1.58.2` installs).

  startup  K one-command tasks, one worker (attempts alone): per attempt, the wall time from its
           start (the runner's Popen, or its request to the server to fork) to its first LLM
           request, and the attempt process's own CPU seconds (threads + reaped children) at
           that request; the whole attempt's CPU from its control group (`--task-memory 8G`, as
           root or delegated; else the runner's samples). Also the server's one import (fork
           mode: its CPU at the first attempt's first request).
  memory   8 tasks, 8 workers, each holding in its command until all 8 hold: the sum of PSS and
           of USS (Private_Clean + Private_Dirty, /proc/<pid>/smaps_rollup) over the 8 attempt
           processes, plus the server's in fork mode (PSS shares its pages fairly among them).
           The agents' tmux and shells are the same in both modes and not counted.
  batch    16 one-command tasks, 4 workers: the batch's wall time, and the CPU seconds of the
           runner and every process it reaped (the server and its forks too), from wait4.

Printed: each mode's medians and the ratios fresh/fork, against the issue's targets (at least
10x less CPU per attempt; the SDK's modules shared, not 8 copies). Nothing is written anywhere
but temporary folders.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import re
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
sys.path.insert(0, str(ROOT / "tests"))
from llm_server import ScriptedLLM, _Handler, task_of  # noqa: E402  (the tests' scripted LLM)

MODEL = "openai/gpt-4o-2024-11-20"  # priced by LiteLLM's bundled map
TICK = os.sysconf("SC_CLK_TCK")
NAME = re.compile(r"^Bench (\S+)\.", re.M)
HOLD = "while [ ! -e {release} ]; do echo holding; sleep 1; done"  # prints: the terminal keeps waiting


def default_python() -> str:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return str(cache / "run_batch" / "openhands-sdk-1.58.2" / "bin" / "python")


# --- /proc ----------------------------------------------------------------------------------------


def stat_of(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def cpu_of(pid: int, children: bool = True) -> float | None:
    """utime + stime (+ cutime + cstime: its reaped children) in seconds."""
    fields = stat_of(pid)
    if fields is None:
        return None
    used = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return used / TICK


def attempt_processes(session_prefix: str | None = None) -> dict[int, dict[str, Any]]:
    """The attempt processes alive, with their session marker: a driver (`--sdk-driver`, the
    runner's child) or a fork (a `--sdk-server` whose parent is the server); the servers too. A
    child of either (a fork a moment before its exec) is left out."""
    raw: dict[int, tuple[int, str, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"--sdk-driver" not in cmdline and b"--sdk-server" not in cmdline:
                continue
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat_of(pid)
        if fields is None or fields[0] in (b"Z", b"X"):
            continue
        session = next((e[18:].decode(errors="replace") for e in environ if e.startswith(b"RUN_BATCH_SESSION=")), "")
        raw[pid] = (int(fields[1]), "driver" if b"--sdk-driver" in cmdline else "server", session)

    def role(pid: int) -> str:
        ppid, flag, _ = raw[pid]
        parent = raw.get(ppid)
        if parent is None:
            return flag  # the runner's child: a driver, or the server
        if flag == "server" and parent[1] == "server" and parent[0] not in raw:
            return "fork"
        return "child"

    found = {pid: {"pid": pid, "ppid": v[0], "role": role(pid), "session": v[2]} for pid, v in raw.items()}
    found = {p: i for p, i in found.items() if i["role"] != "child"}
    if session_prefix is not None:
        found = {p: i for p, i in found.items() if i["session"].startswith(session_prefix)}
    return found


def holding(names: list[str]) -> int:
    """How many of these tasks' commands hold now (a `sleep` carrying the task's session marker)."""
    sessions = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if Path(f"/proc/{entry}/comm").read_text().strip() != "sleep":
                continue
            for e in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                if e.startswith(b"RUN_BATCH_SESSION="):
                    sessions |= {n for n in names if e[18:].decode(errors="replace").startswith(f"{n}-")}
    return len(sessions)


def memory_of(pid: int) -> dict[str, int]:
    """kB of smaps_rollup: Rss, Pss, and Uss (Private_Clean + Private_Dirty)."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0])
    return {
        "rss": values.get("Rss", 0),
        "pss": values.get("Pss", 0),
        "uss": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
    }


# --- the scripted LLM, noting each task's first request -------------------------------------------


class Noting(_Handler):
    def do_POST(self) -> None:
        arrived = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with contextlib.suppress(ValueError, AttributeError):
            match = NAME.search(task_of(json.loads(body).get("messages") or []))
            if match:
                self.server.note(match.group(1), arrived)  # type: ignore[attr-defined]
        self.rfile = io.BytesIO(body)
        super().do_POST()


class NotingLLM(ScriptedLLM):
    def __init__(self) -> None:
        super().__init__()
        self.RequestHandlerClass = Noting
        self.first: dict[str, dict[str, Any]] = {}
        self._noting = threading.Lock()

    def note(self, name: str, arrived: float) -> None:
        with self._noting:
            if name in self.first:
                return
            seen: dict[str, Any] = {"at": arrived}
            self.first[name] = seen
        # the attempt waits for this answer: its CPU now is its CPU to the first request
        procs = [i for i in attempt_processes(f"{name}-").values() if i["role"] in ("driver", "fork")]
        if len(procs) == 1:
            pid = procs[0]["pid"]
            seen.update(pid=pid, role=procs[0]["role"], cpu=cpu_of(pid), cpu_self=cpu_of(pid, children=False))
            if procs[0]["role"] == "fork":
                seen["server_cpu"] = cpu_of(procs[0]["ppid"], children=False)


# --- running a batch ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, llm: NotingLLM) -> None:
        self.args, self.llm = args, llm
        self.root = Path(tempfile.mkdtemp(prefix="rb-sdk-preload-"))
        self.count = 0

    def env(self, home: Path) -> dict[str, str]:
        inherited = ("LLM_", "OPENHANDS_", "RUN_BATCH", "TMUX", "LITELLM_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
        env.update(
            HOME=str(home),
            OPENHANDS_PERSISTENCE_DIR=str(home / ".openhands"),
            LLM_MODEL=MODEL,
            LLM_API_KEY="sk-bench-0123456789",
            LLM_BASE_URL=self.llm.base_url,
        )
        return env

    def batch(self, mode: str, prompts: dict[str, str], workers: int, *extra: str, during: Any = None) -> dict:
        """One batch in fresh folders: its wall, the CPU of the runner and all it reaped, its records."""
        self.count += 1
        folder = self.root / f"{self.count:02d}-{mode}"
        project, prompt_dir, home = folder / "project", folder / "prompts", folder / "home"
        for d in (project, prompt_dir, home / ".openhands"):
            d.mkdir(parents=True)
        for name, text in prompts.items():
            (prompt_dir / f"{name}.md").write_text(text)
        argv = [
            sys.executable,
            str(self.args.runner),
            "--prompt-dir",
            str(prompt_dir),
            "--project-dir",
            str(project),
            "--entrypoint",
            "sdk",
            "--command",
            self.args.python,
            "--max-workers",
            str(workers),
            "--timeout",
            "600",
            "--quiet",
            *(["--no-preload"] if mode == "fresh" else []),
            *extra,
        ]
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=self.env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        held = during(proc, project / "batch_output") if during else None
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        code = os.waitstatus_to_exitcode(status)
        if code not in (0, 1):
            raise SystemExit(f"the batch failed ({code}): {' '.join(argv)}\n{err[-2000:]}")
        lines = (project / "batch_output" / "batch_results.jsonl").read_text().splitlines()
        records = {r["task_name"]: r for r in map(json.loads, lines)}
        bad = [n for n, r in records.items() if r["status"] != "success"]
        if len(records) != len(prompts) or bad:
            raise SystemExit(f"{mode}: {len(records)} records for {len(prompts)} tasks, not successful: {bad}")
        return {
            "wall": wall,
            "cpu": usage.ru_utime + usage.ru_stime,
            "records": records,
            "held": held,
            "load": load,
            "folder": folder,
        }


def when(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def cgroup_limits_work(bench: Bench) -> bool:
    """Whether --task-memory works here (a fork mode batch of one task: the start-up's warm-up too)."""
    try:
        bench.batch("fork", {"probe-cg": "Bench probe-cg.\nRUN: true\n"}, 1, "--task-memory", "8G")
        return True
    except SystemExit as exc:
        print(f"  (--task-memory does not work here: {str(exc).splitlines()[-1]})", flush=True)
        return False


def order(repeats: int) -> list[str]:
    """ABBA: fresh, fork, fork, fresh, fresh, fork, ..."""
    pattern = ["fresh", "fork", "fork", "fresh"]
    return [pattern[i % 4] for i in range(2 * repeats)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- the three measures ---------------------------------------------------------------------------


def bench_startup(bench: Bench, args: argparse.Namespace, limits: list[str]) -> dict[str, dict[str, list[float]]]:
    got: dict[str, dict[str, list[float]]] = {m: {} for m in ("fresh", "fork")}
    for i, mode in enumerate(order(args.repeats)):
        names = [f"s{i}{mode[:2]}{k}" for k in range(args.startup_tasks)]
        done = bench.batch(mode, {n: f"Bench {n}.\nRUN: echo started\n" for n in names}, 1, *limits)
        for n in names:
            r, first = done["records"][n], bench.llm.first.get(n, {})
            row = got[mode]
            row.setdefault("wall_to_first", []).append(first["at"] - when(r["started_at"]))
            if first.get("cpu") is not None:
                row.setdefault("cpu_to_first", []).append(first["cpu"])
                row.setdefault("cpu_self_to_first", []).append(first["cpu_self"])
            if r.get("cpu_seconds") is not None:
                row.setdefault("cpu_attempt", []).append(r["cpu_seconds"])
            row.setdefault("wall_attempt", []).append(r["elapsed_time_seconds"])
            if first.get("server_cpu") is not None and n == names[0]:
                row.setdefault("server_import_cpu", []).append(first["server_cpu"])
            row.setdefault("source", []).append(r.get("resource_source") or "none")  # type: ignore[arg-type]
            row.setdefault("load", []).append(done["load"])
        print(
            f"  startup {mode:5} run {i + 1}: wall to 1st request "
            + ", ".join(f"{x:.2f}" for x in got[mode]["wall_to_first"][-len(names) :])
            + " s; CPU to 1st request "
            + ", ".join(f"{x:.2f}" for x in got[mode].get("cpu_to_first", [])[-len(names) :])
            + " s; whole attempt CPU "
            + ", ".join(f"{x:.2f}" for x in got[mode].get("cpu_attempt", [])[-len(names) :])
            + f" s (load {done['load']:.1f})",
            flush=True,
        )
    return got


def bench_memory(bench: Bench, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    got: dict[str, list[dict[str, float]]] = {"fresh": [], "fork": []}
    n = args.concurrent
    for i, mode in enumerate(order(max(1, args.repeats // 2))):
        release = bench.root / f"release-{i}"
        names = [f"m{i}{mode[:2]}{k}" for k in range(n)]
        prompts = {x: f"Bench {x}.\nRUN: {HOLD.format(release=release)}\n" for x in names}

        def hold(
            proc: subprocess.Popen[bytes], output: Path, names: list[str] = names, release: Path = release
        ) -> dict:
            """Once every attempt's command holds: their memory (and the server's); then let them go."""
            deadline = time.monotonic() + 900
            measured: dict[str, float] = {}
            while time.monotonic() < deadline and proc.poll() is None:
                if holding(names) < len(names):
                    time.sleep(0.5)
                    continue
                time.sleep(2)  # let the terminals settle
                mine = [
                    p
                    for p in attempt_processes().values()
                    if p["role"] in ("driver", "fork") and any(p["session"].startswith(f"{x}-") for x in names)
                ]
                servers = {p["ppid"] for p in mine if p["role"] == "fork"}
                each = [memory_of(p["pid"]) for p in mine]
                server = [memory_of(s) for s in servers]
                measured = {
                    "attempts": len(mine),
                    "pss_attempts_mb": sum(m["pss"] for m in each) / 1024,
                    "uss_attempts_mb": sum(m["uss"] for m in each) / 1024,
                    "rss_attempts_mb": sum(m["rss"] for m in each) / 1024,
                    "uss_each_mb": statistics.mean(m["uss"] for m in each) / 1024,
                    "pss_server_mb": sum(m["pss"] for m in server) / 1024,
                    "uss_server_mb": sum(m["uss"] for m in server) / 1024,
                }
                measured["pss_total_mb"] = measured["pss_attempts_mb"] + measured["pss_server_mb"]
                measured["uss_total_mb"] = measured["uss_attempts_mb"] + measured["uss_server_mb"]
                break
            release.touch()
            return measured

        done = bench.batch(mode, prompts, n, during=hold)
        m = done["held"]
        if not m:
            raise SystemExit(f"memory {mode}: the {n} attempts never all held")
        m["load"] = done["load"]
        got[mode].append(m)
        print(
            f"  memory  {mode:5} run {i + 1}: {m['attempts']} attempts PSS {m['pss_attempts_mb']:.0f} MB + server "
            f"{m['pss_server_mb']:.0f} MB = {m['pss_total_mb']:.0f} MB; USS {m['uss_attempts_mb']:.0f} MB "
            f"({m['uss_each_mb']:.0f} MB each) + server {m['uss_server_mb']:.0f} MB; RSS sum "
            f"{m['rss_attempts_mb']:.0f} MB (load {m['load']:.1f})",
            flush=True,
        )
    return got


def bench_batch(bench: Bench, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    got: dict[str, list[dict[str, float]]] = {"fresh": [], "fork": []}
    for i, mode in enumerate(order(args.repeats)):
        names = [f"b{i}{mode[:2]}{k:02d}" for k in range(args.batch)]
        done = bench.batch(mode, {n: f"Bench {n}.\nRUN: echo done\n" for n in names}, args.workers)
        got[mode].append({"wall": done["wall"], "cpu": done["cpu"], "load": done["load"]})
        print(
            f"  batch   {mode:5} run {i + 1}: {args.batch} tasks, {args.workers} workers: {done['wall']:.1f} s wall, "
            f"{done['cpu']:.1f} s CPU (runner and all it reaped; load {done['load']:.1f})",
            flush=True,
        )
    return got


# --- main -----------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=default_python(), help="the SDK environment's Python")
    parser.add_argument("--runner", type=Path, default=ROOT / "run_batch.py")
    parser.add_argument("--repeats", type=int, default=2, help="ABBA pairs of each measure (memory: half)")
    parser.add_argument("--startup-tasks", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--only", nargs="+", choices=("startup", "memory", "batch"), default=["startup", "memory", "batch"]
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders (their path is printed)")
    args = parser.parse_args()
    if not os.access(args.python, os.X_OK):
        raise SystemExit(f"no SDK at {args.python}: run `bash examples/install-openhands.sh --version sdk-1.58.2`")
    version = subprocess.run(
        [args.python, "-c", "import importlib.metadata as m; print(m.version('openhands-sdk'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    llm = NotingLLM().start()
    bench = Bench(args, llm)
    print(
        f"openhands-sdk {version} ({args.python}); {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}; "
        f"{dt.datetime.now().isoformat(timespec='minutes')}; folders in {bench.root}",
        flush=True,
    )
    try:
        limits = ["--task-memory", "8G"] if cgroup_limits_work(bench) else []
        print(f"  (whole-attempt CPU from {'its control group' if limits else 'the runner samples'})", flush=True)
        summary: list[str] = []
        if "startup" in args.only:
            s = bench_startup(bench, args, limits)
            fresh, fork = s["fresh"], s["fork"]
            for key, label in (
                ("wall_to_first", "wall, start to 1st LLM request"),
                ("cpu_to_first", "CPU to 1st LLM request (process + its reaped children)"),
                ("cpu_self_to_first", "CPU to 1st LLM request (process alone)"),
                ("cpu_attempt", "CPU, whole one-command attempt"),
                ("wall_attempt", "wall, whole one-command attempt"),
            ):
                a, b = median(fresh.get(key, [])), median(fork.get(key, []))
                summary.append(f"startup  {label}: fresh {a:.2f} s, fork {b:.2f} s: {ratio(a, b)}")
            imports = fork.get("server_import_cpu", [])
            if imports:
                summary.append(
                    f"startup  the server's one import (CPU, median of {len(imports)}): {median(imports):.2f} s"
                )
            cpu_ratio = median(fresh.get("cpu_to_first", [])) / max(1e-9, median(fork.get("cpu_to_first", [])))
            summary.append(f"startup  target: >= 10x less CPU per attempt: {'met' if cpu_ratio >= 10 else 'NOT met'}")
        if "memory" in args.only:
            m = bench_memory(bench, args)
            for key, label in (
                ("pss_total_mb", f"PSS of {args.concurrent} attempts (+ the server)"),
                ("uss_total_mb", f"USS of {args.concurrent} attempts (+ the server)"),
                ("uss_each_mb", "USS per attempt"),
            ):
                a, b = median([x[key] for x in m["fresh"]]), median([x[key] for x in m["fork"]])
                summary.append(f"memory   {label}: fresh {a:.0f} MB, fork {b:.0f} MB: {ratio(a, b)}")
        if "batch" in args.only:
            b = bench_batch(bench, args)
            for key, unit in (("wall", "wall"), ("cpu", "CPU")):
                x, y = median([r[key] for r in b["fresh"]]), median([r[key] for r in b["fork"]])
                summary.append(
                    f"batch    {args.batch} tasks, {args.workers} workers, {unit}: fresh {x:.1f} s, fork {y:.1f} s: "
                    f"{ratio(x, y)}"
                )
        print(f"\nSummary (medians; openhands-sdk {version}, load now {os.getloadavg()[0]:.1f}):")
        for line in summary:
            print("  " + line)
    finally:
        llm.shutdown()
        if not args.keep:
            shutil.rmtree(bench.root, ignore_errors=True)


if __name__ == "__main__":
    main()
