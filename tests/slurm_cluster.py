"""A throw-away single-node Slurm on this machine, for the tests (no pytest in here).

    cluster = SlurmCluster(folder)      # every file it makes lives in folder
    cluster.start()                     # munged, slurmctld, slurmd; raises SlurmUnavailable
    job = cluster.sbatch(["--array=0-3", "script.sh"], env=..., cwd=...)
    cluster.wait_finished(job)          # {"<job>_0": "COMPLETED", ...}
    cluster.close()                     # stops the daemons and anything left of their jobs

It uses Debian's packages (`slurm-wlm`, `munge`; `bash .ci/install-slurm.sh` installs them) and
needs root: slurmd starts jobs as their user. The configuration is the smallest one that behaves
like a real cluster for the things the tests look at (signals at the time limit and on scancel,
KillWait, array tasks): ProctrackType=proctrack/linuxproc (a job's processes are the descendants
of its slurmstepd, found through /proc, as on a cluster without cgroups), TaskPlugin=task/none,
no accounting database. Finished jobs are written by jobcomp/filetxt to jobcomp.txt, so their
final state (COMPLETED, TIMEOUT, CANCELLED, FAILED) can be read after slurmctld has forgotten them.

Its own munged (own key, socket, pid and log files) and its own ports (free ones, picked at start)
mean it neither needs nor touches a Slurm or munge already on the machine. Run as a script to try
it by hand: `python tests/slurm_cluster.py DIR` starts a cluster in DIR and prints the
SLURM_CONF to export, then waits for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conftest import processes_with  # the same /proc walk the tests use

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
# Daemons live in sbin, which is not on every PATH (e.g. a non-login root shell).
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/local/sbin", "/usr/sbin", "/sbin"])
FINISHED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}
INSTALL_HINT = "install with: bash .ci/install-slurm.sh"


class SlurmUnavailable(RuntimeError):
    """Slurm cannot run here; the message says why in one line."""


def missing_programs() -> list[str]:
    return [name for name in DAEMONS + CLIENTS + ("slurmstepd",) if not shutil.which(name, path=SEARCH_PATH)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


class SlurmCluster:
    """One node (`localhost`), one partition (`batch`), state and logs all in `folder`."""

    def __init__(self, folder: Path, cpus: int | None = None, kill_wait: int = 5, min_job_age: int = 300) -> None:
        self.folder = Path(folder).resolve()
        # Slots for jobs, not real cores: the tests' jobs mostly sleep, and array tasks should run
        # at the same time even on a 2-core machine (config_overrides: the node is not drained
        # for having fewer cores than configured).
        self.cpus = cpus or max(os.cpu_count() or 1, 8)
        self.kill_wait = kill_wait
        self.min_job_age = min_job_age
        self.conf = self.folder / "slurm.conf"
        # A unix socket path is limited to 107 bytes: fall back to a short private folder.
        self.munge_dir = self.folder / "munge"
        if len(str(self.munge_dir / "munge.socket")) > 100:
            self.munge_dir = Path(tempfile.mkdtemp(prefix="munge-"))
        self.socket = self.munge_dir / "munge.socket"
        self.jobcomp = self.folder / "jobcomp.txt"
        self.marker = f"SLURM_TEST_CLUSTER={self.folder}"  # in the daemons' environment, and slurmstepd's
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}
        self.ports = (0, 0)

    # ------------------------------------------------------------------ setup

    @property
    def env(self) -> dict[str, str]:
        """What a client command (sbatch, squeue...) needs on top of the caller's environment."""
        return {"SLURM_CONF": str(self.conf)}

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SQUEUE_", "SCANCEL_"))]:
            del env[key]  # running inside a Slurm job must not leak that job's settings
        env.update(self.env)
        env["PATH"] = SEARCH_PATH if base is None else os.pathsep.join([env.get("PATH", os.defpath), SEARCH_PATH])
        return env

    def write_config(self) -> None:
        f = self.folder
        for d in ("state", "spool", "logs"):
            (f / d).mkdir(parents=True, exist_ok=True)
        self.munge_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (f / "plugstack.conf").write_text("")
        ctld_port, d_port = self.ports
        self.conf.write_text(f"""\
# Written by tests/slurm_cluster.py: a single-node test cluster, everything under {f.name}/.
ClusterName=runbatchtest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.socket}
CredType=cred/munge
StateSaveLocation={f / "state"}
SlurmdSpoolDir={f / "spool"}
SlurmctldPidFile={f / "slurmctld.pid"}
SlurmdPidFile={f / "slurmd.pid"}
SlurmctldLogFile={f / "logs" / "slurmctld.log"}
SlurmdLogFile={f / "logs" / "slurmd.log"}
SlurmctldDebug=debug
SlurmdDebug=debug
PlugStackConfig={f / "plugstack.conf"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
MinJobAge={self.min_job_age}
KillWait={self.kill_wait}
OverTimeLimit=0
InactiveLimit=0
MaxArraySize=1000
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=1000 State=UNKNOWN
PartitionName=batch Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name: str, argv: list[str]) -> None:
        env = self.client_env()
        env[self.marker.split("=", 1)[0]] = str(self.folder)
        with open(self.folder / "logs" / f"{name}.out", "ab") as log:
            self.daemons[name] = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _exe(self, name: str) -> str:
        path = shutil.which(name, path=SEARCH_PATH)
        if not path:
            raise SlurmUnavailable(f"{name} not found; {INSTALL_HINT}")
        return path

    def start(self, timeout: float = 60.0) -> float:
        """Start munged, slurmctld and slurmd; return once the node takes jobs (the seconds it
        took). Raises SlurmUnavailable (with the daemons' last log lines) when it cannot."""
        t0 = time.monotonic()
        missing = missing_programs()
        if missing:
            raise SlurmUnavailable(f"Slurm is not installed (missing {', '.join(missing)}); {INSTALL_HINT}")
        if os.geteuid() != 0:
            raise SlurmUnavailable("a test Slurm needs root (slurmd starts jobs as their user)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ports = (free_port(), free_port())
        self.write_config()
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        try:
            m = self.munge_dir
            self._spawn(
                "munged",
                [
                    self._exe("munged"),
                    "--foreground",
                    "--force",
                    f"--key-file={key}",
                    f"--socket={self.socket}",
                    f"--pid-file={m / 'munged.pid'}",
                    f"--log-file={m / 'munged.log'}",
                    f"--seed-file={m / 'munged.seed'}",
                ],
            )
            self._wait(lambda: self.socket.exists(), 10, "munged did not create its socket")
            self._spawn("slurmctld", [self._exe("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._wait(
                lambda: "UP" in self.call("scontrol", "ping").stdout,
                timeout,
                "slurmctld did not answer `scontrol ping`",
            )
            self._spawn("slurmd", [self._exe("slurmd"), "-D", "-f", str(self.conf), "-N", "localhost"])
            self._wait(self._node_idle, timeout - (time.monotonic() - t0), "the node did not become idle")
        except BaseException:
            self.close()
            raise
        return time.monotonic() - t0

    def _node_idle(self) -> bool:
        out = self.call("sinfo", "--noheader", "--Node", "--format=%T").stdout.strip()
        return out.rstrip("*") == "idle"

    def _wait(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + max(timeout, 1.0)
        while time.monotonic() < deadline:
            for name, proc in self.daemons.items():
                if proc.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                if ready():
                    return
            time.sleep(0.1)
        raise SlurmUnavailable(f"{what} within {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, name: str | None = None, lines: int = 3) -> str:
        names = [name] if name else list(self.daemons)
        found = []
        for n in names:
            for path in (
                self.folder / "logs" / f"{n}.out",
                self.folder / "logs" / f"{n}.log",
                self.munge_dir / "munged.log",
            ):
                text = path.read_text(errors="replace").strip() if path.exists() and n in path.name else ""
                if text:
                    found.append(f"[{path.name}] " + " | ".join(text.splitlines()[-lines:]))
        return " ".join(found) or "no log"

    # ------------------------------------------------------------------ clients

    def call(
        self, *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self._exe(argv[0]), *argv[1:]],
            env=self.client_env(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def sbatch(self, args: Iterable[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
        """Submit; return the job id (for an array, the array's id)."""
        done = self.call("sbatch", "--parsable", *args, env=env, cwd=cwd)
        if done.returncode != 0:
            raise RuntimeError(f"sbatch failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def jobs(self, job: str) -> dict[str, dict[str, str]]:
        """The tasks of job (an array or a single job) slurmctld still knows, by `<id>_<index>`
        (or `<id>`), each the `scontrol show job` fields. Pending array tasks that have not been
        split off yet appear once, as `<id>_[...]`."""
        out = self.call("scontrol", "--oneliner", "show", "job", job).stdout
        found: dict[str, dict[str, str]] = {}
        for line in out.splitlines():
            fields = dict(re.findall(r"(\S+?)=(\S*)", line))
            if "JobId" not in fields:
                continue
            name = fields["JobId"]
            if fields.get("ArrayJobId") and fields.get("ArrayTaskId"):
                name = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
            found[name] = fields
        return found

    def states(self, job: str) -> dict[str, str]:
        return {name: f.get("JobState", "?") for name, f in self.jobs(job).items()}

    def wait_finished(self, job: str, timeout: float = 120) -> dict[str, str]:
        """Wait until every task of job has ended; return their final states."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.states(job)
            if states and all(s in FINISHED for s in states.values()) and not any("[" in n for n in states):
                return states
            time.sleep(0.25)
        raise TimeoutError(f"job {job} still running after {timeout}s: {states}")

    def wait_running(self, job: str, count: int, timeout: float = 30) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.states(job)
            if sum(s == "RUNNING" for s in states.values()) >= count:
                return states
            time.sleep(0.1)
        raise TimeoutError(f"job {job}: fewer than {count} tasks running after {timeout}s: {states}")

    def completions(self) -> list[dict[str, str]]:
        """Every finished job as jobcomp/filetxt recorded it (JobId, JobState, ExitCode...)."""
        if not self.jobcomp.exists():
            return []
        return [dict(re.findall(r"(\S+?)=(\S*)", line)) for line in self.jobcomp.read_text().splitlines()]

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Cancel every job, stop the daemons, kill what is left of them (slurmstepd and its
        children). Safe to call twice."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                self.call("scancel", "--user=root", timeout=10)
                deadline = time.monotonic() + self.kill_wait + 5  # let slurmstepd end its jobs
                while self.call("squeue", "--noheader", timeout=10).stdout.strip() and time.monotonic() < deadline:
                    time.sleep(0.2)
        for name in reversed(DAEMONS):
            proc = self.daemons.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        # slurmstepd detaches from slurmd; its jobs are its descendants (they do not carry the
        # marker: a job's environment is the submitter's).
        for pid in processes_with(self.marker):
            for child in [pid, *descendants(pid)]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child, signal.SIGKILL)
        self.daemons.clear()
        if self.munge_dir.parent != self.folder:
            shutil.rmtree(self.munge_dir, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


if __name__ == "__main__":
    where = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="slurm-"))
    cluster = SlurmCluster(where)
    try:
        took = cluster.start()
    except SlurmUnavailable as exc:
        sys.exit(f"slurm_cluster: {exc}")
    print(
        f"single-node Slurm up in {took:.1f}s; to use it:\n  export SLURM_CONF={cluster.conf}\nCtrl-C stops it.",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.close()
