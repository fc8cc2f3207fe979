#!/usr/bin/env python3
"""run_batch: run a folder of task prompts through OpenHands, and keep an experiment's record.

Every `*.md` file in --prompt-dir is one task. Each attempt of a task runs OpenHands once, with a
private config, a fresh session and a timeout; every trajectory and log is kept, and one JSON line
per attempt is appended to the results file: status, agent state, time, cost and tokens, the
verdict of an evaluator, and which model, release and configuration made it.

The file reads top to bottom in the order the data flows; a section uses only what is above it
(tests/test_structure.py keeps it so):
    Vocabulary       the values that travel through every step (a task, an attempt, its record,
                     an experiment) and the small helpers they share (text, files)
    Command line     argv -> Settings
    Plan             prompts -> tasks (front matter), the selection, the samples still to run
    Configure        the OpenHands seam: per entrypoint, the config, argv and environment of an
                     attempt, where its outcome is read, the options it refuses, its experiment
    Launch and wait  process handling: markers and the sweep, one attempt start to end, the
                     preloaded SDK's client, control groups, room to start (rate limits, memory)
    Read the outcome what an attempt left: state, reason, cost and tokens, in every log format
    Follow           running attempts: live spend and steps, stalls, budgets, out of memory
    Evaluate         the user's grader, --before-attempt, prompt placeholders, verdicts
    Record           the results file, its records, the attempt's files and workspace
    Report           statistics (pass@k, intervals, tests), an experiment's results, the
                     console and the log, summary.json, the HTML page, comparing runs, --report
    The batch        the output folder, admission (rate limit, free memory, start delay), the
                     pool, one attempt start to record, signals, summing up, --evaluate-only
    The SDK driver   one attempt inside OpenHands' own environment, and the preloaded SDK
    The program      main()
What the code relies on about OpenHands is written down, with the versions it was checked on, in
docs/openhands.md; about control groups in docs/cgroups.md; the statistics in docs/statistics.md.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import dataclasses
import datetime as dt
import difflib
import errno
import fcntl
import fnmatch
import gc
import hashlib
import html
import io
import json
import math
import os
import platform
import queue
import random
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import stat
import string
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import traceback
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Protocol, TypeVar

__version__ = "0.5.0"

DEFAULT_COMMAND = "poetry run python -m openhands.core.main"

DEFAULT_GRACE_PERIOD = 30.0

STATUSES = ("success", "failed", "timeout", "stalled", "error", "interrupted")

UNKNOWN = "?"  # how a value nobody measured is shown, everywhere

TAIL_CHARS = 4000  # how much of each log's end goes into a record; the whole text is in logs/

REASON_CHARS = 500  # a record's `error` is one line of at most this; the whole text is in the logs

PROMPT_LIMIT = 10 * 1024 * 1024  # bytes; a bigger prompt is an `error` record, never read whole

LINE_PIECE = 64 * 1024  # logs are scanned in pieces of at most this, however long a line is

STEM_LIMIT = 100  # bytes of a task's file-name stem; longer names are shortened and hashed

SECRET_MIN_LENGTH = 8  # shorter values are not treated as secrets (they would mask ordinary words)

MARKER_RUN = "RUN_BATCH_RUN_ID"  # environment marker every process of a task inherits

MARKER_SESSION = "RUN_BATCH_SESSION"

MARKER_RUNNER = "RUN_BATCH_RUNNER"  # the runner's pid: a live runner's tasks are never "left over"

# Every signal whose default would end the runner on the spot (leaving its tasks running with no
# timeout and its private configs behind) stops the batch the graceful way instead.
SIGNALS_THAT_STOP = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGXCPU,
)

EVALUATIONS_FILE = "evaluations.jsonl"

SDK_DRIVER_FLAG = "--sdk-driver"

DRIVER_LACKS = "run_batch driver: "  # starts the driver's stderr line on a private SDK part it lacks

SDK_SERVER_FLAG = "--sdk-server"

SESSION_PLACEHOLDER = "~" * 120  # the server's RUN_BATCH_SESSION, overwritten in each attempt's copy


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask sets it, racing other threads)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)  # no /proc: at import time, before any thread exists
    os.umask(old)
    return old


UMASK = current_umask()


class UsageError(Exception):
    """A user's mistake: reported in one line, exit status 2, nothing written."""


# ================================================================================================
# Vocabulary: the values that travel through every step, and the small helpers they share
# ================================================================================================
# Defined first, so that every later section reads top to bottom: a section uses only what is above it.


# ------------------------------------------------------------------------------------------------
# Text, numbers and time
# ------------------------------------------------------------------------------------------------


def one_line(text: str, limit: int = REASON_CHARS) -> str:
    """Text as one line of at most limit characters, without control characters (a task's output
    may hold terminal escapes, which must not reach the console) (pure)."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text[: limit * 4]).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def printable(name: str) -> str:
    """A task name on one console line (names may hold newlines or control characters)."""
    return name if name.isprintable() else repr(name)


def readable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (kept by Python as lone surrogates, which
    no UTF-8 file can hold) become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:length]


def _cut_utf8(text: str, limit: int) -> str:
    """At most `limit` bytes of text, cut on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_money(value: float | None) -> str:
    return f"${UNKNOWN}" if value is None else f"${value:.4f}"


def format_count(value: int | None) -> str:
    return UNKNOWN if value is None else str(value)


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(stamp: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _number_or_none(value: Any) -> float | None:
    """A finite number from outside, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_size(text: Any) -> int | None:
    """A memory size: bytes as a whole number, or `512M`, `4G`, `4GiB`, `1.5g` (powers of 1024);
    None when it is not one (pure)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text if text > 0 else None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        return None
    value = float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " ")
    return int(value) if value >= 1 else None


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "****")
    return text


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ------------------------------------------------------------------------------------------------
# Data from outside, and the files the runner writes
# ------------------------------------------------------------------------------------------------


def open_regular(path: Path | str) -> BinaryIO:
    """A file from outside the runner (a prompt, a task's log or events, a results file) opened for
    reading only when it is a regular file: a FIFO would block for ever and a device never ends.
    O_NONBLOCK makes the open itself return at once on a FIFO; OSError(EINVAL) when not regular."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, device, socket or folder)", str(path))
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value: float = float(text)
    if not math.isfinite(value):  # 1e999 reads as infinity
        raise ValueError(f"{text[:20]} is out of range")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def loads_json(data: str | bytes) -> Any:
    """JSON from outside the runner, strictly: Python's reader takes NaN, Infinity and 1e999,
    which no other reader does, and which would pass through sums and comparisons (a budget
    against NaN is never reached) into files others read. A lone-surrogate escape ("\\ud800") reads
    as U+FFFD: such text can be written to no UTF-8 file."""
    value = json.loads(data, parse_constant=_not_json, parse_float=_finite)
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    return clean_json(value) if _SURROGATE_ESCAPE.search(raw) else value


def clean_text(text: str) -> str:
    """Text that any UTF-8 file can hold: lone surrogates (a non-UTF-8 file name, decoded the
    way Python does) become U+FFFD (pure)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def clean_json(value: Any, depth: int = 0) -> Any:
    """A JSON value that strict readers take and UTF-8 files hold: text cleaned (clean_text),
    numbers that are not finite become null, anything deeper than 64 levels is cut (pure)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v, depth + 1) for k, v in value.items()} if depth < 64 else None
    if isinstance(value, (list, tuple)):
        return [clean_json(v, depth + 1) for v in value] if depth < 64 else None
    return value


def dumps_json(value: Any, indent: int | None = None) -> str:
    """JSON text the runner writes: strict (no NaN or Infinity, which other readers refuse) and
    UTF-8-safe, whatever data from outside it holds (clean_json is only paid for when needed)."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, indent=indent)
        text.encode("utf-8")
        return text
    except (ValueError, UnicodeEncodeError):
        return json.dumps(clean_json(value), ensure_ascii=False, allow_nan=False, indent=indent)


def read_json_file(path: Path, limit: int = 1 << 20) -> Any:
    """A small JSON file (an event), or None when it is missing, broken or over the limit."""
    try:
        with open_regular(path) as f:
            data = f.read(limit + 1)
        return loads_json(data) if len(data) <= limit else None
    except (OSError, ValueError, RecursionError):
        return None


def open_for_writing(path: Path, flags: int, mode: int = 0o600) -> int:
    """A file descriptor to write a file of ours: never through a symbolic link (in a shared output
    folder nobody may redirect our writes), and only to a regular file (opening a FIFO someone put
    in our place would block until a reader came: O_NONBLOCK makes it fail at once instead). New
    files are 0600 less the umask: almost every file the runner writes holds what an agent printed,
    which may hold a secret nobody told the runner about."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    if flags & os.O_CREAT and flags & os.O_EXCL:
        os.set_blocking(fd, True)  # created just now by this call: a regular file
        return fd
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_new(path: Path, exclusive: bool = True, mode: int = 0o600) -> Any:
    """A file of ours opened for writing (see open_for_writing); exclusive: it must not exist yet."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    return os.fdopen(open_for_writing(path, flags, mode), "wb")


def write_text_atomically(path: Path, text: str, fsync: bool = True) -> Path:
    """A file replaced atomically: a reader never sees half of it, and a failed write (a full disk,
    or anything else) leaves neither half a file nor its temporary behind. 0600 less the umask
    (mkstemp's mode), and valid UTF-8 whatever text it was given."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    except OSError as exc:  # name the file the user knows, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(clean_text(text).encode("utf-8"))
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    return path


def write_json_atomically(path: Path, data: dict[str, Any], secrets: tuple[str, ...] = ()) -> Path:
    """A JSON file replaced atomically (write_text_atomically), strict, secrets masked."""
    return write_text_atomically(path, mask(dumps_json(data, indent=2), secrets) + "\n")


def tail(path: Path, chars: int = TAIL_CHARS) -> str:
    try:
        with open_regular(path) as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars * 4))
            data = f.read()
    except OSError:
        return ""
    return ANSI.sub("", data.decode("utf-8", errors="replace"))[-chars:]


def last_line_of(path: Path) -> str:
    lines = [line.strip() for line in tail(path, 64 * 1024).splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------------------------------
# A task, an attempt, and its record
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSettings:
    """What a prompt's front matter sets for its task alone; the command line's options are the
    defaults it overrides (None: not set here)."""

    timeout: float | None = None
    max_iterations: int | None = None
    max_budget_per_task: float | None = None
    task_memory: int | None = None  # bytes
    task_cpus: float | None = None
    samples: int | None = None
    tags: tuple[str, ...] = ()
    vars: tuple[tuple[str, str], ...] = ()  # given to the evaluator and the hook as RUN_BATCH_VAR_<NAME>


@dataclass(frozen=True)
class Task:
    name: str  # the prompt's file name without .md
    prompt_path: Path
    stem: str  # file-name stem of this task's logs and trajectories: unique, also case-blind
    prompt_sha256: str | None
    problem: str | None  # why it cannot be launched (empty, unreadable, not UTF-8, ...), else None
    tag: str = ""  # ASCII identity for session names: readable slug plus a hash of the whole name
    settings: TaskSettings = field(default_factory=TaskSettings)
    body_offset: int = 0  # bytes of front matter before the text the agent gets


@dataclass(frozen=True)
class Limits:
    """What one attempt may use: --task-memory and --task-cpus, or its front matter's."""

    memory: int | None = None  # bytes
    cpus: float | None = None

    @property
    def any(self) -> bool:
        return self.memory is not None or self.cpus is not None

    def as_json(self) -> dict[str, Any] | None:
        return {"memory_bytes": self.memory, "cpus": self.cpus} if self.any else None


@dataclass(frozen=True)
class Usage:
    """What one attempt's processes used, together: from its control group, or sampled."""

    peak_memory: int | None = None  # bytes
    cpu_seconds: float | None = None
    oom_kills: int = 0  # processes the kernel killed at the memory limit
    source: str | None = None  # cgroup | sampled


@dataclass(frozen=True)
class Marker:
    """The environment marker every process of one attempt inherits. OpenHands' CLI runtime starts
    each command in its own session, so a process-group kill misses them, and once reparented they
    are no one's descendants; the inherited environment still says whose they are."""

    run_id: str
    session: str | None = None  # None: every process of the run
    orphans_only: bool = False  # only those whose runner is gone (what a dead run left)

    def environment(self) -> dict[str, str]:
        return {MARKER_RUN: self.run_id, MARKER_SESSION: self.session or "", MARKER_RUNNER: str(os.getpid())}


class Process(Protocol):
    """A running attempt's process as launch_and_wait handles it: a Popen, or an attempt the
    preloaded SDK forked (Forked)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> Any: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


@dataclass(frozen=True)
class AttemptFiles:
    """Where one attempt's evidence goes: claimed fresh, never another attempt's."""

    trajectory: Path
    stdout_log: Path
    stderr_log: Path

    @property
    def stem(self) -> str:
        return self.trajectory.stem

    @classmethod
    def named(cls, output_dir: Path, stem: str) -> AttemptFiles:
        return cls(
            output_dir / "trajectories" / f"{stem}.json",
            output_dir / "logs" / f"{stem}.stdout.log",
            output_dir / "logs" / f"{stem}.stderr.log",
        )


# What must be equal for two records to belong to one experiment: what changes the agent's work.
# The evaluator is recorded beside them, but a changed one only grades again; a key is never in it.
IDENTITY_FIELDS = (
    "label",
    "model",
    "llm_base_url_host",
    "entrypoint",
    "openhands_package",
    "openhands_version",
    "config_sha256",
)


@dataclass(frozen=True)
class Experiment:
    """Which model, release and configuration made a result (every record carries it)."""

    entrypoint: str  # core-main | cli | sdk
    openhands_package: str
    openhands_version: str | None
    model: str | None  # as the agent will use it; None: run_batch cannot know (said in model_source)
    model_source: str
    llm_base_url_host: str | None
    config_sha256: str  # the effective configuration, secrets removed
    label: str | None = None
    evaluator: str | None = None  # --evaluate, masked
    evaluator_sha256: str | None = None
    run_batch_version: str = __version__

    @property
    def id(self) -> str:
        key = json.dumps([getattr(self, f) for f in IDENTITY_FIELDS], ensure_ascii=True)
        return "e-" + hashlib.sha256(key.encode()).hexdigest()[:12]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @classmethod
    def from_json(cls, data: Any) -> Experiment | None:
        """An experiment as a record holds it; None when it is not one (pure)."""
        if not isinstance(data, dict):
            return None
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = data.get(f.name)
            if value is not None and not isinstance(value, str):
                return None
            values[f.name] = value
        if values["entrypoint"] is None or values["config_sha256"] is None:
            return None
        values["openhands_package"] = values["openhands_package"] or ""
        values["model_source"] = values["model_source"] or ""
        values["run_batch_version"] = values["run_batch_version"] or ""
        return cls(**values)

    def differences(self, other: Experiment) -> list[str]:
        """`field: old -> new` for each identity field that differs (pure)."""
        return [
            f"{f.replace('_', ' ')}: {getattr(self, f) or UNKNOWN} -> {getattr(other, f) or UNKNOWN}"
            for f in IDENTITY_FIELDS
            if getattr(self, f) != getattr(other, f)
        ]

    def describe(self) -> str:
        """One line: the model, where it is served, which OpenHands, the configuration, the label."""
        where = f" at {self.llm_base_url_host}" if self.llm_base_url_host else ""
        label = f", label {self.label!r}" if self.label else ""
        return (
            f"{self.id}: model {self.model or UNKNOWN + ' (' + self.model_source + ')'}{where}; "
            f"{self.entrypoint}, {self.openhands_package or 'OpenHands'} {self.openhands_version or UNKNOWN}; "
            f"config {self.config_sha256[:12]}{label}"
        )


def stable_hash(value: Any) -> str:
    """A hash of a JSON-like value that does not depend on key order (pure)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def url_host(url: Any) -> str | None:
    """The host (and port) of a URL, never its user or password (pure)."""
    if not isinstance(url, str) or not url.strip():
        return None
    try:
        parts = urllib.parse.urlsplit(url.strip() if "//" in url else f"//{url.strip()}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    return f"{host}:{port}" if host and port else host


VERDICTS = ("passed", "failed", "error")


@dataclass(frozen=True)
class Evaluation:
    """The evaluator's verdict on one attempt (the record's `evaluation`)."""

    verdict: str  # passed | failed | error
    score: float | None
    details: dict[str, Any] | None
    exit_code: int | None
    elapsed_seconds: float
    log: str | None  # its stdout, whose last line may carry the JSON score
    reason: str | None = None  # why `error`: crashed, timed out, not found
    stderr_log: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # asdict deep-copies: slow

    @classmethod
    def from_json(cls, data: Any) -> Evaluation | None:
        if not isinstance(data, dict) or data.get("verdict") not in VERDICTS:
            return None
        score = _number_or_none(data.get("score"))
        details = data.get("details") if isinstance(data.get("details"), dict) else None
        code = data.get("exit_code") if isinstance(data.get("exit_code"), int) else None
        log = data.get("log") if isinstance(data.get("log"), str) else None
        reason = data.get("reason") if isinstance(data.get("reason"), str) else None
        stderr_log = data.get("stderr_log") if isinstance(data.get("stderr_log"), str) else None
        elapsed = _number_or_none(data.get("elapsed_seconds")) or 0.0
        return cls(data["verdict"], score, details, code, elapsed, log, reason, stderr_log)


@dataclass(frozen=True)
class AttemptRecord:
    """One line of the results file: what one attempt of one task did (docs/records.md). The one
    schema: its fields' types and defaults are what a record read back is checked against
    (RECORD_SCHEMA), and what a record of an older release that lacks a field gets."""

    task_name: str = ""
    prompt_file: str = ""
    status: str = "error"  # one of STATUSES: success | failed | timeout | stalled | error | interrupted
    return_code: int | None = None  # negative: killed by that signal; None: never started
    elapsed_time_seconds: float = 0.0
    stdout: str = ""  # the last TAIL_CHARS characters, colour codes removed, secrets masked
    stderr: str = ""
    total_cost: float | None = None  # None: unknown, never invented
    total_input_tokens: int | None = None
    total_output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    metrics_source: str | None = None  # trajectory | events | output | state | live
    agent_state: str | None = None
    error: str | None = None  # one line, at most REASON_CHARS
    trajectory_path: str | None = None
    attempt: int = 1
    started_at: str = ""
    finished_at: str = ""
    session_name: str = ""
    session_id: str = ""
    stdout_log: str | None = None
    stderr_log: str | None = None
    command: list[str] | None = None
    prompt_sha256: str | None = None
    run_id: str = ""
    evaluation: Evaluation | None = None  # None: not evaluated
    evaluate_command: str | None = None  # the --evaluate that graded it (resume of --evaluate-only)
    workspace: str | None = None  # the attempt's own workspace (--workspace-per-task)
    run_batch: str | None = None  # the version that wrote it: the mark of a run_batch record (0.5+)
    experiment_id: str | None = None  # Experiment.id; None: written before 0.5
    experiment: Experiment | None = None
    sample: int = 1  # which of the task's --samples
    before_attempt: dict[str, Any] | None = None  # what --before-attempt did
    tags: list[str] | None = None  # the prompt's front matter tags
    peak_memory_bytes: int | None = None  # the attempt's processes together, at their largest
    cpu_seconds: float | None = None
    resource_source: str | None = None  # cgroup | sampled
    limits: dict[str, Any] | None = None  # --task-memory / --task-cpus as applied

    @property
    def verdict(self) -> str | None:
        return self.evaluation.verdict if self.evaluation else None

    def as_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # asdict deep-copies: slow
        data["evaluation"] = self.evaluation.as_json() if self.evaluation else None
        data["experiment"] = self.experiment.as_json() if self.experiment else None
        return data

    @classmethod
    def from_json(cls, data: Any) -> AttemptRecord:
        """A record read back from a results file, which is data from outside: the fields it has
        must have their types (ValueError says which does not); fields older records lack get
        their empty value; unknown fields are ignored."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if not isinstance(data.get("task_name"), str):
            raise ValueError("no task_name")
        if data.get("status") not in STATUSES:
            raise ValueError(f"status {str(data.get('status'))[:20]!r} is not one of {', '.join(STATUSES)}")
        values: dict[str, Any] = {}
        for name, (kinds, empty) in RECORD_SCHEMA.items():
            value: Any = data.get(name)
            if value is None:
                values[name] = empty
            elif isinstance(value, bool) or not isinstance(value, kinds):
                raise ValueError(f"{name} has the wrong type ({type(value).__name__})")
            elif isinstance(value, (int, float)) and (
                not math.isfinite(value) or (value < 0 and name != "return_code")
            ):
                raise ValueError(f"{name} is not a number of zero or more")
            elif isinstance(value, list) and not all(isinstance(a, str) for a in value):
                raise ValueError(f"{name} has the wrong type (not a list of strings)")
            elif isinstance(value, int) and float in kinds:
                values[name] = float(value)
            else:
                values[name] = value
        values["evaluation"] = Evaluation.from_json(values["evaluation"])
        values["experiment"] = Experiment.from_json(values["experiment"])
        values["sample"] = max(1, values["sample"])
        return cls(**values)


def _json_kinds(annotation: str) -> tuple[type, ...]:
    """The JSON types a record field of this annotation accepts (pure)."""
    head = annotation.split("|")[0].strip()
    kinds: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float)}
    return kinds.get(head, (list,) if head.startswith("list") else (dict,))


# Each field's accepted JSON types and its value when an older record lacks it, from the class.
RECORD_SCHEMA: dict[str, tuple[tuple[type, ...], Any]] = {
    f.name: (_json_kinds(str(f.type)), f.default) for f in dataclasses.fields(AttemptRecord)
}


# Every field run_batch 0.3 and 0.4 wrote in each record: a line with all of them and without the
# `run_batch` field is one of theirs (it still resumes and reports); with neither, another tool's.
LEGACY_FIELDS = frozenset(
    (
        "task_name",
        "prompt_file",
        "status",
        "return_code",
        "elapsed_time_seconds",
        "stdout",
        "stderr",
        "total_cost",
        "agent_state",
        "error",
        "trajectory_path",
        "attempt",
        "started_at",
        "finished_at",
        "session_name",
        "session_id",
        "stdout_log",
        "stderr_log",
        "command",
        "prompt_sha256",
        "run_id",
    )
)


def written_by_run_batch(data: Any) -> bool:
    """Whether a results line is run_batch's: marked (0.5 on), or with every field of 0.3/0.4 (pure)."""
    return isinstance(data, dict) and (isinstance(data.get("run_batch"), str) or data.keys() >= LEGACY_FIELDS)


def latest_by_task(records: Iterable[AttemptRecord]) -> dict[str, AttemptRecord]:
    """Each task's latest attempt: the highest attempt number, then the later in file order. Never
    the clock: stamps go backwards when a clock is stepped, or come from another machine (pure)."""
    latest: dict[str, AttemptRecord] = {}
    for record in records:
        known = latest.get(record.task_name)
        if known is None or record.attempt >= known.attempt:
            latest[record.task_name] = record
    return latest


def latest_by_sample(records: Iterable[AttemptRecord]) -> dict[tuple[str, int], AttemptRecord]:
    """Each (task, sample)'s latest attempt, by the rule of latest_by_task (pure)."""
    latest: dict[tuple[str, int], AttemptRecord] = {}
    for record in records:
        key = (record.task_name, record.sample)
        known = latest.get(key)
        if known is None or record.attempt >= known.attempt:
            latest[key] = record
    return latest


def attempt_numbers(records: Iterable[AttemptRecord]) -> dict[str, int]:
    """Each task's highest attempt number so far: the next attempt is numbered above every earlier
    one, whichever results file holds it, so it is the latest (pure)."""
    highest: dict[str, int] = {}
    for r in records:
        highest[r.task_name] = max(highest.get(r.task_name, 0), r.attempt)
    return highest


@dataclass(frozen=True)
class Attempt:
    """One attempt of one sample of one task. Numbered and named when it starts, it carries itself
    from there to its record: who it is (task, sample, number, session, run, experiment) and, once
    they are claimed, its files, its workspace and the prompt file OpenHands reads."""

    task: Task
    sample: int
    number: int
    run_id: str
    session: str
    experiment: Experiment
    files: AttemptFiles | None = None
    workspace: Path | None = None
    prompt: Path | None = None  # the filled-in copy with --prompt-placeholders, else the task's own

    @property
    def marker(self) -> Marker:
        return Marker(self.run_id, self.session)

    @property
    def prompt_file(self) -> Path:
        return self.prompt or self.task.prompt_path

    @property
    def evidence(self) -> AttemptFiles:
        """Its files, which exist from the moment it is claimed (launch and outcome need them)."""
        if self.files is None:
            raise RuntimeError(f"attempt {self.session} has no files yet")
        return self.files

    def record(self, sid: str, problem: str | None = None) -> AttemptRecord:
        """Its record before it ran: status error, nothing measured (an attempt that never starts
        keeps it, with the reason)."""
        now = utc_now()
        return AttemptRecord(
            task_name=self.task.name,
            prompt_file=readable(str(self.task.prompt_path)),
            status="error",
            error=one_line(problem or self.task.problem or "not run"),
            attempt=self.number,
            started_at=now,
            finished_at=now,
            session_name=self.session,
            session_id=sid,
            prompt_sha256=self.task.prompt_sha256,
            run_id=self.run_id,
            workspace=str(self.workspace) if self.workspace else None,
            run_batch=__version__,
            experiment_id=self.experiment.id,
            experiment=self.experiment,
            sample=self.sample,
            tags=list(self.task.settings.tags) or None,
        )


@dataclass
class Metrics:
    total_cost: float | None = None
    total_input_tokens: int | None = None
    total_output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    source: str | None = None  # trajectory | events | output

    @property
    def known(self) -> bool:
        return self.total_cost is not None or self.total_input_tokens is not None


@dataclass
class OutputFacts:
    agent_state: str | None = None
    reason: str | None = None  # the specific reason OpenHands logged, if any
    last_exception: str | None = None
    last_error_line: str | None = None
    metrics: Metrics = field(default_factory=Metrics)


@dataclass
class Outcome:
    agent_state: str | None
    metrics: Metrics
    facts: OutputFacts
    problem: str | None = None  # OpenHands ran but could not run the agent at all (no conversation)
    session_id: str | None = None  # known only afterwards (the V1 CLI's conversation id)


@dataclass
class Progress:
    """What one look at a running attempt found new."""

    events: int = 0  # new events since the last look
    steps: int = 0  # of which agent actions
    metrics: Metrics | None = None  # the newest accumulated totals seen, if any
    last_event: str | None = None  # the newest event, in a few words


class Follower(Protocol):
    def poll(self) -> Progress: ...


@dataclass(frozen=True)
class Sources:
    """Where an attempt's outcome and progress are read: the numbered event files of its session
    (core.main; one folder per candidate session id), or its V1 conversation folder."""

    event_folders: tuple[Path, ...] = ()
    conversations: Path | None = None


@dataclass(frozen=True)
class Prepared:
    """One attempt, ready to launch: argv, environment, the private files to remove after, how it
    is asked to stop, and the driver's arguments where a preloaded SDK may fork it instead."""

    argv: list[str]
    env: dict[str, str]
    private_files: tuple[Path, ...]
    kill_commands: bool = True  # at a stop: SIGINT, and the agent's commands ended at once (else it ends them)
    fork_args: list[str] | None = None  # the SDK driver's arguments, for the preloaded SDK


@dataclass(frozen=True)
class About:
    """An entrypoint as --dry-run and the summary name it: kind, release, the rules it follows."""

    entrypoint: str  # core-main | cli | sdk
    version: str | None
    rules: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {"entrypoint": self.entrypoint, "version": self.version, "rules": self.rules}


@dataclass(frozen=True)
class Described:
    """What --dry-run shows of the first task's attempt: the command and, where there is one, the
    config and the workspace (secrets masked)."""

    command: list[str]
    config: dict[str, Any] | None = None
    workspace: str | None = None


@dataclass(frozen=True)
class Grader:
    """--evaluate: the command (split, placeholders checked), where it runs, its time limit."""

    words: tuple[str, ...]
    cwd: Path  # --evaluate-cwd, else the project folder
    output_dir: Path
    timeout: float


class Log(Protocol):
    """Where the runner says what happened (batch_run.log, and the console where asked)."""

    def write(self, message: str, console: bool = False, err: bool = False) -> None: ...

    def warn(self, message: str) -> None: ...

    def once(self, key: str, message: str) -> None: ...


# ================================================================================================
# Command line
# ================================================================================================


USAGE = """run-batch --prompt-dir DIR [options] [-- OPENHANDS_ARGS ...]
       run-batch --report [--output-dir DIR] [--format table|json|markdown|html] [--output FILE]
       run-batch --evaluate-only --evaluate CMD --prompt-dir DIR [--output-dir DIR]"""


DESCRIPTION = """\
Run every *.md prompt in a folder through OpenHands' headless mode, serially or in parallel,
with a timeout per task. Every trajectory and log is kept, and one JSON line per attempt
(status, agent state, time, cost, tokens) is appended to a results file."""


EPILOG = """\
A prompt may start with front matter (YAML between --- lines) setting, for its task alone: timeout,
max_iterations, max_budget_per_task, task_memory, task_cpus, samples, tags, vars. The command line's
options are the defaults it overrides.

-- OPENHANDS_ARGS
  everything after -- is passed to OpenHands unchanged, e.g. -- --selected-repo me/repo

examples:
  # from an OpenHands checkout, 4 tasks at a time, 30 minutes each
  poetry run python run_batch.py --prompt-dir ~/GitTaskBench/prompts --max-workers 4 --timeout 1800

  # installed tool, any OpenHands interpreter, CLI runtime, extra OpenHands flags after --
  run-batch --prompt-dir prompts --project-dir ~/OpenHands --runtime cli \\
      --command "~/OpenHands/.venv/bin/python -m openhands.core.main" -- --selected-repo me/repo

  # what is done so far, without running anything
  run-batch --report --output-dir ~/OpenHands/batch_output

Run the same command again to resume: tasks whose latest record is `success` for the same
prompt are skipped. Exit status: 0 all tasks succeeded, 1 some did not, 2 bad usage,
128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP, 141 console pipe closed).
"""


@dataclass(frozen=True)
class OpenHandsOptions:
    """What every task's OpenHands is told, beyond the base config."""

    runtime: str | None = None
    max_iterations: int | None = None
    max_budget_per_task: float | None = None
    llm_config: str | None = None
    agent_cls: str | None = None
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selection:
    """Which of the discovered tasks run: --tasks, --include, --exclude, --tag, --exclude-tag,
    --shard, --limit."""

    tasks: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    shard: tuple[int, int] | None = None
    limit: int | None = None
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    prompt_dir: Path
    project_dir: Path
    output_dir: Path
    results_name: str
    config_name: str
    base_config: Path | None
    command: tuple[str, ...]
    openhands: OpenHandsOptions
    selection: Selection
    max_workers: int = 1
    timeout: float | None = None
    grace_period: float = DEFAULT_GRACE_PERIOD
    retries: int = 0
    retry_backoff: float = 10.0
    rerun: bool = False
    keep_containers: bool = False
    start_delay: float = 0.0
    max_total_cost: float | None = None
    max_run_cost: float | None = None
    stall_timeout: float | None = None
    heartbeat: float = 60.0
    evaluate: str | None = None
    evaluator: tuple[str, ...] = ()
    evaluate_timeout: float = 600.0
    evaluate_only: bool = False
    fail_on_evaluation: bool = False
    workspace_per_task: bool = False
    workspace_template: Path | None = None
    report_output: Path | None = None
    html: bool = False
    keep_poetry_run: bool = False
    entrypoint: str = "auto"
    openhands_version: str | None = None
    base_config_given: bool = False
    quiet: bool = False
    dry_run: bool = False
    report: bool = False
    output_format: str = "table"
    label: str | None = None
    samples: int = 1
    compare: tuple[str, ...] = ()
    evaluate_cwd: Path | None = None
    before_attempt: str | None = None
    before_hook: tuple[str, ...] = ()  # --before-attempt, split and checked
    before_attempt_timeout: float = 600.0
    prompt_placeholders: bool = False
    limits: Limits = field(default_factory=lambda: Limits())  # --task-memory, --task-cpus
    preload: bool = True  # --no-preload turns it off
    min_free_memory: int | None = None  # bytes
    max_consecutive_failures: int = 3
    venv: Path | None = None  # set when `poetry run` was resolved to the environment's python

    @property
    def results_path(self) -> Path:
        return self.output_dir / self.results_name

    @property
    def grader(self) -> Grader:
        return Grader(self.evaluator, self.evaluate_cwd or self.project_dir, self.output_dir, self.evaluate_timeout)


def _number(minimum: float, inclusive: bool, maximum: float | None = None) -> Callable[[str], float]:
    """argparse type: a finite number above (or at least) minimum, and at most maximum."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value != value or value == float("inf") or value < minimum or (value == minimum and not inclusive):
            bound = "zero or more" if inclusive else "greater than zero"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:.0f} seconds (30 days), got {text!r}")
        return value

    return parse


# Seconds beyond this are a typo, and past what the OS's waits take (an OverflowError mid-batch).
MAX_SECONDS = 30 * 86400.0


_positive_float = _number(0.0, inclusive=False)


_non_negative_float = _number(0.0, inclusive=True)


_positive_seconds = _number(0.0, inclusive=False, maximum=MAX_SECONDS)


_non_negative_seconds = _number(0.0, inclusive=True, maximum=MAX_SECONDS)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments"):
            message += "; put arguments for OpenHands after --"
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="run-batch",
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _where_options(p.add_argument_group("where things are"))
    _running_options(p.add_argument_group("how tasks run"))
    _experiment_options(p.add_argument_group("the experiment"))
    _evaluation_options(p.add_argument_group("did the agent do the task"))
    _openhands_options(p.add_argument_group("OpenHands settings for every task"))
    _selection_options(p.add_argument_group("which tasks"))
    _output_options(p.add_argument_group("what is shown"))
    return p


def _where_options(io: argparse._ArgumentGroup) -> None:
    io.add_argument(
        "--prompt-dir",
        metavar="DIR",
        help="(required, except with --report) folder of task prompts: every visible *.md "
        "file is a task, e.g. --prompt-dir prompts/",
    )
    io.add_argument(
        "--project-dir",
        metavar="DIR",
        default=".",
        help="the OpenHands checkout; tasks run with it as working directory "
        "(default: the current directory), e.g. --project-dir ~/OpenHands",
    )
    io.add_argument(
        "--output-dir",
        metavar="DIR",
        help="where results, trajectories and logs go (default: <project-dir>/batch_output; "
        "a relative path is taken relative to --project-dir), e.g. --output-dir /data/run-07",
    )
    io.add_argument(
        "--results-name",
        metavar="NAME",
        default="batch_results.jsonl",
        help="results file inside --output-dir (default: batch_results.jsonl; with --shard, "
        "batch_results.shard-K-of-N.jsonl), e.g. --results-name nightly.jsonl",
    )
    io.add_argument(
        "--base-config",
        metavar="PATH",
        help="OpenHands config.toml every task starts from (default: <project-dir>/config.toml "
        "when it exists), e.g. --base-config ~/oh/config.toml",
    )
    io.add_argument(
        "--config-name",
        metavar="NAME",
        default="batch_config.toml",
        help="kept for old command lines: the file name of each attempt's temporary config, "
        "which lives in a private temporary folder and is removed after the attempt, so "
        "the name is never seen (default: batch_config.toml)",
    )


def _running_options(run: argparse._ArgumentGroup) -> None:
    run.add_argument(
        "--command",
        metavar="CMD",
        default=DEFAULT_COMMAND,
        help="OpenHands entrypoint, split like a shell would but never run through one "
        "(default: `poetry run python -m openhands.core.main`, run as the Poetry "
        "environment's python directly: see --keep-poetry-run), "
        "e.g. --command '.venv/bin/python -m openhands.core.main'",
    )
    run.add_argument(
        "--keep-poetry-run",
        action="store_true",
        help="with the default --command, run `poetry run` for every task instead of "
        "asking Poetry once for its interpreter (which saves 0.3-1 s per task)",
    )
    run.add_argument(
        "--entrypoint",
        choices=("auto", "core-main", "cli", "sdk"),
        default="auto",
        help="which OpenHands --command is: core-main (`python -m openhands.core.main`, openhands-ai up to "
        "1.6) or cli (the V1 CLI, `openhands --headless`); auto (the default) takes cli for a program named "
        "`openhands` or `-m openhands_cli`. sdk: run each task through openhands-sdk with run_batch's own "
        "driver (a step limit, a budget, the spend saved as it goes); --command is then the Python of an "
        "environment with openhands-sdk (the V1 CLI's), e.g. --entrypoint sdk",
    )
    run.add_argument(
        "--no-preload",
        dest="preload",
        action="store_false",
        help="with --entrypoint sdk, start every attempt in a fresh interpreter, instead of importing the SDK once "
        "per batch and forking each attempt from it (the default on Linux: seconds of start-up saved per attempt)",
    )
    run.add_argument(
        "--openhands-version",
        metavar="X.Y.Z",
        help="the OpenHands release --command runs, when run_batch cannot ask its interpreter (a wrapper "
        "script); it decides the release's rules run_batch follows (where the file store is, how the session id "
        "is made) and is recorded with every result, e.g. --openhands-version 0.33.0",
    )
    run.add_argument(
        "--max-workers",
        metavar="N",
        type=_int_at_least(1),
        default=1,
        help="tasks running at once (default: 1), e.g. --max-workers 4",
    )
    run.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive_seconds,
        default=None,
        help="per task wall-clock limit (default: none), e.g. --timeout 1800",
    )
    run.add_argument(
        "--grace-period",
        metavar="SECONDS",
        type=_non_negative_seconds,
        default=DEFAULT_GRACE_PERIOD,
        help="after a timeout or Ctrl-C, how long OpenHands gets to stop by itself after "
        "SIGINT (it then saves its trajectory) before every process of the task is "
        "killed (default: 30), e.g. --grace-period 150",
    )
    run.add_argument(
        "--retries",
        metavar="N",
        type=_int_at_least(0),
        default=0,
        help="try an attempt that failed for an infrastructure reason (OpenHands or its "
        "runtime failed to start, LLM unavailable) up to N more times, with exponential "
        "backoff (default: 0), e.g. --retries 2",
    )
    run.add_argument(
        "--retry-backoff",
        metavar="SECONDS",
        type=_non_negative_seconds,
        default=10.0,
        help="first retry delay; doubles each time, with jitter (default: 10), e.g. --retry-backoff 30",
    )
    run.add_argument(
        "--rerun", action="store_true", help="run every selected task, even those already recorded as success"
    )
    run.add_argument(
        "--keep-containers",
        action="store_true",
        help="leave each task's Docker container (openhands-runtime-<sid>) in place for inspection",
    )
    run.add_argument(
        "--start-delay",
        metavar="SECONDS",
        type=_non_negative_seconds,
        default=0.0,
        help="at least this long between two task starts (rate limits, container start "
        "storms; default: 0), e.g. --start-delay 5",
    )
    run.add_argument(
        "--max-total-cost",
        metavar="USD",
        type=_positive_float,
        default=None,
        help="the budget of the whole output folder: what every run and shard recorded there plus what is "
        "running now. Once reached, no new task starts (the rest are reported as skipped) and running tasks "
        "are stopped gracefully (interrupted: raise it and run the same command again), e.g. --max-total-cost 25",
    )
    run.add_argument(
        "--max-run-cost",
        metavar="USD",
        type=_positive_float,
        default=None,
        help="the same for this invocation only (its records plus its running tasks), e.g. --max-run-cost 5",
    )
    run.add_argument(
        "--task-memory",
        metavar="SIZE",
        help="each attempt, with every process it starts, in a control group of its own with this memory limit "
        "(cgroup v2 delegated to you, or v1 as root); at the limit it is stopped and recorded `error`, "
        '"out of memory: limit .., peak .." (a prompt\'s front matter task_memory overrides it), e.g. --task-memory 4G',
    )
    run.add_argument(
        "--task-cpus",
        metavar="N",
        type=_positive_float,
        help="each attempt's CPU share, in CPUs (a control group, as for --task-memory), e.g. --task-cpus 1.5",
    )
    run.add_argument(
        "--min-free-memory",
        metavar="SIZE",
        help="start a task only while the machine's available memory is above SIZE (the live view and the "
        "heartbeat say when tasks wait for it), e.g. --min-free-memory 8G",
    )
    run.add_argument(
        "--max-consecutive-failures",
        metavar="N",
        type=_int_at_least(0),
        default=3,
        help="stop starting tasks once N attempts in a row end in the same failure of the provider or the set-up "
        "(key refused, endpoint unreachable, model not found), say which and what to check, exit 1; the same "
        "command resumes once it is fixed (default: 3; 0: never); an agent's failure never counts",
    )
    run.add_argument(
        "--stall-timeout",
        metavar="SECONDS",
        type=_positive_seconds,
        default=None,
        help="stop a task whose agent has produced no new event and no new output for this long, like a "
        "timeout, and record it `stalled` (retried by --retries, rerun by resume; default: off), "
        "e.g. --stall-timeout 600",
    )
    run.add_argument(
        "--heartbeat",
        metavar="SECONDS",
        type=_non_negative_seconds,
        default=None,
        help="off a terminal, a progress line this often: done/total, running, spend so far, ETA "
        "(default: 60, and none with --quiet; 0 turns it off), e.g. --heartbeat 300",
    )


def _experiment_options(ex: argparse._ArgumentGroup) -> None:
    ex.add_argument(
        "--label",
        metavar="TEXT",
        help="a name for this experiment, part of its identity: with a new label the same output folder holds a "
        "second experiment, whose tasks all run and which reports keep apart, e.g. --label gpt-4o-try2",
    )
    ex.add_argument(
        "--samples",
        metavar="K",
        type=_int_at_least(1),
        default=1,
        help="run every selected task K times as independent samples, for pass@k and an honest interval "
        "(default: 1); raising K later runs only the missing samples, e.g. --samples 3",
    )


def _evaluation_options(ev: argparse._ArgumentGroup) -> None:
    ev.add_argument(
        "--evaluate",
        metavar="CMD",
        help="grade each attempt that ran the agent with CMD, split like a shell would (never run through one), "
        "with placeholders {task} {prompt} {output_dir} {trajectory} {workspace} {status} {attempt} {sample} "
        "{session} {log} {stderr_log} {experiment}; exit 0 passed, 1 failed, else error; a JSON object on its last "
        "stdout line adds a score and details, whose true/false and number values are reported as named rates "
        "(e.g. process, result), e.g. --evaluate 'python grade.py --task {task} --dir {workspace}'",
    )
    ev.add_argument(
        "--evaluate-timeout",
        metavar="SECONDS",
        type=_positive_seconds,
        default=600.0,
        help="the evaluator's time limit (default: 600), e.g. --evaluate-timeout 120",
    )
    ev.add_argument(
        "--evaluate-cwd",
        metavar="DIR",
        help="the folder the evaluator and the --before-attempt hook run in (default: --project-dir), "
        "e.g. --evaluate-cwd ~/GitTaskBench",
    )
    ev.add_argument(
        "--before-attempt",
        metavar="CMD",
        help="run CMD before each attempt's agent starts (e.g. to clear the output folder a prompt names, or copy "
        "inputs in), with the evaluator's placeholders but {trajectory} and {status}; it gets the evaluator's "
        "masking, log and process sweep; a non-zero exit makes the attempt an `error` record before any LLM "
        "spend, with the hook's reason, e.g. --before-attempt 'python prepare.py --task {task}'",
    )
    ev.add_argument(
        "--before-attempt-timeout",
        metavar="SECONDS",
        type=_positive_seconds,
        default=600.0,
        help="the --before-attempt command's time limit (default: 600)",
    )
    ev.add_argument(
        "--prompt-placeholders",
        action="store_true",
        help="fill {task} {workspace} {output_dir} {attempt} {sample} {session} {experiment} in each prompt's "
        "text before OpenHands reads it (only those names; {{task}} stays a literal {task}); the filled prompt is "
        "kept as logs/<attempt>.prompt.md. Off by default: prompts with literal braces stay untouched",
    )
    ev.add_argument(
        "--evaluate-only",
        action="store_true",
        help="grade the latest attempt of every selected task in --output-dir without running any agent; "
        "verdicts go to evaluations.jsonl (records are never rewritten); tasks graded with the same command "
        "are skipped unless --rerun",
    )
    ev.add_argument(
        "--fail-on-evaluation",
        action="store_true",
        help="exit 1 when any selected task's verdict is not `passed` (verdicts do not change the exit status "
        "otherwise)",
    )
    ev.add_argument(
        "--workspace-per-task",
        action="store_true",
        help="give every attempt its own workspace, <output-dir>/workspaces/<task>[.attempt-N], configured as "
        "the agent's workspace; kept, and passed to the evaluator as {workspace}",
    )
    ev.add_argument(
        "--workspace-template",
        metavar="DIR",
        help="each workspace starts as a copy of DIR: a git repository is cloned sharing its objects, anything "
        "else copied with reflinks where the file system allows (implies --workspace-per-task), "
        "e.g. --workspace-template ~/repos/project",
    )


def _openhands_options(oh: argparse._ArgumentGroup) -> None:
    oh.add_argument("--runtime", metavar="NAME", help="[core] runtime, e.g. --runtime cli")
    oh.add_argument(
        "--max-iterations", metavar="N", type=_int_at_least(1), help="agent step limit (-i), e.g. --max-iterations 50"
    )
    oh.add_argument(
        "--max-budget-per-task",
        metavar="USD",
        type=_positive_float,
        help="LLM spending limit per task (-b), e.g. --max-budget-per-task 2.5",
    )
    oh.add_argument("--llm-config", metavar="NAME", help="[llm.NAME] section to use (-l), e.g. --llm-config claude")
    oh.add_argument("--agent-cls", metavar="NAME", help="agent class (-c), e.g. --agent-cls CodeActAgent")


def _selection_options(sel: argparse._ArgumentGroup) -> None:
    sel.add_argument(
        "--include",
        metavar="GLOB",
        action="append",
        default=[],
        help="only task names matching GLOB (repeatable), e.g. --include 'Trans*'",
    )
    sel.add_argument(
        "--exclude",
        metavar="GLOB",
        action="append",
        default=[],
        help="leave out task names matching GLOB (repeatable), e.g. --exclude '*-slow'",
    )
    sel.add_argument(
        "--tasks",
        metavar="NAME,...",
        action="append",
        default=[],
        help="only these task names, comma separated, e.g. --tasks Trans_01,Trans_07",
    )
    sel.add_argument(
        "--tag",
        dest="tags",
        metavar="TAG",
        action="append",
        default=[],
        help="only tasks whose front matter lists TAG in `tags` (repeatable: any of them), e.g. --tag vision",
    )
    sel.add_argument(
        "--exclude-tag",
        dest="exclude_tags",
        metavar="TAG",
        action="append",
        default=[],
        help="leave out tasks whose front matter lists TAG (repeatable), e.g. --exclude-tag gpu",
    )
    sel.add_argument(
        "--limit",
        metavar="N",
        type=_int_at_least(1),
        help="at most N tasks (after the other selections), e.g. --limit 3",
    )
    sel.add_argument(
        "--shard",
        metavar="K/N",
        help="run shard K of N (1-based) of the sorted tasks, each shard with its own results "
        "file; 'auto' reads SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, or "
        "JOB_COMPLETION_INDEX with N from RUN_BATCH_SHARDS, e.g. --shard 3/8",
    )


def _output_options(out: argparse._ArgumentGroup) -> None:
    out.add_argument(
        "--dry-run",
        action="store_true",
        help="show the tasks that would run, the command and the effective config (secrets "
        "masked); run nothing, write nothing. With --format json: the plan as JSON",
    )
    out.add_argument(
        "--report",
        action="store_true",
        help="summarise an existing --output-dir (latest attempt per task, every results file in it) and run nothing",
    )
    out.add_argument(
        "--compare",
        metavar="DIR",
        nargs="+",
        help="with --report: compare two or more output folders task by task (flips, pass rates with intervals, "
        "the paired difference and whether it is more than noise, cost and time), each later one against the "
        "first; paths are taken from the current folder; DIR@LABEL picks one experiment of a folder that holds "
        "several, e.g. --report --compare runs/gpt-4o runs/claude",
    )
    out.add_argument(
        "--format",
        dest="output_format",
        choices=("table", "json", "markdown", "html"),
        default="table",
        help="format of --report (table, json, markdown, html) and of --dry-run (table, json); default: table",
    )
    out.add_argument(
        "--output",
        dest="report_output",
        metavar="FILE",
        help="where --html and --report --format html write the page (default: <output-dir>/report.html)",
    )
    out.add_argument(
        "--html",
        action="store_true",
        help="write <output-dir>/report.html at the end of a run: one self-contained page with the timeline, "
        "costs, the task table and every trajectory",
    )
    out.add_argument("--quiet", action="store_true", help="print only the final summary (e.g. from cron)")
    out.add_argument("--version", action="version", version=f"run_batch {__version__}")


def parse_shard(text: str | None, environ: dict[str, str]) -> tuple[int, int] | None:
    """`K/N` (1-based), or `auto` from Slurm / Kubernetes Indexed Job variables."""
    if text is None:
        return None
    if text == "auto":
        try:
            if environ.get("SLURM_ARRAY_TASK_ID") and environ.get("SLURM_ARRAY_TASK_COUNT"):
                offset = int(environ.get("SLURM_ARRAY_TASK_MIN") or 0)
                k = int(environ["SLURM_ARRAY_TASK_ID"]) - offset + 1
                n = int(environ["SLURM_ARRAY_TASK_COUNT"])
            elif environ.get("JOB_COMPLETION_INDEX") and environ.get("RUN_BATCH_SHARDS"):
                k, n = int(environ["JOB_COMPLETION_INDEX"]) + 1, int(environ["RUN_BATCH_SHARDS"])
            else:
                raise UsageError(
                    "--shard auto: set SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, "
                    "or JOB_COMPLETION_INDEX and RUN_BATCH_SHARDS, or give --shard K/N"
                )
        except ValueError:
            raise UsageError(
                "--shard auto: the shard variables must be whole numbers; "
                "check SLURM_ARRAY_* or JOB_COMPLETION_INDEX/RUN_BATCH_SHARDS"
            ) from None
    else:
        m = re.fullmatch(r"(\d+)/(\d+)", text)
        if not m:
            raise UsageError(f"--shard {text!r}: expected K/N such as 2/8, or auto")
        k, n = int(m.group(1)), int(m.group(2))
    if not 1 <= k <= n:
        raise UsageError(f"--shard {k}/{n}: K must be between 1 and N")
    return k, n


_D = TypeVar("_D")


def from_args(cls: type[_D], args: argparse.Namespace, **derived: Any) -> _D:
    """A settings dataclass from the parsed arguments: each field from the argument of the same
    name, unless derived says otherwise; fields with no argument keep their default."""
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in derived:
            values[f.name] = derived[f.name]
        elif hasattr(args, f.name):
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def settings_from_args(argv: list[str], environ: dict[str, str]) -> Settings:
    parser = build_parser()
    extra: list[str] = []
    if "--" in argv:  # everything after the first `--` goes to OpenHands untouched
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)

    project_dir = Path(args.project_dir).expanduser().absolute()
    if not project_dir.is_dir():
        raise UsageError(f"--project-dir {args.project_dir}: not a folder; give the OpenHands checkout")
    output_dir = Path(args.output_dir).expanduser() if args.output_dir else Path("batch_output")
    if not output_dir.is_absolute():
        output_dir = project_dir / output_dir
    check_output_options(args)
    evaluator = parse_evaluator(args.evaluate) if args.evaluate is not None else ()
    for option, given in (("--evaluate-only", args.evaluate_only), ("--fail-on-evaluation", args.fail_on_evaluation)):
        if given and not evaluator:
            raise UsageError(f"{option} needs --evaluate CMD: the command that grades a task")
    template = None
    if args.workspace_template:
        template = Path(args.workspace_template).expanduser().resolve()  # real: compared with real paths
        if not template.is_dir():
            raise UsageError(f"--workspace-template {args.workspace_template}: not a folder")
    workspaces = args.workspace_per_task or template is not None
    evaluate_cwd = Path(args.evaluate_cwd).expanduser().absolute() if args.evaluate_cwd else None
    if evaluate_cwd is not None and not evaluate_cwd.is_dir():
        raise UsageError(f"--evaluate-cwd {args.evaluate_cwd}: not a folder")
    hook = parse_evaluator(args.before_attempt, "--before-attempt", HOOK_PLACEHOLDERS) if args.before_attempt else ()
    if not args.report:
        for option, words in (("--evaluate", evaluator), ("--before-attempt", hook)):
            if words:  # --evaluate-only grades what the records name: their workspaces, if any
                cwd = evaluate_cwd or project_dir
                check_grader_command(option, words, cwd, workspaces or args.evaluate_only, environ)

    shard = parse_shard(args.shard, environ)
    results_name = args.results_name
    if shard and results_name == parser.get_default("results_name"):
        results_name = f"batch_results.shard-{shard[0]}-of-{shard[1]}.jsonl"

    prompt_dir = Path(args.prompt_dir).expanduser().absolute() if args.prompt_dir else Path(".")
    if not args.report:
        if not args.prompt_dir:
            raise UsageError("--prompt-dir is required: the folder of *.md task prompts")
        if not prompt_dir.is_dir():
            raise UsageError(f"--prompt-dir {args.prompt_dir}: not a folder of *.md prompts")

    command = command_from(args, project_dir, environ)
    base_config = base_config_from(args, project_dir)
    names = tuple(n.strip() for group in args.tasks for n in group.split(",") if n.strip())
    if args.tasks and not names:  # a script's `--tasks "$FAILED"` with nothing in it: not "every task"
        raise UsageError("--tasks is empty: give task names, comma separated, or leave --tasks out to run every task")
    return from_args(
        Settings,
        args,
        prompt_dir=prompt_dir,
        project_dir=project_dir,
        output_dir=output_dir,
        results_name=results_name,
        base_config=base_config,
        base_config_given=bool(args.base_config),
        evaluator=evaluator,
        report_output=Path(args.report_output).expanduser().absolute() if args.report_output else None,
        workspace_template=template,
        workspace_per_task=workspaces,
        evaluate_cwd=evaluate_cwd,
        before_hook=hook,
        limits=Limits(size_option("--task-memory", args.task_memory), args.task_cpus),
        min_free_memory=size_option("--min-free-memory", args.min_free_memory),
        heartbeat=args.heartbeat if args.heartbeat is not None else (0.0 if args.quiet else 60.0),
        command=command,
        openhands=from_args(OpenHandsOptions, args, extra_args=tuple(extra)),
        selection=from_args(Selection, args, tasks=names, shard=shard),
    )


def size_option(option: str, text: str | None) -> int | None:
    if text is None:
        return None
    size = parse_size(text)
    if size is None:
        raise UsageError(f"{option} {text!r}: give a size such as 4G, 512M or a number of bytes")
    return size


def check_output_options(args: argparse.Namespace) -> None:
    """File names that are names, and --format and --output where they mean something."""
    for option, name in (("--results-name", args.results_name), ("--config-name", args.config_name)):
        if "/" in name or "\0" in name or name in ("", ".", ".."):
            raise UsageError(f"{option} {name!r}: give a file name, not a path")
    check_results_name(args.results_name)
    if args.compare and not args.report:
        raise UsageError("--compare goes with --report: run-batch --report --compare DIR_A DIR_B")
    if args.compare and len(args.compare) < 2:
        raise UsageError("--compare needs two output folders or more: --report --compare DIR_A DIR_B")
    if args.label is not None and (not args.label.strip() or not args.label.isprintable() or len(args.label) > 200):
        raise UsageError(f"--label {args.label!r}: give a short printable name, e.g. --label gpt-4o-try2")
    if args.dry_run and args.output_format in ("markdown", "html"):
        raise UsageError(f"--dry-run --format {args.output_format}: the plan is shown as table or json")
    if args.report_output:
        if not (args.html or (args.report and args.output_format == "html")):
            raise UsageError("--output FILE is where the HTML report goes: with --html, or --report --format html")
        if not args.report_output.lower().endswith((".html", ".htm")):
            raise UsageError(
                f"--output {args.report_output}: the HTML report's file name ends in .html (it replaces "
                "whatever file has that name), e.g. --output report.html"
            )
        where = Path(args.report_output).expanduser().absolute().parent
        if not where.is_dir():
            raise UsageError(f"--output {args.report_output}: there is no folder {where}; create it or pick another")


# The files the runner itself keeps in an output folder: no results file may take their names.
OWN_FILE_NAMES = ("summary.json", "evaluations.jsonl", "batch_run.log", "report.html", "run.json")


def check_results_name(name: str) -> None:
    """A results file is a `*.jsonl` (every report, budget and resume reads those) that is none of
    the runner's own files, which would replace it or be replaced by it."""
    if name in OWN_FILE_NAMES or name.startswith(".") or re.fullmatch(r"run\..*\.json", name):
        raise UsageError(
            f"--results-name {name}: that name is run_batch's own ({', '.join(OWN_FILE_NAMES)}, run.*.json, "
            "hidden files); pick another, e.g. --results-name nightly.jsonl"
        )
    if not name.endswith(".jsonl"):
        raise UsageError(
            f"--results-name {name}: a results file's name ends in .jsonl (reports, budgets and resume read "
            "every *.jsonl in the folder), e.g. --results-name nightly.jsonl"
        )


def command_from(args: argparse.Namespace, project_dir: Path, environ: dict[str, str]) -> tuple[str, ...]:
    """--command as argv, its program found now (not for --report or --evaluate-only, which run none)."""
    try:
        command = tuple(shlex.split(args.command))
    except ValueError as exc:
        raise UsageError(f"--command {args.command!r}: {exc}; check the quotes") from None
    if not command:
        raise UsageError("--command is empty; give the OpenHands entrypoint")
    if not args.report and not args.evaluate_only:
        command = (resolve_program(command[0], project_dir, environ), *command[1:])
    return command


def base_config_from(args: argparse.Namespace, project_dir: Path) -> Path | None:
    """--base-config, else the checkout's config.toml when there is one."""
    if args.base_config:
        base_config = Path(args.base_config).expanduser().absolute()
        if not base_config.is_file():
            what = "not a regular file" if base_config.exists() else "no such file"
            raise UsageError(f"--base-config {args.base_config}: {what}; give an OpenHands config.toml")
        return base_config
    default = project_dir / "config.toml"
    return default if default.is_file() else None


def resolve_program(program: str, project_dir: Path, environ: dict[str, str]) -> str:
    """The command's program as an absolute path, found the way the OS would from project_dir."""
    expanded = os.path.expanduser(program)
    if os.sep in expanded:
        path = Path(expanded) if os.path.isabs(expanded) else project_dir / expanded
        with contextlib.suppress(OSError):  # a folder on the way that is not ours to read
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
        raise UsageError(f"--command: {program} is not an executable file you can run; check the path")
    found = shutil.which(expanded, path=environ.get("PATH", os.defpath))
    if not found:
        hint = " (install Poetry, or pass --command with OpenHands' python)" if expanded == "poetry" else ""
        raise UsageError(f"--command: {program!r} not found on PATH{hint}")
    return found


def resolve_poetry(settings: Settings, environ: dict[str, str]) -> Settings:
    """Replace the default `poetry run python -m openhands.core.main` by the Poetry
    environment's own python, looked up once per batch: `poetry run` costs 0.3-1 s at every
    launch, and all it adds is VIRTUAL_ENV and the environment's bin folder first on PATH, which
    child_environment() gives too. Any doubt keeps `poetry run`."""
    default = tuple(shlex.split(DEFAULT_COMMAND))
    if settings.keep_poetry_run or Path(settings.command[0]).name != "poetry" or settings.command[1:] != default[1:]:
        return settings
    try:
        found = subprocess.run(
            [settings.command[0], "env", "info", "--executable"],
            cwd=settings.project_dir,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return settings
    python = Path(found.stdout.strip().splitlines()[-1]) if found.returncode == 0 and found.stdout.strip() else None
    if python is None or not python.is_file():
        return settings
    return dataclasses.replace(settings, command=(str(python), "-m", "openhands.core.main"), venv=python.parent.parent)


EVALUATION_PLACEHOLDERS = (
    "task",
    "prompt",
    "output_dir",
    "trajectory",
    "workspace",
    "status",
    "attempt",
    "sample",
    "session",
    "log",
    "stderr_log",
    "experiment",
)


HOOK_PLACEHOLDERS = tuple(p for p in EVALUATION_PLACEHOLDERS if p not in ("trajectory", "status"))


def parse_evaluator(
    text: str, option: str = "--evaluate", known: tuple[str, ...] = EVALUATION_PLACEHOLDERS
) -> tuple[str, ...]:
    """--evaluate (or --before-attempt): split like a shell would (never run through one); every
    `{name}` must be a known placeholder, so a typo is a usage error now, not a crash at task 30."""
    try:
        words = tuple(shlex.split(text))
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: {exc}; check the quotes") from None
    if not words:
        raise UsageError(f"{option} is empty; give the command")
    formatter = string.Formatter()
    for word in words:
        try:
            names = [name for _, name, spec, conv in formatter.parse(word) if name is not None]
        except ValueError as exc:
            raise UsageError(f"{option}: {word!r}: {exc} (write {{{{ and }}}} for a literal brace)") from None
        for _, name, spec, conversion in formatter.parse(word):
            if name is not None and (spec or conversion):
                raise UsageError(f"{option}: {word!r}: placeholders take no format or conversion; write {{{name}}}")
        for name in names:
            if name not in known:
                listed = ", ".join(f"{{{p}}}" for p in known)
                raise UsageError(f"{option}: unknown placeholder {{{name}}}; the known ones are {listed}")
        try:  # what parse() lets through: `{task:{x}}`, `{task!x}`, `{task:d}`, `{task[0]}`
            word.format(**dict.fromkeys(known, ""))
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise UsageError(
                f"{option}: {word!r}: {exc!r}; placeholders take no format, conversion or index ({{task}})"
            ) from None
    return words


def check_grader_command(
    option: str, words: tuple[str, ...], cwd: Path, workspaces: bool, environ: dict[str, str]
) -> None:
    """What would otherwise fail at every attempt of a paid batch: a program that is not there (found
    the way the OS would, from the folder it runs in), or {workspace} with no workspaces."""
    if any("{workspace}" in w for w in words) and not workspaces:
        raise UsageError(
            f"{option} uses {{workspace}}, but attempts have no workspace of their own: "
            "add --workspace-per-task (or --workspace-template DIR)"
        )
    script = os.path.expanduser(words[1]) if len(words) > 1 else ""
    interpreter = Path(words[0]).name.startswith(("python", "bash", "sh"))
    if interpreter and script.endswith((".py", ".sh")) and "{" not in script:  # `python grade.py`
        path = Path(script) if os.path.isabs(script) else cwd / script
        if not path.is_file():
            raise UsageError(f"{option}: {words[1]} is not a file (looked from {cwd}); check the path")
    program = os.path.expanduser(words[0])
    if "{" in program:
        return  # named by a placeholder: known once an attempt has its values
    if os.sep in program:
        path = Path(program) if os.path.isabs(program) else cwd / program
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise UsageError(f"{option}: {words[0]} is not an executable file (looked from {cwd}); check the path")
    elif shutil.which(program, path=environ.get("PATH", os.defpath)) is None:
        raise UsageError(f"{option}: {words[0]!r} not found on PATH; install it or give its path")


# ================================================================================================
# Plan: which tasks there are, which samples run, in which order, what is done (pure but for the prompts)
# ================================================================================================


def inspect_prompt(data: bytes) -> str | None:
    """Why this prompt cannot be given to OpenHands, or None when it can (pure)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"prompt is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); save it as UTF-8"
    if not text.strip():
        return "prompt is empty"
    return None


def task_identities(names: list[str]) -> dict[str, tuple[str, str]]:
    """Each task name's (file stem, session tag), injective over the names (pure).

    The stem is the name itself where that is safe (short enough for `.attempt-N.stdout.log` to
    fit in a file name, no `~`, and no other name equal but for case); otherwise a shortened,
    printable name plus `~` and a hash. Plain stems hold no `~`, so they never meet a hashed one,
    and hashed ones are lengthened until they differ case-blind. The tag is an ASCII slug (it
    ends up in OpenHands' session id and container name) plus a hash of the whole name.
    """
    folded = Counter(n.casefold() for n in names)
    result: dict[str, tuple[str, str]] = {}
    for length in (8, 16, 64):
        stems, tags = {}, {}
        for name in names:
            safe = "~" not in name and len(name.encode("utf-8", "surrogateescape")) <= STEM_LIMIT
            if safe and folded[name.casefold()] == 1:
                stems[name] = name
            else:
                printable_name = "".join(c if c.isprintable() and c != "~" else "_" for c in readable(name))
                stems[name] = f"{_cut_utf8(printable_name, 60)}~{_digest(name, length)}"
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-._")[:24] or "task"
            tags[name] = f"{slug}-{_digest(name, length)}"
        if len({s.casefold() for s in stems.values()}) == len(names) and len(set(tags.values())) == len(names):
            result = {n: (stems[n], tags[n]) for n in names}
            break
    return result


def _seconds_value(value: Any) -> float | None:
    number = _number_or_none(value)
    return number if number is not None and 0 < number <= MAX_SECONDS else None


def _positive(value: Any) -> float | None:
    number = _number_or_none(value)
    return number if number is not None and number > 0 else None


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def _tags(value: Any) -> tuple[str, ...] | None:
    values = [value] if isinstance(value, str) else value
    if isinstance(values, list) and values and all(isinstance(v, str) and v.strip() for v in values):
        return tuple(v.strip() for v in values)
    return None


def _vars(value: Any) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(value, dict):
        return None
    found = []
    for k, v in value.items():
        if not (isinstance(k, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", k)):
            return None
        if isinstance(v, bool):
            v = "true" if v else "false"
        if not isinstance(v, (str, int, float)):
            return None
        found.append((k, str(v)))
    return tuple(found)


# Each front-matter key: how its value is read (None: wrong type) and what it must be.
FRONT_MATTER_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "timeout": (_seconds_value, "seconds, greater than zero and at most 30 days"),
    "max_iterations": (_whole, "a whole number of 1 or more"),
    "max_budget_per_task": (_positive, "US dollars, greater than zero"),
    "task_memory": (parse_size, "a size such as 4G, 512M or a number of bytes"),
    "task_cpus": (_positive, "a number of CPUs greater than zero, e.g. 1.5"),
    "samples": (_whole, "a whole number of 1 or more"),
    "tags": (_tags, "a tag or a list of tags"),
    "vars": (_vars, "a mapping of names (letters, digits, _) to text or numbers"),
}


FRONT_MATTER_LIMIT = 64 * 1024  # bytes: a front-matter block ends within this, or is not one


def front_matter_block(data: bytes) -> tuple[str, int] | None:
    """The YAML between a first line `---` and the next `---` (or `...`) line, and where the prompt
    proper starts (in bytes); None when the prompt has no such block (pure)."""
    first, sep, rest = data[:FRONT_MATTER_LIMIT].partition(b"\n")
    if first.rstrip(b"\r") != b"---" or not sep:
        return None
    offset = len(first) + 1
    for line in rest.splitlines(keepends=True):
        if line.rstrip(b"\r\n") in (b"---", b"..."):
            block = data[len(first) + 1 : offset].decode("utf-8", "replace")
            return block, offset + len(line)
        offset += len(line)
    return None


def parse_front_matter(path: Path, block: str) -> TaskSettings:
    """A prompt's front matter as its task's settings: a YAML mapping of the known keys, each of its
    type. Anything else is a usage error that names the file and the line (line 1 is the `---`)."""
    try:
        import yaml
    except ImportError:
        raise UsageError(
            f"{path}: the prompt starts with front matter (---), which needs the package PyYAML: "
            f"`{Path(sys.executable).name} -m pip install pyyaml`"
        ) from None
    try:
        node = yaml.compose(block, Loader=yaml.SafeLoader)
        values = yaml.safe_load(block)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 2}" if mark is not None else "its front matter"
        raise UsageError(
            f"{path}, {where}: the front matter is not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    if values is None:
        return TaskSettings()
    if not isinstance(values, dict) or not isinstance(node, yaml.MappingNode):
        raise UsageError(
            f"{path}, line 2: the front matter must be `key: value` lines (known keys: {', '.join(FRONT_MATTER_KEYS)})"
        )
    lines = {str(k.value): k.start_mark.line + 2 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    found: dict[str, Any] = {}
    for key, value in values.items():
        line = lines.get(str(key), 2)
        if key not in FRONT_MATTER_KEYS:
            known = ", ".join(FRONT_MATTER_KEYS)
            raise UsageError(f"{path}, line {line}: unknown front-matter key {str(key)!r}; the known ones are {known}")
        read, want = FRONT_MATTER_KEYS[key]
        parsed = read(value)
        if parsed is None:
            raise UsageError(f"{path}, line {line}: {key} must be {want}, not {one_line(repr(value), 60)}")
        found[key] = parsed
    return TaskSettings(**found)


@dataclass(frozen=True)
class PromptFile:
    """What reading a prompt file found: its hash, why it cannot run (if so), the settings of its
    front matter, and where the text the agent gets starts (after the front matter)."""

    sha256: str | None
    problem: str | None = None
    settings: TaskSettings = field(default_factory=TaskSettings)
    body_offset: int = 0


def read_prompt(path: Path) -> PromptFile:
    """A prompt file, read up to PROMPT_LIMIT bytes, never more. Only regular files are prompts (a
    FIFO would block, a device never ends)."""
    try:
        f = open_regular(path)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return PromptFile(None, "not a regular file (a FIFO, device or socket named .md); only files are prompts")
        return PromptFile(None, f"cannot read prompt: {exc.strerror or exc}")
    with f:
        info = os.fstat(f.fileno())
        if info.st_size > PROMPT_LIMIT:
            return PromptFile(None, f"prompt is {info.st_size} bytes, over the limit of {PROMPT_LIMIT} (10 MiB)")
        try:
            data = f.read(PROMPT_LIMIT + 1)
        except OSError as exc:
            return PromptFile(None, f"cannot read prompt: {exc.strerror or exc}")
    if len(data) > PROMPT_LIMIT:
        return PromptFile(None, f"prompt is over the limit of {PROMPT_LIMIT} bytes (10 MiB)")
    sha = hashlib.sha256(data).hexdigest()  # the whole file: a changed front matter reruns the task
    block = front_matter_block(data)
    if block is None:
        return PromptFile(sha, inspect_prompt(data))
    return PromptFile(sha, inspect_prompt(data[block[1] :]), parse_front_matter(path, block[0]), block[1])


def prompt_text(task: Task) -> str:
    """The text the agent gets: the prompt without its front matter (the task's settings)."""
    with open_regular(task.prompt_path) as f:
        return f.read(PROMPT_LIMIT + 1)[task.body_offset :].decode("utf-8")


def discover_tasks(prompt_dir: Path) -> list[Task]:
    """Every visible `*.md` entry of prompt_dir that is not a folder, sorted by name."""
    try:
        entries = sorted(e for e in os.listdir(prompt_dir) if e.endswith(".md") and not e.startswith("."))
    except OSError as exc:
        raise UsageError(f"--prompt-dir {prompt_dir}: cannot list it ({exc.strerror})") from None
    paths = [prompt_dir / e for e in entries if not (prompt_dir / e).is_dir()]
    raw = [p.name[:-3] for p in paths]  # distinct, as file names are; readable() forms may meet
    identities = task_identities(raw)
    shown = Counter(readable(r) for r in raw)
    tasks = []
    for path, name in zip(paths, raw, strict=True):
        stem, tag = identities[name]
        if readable(name) != name:  # TOML and JSON hold only text: such a path cannot be passed on
            text = readable(name)
            text = text if shown[text] == 1 else f"{text}~{_digest(name, 16)}"  # `bad\xff`, `bad\xfe`
            tasks.append(Task(text, path, stem, None, "the file name is not valid UTF-8; rename the prompt", tag))
            continue
        prompt = read_prompt(path)
        tasks.append(Task(name, path, stem, prompt.sha256, prompt.problem, tag, prompt.settings, prompt.body_offset))
    return tasks


def select_tasks(tasks: list[Task], selection: Selection, prompt_dir: Path | None = None) -> list[Task]:
    """Apply --tasks, --include, --exclude, --tag, --exclude-tag, --shard and --limit, in that order
    (pure). A selection that leaves no task (before --shard and --limit, which may rightly leave a
    shard empty) is a usage error, with what was probably meant."""
    where = prompt_dir or "the prompt folder"
    if not tasks:
        raise UsageError(f"--prompt-dir {where}: no *.md prompt there")
    chosen = tasks
    if selection.tasks:
        known = {t.name for t in tasks}
        wanted = {n.removesuffix(".md") if n not in known else n for n in selection.tasks}  # `Faker_01.md`
        missing = sorted(n for n in wanted if n not in known)
        if missing:
            close = difflib.get_close_matches(missing[0], sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"--tasks: no prompt named {missing[0]!r} in {where}{hint}")
        chosen = [t for t in chosen if t.name in wanted]
    for glob in selection.include:
        if not any(fnmatch.fnmatchcase(t.name, glob) for t in chosen):
            close = [t.name for t in chosen if fnmatch.fnmatch(t.name.casefold(), glob.casefold())]
            hint = f" (names match case-sensitively: {close[0]!r} would with another case)" if close else ""
            raise UsageError(f"--include {glob!r}: matches no task{hint}")
    if selection.include:
        chosen = [t for t in chosen if any(fnmatch.fnmatchcase(t.name, g) for g in selection.include)]
    if selection.exclude:
        chosen = [t for t in chosen if not any(fnmatch.fnmatchcase(t.name, g) for g in selection.exclude)]
    if selection.tags:
        chosen = [t for t in chosen if set(t.settings.tags) & set(selection.tags)]
    if selection.exclude_tags:
        chosen = [t for t in chosen if not set(t.settings.tags) & set(selection.exclude_tags)]
    if not chosen:
        raise UsageError(
            "the selection (--tasks, --include, --exclude, --tag, --exclude-tag) leaves no task; "
            f"--dry-run without them lists the {plural(len(tasks), 'task')} of {where}"
        )
    if selection.shard:
        k, n = selection.shard
        chosen = [t for i, t in enumerate(chosen) if i % n == k - 1]
    if selection.limit is not None:
        chosen = chosen[: selection.limit]
    return chosen


def prompt_folder_hints(prompt_dir: Path) -> list[str]:
    """Why a prompt folder may hold fewer tasks than its user thinks: `.MD` files, which are not
    tasks, and prompts one level down, in folders of their own."""
    hints = []
    try:
        entries = sorted(os.listdir(prompt_dir))
    except OSError:
        return []
    upper = [e for e in entries if e.lower().endswith(".md") and not e.endswith(".md") and not e.startswith(".")]
    if upper:
        hints.append(
            f"{', '.join(upper[:3])}{', ...' if len(upper) > 3 else ''}: "
            f"{'is not a task' if len(upper) == 1 else 'are not tasks'} (only names ending in .md are); rename "
            f"{'it' if len(upper) == 1 else 'them'}"
        )
    nested = [e for e in entries if (prompt_dir / e).is_dir() and _holds_prompts(prompt_dir / e)]
    if nested:
        hints.append(
            f"prompts are one level down, in {plural(len(nested), 'folder')} ({', '.join(nested[:3])}"
            f"{', ...' if len(nested) > 3 else ''}): give one of them as --prompt-dir, or link each prompt "
            "into one folder under its task's name (a task is a file NAME.md)"
        )
    return hints


@contextlib.contextmanager
def with_folder_hints(prompt_dir: Path) -> Iterator[None]:
    """A selection that leaves no task says what in the prompt folder was probably meant."""
    try:
        yield
    except UsageError as exc:
        hints = prompt_folder_hints(prompt_dir) if "task" in str(exc) or "prompt" in str(exc) else []
        if not hints:
            raise
        raise UsageError(f"{exc}; {'; '.join(hints)}") from None


def _holds_prompts(folder: Path, depth: int = 2) -> bool:
    """Whether *.md files lie in folder or below, `depth` levels at most (GitTaskBench's queries/
    keep theirs two down: queries/<task>/task_meta/)."""
    names = _listing(folder)
    if any(n.endswith(".md") for n in names):
        return True
    return depth > 1 and any(_holds_prompts(folder / n, depth - 1) for n in names[:200] if (folder / n).is_dir())


def _listing(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def plan_order(tasks: list[Task], durations: dict[str, float]) -> list[Task]:
    """Longest known task first (LPT): fewer workers idle while one long task ends the batch.
    Tasks with no recorded duration keep file order, ahead of the known ones (pure)."""
    if not durations:
        return tasks
    unknown = [t for t in tasks if t.name not in durations]
    known = sorted((t for t in tasks if t.name in durations), key=lambda t: -durations[t.name])
    return unknown + known


# A sample whose latest attempt ended in one of these is finished, with --samples K > 1: the agent's
# own outcome, which must stand (running failed samples again until they pass would inflate pass@k).
# error, stalled and interrupted samples ran into the machine, the provider or a stop: they run again.
FINAL_STATUSES = ("success", "failed", "timeout")


@dataclass(frozen=True)
class Job:
    """One sample of one task to run (its attempts are numbered when they start)."""

    task: Task
    sample: int = 1


@dataclass(frozen=True)
class Plan:
    """What a run will do: the selected tasks, the samples to run (in order), the tasks with
    nothing left to run, and the finished attempts the current --evaluate has not graded yet."""

    selected: list[Task]
    to_run: list[Job]
    done: list[Task]  # every sample done already: skipped
    to_grade: list[AttemptRecord] = field(default_factory=list)
    samples: int = 1  # the most samples any selected task has
    per_task: dict[str, int] = field(default_factory=dict)  # each selected task's samples

    def wanted(self) -> list[tuple[str, int]]:
        """Every (task, sample) the selection asks for."""
        return [(t.name, k) for t in self.selected for k in range(1, self.per_task.get(t.name, self.samples) + 1)]


# Failures of the set-up or the provider that every attempt will meet until someone fixes them,
# with what to check; an agent that failed a hard task is none of these.
SETUP_FAILURES = (
    (
        "authentication refused",
        re.compile(
            r"AuthenticationError|\b401\b|Unauthorized|invalid[_ ]api[_ ]key|Incorrect API key|API key not valid", re.I
        ),
        "the API key: [llm] api_key in the config, LLM_API_KEY, or agent_settings.json",
    ),
    (
        "endpoint unreachable",
        re.compile(
            r"APIConnectionError|Connection refused|ConnectError|Name or service not known|getaddrinfo failed|"
            r"Failed to establish a new connection|No route to host|OpenAIException - Connection error",
            re.I,
        ),
        "the LLM's base_url (LLM_BASE_URL), the network and the proxy",
    ),
    (
        "model not found",
        re.compile(
            r"NotFoundError|model_not_found|model[^\n]{0,60}does not exist|LLM Provider NOT provided|Unknown model",
            re.I,
        ),
        "the model name ([llm] model, LLM_MODEL, agent_settings.json) and the provider prefix",
    ),
)


# A runtime that did not come up in time, which a loaded machine causes and a retry cures: 0.33's
# local runtime gives up waiting for its action server with tenacity's RetryError around a
# ConnectError (OpenHands' LLM retries re-raise the provider's own error, never a RetryError).
_RUNTIME_NOT_UP = re.compile(
    r"RetryError\[<Future at 0x[0-9a-f]+ state=\w+ raised \w+>\]|Failed to start runtime|"
    r"AgentRuntimeUnavailableError|Server process died"
)


def setup_failure(record: AttemptRecord) -> tuple[str, str] | None:
    """(kind, what to check) when an attempt ended in a failure of the set-up or the provider, from
    its reason and its log's tail (pure). A runtime that did not come up is neither: its log names
    connections refused by the runtime, not by the provider."""
    if record.status not in ("failed", "error") or _RUNTIME_NOT_UP.search(record.error or ""):
        return None
    text = f"{record.error or ''}\n{record.stderr[-2000:]}\n{record.stdout[-2000:]}"
    for kind, pattern, check in SETUP_FAILURES:
        if pattern.search(text):
            return kind, check
    return None


# What a failed attempt's reason says when the agent never had its chance: OpenHands or its runtime
# did not start, the LLM was unavailable (as is_retryable judges from the run itself).
_INFRASTRUCTURE = re.compile(
    r"STATUS\$ERROR_LLM_(INTERNAL_SERVER_ERROR|SERVICE_UNAVAILABLE)|RateLimitError|APIConnectionError|"
    r"ServiceUnavailable"
)


def infrastructure_failure(record: AttemptRecord) -> bool:
    """Whether a `failed` attempt failed for the machine's or the provider's reasons, not the
    agent's (pure): it exited before the agent ran, or its reason names such a failure."""
    if record.return_code not in (0, None) and record.agent_state in (None, "LOADING"):
        return True
    reason = record.error or ""
    return bool(_INFRASTRUCTURE.search(reason) or _RUNTIME_NOT_UP.search(reason)) or setup_failure(record) is not None


def sample_done(record: AttemptRecord | None, task: Task, samples: int) -> bool:
    """Whether a sample needs no new attempt: with one sample per task, its latest attempt
    succeeded (0.4's rule: a failed task runs again); with several, it ended in the agent's own
    outcome (a failure of the machine or the provider is not one). Either way only for the same
    prompt text (pure)."""
    if record is None or task.prompt_sha256 is None or record.prompt_sha256 != task.prompt_sha256:
        return False  # an unreadable prompt now is not "the same prompt"
    if samples == 1:
        return record.status == "success"
    return record.status in FINAL_STATUSES and not (record.status == "failed" and infrastructure_failure(record))


def legacy_owner(experiments: list[Experiment], current: Experiment | None) -> str | None:
    """Which experiment the records of run_batch 0.3/0.4 (no identity) are counted with: the running
    one when it has no label, else the folder's one unlabelled experiment, if there is exactly one;
    else none (they stay apart) (pure)."""
    if current is not None:
        return current.id if current.label is None else None
    unlabelled = {e.id for e in experiments if e.label is None}
    return unlabelled.pop() if len(unlabelled) == 1 else None


def agent_result(record: AttemptRecord) -> bool:
    """Whether an attempt got as far as an outcome of the agent's (pure): not a failure of the
    set-up, the machine or the provider, nor a stop."""
    if record.status == "failed":
        return not infrastructure_failure(record)
    return record.status in ("success", "timeout")


def experiment_conflict(current: Experiment, records: list[AttemptRecord]) -> str | None:
    """Why this run may not use the folder's records: an experiment of the same label (or none)
    whose identity differs, field by field (old -> new); None when there is none (pure). One whose
    attempts all failed before the agent had its chance (a wrong endpoint or model, fixed since:
    the same command goes on) has no result to keep apart."""
    produced = {r.experiment_id for r in records if r.experiment_id and agent_result(r)}
    for r in reversed(records):
        if r.experiment_id not in produced:
            continue
        if r.experiment and r.experiment.label == current.label and r.experiment.id != current.id:
            name = f"label {current.label!r}" if current.label else "no --label"
            return (
                f"{r.experiment_id} ({name}) made the records in this output folder, and this run's experiment "
                f"{current.id} differs: {'; '.join(r.experiment.differences(current))}. Its results are not "
                "reused for another experiment: use another --output-dir, or give --label NAME to keep a second "
                "experiment in this folder (its tasks all run, and reports show the two apart)"
            )
    return None


def records_of(current: Experiment, records: list[AttemptRecord]) -> tuple[list[AttemptRecord], int]:
    """The records a run of `current` resumes from: its own (any results file of the folder), and
    those of run_batch 0.3/0.4 when it is their owner (legacy_owner); and how many of the latter
    (pure)."""
    owner = legacy_owner([r.experiment for r in records if r.experiment], current) == current.id
    legacy = [r for r in records if r.experiment_id is None] if owner else []
    return [r for r in records if r.experiment_id == current.id or (owner and r.experiment_id is None)], len(legacy)


@dataclass(frozen=True)
class PlanRules:
    """How a plan is made beyond the selection: the samples each task gets (--samples; a prompt's
    front matter over it), the prompt folder (for messages), and, with --evaluate, the command and
    which command graded a record (for the attempts left to grade)."""

    samples: int = 1
    prompt_dir: Path | None = None
    graded_by: Callable[[AttemptRecord], str | None] | None = None
    evaluate_command: str | None = None


def plan_batch(
    tasks: list[Task], selection: Selection, recorded: list[AttemptRecord], rerun: bool, rules: PlanRules | None = None
) -> Plan:
    """Select; skip the samples already done in this experiment (`recorded` holds only its records,
    from every results file of the folder); order the rest, longest known task first, sample by
    sample; and list the finished attempts that --evaluate has not graded yet (pure)."""
    rules = rules or PlanRules()
    samples, graded_by, evaluate_command = rules.samples, rules.graded_by, rules.evaluate_command
    selected = select_tasks(tasks, selection, rules.prompt_dir)
    latest = latest_by_sample(recorded)
    wanted = {t.name: t.settings.samples or samples for t in selected}  # front matter over --samples
    # A task already sampled several times keeps the rule of samples, whatever K this run asks for:
    # running its failed first sample again until it passes would inflate pass@k.
    sampled = {r.task_name for r in recorded if r.sample > 1}
    rule = {name: 2 if name in sampled else k for name, k in wanted.items()}
    done_samples = (
        set()
        if rerun
        else {
            (t.name, k)
            for t in selected
            for k in range(1, wanted[t.name] + 1)
            if sample_done(latest.get((t.name, k)), t, rule[t.name])
        }
    )
    done = [t for t in selected if all((t.name, k) in done_samples for k in range(1, wanted[t.name] + 1))]
    by_task = latest_by_task(recorded)
    durations = {n: r.elapsed_time_seconds for n, r in by_task.items() if r.status in ("success", "failed", "timeout")}
    order = plan_order([t for t in selected if t not in done], durations)
    most = max(wanted.values(), default=samples)
    to_run = [
        Job(t, k) for k in range(1, most + 1) for t in order if k <= wanted[t.name] and (t.name, k) not in done_samples
    ]
    to_grade = []
    if evaluate_command is not None and graded_by is not None:
        to_grade = [
            latest[(t.name, k)]
            for t in selected
            for k in range(1, wanted[t.name] + 1)
            if (t.name, k) in done_samples
            and latest[(t.name, k)].status != "error"
            and graded_by(latest[(t.name, k)]) != evaluate_command
        ]
    return Plan(selected, to_run, done, to_grade, most, wanted)


# ================================================================================================
# Configure: the base config, secrets, and the OpenHands seam (each entrypoint says; the sections below do)
# ================================================================================================


_SECRET_KEY = re.compile(r"(^|_)(api_?key|key|token|secret|password|passwd)$", re.I)


_SECRET_ENV = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|ACCESS_KEY)", re.I)


def load_base_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"base config {path}: not valid TOML ({exc}); fix the file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"base config {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    for section in ("core", "llm", "agent", "sandbox", "security"):
        if section in config and not isinstance(config[section], dict):
            raise UsageError(
                f"base config {path}: [{section}] must be a table, not {type(config[section]).__name__}; fix the file"
            )
    core = config.get("core", {})
    for key in ("save_trajectory_path", "runtime", "file_store_path", "file_store"):
        if key in core and not isinstance(core[key], str):
            raise UsageError(f"base config {path}: [core] {key} must be a string; fix the file")
    return config


def find_secrets(config: dict[str, Any], environ: dict[str, str]) -> tuple[str, ...]:
    """Values that must never be written or shown: keys/tokens of the config and environment."""
    found: set[str] = set()

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and _SECRET_KEY.search(key) and len(node) >= SECRET_MIN_LENGTH:
            found.add(node)

    walk(config)
    found.update(v for k, v in environ.items() if _SECRET_ENV.search(k) and len(v) >= SECRET_MIN_LENGTH)
    forms = {form for secret in found for form in secret_forms(secret)}
    return tuple(sorted(forms, key=len, reverse=True))  # longest first: no partial masking


def without_secrets(node: Any) -> Any:
    """A config with every secret-named key left out: what identifies an experiment (a new key
    alone is the same experiment) and what may be hashed or shown (pure)."""
    if isinstance(node, dict):
        return {k: without_secrets(v) for k, v in node.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(node, list):
        return [without_secrets(v) for v in node]
    return node


# Environment variables that change what OpenHands' agent does (its settings, read over the TOML).
_AGENT_ENV = re.compile(r"^(LLM_|AGENT_|SANDBOX_|RUNTIME$|MAX_ITERATIONS$|MAX_BUDGET_PER_TASK$|DEFAULT_AGENT$)")


def agent_environment(environ: dict[str, str]) -> dict[str, str]:
    """The user's variables that configure the agent, secrets left out (pure)."""
    return {k: v for k, v in sorted(environ.items()) if _AGENT_ENV.match(k) and not _SECRET_ENV.search(k)}


def without_model(node: Any) -> Any:
    """A configuration without the model and the LLM's address, which an experiment records in
    fields of their own: so that a changed model changes the model, not the configuration too (pure)."""
    if isinstance(node, dict):
        dropped = ("model", "base_url", "LLM_MODEL", "LLM_BASE_URL")
        return {k: without_model(v) for k, v in node.items() if k not in dropped}
    if isinstance(node, list):
        return [without_model(v) for v in node]
    return node


def llm_section(config: dict[str, Any], name: str | None) -> dict[str, Any]:
    """The LLM settings OpenHands uses: [llm], with [llm.NAME] over it for --llm-config NAME (pure)."""
    llm = _dict(config.get("llm"))
    settings = {k: v for k, v in llm.items() if not isinstance(v, dict)}
    named = llm.get(name) if name else None
    return {**settings, **named} if isinstance(named, dict) else settings


def secret_forms(secret: str) -> set[str]:
    """A secret as every file the runner writes or reads may spell it: as it is, JSON-escaped
    (with and without \\u escapes: a trajectory), HTML-escaped (a report; also of the JSON form),
    TOML- and Python-escaped (a config, a repr in an error), URL-quoted (userinfo in a clone URL)
    (pure). Each is masked wherever it appears."""
    json_forms = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    forms = {secret, *json_forms, repr(secret)[1:-1]}
    forms |= {html.escape(f, quote=q) for f in {secret, *json_forms} for q in (True, False)}
    forms |= {urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret), urllib.parse.quote_plus(secret)}
    return {f for f in forms if len(f) >= SECRET_MIN_LENGTH}


def effective_core(config: dict[str, Any], environ: dict[str, str], key: str, default: str) -> str:
    """A [core] setting as OpenHands would see it: environment > TOML > default."""
    return environ.get(key.upper()) or config.get("core", {}).get(key) or default


def session_name(task: Task, run_id: str, attempt: int) -> str:
    """A fresh OpenHands session name per attempt (a reused name resumes the old session).

    Only [A-Za-z0-9_.-], starting with a letter or digit: it ends up in a container name, and a
    leading dash would be read as an option. The task's tag carries a hash of its whole name, so
    two tasks never share a session, a process marker, an event folder or a container.
    """
    tag = task.tag or task_identities([task.name])[task.name][1]
    return f"{tag}-{run_id}-{attempt}"


def session_id(name: str, legacy: bool = False) -> str:
    """OpenHands' sid for `-n name` (docs/openhands.md, "Session id and storage"). Its jwt secret is a
    SecretStr, so the formatted text is the mask '**********', the same on every machine."""
    digest = hashlib.sha256(f"{name}**********".encode()).hexdigest()
    if legacy:  # before 0.51
        return f"{name}-{digest[:16]}"
    if len(name) > 16:
        return f"{name[:16]}-{digest[:15]}"[:32]
    return f"{name}-{digest[: 32 - len(name) - 1]}"[:32]


def task_config(
    base: dict[str, Any], options: OpenHandsOptions, trajectory_path: Path, run_id: str, session: str
) -> dict[str, Any]:
    """The base config plus the runner's per-task settings (pure)."""
    config: dict[str, Any] = copy.deepcopy(base)  # the base config stays untouched for the next task
    core = config.setdefault("core", {})
    core["save_trajectory_path"] = str(trajectory_path)
    if options.runtime:
        core["runtime"] = options.runtime
    if options.max_iterations is not None:
        core["max_iterations"] = options.max_iterations
    if options.max_budget_per_task is not None:
        core["max_budget_per_task"] = options.max_budget_per_task
    # Label Docker sandboxes so a later run can find a dead run's containers, and only its own.
    sandbox = config.setdefault("sandbox", {})
    kwargs = sandbox.setdefault("docker_runtime_kwargs", {})
    if isinstance(kwargs, dict):
        labels = kwargs.setdefault("labels", {})
        if isinstance(labels, dict):
            labels.update({"run_batch.run": run_id, "run_batch.session": session})
    return config


def child_environment(
    environ: dict[str, str], options: OpenHandsOptions, trajectory_path: Path, marker: Marker, venv: Path | None = None
) -> dict[str, str]:
    """OpenHands' environment: the user's, with the runner's settings winning (pure).

    An environment variable beats the TOML file in OpenHands, so a user's SAVE_TRAJECTORY_PATH or
    RUNTIME is replaced here by the runner's value rather than left to override it.
    """
    env = dict(environ)
    if venv is not None:  # what `poetry run` would have set
        env.pop("PYTHONHOME", None)
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = os.pathsep.join([str(venv / "bin"), environ.get("PATH", os.defpath)])
    env["SAVE_TRAJECTORY_PATH"] = str(trajectory_path)
    if options.runtime:
        env["RUNTIME"] = options.runtime
    for key, value in (
        ("MAX_ITERATIONS", options.max_iterations),
        ("MAX_BUDGET_PER_TASK", options.max_budget_per_task),
    ):
        if value is not None:
            env[key] = str(value)
    if environ.get("SANDBOX_DOCKER_RUNTIME_KWARGS"):
        # It beats [sandbox] docker_runtime_kwargs in the TOML: the runner's labels go in here too.
        env["SANDBOX_DOCKER_RUNTIME_KWARGS"] = with_labels(environ["SANDBOX_DOCKER_RUNTIME_KWARGS"], marker)
    env.update(marker.environment())
    env["PYTHONUNBUFFERED"] = "1"
    return env


def with_labels(kwargs_literal: str, marker: Marker) -> str:
    """The user's SANDBOX_DOCKER_RUNTIME_KWARGS (a Python dict literal) plus the runner's container
    labels; left as it is when it is not a dict literal (pure)."""
    try:
        kwargs = ast.literal_eval(kwargs_literal)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return kwargs_literal
    if not isinstance(kwargs, dict) or not isinstance(kwargs.get("labels", {}), dict):
        return kwargs_literal
    kwargs["labels"] = {**kwargs.get("labels", {}), "run_batch.run": marker.run_id, "run_batch.session": marker.session}
    return repr(kwargs)


def set_workspace(config: dict[str, Any], env: dict[str, str], environ: dict[str, str], workspace: Path) -> None:
    """Make `workspace` the agent's workspace on every release (docs/openhands.md, "Configuration"):
    [core] workspace_base and workspace_mount_path are read by 0.33 and 1.6 alike (deprecated in
    1.6, still honoured); [sandbox] volumes exists only in later releases (0.33 rejects the key),
    and where the user has it, it wins and drops the workspace unless it mounts /workspace: so a
    user's volumes get ours as their /workspace mount. The environment beats the TOML: the same
    values go there (pure)."""
    core = config["core"]
    core["workspace_base"] = core["workspace_mount_path"] = str(workspace)
    env["WORKSPACE_BASE"] = env["WORKSPACE_MOUNT_PATH"] = str(workspace)
    sandbox = config.get("sandbox")
    if isinstance(sandbox, dict) and isinstance(sandbox.get("volumes"), str):
        sandbox["volumes"] = with_workspace_mount(sandbox["volumes"], workspace)
    if environ.get("SANDBOX_VOLUMES"):
        env["SANDBOX_VOLUMES"] = with_workspace_mount(environ["SANDBOX_VOLUMES"], workspace)


def with_workspace_mount(volumes: str, workspace: Path) -> str:
    """A `host:container[:mode],...` list with its /workspace mount replaced by ours (pure)."""
    others = [m for m in volumes.split(",") if m.strip() and m.split(":")[1:2] != ["/workspace"]]
    return ",".join([f"{workspace}:/workspace:rw", *others])


def write_private_config(path: Path, config: dict[str, Any]) -> Path:
    """Write the TOML config readable by the user only (it may hold API keys)."""
    import tomli_w  # checked at start-up, see require_tomli_w()

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        tomli_w.dump(config, f)
    return path


def require_tomli_w() -> None:
    try:
        import tomli_w  # noqa: F401
    except ImportError:
        raise UsageError(
            f"the package tomli-w is missing: run `{Path(sys.executable).name} -m pip "
            "install tomli-w` (inside OpenHands: `poetry run pip install tomli-w`)"
        ) from None


class Entrypoint(Protocol):
    """What differs between OpenHands entrypoints, said rather than done (the sections after this
    one do it): how an attempt is configured and started and asked to stop, where its outcome and
    progress are read, what it leaves in the output folder and to clean up, and which experiment it
    makes. Each implementation also refuses, at start, the options it cannot honour."""

    name: str

    def session_id(self, session: str) -> str: ...

    def argv(self, attempt: Attempt, private_dir: Path) -> list[str]: ...

    def prepare(self, attempt: Attempt, private_dir: Path) -> Prepared: ...

    def sources(self, attempt: Attempt) -> Sources: ...

    def evidence(self, attempt: Attempt) -> list[Path]: ...

    def containers(self, attempt: Attempt) -> list[str]: ...

    def about(self) -> About: ...

    def identity(self) -> Experiment: ...

    def describe(self, attempt: Attempt, secrets: tuple[str, ...]) -> Described: ...


@dataclass(frozen=True)
class Release:
    """The rules of one openhands-ai release that the runner depends on (docs/openhands.md);
    an unknown release gets the newest rules."""

    version: str | None

    @property
    def _key(self) -> tuple[int, ...]:
        parts = re.findall(r"\d+", self.version or "")[:3]
        return tuple(int(p) for p in parts) if parts else (99,)

    @property
    def file_store_default(self) -> str:
        return "/tmp/openhands_file_store" if self._key < (0, 45) else "~/.openhands"

    @property
    def legacy_session_id(self) -> bool:
        return self._key < (0, 51)

    @property
    def graceful_sigint(self) -> bool:
        return self._key >= (0, 60)

    @property
    def without_core_main(self) -> bool:
        return (1, 7) <= self._key < (99,)  # an unknown release gets the newest rules, which have it

    def rules(self) -> dict[str, str]:
        return {
            "file_store_default": self.file_store_default,
            "session_id": "NAME-h[:16] (before 0.51)" if self.legacy_session_id else "cut to 32 (0.51+)",
            # What a stop gets from this release (shown by --dry-run; run_batch stops every release alike).
            "sigint": "graceful stop, trajectory saved" if self.graceful_sigint else "KeyboardInterrupt, no trajectory",
        }


def attempt_environment(marker: Marker, tmux_dir: Path) -> dict[str, str]:
    """What every attempt's environment gets, whatever the entrypoint: the markers, and a tmux
    folder of its own (OpenHands' local runtime and the V1 CLI run commands in tmux; a shared
    server would carry the environment, markers included, of whichever task started it)."""
    return {**marker.environment(), "TMUX_TMPDIR": str(tmux_dir), "PYTHONUNBUFFERED": "1"}


def make_tmux_dir(private_dir: Path) -> Path:
    """A private folder for one attempt's tmux server; short, since a socket path has a limit."""
    # The socket is <dir>/tmux-<uid>/openhands-<32 hex> (SDK 1.58), 107 bytes at most; with a longer
    # TMUX_TMPDIR tmux silently takes the shared /tmp/tmux-<uid>/ instead.
    base = private_dir if len(str(private_dir)) <= 40 else Path("/tmp")
    return Path(tempfile.mkdtemp(prefix="tmux-", dir=base))


@dataclass
class CoreMain:
    """`python -m openhands.core.main` (openhands-ai 0.x to 1.6): a TOML config file, flags, a
    session name; the outcome in its log, its trajectory and its session's event files."""

    command: tuple[str, ...]
    options: OpenHandsOptions
    base_config: dict[str, Any]
    environ: dict[str, str]
    config_name: str = "batch_config.toml"
    venv: Path | None = None
    keep_containers: bool = False
    release: Release = field(default_factory=lambda: Release(None))
    recognised: bool = True  # --command is OpenHands' core.main as run_batch calls it, not a wrapper
    name: str = "openhands.core.main"

    def __post_init__(self) -> None:
        # Up to 0.51 `-i` has a default that beats the config: pass the config's own limit.
        configured = self.base_config.get("core", {}).get("max_iterations")
        if self.options.max_iterations is None and isinstance(configured, int) and not isinstance(configured, bool):
            self.options = dataclasses.replace(self.options, max_iterations=configured)

    @property
    def file_store(self) -> Path:
        default = self.release.file_store_default
        return Path(os.path.expanduser(effective_core(self.base_config, self.environ, "file_store_path", default)))

    @property
    def uses_docker(self) -> bool:
        return (self.options.runtime or effective_core(self.base_config, self.environ, "runtime", "docker")) == "docker"

    def session_id(self, session: str) -> str:
        return session_id(session, legacy=self.release.legacy_session_id)

    def config_path(self, attempt: Attempt, private_dir: Path) -> Path:
        return private_dir / f"{attempt.session}.{self.config_name}"

    def argv(self, attempt: Attempt, private_dir: Path) -> list[str]:
        """argv for one attempt; never a shell. Flags beat env and TOML in OpenHands."""
        options = options_for(self.options, attempt.task)
        argv = [*self.command, "-f", str(attempt.prompt_file.absolute())]
        argv += ["--config-file", str(self.config_path(attempt, private_dir)), "-n", attempt.session]
        if options.max_iterations is not None:
            argv += ["-i", str(options.max_iterations)]
        if options.max_budget_per_task is not None:
            argv += ["-b", str(options.max_budget_per_task)]
        if options.llm_config:
            argv += ["-l", options.llm_config]
        if options.agent_cls:
            argv += ["-c", options.agent_cls]
        return argv + list(options.extra_args)

    def config(self, attempt: Attempt) -> tuple[dict[str, Any], dict[str, str]]:
        """The attempt's TOML config and environment (pure)."""
        files, options = attempt.evidence, options_for(self.options, attempt.task)
        config = task_config(self.base_config, options, files.trajectory, attempt.run_id, attempt.session)
        env = child_environment(self.environ, options, files.trajectory, attempt.marker, self.venv)
        if attempt.workspace is not None:
            set_workspace(config, env, self.environ, attempt.workspace)
        return config, env

    def prepare(self, attempt: Attempt, private_dir: Path) -> Prepared:
        config, env = self.config(attempt)
        config_path = write_private_config(self.config_path(attempt, private_dir), config)
        tmux_dir = make_tmux_dir(private_dir)
        env.update(attempt_environment(attempt.marker, tmux_dir))
        # At a stop, as a terminal's Ctrl-C would: OpenHands 0.60+ then stops the agent and saves its
        # trajectory, but only once the agent's running command ends: those commands end at once.
        return Prepared(self.argv(attempt, private_dir), env, (config_path, tmux_dir), kill_commands=True)

    def sources(self, attempt: Attempt) -> Sources:
        return Sources(event_folders=tuple(self.event_folders(attempt.session)))

    def event_folders(self, session: str) -> list[Path]:
        sids = [self.session_id(session)]
        if self.release.version is None:  # unknown release: either formula
            sids.append(session_id(session, legacy=not self.release.legacy_session_id))
        return [self.file_store / "sessions" / sid / "events" for sid in sids]

    def evidence(self, attempt: Attempt) -> list[Path]:
        return []  # its session events live in the user's file store, outside the output folder

    def containers(self, attempt: Attempt) -> list[str]:
        """Its Docker sandbox, which OpenHands only stops (or leaves running)."""
        if self.uses_docker and not self.keep_containers:
            return [f"openhands-runtime-{self.session_id(attempt.session)}"]
        return []

    def about(self) -> About:
        return About("core-main", self.release.version, self.release.rules())

    def identity(self) -> Experiment:
        """The model from the config section the agent uses ([llm], or [llm.NAME] over it with
        --llm-config), LLM_MODEL over it without; the configuration run_batch passes, hashed."""
        named = self.options.llm_config
        section = llm_section(self.base_config, named)
        from_env = not named and bool(self.environ.get("LLM_MODEL"))
        model = self.environ["LLM_MODEL"] if from_env else section.get("model")
        source = "LLM_MODEL" if from_env else f"config [llm{'.' + named if named else ''}]"
        if not isinstance(model, str) or not model:
            model, source = None, "not in the config: OpenHands' default model"
        base_url = (None if named else self.environ.get("LLM_BASE_URL")) or section.get("base_url")
        if not self.recognised:
            model, source = None, "unknown: --command is a wrapper (--entrypoint core-main says it runs core.main)"
        # The configuration the agent gets, as the options make it (--runtime cli over a config that
        # says cli already is the same experiment), without what differs for every attempt.
        effective = task_config(self.base_config, self.options, Path("-"), "-", "-")
        effective["core"].pop("save_trajectory_path", None)
        effective["sandbox"].get("docker_runtime_kwargs", {}).pop("labels", None)
        effective["llm"] = section  # the LLM settings the agent uses; the model and host apart, below
        options = self.options
        config = {
            "config": without_model(without_secrets(effective)),
            "flags": [options.agent_cls, list(options.extra_args)],
            "environment": without_model(agent_environment(self.environ)),
        }
        return Experiment(
            "core-main", "openhands-ai", self.release.version, model, source, url_host(base_url), stable_hash(config)
        )

    def describe(self, attempt: Attempt, secrets: tuple[str, ...]) -> Described:
        config, _ = self.config(attempt)
        return Described(
            [mask(a, secrets) for a in self.argv(attempt, Path("<private>"))],
            loads_json(mask(json.dumps(config, default=str), secrets)),
            str(attempt.workspace) if attempt.workspace else None,
        )


@dataclass(frozen=True)
class ConversationFolder:
    """Where the V1 CLI and the SDK driver keep an attempt's conversation: a folder of its own in
    the output folder (`conversations/<stem>`), whose base_state.json holds the end state and the
    money and whose events are the trajectory (docs/openhands.md)."""

    output_dir: Path

    def of(self, attempt: Attempt) -> Path:
        return self.output_dir / "conversations" / attempt.evidence.stem

    def make(self, attempt: Attempt) -> Path:
        folder = self.of(attempt)
        folder.parent.mkdir(exist_ok=True)
        # A fresh name (the trajectory's was just claimed); the user's alone: the agent's commands
        # see the whole environment, keys included, and its events keep what they print.
        folder.mkdir(mode=0o700)
        return folder

    def environment(self, attempt: Attempt, private_dir: Path, environ: dict[str, str]) -> tuple[dict[str, str], Path]:
        """What the CLI and the driver read: where the conversation goes, the work dir, no fetch of
        LiteLLM's price list (docs/openhands.md, "SDK 1.58.2", the price map), the attempt's markers and tmux."""
        tmux_dir = make_tmux_dir(private_dir)
        env = {**environ, "OPENHANDS_CONVERSATIONS_DIR": str(self.make(attempt))}
        env.update(attempt_environment(attempt.marker, tmux_dir))
        env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        if attempt.workspace is not None:
            env["OPENHANDS_WORK_DIR"] = str(attempt.workspace)
        return env, tmux_dir

    def of_pattern(self) -> Path:
        return self.output_dir / "conversations" / "<task>"

    def files(self, attempt: Attempt) -> list[Path]:
        """The conversation's files: they are in the output folder, and the agent's commands see
        the whole environment, keys included."""
        try:
            return [p for p in self.of(attempt).rglob("*") if p.is_file() and not p.is_symlink()]
        except OSError:
            return []


def agent_settings_file(environ: dict[str, str]) -> Path:
    """The V1 agent settings: $OPENHANDS_PERSISTENCE_DIR/agent_settings.json, else ~/.openhands."""
    home = environ.get("HOME") or str(Path.home())
    return Path(environ.get("OPENHANDS_PERSISTENCE_DIR") or Path(home) / ".openhands") / "agent_settings.json"


def v1_identity(
    kind: str, package: str, version: str | None, environ: dict[str, str], options: dict[str, Any]
) -> Experiment:
    """A V1 agent's experiment (the CLI's, the driver's): the model from LLM_MODEL when set (with
    --override-with-envs), else agent_settings.json; the settings (keys left out), the agent's
    variables and the options, hashed."""
    path = agent_settings_file(environ)
    settings = _dict(read_json_file(path))
    llm = _dict(settings.get("llm"))
    model: Any = environ.get("LLM_MODEL") or llm.get("model")
    source = "LLM_MODEL" if environ.get("LLM_MODEL") else str(path)
    base_url = (environ.get("LLM_BASE_URL") if environ.get("LLM_MODEL") else None) or llm.get("base_url")
    if not isinstance(model, str) or not model:
        model, source = None, f"no model: neither LLM_MODEL nor {path}"
    config = {
        "agent_settings": without_model(without_secrets(settings)),
        "options": options,
        "environment": without_model(agent_environment(environ)),
    }
    return Experiment(kind, package, version, model, source, url_host(base_url), stable_hash(config))


def v1_settings_rule(environ: dict[str, str]) -> str:
    settings = "agent_settings.json in $OPENHANDS_PERSISTENCE_DIR (default ~/.openhands)"
    if environ.get("LLM_MODEL"):
        settings += ", LLM_* from the environment (--override-with-envs)"
    return settings


def refuse_v1_options(what: str, settings: Settings, environ: dict[str, str], refused: dict[str, str]) -> None:
    """The options a V1 entrypoint cannot honour, each a usage error that says why."""
    for attr, why in refused.items():
        if getattr(settings.openhands, attr) is not None:
            raise UsageError(f"--{attr.replace('_', '-')}: {what} cannot honour it ({why}); leave it out")
    if settings.openhands.runtime not in (None, "local"):
        raise UsageError(
            f"--runtime {settings.openhands.runtime}: {what} runs commands on this machine only; leave --runtime out"
        )
    if environ.get("LLM_MODEL") and not environ.get("LLM_API_KEY"):
        raise UsageError(
            f"LLM_MODEL is set but LLM_API_KEY is not: {what} takes its LLM from the environment "
            "only with both; set LLM_API_KEY, or unset LLM_MODEL to use agent_settings.json"
        )
    if settings.base_config_given:
        raise UsageError(
            f"--base-config: {what} reads no config.toml; its settings are agent_settings.json in "
            "$OPENHANDS_PERSISTENCE_DIR (default ~/.openhands), or LLM_MODEL/LLM_API_KEY"
        )


@dataclass
class CliV1:
    """The V1 CLI, `openhands --headless` (the `openhands` package, 1.16.0 checked): no config
    file or session name; its settings are the user's agent_settings.json; each attempt gets a
    conversation folder of its own in the output folder (ConversationFolder)."""

    command: tuple[str, ...]
    options: OpenHandsOptions
    environ: dict[str, str]
    conversations: ConversationFolder
    version: str | None = None
    name: str = "openhands (V1 CLI)"

    REFUSED: ClassVar[dict[str, str]] = {
        "max_iterations": "it has no step limit (500, fixed)",
        "agent_cls": "it has one agent",
        "llm_config": "its LLM is the one in agent_settings.json or LLM_MODEL",
        "max_budget_per_task": "it has no budget limit",
    }

    @classmethod
    def refuse(cls, settings: Settings, environ: dict[str, str]) -> None:
        refuse_v1_options("the V1 CLI (`openhands`)", settings, environ, cls.REFUSED)

    def session_id(self, session: str) -> str:
        return ""  # the conversation id is known once OpenHands has written it

    def argv(self, attempt: Attempt, private_dir: Path) -> list[str]:
        override = ["--override-with-envs"] if self.environ.get("LLM_MODEL") else []
        prompt = str(attempt.prompt_file.absolute())
        return [*self.command, "--headless", "--always-approve", *override, "-f", prompt, *self.options.extra_args]

    def prepare(self, attempt: Attempt, private_dir: Path) -> Prepared:
        env, tmux_dir = self.conversations.environment(attempt, private_dir, self.environ)
        # At a stop it waits for the running command or LLM call before it saves its state: the
        # command ends at once.
        return Prepared(self.argv(attempt, private_dir), env, (tmux_dir,), kill_commands=True)

    def sources(self, attempt: Attempt) -> Sources:
        return Sources(conversations=self.conversations.of(attempt))

    def evidence(self, attempt: Attempt) -> list[Path]:
        return self.conversations.files(attempt)

    def containers(self, attempt: Attempt) -> list[str]:
        return []  # none; its tmux server carries the attempt's marker: the sweep ends it

    def identity(self) -> Experiment:
        options = {"max_iterations": None, "max_budget_per_task": None, "extra_args": list(self.options.extra_args)}
        return v1_identity("cli", "openhands", self.version, self.environ, options)

    def about(self) -> About:
        rules = {"settings": v1_settings_rule(self.environ), "conversations": str(self.conversations.of_pattern())}
        return About("cli", self.version, rules)

    def describe(self, attempt: Attempt, secrets: tuple[str, ...]) -> Described:
        workspace = str(attempt.workspace) if attempt.workspace else None  # as OPENHANDS_WORK_DIR
        return Described([mask(a, secrets) for a in self.argv(attempt, Path("<private>"))], None, workspace)


@dataclass
class SdkDriver:
    """--entrypoint sdk: each attempt is run_batch's own SDK driver (the section at the end of this
    file), run by the Python of an environment with openhands-sdk (the V1 CLI's, or the SDK alone):
    the CLI's agent and conversation folder, plus a step limit, a budget, a real exit status and
    the spend saved as it goes. --command names that Python, or the V1 CLI's `openhands` (its
    interpreter is used)."""

    command: tuple[str, ...]
    options: OpenHandsOptions
    environ: dict[str, str]
    conversations: ConversationFolder
    version: str | None = None
    grace_period: float = DEFAULT_GRACE_PERIOD
    preloading: bool = True  # import the SDK once per batch and fork each attempt (off: --no-preload)
    name: str = "run_batch's SDK driver (openhands-sdk)"

    REFUSED: ClassVar[dict[str, str]] = {
        "agent_cls": "it has one agent",
        "llm_config": "its LLM is the one in agent_settings.json or LLM_MODEL",
    }

    @classmethod
    def refuse(cls, settings: Settings, environ: dict[str, str]) -> None:
        refuse_v1_options("--entrypoint sdk", settings, environ, cls.REFUSED)
        if settings.openhands.extra_args:
            raise UsageError(
                "-- OPENHANDS_ARGS: --entrypoint sdk runs run_batch's own driver, which takes no extra arguments"
            )

    def session_id(self, session: str) -> str:
        return ""  # the conversation id is known once the SDK has written it

    def argv(self, attempt: Attempt, private_dir: Path) -> list[str]:
        # The driver saves the state before run_batch's grace period ends and everything is killed.
        grace = self.grace_period - 5 if self.grace_period > 10 else self.grace_period / 2
        prompt = str(attempt.prompt_file.absolute())
        argv = [*self.command, str(Path(__file__).absolute()), SDK_DRIVER_FLAG, "-f", prompt, "--grace", f"{grace:g}"]
        options = options_for(self.options, attempt.task)
        if options.max_iterations is not None:
            argv += ["--max-iterations", str(options.max_iterations)]
        if options.max_budget_per_task is not None:
            argv += ["--max-budget", f"{options.max_budget_per_task:g}"]
        if self.environ.get("LLM_MODEL"):
            argv.append("--override-with-envs")
        return argv

    def prepare(self, attempt: Attempt, private_dir: Path) -> Prepared:
        env, tmux_dir = self.conversations.environment(attempt, private_dir, self.environ)
        env["OPENHANDS_SUPPRESS_BANNER"] = "1"
        argv = self.argv(attempt, private_dir)
        # At a stop the driver ends the agent's commands itself (Ctrl-C in their panes) and saves
        # the state. A preloaded SDK forks it with the arguments after `python run_batch.py --sdk-driver`.
        fork = argv[len(self.command) + 2 :] if self.preloads else None
        return Prepared(argv, env, (tmux_dir,), kill_commands=False, fork_args=fork)

    @property
    def preloads(self) -> bool:
        """Whether its attempts are forked from the SDK imported once per batch: where a fork can
        serve (Linux: os.fork, /proc), unless --no-preload."""
        return self.preloading and hasattr(os, "fork") and sys.platform.startswith("linux")

    def sources(self, attempt: Attempt) -> Sources:
        return Sources(conversations=self.conversations.of(attempt))

    def evidence(self, attempt: Attempt) -> list[Path]:
        return self.conversations.files(attempt)

    def containers(self, attempt: Attempt) -> list[str]:
        return []  # none; the driver closes its conversation; the sweep ends what is left

    def identity(self) -> Experiment:
        options: dict[str, Any] = {
            "max_iterations": self.options.max_iterations,
            "max_budget_per_task": self.options.max_budget_per_task,
            "extra_args": [],
        }
        return v1_identity("sdk", "openhands-sdk", self.version, self.environ, options)

    def about(self) -> About:
        start = (
            "the SDK imported once per batch, each attempt forked from it (else a fresh interpreter each)"
            if self.preloads
            else "a fresh interpreter per attempt" + (" (--no-preload)" if not self.preloading else " (no fork here)")
        )
        rules = {
            "settings": v1_settings_rule(self.environ),
            "conversations": str(self.conversations.of_pattern()),
            "driver": f"{Path(__file__).absolute()} {SDK_DRIVER_FLAG}, run by {self.command[0]}",
            "start-up": start,
        }
        return About("sdk", self.version, rules)

    def describe(self, attempt: Attempt, secrets: tuple[str, ...]) -> Described:
        workspace = str(attempt.workspace) if attempt.workspace else None  # as OPENHANDS_WORK_DIR
        return Described([mask(a, secrets) for a in self.argv(attempt, Path("<private>"))], None, workspace)


def limits_for(settings: Settings, task: Task) -> Limits:
    """One task's limits: its front matter's over --task-memory and --task-cpus (pure)."""
    mine = task.settings
    return Limits(mine.task_memory or settings.limits.memory, mine.task_cpus or settings.limits.cpus)


def wanted_limits(settings: Settings, tasks: list[Task]) -> Limits | None:
    """Every kind of limit any selected task has (what the control groups must offer), or None."""
    each = [limits_for(settings, t) for t in tasks]
    memory = max((x.memory for x in each if x.memory), default=None)
    cpus = max((x.cpus for x in each if x.cpus), default=None)
    return Limits(memory, cpus) if memory or cpus else None


def options_for(options: OpenHandsOptions, task: Task) -> OpenHandsOptions:
    """The OpenHands options of one task: its front matter's step limit and budget over the command
    line's (pure)."""
    mine = task.settings
    if mine.max_iterations is None and mine.max_budget_per_task is None:
        return options
    return dataclasses.replace(
        options,
        max_iterations=mine.max_iterations or options.max_iterations,
        max_budget_per_task=mine.max_budget_per_task or options.max_budget_per_task,
    )


def script_interpreter(program: str) -> str | None:
    """The interpreter a script's `#!` line names (an installed console script's Python)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        with open_regular(program) as f:
            first = f.readline(512).decode()
        if first.startswith("#!") and len(first.split()) == 1:
            return first[2:].strip()
    return None


def runs_core_main(command: tuple[str, ...]) -> bool:
    """Whether --command is OpenHands' core.main as run_batch calls it (`python -m
    openhands.core.main`, or the 0.33 wrapper examples/install-openhands.sh makes), not a wrapper
    of someone's that may change the model on the way."""
    return "openhands.core.main" in command[1:] or Path(command[0]).name == "openhands-core-main"


def detect_entrypoint(command: tuple[str, ...], forced: str) -> str:
    """`cli` for the V1 CLI (a program named `openhands`, or `-m openhands_cli...`), else `core-main`."""
    if forced != "auto":
        return forced
    modules = [command[i + 1] for i, word in enumerate(command[:-1]) if word == "-m"]
    if Path(command[0]).name == "openhands" or any(m.startswith("openhands_cli") for m in modules):
        return "cli"
    return "core-main"


def bare_python(command: tuple[str, ...]) -> bool:
    """Whether a command is a Python interpreter alone (`python3`, `.venv/bin/python3.12`), which
    core.main cannot be run as: it needs `-m openhands.core.main` (pure)."""
    return len(command) == 1 and re.fullmatch(r"python[\d.]*", Path(command[0]).name) is not None


def ask_version(command: tuple[str, ...], kind: str, environ: dict[str, str]) -> str | None:
    """The installed release, asked once per batch of the interpreter that runs it (package
    metadata: milliseconds, where importing OpenHands takes seconds); None when it cannot be told."""
    python: str | None = None
    if kind == "core-main" and (("-m" in command and "openhands.core.main" in command) or bare_python(command)):
        python = command[0]
    elif kind == "cli":
        python = script_interpreter(command[0])
    elif kind == "sdk":
        python = command[0]
    if python is None:
        return None
    package = {"core-main": "openhands-ai", "cli": "openhands", "sdk": "openhands-sdk"}[kind]
    probe = f"import importlib.metadata as m; print(m.version({package!r}))"
    try:
        done = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, timeout=60, env=environ, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = done.stdout.strip()
    return found if done.returncode == 0 and re.fullmatch(r"[\w.+-]{1,40}", found) else None


def choose_entrypoint(settings: Settings, base_config: dict[str, Any], environ: dict[str, str]) -> Entrypoint:
    """The OpenHands entrypoint --command names (or --entrypoint forces), with its release's rules;
    each refuses the options it cannot honour."""
    kind = detect_entrypoint(settings.command, settings.entrypoint)
    if kind == "cli":
        CliV1.refuse(settings, environ)
    elif kind == "sdk":
        SdkDriver.refuse(settings, environ)
    command = settings.command
    if kind == "sdk" and Path(command[0]).name == "openhands":  # the V1 CLI's program: its Python
        command = (script_interpreter(command[0]) or command[0],)
    version = settings.openhands_version or ask_version(command, kind, environ)
    if kind == "core-main" and version and Release(version).without_core_main:
        python = settings.command[0] if "-m" in settings.command or bare_python(command) else "<its Python>"
        raise UsageError(
            f"--command runs openhands-ai {version}, which has no openhands.core.main (gone since 1.7); its "
            f"environment has the OpenHands SDK: run it with --entrypoint sdk --command {python}"
        )
    if kind == "core-main" and bare_python(command):
        raise UsageError(
            f"--command {command[0]} is a Python alone; OpenHands up to 1.6 runs as --command "
            f"'{command[0]} -m openhands.core.main', the OpenHands SDK as --entrypoint sdk --command {command[0]}"
        )
    folder = ConversationFolder(settings.output_dir)
    if kind == "cli":
        return CliV1(settings.command, settings.openhands, environ, folder, version)
    if kind == "sdk":
        return SdkDriver(command, settings.openhands, environ, folder, version, settings.grace_period, settings.preload)
    return CoreMain(
        settings.command,
        settings.openhands,
        base_config,
        environ,
        settings.config_name,
        settings.venv,
        settings.keep_containers,
        Release(version),
        recognised=settings.entrypoint == "core-main" or runs_core_main(settings.command),
    )


@dataclass(frozen=True)
class RunSetup:
    """What a run works with once configured: its settings, the OpenHands entrypoint, the
    experiment it makes, the secrets to mask."""

    settings: Settings
    entrypoint: Entrypoint
    experiment: Experiment
    secrets: tuple[str, ...]


def this_experiment(settings: Settings, entrypoint: Entrypoint, secrets: tuple[str, ...]) -> Experiment:
    """The running experiment: what the entrypoint makes, the label, and the evaluator beside them."""
    evaluator = mask(settings.evaluate, secrets) if settings.evaluate else None
    digest = hashlib.sha256(evaluator.encode("utf-8", "surrogatepass")).hexdigest() if evaluator else None
    return dataclasses.replace(
        entrypoint.identity(), label=settings.label, evaluator=evaluator, evaluator_sha256=digest
    )


def configure(settings: Settings, environ: dict[str, str]) -> RunSetup:
    """The base config, its secrets, the entrypoint (asking the release), the experiment."""
    base_config = load_base_config(settings.base_config)
    secrets = find_secrets(base_config, environ)
    entrypoint = choose_entrypoint(settings, base_config, environ)
    return RunSetup(settings, entrypoint, this_experiment(settings, entrypoint, secrets), secrets)


# ================================================================================================
# Launch and wait (process handling)
# ================================================================================================


# ------------------------------------------------------------------------------------------------
# Processes: the markers they carry, signals, the sweep
# ------------------------------------------------------------------------------------------------


def marked_processes(marker: Marker) -> list[int]:
    """Live processes (zombies count as gone) whose environment carries the marker; Linux only
    (/proc), elsewhere none are found and only the process group is killed."""
    # Whole entries only: NUL-delimited, the environment read with a NUL in front.
    wanted = [f"\0{MARKER_RUN}={marker.run_id}\0".encode()]
    if marker.session is not None:
        wanted.append(f"\0{MARKER_SESSION}={marker.session}\0".encode())
    me = os.getpid()
    found = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb", buffering=0) as f:
                environ = b"\0" + f.read() + b"\0"
        except OSError:  # gone, or not ours
            continue
        if all(w in environ for w in wanted) and not is_zombie(pid):
            if marker.orphans_only and _runner_alive(environ.split(b"\0")):
                continue
            found.append(pid)
    return found


def _runner_alive(environ_entries: list[bytes]) -> bool:
    """Whether the runner named in a process's environment still runs (then it is that runner's
    task, however a lock file came to name its run: a copied output folder, a forged lock)."""
    prefix = f"{MARKER_RUNNER}=".encode()
    for entry in environ_entries:
        if entry.startswith(prefix) and entry[len(prefix) :].isdigit():
            return process_alive(int(entry[len(prefix) :]))
    return False


def is_zombie(pid: int) -> bool:
    """A zombie has finished; PID 1 reaps reparented ones in its own time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            info = f.read()
        return info[info.rindex(b")") + 2 : info.rindex(b")") + 3] in (b"Z", b"X")
    except (OSError, ValueError):
        return True


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return not is_zombie(pid)


def signal_quietly(pid: int, sig: int, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid, sig)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int | None]:
    """(command name, parent pid) of a process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            info = f.read().decode(errors="replace")
        return info[info.index("(") + 1 : info.rindex(")")], int(info[info.rindex(")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return "", None


def _comm(pid: int) -> str:
    return _proc_stat(pid)[0]


def _parent(pid: int) -> int | None:
    return _proc_stat(pid)[1]


def request_stop(proc: Process, marker: Marker, kill_commands: bool) -> None:
    """Ask an attempt to stop, as a terminal's Ctrl-C would (SIGINT to its process group); and,
    for the entrypoints that wait for the agent's running command before they stop, end it now."""
    signal_quietly(proc.pid, signal.SIGINT, group=True)
    if kill_commands:
        kill_agent_commands(proc, marker)


def kill_agent_commands(proc: Process, marker: Marker) -> None:
    """End the commands the agent is running, outside OpenHands' process group: OpenHands stops
    gracefully only once they end. Left alone: tmux itself and a tmux pane's shell (killing the
    shell makes the V1 CLI hang); they go with the attempt."""
    for pid in marked_processes(marker):
        if _pgid(pid) == proc.pid or _comm(pid).startswith("tmux"):
            continue
        parent = _parent(pid)
        if parent is not None and _comm(parent).startswith("tmux"):
            continue
        signal_quietly(pid, signal.SIGKILL)


def kill_everything(proc: Process | None, marker: Marker, patience: float = 5.0) -> list[int]:
    """SIGKILL the task's process group and every process carrying its marker, until none is
    left (a zombie counts as gone). Returns the pids that had to be killed."""
    killed: list[int] = []
    if proc is not None and proc.poll() is None:
        signal_quietly(proc.pid, signal.SIGKILL, group=True)
        killed.append(proc.pid)
    deadline = time.monotonic() + patience
    while True:
        left = marked_processes(marker)
        for pid in left:
            signal_quietly(pid, signal.SIGKILL)
        killed += [p for p in left if p not in killed]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=patience)
    return killed


def wait_for_exit(proc: Process, timeout: float) -> int | None:
    """The exit code, or None if still running after `timeout` seconds. Uses a pidfd where the
    OS has one, so an exit is noticed at once rather than at the next poll."""
    if timeout <= 0:
        return proc.poll()
    if not isinstance(proc, subprocess.Popen):  # forked by the preloaded SDK: it reports the exit
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            fd = pidfd_open(proc.pid)
        except OSError:
            fd = None
        if fd is not None:
            try:
                select.select([fd], [], [], timeout)
            finally:
                os.close(fd)
            return proc.poll()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


# ------------------------------------------------------------------------------------------------
# One attempt, from start to end
# ------------------------------------------------------------------------------------------------


@dataclass
class StopSignal:
    """Why the batch is stopping, if it is: a signal (first: gracefully; second: at once), or a
    failure of the runner's own (a results file that cannot be written)."""

    signum: int = 0  # the signal that asked the batch to stop, 0 if none did
    failure: str | None = None  # why the runner stopped itself
    budget: str | None = None  # which budget was reached (not an error: the same command goes on)
    kill_now: bool = False
    event: threading.Event = field(default_factory=threading.Event)

    @property
    def stopping(self) -> bool:
        return bool(self.signum or self.failure or self.budget)

    def budget_reached(self, why: str) -> None:
        """Stop the batch the graceful way because a budget is spent; raising it and running the
        same command again picks the stopped tasks up."""
        if not self.stopping:
            self.budget = why
            self.event.set()

    def request(self, signum: int) -> None:
        if self.stopping:
            self.kill_now = True
        else:
            self.signum = signum
        self.event.set()

    def fail(self, why: str) -> None:
        """Stop the batch the graceful way because the runner cannot go on."""
        if not self.stopping:
            self.failure = why
            self.event.set()

    @property
    def reason(self) -> str:
        if self.budget:
            return self.budget
        if self.failure:
            return self.failure
        if self.signum == signal.SIGPIPE:
            return "the console's pipe was closed"
        return f"{signal.Signals(self.signum).name} received" if self.signum else ""


@dataclass
class Launch:
    """What happened to one OpenHands process (process facts only; no interpretation)."""

    return_code: int | None
    timed_out: bool
    interrupted: bool
    started_at: str
    finished_at: str
    elapsed: float
    error: str | None = None  # could not start
    halted: str | None = None  # the runner stopped this attempt alone: "stalled", "task-budget" or "oom"
    halt_reason: str | None = None
    timeout: float | None = None  # the limit it had


@dataclass
class Halt:
    """A request to stop one attempt, from the runner's watch over it (a stall, its budget)."""

    kind: str | None = None
    reason: str | None = None

    def request(self, kind: str, reason: str) -> None:
        if self.kind is None:
            self.kind, self.reason = kind, reason


@dataclass(frozen=True)
class Launching:
    """How one attempt is started and watched: what it runs, where, its marker, its limits in time,
    its control group, and the preloaded SDK when it forks it."""

    prepared: Prepared
    cwd: Path
    files: AttemptFiles
    marker: Marker
    timeout: float | None
    grace_period: float
    group: AttemptGroup | None = None
    preloaded: PreloadedSdk | None = None
    on_start: Callable[[int], None] | None = None


def launch_and_wait(launching: Launching, stop: StopSignal, halt: Halt | None = None) -> Launch:
    """Start OpenHands (born in the attempt's control group, when it has one), wait for it to end,
    the timeout, or a stop; ask it to stop, give it the grace period, then kill every process of
    the attempt. Its output goes straight to the logs."""
    prepared, files, group, marker = launching.prepared, launching.files, launching.group, launching.marker
    timeout, grace_period = launching.timeout, launching.grace_period
    started_at, t0 = utc_now(), time.monotonic()
    try:
        # Own session: a Ctrl-C on the terminal reaches the runner only, which then stops tasks the
        # graceful way; OpenHands' stdin is closed (a question would hang it).
        proc: Process
        if launching.preloaded is not None and prepared.fork_args is not None:  # forked: own session and logs too
            proc = launching.preloaded.spawn(prepared.fork_args, prepared.env, launching.cwd, files, group)
        else:
            with (
                open_new(files.stdout_log, exclusive=False) as out,
                open_new(files.stderr_log, exclusive=False) as err,
                group.joined() if group else contextlib.nullcontext(),
            ):
                proc = subprocess.Popen(
                    [*(group.spawn_prefix() if group else []), *prepared.argv],
                    cwd=launching.cwd,
                    env=prepared.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
    except OSError as exc:
        return Launch(
            None,
            False,
            False,
            started_at,
            utc_now(),
            time.monotonic() - t0,
            f"could not start {prepared.argv[0]}: {exc.strerror or exc}",
            timeout=timeout,
        )
    if launching.on_start is not None:
        launching.on_start(proc.pid)
    deadline = t0 + timeout if timeout else None
    halt = halt or Halt()
    timed_out = interrupted = False
    grace_until: float | None = None
    return_code: int | None = None
    try:
        while return_code is None:
            now = time.monotonic()
            if grace_until is None and (stop.stopping or halt.kind or (deadline is not None and now >= deadline)):
                interrupted = stop.stopping and not halt.kind
                timed_out = not stop.stopping and not halt.kind
                if grace_period > 0:  # no grace: straight to the kill below
                    request_stop(proc, marker, prepared.kill_commands)
                grace_until = now + grace_period
            if stop.kill_now or (grace_until is not None and now >= grace_until):
                interrupted = interrupted or (stop.stopping and not timed_out)
                break
            wakes = [0.5]
            if grace_until is not None:
                wakes.append(grace_until - now)
            elif deadline is not None:
                wakes.append(deadline - now)
            return_code = wait_for_exit(proc, max(0.0, min(wakes)))
    finally:
        # Whatever happened, nothing the task started stays alive (background servers too).
        kill_everything(proc, marker)
    if return_code is None:
        return_code = proc.returncode
    elapsed = time.monotonic() - t0
    return Launch(
        return_code, timed_out, interrupted, started_at, utc_now(), elapsed, None, halt.kind, halt.reason, timeout
    )


def remove_container(name: str, log: Log) -> None:
    """Remove this task's own Docker sandbox (OpenHands only stops it, or leaves it running)."""
    docker = shutil.which("docker")
    if docker is None:
        log.once("docker-missing", "Docker runtime but no `docker` command: containers not removed")
        return
    try:
        done = subprocess.run(
            [docker, "rm", "-f", name],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.once("docker-failed", f"could not remove Docker containers: {exc}")
        return
    if done.returncode != 0 and "No such container" not in done.stderr:
        log.once("docker-failed", f"could not remove Docker containers: {done.stderr.strip()[:200]}")


def remove_run_containers(run_id: str, log: Log) -> int:
    """Remove every container a (dead) run labelled as its own; never by name prefix alone."""
    docker = shutil.which("docker")
    if docker is None:
        return 0
    try:
        listed = subprocess.run(
            [docker, "ps", "-aq", "--filter", f"label=run_batch.run={run_id}"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        ids = listed.stdout.split() if listed.returncode == 0 else []
        if ids:
            subprocess.run([docker, "rm", "-f", *ids], capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        return len(ids)
    except (OSError, subprocess.TimeoutExpired):
        log.once("docker-failed", "could not list Docker containers of an earlier run")
        return 0


# ------------------------------------------------------------------------------------------------
# The preloaded SDK, the runner's side (its server is in the SDK driver's section)
# ------------------------------------------------------------------------------------------------


@dataclass
class Forked:
    """An attempt forked by the preloaded SDK: the server's child, not the runner's, so its exit
    status comes from the server, which reaps it."""

    pid: int
    server: PreloadedSdk
    returncode: int | None = None

    def poll(self) -> int | None:
        self.returncode = self.server.exit_of(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        code = self.server.exit_of(self.pid, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
        self.returncode = code
        return code


class PreloadedSdk:
    """The runner's side of `run_batch.py --sdk-server` (the section at the end of this file): the
    SDK imported once per batch, each attempt a fork of it. Started at the first attempt; when it
    cannot serve (no fork here, the imports left threads running, it died), attempts start their
    own interpreter as before, and the log says why once."""

    def __init__(
        self, python: str, environ: dict[str, str], log_path: Path, marker: Marker, warn: Callable[[str], None]
    ) -> None:
        self.python, self.environ, self.log_path, self.marker, self.warn = python, environ, log_path, marker, warn
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = "new"  # new | starting | ready | failed
        self.why: str | None = None
        self.version: str | None = None
        self.missing: list[str] = []
        self._changed = threading.Condition()
        self._answers: dict[int, dict[str, Any]] = {}
        self._exits: dict[int, int] = {}
        self._next = 0
        self._send = threading.Lock()
        self.said = False

    def ready(self, stop: StopSignal, patience: float = 600.0) -> bool:
        """Whether attempts can be forked; starts the server on the first call, waits for it (not
        past a stop of the batch: then the attempt starts its own interpreter, which is told to
        stop at once and spends nothing)."""
        with self._changed:
            if self.state == "new":
                self.state = "starting"
                self._start()
            deadline = time.monotonic() + patience
            while self.state == "starting" and time.monotonic() < deadline:
                if stop.stopping:
                    return False
                self._changed.wait(0.5)
            if self.state == "starting":
                self._fail("it did not say it was ready in time")
            if not self.said:
                self.said = True
                if self.state == "ready":
                    for lack in self.missing:
                        self.warn(f"openhands-sdk {self.version or UNKNOWN} lacks {lack}")
                else:
                    self.warn(f"the preloaded SDK cannot serve ({self.why}): each attempt starts its own interpreter")
            return self.state == "ready"

    def _start(self) -> None:
        env = {
            **self.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": self.environ.get("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
            "OPENHANDS_SUPPRESS_BANNER": "1",
            "PYTHONUNBUFFERED": "1",
            **self.marker.environment(),
            MARKER_SESSION: SESSION_PLACEHOLDER,  # each attempt writes its own over it (mark_session)
        }
        env.setdefault("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True")  # no fetch at the first Anthropic call
        try:
            with open_new(self.log_path, exclusive=False) as log:
                self.proc = subprocess.Popen(
                    [self.python, str(Path(__file__).absolute()), SDK_SERVER_FLAG],
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    start_new_session=True,  # a Ctrl-C reaches the runner alone, which stops it
                )
        except OSError as exc:
            self._fail(f"could not start it: {exc.strerror or exc}")
            return
        threading.Thread(target=self._listen, name="sdk-server", daemon=True).start()

    def _fail(self, why: str) -> None:
        self.state, self.why = "failed", why
        self._changed.notify_all()

    def _listen(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError), self._changed:
                message = json.loads(line)
                if "ready" in message:
                    if message["ready"]:
                        self.state, self.version = "ready", message.get("version")
                        self.missing = [str(m) for m in message.get("missing") or []]
                    else:
                        self._fail(str(message.get("why")))
                elif "exit" in message:
                    self._exits[int(message["pid"])] = int(message["exit"])
                elif "id" in message:
                    self._answers[int(message["id"])] = message
                self._changed.notify_all()
        with self._changed:  # the server is gone: its attempts can no longer be reaped by it
            if self.state != "failed":
                self._fail(f"it ended (exit status {self.proc.wait()}); see {self.log_path}")
            for pid in self._answers_pids():
                if pid not in self._exits:  # an ended attempt's pid may be someone else's by now
                    self._exits[pid] = -signal.SIGKILL
                    signal_quietly(pid, signal.SIGKILL, group=True)

    def _answers_pids(self) -> list[int]:
        return [int(a["pid"]) for a in self._answers.values() if "pid" in a]

    def spawn(
        self, argv: list[str], env: dict[str, str], cwd: Path, files: AttemptFiles, group: AttemptGroup | None
    ) -> Forked:
        """Fork one attempt: the driver's arguments, environment, folder, logs and control group."""
        with self._send:
            self._next += 1
            number = self._next
            request = {
                "id": number,
                "argv": argv,
                "env": env,
                "cwd": str(cwd),
                "stdout": str(files.stdout_log),
                "stderr": str(files.stderr_log),
                "cgroups": group.procs_files() if group else [],
            }
            assert self.proc is not None and self.proc.stdin is not None
            try:
                self.proc.stdin.write((json.dumps(request) + "\n").encode())
                self.proc.stdin.flush()
            except OSError as exc:
                raise OSError(exc.errno, f"the preloaded SDK is gone ({exc.strerror})") from None
        with self._changed:
            deadline = time.monotonic() + 60  # a fork takes milliseconds: a server that says nothing is stuck
            while number not in self._answers and self.state == "ready" and time.monotonic() < deadline:
                self._changed.wait(1.0)
            answer = self._answers.get(number)
            if answer is None and self.state == "ready":
                self._fail("it did not answer a request to start an attempt within 60 s")
        if answer is None or "pid" not in answer:
            raise OSError(
                errno.ECHILD, str(answer.get("error") if answer else f"the preloaded SDK is gone: {self.why}")
            )
        return Forked(int(answer["pid"]), self)

    def exit_of(self, pid: int, timeout: float | None) -> int | None:
        """A forked attempt's exit status, once the server has reaped it (waiting up to `timeout`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while pid not in self._exits:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._changed.wait(left if left is not None else 1.0)
            return self._exits[pid]

    def close(self) -> None:
        """End the server: stdin closed when it serves; killed while it still imports (it would
        read stdin only once its imports are done: seconds for nothing)."""
        if self.proc is None:
            return
        with self._changed:
            importing = self.state != "ready"
        if importing and self.proc.poll() is None:
            signal_quietly(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            signal_quietly(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# ------------------------------------------------------------------------------------------------
# Control groups: each attempt's memory and CPU, limited and measured (docs/cgroups.md)
# ------------------------------------------------------------------------------------------------


CGROUP_PERIOD_US = 100_000  # the CFS period the kernel uses by default: 100 ms


def cgroup_mounts(mountinfo: str) -> dict[str, Path]:
    """Where each cgroup v1 controller is mounted (`memory`, `cpu`, `cpuacct`, ...) and the cgroup2
    hierarchy (`unified`), from /proc/self/mountinfo's text (pure): a controller's folder comes from
    the mount options, never a fixed path (cpu and cpuacct are co-mounted on some machines only)."""
    found: dict[str, Path] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup2":
            found.setdefault("unified", Path(fields[4]))
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in ("memory", "cpu", "cpuacct", "pids"):
                    found.setdefault(option, Path(fields[4]))
    return found


def own_cgroup(text: str, controller: str) -> str | None:
    """The cgroup path of a process for a v1 controller, or for v2 (controller ""), from the text
    of /proc/<pid>/cgroup (pure)."""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and (controller in parts[1].split(",") or (not controller and parts[0] == "0")):
            return parts[2]
    return None


def _read_text(path: Path, limit: int = 1 << 20) -> str:
    """A kernel file's text ("" when it cannot be read), by plain system calls: a control group's
    files are read several times per attempt, and a file object costs three times the calls."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    chunks: list[bytes] = []
    try:
        while sum(map(len, chunks)) < limit and (chunk := os.read(fd, 1 << 16)):
            chunks.append(chunk)
    except OSError:
        return ""
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", "replace")


def _write_text(path: Path, value: str) -> None:
    """Write a kernel file in one system call (a control group's setting takes it whole)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode("ascii"))
    finally:
        os.close(fd)


def _keyed(text: str, key: str) -> int | None:
    """The number after `key` in a `key value` file (memory.oom_control, memory.events) (pure)."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


_HOMES: dict[tuple[int, str], str] = {}  # (thread, controller) -> the thread's own cgroup, read once


def home_cgroup(controller: str) -> str:
    """The current thread's own v1 cgroup for a controller, relative to the mount (read once per
    thread: a worker thread goes back to it after each start)."""
    key = (threading.get_native_id(), controller)
    if key not in _HOMES:
        _HOMES[key] = (own_cgroup(_read_text(Path("/proc/thread-self/cgroup")), controller) or "/").lstrip("/")
    return _HOMES[key]


@dataclass
class AttemptGroup:
    """One attempt's control group (a folder per v1 controller, or one v2 folder)."""

    version: int
    dirs: dict[str, Path]  # controller (v2: "unified") -> the attempt's folder

    @property
    def folders(self) -> list[Path]:
        """Each folder once: co-mounted controllers (cpu,cpuacct on many machines) share one."""
        return list(dict.fromkeys(self.dirs.values()))

    @contextlib.contextmanager
    def joined(self) -> Iterator[None]:
        """While this is open, processes the current thread starts are born in the group: the thread
        itself moves in (cgroup v1 moves single threads: each worker thread starts its own attempt)
        and back out after. For v2, where a thread cannot, spawn_prefix() joins instead."""
        if self.version != 1:
            yield
            return
        tid = str(threading.get_native_id())
        back = list(dict.fromkeys(d.parents[2] / home_cgroup(c) for c, d in self.dirs.items()))
        for folder in self.folders:  # <mount>/run_batch/<run>/<attempt>
            _write_text(folder / "tasks", tid)
        try:
            yield
        finally:
            for folder in back:
                with contextlib.suppress(OSError):
                    _write_text(folder / "tasks", tid)

    def usage_v1(self) -> Usage:
        peak = _read_text(self.dirs["memory"] / "memory.max_usage_in_bytes").strip() if "memory" in self.dirs else ""
        cpu = _read_text(self.dirs["cpuacct"] / "cpuacct.usage").strip() if "cpuacct" in self.dirs else ""
        return Usage(
            int(peak) if peak.isdigit() else None,
            round(int(cpu) / 1e9, 3) if cpu.isdigit() else None,
            self.oom_kills(),
            "cgroup",
        )

    def spawn_prefix(self) -> list[str]:
        """argv that joins the v2 group and then execs the rest (Python without site: ~15 ms),
        since a v2 group takes whole processes only; nothing for v1 (joined())."""
        if self.version != 2:
            return []
        join = "import os,sys; open(sys.argv[1],'w').write('0'); os.execvp(sys.argv[2], sys.argv[2:])"
        return [sys.executable, "-S", "-c", join, str(self.dirs["unified"] / "cgroup.procs")]

    def procs_files(self) -> list[str]:
        """The files a process writes `0` to, to join the group (a preloaded SDK's child does)."""
        return [str(d / "cgroup.procs") for d in self.folders]

    def oom_kills(self) -> int:
        if self.version == 1:
            return _keyed(_read_text(self.dirs.get("memory", Path("/-")) / "memory.oom_control"), "oom_kill") or 0
        return _keyed(_read_text(self.dirs["unified"] / "memory.events"), "oom_kill") or 0

    def usage(self) -> Usage:
        if self.version == 1:
            return self.usage_v1()
        folder = self.dirs["unified"]
        high = _read_text(folder / "memory.peak").strip()
        usec = _keyed(_read_text(folder / "cpu.stat"), "usage_usec")
        return Usage(
            int(high) if high.isdigit() else None,
            None if usec is None else round(usec / 1e6, 3),
            self.oom_kills(),
            "cgroup",
        )

    def remove(self) -> None:
        """Kill whatever is still in the group (a process may fork meanwhile: read again until
        empty), then remove its folders; a zombie does not keep a group."""
        for folder in self.folders:
            remove_group(folder)


def remove_group(folder: Path, patience: float = 5.0) -> None:
    """Remove a group and the groups inside it, killing what is left in them first (a process may
    fork meanwhile: again until empty); a zombie does not keep a group. Tried at once, since an
    ended attempt's group is empty and has no children; not ours to remove (EACCES): left alone."""
    deadline = time.monotonic() + patience
    while True:
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except PermissionError:
            return
        except OSError:
            pass
        if (folder / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write_text(folder / "cgroup.kill", "1")
        for pid in (int(p) for p in _read_text(folder / "cgroup.procs").split() if p.isdigit()):
            signal_quietly(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            for child in sorted((p for p in folder.iterdir() if p.is_dir()), reverse=True):
                remove_group(child, max(0.1, deadline - time.monotonic()))
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)


@dataclass
class ControlGroups:
    """This run's control groups: a folder per hierarchy, each attempt's group inside it."""

    version: int
    runs: dict[str, Path]  # controller (v2: "unified") -> this run's folder

    @classmethod
    def open(cls, run_id: str, limits: Limits) -> ControlGroups:
        """This run's folders, v2 where a subtree is delegated to us, else v1 as root; a usage
        error that says why and what to do when neither can be had (never a silent no-op)."""
        mounts = cgroup_mounts(_read_text(Path("/proc/self/mountinfo")))
        name = f"{run_id}-{os.getpid()}-{process_start(os.getpid())}"
        v2 = delegated_v2(mounts, limits)
        if v2 is not None:
            return cls(2, {"unified": make_v2_run(v2, name)})
        need = ["memory", "cpuacct"] + (["cpu"] if limits.cpus is not None else [])
        missing = [c for c in need if c not in mounts]
        if os.geteuid() == 0 and not missing:
            runs = {}
            for controller in need:
                folder = mounts[controller] / "run_batch" / name
                folder.mkdir(parents=True, exist_ok=True)
                runs[controller] = folder
            return cls(1, runs)
        why = (
            f"cgroup v1 has no {', '.join(missing)} controller mounted"
            if missing
            else "cgroup v1 needs root, and no cgroup v2 subtree with the memory and cpu controllers is delegated "
            "to you"
        )
        raise UsageError(
            f"--task-memory/--task-cpus need a control group per attempt, and {why}; run as root, or under "
            "`systemd-run --user --scope -p Delegate=yes run-batch ...`, or leave the limits out"
        )

    def attempt(self, session: str, limits: Limits) -> AttemptGroup:
        """A group for one attempt, its limits written before anything joins it."""
        group = AttemptGroup(self.version, {c: run / session for c, run in self.runs.items()})
        for folder in group.folders:
            folder.mkdir()
        dirs = group.dirs
        try:
            if self.version == 1:
                if limits.memory is not None:
                    _write_text(dirs["memory"] / "memory.limit_in_bytes", str(limits.memory))
                    with contextlib.suppress(OSError):  # only where swap accounting exists
                        _write_text(dirs["memory"] / "memory.memsw.limit_in_bytes", str(limits.memory))
                if limits.cpus is not None:
                    _write_text(dirs["cpu"] / "cpu.cfs_period_us", str(CGROUP_PERIOD_US))
                    _write_text(dirs["cpu"] / "cpu.cfs_quota_us", str(max(1000, int(limits.cpus * CGROUP_PERIOD_US))))
            else:
                folder = dirs["unified"]
                if limits.memory is not None:
                    _write_text(folder / "memory.max", str(limits.memory))
                    with contextlib.suppress(OSError):
                        _write_text(folder / "memory.swap.max", "0")
                    with contextlib.suppress(OSError):  # the whole attempt goes at once, as v1 cannot
                        _write_text(folder / "memory.oom.group", "1")
                if limits.cpus is not None:
                    _write_text(
                        folder / "cpu.max", f"{max(1000, int(limits.cpus * CGROUP_PERIOD_US))} {CGROUP_PERIOD_US}"
                    )
        except OSError:
            group.remove()
            raise
        return group

    def paths(self) -> list[str]:
        return [str(p) for p in dict.fromkeys(self.runs.values())]

    def close(self) -> None:
        for run in dict.fromkeys(self.runs.values()):
            remove_group(run)


def delegated_v2(mounts: dict[str, Path], limits: Limits) -> Path | None:
    """The cgroup2 folder delegated to this process, when it can hold attempt groups with the
    controllers the limits need (memory, cpu), else None."""
    unified = mounts.get("unified")
    path = own_cgroup(_read_text(Path("/proc/self/cgroup")), "")
    if unified is None or path is None:
        return None
    folder = unified / path.lstrip("/")
    wanted = {"memory"} | ({"cpu"} if limits.cpus is not None else set())
    offered = set(_read_text(folder / "cgroup.controllers").split())
    writable = all(os.access(p, os.W_OK) for p in (folder, folder / "cgroup.procs", folder / "cgroup.subtree_control"))
    return folder if wanted <= offered and writable else None


def make_v2_run(folder: Path, name: str) -> Path:
    """This run's v2 folder under the delegated one. A v2 group with processes cannot give its
    controllers to children: the runner moves itself into a leaf first."""
    leaf = folder / "run_batch-runner"
    leaf.mkdir(exist_ok=True)
    _write_text(leaf / "cgroup.procs", "0")
    controllers = " ".join(
        f"+{c}" for c in ("memory", "cpu", "pids") if c in _read_text(folder / "cgroup.controllers").split()
    )
    _write_text(folder / "cgroup.subtree_control", controllers)
    run = folder / f"run_batch-{name}"
    run.mkdir(exist_ok=True)
    _write_text(run / "cgroup.subtree_control", controllers)
    return run


def is_run_group(folder: Path, run_id: str) -> bool:
    """Whether a folder a lock file names is one of run_batch's control groups of run `run_id`."""
    mounts = cgroup_mounts(_read_text(Path("/proc/self/mountinfo"))).values()
    v1 = folder.parent.name == "run_batch" and folder.name.startswith(f"{run_id}-")
    v2 = folder.name.startswith(f"run_batch-{run_id}-")
    return (v1 or v2) and any(folder.is_relative_to(m) for m in mounts) and ".." not in folder.parts


def sweep_dead_cgroups() -> int:
    """Remove the v1 groups of runners that are gone (SIGKILLed, the machine rebooted into the same
    mounts), killing what is left in them; their folder names end in the runner's pid."""
    removed = 0
    for controller, mount in cgroup_mounts(_read_text(Path("/proc/self/mountinfo"))).items():
        if controller == "unified":
            continue
        try:
            runs = [p for p in (mount / "run_batch").iterdir() if p.is_dir()]
        except OSError:
            continue
        for run in runs:
            parts = run.name.split("-")  # <run id>-<runner pid>-<its start time>: a reused pid is no runner
            pid, start = (parts[1], parts[2]) if len(parts) == 3 else (parts[-1], "")
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            if not process_alive(int(pid)) or (start and str(process_start(int(pid))) != start):
                remove_group(run)
                removed += 1
    return removed


def process_start(pid: int) -> int:
    """A process's start time (clock ticks after boot, /proc/<pid>/stat field 22), 0 if unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])
    return 0


def sample_usage(pid: int) -> tuple[int, float]:
    """(resident bytes, CPU seconds) of a process and its descendants now, walking
    /proc/<pid>/task/<tid>/children: the estimate used when an attempt has no control group."""
    page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
    rss, cpu, todo, seen = 0, 0.0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            with open(f"/proc/{current}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            rss += int(fields[21]) * page
            cpu += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children", "rb") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError, IndexError):
            continue
    return rss, round(cpu, 3)


# ------------------------------------------------------------------------------------------------
# Room to start: the provider's rate limits, the machine's memory
# ------------------------------------------------------------------------------------------------


# A provider's "slow down", as OpenHands' logs and the SDK print it (LiteLLM's RateLimitError, HTTP
# 429), and the wait it asks for when it says one.
_RATE_LIMITED = re.compile(
    r"RateLimitError|\b429\b[^\n]{0,40}(Too Many Requests|rate)|rate[ _-]?limit(ed| reached| exceeded)", re.I
)


_RETRY_AFTER = re.compile(r"retry[-_ ]after[\"']?\s*[:=]?\s*[\"']?(\d{1,5}(?:\.\d+)?)", re.I)
_TRY_AGAIN_IN = re.compile(r"try again in (\d{1,5}(?:\.\d+)?)(ms|s)\b", re.I)  # OpenAI's text


RATE_RAISE_AFTER = 30.0  # seconds without a rate limit before one more task may run at once


RATE_FIRST_BACKOFF = 5.0  # seconds no task starts after a rate limit that says no Retry-After


RATE_MAX_BACKOFF = 300.0


def rate_limit_signal(text: str) -> tuple[bool, float | None]:
    """Whether new log text says the provider limited the rate, and the Retry-After it gave (pure).
    OpenHands 1.6's agent leaving its RATE_LIMITED state is the end of one, not a new one."""
    text = text.replace("from AgentState.RATE_LIMITED", "")
    if not _RATE_LIMITED.search(text):
        return False, None
    waits = [float(m.group(1)) for m in _RETRY_AFTER.finditer(text)]
    waits += [float(m.group(1)) / (1000 if m.group(2).lower() == "ms" else 1) for m in _TRY_AGAIN_IN.finditer(text)]
    return True, max(waits) if waits else None


@dataclass
class RateLimit:
    """Additive increase, multiplicative decrease of how many tasks run at once, driven by the
    provider's rate limits as the running attempts meet them: at a limit, half the slots and no
    start until the back-off (the provider's Retry-After, or 5 s doubling to 5 minutes while limits
    keep coming); then one slot more for each RATE_RAISE_AFTER seconds without one."""

    most: int  # --max-workers
    slots: int = 0
    resume_at: float = 0.0
    backoff: float = 0.0
    last_limited: float = -math.inf
    last_raise: float = 0.0
    events: int = 0
    waited: float = 0.0  # seconds starts spent waiting for it

    def __post_init__(self) -> None:
        self.slots = self.slots or self.most

    def limited(self, now: float, retry_after: float | None) -> None:
        self.events += 1
        if now >= self.resume_at:  # a new episode; limits met within the back-off are the same one
            self.slots = max(1, self.slots // 2)
            recent = now - self.last_limited < 2 * RATE_MAX_BACKOFF
            self.backoff = min(RATE_MAX_BACKOFF, self.backoff * 2 if recent and self.backoff else RATE_FIRST_BACKOFF)
        self.resume_at = max(self.resume_at, now + (retry_after if retry_after is not None else self.backoff))
        self.last_limited = self.last_raise = now

    def calm(self, now: float) -> None:
        if self.slots < self.most and now - max(self.last_limited, self.last_raise) >= RATE_RAISE_AFTER:
            self.slots += 1
            self.last_raise = now

    def allows(self, running: int, now: float) -> bool:
        return now >= self.resume_at and running < self.slots

    @property
    def limiting(self) -> bool:
        return self.slots < self.most or (self.events > 0 and time.monotonic() < self.resume_at)


def available_memory() -> int | None:
    """The machine's available memory in bytes (MemAvailable), or None where /proc cannot say."""
    for line in _read_text(Path("/proc/meminfo")).splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) > 1 and parts[1].isdigit() else None
    return None


# ================================================================================================
# Read the outcome (the parsing pure, every read of a file bounded, whatever a task printed or saved)
# ================================================================================================


CLI_END_STATES = ("FINISHED", "ERROR", "STUCK", "PAUSED")


_STATE = re.compile(r"Setting agent\(\w+\) state from AgentState\.(\w+) to AgentState\.(\w+)")


_REASONS = (
    re.compile(r"(Agent reached maximum iteration[^\n]*)"),
    re.compile(r"(Agent reached maximum budget[^\n]*)"),
    re.compile(r"(Agent got stuck in a loop)"),
    re.compile(r"(STATUS\$ERROR_[A-Z_]+)"),
)


_AGENT_ERROR = re.compile(r"Error while running the agent \(session ID: [^)]{0,200}\): (.*)")


_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b:?.*)$")


_LOG_PREFIX = re.compile(r"^\d\d:\d\d:\d\d - openhands:(\w+): \S+ - (.*)$")


# Cost and token lines, in every format OpenHands has printed (docs/openhands.md, "Cost and tokens").
# The gap is bounded: an unbounded `.*?` costs the square of a 64 KiB piece full of near-misses.
_NUMBER = r"(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"  # a price: never the full stop of the sentence it ends


_ACTION_METRICS = re.compile(
    rf"Action metrics - accumulated_cost: {_NUMBER},.{{0,400}}?accumulated tokens \(prompt/completion\): (\d+)/(\d+)"
)


_ACTION_LATEST = re.compile(r"latest tokens \(prompt/completion/cache_read/cache_write\): (\d+)/(\d+)/(\d+)/(\d+)")


_DEBUG_COST = re.compile(rf"Accumulated Cost: {_NUMBER} USD")


_DEBUG_TOKENS = re.compile(r"Input tokens: ([\d,]+)(?: \| Output tokens: ([\d,]+))?")


_BOX_COST = re.compile(r"Total Cost(?: \(USD\))?:\s*\$\s*(\d[\d,]*(?:\.\d+)?)")


_BOX_IN = re.compile(r"Total Input Tokens:\s*([\d,]+)")


_BOX_OUT = re.compile(r"Total Output Tokens:\s*([\d,]+)")


_BOX_CACHE_READ = re.compile(r"Cache Hits?:\s*([\d,]+)")


_BOX_CACHE_WRITE = re.compile(r"Cache Writes?:\s*([\d,]+)")


_METRICS_KEY = re.compile(rb'"llm_metrics"\s*:\s*')


_ROOT_ERROR = re.compile(r"^ERROR:root:<class '([\w.]+)'>: (.*)$")


def _int(text: str | None) -> int | None:
    return int(text.replace(",", "")) if text else None


def _price(text: str) -> float | None:
    """A money amount from a log line: finite, or unknown (1e999 is no price)."""
    with contextlib.suppress(ValueError):
        value = float(text.replace(",", ""))
        return value if math.isfinite(value) else None
    return None


class AgentLines:
    """What OpenHands says of the agent in every release's log: its state transitions, the reason
    it stopped (a limit, a loop, a STATUS$ERROR), and errors (the 'Error while running the agent'
    line, a traceback's exception, an openhands:ERROR line, 0.33's root-logger line)."""

    def __init__(self) -> None:
        self.facts = OutputFacts()
        self.after_traceback = False

    def feed(self, line: str) -> None:
        facts = self.facts
        # Cheap substring tests first: most lines are none of these.
        if "AgentState." in line and (m := _STATE.search(line)):
            facts.agent_state = agent_state_name(m.group(2)) or facts.agent_state
        if "Agent " in line or "STATUS$" in line:
            for pattern in _REASONS:
                if m := pattern.search(line):
                    facts.reason = m.group(1).strip()
        if "Error while running the agent" in line and (m := _AGENT_ERROR.search(line)):
            facts.last_exception = m.group(1).strip()
        if line.startswith("Traceback (most recent call last)"):
            self.after_traceback = True
        elif self.after_traceback and line and not line[0].isspace():
            if m := _EXCEPTION.match(line):
                facts.last_exception = m.group(1).strip()
            self.after_traceback = False
        if "openhands:ERROR" in line and (m := _LOG_PREFIX.match(line)):
            facts.last_error_line = m.group(2).strip()
        elif line.startswith("ERROR:root:<class '") and (m := _ROOT_ERROR.match(line)):  # 0.33
            facts.last_exception = f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}"


class ActionMetricsLines:
    """openhands-ai 1.x's `Action metrics - accumulated_cost: ..., accumulated tokens ...` INFO line:
    full precision, every LLM of the agent, accumulated (the last one is the total)."""

    def __init__(self) -> None:
        self.last: tuple[str, str, str] | None = None
        self.cache = [0, 0]

    def feed(self, line: str) -> None:
        if "accumulated tokens" in line and (m := _ACTION_METRICS.search(line)):
            self.last = (m.group(1), m.group(2), m.group(3))
            if latest := _ACTION_LATEST.search(line):
                self.cache[0] += int(latest.group(3))
                self.cache[1] += int(latest.group(4))

    def metrics(self) -> Metrics | None:
        if self.last is None:
            return None
        cost, tokens_in, tokens_out = self.last
        return Metrics(_price(cost), int(tokens_in), int(tokens_out), self.cache[0], self.cache[1], "output")


class SummaryBoxLines:
    """The end-of-run box (`Total Cost (USD): $...`, `Total Input Tokens: ...`, cache hits and
    writes) of the CLI entrypoints: totals, cost to the cent or better."""

    FIELDS = (("in", _BOX_IN), ("out", _BOX_OUT), ("cache_read", _BOX_CACHE_READ), ("cache_write", _BOX_CACHE_WRITE))

    def __init__(self) -> None:
        self.box: dict[str, float] = {}

    def feed(self, line: str) -> None:
        if "Cost" in line and (m := _BOX_COST.search(line)) and (price := _price(m.group(1))) is not None:
            self.box["cost"] = price
        if "Tokens" in line or "Cache" in line:
            for key, pattern in self.FIELDS:
                if m := pattern.search(line):
                    self.box[key] = _int(m.group(1)) or 0

    def metrics(self) -> Metrics | None:
        if not self.box:
            return None
        whole = {key: int(self.box[key]) if key in self.box else None for key, _ in self.FIELDS}
        return Metrics(
            self.box.get("cost"), whole["in"], whole["out"], whole["cache_read"], whole["cache_write"], "output"
        )


class DebugMetricsLines:
    """The DEBUG `Accumulated Cost: X USD` and per-call `Input tokens: N | Output tokens: M` lines
    of older releases: 2 decimals, the agent's LLM only; tokens per call, so summed."""

    def __init__(self) -> None:
        self.cost: str | None = None
        self.tokens_in = self.tokens_out = 0

    def feed(self, line: str) -> None:
        if "Cost" in line and (m := _DEBUG_COST.search(line)):
            self.cost = m.group(1)
        if "tokens" in line and (m := _DEBUG_TOKENS.search(line)):
            self.tokens_in += _int(m.group(1)) or 0
            self.tokens_out += _int(m.group(2)) or 0

    def metrics(self) -> Metrics | None:
        if self.cost is None:
            return None
        return Metrics(_price(self.cost), self.tokens_in or None, self.tokens_out or None, None, None, "output")


def scan_output(lines: Iterable[str]) -> OutputFacts:
    """Facts from OpenHands' log text, line by line so any size fits in memory (pure): what it says
    of the agent, and cost and tokens from whichever format it printed them in. Where several
    formats are there, the most exact wins: the action metrics line, then the summary box, then the
    debug lines (docs/openhands.md, "Cost and tokens")."""
    agent = AgentLines()
    formats = (ActionMetricsLines(), SummaryBoxLines(), DebugMetricsLines())
    for raw in lines:
        line = ANSI.sub("", raw.rstrip("\r\n")) if "\x1b" in raw else raw.rstrip("\r\n")
        agent.feed(line)
        for found in formats:
            found.feed(line)
    facts = agent.facts
    facts.metrics = next((m for m in (f.metrics() for f in formats) if m is not None), Metrics())
    return facts


def merge_facts(first: OutputFacts, second: OutputFacts) -> OutputFacts:
    """Each fact from the first source that has it: OpenHands logs its state on stderr, while a
    wrapper may print cost and tokens on stdout (pure)."""
    return OutputFacts(
        first.agent_state or second.agent_state,
        first.reason or second.reason,
        first.last_exception or second.last_exception,
        first.last_error_line or second.last_error_line,
        first.metrics if first.metrics.known else second.metrics,
    )


def metrics_from_llm_metrics(last: dict[str, Any] | None, source: str) -> Metrics:
    """Totals from one `llm_metrics` object: accumulated over the run, every LLM of the agent."""
    if not isinstance(last, dict):
        return Metrics()
    usage = last.get("accumulated_token_usage")
    usage = usage if isinstance(usage, dict) else {}

    def count(key: str) -> int | None:
        value = _number_or_none(usage.get(key))
        return None if value is None else int(value)

    return Metrics(
        _number_or_none(last.get("accumulated_cost")),
        count("prompt_tokens"),
        count("completion_tokens"),
        count("cache_read_tokens"),
        count("cache_write_tokens"),
        source,
    )


def metrics_from_events(events: Iterable[Any], source: str) -> Metrics:
    """Totals from the last event that carries llm_metrics (pure)."""
    last = None
    for event in events:
        if isinstance(event, dict) and isinstance(event.get("llm_metrics"), dict):
            last = event["llm_metrics"]
    return metrics_from_llm_metrics(last, source)


def agent_state_from_events(events: Iterable[Any]) -> str | None:
    """The last agent_state_changed observation's state, upper case like the log (pure)."""
    state = None
    for event in events:
        if isinstance(event, dict) and event.get("observation") == "agent_state_changed":
            extras = event.get("extras")
            state = agent_state_name(extras.get("agent_state") if isinstance(extras, dict) else None) or state
    return state


def agent_state_name(value: Any) -> str | None:
    """An agent state as the record keeps it: upper case, a short name or nothing. It comes from
    files a task wrote, so nothing else (a megabyte of text, a key) gets into the record (pure)."""
    return value.upper() if isinstance(value, str) and re.fullmatch(r"[A-Za-z_]{1,32}", value) else None


def _decode_json_at(f: Any, offset: int, limit: int) -> Any:
    """The JSON value starting at offset, reading more only while it is cut off, up to limit."""
    size = 1 << 16
    while True:
        f.seek(offset)
        data = f.read(size)
        try:
            return json.JSONDecoder().raw_decode(data.decode("utf-8", "replace"))[0]
        except ValueError:
            if len(data) < size or size >= limit:
                return None
            size *= 4


def last_llm_metrics(path: Path, window: int = 1 << 20, value_limit: int = 16 << 20) -> dict[str, Any] | None:
    """The last `llm_metrics` object in a trajectory or event file, found from the end: a 150 MB
    trajectory costs a few blocks, not 150 MB. In JSON text a key is an unescaped `"llm_metrics":`,
    which a message that merely mentions it (escaped quotes) never is."""
    try:
        f = open_regular(path)
    except OSError:
        return None
    with f:
        end = f.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - window)
            f.seek(start)
            block = f.read(end - start + 32)  # a little past `end`: a key across the border is seen
            for m in reversed(list(_METRICS_KEY.finditer(block))):
                value = _decode_json_at(f, start + m.end(), value_limit)
                if isinstance(value, dict):
                    return value
            end = start
    return None


def read_session_events(folders: Iterable[Path]) -> tuple[Metrics, str | None]:
    """Cost and the final agent state from a session's event files (they survive a kill), read
    from the newest back, and only as far back as needed; each file read bounded."""
    for folder in folders:
        try:
            names = [n for n in os.listdir(folder) if n.endswith(".json")]
        except OSError:
            continue
        names.sort(key=lambda n: (int(n[:-5]) if n[:-5].isdigit() else -1, n), reverse=True)
        metrics, state = Metrics(), None
        for name in names:
            event = read_json_file(folder / name)
            if event is None and not metrics.known:  # too big to read whole: find its metrics only
                metrics = metrics_from_llm_metrics(last_llm_metrics(folder / name), "events")
            if not metrics.known:
                metrics = metrics_from_events([event], "events")
            state = state or agent_state_from_events([event])
            if metrics.known and state:
                break
        return metrics, state
    return Metrics(), None


def read_lines(path: Path) -> Iterator[str]:
    """A log's lines, a long one in pieces of at most LINE_PIECE characters: a 200 MB line
    without a newline costs 64 KiB at a time."""
    try:
        with io.TextIOWrapper(open_regular(path), encoding="utf-8", errors="replace") as f:
            while piece := f.readline(LINE_PIECE):
                yield piece
    except OSError:
        return


def read_outcome(files: AttemptFiles, event_folders: list[Path]) -> Outcome:
    """What an attempt left behind, each fact from the best source there is: the final agent
    state from the log (else the session's events); cost and tokens from the trajectory, else
    the session's events (they survive a kill), else the log text."""
    facts = scan_output(read_lines(files.stderr_log))
    if not facts.agent_state or not facts.metrics.known:
        facts = merge_facts(facts, scan_output(read_lines(files.stdout_log)))  # LOG_JSON, a wrapper
    metrics = metrics_from_llm_metrics(last_llm_metrics(files.trajectory), "trajectory")
    agent_state = facts.agent_state
    if not metrics.known or agent_state is None:
        stored, stored_state = read_session_events(event_folders)
        metrics = metrics if metrics.known else stored
        agent_state = agent_state or stored_state
    return Outcome(agent_state, metrics if metrics.known else facts.metrics, facts)


def read_attempt_outcome(files: AttemptFiles, sources: Sources) -> Outcome:
    """What an attempt left, read where its entrypoint said: a V1 conversation, or core.main's
    logs, trajectory and session events."""
    if sources.conversations is not None:
        return read_cli_outcome(files, sources.conversations)
    return read_outcome(files, list(sources.event_folders))


def cli_metrics(state: dict[str, Any]) -> Metrics:
    """The V1 CLI's totals: base_state.json's stats, summed over its LLMs (agent, condenser) (pure)."""
    stats = state.get("stats")
    usage = stats.get("usage_to_metrics") if isinstance(stats, dict) else None
    if not isinstance(usage, dict) or not usage:
        return Metrics()
    totals: list[float] = [0.0, 0, 0, 0, 0]
    for metrics in usage.values():
        if not isinstance(metrics, dict):
            continue
        tokens = metrics.get("accumulated_token_usage")
        tokens = tokens if isinstance(tokens, dict) else {}
        values = [
            metrics.get("accumulated_cost"),
            *(tokens.get(k) for k in ("prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_write_tokens")),
        ]
        for i, value in enumerate(values):
            totals[i] += _number_or_none(value) or 0
    return Metrics(round(totals[0], 10), int(totals[1]), int(totals[2]), int(totals[3]), int(totals[4]), "state")


def cli_last_error(events: Path) -> str | None:
    """`<code>: <detail>` of the conversation's last ConversationErrorEvent, read from the newest back."""
    try:
        names = sorted((n for n in os.listdir(events) if n.startswith("event-")), reverse=True)
    except OSError:
        return None
    for name in names[:200]:
        event = read_json_file(events / name)
        if isinstance(event, dict) and event.get("kind") == "ConversationErrorEvent":
            return f"{event.get('code')}: {event.get('detail')}"
    return None


def write_cli_trajectory(events: Path, target: Path) -> bool:
    """The conversation's events, in order, as one JSON list: the same kind of file the older
    generation leaves. Streamed one event at a time."""
    try:
        names = sorted(n for n in os.listdir(events) if n.startswith("event-") and n.endswith(".json"))
    except OSError:
        return False
    if not names:
        return False
    with open_new(target, exclusive=False) as out:
        out.write(b"[")
        for i, name in enumerate(names):
            out.write(b",\n" if i else b"\n")
            try:
                with open_regular(events / name) as f:
                    first = f.read(1 << 16)
                    out.write(first if first.strip() else b"null")
                    shutil.copyfileobj(f, out, 1 << 20)  # a big event costs a chunk at a time
            except OSError:
                out.write(b"null")
        out.write(b"\n]\n")
    return True


def last_message(path: Path) -> str | None:
    """OpenHands' own last words in a log (why it did not run): the lines before its
    `Conversation ID:` line, without colour codes or rich's terminal banner."""
    lines = [line.strip() for line in ANSI.sub("", tail(path, 2000)).splitlines()]
    if any(line.startswith("Conversation ID") for line in lines):
        lines = lines[: next(i for i, line in enumerate(lines) if line.startswith("Conversation ID"))]
    said = [line for line in lines if line and not line.startswith(("Hint:", "Rich detected"))]
    return " ".join(said[-2:]) if said else None


def read_cli_outcome(files: AttemptFiles, conversations: Path) -> Outcome:
    """What a V1 CLI attempt left: its conversation's base_state.json (end state and money) and
    events (the error), written into the trajectory file. No conversation at all: OpenHands did not
    run the agent (no settings, say), in its own words from its output."""
    facts = merge_facts(scan_output(read_lines(files.stderr_log)), scan_output(read_lines(files.stdout_log)))
    try:
        folders = sorted(d for d in conversations.iterdir() if d.is_dir())
    except OSError:
        folders = []
    if not folders:
        said = last_message(files.stdout_log) or last_message(files.stderr_log) or "no output"
        return Outcome(None, Metrics(), facts, problem=f"OpenHands wrote no conversation: {said}")
    folder = folders[-1]
    state = read_json_file(folder / "base_state.json", limit=64 << 20)
    state = state if isinstance(state, dict) else {}
    agent_state = agent_state_name(state.get("execution_status"))
    metrics = cli_metrics(state)
    if agent_state not in CLI_END_STATES and not metrics.total_cost:
        metrics = Metrics()  # saved before its calls were counted (killed): unknown, not 0
    if agent_state == "STUCK":
        facts.reason = "agent got stuck (execution_status stuck)"
    elif agent_state != "FINISHED":
        facts.reason = cli_last_error(folder / "events") or facts.reason
    write_cli_trajectory(folder / "events", files.trajectory)
    return Outcome(agent_state, metrics, facts, session_id=folder.name)


def classify(launch: Launch, agent_state: str | None, problem: str | None = None) -> str:
    """The attempt's status (pure). Exit 0 is not success when the agent ended in ERROR."""
    if launch.error is not None or (problem and not launch.interrupted and not launch.timed_out):
        return "error"
    # The runner only ever sends SIGINT and SIGKILL: an OpenHands that died of SIGTERM was stopped
    # from outside (a scheduler's time limit, scancel, a kubelet), not by the task.
    if launch.interrupted or launch.return_code == -signal.SIGTERM:
        return "interrupted"
    if launch.halted:  # the runner stopped it: no progress, over its budget, or out of memory
        return {"stalled": "stalled", "oom": "error"}.get(launch.halted, "failed")
    if launch.timed_out:
        return "timeout"
    if launch.return_code != 0:
        return "failed"
    if agent_state is None or agent_state == "FINISHED":
        return "success"
    return "failed"


def explain(status: str, launch: Launch, facts: OutputFacts, agent_state: str | None, stopped_by: str) -> str | None:
    """One short line saying why the attempt did not succeed (pure)."""
    if status == "success":
        return None
    if launch.error:
        return one_line(launch.error)
    if status == "timeout":
        return f"timed out after {launch.timeout:g}s" if launch.timeout else "timed out"
    if launch.halted and launch.halt_reason:
        return one_line(launch.halt_reason)
    if status == "interrupted":
        if launch.interrupted:
            return (
                stopped_by if stopped_by.startswith(("batch budget", "run budget")) else f"runner stopped: {stopped_by}"
            )
        return "killed by SIGTERM from outside the runner (a scheduler's time limit or scancel?)"
    detail = facts.reason
    if detail and detail.startswith("STATUS$") and facts.last_exception:
        detail = f"{detail}: {facts.last_exception}"
    detail = detail or facts.last_exception or facts.last_error_line
    if agent_state and agent_state != "FINISHED" and not detail:
        detail = f"agent ended in {agent_state}"
    if launch.return_code not in (0, None):
        code = launch.return_code
        how = (
            f"killed by {signal.Signals(-code).name}"
            if code < 0 and -code in signal.valid_signals()
            else f"exit code {code}"
        )
        return one_line(f"{how}: {detail}" if detail else how)
    return one_line(detail or "no final agent state")


def is_retryable(status: str, launch: Launch, facts: OutputFacts, agent_state: str | None) -> bool:
    """Infrastructure failures are worth another attempt; agent outcomes are not (pure)."""
    if status == "error":  # could not start, or out of memory; an empty prompt stays empty
        return launch.error is not None or launch.halted == "oom"
    if status == "stalled":
        return True  # a hung LLM call or tool: worth another try
    if status != "failed" or launch.halted:
        return False
    if launch.return_code not in (0, None) and agent_state in (None, "LOADING"):
        return True  # OpenHands or its runtime failed before the agent ran
    reason = facts.reason or ""
    if reason in ("STATUS$ERROR_LLM_INTERNAL_SERVER_ERROR", "STATUS$ERROR_LLM_SERVICE_UNAVAILABLE"):
        return True
    text = facts.last_exception or ""
    return any(k in text for k in ("RateLimitError", "APIConnectionError", "ServiceUnavailable", "Timeout"))


def keep_private(path: Path) -> None:
    """A file the task wrote in the output folder made 0600 (less the umask) when it is wider: an
    agent may write it anew, with its own mode, and it may hold what nobody knew was a secret."""
    with contextlib.suppress(OSError):
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077 and info.st_uid == os.getuid():
            os.chmod(path, 0o600 & ~UMASK)


def redact_file(path: Path, secrets: tuple[str, ...], chunk: int = 1 << 20) -> bool:
    """Replace secrets in a file the task wrote (OpenHands or the agent may print a key).
    Streams in chunks, so a big log costs no memory; rewrites only when a secret is there."""
    if not secrets or not path.is_file() or path.is_symlink():
        return False
    needles = [s.encode("utf-8", "surrogateescape") for s in secrets]
    overlap = max(len(n) for n in needles) - 1
    found = False
    with open_regular(path) as f:
        carry = b""
        while block := f.read(chunk):
            window = carry + block
            if any(n in window for n in needles):
                found = True
                break
            carry = window[-overlap:] if overlap else b""
    if not found:
        return False
    tmp = path.with_name(f".{path.name}.redacting")
    with open_regular(path) as src, open_new(tmp, exclusive=False) as dst:
        data = src.read(chunk)
        carry = b""
        while data or carry:
            window = carry + data
            for n in needles:
                window = window.replace(n, b"****")
            keep = min(overlap, len(window)) if data else 0
            dst.write(window[: len(window) - keep])
            carry = window[len(window) - keep :]
            data = src.read(chunk) if data else b""
    os.replace(tmp, path)
    return True


# ================================================================================================
# Follow running attempts: live spend and steps, stalls, budgets (read only what is new)
# ================================================================================================


def describe_event(event: dict[str, Any]) -> str:
    """A few words for an event of either generation (pure)."""
    what = event.get("action") or event.get("observation") or event.get("kind") or "event"
    extra = event.get("tool_name") or (event.get("args") or {}).get("command") if isinstance(event, dict) else None
    text = f"{what} {extra}" if isinstance(extra, str) and extra else str(what)
    return one_line(text, 1000)  # cut to its display length only once masked (write_status)


class EventFollower:
    """Follows `<file_store>/sessions/<sid>/events/<n>.json` (openhands.core.main): the files are
    numbered from 0, so each look probes the next numbers only and never lists or re-reads the
    session. A file still being written (not yet valid JSON) is read again at the next look."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self.next = 0

    def poll(self) -> Progress:
        progress = Progress()
        for folder in self.folders:
            while True:
                path = folder / f"{self.next}.json"
                if not path.exists():
                    break
                event = read_json_file(path)
                if event is None:
                    if path.stat().st_size <= 1 << 20:
                        break  # half written: next time
                    event = {"llm_metrics": last_llm_metrics(path)}
                self.next += 1
                progress.events += 1
                if isinstance(event, dict):
                    if event.get("action"):
                        progress.steps += 1
                    metrics = metrics_from_events([event], "live")
                    if metrics.known:
                        progress.metrics = metrics
                    progress.last_event = describe_event(event)
            if self.next:
                break  # this formula's folder is the one
        return progress


class ConversationFollower:
    """Follows a V1 CLI conversation: new `events/event-*.json` files (their names sort in order),
    and base_state.json's totals when the file changed (the CLI saves it when its status changes)."""

    def __init__(self, conversations: Path) -> None:
        self.conversations = conversations
        self.seen = ""
        self.state_mtime = 0.0

    def poll(self) -> Progress:
        progress = Progress()
        try:
            folder = next(d for d in self.conversations.iterdir() if d.is_dir())
        except (OSError, StopIteration):
            return progress
        try:
            names = sorted(n for n in os.listdir(folder / "events") if n.startswith("event-") and n > self.seen)
        except OSError:
            names = []
        for name in names:
            event = read_json_file(folder / "events" / name)
            if event is None:
                break
            self.seen = name
            progress.events += 1
            if isinstance(event, dict):
                progress.steps += event.get("kind") == "ActionEvent"
                progress.last_event = describe_event(event)
        with contextlib.suppress(OSError):
            mtime = (folder / "base_state.json").stat().st_mtime
            if mtime != self.state_mtime:
                self.state_mtime = mtime
                state = read_json_file(folder / "base_state.json", limit=64 << 20)
                metrics = cli_metrics(state) if isinstance(state, dict) else Metrics()
                if metrics.total_cost:
                    progress.metrics = dataclasses.replace(metrics, source="live")
        return progress


def follower_for(sources: Sources) -> Follower:
    """How a running attempt is followed: its conversation, or its session's event files."""
    if sources.conversations is not None:
        return ConversationFollower(sources.conversations)
    return EventFollower(list(sources.event_folders))


@dataclass
class LiveAttempt:
    """A running attempt as the runner sees it: spend and steps so far, and when it last moved."""

    task: str
    session: str
    files: AttemptFiles
    follower: Follower
    halt: Halt
    budget: float | None = None  # --max-budget-per-task (or the task's front matter), held by the runner
    group: AttemptGroup | None = None  # its control group, when it has limits
    limits: Limits = field(default_factory=Limits)
    pid: int | None = None  # OpenHands' process, once started
    peak_rss: int = 0  # sampled, without a group
    cpu_seconds: float | None = None
    log_offsets: dict[Path, int] = field(default_factory=dict)  # how far the logs were read
    rate_limits: list[float | None] = field(default_factory=list)  # limits met since the monitor looked (Retry-After)
    lacks: list[str] = field(default_factory=list)  # what the SDK driver said its release lacks
    started: float = field(default_factory=time.monotonic)
    started_at: str = field(default_factory=utc_now)
    metrics: Metrics = field(default_factory=Metrics)
    steps: int = 0
    last_progress: float = field(default_factory=time.monotonic)
    last_progress_at: str = field(default_factory=utc_now)
    last_event: str | None = None
    output_size: int = 0

    @property
    def cost(self) -> float:
        return self.metrics.total_cost or 0.0

    def started_as(self, pid: int) -> None:
        self.pid = pid

    def sample(self) -> None:
        """Without a control group: the attempt's processes' memory and CPU now (an estimate)."""
        if self.group is None and self.pid is not None:
            rss, cpu = sample_usage(self.pid)
            if rss:
                self.peak_rss, self.cpu_seconds = max(self.peak_rss, rss), cpu

    def usage(self) -> Usage:
        """What it used, from its group (exact) or from the samples (an estimate)."""
        if self.group is not None:
            return self.group.usage()
        return Usage(self.peak_rss or None, self.cpu_seconds, 0, "sampled" if self.peak_rss else None)

    def look(self, now: float) -> None:
        """One look: new events, new output; a stall clock that any of them resets."""
        progress = self.follower.poll()
        if progress.metrics is not None:
            self.metrics = progress.metrics
        self.steps += progress.steps
        self.last_event = progress.last_event or self.last_event
        size = 0
        for path in (self.files.stdout_log, self.files.stderr_log):
            with contextlib.suppress(OSError):
                grown = path.stat().st_size
                size += grown
                self.read_new_output(path, grown)
        if progress.events or size != self.output_size:
            self.output_size = size
            self.last_progress, self.last_progress_at = now, utc_now()

    def read_new_output(self, path: Path, size: int) -> None:
        """What a log gained since the last look (its last MiB at most), searched for the provider's
        rate limits, which the batch slows down for while the attempt goes on."""
        start = self.log_offsets.get(path, 0)
        if size <= start:
            return
        start = max(start, size - (1 << 20))
        with open_regular(path) as f:
            f.seek(start)
            text = f.read(size - start).decode("utf-8", "replace")
        self.log_offsets[path] = size
        limited, retry_after = rate_limit_signal(text)
        if limited:
            self.rate_limits.append(retry_after)
        if DRIVER_LACKS in text:
            said = (line for line in text.splitlines() if line.startswith(DRIVER_LACKS))
            self.lacks += [line.removeprefix(DRIVER_LACKS) for line in said]


def oom_reason(limits: Limits, usage: Usage) -> str:
    limit = format_bytes(limits.memory) if limits.memory else UNKNOWN
    peak = format_bytes(usage.peak_memory) if usage.peak_memory else UNKNOWN
    return f"out of memory: limit {limit}, peak {peak} (the kernel killed {plural(usage.oom_kills, 'process')} of it)"


def check_attempt(live: LiveAttempt, now: float, stall_timeout: float | None, task_budget: float | None) -> None:
    """Stop an attempt that has not moved for stall_timeout, has spent its budget, or had a process
    killed at its memory limit (cgroup v1 kills one process, which the agent may outlive broken)."""
    if live.group is not None and (kills := live.group.oom_kills()):
        live.halt.request("oom", oom_reason(live.limits, dataclasses.replace(live.group.usage(), oom_kills=kills)))
    if stall_timeout is not None and now - live.last_progress >= stall_timeout:
        live.halt.request("stalled", f"no progress for {stall_timeout:g}s; last event: {live.last_event or 'none'}")
    if task_budget is not None and live.cost > task_budget:
        live.halt.request(
            "task-budget", f"spent ${live.cost:.4f}, over --max-budget-per-task {task_budget:g} (stopped by run_batch)"
        )


class ShardSpend:
    """What every results file in the output folder has recorded, kept current by reading only
    the lines appended since the last look (shards on other machines write their own files)."""

    def __init__(self, output_dir: Path, records: list[AttemptRecord]) -> None:
        self.output_dir = output_dir
        self.offsets: dict[Path, int] = {}
        self.spent = 0.0
        for path in self._paths():  # what is there now was read at start: skip it
            with contextlib.suppress(OSError):
                self.offsets[path] = path.stat().st_size
        self.spent = sum(r.total_cost or 0.0 for r in records)

    def _paths(self) -> list[Path]:
        try:
            return [p for p in self.output_dir.glob("*.jsonl") if p.is_file() and p.name != EVALUATIONS_FILE]
        except OSError:
            return []

    def refresh(self, own: Path) -> float:
        """The folder's recorded spend: what was there at start plus what the other results files
        have recorded since (only their new lines are read; ours is counted as we write it)."""
        for path in self._paths():
            if path == own:
                continue
            start = self.offsets.get(path, 0)
            try:
                with open_regular(path) as f:
                    f.seek(start)
                    data = f.read(16 << 20)
            except OSError:
                continue
            complete = data[: data.rfind(b"\n") + 1]
            self.offsets[path] = start + len(complete)
            for line in complete.splitlines():
                with contextlib.suppress(ValueError, RecursionError):
                    data = loads_json(line)
                    if written_by_run_batch(data):  # another tool's spend is not this folder's budget
                        self.spent += AttemptRecord.from_json(data).total_cost or 0.0
        return self.spent


# ================================================================================================
# Evaluate: did the agent do the task? (a command of the user's, after each attempt)
# ================================================================================================


def evaluator_argv(words: tuple[str, ...], values: dict[str, str]) -> list[str]:
    """The evaluator's argv with the placeholders filled in, each word on its own (pure): a task
    name with spaces or quotes stays one argument."""
    return [word.format(**values) for word in words]


def verdict_of(
    exit_code: int | None, last_line: str, timed_out: bool, timeout: float, start_error: str | None
) -> tuple[str, float | None, dict[str, Any] | None, str | None]:
    """(verdict, score, details, reason) from how the evaluator ended (pure): exit 0 passed, 1
    failed, anything else error; a JSON object on its last line adds score and details."""
    if start_error:
        return "error", None, None, start_error
    if timed_out:
        return "error", None, None, f"timed out after {timeout:g}s"
    score: float | None = None
    details: dict[str, Any] | None = None
    with contextlib.suppress(ValueError, RecursionError):
        # Leniently (1e999, NaN), then made strict: an odd number in the details must not cost
        # the score, nor make the record one that no reader takes.
        found = clean_json(json.loads(last_line))
        if isinstance(found, dict):
            score = _number_or_none(found.get("score"))
            details = found.get("details") if isinstance(found.get("details"), dict) else None
    if exit_code == 0:
        return "passed", score, details, None
    if exit_code == 1:
        return "failed", score, details, None
    if exit_code is not None and exit_code < 0:
        return "error", score, details, f"the evaluator was killed by signal {-exit_code}"
    return "error", score, details, f"the evaluator ended with exit code {exit_code}"


@dataclass(frozen=True)
class CommandRun:
    """One run of a user's command beside an attempt (the evaluator, --before-attempt): its argv,
    folder, environment, log, time limit, and the marker its processes carry."""

    argv: list[str]
    cwd: Path
    environ: dict[str, str]
    log_path: Path
    timeout: float
    marker: Marker


def run_evaluator(run: CommandRun, secrets: tuple[str, ...], stop: StopSignal | None = None) -> Evaluation:
    """Run the evaluator like a task: its own session, its stdout and stderr in their logs
    (secrets masked; the score is on stdout's last line, whatever it says on stderr), its timeout,
    every process it leaves killed (the same marker sweep), and stopped at once when the batch is
    stopped (Ctrl-C, SIGTERM)."""
    argv, cwd, environ, log_path, timeout, marker = (
        run.argv,
        run.cwd,
        run.environ,
        run.log_path,
        run.timeout,
        run.marker,
    )
    t0 = time.monotonic()
    env = {**environ, **marker.environment(), "PYTHONUNBUFFERED": "1"}
    timed_out, code, start_error = False, None, None
    stderr_path = log_path.with_name(log_path.name.removesuffix(".log") + ".stderr.log")
    try:
        with open_new(log_path) as log, open_new(stderr_path) as err:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=err,
                start_new_session=True,
            )
    except OSError as exc:
        start_error = f"could not start the evaluator {argv[0]}: {exc.strerror or exc}"
    else:
        deadline = time.monotonic() + timeout
        stopped = False
        try:
            while code is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                if stop is not None and stop.stopping:
                    stopped = True
                    break
                code = wait_for_exit(proc, min(left, 0.5))
        finally:
            kill_everything(proc, marker)
        if stopped:
            start_error = f"stopped with the batch ({stop.reason if stop else ''})"
    for path in (log_path, stderr_path):
        redact_file(path, secrets)
    verdict, score, details, reason = verdict_of(code, last_line_of(log_path), timed_out, timeout, start_error)
    if verdict == "error" and reason and not start_error and not timed_out:
        # The grader's own last words say why (a missing package, a crash), where the exit code cannot.
        said = last_line_of(stderr_path)
        reason = mask(one_line(f"{said} ({reason})", REASON_CHARS), secrets) if said else reason
    elapsed = round(time.monotonic() - t0, 3)
    return Evaluation(verdict, score, details, code, elapsed, str(log_path), reason, str(stderr_path))


def evaluation_values(record: AttemptRecord, output_dir: Path) -> dict[str, str]:
    """What --evaluate's placeholders stand for, for one attempt (pure)."""
    return {
        "task": record.task_name,
        "prompt": record.prompt_file,
        "output_dir": str(output_dir),
        "trajectory": record.trajectory_path or "",
        "workspace": record.workspace or "",
        "status": record.status,
        "attempt": str(record.attempt),
        "sample": str(record.sample),
        "session": record.session_name,
        "log": record.stdout_log or "",
        "stderr_log": record.stderr_log or "",
        "experiment": record.experiment_id or "",
    }


def attempt_values(attempt: Attempt, output_dir: Path) -> dict[str, str]:
    """What the placeholders of --before-attempt and of a prompt stand for, before the attempt runs."""
    files = attempt.files
    return {
        "task": attempt.task.name,
        "prompt": str(attempt.task.prompt_path),
        "output_dir": str(output_dir),
        "workspace": str(attempt.workspace or ""),
        "attempt": str(attempt.number),
        "sample": str(attempt.sample),
        "session": attempt.session,
        "log": str(files.stdout_log) if files else "",
        "stderr_log": str(files.stderr_log) if files else "",
        "experiment": attempt.experiment.id,
    }


PROMPT_PLACEHOLDERS = ("task", "workspace", "output_dir", "attempt", "sample", "session", "experiment")


_PROMPT_PLACEHOLDER = re.compile(
    r"\{\{(" + "|".join(PROMPT_PLACEHOLDERS) + r")\}\}|\{(" + "|".join(PROMPT_PLACEHOLDERS) + r")\}"
)


def fill_prompt(text: str, values: dict[str, str]) -> str:
    """A prompt with --prompt-placeholders: each `{name}` of PROMPT_PLACEHOLDERS filled in, `{{name}}`
    left as `{name}`, every other brace untouched (pure)."""
    return _PROMPT_PLACEHOLDER.sub(lambda m: "{" + m.group(1) + "}" if m.group(1) else values[m.group(2)], text)


def prompt_uses(text: str, name: str) -> bool:
    return any(m.group(2) == name for m in _PROMPT_PLACEHOLDER.finditer(text))


def write_attempt_prompt(attempt: Attempt, settings: Settings) -> Path | None:
    """The prompt file this attempt's OpenHands reads, when it is not the task's own: without its
    front matter, and filled in with --prompt-placeholders; kept as logs/<stem>.prompt.md."""
    if not (attempt.task.body_offset or settings.prompt_placeholders):
        return None
    text = prompt_text(attempt.task)
    if settings.prompt_placeholders:
        text = fill_prompt(text, attempt_values(attempt, settings.output_dir))
    path = attempt.evidence.stdout_log.with_name(f"{attempt.evidence.stem}.prompt.md")
    with open_new(path, exclusive=False) as f:
        f.write(text.encode("utf-8"))
    return path


def task_variables(task: Task | None) -> dict[str, str]:
    """A task's front-matter `vars`, as the evaluator and the hook see them: RUN_BATCH_VAR_<NAME>."""
    return {f"RUN_BATCH_VAR_{name.upper()}": value for name, value in task.settings.vars} if task else {}


@dataclass(frozen=True)
class Grading:
    """Who grades and how: the run's id (the graders' markers and log names), the secrets to mask,
    the stop signal, a task's front-matter variables."""

    run_id: str
    secrets: tuple[str, ...]
    stop: StopSignal | None = None
    variables: dict[str, str] = field(default_factory=dict)


def grade(grader: Grader, record: AttemptRecord, grading: Grading) -> Evaluation | None:
    """Run --evaluate on one attempt, its logs in this output folder's logs/: `<stem>.eval.log` (or,
    when that name is taken by an earlier grading, `<stem>.eval.<run id>.log`). None when the batch
    was stopped while it graded: not graded (the next run of the same command grades it)."""
    # Always in this output folder's logs/: a record read from a copied results file names the
    # original run's folder, which is not this run's to write into.
    logs = grader.output_dir / "logs"
    logs.mkdir(exist_ok=True)
    stem = Path(record.stdout_log or record.session_name or "attempt").name.removesuffix(".stdout.log")
    log_path = logs / f"{stem}.eval.log"
    if os.path.lexists(log_path) or os.path.lexists(logs / f"{stem}.eval.stderr.log"):
        log_path = logs / f"{stem}.eval.{grading.run_id}.log"
    run = CommandRun(
        evaluator_argv(grader.words, evaluation_values(record, grader.output_dir)),
        grader.cwd,
        {**os.environ, **grading.variables},
        log_path,
        grader.timeout,
        Marker(grading.run_id, f"{record.session_name or record.task_name}-eval"),
    )
    evaluation = run_evaluator(run, grading.secrets, grading.stop)
    return None if evaluation.reason and evaluation.reason.startswith("stopped with the batch") else evaluation


def append_verdict(output_dir: Path, entry: dict[str, Any]) -> None:
    """One line of evaluations.jsonl, appended under a lock held for that line only: a run grading
    what is left and an --evaluate-only run may share the file."""
    fd = open_for_writing(output_dir / EVALUATIONS_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        end = os.lseek(fd, 0, os.SEEK_END)
        data = (dumps_json(entry) + "\n").encode()
        if end and os.pread(fd, 1, end - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)  # and the lock with it


@dataclass(frozen=True)
class Verdicts:
    """The latest verdict of every evaluated attempt: a record's own, or a later one from
    evaluations.jsonl (--evaluate-only never rewrites a record)."""

    by_attempt: dict[tuple[str, str], tuple[Evaluation, str | None]]  # (task, session) -> (verdict, command)

    def of(self, record: AttemptRecord) -> Evaluation | None:
        found = self.by_attempt.get((record.task_name, record.session_name))
        return found[0] if found else record.evaluation

    def command_of(self, record: AttemptRecord) -> str | None:
        found = self.by_attempt.get((record.task_name, record.session_name))
        return found[1] if found else record.evaluate_command


def read_verdicts(output_dir: Path) -> Verdicts:
    """evaluations.jsonl, later lines winning; a bad line is skipped."""
    found: dict[tuple[str, str], tuple[Evaluation, str | None]] = {}
    with contextlib.suppress(OSError), open_regular(output_dir / EVALUATIONS_FILE) as f:
        while line := f.readline(1 << 20):
            with contextlib.suppress(ValueError, RecursionError):
                data = loads_json(line)
                evaluation = Evaluation.from_json(data.get("evaluation")) if isinstance(data, dict) else None
                if evaluation and isinstance(data.get("task_name"), str) and isinstance(data.get("session_name"), str):
                    command = data.get("evaluate_command")
                    found[(data["task_name"], data["session_name"])] = (
                        evaluation,
                        command if isinstance(command, str) else None,
                    )
    return Verdicts(found)


def apply_verdicts(records: list[AttemptRecord], verdicts: Verdicts) -> list[AttemptRecord]:
    """Each record with the latest verdict on its attempt (pure)."""
    out = []
    for r in records:
        found = verdicts.by_attempt.get((r.task_name, r.session_name))
        out.append(dataclasses.replace(r, evaluation=found[0], evaluate_command=found[1]) if found else r)
    return out


# ================================================================================================
# Record: the results file, its records, and the attempt's files
# ================================================================================================


@dataclass(frozen=True)
class Evidence:
    """What an attempt left on disk that goes into its record, secrets already masked."""

    stdout: str
    stderr: str
    trajectory_saved: bool


@dataclass(frozen=True)
class Ended:
    """Everything about an attempt that ran, once it has ended: what happened to its process, what
    it left (read and on disk), where its files are and what ran."""

    launch: Launch
    outcome: Outcome
    evidence: Evidence
    files: AttemptFiles
    argv: list[str]


def build_record(
    blank: AttemptRecord, ended: Ended, stopped_by: str, secrets: tuple[str, ...]
) -> tuple[AttemptRecord, bool]:
    """The record of an attempt that was launched, and whether it is worth another try (pure).
    Texts are masked before they are cut to one line: a cut could leave most of a key unmasked."""
    launch, outcome, evidence, files, argv = ended.launch, ended.outcome, ended.evidence, ended.files, ended.argv

    def hide(text: str | None) -> str | None:
        return mask(text, secrets) if text else text

    facts = dataclasses.replace(
        outcome.facts,
        reason=hide(outcome.facts.reason),
        last_exception=hide(outcome.facts.last_exception),
        last_error_line=hide(outcome.facts.last_error_line),
    )
    launch = dataclasses.replace(launch, error=hide(launch.error), halt_reason=hide(launch.halt_reason))
    state = outcome.agent_state
    if state and any(secret.upper() in state for secret in secrets):
        state = None  # a key, upper-cased, in an event file's agent_state
    status = classify(launch, state, outcome.problem)
    why = explain(status, launch, facts, state, stopped_by)
    if status == "error" and outcome.problem and not launch.error:
        why = one_line(hide(outcome.problem) or "")
    m = outcome.metrics
    record = dataclasses.replace(
        blank,
        status=status,
        return_code=launch.return_code,
        elapsed_time_seconds=round(launch.elapsed, 3),
        stdout=evidence.stdout,
        stderr=evidence.stderr,
        total_cost=m.total_cost,
        total_input_tokens=m.total_input_tokens,
        total_output_tokens=m.total_output_tokens,
        cache_read_tokens=m.cache_read_tokens,
        cache_write_tokens=m.cache_write_tokens,
        metrics_source=m.source if m.known else None,
        agent_state=state,
        error=mask(why, secrets) if why else None,
        trajectory_path=str(files.trajectory) if evidence.trajectory_saved else None,
        started_at=launch.started_at,
        finished_at=launch.finished_at,
        stdout_log=str(files.stdout_log),
        stderr_log=str(files.stderr_log),
        command=[mask(a, secrets) for a in argv],
        session_id=outcome.session_id or blank.session_id,
    )
    retryable = not stopped_by and is_retryable(status, launch, facts, state)
    return record, retryable


def claim_attempt_files(output_dir: Path, attempt: Attempt) -> AttemptFiles:
    """Fresh file names for one attempt: `<stem>.json` and `<stem>.stdout.log` for a first attempt,
    `<stem>.attempt-N...` after. A name some file already has (another results file's record, a
    run in the same folder, a planted link) is never reused: each file is created here,
    exclusively, and a taken name moves on to `<stem>.attempt-N.<run id>`. A name whose workspace
    or conversations folder is already there (left by hand, or by a run that died) is taken too:
    those folders are named after the files, and the files' owner alone creates them."""
    numbered = "" if attempt.number == 1 else f".attempt-{attempt.number}"
    run_id = attempt.run_id
    for extra in ("", f".{run_id}", *(f".{run_id}-{k}" for k in range(2, 50))):
        stem = f"{attempt.task.stem}{numbered}{extra}"
        if any(os.path.lexists(output_dir / folder / stem) for folder in ("workspaces", "conversations")):
            continue
        files = AttemptFiles.named(output_dir, stem)
        created: list[Path] = []
        try:
            for path in (files.stdout_log, files.stderr_log, files.trajectory):
                os.close(open_for_writing(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
                created.append(path)
        except BaseException as exc:
            for path in created:  # no empty files left for a claim that failed (a full disk)
                with contextlib.suppress(OSError):
                    path.unlink()
            if isinstance(exc, FileExistsError):
                continue
            raise
        return files
    raise OSError(17, "every file name for this attempt is taken", str(output_dir / "logs" / attempt.task.stem))


def trajectory_saved(path: Path) -> bool:
    """The trajectory was written; the empty file that claimed its name is removed if not."""
    try:
        if path.stat().st_size > 0:
            return True
        path.unlink()
    except OSError:
        pass
    return False


def make_workspace(output_dir: Path, files: AttemptFiles, template: Path | None) -> Path:
    """The attempt's own workspace, `workspaces/<stem of its files>` (fresh: never a failed
    attempt's). From a template: a git repository is cloned sharing its objects (the agent's edits
    never reach the template), anything else copied with reflinks where the file system can
    (never hard links: an edit in place would change the template and every other copy)."""
    workspace = output_dir / "workspaces" / files.trajectory.stem
    workspace.parent.mkdir(exist_ok=True)
    if template is None:
        workspace.mkdir()
        return workspace
    if (template / ".git").exists():
        argv = ["git", "clone", "--quiet", "--shared", "--no-hardlinks", str(template), str(workspace)]
    else:
        workspace.mkdir()
        # Everything in the template but the output folder, when it lies inside (a copy of itself);
        # real paths, since either may be named through a link (a home folder on a cluster).
        real_output, real_template = output_dir.resolve(), template.resolve()
        inside = real_output.is_relative_to(real_template)
        entries = [
            template / e
            for e in sorted(os.listdir(template))
            if not (inside and real_output.is_relative_to((real_template / e).resolve()))
        ]
        argv = ["cp", "-a", "--reflink=auto", *map(str, entries), str(workspace)] if entries else ["true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OSError(f"could not make the workspace from {template}: {exc}") from None
    if done.returncode != 0:
        raise OSError(f"could not make the workspace from {template}: {one_line(done.stderr or done.stdout, 200)}")
    if argv[0] == "git":  # no way back into the template: an agent's `git push` has no remote to reach
        subprocess.run(
            ["git", "-C", str(workspace), "remote", "remove", "origin"],
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    return workspace


def template_warnings(template: Path | None, output_dir: Path) -> list[str]:
    """What a user should know about a git template: workspaces are clones of its committed HEAD,
    so changes not committed there are not in them (the output folder, when inside, aside)."""
    if template is None or not (template / ".git").exists():
        return []
    real_output, real_template = output_dir.resolve(), template.resolve()
    inside = real_output.is_relative_to(real_template)
    aside = [f":(exclude){real_output.relative_to(real_template)}"] if inside else []
    try:
        done = subprocess.run(
            ["git", "-C", str(template), "status", "--porcelain", "--untracked-files=normal", "--", ".", *aside],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    changed = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not changed:
        return []
    return [
        f"--workspace-template {template}: {plural(len(changed), 'file')} changed or untracked there are not in "
        "the workspaces, which are clones of its last commit; commit them first to include them"
    ]


class ResultsFile:
    """The append-only JSONL results file, with one writer at a time.

    A lock file beside it (flock: the OS drops it when its holder dies, however it dies) keeps
    a second run off the same results file; its content says which run holds it and what that
    run must clean up if it dies.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(f".{path.name}.lock")
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._mutex = threading.Lock()  # held while a line is written
        # Group commit: lines are numbered as written; one fsync covers every line written before
        # it began, so records that end together share one, and each append still returns only
        # once its own line is on disk.
        self._synced = threading.Condition()
        self._written = 0  # lines written
        self._durable = 0  # lines on disk
        self._syncing = False
        self._unsynced: dict[int, int] = {}  # line number -> its offset, until it is on disk

    def acquire(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """Take the lock; returns what a dead earlier run left in it (None if it ended cleanly)."""
        try:
            fd = open_for_writing(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UsageError(
                f"lock file {self.lock_path}: cannot open it ({exc.strerror}); remove it if it is a link or not a file"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_json_fd(fd)
            os.close(fd)
            who = f"pid {other.get('pid')} on {other.get('host')}" if other else "another run"
            raise UsageError(
                f"{self.path} is being written by {who}; wait for it, or use another --output-dir or --results-name"
            ) from None
        previous = _read_json_fd(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(state).encode(), 0)
        os.fsync(fd)
        self._lock_fd = fd
        return previous if previous and not previous.get("finished") else None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
                os.pwrite(self._lock_fd, json.dumps({"finished": True}).encode(), 0)
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def append(self, record: AttemptRecord) -> None:
        self.append_json(record.as_json())

    def append_json(self, value: dict[str, Any]) -> None:
        """Append one line, on disk (fsync) before this returns: the price of never losing a
        finished task. A write that fails part way (a full disk) is cut back off, so the file
        never keeps half a record of ours; a failed fsync cuts back every line it was to cover
        (each of their appends raises)."""
        data = (dumps_json(value) + "\n").encode()
        with self._mutex:
            if self._fd is None:
                self._fd = self._open()
            start = os.lseek(self._fd, 0, os.SEEK_END)
            if start and os.pread(self._fd, 1, start - 1) != b"\n":
                # Someone else's half line (a grader appending to our file, a run killed mid-write):
                # ours starts on a line of its own, or it would be glued to it and lost.
                os.write(self._fd, b"\n")
                start += 1
            try:
                written = 0
                while written < len(data):
                    written += os.write(self._fd, data[written:])
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
                raise
            self._written += 1
            number, fd = self._written, self._fd
            self._unsynced[number] = start
        self._wait_durable(number, fd)

    def _wait_durable(self, number: int, fd: int) -> None:
        """Return once line `number` is on disk: fsync it (and whatever was written before it)
        unless an fsync already under way or just done covers it."""
        with self._synced:
            while self._durable < number:
                if number not in self._unsynced:  # cut back off after a failed fsync
                    raise OSError(errno.EIO, "the results file could not be synced; the record was cut back off")
                if self._syncing:
                    self._synced.wait()
                    continue
                self._syncing = True
                with self._mutex:
                    covered = self._written
                self._synced.release()
                try:
                    os.fsync(fd)
                    failure = None
                except OSError as exc:
                    failure = exc
                finally:
                    self._synced.acquire()
                    self._syncing = False
                if failure is None:
                    self._durable = max(self._durable, covered)
                    for n in [n for n in self._unsynced if n <= covered]:
                        del self._unsynced[n]
                else:
                    with self._mutex:  # every line not on disk goes, and each of their appends raises
                        with contextlib.suppress(OSError):
                            os.ftruncate(fd, min(self._unsynced.values()))
                        self._unsynced.clear()
                self._synced.notify_all()
                if failure is not None:
                    raise failure

    def _open(self) -> int:
        return open_for_writing(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)


def _read_json_fd(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 65536, 0)
        value = loads_json(data) if data.strip() else None
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_records(path: Path) -> tuple[list[AttemptRecord], list[str]]:
    """Every valid record of a results file, and one warning for the lines that are not records
    (a torn last line, a hand-edited or foreign line): they are kept as they are and ignored."""
    records: list[AttemptRecord] = []
    bad: list[tuple[int, str]] = []
    try:
        f = open_regular(path)
    except (FileNotFoundError, NotADirectoryError):  # nothing recorded yet (or no folder: said later)
        return [], []
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # a FIFO or device named *.jsonl: never read (it would hang)
            return [], [f"{printable(path.name)}: not a regular file; ignored"]
        raise UsageError(f"results file {path}: cannot read it ({exc.strerror})") from None
    with f:
        number = 0
        while line := f.readline(1 << 20):
            number += 1
            if not line.endswith(b"\n") and len(line) == 1 << 20:  # a line over 1 MiB: skip the rest
                while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass
                bad.append((number, "a line over 1 MiB"))
                continue
            if not line.strip():
                continue
            try:
                data = loads_json(line)
                if not written_by_run_batch(data):
                    bad.append((number, "written by another tool (no run_batch mark, not the fields of its records)"))
                    continue
                records.append(AttemptRecord.from_json(data))
            except (ValueError, RecursionError) as exc:
                if isinstance(exc, json.JSONDecodeError):
                    why = "a run died while writing it?" if not line.endswith(b"\n") else "not valid JSON"
                    bad.append((number, f"not a complete record ({why})"))
                else:
                    bad.append((number, f"not a run_batch record ({exc})"))
    if not bad:
        return records, []
    reasons = Counter(why for _, why in bad)
    said = "; ".join(f"{why}{f' ({n} lines)' if n > 1 else ''}" for why, n in reasons.most_common(3))
    where = f"{printable(path.name)}: {line_ranges([n for n, _ in bad])}"
    return records, [f"{where}: {said}; kept as they are and ignored"]


def line_ranges(numbers: list[int], most: int = 40) -> str:
    """`line 3`, `lines 1-4, 9`: every line named once, runs shortened to ranges (pure)."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:most])
    if len(runs) > most:
        text += f" and {sum(b - a + 1 for a, b in runs[most:])} more"
    return f"line {text}" if len(numbers) == 1 else f"lines {text}"


# The folders of an output folder whose files a record names by absolute path.
OWN_FOLDERS = ("logs", "trajectories", "workspaces")


def relocated(record: AttemptRecord, output_dir: Path) -> AttemptRecord:
    """A record read from an output folder that has been moved or copied (say, rsynced from a
    cluster): the files the runner wrote into its own folders, named where they are now, so the
    report shows and links them and --evaluate-only grades them there. A path that is inside the
    folder already, or whose file is not in the folder, is kept as recorded."""
    here = output_dir.resolve()

    def moved(path: str | None) -> str | None:
        if not path or Path(path).is_relative_to(here):
            return path
        recorded = Path(path)
        candidate = here / recorded.parent.name / recorded.name
        if recorded.parent.name in OWN_FOLDERS and os.path.lexists(candidate):
            return str(candidate)
        return path

    now = dataclasses.replace(
        record,
        stdout_log=moved(record.stdout_log),
        stderr_log=moved(record.stderr_log),
        trajectory_path=moved(record.trajectory_path),
        workspace=moved(record.workspace),
    )
    return record if now == record else now


def read_folder_records(output_dir: Path, skip: Path | None = None) -> tuple[list[AttemptRecord], list[str]]:
    """The records of every results file (*.jsonl) in an output folder, file by file (sorted by
    name) in file order, with the paths of a moved or copied folder's files where they are now
    (`relocated`)."""
    records: list[AttemptRecord] = []
    warnings: list[str] = []
    try:
        paths = sorted(output_dir.glob("*.jsonl"))
    except OSError:
        return [], []
    for path in paths:
        if path == skip or path.name == EVALUATIONS_FILE or path.is_dir():
            continue
        found, said = read_records(path)
        records += (relocated(r, output_dir) for r in found)
        warnings += said
    return records, warnings


# ================================================================================================
# Report: statistics, experiments, the console views, the runner's log, summary.json, --report, --dry-run
# ================================================================================================


# ------------------------------------------------------------------------------------------------
# Statistics: pass@k, intervals, paired tests (pure; formulas and sources in docs/statistics.md)
# ------------------------------------------------------------------------------------------------


Z95 = 1.959963984540054  # the standard normal's 97.5th percentile: two-sided 95 %


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that at least one of k samples drawn without replacement from n, c of which
    passed, passes: 1 - C(n-c, k) / C(n, k), the unbiased estimator of Chen et al. 2021."""
    if not (1 <= k <= n and 0 <= c <= n):  # c < 0 included
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n (n={n}, c={c}, k={k})")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k: the chance that all of k samples drawn from n pass, C(c, k) / C(n, k) (Yao et al.
    2024): how reliably the agent does the task, where pass@k is whether it can."""
    if not (1 <= k <= n and 0 <= c <= n):
        raise ValueError(f"pass^k needs 1 <= k <= n and 0 <= c <= n (n={n}, c={c}, k={k})")
    return math.comb(c, k) / math.comb(n, k)


def wilson_interval(passes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion: honest at 0 and n passes and for few tasks, where
    the textbook p ± z·sqrt(p(1-p)/n) collapses to a point. No tasks: (0, 1)."""
    if n <= 0:
        return 0.0, 1.0
    p = passes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Exact McNemar test, two-sided: of the b + c tasks whose outcome differs between two runs, is
    the split b : c more lopsided than a fair coin makes likely? min(1, 2 P(X <= min(b, c))),
    X ~ Binomial(b + c, 1/2). Exact integers: no overflow at any size."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, float(2 * tail / 2**n))


def _resampled_means(values: list[float], resamples: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    n = len(values)
    return sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def bootstrap_interval(
    values: list[float], resamples: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over tasks (tasks resampled with replacement);
    the fixed seed gives the same interval for the same records."""
    if not values:
        return 0.0, 1.0
    means = _resampled_means(values, resamples, seed)
    return _percentile(means, (1 - level) / 2), _percentile(means, 1 - (1 - level) / 2)


def paired_bootstrap(
    diffs: list[float], resamples: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(low, high, p) for the mean of per-task differences between two runs: a percentile
    interval, and a two-sided p-value, min(1, 2 min(P(mean* <= 0), P(mean* >= 0)))."""
    if not diffs:
        return 0.0, 0.0, 1.0
    means = _resampled_means(diffs, resamples, seed)
    below = sum(m <= 0 for m in means) / len(means)
    above = sum(m >= 0 for m in means) / len(means)
    low, high = _percentile(means, (1 - level) / 2), _percentile(means, 1 - (1 - level) / 2)
    return low, high, min(1.0, 2 * min(below, above))


# ------------------------------------------------------------------------------------------------
# An experiment's results: totals, scores, measures
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    """Counts and totals over the latest attempt of each task."""

    tasks: int
    counts: dict[str, int]
    total_cost: float
    tasks_with_cost: int
    mean_cost: float | None
    total_input_tokens: int
    total_output_tokens: int
    mean_input_tokens: float | None
    mean_output_tokens: float | None
    task_time_seconds: float
    evaluation: PassRates | None = None  # pass rates, when any task was evaluated
    samples: int = 0  # the (task, sample) pairs counted; tasks × samples per task


def summarise(records: list[AttemptRecord]) -> Totals:
    """Totals over records, unknown costs and tokens left out of the means (pure)."""
    counts = dict.fromkeys(STATUSES, 0) | Counter(r.status for r in records)
    costs = [r.total_cost for r in records if r.total_cost is not None]
    with_tokens = [r for r in records if r.total_input_tokens is not None]
    tokens_in = sum(r.total_input_tokens or 0 for r in records)
    tokens_out = sum(r.total_output_tokens or 0 for r in records)
    return Totals(
        tasks=len({r.task_name for r in records}),
        counts=counts,
        total_cost=round(sum(costs), 6),
        tasks_with_cost=len(costs),
        mean_cost=round(sum(costs) / len(costs), 6) if costs else None,
        total_input_tokens=tokens_in,
        total_output_tokens=tokens_out,
        mean_input_tokens=round(tokens_in / len(with_tokens), 1) if with_tokens else None,
        mean_output_tokens=round(tokens_out / len(with_tokens), 1) if with_tokens else None,
        task_time_seconds=round(sum(r.elapsed_time_seconds for r in records), 3),
        evaluation=pass_rates(records),
        samples=len(records),
    )


@dataclass(frozen=True)
class PassRates:
    """The verdicts over the latest attempts: passed of evaluated, passed of all, the mean score."""

    evaluated: int
    passed: int
    failed: int
    error: int
    pass_rate_evaluated: float
    pass_rate_selected: float | None
    mean_score: float | None


def pass_rates(latest: list[AttemptRecord]) -> PassRates | None:
    """passed / evaluated, passed / selected, mean score (pure); None when nothing was evaluated."""
    graded = [r.evaluation for r in latest if r.evaluation is not None]
    if not graded:
        return None
    passed = sum(v.verdict == "passed" for v in graded)
    scores = [v.score for v in graded if v.score is not None]
    return PassRates(
        evaluated=len(graded),
        passed=passed,
        failed=sum(v.verdict == "failed" for v in graded),
        error=sum(v.verdict == "error" for v in graded),
        pass_rate_evaluated=round(passed / len(graded), 4),
        pass_rate_selected=round(passed / len(latest), 4) if latest else None,
        mean_score=round(sum(scores) / len(scores), 4) if scores else None,
    )


def pass_rate_line(rates: PassRates | None, sampled: bool = False) -> str | None:
    """The verdicts in a line; `sampled`: the counts are of samples (several per task), not tasks."""
    if not rates:
        return None
    mean = "" if rates.mean_score is None else f", mean score {rates.mean_score:g}"
    return (
        f"Evaluation: {rates.passed} passed of {rates.evaluated} evaluated "
        f"({rates.pass_rate_evaluated:.0%}; {rates.pass_rate_selected or 0:.0%} of the selected "
        f"{'samples' if sampled else 'tasks'}), "
        f"{rates.failed} failed, {rates.error} error{mean}."
    )


@dataclass(frozen=True)
class Measure:
    """A named measure the evaluator reports in `details` (GitTaskBench's process and result): a
    rate for true/false values over every sample (one without it counts as false: not graded, or
    the grader failed), a mean for numbers over the samples that have it."""

    name: str
    kind: str  # rate | mean
    value: float
    count: int  # samples with the measure
    of: int  # samples in all
    true: int = 0  # for a rate

    def describe(self) -> str:
        if self.kind == "rate":
            return f"{self.name} {self.true}/{self.of} ({self.value:.0%})"
        return f"{self.name} mean {self.value:.4g} (over {self.count})"


def measures(latest: list[AttemptRecord]) -> list[Measure]:
    """Each name under the evaluator's `details` whose values are all true/false (a rate) or all
    numbers (a mean), in the order first seen (pure)."""
    values: dict[str, list[Any]] = {}
    for r in latest:
        details = r.evaluation.details if r.evaluation and r.evaluation.details else {}
        for name, value in details.items():
            if isinstance(value, (bool, int, float)) and not (isinstance(value, float) and not math.isfinite(value)):
                values.setdefault(str(name), []).append(value)
    found = []
    for name, seen in values.items():
        if all(isinstance(v, bool) for v in seen):
            true = sum(seen)
            found.append(Measure(name, "rate", true / len(latest) if latest else 0.0, len(seen), len(latest), true))
        elif not any(isinstance(v, bool) for v in seen):
            found.append(Measure(name, "mean", sum(seen) / len(seen), len(seen), len(latest)))
    return found


def measures_line(found: list[Measure]) -> str | None:
    return "Measures: " + ", ".join(m.describe() for m in found) + "." if found else None


@dataclass(frozen=True)
class TaskScore:
    """One task's samples: how many ran (their latest attempts), how many passed."""

    task: str
    samples: int
    passes: int
    errors: int  # samples whose latest attempt is an `error` (counted as not passed)

    @property
    def rate(self) -> float:
        return self.passes / self.samples if self.samples else 0.0

    @property
    def flaky(self) -> bool:
        return 0 < self.passes < self.samples


@dataclass(frozen=True)
class Scores:
    """pass@1 with its 95 % interval, pass@k and pass^k for each k, over the tasks of one
    experiment (docs/statistics.md)."""

    by_task: list[TaskScore]
    graded: bool  # a pass is a `passed` verdict; else a `success` status
    pass_rate: float  # pass@1: the mean over tasks of each task's share of passing samples
    interval: tuple[float, float]
    method: str
    pass_at: dict[int, tuple[float, int]]  # k -> (mean over the tasks with at least k samples, those tasks)
    pass_hat: dict[int, tuple[float, int]]

    @property
    def flaky(self) -> list[str]:
        return [t.task for t in self.by_task if t.flaky]

    @property
    def samples(self) -> int:
        return max((t.samples for t in self.by_task), default=0)

    def as_json(self) -> dict[str, Any]:
        return {
            "tasks": len(self.by_task),
            "samples_per_task": self.samples,
            "samples_run": sum(t.samples for t in self.by_task),
            "passes": sum(t.passes for t in self.by_task),
            "pass_is": "verdict passed" if self.graded else "status success",
            "pass_at_1": round(self.pass_rate, 6),
            "interval_95": [round(self.interval[0], 6), round(self.interval[1], 6)],
            "interval_method": self.method,
            "pass_at_k": {str(k): {"value": round(v, 6), "tasks": n} for k, (v, n) in self.pass_at.items()},
            "pass_hat_k": {str(k): {"value": round(v, 6), "tasks": n} for k, (v, n) in self.pass_hat.items()},
            "flaky": self.flaky,
            "errors_counted_as_not_passed": sum(t.errors for t in self.by_task),
            "by_task": [
                {"task": t.task, "samples": t.samples, "passes": t.passes, "pass_at_1": round(t.rate, 6)}
                for t in self.by_task
            ],
        }


def sample_passed(record: AttemptRecord, graded: bool) -> bool:
    """A sample passes on a `passed` verdict (with an evaluator), else on status `success` (pure)."""
    return record.verdict == "passed" if graded else record.status == "success"


def score(latest: list[AttemptRecord]) -> Scores:
    """The scores of each (task, sample)'s latest attempt (pure). With one sample per task the
    interval is Wilson's over tasks; with several, a bootstrap over tasks (Wilson over every sample
    when all tasks score alike, where a bootstrap has nothing to resample)."""
    graded = any(r.evaluation is not None for r in latest)
    by_name: dict[str, list[AttemptRecord]] = {}
    for r in latest:
        by_name.setdefault(r.task_name, []).append(r)
    by_task = [
        TaskScore(
            name,
            len(rs),
            sum(sample_passed(r, graded) for r in rs),
            sum(r.status == "error" for r in rs),
        )
        for name, rs in sorted(by_name.items())
    ]
    rates = [t.rate for t in by_task]
    rate = sum(rates) / len(rates) if rates else 0.0
    if all(t.samples == 1 for t in by_task):
        interval, method = wilson_interval(sum(t.passes for t in by_task), len(by_task)), "Wilson score, over tasks"
    elif len(set(rates)) > 1:
        interval, method = bootstrap_interval(rates), "percentile bootstrap over tasks (10,000 resamples, seed 0)"
    else:
        passes, n = sum(t.passes for t in by_task), sum(t.samples for t in by_task)
        interval, method = wilson_interval(passes, n), "Wilson score over every sample (all tasks scored alike)"
    top = max((t.samples for t in by_task), default=0)
    pass_at, pass_hat = {}, {}
    for k in range(1, top + 1):
        counted = [t for t in by_task if t.samples >= k]
        pass_at[k] = (sum(pass_at_k(t.samples, t.passes, k) for t in counted) / len(counted), len(counted))
        pass_hat[k] = (sum(pass_hat_k(t.samples, t.passes, k) for t in counted) / len(counted), len(counted))
    return Scores(by_task, graded, rate, interval, method, pass_at, pass_hat)


def scores_line(scores: Scores) -> str | None:
    """One line for the console: pass@1 and its interval; with samples, pass@k, pass^k, flaky."""
    if not scores.by_task:
        return None
    what = "passed (verdicts)" if scores.graded else "succeeded"
    low, high = scores.interval
    line = (
        f"Pass rate {scores.pass_rate:.1%} [95% {low:.1%}-{high:.1%}, {scores.method}] over "
        f"{plural(len(scores.by_task), 'task')}: a sample counts when it {what}"
    )
    if scores.samples > 1:
        k = scores.samples
        line += (
            f"; pass@{k} {scores.pass_at[k][0]:.1%}, pass^{k} {scores.pass_hat[k][0]:.1%}"
            f" (tasks with {k} samples: {scores.pass_at[k][1]}); flaky: {len(scores.flaky)}"
        )
    return line + "."


@dataclass(frozen=True)
class ExperimentResults:
    """One experiment's results in an output folder, whichever run or shard wrote them: its
    attempts, each (task, sample)'s latest, and the totals, scores and measures over those."""

    experiment: Experiment | None  # None: records of run_batch 0.3/0.4, which carry no identity
    records: list[AttemptRecord]  # every attempt, verdicts applied, in file order
    latest: list[AttemptRecord]  # each (task, sample)'s latest attempt, by task then sample
    totals: Totals
    scores: Scores
    measures: list[Measure]

    @property
    def id(self) -> str | None:
        return self.experiment.id if self.experiment else None

    def heading(self) -> str:
        if self.experiment is None:
            return "Records of run_batch 0.3/0.4 (no experiment identity)" if self.records else "No records"
        return f"Experiment {self.experiment.describe()}"

    def as_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment.as_json() if self.experiment else None,
            "totals": dataclasses.asdict(self.totals),
            "scores": self.scores.as_json(),
            "measures": [dataclasses.asdict(m) for m in self.measures],
            "runs": sorted({r.run_id for r in self.records if r.run_id}),
        }


def experiment_results(records: list[AttemptRecord], experiment: Experiment | None) -> ExperimentResults:
    """Totals, scores and measures over each (task, sample)'s latest attempt (pure)."""
    latest = sorted(latest_by_sample(records).values(), key=lambda r: (r.task_name, r.sample))
    return ExperimentResults(experiment, records, latest, summarise(latest), score(latest), measures(latest))


def split_experiments(records: list[AttemptRecord], current: Experiment | None = None) -> list[ExperimentResults]:
    """A folder's records, experiment by experiment, in the order each first appears; never summed
    into one (pure)."""
    known: dict[str, Experiment] = {}
    for r in records:  # the latest record's: its evaluator is the one whose verdicts are newest
        if r.experiment_id and r.experiment:
            known[r.experiment_id] = r.experiment
    if current is not None:
        known[current.id] = current
    owner = legacy_owner(list(known.values()), current)
    groups: dict[str | None, list[AttemptRecord]] = {}
    for r in records:
        groups.setdefault(r.experiment_id or owner, []).append(r)
    return [experiment_results(rs, known.get(key) if key else None) for key, rs in groups.items()]


def shards_of(names: list[str]) -> list[str]:
    """`K/N` of each shard's results file name (batch_results.shard-K-of-N.jsonl) (pure)."""
    found = [re.fullmatch(r"batch_results\.shard-(\d+)-of-(\d+)\.jsonl", n) for n in names]
    return [f"{m.group(1)}/{m.group(2)}" for m in found if m]


def results_file_names(output_dir: Path) -> list[str]:
    try:
        return sorted(p.name for p in output_dir.glob("*.jsonl") if p.name != EVALUATIONS_FILE and p.is_file())
    except OSError:
        return []


def write_summary_json(
    output_dir: Path,
    mine: ExperimentResults,
    others: list[ExperimentResults],
    this_run: dict[str, Any],
    secrets: tuple[str, ...] = (),
) -> Path:
    """summary.json: one experiment over the whole folder (every run and shard that recorded it):
    the latest attempt of each (task, sample), its totals, scores and measures, which runs and
    results files it covers; the folder's other experiments in brief."""
    files = results_file_names(output_dir)
    data = {
        "generated_at": utc_now(),
        "experiment": mine.experiment.as_json() if mine.experiment else None,
        "totals": {**dataclasses.asdict(mine.totals), **this_run},
        "scores": mine.scores.as_json(),
        "measures": [dataclasses.asdict(m) for m in mine.measures],
        "covers": {
            "runs": sorted({r.run_id for r in mine.records if r.run_id}),
            "results_files": files,
            "shards": shards_of(files),
        },
        "tasks": [r.as_json() for r in mine.latest],
        "other_experiments": [g.as_json() for g in others],
    }
    return write_json_atomically(output_dir / "summary.json", data, secrets)


# ------------------------------------------------------------------------------------------------
# The console, the log, the status files, --report's text
# ------------------------------------------------------------------------------------------------


def finished_line(record: AttemptRecord, done: int, total: int, last: bool = True) -> str:
    where = f"[{done}/{total}]" if last else "[retrying]"
    line = (
        f"{where} {record.status:<11} {printable(record.task_name)}  {record.elapsed_time_seconds:.1f}s  "
        f"{format_money(record.total_cost)}  {format_count(record.total_input_tokens)}/"
        f"{format_count(record.total_output_tokens)} tokens"
    )
    if record.evaluation is not None:
        score = "" if record.evaluation.score is None else f" {record.evaluation.score:g}"
        line += f"  verdict {record.verdict}{score}"
        if record.evaluation.reason and record.verdict != "passed":
            line += f" ({one_line(record.evaluation.reason, 160)})"
    if record.sample > 1:
        line += f"  (sample {record.sample})"
    if record.attempt > 1:
        line += f"  (attempt {record.attempt})"
    if record.error:
        line += f"  - {record.error[:160]}"
    return line


def totals_line(totals: Totals) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in totals.counts.items() if n)
    rates = totals.evaluation
    passed = "" if not rates else f"; {rates.passed}/{rates.evaluated} evaluated passed"
    samples = f", {plural(totals.samples, 'sample')}" if totals.samples > totals.tasks else ""
    return (
        f"{plural(totals.tasks, 'task')}{samples}: {counts or 'none'}; cost ${totals.total_cost:.4f} "
        f"(known for {totals.tasks_with_cost}), tokens {totals.total_input_tokens} in / "
        f"{totals.total_output_tokens} out, task time {format_duration(totals.task_time_seconds)}{passed}"
    )


REPORT_HEAD = ("task", "status", "state", "secs", "cost $", "in tok", "out tok", "peak mem", "cpu s", "verdict", "why")


def report_head(latest: list[AttemptRecord]) -> tuple[str, ...]:
    """The table's columns: a `sample` column once any task has several (pure)."""
    return ("task", "sample", *REPORT_HEAD[1:]) if any(r.sample > 1 for r in latest) else REPORT_HEAD


def report_rows(latest: list[AttemptRecord]) -> list[tuple[str, ...]]:
    with_sample = any(r.sample > 1 for r in latest)
    return [
        (
            printable(r.task_name),
            *([str(r.sample)] if with_sample else []),
            r.status,
            one_line(r.agent_state or UNKNOWN, 32),
            f"{r.elapsed_time_seconds:.1f}",
            UNKNOWN if r.total_cost is None else f"{r.total_cost:.4f}",
            format_count(r.total_input_tokens),
            format_count(r.total_output_tokens),
            format_bytes(r.peak_memory_bytes) if r.peak_memory_bytes else UNKNOWN,
            UNKNOWN if r.cpu_seconds is None else f"{r.cpu_seconds:.1f}",
            r.verdict or "-",
            one_line(why_not(r), 160),  # a record read back is data from outside
        )
        for r in latest
    ]


def table_lines(latest: list[AttemptRecord]) -> list[str]:
    """The report table as aligned lines, header first (pure)."""
    rows, head = report_rows(latest), report_head(latest)
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(head)]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *rows]]


def experiment_lines(results: ExperimentResults) -> list[str]:
    """Below a table: the totals, the verdicts, the measures, the scores, what made them (pure)."""
    return [
        results.heading(),
        totals_line(results.totals),
        *filter(
            None,
            [
                pass_rate_line(results.totals.evaluation, results.totals.samples > results.totals.tasks),
                measures_line(results.measures),
                scores_line(results.scores),
            ],
        ),
    ]


def render_summary(results: ExperimentResults, fmt: str) -> str:
    """--report text of one experiment: json, markdown or an aligned table (pure)."""
    latest = results.latest
    if fmt == "json":
        tasks = [{**r.as_json(), "why": why_not(r) or None} for r in latest]
        return dumps_json({**results.as_json(), "tasks": tasks}, indent=2)
    if fmt == "markdown":
        head = report_head(latest)
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in report_rows(latest)]
        return "\n".join([*lines, "", *experiment_lines(results)])
    return "\n".join([*table_lines(latest), "", *experiment_lines(results)])


STATUS_STYLE = {
    "success": "green",
    "failed": "red",
    "timeout": "yellow",
    "stalled": "yellow",
    "error": "magenta",
    "interrupted": "cyan",
}


def print_report_table(results: ExperimentResults) -> None:
    """On a terminal, rich colours each row by status (and honours NO_COLOR); into a pipe or a
    file, plain text. One styled Text: rich's Table takes ~0.1 s for 250 rows."""
    plain = render_summary(results, "table")
    if not sys.stdout.isatty():
        print(plain)
        return
    try:
        from rich.console import Console
        from rich.text import Text
    except ImportError:
        print(plain)
        return
    lines = table_lines(results.latest)
    text = Text(lines[0] + "\n", style="bold")
    for line, record in zip(lines[1:], results.latest, strict=True):
        text.append(line + "\n", style=STATUS_STYLE.get(record.status))
    text.append("\n" + "\n".join(experiment_lines(results)))
    Console(highlight=False).print(text, soft_wrap=True)


def console_lost() -> None:
    """The console's reader is gone (`| head`): later output goes nowhere instead of failing."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class PlainView:
    """The console when it is not a terminal (cron, CI, a pipe): one plain line per finished
    task, written whole (threads never interleave within a line), no control characters.
    --quiet leaves only the final summary. A closed pipe tells on_lost once."""

    shows_progress = False  # the live view shows progress itself; a plain console gets heartbeats

    def __init__(self, quiet: bool, on_lost: Callable[[], None] = lambda: None) -> None:
        self.quiet = quiet
        self.on_lost = on_lost
        self._lock = threading.Lock()
        self._lost = False

    def started(self, name: str, session: str) -> None:
        pass

    def ended(self, session: str) -> None:
        pass

    def finished(self, record: AttemptRecord, line: str, last: bool) -> None:
        self.line(line)

    def progress(self, running: dict[str, tuple[float | None, int]]) -> None:
        """Spend (None: unknown so far) and steps of each running attempt (by session); the live
        view shows them."""

    def status(self, text: str | None) -> None:
        """Why fewer tasks run than could (rate limited, waiting for memory); the live view shows it,
        the heartbeat says it."""

    def line(self, text: str, err: bool = False) -> None:
        if not self.quiet:
            self.write(text, err)

    def write(self, text: str, err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout
        with self._lock:
            if self._lost and not err:
                return
            try:
                stream.write(text + "\n")
                stream.flush()
            except BrokenPipeError:
                if err:
                    return
                self._lost = True
                console_lost()
                lost = True
            else:
                lost = False
        if lost:
            self.on_lost()

    def close(self) -> None:
        pass


class LiveView(PlainView):
    """On a terminal: finished tasks scroll above a live panel with done/total, counts per
    status, the running tasks and their elapsed time, cost so far and an ETA (rich)."""

    shows_progress = True

    def __init__(self, total: int, workers: int, on_lost: Callable[[], None], unit: str = "task") -> None:
        super().__init__(quiet=False, on_lost=on_lost)
        from rich.console import Console
        from rich.live import Live

        self.total, self.workers, self.unit = total, workers, unit
        self.counts: Counter[str] = Counter()
        self.cost = 0.0
        self.durations: list[float] = []
        self.running: dict[str, tuple[str, float]] = {}
        self.spend: dict[str, tuple[float | None, int]] = {}  # running attempts' spend and steps, by session
        self.waiting: str | None = None
        self.t0 = time.monotonic()
        self._state = threading.Lock()
        self.console = Console(highlight=False)
        self.live = Live(
            console=self.console,
            get_renderable=self._render,
            refresh_per_second=4,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.live.start()

    def started(self, name: str, session: str) -> None:
        with self._state:
            self.running[session] = (name, time.monotonic())

    def ended(self, session: str) -> None:
        with self._state:
            self.running.pop(session, None)
            self.spend.pop(session, None)

    def progress(self, running: dict[str, tuple[float | None, int]]) -> None:
        with self._state:
            self.spend = {k: v for k, v in running.items() if k in self.running}

    def status(self, text: str | None) -> None:
        with self._state:
            self.waiting = text

    def finished(self, record: AttemptRecord, line: str, last: bool) -> None:
        with self._state:
            self.cost += record.total_cost or 0.0
            if last:  # an attempt that will be retried is not a finished task
                self.counts[record.status] += 1
                self.durations.append(record.elapsed_time_seconds)
        self.live.refresh()  # a printed line re-emits the last panel: make it the current one
        self.line(line)

    def write(self, text: str, err: bool = False) -> None:
        with self._lock:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True, style="red" if err else None)

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self._state:
            done = sum(self.counts.values())
            now = time.monotonic()
            left = max(0, self.total - done)
            if self.durations and left:
                mean = sum(self.durations) / len(self.durations)
                eta = f"ETA {format_duration(mean * left / min(self.workers, left))}"
            else:
                eta = f"ETA {UNKNOWN}" if left else "ETA 0s"
            counts = "  ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "-"
            so_far = self.cost + sum(cost or 0.0 for cost, _ in self.spend.values())
            head = Text(
                f"{done}/{self.total}{' samples' if self.unit == 'sample' else ''} done   {counts}   "
                f"${so_far:.4f} so far   "
                f"{format_duration(now - self.t0)} elapsed   {eta}" + (f"   {self.waiting}" if self.waiting else ""),
                style="bold",
            )
            table = Table(box=None, show_header=bool(self.running), pad_edge=False)
            table.add_column("running")
            table.add_column("for", justify="right")
            table.add_column("spent", justify="right")
            table.add_column("steps", justify="right")
            for session, (name, since) in sorted(self.running.items(), key=lambda r: r[1][1]):
                cost, steps = self.spend.get(session, (None, 0))
                table.add_row(printable(name), format_duration(now - since), format_money(cost), str(steps))
        return Group(head, table)

    def close(self) -> None:
        self.live.stop()


def make_view(
    quiet: bool, total: int, workers: int, on_lost: Callable[[], None], unit: str = "task"
) -> tuple[PlainView, str | None]:
    """A live view on a terminal, plain lines elsewhere; rich is only imported for the first."""
    if quiet or not sys.stdout.isatty() or os.environ.get("TERM") == "dumb":
        return PlainView(quiet, on_lost), None
    try:
        return LiveView(total, workers, on_lost, unit), None
    except ImportError:
        return PlainView(False, on_lost), (
            f"live progress needs the package rich: `{Path(sys.executable).name} -m pip install rich`"
        )


class RunLog:
    """The runner's own log (<output-dir>/batch_run.log, never written through a link), also
    echoed to the console where asked; secrets masked."""

    def __init__(self, path: Path | None, secrets: tuple[str, ...], view: PlainView) -> None:
        self.secrets = secrets
        self.view = view
        self.path = path
        self._fd: int | None = None
        if path is not None:
            self._fd = open_for_writing(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self._lock = threading.Lock()
        self._once: set[str] = set()

    def write(self, message: str, console: bool = False, err: bool = False) -> None:
        message = mask(message, self.secrets)
        broken = None
        with self._lock:
            if self._fd is not None:
                try:
                    os.write(self._fd, f"{utc_now()} {message}\n".encode())
                except OSError as exc:  # the log is a convenience; results go on being written
                    broken, self._fd = exc, None
        if console:
            self.view.line(message, err)
        if broken is not None:
            self.view.line(
                f"warning: {self.path} cannot be written ({broken.strerror}); going on without it",
                err=True,
            )

    def warn(self, message: str) -> None:
        self.write(f"warning: {message}", console=True, err=True)

    def once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._once:
                return
            self._once.add(key)
        self.warn(message)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def status_file_name(results_name: str) -> str:
    """run.json beside batch_results.jsonl; run.<results stem>.json beside any other results file."""
    return "run.json" if results_name == "batch_results.jsonl" else f"run.{Path(results_name).stem}.json"


def disk_usage(path: Path) -> int:
    """Bytes a folder takes on disk (allocated blocks, so shared reflinks count once per copy and
    sparse files as little as they use), never following links."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def workspace_disk(latest: list[AttemptRecord], output_dir: Path) -> dict[str, int]:
    """Disk use of each task's latest workspace that is still there, inside the output folder."""
    found = {}
    inside = output_dir.resolve()
    for r in latest:
        if r.workspace and Path(r.workspace).resolve().is_relative_to(inside) and Path(r.workspace).is_dir():
            found[r.task_name] = disk_usage(Path(r.workspace))
    return found


def workspace_line(disk: dict[str, int]) -> str | None:
    if not disk:
        return None
    big = max(disk, key=lambda k: disk[k])
    return (
        f"Workspaces: {plural(len(disk), 'task')}, {format_bytes(sum(disk.values()))} on disk "
        f"(largest: {printable(big)} {format_bytes(disk[big])})"
    )


STATUS_REFRESH = 2.0  # seconds between two writes of a running run's status file


@dataclass(frozen=True)
class LiveRun:
    """A run that a status file (run*.json) says is running, as far as it can be believed."""

    data: dict[str, Any]  # the file as written (shown as it is by --report --format json)
    stale_for: float | None  # seconds since it should have been refreshed, when far overdue

    @property
    def running_spend(self) -> float:
        spend = self.data.get("spend")
        return (_number_or_none(spend.get("running")) or 0.0) if isinstance(spend, dict) else 0.0


def status_staleness(data: dict[str, Any], now: float) -> float | None:
    """How long a running status file is overdue, when that is far longer than its own refresh
    interval (then whoever wrote it, on whatever machine, is not running it any more), else None.
    60 s at least: clocks of machines sharing a folder differ by seconds (pure)."""
    refresh = _number_or_none(data.get("refresh_seconds")) or STATUS_REFRESH
    updated = _seconds(data["updated_at"]) if isinstance(data.get("updated_at"), str) else None
    if updated is None:
        return None
    overdue = now - updated
    return overdue if overdue > max(60.0, 30 * refresh) else None


def read_live_runs(output_dir: Path) -> list[LiveRun]:
    """The status files of runs that are running (run*.json): a file that says `running` for a
    process on this machine that is gone is a dead run's, and left out; one far overdue for its
    refresh is marked stale (a shard on another machine that died)."""
    runs = []
    now = time.time()
    for path in sorted(output_dir.glob("run*.json")):
        data = read_json_file(path, limit=64 << 20)
        if not (isinstance(data, dict) and data.get("state") == "running" and isinstance(data.get("running"), list)):
            continue
        pid = data.get("pid")
        if data.get("host") == socket.gethostname() and isinstance(pid, int) and not process_alive(pid):
            continue
        runs.append(LiveRun(data, status_staleness(data, now)))
    return runs


def live_run_lines(runs: list[LiveRun]) -> list[str]:
    lines = []
    for run in runs:
        d = run.data
        pid, host = printable(str(d.get("pid"))), printable(str(d.get("host")))
        who = f"run {printable(str(d.get('run_id')))} (pid {pid} on {host})"
        if run.stale_for is not None:
            lines.append(
                f"Stale status file: {who} says running but was last updated {printable(str(d.get('updated_at')))} "
                f"({format_duration(run.stale_for)} ago); not counted"
            )
            continue
        lines.append(f"Running now: {who}, updated {printable(str(d.get('updated_at')))}")
        for t in d["running"]:
            if isinstance(t, dict):
                lines.append(
                    f"  {printable(str(t.get('task')))}  {format_duration(_number_or_none(t.get('elapsed')) or 0)}  "
                    f"{format_money(_number_or_none(t.get('spend')))}  {printable(str(t.get('steps')))} steps"
                )
    return lines


def cost_outliers(records: list[AttemptRecord]) -> list[AttemptRecord]:
    """Tasks that cost more than 3 times the batch's median (pure)."""
    costs = sorted(r.total_cost for r in records if r.total_cost is not None)
    if len(costs) < 3:
        return []
    median = costs[len(costs) // 2] if len(costs) % 2 else (costs[len(costs) // 2 - 1] + costs[len(costs) // 2]) / 2
    return sorted(
        (r for r in records if r.total_cost is not None and median > 0 and r.total_cost > 3 * median),
        key=lambda r: -(r.total_cost or 0),
    )


def outlier_line(records: list[AttemptRecord]) -> str | None:
    found = cost_outliers(records)
    if not found:
        return None
    return "Cost outliers (over 3x the median): " + ", ".join(
        f"{printable(r.task_name)} {format_money(r.total_cost)}" for r in found[:10]
    )


# ------------------------------------------------------------------------------------------------
# The HTML report: one self-contained page (inline CSS, SVG drawn here, a little plain JavaScript)
# ------------------------------------------------------------------------------------------------


HTML_CLIP = 2000  # characters of an action's output shown before "show all"


HTML_OUTPUT_CAP = 20_000  # characters of one output kept in the page at all


HTML_TRAJECTORY_CAP = 200_000  # characters of one task's rendered trajectory


HTML_TRAJECTORY_SHORT = 20_000  # ... once the page holds HTML_PAGE_TRAJECTORIES_CAP: its first and last steps


HTML_TRAJECTORY_FILE_CAP = 32 << 20  # a bigger trajectory file is linked, not rendered


HTML_PAGE_TRAJECTORIES_CAP = 20_000_000  # characters of trajectories in the whole page; the rest are linked


STATUS_COLOUR = {
    "success": "#2e7d32",
    "failed": "#c62828",
    "timeout": "#ef6c00",
    "stalled": "#f9a825",
    "error": "#6a1b9a",
    "interrupted": "#0277bd",
}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def timeline_lanes(records: list[AttemptRecord]) -> list[tuple[str, int, AttemptRecord, float, float]]:
    """(group, lane, record, start, end) for every attempt: each run (and shard) gets lanes, and an
    attempt takes the first lane free at its start, the way the pool's workers took them (pure)."""
    placed = []
    by_group: dict[str, list[tuple[float, float, AttemptRecord]]] = {}
    for r in records:
        start, end = _seconds(r.started_at), _seconds(r.finished_at)
        if start is not None and end is not None:
            by_group.setdefault(r.run_id or "?", []).append((start, max(end, start), r))
    for group, items in sorted(by_group.items(), key=lambda g: min(i[0] for i in g[1])):
        lanes: list[float] = []
        for start, end, r in sorted(items, key=lambda i: i[0]):
            lane = next((i for i, free in enumerate(lanes) if free <= start + 0.01), len(lanes))
            if lane == len(lanes):
                lanes.append(end)
            lanes[lane] = end
            placed.append((group, lane, r, start, end))
    return placed


def svg_timeline(records: list[AttemptRecord]) -> str:
    placed = timeline_lanes(records)
    if not placed:
        return "<p>No attempts with times.</p>"
    t0 = min(p[3] for p in placed)
    span = max(max(p[4] for p in placed) - t0, 1.0)
    rows = sorted({(p[0], p[1]) for p in placed}, key=lambda k: (min(x[3] for x in placed if x[0] == k[0]), k[1]))
    row_of = {k: i for i, k in enumerate(rows)}
    width, left, height = 1000, 110, 18
    parts = [
        f'<svg class="timeline" viewBox="0 0 {width + left} {len(rows) * height + 24}" '
        f'width="100%" role="img" aria-label="timeline">'
    ]
    for (group, lane), i in row_of.items():
        parts.append(f'<text x="2" y="{i * height + 13}" class="lane">{_e(group)} · {lane + 1}</text>')
    for group, lane, r, start, end in placed:
        x = left + (start - t0) / span * width
        w = max((end - start) / span * width, 1.5)
        tip = (
            f"{r.task_name} · {r.status} · attempt {r.attempt} · {end - start:.1f}s · "
            f"{format_money(r.total_cost)}" + (f" · {r.error}" if r.error else "")
        )
        parts.append(
            f'<rect class="bar" data-status="{_e(r.status)}" x="{x:.1f}" y="{row_of[(group, lane)] * height + 2}"'
            f' width="{w:.1f}" height="{height - 4}" fill="{STATUS_COLOUR.get(r.status, "#777")}">'
            f"<title>{_e(tip)}</title></rect>"
        )
    parts.append(
        f'<text x="{left}" y="{len(rows) * height + 18}" class="axis">0s</text>'
        f'<text x="{left + width - 40}" y="{len(rows) * height + 18}" class="axis">'
        f"{_e(format_duration(span))}</text></svg>"
    )
    return "".join(parts)


def svg_bars(items: list[tuple[str, float, bool]], unit: str) -> str:
    """A sorted horizontal bar chart; outliers drawn in red (pure)."""
    if not items:
        return "<p>Nothing known.</p>"
    items = sorted(items, key=lambda i: -i[1])[:60]
    top = max(i[1] for i in items) or 1.0
    height, left, width = 14, 180, 700
    parts = [f'<svg class="bars" viewBox="0 0 {left + width + 90} {len(items) * height + 4}" width="100%" role="img">']
    for i, (name, value, outlier) in enumerate(items):
        label = f"${value:.4f}" if unit == "$" else format_duration(value)
        parts.append(
            f'<text x="{left - 4}" y="{i * height + 11}" text-anchor="end">{_e(name[:28])}</text>'
            f'<rect x="{left}" y="{i * height + 2}" width="{max(value / top * width, 1):.1f}" height="{height - 3}"'
            f' fill="{"#c62828" if outlier else "#546e7a"}"><title>{_e(name)}: {_e(label)}'
            f"{' (outlier)' if outlier else ''}</title></rect>"
            f'<text x="{left + max(value / top * width, 1) + 4:.1f}" y="{i * height + 11}">{_e(label)}</text>'
        )
    return "".join(parts) + "</svg>"


def svg_histogram(values: list[float], bins: int = 12) -> str:
    if not values:
        return "<p>No durations.</p>"
    top = max(values) or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(int(v / top * bins), bins - 1)] += 1
    most = max(counts)
    width, height = 600, 120
    bar = width / bins
    parts = [f'<svg class="hist" viewBox="0 0 {width} {height + 20}" width="60%" role="img">']
    for i, n in enumerate(counts):
        h = n / most * height
        parts.append(
            f'<rect x="{i * bar + 1:.1f}" y="{height - h:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
            f'fill="#546e7a"><title>{n} tasks from {_e(format_duration(i * top / bins))} to '
            f"{_e(format_duration((i + 1) * top / bins))}</title></rect>"
        )
    parts.append(
        f'<text x="0" y="{height + 16}">0s</text><text x="{width - 40}" y="{height + 16}">'
        f"{_e(format_duration(top))}</text></svg>"
    )
    return "".join(parts)


def _clipped(text: str) -> str:
    text = text[:HTML_OUTPUT_CAP]
    if len(text) <= HTML_CLIP:
        return f"<pre>{_e(text)}</pre>"
    return (
        f"<pre>{_e(text[:HTML_CLIP])}</pre><details class=more><summary>show all "
        f"({len(text)} characters{', cut' if len(text) >= HTML_OUTPUT_CAP else ''})</summary>"
        f"<pre>{_e(text)}</pre></details>"
    )


def trajectory_html(record: AttemptRecord, output_dir: Path, cap: int = HTML_TRAJECTORY_CAP) -> str:
    """A trajectory, readably: messages and thoughts, each action with its observation, each step's
    cost and tokens, the final state and error; bounded however big the file: past `cap`
    characters, its first and its last steps. Only a file inside the output folder is read: a
    record is data from outside, and may name any file."""
    path = Path(record.trajectory_path) if record.trajectory_path else None
    head = (
        f"<p>final state <b>{_e(record.agent_state or UNKNOWN)}</b>"
        + (f", error: {_e(record.error)}" if record.error else "")
        + "</p>"
    )
    if path is None:
        return head + "<p>No trajectory was saved.</p>"
    try:
        if not path.resolve().is_relative_to(output_dir.resolve()):
            return head + "<p>The record names a trajectory outside the output folder: not shown.</p>"
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size > HTML_TRAJECTORY_FILE_CAP:  # never read whole: its first and last events only
                first, last = events_at_ends(f, size)
                gap = (
                    f"<li class=gap>… steps not shown here: those between the first and the last (the file is "
                    f"{size >> 20} MiB, too big to read whole); open the trajectory file.</li>"
                )
                shown = [
                    *fit_from_start(trajectory_steps(first), cap // 2),
                    gap,
                    *fit_from_end(trajectory_steps(last), cap // 2),
                ]
                return "".join([head, "<ol class=steps>", *shown, "</ol>"])
            events = loads_json(f.read(HTML_TRAJECTORY_FILE_CAP + 1))
    except (OSError, ValueError, RecursionError):
        return head + "<p>The trajectory could not be read.</p>"
    if not isinstance(events, list):
        return head + "<p>The trajectory is not a list of events.</p>"
    return "".join([head, "<ol class=steps>", *first_and_last(trajectory_steps(events), cap), "</ol>"])


def events_at_ends(f: BinaryIO, size: int, window: int = 1 << 20) -> tuple[list[Any], list[Any]]:
    """The events in the first and in the last MiB of a trajectory (a JSON list) too big to read
    whole: from the start, one after another; at the end, each `{` tried until one reads as an
    event that ends where a list item ends (a nested object is not taken for one)."""
    decoder = json.JSONDecoder()
    f.seek(0)
    text = f.read(window).decode("utf-8", "replace")
    first, at = [], text.find("[") + 1
    while True:
        at = len(text) - len(text[at:].lstrip(" \n\r\t,"))
        try:
            event, at = decoder.raw_decode(text, at)
        except ValueError:
            break
        first.append(event)
    f.seek(max(0, size - window))
    text = f.read(window).decode("utf-8", "replace")
    last, at, tries = [], text.find("{"), 0
    while 0 <= at < len(text) and tries < 500:
        if text[max(0, at - 64) : at].rstrip()[-1:] not in (",", "["):  # not where a list item starts
            at = text.find("{", at + 1)
            continue
        tries += 1
        try:
            event, end = decoder.raw_decode(text, at)
        except ValueError:
            at = text.find("{", at + 1)
            continue
        follows = text[end:].lstrip()[:1]
        if isinstance(event, dict) and follows in (",", "]") and ({"action", "observation", "kind"} & event.keys()):
            last.append(event)
            at = text.find("{", end)
        else:
            at = text.find("{", at + 1)
    return first, last


def trajectory_steps(events: list[Any]) -> list[str]:
    """Each event of a trajectory (either generation) as one list item (pure)."""
    items, last_cost = [], 0.0
    for event in events:
        if not isinstance(event, dict):
            continue
        kind = event.get("action") or event.get("observation") or event.get("kind") or "event"
        source = event.get("source") or ""
        args: dict[str, Any] = event["args"] if isinstance(event.get("args"), dict) else {}
        parts = []
        for text in (
            event.get("thought"),
            args.get("thought"),
            event.get("message"),
            args.get("command"),
            args.get("path"),
            args.get("url"),
            args.get("content") if kind != "message" else None,
        ):
            if isinstance(text, str) and text.strip():
                parts.append(_clipped(text))
        content = event.get("content")
        if isinstance(content, str) and content.strip():
            parts.append(_clipped(content))
        for key in ("action", "observation", "llm_message"):  # the V1 CLI's events
            if isinstance(event.get(key), dict) and not event.get("args"):
                parts.append(_clipped(json.dumps(event[key], ensure_ascii=False)[:HTML_OUTPUT_CAP]))
        metrics = metrics_from_llm_metrics(event.get("llm_metrics"), "trajectory")
        money = ""
        if metrics.total_cost is not None:
            money = (
                f" <span class=cost>+${metrics.total_cost - last_cost:.4f} (total {format_money(metrics.total_cost)}, "
                f"{format_count(metrics.total_input_tokens)}/{format_count(metrics.total_output_tokens)} tokens)</span>"
            )
            last_cost = metrics.total_cost
        items.append(f"<li><span class=kind>{_e(source)} {_e(kind)}</span>{money}{''.join(parts)}</li>")
    return items


def fit_from_start(items: list[str], budget: int) -> list[str]:
    """The first items that fit in `budget` characters (one at least) (pure)."""
    taken: list[str] = []
    used = 0
    for item in items:
        if taken and used + len(item) > budget:
            break
        taken.append(item)
        used += len(item)
    return taken


def fit_from_end(items: list[str], budget: int) -> list[str]:
    """The last items that fit in `budget` characters (one at least) (pure)."""
    return fit_from_start(items[::-1], budget)[::-1]


def first_and_last(items: list[str], cap: int) -> list[str]:
    """Every item when they fit in `cap` characters; else the first ones and the last ones, half the
    cap each, and a line saying how many steps between them are not shown (pure): how an agent
    started and how it ended are what a reader of a long trajectory looks for."""
    if sum(len(i) for i in items) <= cap:
        return items
    head = fit_from_start(items, cap // 2)
    tail = fit_from_end(items[len(head) :], cap // 2)
    hidden = len(items) - len(head) - len(tail)
    gap = (
        f"<li class=gap>… {hidden} steps not shown here (the page shows the first and the last); "
        "open the trajectory file.</li>"
    )
    return [*head, gap, *tail] if hidden else [*head, *tail]


# The page may load nothing from anywhere: only its own inline style and script.
HTML_POLICY = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


HTML_STYLE = """body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.15em;
margin-top:1.6em}table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:3px 6px;
text-align:left;vertical-align:top}th{cursor:pointer;background:#f3f3f3}td.num{text-align:right}
.status{color:#fff;border-radius:3px;padding:0 4px}pre{white-space:pre-wrap;background:#f7f7f7;padding:4px;margin:2px 0;
max-height:30em;overflow:auto}.kind{font-weight:600}.cost{color:#555;font-size:.9em}svg text{font-size:10px}
.lane{fill:#555}.totals{background:#f3f6f9;padding:.6em;border-radius:4px}.filters label{margin-right:1em}
details.traj{margin:.3em 0}details.traj>summary{cursor:pointer}"""


HTML_SCRIPT = """
function sortBy(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th),
b=t.tBodies[0],num=th.dataset.num==='1',d=th.dataset.dir==='1'?-1:1;th.dataset.dir=d===1?'1':'0';
[...b.rows].sort((x,y)=>{let a=x.cells[i].dataset.v??x.cells[i].textContent,
c=y.cells[i].dataset.v??y.cells[i].textContent;
if(num){a=parseFloat(a);c=parseFloat(c);a=isNaN(a)?-1:a;c=isNaN(c)?-1:c;return (a-c)*d}return a.localeCompare(c)*d})
.forEach(r=>b.appendChild(r))}
function filterRows(){const on=new Set([...document.querySelectorAll('.filters input:checked')].map(c=>c.value));
document.querySelectorAll('#tasks tbody tr').forEach(r=>{r.hidden=!on.has(r.dataset.status)})}
document.querySelectorAll('#tasks th').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
document.querySelectorAll('.filters input').forEach(c=>c.addEventListener('change',filterRows));
"""


HTML_TABLE_HEADS = (  # (heading, sorted as a number)
    ("task", 0),
    ("sample", 1),
    ("status", 0),
    ("state", 0),
    ("verdict", 0),
    ("score", 1),
    ("details", 0),
    ("secs", 1),
    ("cost", 1),
    ("in tok", 1),
    ("out tok", 1),
    ("peak mem", 1),
    ("cpu s", 1),
    ("attempts", 1),
    ("why", 0),
    ("files", 0),
    ("workspace disk", 1),
)


def html_covers(records: list[AttemptRecord], output_dir: Path) -> str:
    """Which runs and results files the page covers, and the wall time from first start to last end."""
    runs = sorted({r.run_id for r in records if r.run_id})
    starts = [t for t in (_seconds(r.started_at) for r in records) if t is not None]
    ends = [t for t in (_seconds(r.finished_at) for r in records) if t is not None]
    wall = format_duration(max(ends) - min(starts)) if starts and ends else UNKNOWN
    files = results_file_names(output_dir)
    return (
        f"<p>{_e(len(runs))} run(s): {_e(', '.join(runs))}; results files (one per shard): "
        f"{_e(', '.join(files) or '-')}; wall time from the first start to the last end {_e(wall)}; "
        f"generated {_e(utc_now())} by run_batch {__version__}</p>"
    )


def html_scores(scores: Scores) -> str:
    """pass@1 with its interval; with samples, pass@k and pass^k for each k, and the flaky tasks."""
    line = scores_line(scores)
    if not line:
        return ""
    rows = ""
    if scores.samples > 1:
        rows = "".join(
            f"<tr><td>{k}</td><td>{scores.pass_at[k][0]:.1%}</td><td>{scores.pass_hat[k][0]:.1%}</td>"
            f"<td>{scores.pass_at[k][1]}</td></tr>"
            for k in scores.pass_at
        )
        rows = f"<table class=scores><tr><th>k</th><th>pass@k</th><th>pass^k</th><th>tasks</th></tr>{rows}</table>"
        if scores.flaky:
            rows += f"<p>Flaky (samples disagree): {_e(', '.join(scores.flaky))}</p>"
    return f"<p>{_e(line)}</p>{rows}"


def html_totals(results: ExperimentResults, disk: dict[str, int]) -> str:
    """One experiment's block: what made it, counts and spend, pass rate and interval, measures, disk."""
    parts = [
        results.heading(),
        totals_line(results.totals),
        pass_rate_line(results.totals.evaluation, results.totals.samples > results.totals.tasks),
        measures_line(results.measures),
        workspace_line(disk),
    ]
    return (
        "<div class=totals>" + "".join(f"<p>{_e(p)}</p>" for p in parts if p) + html_scores(results.scores) + "</div>"
    )


def html_link(path: str | None, label: str, report_dir: Path) -> str:
    if not path:
        return ""
    return f'<a href="{_e(urllib.parse.quote(os.path.relpath(path, report_dir)))}">{_e(label)}</a>'


def verdict_details(evaluation: Evaluation | None) -> str:
    """The evaluator's details as `name value` pairs, each value cut short (pure)."""
    if evaluation is None or not evaluation.details:
        return ""
    return "; ".join(f"{k}: {one_line(json.dumps(v, ensure_ascii=False), 80)}" for k, v in evaluation.details.items())


def why_not(record: AttemptRecord) -> str:
    """Why an attempt did not succeed, or its verdict is not `passed`: the record's reason, else the
    evaluator's (pure)."""
    if record.error:
        return one_line(record.error, 300)
    e = record.evaluation
    if e and e.verdict != "passed":
        return one_line(e.reason or f"evaluator: {e.verdict}", 300)
    return ""


def html_task_table(
    latest: list[AttemptRecord], records: list[AttemptRecord], report_dir: Path, disk: dict[str, int]
) -> str:
    """The status filters and the task table (a row per sample), each row linking its files
    relative to the page: logs, trajectory, workspace, the grader's log."""
    attempts = Counter(r.task_name for r in records)
    outliers = {r.task_name for r in cost_outliers(latest)}
    rows = []
    for r in latest:
        e = r.evaluation
        files = (
            html_link(r.stdout_log, "stdout", report_dir),
            html_link(r.stderr_log, "stderr", report_dir),
            html_link(r.trajectory_path, "trajectory", report_dir),
            html_link(r.workspace, "workspace", report_dir),
            html_link(e.log if e else None, "grader log", report_dir),
        )
        colour = STATUS_COLOUR.get(r.status, "#777")
        cost = "" if r.total_cost is None else r.total_cost
        score = "" if e is None or e.score is None else e.score
        memory = "" if r.peak_memory_bytes is None else r.peak_memory_bytes
        cpu = "" if r.cpu_seconds is None else r.cpu_seconds
        rows.append(
            f'<tr data-status="{_e(r.status)}"><td>{_e(r.task_name)}</td><td class=num>{r.sample}</td>'
            f'<td><span class=status style="background:{colour}">{_e(r.status)}</span></td>'
            f"<td>{_e(r.agent_state or UNKNOWN)}</td><td>{_e(r.verdict or '-')}</td>"
            f'<td class=num data-v="{score}">{_e(score)}</td><td>{_e(verdict_details(e))}</td>'
            f'<td class=num data-v="{r.elapsed_time_seconds}">{r.elapsed_time_seconds:.1f}</td>'
            f'<td class=num data-v="{cost}">{_e(format_money(r.total_cost))}'
            f"{' ⚑' if r.task_name in outliers else ''}</td>"
            f'<td class=num data-v="{r.total_input_tokens or ""}">{_e(format_count(r.total_input_tokens))}</td>'
            f'<td class=num data-v="{r.total_output_tokens or ""}">{_e(format_count(r.total_output_tokens))}</td>'
            f'<td class=num data-v="{memory}">{_e(format_bytes(r.peak_memory_bytes or 0) if memory != "" else "")}</td>'
            f'<td class=num data-v="{cpu}">{_e(f"{r.cpu_seconds:.1f}" if r.cpu_seconds is not None else "")}</td>'
            f"<td class=num>{attempts[r.task_name]}</td><td>{_e(why_not(r))}</td>"
            f"<td>{' '.join(filter(None, files))}</td>"
            f'<td class=num data-v="{disk.get(r.task_name, "")}">'
            f"{_e(format_bytes(disk[r.task_name]) if r.task_name in disk else '')}</td></tr>"
        )
    present = sorted({r.status for r in latest}, key=lambda st: STATUSES.index(st) if st in STATUSES else 99)
    filters = "".join(f'<label><input type=checkbox value="{_e(st)}" checked> {_e(st)}</label>' for st in present)
    head = "".join(f'<th data-num="{n}">{_e(h)}</th>' for h, n in HTML_TABLE_HEADS)
    return (
        f"<div class=filters>{filters}</div>\n"
        f"<table id=tasks><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def html_trajectories(latest: list[AttemptRecord], output_dir: Path) -> str:
    """Every task's trajectory, folded, until the page's cap; past it, each shows its first and
    last steps only (trajectory_html's small form) and links the file."""
    shown: list[str] = []
    budget = HTML_PAGE_TRAJECTORIES_CAP
    for i, r in enumerate(latest):
        body = trajectory_html(r, output_dir, HTML_TRAJECTORY_CAP if budget > 0 else HTML_TRAJECTORY_SHORT)
        budget -= len(body)
        sample = f" · sample {r.sample}" if r.sample > 1 else ""
        shown.append(
            f'<details class=traj id="t-{i}"><summary>{_e(r.task_name)}{_e(sample)} · {_e(r.status)}</summary>'
            f"{body}</details>"
        )
    return "".join(shown)


@dataclass(frozen=True)
class Page:
    """Where a report page goes and what it is of: its folder (links are relative to it), its
    title, the output folder it reports (its trajectories), the workspaces' disk use."""

    report_dir: Path
    title: str
    output_dir: Path
    disk: dict[str, int] = field(default_factory=dict)


def render_html(groups: list[ExperimentResults], page_of: Page, secrets: tuple[str, ...]) -> str:
    """The whole report page (pure but for reading trajectories and the folder's file names): the
    folder's experiments apart, each with its totals, scores and task table. Everything not written
    here is escaped: task names, reasons and outputs are data from outside."""
    report_dir, title, output_dir, disk = page_of.report_dir, page_of.title, page_of.output_dir, page_of.disk
    records = [r for g in groups for r in g.records]
    latest = [r for g in groups for r in g.latest]
    outliers = {r.task_name for r in cost_outliers(latest)}
    durations = sorted(r.elapsed_time_seconds for r in latest)
    median = durations[len(durations) // 2] if durations else 0.0
    cost_items = [(r.task_name, r.total_cost, r.task_name in outliers) for r in latest if r.total_cost is not None]
    time_items = [
        (r.task_name, r.elapsed_time_seconds, median > 0 and r.elapsed_time_seconds > 3 * median) for r in latest
    ]
    experiments = "".join(
        (f"<h2>{_e(g.heading())}</h2>" if len(groups) > 1 else "") + html_totals(g, disk) for g in groups
    )
    tables = "".join(
        (f"<h3>{_e(g.heading())}</h3>" if len(groups) > 1 else "")
        + html_task_table(g.latest, g.records, report_dir, disk)
        for g in groups
    )
    page = f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<meta http-equiv="Content-Security-Policy" content="{HTML_POLICY}">
<title>{_e(title)}</title><style>{HTML_STYLE}</style></head><body>
<h1>{_e(title)}</h1>
{experiments}{html_covers(records, output_dir)}
<h2>Timeline</h2><p>One lane per worker slot of each run; hover a bar for its task.</p>{svg_timeline(records)}
<h2>Cost per task</h2><p>Red: more than 3× the median.</p>{svg_bars(cost_items, "$")}
<h2>Time per task</h2>{svg_bars(time_items, "s")}
<h2>Durations</h2>{svg_histogram(durations)}
<h2>Tasks</h2>{tables}
<h2>Trajectories</h2>{html_trajectories(latest, output_dir)}
<script>{HTML_SCRIPT}</script></body></html>
"""
    return mask(page, secrets)


def write_html_report(
    path: Path,
    groups: list[ExperimentResults],
    secrets: tuple[str, ...],
    output_dir: Path,
    title: str | None = None,
) -> Path:
    """The report page, written atomically."""
    latest = [r for g in groups for r in g.latest]
    disk = workspace_disk(latest, output_dir)
    title = title or f"run_batch report: {output_dir}"
    page = Page(path.parent.absolute(), title, output_dir, disk)
    return write_text_atomically(path, render_html(groups, page, secrets))


# ------------------------------------------------------------------------------------------------
# Comparing runs: task by task, with the paired test that says whether a difference is noise
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One side of a comparison: an experiment of an output folder."""

    name: str  # as given on the command line
    folder: Path
    results: ExperimentResults


@dataclass(frozen=True)
class TaskPair:
    """One task as both sides did it."""

    a: TaskScore
    b: TaskScore
    a_latest: AttemptRecord  # the task's latest attempt on each side (for its links)
    b_latest: AttemptRecord

    @property
    def task(self) -> str:
        return self.a.task

    @property
    def delta(self) -> float:
        return self.b.rate - self.a.rate

    @property
    def flip(self) -> str:
        """pass -> fail, fail -> pass (one sample a side), worse or better (several), or ''."""
        if self.a.samples == 1 and self.b.samples == 1:
            return {(1, 0): "pass -> fail", (0, 1): "fail -> pass"}.get((self.a.passes, self.b.passes), "")
        return "worse" if self.delta < 0 else "better" if self.delta > 0 else ""


@dataclass(frozen=True)
class Comparison:
    """Side b against side a over the tasks both have: each side's pass rate and interval, the
    paired difference and its p-value, cost and time; the tasks only one side has, apart."""

    a: Side
    b: Side
    pairs: list[TaskPair]
    only_a: list[str]
    only_b: list[str]
    a_scores: Scores  # over the tasks both have
    b_scores: Scores
    difference: float  # mean over tasks of b's pass rate minus a's
    interval: tuple[float, float]
    p_value: float
    method: str
    discordant: tuple[int, int] | None  # (pass -> fail, fail -> pass), for McNemar
    cost: tuple[float, float]  # total over the tasks both have (unknown costs as 0)
    time: tuple[float, float]
    identity_changes: list[str]  # `field: a -> b`
    beyond_model: list[str]  # the identity fields that differ besides the model and the label

    def as_json(self) -> dict[str, Any]:
        def side(s: Side, sc: Scores) -> dict[str, Any]:
            e = s.results.experiment
            return {"name": s.name, "experiment": e.as_json() if e else None, "scores": sc.as_json()}

        return {
            "a": side(self.a, self.a_scores),
            "b": side(self.b, self.b_scores),
            "tasks_compared": len(self.pairs),
            "only_in_a": self.only_a,
            "only_in_b": self.only_b,
            "difference": round(self.difference, 6),
            "interval_95": [round(self.interval[0], 6), round(self.interval[1], 6)],
            "p_value": self.p_value,
            "method": self.method,
            "discordant": list(self.discordant) if self.discordant else None,
            "cost": {
                "a": round(self.cost[0], 6),
                "b": round(self.cost[1], 6),
                "b_minus_a": round(self.cost[1] - self.cost[0], 6),
            },
            "time_seconds": {
                "a": round(self.time[0], 3),
                "b": round(self.time[1], 3),
                "b_minus_a": round(self.time[1] - self.time[0], 3),
            },
            "identity_changes": self.identity_changes,
            "differs_beyond_model": self.beyond_model,
            "tasks": [
                {
                    "task": p.task,
                    "a": {"samples": p.a.samples, "passes": p.a.passes, "rate": round(p.a.rate, 6)},
                    "b": {"samples": p.b.samples, "passes": p.b.passes, "rate": round(p.b.rate, 6)},
                    "flip": p.flip,
                }
                for p in self.pairs
            ],
        }


def compare(a: Side, b: Side) -> Comparison:
    """Side b against side a (pure). One sample a side: the exact McNemar test on the tasks whose
    outcome flipped; several: a paired bootstrap over tasks of the per-task difference."""
    a_by = {t.task: t for t in a.results.scores.by_task}
    b_by = {t.task: t for t in b.results.scores.by_task}
    a_last = latest_by_task(a.results.latest)
    b_last = latest_by_task(b.results.latest)
    common = sorted(a_by.keys() & b_by.keys())
    pairs = [TaskPair(a_by[t], b_by[t], a_last[t], b_last[t]) for t in common]
    a_scores = score([r for r in a.results.latest if r.task_name in b_by])
    b_scores = score([r for r in b.results.latest if r.task_name in a_by])
    diffs = [p.delta for p in pairs]
    difference = sum(diffs) / len(diffs) if diffs else 0.0
    discordant = None
    if all(p.a.samples == 1 and p.b.samples == 1 for p in pairs):
        worse = sum(p.flip == "pass -> fail" for p in pairs)
        better = sum(p.flip == "fail -> pass" for p in pairs)
        discordant = (worse, better)
        p_value, method = mcnemar_exact_p(worse, better), "exact McNemar test on the tasks that flipped"
        low, high, _ = paired_bootstrap(diffs)
    else:
        low, high, p_value = paired_bootstrap(diffs)
        method = "paired bootstrap over tasks (10,000 resamples, seed 0)"

    def total(side: Side, pick: Callable[[AttemptRecord], float | None]) -> float:
        return sum(pick(r) or 0.0 for r in side.results.latest if r.task_name in common)

    ea, eb = a.results.experiment, b.results.experiment
    changes = ea.differences(eb) if ea and eb else []
    beyond = [
        f for f in IDENTITY_FIELDS if ea and eb and f not in ("model", "label") and getattr(ea, f) != getattr(eb, f)
    ]
    return Comparison(
        a,
        b,
        pairs,
        sorted(a_by.keys() - b_by.keys()),
        sorted(b_by.keys() - a_by.keys()),
        a_scores,
        b_scores,
        difference,
        (low, high),
        p_value,
        method,
        discordant,
        (total(a, lambda r: r.total_cost), total(b, lambda r: r.total_cost)),
        (total(a, lambda r: r.elapsed_time_seconds), total(b, lambda r: r.elapsed_time_seconds)),
        changes,
        beyond,
    )


def format_p(p: float) -> str:
    return "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def comparison_lines(c: Comparison) -> list[str]:
    """A comparison as console text: identities, flips first, rates, the difference and its test."""
    lines = [f"A = {c.a.name}: {c.a.results.heading()}", f"B = {c.b.name}: {c.b.results.heading()}"]
    if c.identity_changes:
        lines.append("B differs from A in: " + "; ".join(c.identity_changes))
    if c.beyond_model:
        lines.append(
            "Note: the two differ in more than the model ("
            + ", ".join(f.replace("_", " ") for f in c.beyond_model)
            + "): a difference cannot be put down to the model alone."
        )
    if c.a_scores.graded != c.b_scores.graded:
        graded = "A" if c.a_scores.graded else "B"
        lines.append(
            f"Note: only {graded} was graded by an evaluator: its passes are verdicts, the other's are statuses "
            "(grade both with --evaluate-only to compare like with like)."
        )
    flipped = [p for p in c.pairs if p.flip]
    lines.append(f"{plural(len(c.pairs), 'task')} in both; {plural(len(flipped), 'task')} changed:")
    for p in sorted(flipped, key=lambda p: (p.delta, p.task)):
        lines.append(f"  {p.flip:<13} {printable(p.task)}  A {p.a.passes}/{p.a.samples}  B {p.b.passes}/{p.b.samples}")
    for side, names in (("A", c.only_a), ("B", c.only_b)):
        if names:
            lines.append(f"Only in {side} (not counted): " + ", ".join(printable(n) for n in names[:50]))
    for side, sc in (("A", c.a_scores), ("B", c.b_scores)):
        low, high = sc.interval
        lines.append(f"{side}: pass rate {sc.pass_rate:.1%} [95% {low:.1%}-{high:.1%}] ({sc.method})")
    low, high = c.interval
    counts = f"; {c.discordant[0]} pass -> fail, {c.discordant[1]} fail -> pass" if c.discordant else ""
    verdict = "more than noise at the 5% level" if c.p_value < 0.05 else "within noise at the 5% level"
    lines.append(
        f"B - A: {c.difference:+.1%} [95% {low:+.1%} to {high:+.1%}], p = {format_p(c.p_value)} ({c.method}{counts}): "
        f"{verdict}."
    )
    lines.append(
        f"Cost over the tasks in both: A ${c.cost[0]:.4f}, B ${c.cost[1]:.4f} ({c.cost[1] - c.cost[0]:+.4f}); "
        f"task time A {format_duration(c.time[0])}, B {format_duration(c.time[1])}."
    )
    return lines


def comparison_markdown(c: Comparison) -> str:
    lines = [f"### {c.a.name} vs {c.b.name}", "", *(f"- {line}" for line in comparison_lines(c) if line.strip())]
    lines += ["", "| task | A | B | change |", "|---|---|---|---|"]
    for p in sorted(c.pairs, key=lambda p: (not p.flip, p.delta, p.task)):
        name = p.task.replace("|", "\\|")
        lines.append(f"| {name} | {p.a.passes}/{p.a.samples} | {p.b.passes}/{p.b.samples} | {p.flip or '-'} |")
    return "\n".join(lines)


def comparison_html(comparisons: list[Comparison], report_dir: Path) -> str:
    """The side-by-side page: for each comparison the identities, the flipped tasks first, every
    task's outcome on each side with links to its trajectories, and the test."""
    sections = []
    for c in comparisons:
        text = "".join(f"<p>{_e(line)}</p>" for line in comparison_lines(c) if not line.startswith("  "))
        rows = []
        for p in sorted(c.pairs, key=lambda p: (not p.flip, p.delta, p.task)):
            links = [
                html_link(p.a_latest.trajectory_path, "A trajectory", report_dir),
                html_link(p.b_latest.trajectory_path, "B trajectory", report_dir),
            ]
            rows.append(
                f"<tr class={'flip' if p.flip else 'same'}><td>{_e(p.task)}</td>"
                f"<td>{p.a.passes}/{p.a.samples} ({_e(p.a_latest.status)}, {_e(p.a_latest.verdict or '-')})</td>"
                f"<td>{p.b.passes}/{p.b.samples} ({_e(p.b_latest.status)}, {_e(p.b_latest.verdict or '-')})</td>"
                f"<td>{_e(p.flip or '-')}</td><td>{' '.join(filter(None, links))}</td></tr>"
            )
        only = "".join(
            f"<p>Only in {side} (not counted): {_e(', '.join(names))}</p>"
            for side, names in (("A", c.only_a), ("B", c.only_b))
            if names
        )
        sections.append(
            f"<h2>{_e(c.a.name)} (A) vs {_e(c.b.name)} (B)</h2><div class=totals>{text}</div>"
            "<table id=tasks><thead><tr><th>task</th><th>A</th><th>B</th><th>change</th><th>files</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{only}"
        )
    style = HTML_STYLE + "tr.flip td{background:#fff3e0}"
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<meta http-equiv="Content-Security-Policy" content="{HTML_POLICY}">
<title>run_batch comparison</title><style>{style}</style></head><body>
<h1>run_batch comparison</h1>{"".join(sections)}
<p>generated {_e(utc_now())} by run_batch {__version__}; the statistics are explained in docs/statistics.md</p>
</body></html>
"""


def compare_side(spec: str) -> Side:
    """DIR, or DIR@LABEL (or an experiment id's start) for a folder that holds several experiments."""
    path, pick = Path(spec).expanduser(), None
    if not path.is_dir() and "@" in spec:
        folder, pick = spec.rsplit("@", 1)
        path = Path(folder).expanduser()
    if not path.is_dir():
        raise UsageError(f"--compare {spec}: no such output folder")
    records, warnings = read_folder_records(path)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    groups = split_experiments(apply_verdicts(records, read_verdicts(path)))
    if pick is not None:
        groups = [
            g for g in groups if g.experiment and (g.experiment.label == pick or g.experiment.id.startswith(pick))
        ]
    if not groups:
        raise UsageError(f"--compare {spec}: no records{' of that experiment' if pick else ''} there")
    if len(groups) > 1:
        names = ", ".join(f"{spec}@{g.experiment.label or g.experiment.id}" for g in groups if g.experiment)
        raise UsageError(f"--compare {spec}: the folder holds {len(groups)} experiments; pick one: {names}")
    return Side(spec, path.absolute(), groups[0])


def compare_runs(settings: Settings) -> int:
    """--report --compare A B [C ...]: each later side against the first."""
    sides = [compare_side(spec) for spec in settings.compare]
    comparisons = [compare(sides[0], other) for other in sides[1:]]
    if settings.output_format == "json":
        print(dumps_json({"comparisons": [c.as_json() for c in comparisons]}, indent=2))
    elif settings.output_format == "markdown":
        print("\n\n".join(comparison_markdown(c) for c in comparisons))
    elif settings.output_format == "html":
        path = settings.report_output or Path("comparison.html").absolute()
        write_text_atomically(path, comparison_html(comparisons, path.parent.absolute()))
        print(f"Comparison: {path}")
    else:
        print("\n\n".join("\n".join(comparison_lines(c)) for c in comparisons))
    return 0


# ------------------------------------------------------------------------------------------------
# --report and --dry-run
# ------------------------------------------------------------------------------------------------


def markdown_report(results: ExperimentResults) -> str:
    """--format markdown: the tasks, the totals, the pass rate, the measures and scores, and a
    per-status table (GitHub's job summary reads markdown)."""
    lines = [render_summary(results, "markdown"), ""]
    counts = results.totals.counts
    lines += ["| status | samples |" if results.scores.samples > 1 else "| status | tasks |", "|---|---|"]
    lines += [f"| {st} | {n} |" for st, n in counts.items() if n]
    return "\n".join(lines)


def report_groups(settings: Settings) -> tuple[list[ExperimentResults], list[AttemptRecord]]:
    """The folder's experiments (only --label's, when given), each with its records, verdicts
    applied; and every record."""
    folder = settings.output_dir
    if not folder.is_dir():
        raise UsageError(f"--output-dir {folder}: no such folder; nothing to report")
    records, warnings = read_folder_records(folder)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    groups = split_experiments(apply_verdicts(records, read_verdicts(folder)))
    if settings.label is not None:
        groups = [g for g in groups if g.experiment and g.experiment.label == settings.label]
        if not groups:
            raise UsageError(f"--label {settings.label!r}: no experiment in {folder} has that label")
    return groups, records


def report(settings: Settings) -> int:
    """--report: every experiment in the folder, apart, each over the latest attempt of each of its
    tasks (and samples) across every results file in the folder."""
    if settings.compare:
        return compare_runs(settings)
    folder = settings.output_dir
    groups, _ = report_groups(settings)
    groups = groups or [experiment_results([], None)]  # nothing of run_batch's here: an empty report
    latest = [r for g in groups for r in g.latest]
    live = read_live_runs(folder)
    disk = workspace_disk(latest, folder)
    status = 0 if latest and all(r.status == "success" for r in latest) else 1
    if settings.output_format == "json":
        last = groups[-1] if groups else experiment_results([], None)
        data = json.loads(render_summary(last, "json"))
        if len(groups) > 1:  # the newest at the top, each apart below: never summed into one
            data["experiments"] = [{**g.as_json(), "tasks": [r.as_json() for r in g.latest]} for g in groups]
        data["cost_outliers"] = [r.task_name for r in cost_outliers(latest)]
        data["live_runs"] = [run.data for run in live if run.stale_for is None]
        data["stale_status_files"] = [run.data for run in live if run.stale_for is not None]
        data["workspaces_disk_bytes"] = {"total": sum(disk.values()), "by_task": disk}
        print(dumps_json(data, indent=2))
        return status
    if settings.output_format == "html":
        path = settings.report_output or folder / "report.html"
        secrets = find_secrets(load_base_config(settings.base_config), dict(os.environ))
        write_html_report(path, groups, secrets, folder)
        print(f"Report: {path}")
        return status
    for g in groups:
        if len(groups) > 1:
            print(f"\n== {g.heading()}\n")
        if settings.output_format == "markdown":
            print(markdown_report(g))
        else:
            print_report_table(g)
    for line in [*filter(None, [outlier_line(latest), workspace_line(disk)]), *live_run_lines(live)]:
        print(line)
    return status


def dry_run(setup: RunSetup, plan: Plan) -> int:
    """--dry-run: the plan, the experiment, the first task's command and effective config; nothing
    run or written."""
    settings, entrypoint, experiment, secrets = setup.settings, setup.entrypoint, setup.experiment, setup.secrets
    about = entrypoint.about()

    def say(text: str) -> None:  # every line masked once more, in every escaped form a secret takes
        print(clean_text(mask(text, secrets)))

    described: Described | None = None
    example = plan.to_run[0].task if plan.to_run else plan.done[0] if plan.done else None
    if example is not None:
        files = AttemptFiles.named(settings.output_dir, example.stem)
        workspace = settings.output_dir / "workspaces" / example.stem if settings.workspace_per_task else None
        session = session_name(example, "RUNID", 1)
        attempt = Attempt(example, 1, 1, "RUNID", session, experiment, files, workspace)
        described = entrypoint.describe(attempt, secrets)
    unit = "sample" if plan.samples > 1 else "task"

    def effective(task: Task) -> dict[str, Any]:
        """The task's settings where they differ from every task's: its front matter's."""
        limits = limits_for(settings, task)
        options = options_for(settings.openhands, task)
        found = {
            "timeout": task.settings.timeout or settings.timeout,
            "max_iterations": options.max_iterations,
            "max_budget_per_task": options.max_budget_per_task,
            "task_memory": limits.memory,
            "task_cpus": limits.cpus,
            "samples": task.settings.samples or settings.samples,
            "tags": list(task.settings.tags),
            "vars": dict(task.settings.vars),
        }
        general: dict[str, Any] = {
            "timeout": settings.timeout,
            "max_iterations": settings.openhands.max_iterations,
            "max_budget_per_task": settings.openhands.max_budget_per_task,
            "task_memory": settings.limits.memory,
            "task_cpus": settings.limits.cpus,
            "samples": settings.samples,
            "tags": [],
            "vars": {},
        }
        return found if settings.output_format == "json" else {k: v for k, v in found.items() if v != general[k]}

    if settings.output_format == "json":
        first: dict[str, Any] = {}
        if described is not None:
            first = {"command": described.command}
            first |= {"config": described.config} if described.config is not None else {}
            first |= {"workspace": described.workspace} if described.workspace else {}
        data = {
            "project_dir": str(settings.project_dir),
            "output_dir": str(settings.output_dir),
            "results_file": str(settings.results_path),
            "max_workers": settings.max_workers,
            "samples": plan.samples,
            "experiment": experiment.as_json(),
            "to_run": [
                {"task": j.task.name, "sample": j.sample, "problem": j.task.problem, "settings": effective(j.task)}
                for j in plan.to_run
            ],
            "skipped": [{"task": t.name, "why": "already done"} for t in plan.done],
            "to_grade": [{"task": r.task_name, "sample": r.sample, "attempt": r.attempt} for r in plan.to_grade],
            "openhands": about.as_json(),
            "first_task": first,
        }
        say(dumps_json(data, indent=2))
        return 0
    import tomli_w

    say(
        f"Would run {plural(len(plan.to_run), unit)} ({plural(len(plan.done), 'task')} already done, skipped), "
        f"{settings.max_workers} at a time, from {settings.project_dir}:"
    )
    rules = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in about.rules.items())
    say(f"OpenHands: {about.entrypoint}, version {about.version or 'unknown (newest rules)'} ({rules})")
    say(f"Experiment {experiment.describe()}")
    for j in plan.to_run:
        sample = f"  (sample {j.sample})" if plan.samples > 1 else ""
        problem = f"  (will be recorded as error: {j.task.problem})" if j.task.problem else ""
        own = ", ".join(f"{k} {v}" for k, v in effective(j.task).items() if v not in (None, [], {}))
        say(f"  run   {printable(j.task.name)}{sample}{problem}" + (f"  [{own}]" if own else ""))
    for t in plan.done:
        say(f"  skip  {printable(t.name)}  (already done)")
    if plan.to_grade:
        say(f"Would grade {plural(len(plan.to_grade), 'finished attempt')} --evaluate has not graded yet")
    if described is not None:
        say("Command (first task):\n  " + shlex.join(described.command))
        if described.workspace:
            say(f"Workspace (first task): {described.workspace}")
        if described.config is not None:
            say("Effective config (first task, secrets masked):")
            say(tomli_w.dumps(described.config).rstrip())
    return 0


# ================================================================================================
# The batch: opens the output folder, runs the tasks in a thread pool, answers signals, sums up
# ================================================================================================


@dataclass
class FailureStreak:
    """Attempts that ended, one after another, in the same set-up failure."""

    kind: str | None = None
    count: int = 0
    example: str = ""

    def add(self, record: AttemptRecord) -> tuple[str, str] | None:
        """Count an ended attempt; the failure's (kind, what to check) when it continues a streak."""
        found = setup_failure(record)
        if found is None:
            self.kind, self.count = None, 0
            return None
        if found[0] == self.kind:
            self.count += 1
        else:
            self.kind, self.count = found[0], 1
        self.example = one_line(record.error or "", 160)
        return found


@dataclass
class Admission:
    """Whether one more attempt may start: the provider's rate limit (slots that halve and grow
    back), the machine's free memory (--min-free-memory) and --start-delay. A worker waits here,
    and the time starts waited is counted by what they waited for."""

    rate: RateLimit
    min_free_memory: int | None
    start_delay: float
    stop: StopSignal
    log: Log
    active: int = 0  # attempts started or about to start
    waiting: dict[int, str] = field(default_factory=dict)  # worker -> what it waits for
    waited: dict[str, float] = field(default_factory=dict)  # seconds starts waited, by what for
    _last_start: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self) -> bool:
        """Wait for room, then for --start-delay after the previous start; True reserves a place
        among the running, which leave() gives back; False when the batch stops meanwhile."""
        if not self.wait_for_room():
            return False
        with self._lock:
            wait_for = self._last_start + self.start_delay - time.monotonic()
            self._last_start = max(time.monotonic(), self._last_start + self.start_delay)
        if wait_for > 0 and self.stop.event.wait(wait_for):
            self.leave()
            return False
        return True

    def leave(self) -> None:
        with self._lock:
            self.active -= 1

    def wait_for_room(self) -> bool:
        """Wait while the provider's rate limit or the machine's memory leaves no room for one more
        attempt; False when the batch stops meanwhile. The time spent waiting is counted."""
        reason, since = "", time.monotonic()
        worker = id(threading.current_thread())
        while True:
            now = time.monotonic()
            with self._lock:
                if self.stop.stopping:
                    self.waiting.pop(worker, None)
                    return False
                rate_ok = self.rate.allows(self.active, now)
                memory_ok = rate_ok and self.memory_allows()
                if rate_ok and memory_ok:
                    self.active += 1
                    self.waiting.pop(worker, None)
                    if reason:
                        self.waited[reason] = self.waited.get(reason, 0.0) + now - since
                    return True
                reason = "rate limit" if not rate_ok else "memory"
                self.waiting[worker] = reason
            self.stop.event.wait(0.25)

    def memory_allows(self) -> bool:
        """Above --min-free-memory, or nothing of this run running (then waiting would be for ever)."""
        least = self.min_free_memory
        free = available_memory() if least is not None else None
        if least is None or free is None or free >= least:
            return True
        if self.active == 0:
            self.log.once(
                "memory-low",
                f"{format_bytes(free)} of memory available, under --min-free-memory {format_bytes(least)}, and no "
                "task of this run is running: starting one anyway",
            )
            return True
        return False

    def limited(self, task: str, retry_afters: list[float | None], now: float) -> None:
        """The rate limits an attempt met: fewer starts for a while, said when the slots change."""
        with self._lock:
            for retry_after in retry_afters:
                before = self.rate.slots
                self.rate.limited(now, retry_after)
                if self.rate.slots != before:
                    self.log.write(
                        f"{printable(task)}: the provider limits the rate; {self.rate.slots} of "
                        f"{self.rate.most} tasks at once, no start for {self.rate.resume_at - now:.0f}s",
                        console=True,
                    )

    def calm(self, now: float) -> None:
        with self._lock:
            self.rate.calm(now)

    def waiting_line(self) -> str | None:
        """`rate limited: 2 of 4 slots`, `3 starts wait for memory`: why fewer tasks run than could."""
        with self._lock:
            parts = []
            if self.rate.slots < self.rate.most or time.monotonic() < self.rate.resume_at:
                parts.append(f"rate limited: {self.rate.slots} of {self.rate.most} slots")
            memory = sum(1 for why in self.waiting.values() if why == "memory")
            if memory:
                parts.append(f"{plural(memory, 'start')} waiting for memory")
        return "; ".join(parts) or None


@dataclass
class OutputFolder:
    """The output folder while a run holds it: its results file (locked), the run's identity, and
    the private folder of configs (mode 0700, outside the output folder: it may hold keys)."""

    path: Path
    results: ResultsFile
    run_id: str
    private_dir: Path
    dead_run: DeadRun | None  # what an earlier run that died left in the lock file
    cgroups: ControlGroups | None = None  # the attempts' control groups, when they have limits

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.close()
        self.results.release()
        shutil.rmtree(self.private_dir, ignore_errors=True)


def check_output_paths(settings: Settings) -> None:
    """Refuse, before anything is written, what the runner must never write through (it only looks)."""
    results = settings.results_path
    if results.is_dir():
        raise UsageError(f"results file {results} is a folder; pick another --results-name")
    own_files = (results, results.with_name(f".{results.name}.lock"), settings.output_dir / "batch_run.log")
    own_folders = ("logs", "trajectories", "workspaces", "conversations")
    for path in (*own_files, *(settings.output_dir / name for name in own_folders)):
        if path.is_symlink():
            raise UsageError(
                f"{path} is a symbolic link; run_batch never writes through links: remove it "
                "or pick another --output-dir"
            )
    for path in own_files:
        if path.exists() and not path.is_file():
            raise UsageError(
                f"{path} is not a regular file (a FIFO or device?); remove it or pick another --output-dir"
            )
    for name in own_folders:
        if (settings.output_dir / name).exists() and not (settings.output_dir / name).is_dir():
            raise UsageError(f"{settings.output_dir / name} is not a folder; remove it or pick another --output-dir")


def open_output_folder(settings: Settings, limits: Limits | None = None) -> OutputFolder:
    """The control groups when attempts have limits (first: a usage error when there are none to
    be had, before anything is written), folders, the results file's lock, and a private folder
    for this run's configs."""
    run_id = uuid.uuid4().hex[:8]
    cgroups = None
    if limits is not None and limits.any:
        cgroups = ControlGroups.open(run_id, limits)  # a usage error when there are none to be had
        sweep_dead_cgroups()
    try:
        return lock_output_folder(settings, run_id, cgroups)
    except BaseException:
        if cgroups is not None:
            cgroups.close()
        raise


def lock_output_folder(settings: Settings, run_id: str, cgroups: ControlGroups | None) -> OutputFolder:
    try:
        for sub in ("trajectories", "logs"):
            (settings.output_dir / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"--output-dir {settings.output_dir}: cannot create it ({exc.strerror}); pick a folder you can write"
        ) from None
    if not os.access(settings.output_dir, os.W_OK):
        raise UsageError(f"--output-dir {settings.output_dir}: not writable; pick a folder you can write")
    results = ResultsFile(settings.results_path)
    private_dir = Path(tempfile.mkdtemp(prefix=f"run_batch-{run_id}-"))  # mode 0700
    try:
        dead_run = DeadRun.from_lock(
            results.acquire(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "run_id": run_id,
                    "private_dir": str(private_dir),
                    "started_at": utc_now(),
                    "cgroups": cgroups.paths() if cgroups else [],
                }
            )
        )
    except BaseException:
        shutil.rmtree(private_dir, ignore_errors=True)
        raise
    return OutputFolder(settings.output_dir, results, run_id, private_dir, dead_run, cgroups)


@dataclass(frozen=True)
class DeadRun:
    """What a run that died left in the lock file: whose it was and what it must clean up. The
    lock file is data from outside (anyone may write into a shared folder): only well-typed values
    are taken, and each is checked again before anything is acted on."""

    run_id: str
    pid: int | None = None
    host: str | None = None
    private_dir: str | None = None
    cgroups: tuple[str, ...] = ()

    @classmethod
    def from_lock(cls, data: dict[str, Any] | None) -> DeadRun | None:
        if not data or data.get("finished") or not isinstance(data.get("run_id"), str) or not data["run_id"]:
            return None
        pid = data.get("pid")
        groups = data.get("cgroups")
        return cls(
            data["run_id"],
            pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            data["host"] if isinstance(data.get("host"), str) else None,
            data["private_dir"] if isinstance(data.get("private_dir"), str) else None,
            tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
        )


def mark_dead_run(status_file: Path, previous: DeadRun) -> dict[str, Any] | None:
    """A dead run's status file says `running` for ever: make it say `died` (the new run keeps
    that under `previous_run` once it writes its own)."""
    data = read_json_file(status_file, limit=64 << 20)
    if isinstance(data, dict) and data.get("run_id") == previous.run_id and data.get("state") == "running":
        data = {**data, "state": "died", "died_noticed_at": utc_now()}
        with contextlib.suppress(OSError):
            write_json_atomically(status_file, data)
        return {
            k: data.get(k) for k in ("run_id", "pid", "host", "state", "started_at", "updated_at", "died_noticed_at")
        }
    return None


def clean_up_dead_run(previous: DeadRun, log: Log) -> None:
    """What a run that died (SIGKILL, OOM, reboot) left behind: its tasks' processes, their
    containers and control groups, its private folder of configs."""
    old_run = previous.run_id
    if previous.host != socket.gethostname():
        log.warn(
            f"an earlier run (pid {previous.pid} on {printable(str(previous.host))}) did not "
            "finish; processes or containers it left on that machine were not touched"
        )
        return
    pid = previous.pid
    if pid is not None and pid != os.getpid() and process_alive(pid):
        log.warn(
            f"the lock file names run {printable(old_run)[:40]} of pid {pid}, which is still running (is this "
            "folder a copy of another run's?): nothing of that run was touched"
        )
        return
    killed = kill_everything(None, Marker(old_run, orphans_only=True))
    containers = remove_run_containers(old_run, log)
    for group in previous.cgroups:  # only run_batch's own groups of that run
        if is_run_group(Path(group), old_run):
            remove_group(Path(group))
    folder = previous.private_dir
    removed = folder is not None and is_own_private_dir(Path(folder), old_run)
    if removed:
        shutil.rmtree(str(folder), ignore_errors=True)
    log.write(
        f"an earlier run (pid {previous.pid}, run {printable(old_run)[:40]}) did not finish: killed "
        f"{len(killed)} leftover processes, removed {containers} containers"
        f"{' and its temporary configs' if removed else ''}",
        console=True,
    )


def is_own_private_dir(folder: Path, run_id: str) -> bool:
    """Whether a folder a lock file names is a private folder this user's run `run_id` made: a lock
    file is data from outside, and in a shared output folder anyone may have written it."""
    try:
        info = folder.lstat()
    except OSError:
        return False
    return (
        folder.parent == Path(tempfile.gettempdir())
        and folder.name.startswith(f"run_batch-{run_id}-")
        and stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and stat.S_IMODE(info.st_mode) == 0o700
    )


@contextlib.contextmanager
def signal_handlers(stop: StopSignal) -> Iterator[None]:
    """Ctrl-C, SIGTERM, SIGHUP (a closed terminal or ssh session), SIGQUIT and the other signals
    of SIGNALS_THAT_STOP (SIGUSR1/2, alarms, a CPU-time limit's SIGXCPU) all stop the batch the
    graceful way; a second one kills at once. The handlers only set flags (a handler that
    took a lock could deadlock the main thread); the workers act on them."""

    def handler(signum: int, _frame: Any) -> None:
        stop.request(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS_THAT_STOP}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class Spend:
    """Money so far: this run's (recorded and running), its running attempts', and the whole
    output folder's (every run and shard, and their running attempts as they last said)."""

    this_run: float
    running: float
    folder: float


@dataclass
class Batch:
    """One run's tasks and what they share: where they run, how OpenHands is driven, the results
    file, the console and the log, and the stop signal."""

    settings: Settings
    jobs: list[Job]  # the samples to run
    entrypoint: Entrypoint
    experiment: Experiment
    folder: OutputFolder
    secrets: tuple[str, ...]
    view: PlainView
    log: RunLog
    stop: StopSignal
    attempts: dict[str, int]  # each task's highest attempt number so far in the output folder
    admission: Admission  # whether one more attempt may start now
    folder_spend: ShardSpend | None = None  # what the folder's results files recorded, kept current
    to_grade: list[AttemptRecord] = field(default_factory=list)  # finished, not graded by --evaluate yet
    done: int = 0
    cost_so_far: float = 0.0
    skipped_budget: list[Job] = field(default_factory=list)
    records: list[AttemptRecord] = field(default_factory=list)
    regraded: list[AttemptRecord] = field(default_factory=list)  # to_grade, graded by this run
    streak: FailureStreak = field(default_factory=FailureStreak)
    preloaded: PreloadedSdk | None = None  # the SDK imported once per batch (--entrypoint sdk)
    tasks: dict[str, Task] = field(default_factory=dict)  # the selected tasks, by name
    live: dict[str, LiveAttempt] = field(default_factory=dict)  # running attempts, by session
    started_at: str = field(default_factory=utc_now)
    previous_run: dict[str, Any] | None = None  # a dead run's status, as the status file said `died`
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def unit(self) -> str:
        """What the console counts: tasks, or samples when each task has several."""
        return "sample" if self.settings.samples > 1 else "task"

    def run_job(self, job: Job) -> None:
        """All attempts of one sample of a task, and the error policy: retried while the failure is
        infrastructure's; a bug of the runner's becomes an `error` record, never a lost attempt."""
        for retry in range(self.settings.retries + 1):
            if retry:
                delay = retry_delay(self.settings.retry_backoff, retry)
                self.log.write(f"{printable(job.task.name)}: retrying in {delay:.1f}s")
                if self.stop.event.wait(delay):
                    return
            if not self.may_start(job, first=not retry):
                return
            attempt = self.new_attempt(job)
            try:
                record, retryable = self.run_attempt(attempt)
            except Exception as exc:  # any bug of the runner's becomes a record, never a lost attempt
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                    # The output folder cannot hold an attempt's files: stop, as for the results file.
                    why = f"cannot write {exc.filename or self.folder.path} ({exc.strerror})"
                    self.stop.fail(why)
                else:
                    self.log.write(f"{printable(job.task.name)}: internal error\n{traceback.format_exc()}")
                    why = f"run_batch internal error: {exc!r} (details in batch_run.log)"
                record = attempt.record(self.entrypoint.session_id(attempt.session), mask(why, self.secrets))
                retryable = False
            finally:
                self.admission.leave()
            last = not retryable or retry == self.settings.retries
            self.finish(record, last)
            if last:
                return

    def may_start(self, job: Job, first: bool) -> bool:
        """Whether the job's next attempt may start, once there is room: within the budgets, then
        through the admission (rate limit, free memory, --start-delay). A True reserves a place
        among the running, which the caller gives back."""
        self.check_budgets()
        with self._lock:
            if self.stop.budget:
                if first:
                    self.skipped_budget.append(job)
                return False
            if self.stop.stopping:
                return False
        return self.admission.enter()

    def new_attempt(self, job: Job) -> Attempt:
        """The next attempt of a task (numbered above every earlier one, its other samples' too)."""
        with self._lock:
            number = self.attempts.get(job.task.name, 0) + 1
            self.attempts[job.task.name] = number
        run_id = self.folder.run_id
        return Attempt(job.task, job.sample, number, run_id, session_name(job.task, run_id, number), self.experiment)

    def run_attempt(self, attempt: Attempt) -> tuple[AttemptRecord, bool]:
        """One attempt: fresh files, workspace and session; launch and wait; read what it left;
        the record; the grade."""
        sid = self.entrypoint.session_id(attempt.session)
        if attempt.task.problem:
            return attempt.record(sid), False
        attempt = dataclasses.replace(attempt, files=claim_attempt_files(self.folder.path, attempt))
        if self.settings.workspace_per_task:
            try:
                workspace = make_workspace(self.folder.path, attempt.evidence, self.settings.workspace_template)
            except OSError as exc:
                return attempt.record(sid, str(exc)), True
            attempt = dataclasses.replace(attempt, workspace=workspace)
        attempt = dataclasses.replace(attempt, prompt=write_attempt_prompt(attempt, self.settings))
        hook = self.before_attempt(attempt) if self.settings.before_hook else None
        if hook is not None and hook.get("reason"):
            trajectory_saved(attempt.evidence.trajectory)  # the empty claim goes: nothing was saved
            record = attempt.record(sid, mask(f"--before-attempt failed: {hook['reason']}", self.secrets))
            return dataclasses.replace(record, before_attempt=hook), False
        launch, live, argv, usage = self.launch(attempt)
        outcome = self.read_outcome(attempt, live)
        ended = Ended(launch, outcome, self.collect_evidence(attempt), attempt.evidence, argv)
        record, retryable = build_record(attempt.record(sid), ended, self.stop.reason, self.secrets)
        record = dataclasses.replace(
            record,
            before_attempt=hook,
            peak_memory_bytes=usage.peak_memory,
            cpu_seconds=usage.cpu_seconds,
            resource_source=usage.source,
            limits=live.limits.as_json(),
        )
        if usage.oom_kills and record.status != "interrupted":
            # The kernel killed part of it at its memory limit: whatever the agent made of that, the
            # outcome is the machine's doing, not the agent's (a retry may fix it; it gets the same
            # limit: a task that needs more says so in its front matter, task_memory).
            why = oom_reason(live.limits, usage)
            record, retryable = dataclasses.replace(record, status="error", error=why), not self.stop.reason
        if self.settings.evaluator and record.status != "error" and not self.stop.stopping:
            record = self.evaluate(record)
        return record, retryable

    def before_attempt(self, attempt: Attempt) -> dict[str, Any]:
        """Run --before-attempt for an attempt about to start, as the evaluator runs: its own
        session and logs (<stem>.before.log), its time limit, the sweep, secrets masked. What it
        did, with `reason` set when it failed (then the agent does not start)."""
        files = attempt.evidence
        values = {**attempt_values(attempt, self.folder.path), "log": str(files.stdout_log)}
        hook = CommandRun(
            evaluator_argv(self.settings.before_hook, values),
            self.settings.evaluate_cwd or self.settings.project_dir,
            {**os.environ, **task_variables(attempt.task)},
            files.stdout_log.with_name(f"{files.stem}.before.log"),
            self.settings.before_attempt_timeout,
            Marker(attempt.run_id, f"{attempt.session}-before"),
        )
        ran = run_evaluator(hook, self.secrets, self.stop)
        reason = None
        if ran.exit_code != 0 or ran.reason:
            said = last_line_of(Path(ran.stderr_log or "")) or last_line_of(Path(ran.log or ""))
            code = ran.exit_code
            if code is None:  # it did not start, or timed out, or the batch stopped
                how = (ran.reason or "did not run").replace("the evaluator ", "")
            else:
                how = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
            reason = one_line(f"{how}: {said}" if said and said not in how else how, 300)
        return {
            "exit_code": ran.exit_code,
            "elapsed_seconds": ran.elapsed_seconds,
            "log": ran.log,
            "stderr_log": ran.stderr_log,
            "reason": mask(reason, self.secrets) if reason else None,
        }

    def launch(self, attempt: Attempt) -> tuple[Launch, LiveAttempt, list[str], Usage]:
        """Configure the attempt, launch it (in a control group of its own when it has limits) and
        wait, followed by the monitor meanwhile, then clean up after it: its private files, its
        container, its group. Returns what happened, what the monitor saw, the argv that ran and
        what the attempt used."""
        prepared = self.entrypoint.prepare(attempt, self.folder.private_dir)
        limits = limits_for(self.settings, attempt.task)
        group = self.folder.cgroups.attempt(attempt.session, limits) if self.folder.cgroups and limits.any else None
        budget = options_for(self.settings.openhands, attempt.task).max_budget_per_task
        follower = follower_for(self.entrypoint.sources(attempt))
        live = LiveAttempt(attempt.task.name, attempt.session, attempt.evidence, follower, Halt(), budget)
        live.group, live.limits = group, limits
        with self._lock:
            self.live[attempt.session] = live
        self.view.started(attempt.task.name, attempt.session)
        try:
            forks = self.preloaded is not None and prepared.fork_args is not None and self.preloaded.ready(self.stop)
            launching = Launching(
                prepared,
                self.settings.project_dir,
                attempt.evidence,
                attempt.marker,
                attempt.task.settings.timeout or self.settings.timeout,
                self.settings.grace_period,
                group,
                self.preloaded if forks else None,
                live.started_as,
            )
            launch = launch_and_wait(launching, self.stop, live.halt)
        finally:
            with self._lock:
                self.live.pop(attempt.session, None)
            self.view.ended(attempt.session)
            for path in prepared.private_files:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            for container in self.entrypoint.containers(attempt):
                remove_container(container, self.log)
            usage = live.usage()
            if group is not None:
                group.remove()
        return launch, live, prepared.argv, usage

    def read_outcome(self, attempt: Attempt, live: LiveAttempt) -> Outcome:
        """What the attempt left; when its totals were never saved (killed), the spend the monitor
        saw last rather than nothing."""
        try:
            outcome = read_attempt_outcome(attempt.evidence, self.entrypoint.sources(attempt))
        except Exception:  # a reader's bug must not lose a paid attempt: record what the launch tells
            self.log.write(f"{attempt.session}: could not read the outcome\n{traceback.format_exc()}")
            outcome = Outcome(None, Metrics(), OutputFacts())
        with contextlib.suppress(Exception):
            live.look(time.monotonic())  # the last events, for a task killed before it saved its totals
        self.say_lacks(live)
        if not outcome.metrics.known and live.metrics.known:
            outcome.metrics = live.metrics
        return outcome

    def evaluate(self, record: AttemptRecord) -> AttemptRecord:
        """Grade one attempt with --evaluate, as it ends."""
        evaluation = grade(self.settings.grader, record, self.grading(record))
        if evaluation is None:
            return record  # stopped with the batch: the next run of the same command grades it
        command = mask(self.settings.evaluate or "", self.secrets)
        return dataclasses.replace(record, evaluation=evaluation, evaluate_command=command)

    def grading(self, record: AttemptRecord) -> Grading:
        """How this run grades an attempt (its task's front-matter variables included)."""
        return Grading(self.folder.run_id, self.secrets, self.stop, task_variables(self.tasks.get(record.task_name)))

    def grade_again(self, record: AttemptRecord) -> None:
        """Grade a finished attempt that --evaluate has not graded yet (interrupted while grading,
        the runner killed, the evaluator new or changed), without running its agent again: the
        verdict goes to evaluations.jsonl, as with --evaluate-only."""
        if self.stop.stopping:
            return
        evaluation = grade(self.settings.grader, record, self.grading(record))
        if evaluation is None:
            return
        command = mask(self.settings.evaluate or "", self.secrets)
        append_verdict(self.folder.path, verdict_entry(record, evaluation, command, self.folder.run_id))
        graded = dataclasses.replace(record, evaluation=evaluation, evaluate_command=command)
        with self._lock:
            self.regraded.append(graded)
        self.view.line(mask(graded_line(len(self.regraded), len(self.to_grade), graded), self.secrets))

    def watch(self, done: threading.Event) -> None:
        """The monitor thread: every few seconds, look at each running attempt (new events and
        output only), stop a stalled one or one over its budget, hold the batch budgets, write the
        status file, and off a terminal print a heartbeat."""
        poll = min(STATUS_REFRESH, self.settings.heartbeat or STATUS_REFRESH)
        last_heartbeat = time.monotonic()
        while not done.wait(poll):
            now = time.monotonic()
            with self._lock:
                running = list(self.live.values())
            for live in running:
                try:
                    live.look(now)
                    live.sample()
                except Exception as exc:  # a follower's bug must not stop the watch
                    self.log.once(f"follow-{type(exc).__name__}", f"could not follow a running task: {exc!r}")
                self.slow_down(live, now)
                self.say_lacks(live)
                check_attempt(live, now, self.settings.stall_timeout, live.budget)
            self.admission.calm(now)
            self.check_budgets()
            self.view.progress({r.session: (r.metrics.total_cost, r.steps) for r in running})
            self.view.status(self.admission.waiting_line())
            self.write_status("running")
            if (
                self.settings.heartbeat
                and not self.view.shows_progress
                and now - last_heartbeat >= self.settings.heartbeat
            ):
                last_heartbeat = now
                self.view.write(self.heartbeat_line())

    def say_lacks(self, live: LiveAttempt) -> None:
        """Once per batch, each private SDK part a per-attempt driver said its release lacks."""
        for lack in live.lacks:
            self.log.once(f"lacks {lack}", lack)

    def slow_down(self, live: LiveAttempt, now: float) -> None:
        """The rate limits a running attempt met since the last look: fewer starts for a while."""
        with self._lock:
            limits, live.rate_limits = live.rate_limits, []
        if limits:
            self.admission.limited(live.task, limits, now)

    def spend(self) -> Spend:
        """This run's recorded spend, the running attempts' spend, and the folder's (every results file)."""
        with self._lock:
            running = sum(live.cost for live in self.live.values())
            recorded = self.cost_so_far
        folder = (self.folder_spend.refresh(self.folder.results.path) if self.folder_spend else 0.0) + recorded
        for other in read_live_runs(self.settings.output_dir):  # other shards' running tasks, as they last said
            if other.data.get("run_id") != self.folder.run_id and other.stale_for is None:
                folder += other.running_spend
        return Spend(round(recorded + running, 6), round(running, 6), round(folder + running, 6))

    def check_budgets(self) -> None:
        """Reached budget: no new start, running tasks stopped gracefully (recorded interrupted)."""
        s = self.settings
        if (s.max_total_cost is None and s.max_run_cost is None) or self.stop.stopping:
            return
        spend = self.spend()
        if s.max_total_cost is not None and spend.folder >= s.max_total_cost:
            self.stop.budget_reached(f"batch budget of ${s.max_total_cost:g} reached (--max-total-cost)")
        elif s.max_run_cost is not None and spend.this_run >= s.max_run_cost:
            self.stop.budget_reached(f"run budget of ${s.max_run_cost:g} reached (--max-run-cost)")

    def eta(self) -> float | None:
        with self._lock:
            durations = [r.elapsed_time_seconds for r in self.records]
            left = len(self.jobs) - self.done
        if not left:
            return 0.0
        if not durations:
            return None
        return sum(durations) / len(durations) * left / min(self.settings.max_workers, left)

    def heartbeat_line(self) -> str:
        spend, eta, waiting = self.spend(), self.eta(), self.admission.waiting_line()
        return (
            f"[heartbeat {utc_now()[11:19]}] {self.done}/{len(self.jobs)}{' samples' if self.unit == 'sample' else ''} "
            f"done, {len(self.live)} running, "
            f"${spend.this_run:.4f} spent this run (${spend.running:.4f} by running tasks), "
            f"ETA {UNKNOWN if eta is None else format_duration(eta)}" + (f"; {waiting}" if waiting else "")
        )

    def write_status(self, state: str) -> None:
        """<output-dir>/run.json (run.<results stem>.json for other results files): anyone can read
        how far the run has got; replaced atomically, so it is valid JSON at every moment."""
        now = time.monotonic()
        with self._lock:
            running = [
                {
                    "task": r.task,
                    "session": r.session,
                    "started_at": r.started_at,
                    "elapsed": round(now - r.started, 1),
                    "spend": r.metrics.total_cost,
                    "steps": r.steps,
                    "last_event_at": r.last_progress_at,
                    "last_event": one_line(mask(r.last_event, self.secrets), 80) if r.last_event else None,
                }
                for r in self.live.values()
            ]
        s, eta = self.settings, self.eta()
        data = {
            "run_id": self.folder.run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "shard": list(s.selection.shard) if s.selection.shard else None,
            "results_file": s.results_name,
            "state": state,
            "started_at": self.started_at,
            "updated_at": utc_now(),
            "tasks": {"selected": len(self.jobs), "done": self.done, "running": len(running)},
            "samples": self.settings.samples,
            "experiment_id": self.experiment.id,
            "running": running,
            "spend": dataclasses.asdict(self.spend()),
            "budgets": {
                "max_total_cost": s.max_total_cost,
                "max_run_cost": s.max_run_cost,
                "stopped_by": self.stop.budget,
            },
            "eta_seconds": None if eta is None else round(eta, 1),
            "refresh_seconds": STATUS_REFRESH,
            "previous_run": self.previous_run,
        }
        try:
            write_json_atomically(s.output_dir / status_file_name(s.results_name), data, self.secrets)
        except OSError as exc:
            self.log.once(
                "status-file", f"cannot write the status file {exc.filename} ({exc.strerror}); going on without it"
            )

    def collect_evidence(self, attempt: Attempt) -> Evidence:
        """Secrets masked in what the task wrote, the logs' tails, whether a trajectory was saved."""
        files = attempt.evidence
        saved = trajectory_saved(files.trajectory)
        for path in (files.trajectory, files.stdout_log, files.stderr_log, *self.entrypoint.evidence(attempt)):
            keep_private(path)
            if redact_file(path, self.secrets):
                self.log.warn(f"{printable(attempt.task.name)}: a secret appeared in {path.name}; masked")
        return Evidence(mask(tail(files.stdout_log), self.secrets), mask(tail(files.stderr_log), self.secrets), saved)

    def finish(self, record: AttemptRecord, last: bool) -> None:
        """Record an attempt; `last` when the task will not be tried again in this run. A record
        that cannot be written stops the batch (no paying for tasks whose results cannot be kept),
        and is not counted as done anywhere: the same command runs that task again."""
        path = self.folder.results.path
        try:
            self.folder.results.append(record)
            recorded = True
        except OSError as exc:
            recorded = False
            self.stop.fail(f"cannot write {path} ({exc.strerror or exc})")
            self.log.write(
                f"{printable(record.task_name)}: its record could not be written to {path}: {exc.strerror or exc}",
                console=True,
                err=True,
            )
        with self._lock:
            self.done += last
            if recorded:
                self.records.append(record)
            self.cost_so_far += record.total_cost or 0.0  # spent either way: the budgets count it
            line = mask(finished_line(record, self.done, len(self.jobs), last), self.secrets)
            if not recorded:
                line += "  (NOT RECORDED: the results file cannot be written)"
        self.log.write(line)
        self.view.finished(record, line, last)
        self.count_failure(record)

    def count_failure(self, record: AttemptRecord) -> None:
        """--max-consecutive-failures: the same set-up failure N times in a row stops the batch (a
        wrong key or a dead endpoint fails every task, each after OpenHands' start-up)."""
        most = self.settings.max_consecutive_failures
        with self._lock:
            found = self.streak.add(record)
            count, example = self.streak.count, self.streak.example
        if found and most and count >= most:
            kind, check = found
            self.stop.fail(
                f"{count} attempts in a row ended in the same failure, {kind} (the last: {example}); check {check}"
            )


def retry_delay(backoff: float, retry: int) -> float:
    """The wait before retry number `retry` (1-based): backoff doubled each time, with jitter,
    never past MAX_SECONDS however many retries (2 ** 2000 is no number of seconds)."""
    return min(MAX_SECONDS, backoff * 2.0 ** min(retry - 1, 64) * random.uniform(0.8, 1.2))


def execute(batch: Batch) -> None:
    """The pool of tasks, watched by the monitor thread, with the status file from start to end."""
    done = threading.Event()
    monitor = threading.Thread(target=batch.watch, args=(done,), name="monitor", daemon=True)
    monitor.start()
    batch.write_status("running")
    try:
        run_pool(batch)
    finally:
        if batch.preloaded is not None:
            batch.preloaded.close()
        done.set()
        monitor.join()
        batch.write_status("interrupted" if batch.stop.stopping else "finished")  # a budget interrupts too


def run_pool(batch: Batch) -> None:
    """The thread pool. The main thread only waits, in short steps, so signal handlers run
    promptly, and says once what a stop request means."""
    with ThreadPoolExecutor(max_workers=batch.settings.max_workers, thread_name_prefix="task") as pool:
        # Finished futures come through a queue: waiting on all the pending ones at every wake
        # costs time that grows with the square of the batch (2,000 tasks: 0.3 s of CPU).
        ended: queue.SimpleQueue[Future[None]] = queue.SimpleQueue()
        for record in batch.to_grade:  # grading left over first: no LLM spend, and the summary needs it
            pool.submit(batch.grade_again, record).add_done_callback(ended.put)
        for job in batch.jobs:
            pool.submit(batch.run_job, job).add_done_callback(ended.put)
        left = len(batch.to_grade) + len(batch.jobs)
        said = (False, False)
        while left:
            finished = []
            with contextlib.suppress(queue.Empty):
                finished.append(ended.get(timeout=0.5))
                while True:
                    finished.append(ended.get_nowait())
            left -= len(finished)
            if (batch.stop.stopping, batch.stop.kill_now) != said:
                said = (batch.stop.stopping, batch.stop.kill_now)
                batch.log.write(
                    "stopping at once: killing every running task"
                    if batch.stop.kill_now
                    else f"{batch.stop.reason}: no new task starts; running tasks get SIGINT and --grace-period "
                    "to stop (send Ctrl-C to kill them at once)",
                    console=True,
                    err=True,
                )
            for f in finished:
                if f.exception() is not None:
                    batch.log.write(f"internal error in a task: {f.exception()!r}", console=True, err=True)


def environment_warnings(max_workers: int, project_dir: Path, environ: dict[str, str]) -> list[str]:
    """Settings of the user's that work against a batch (pure)."""
    debug = environ.get("LOG_LEVEL", "").upper() == "DEBUG" or environ.get("DEBUG", "").lower() in ("1", "true")
    if debug and max_workers > 1:
        return [
            f"DEBUG logging with --max-workers {max_workers}: OpenHands then writes LLM logs to "
            f"{project_dir / 'logs'} and clears logs/llm/default when a task starts, so parallel tasks "
            "overwrite each other's there (each task's own log is whole in the output folder's logs/)"
        ]
    return []


def peak_rss_mb() -> float | None:
    """The runner's own peak memory (not its tasks'), for the summary and the benchmarks."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


@dataclass(frozen=True)
class Finish:
    """How a run ended, for its summary: the experiment in the folder now, the latest attempt of
    each selected sample, the wall time, the samples that did not start."""

    mine: ExperimentResults
    shown: list[AttemptRecord]
    wall: float
    not_started: list[Job]


def summary_lines(batch: Batch, plan: Plan, finish: Finish) -> list[str]:
    """The final summary: what this run did, then the state of the experiment in the folder (pure)."""
    mine, shown, wall, not_started = finish.mine, finish.shown, finish.wall, finish.not_started
    s, totals = batch.settings, mine.totals
    counts = ", ".join(f"{n} {st}" for st, n in totals.counts.items() if n) or "nothing recorded"
    unit = "sample" if plan.samples > 1 or any(r.sample > 1 for r in mine.latest) else "task"
    if not batch.records and not plan.to_run:
        lines = [
            f"Nothing to run: {plural(len(plan.selected), 'selected task')} "
            f"{'has' if len(plan.selected) == 1 else 'have'} already "
            f"{'run every sample' if unit == 'sample' else 'succeeded'} (--rerun runs them again)."
            if plan.selected
            else "Nothing to run: no task selected."
        ]
    else:
        task_time = sum(r.elapsed_time_seconds for r in batch.records)
        lines = [
            f"Done in {format_duration(wall)} wall time ({format_duration(task_time)} of task time, "
            f"{plural(len(batch.records), 'attempt')} this run), {plural(totals.samples, unit)}: {counts}."
        ]
    if batch.regraded:
        lines.append(f"Graded without running the agent again: {plural(len(batch.regraded), 'finished attempt')}.")
    if not_started:
        lines.append(f"{plural(len(not_started), unit)} not started (run the same command to continue).")
    if batch.stop.budget:
        lines.append(
            f"Stopped: {batch.stop.budget}; {plural(len(batch.skipped_budget), unit)} skipped, not failed "
            f"(${batch.cost_so_far:.4f} recorded this run). Raise the budget and run the same command to go on."
        )
    each = unit
    mean = "" if totals.mean_cost is None else f", mean ${totals.mean_cost:.4f} per {each}"
    tokens_mean = (
        ""
        if totals.mean_input_tokens is None or totals.mean_output_tokens is None
        else f", mean {totals.mean_input_tokens:.0f} / {totals.mean_output_tokens:.0f} per {each}"
    )
    lines.append(
        f"Cost ${totals.total_cost:.4f} (known for {totals.tasks_with_cost} of {totals.samples} {each}s{mean}; "
        f"this run ${batch.cost_so_far:.4f}). Tokens {totals.total_input_tokens} in / "
        f"{totals.total_output_tokens} out{tokens_mean}."
    )
    for r in [r for r in shown if r.status != "success"][:20]:
        sample = f" (sample {r.sample})" if plan.samples > 1 else ""
        lines.append(f"  {r.status:<11} {printable(r.task_name)}{sample}: {one_line(r.error or '', 180)}"[:200])
    slowest = sorted(shown, key=lambda r: -r.elapsed_time_seconds)[:3]
    if slowest:
        lines.append(
            "Slowest: "
            + ", ".join(
                f"{printable(r.task_name)}{f' (sample {r.sample})' if plan.samples > 1 else ''} "
                f"{r.elapsed_time_seconds:.0f}s"
                for r in slowest
            )
        )
    lines += filter(None, [outlier_line(mine.latest), resources_line(shown), waits_line(batch)])
    lines += filter(None, [pass_rate_line(totals.evaluation, unit == "sample"), measures_line(mine.measures)])
    lines += filter(
        None, [scores_line(mine.scores), f"Experiment {mine.experiment.describe()}" if mine.experiment else None]
    )
    lines.append(f"Results: {s.results_path}  Summary: {s.output_dir / 'summary.json'}")
    return lines


def resources_line(records: list[AttemptRecord]) -> str | None:
    """The attempts that took the most memory and CPU (pure)."""
    memory = sorted((r for r in records if r.peak_memory_bytes), key=lambda r: -(r.peak_memory_bytes or 0))[:3]
    cpu = sorted((r for r in records if r.cpu_seconds), key=lambda r: -(r.cpu_seconds or 0))[:3]
    if not memory:
        return None
    source = "sampled" if any(r.resource_source == "sampled" for r in memory) else "control groups"
    return (
        "Largest memory: "
        + ", ".join(f"{printable(r.task_name)} {format_bytes(r.peak_memory_bytes or 0)}" for r in memory)
        + "; most CPU: "
        + ", ".join(f"{printable(r.task_name)} {r.cpu_seconds:.0f}s" for r in cpu)
        + f" ({source})."
    )


def waits_line(batch: Batch) -> str | None:
    """How long starts waited, and for what: the provider's rate limit, the machine's memory."""
    parts = []
    admission = batch.admission
    if admission.rate.events:
        waited = admission.waited.get("rate limit", 0.0)
        parts.append(
            f"{format_duration(waited)} for the provider's rate limit ({plural(admission.rate.events, 'limit')} met)"
        )
    if admission.waited.get("memory"):
        parts.append(f"{format_duration(admission.waited['memory'])} for memory")
    return "Starts waited " + " and ".join(parts) + "." if parts else None


def sum_up(batch: Batch, plan: Plan, wall: float) -> list[AttemptRecord]:
    """summary.json and the final summary, over the whole folder as it is now (every shard's
    records too), for this run's experiment. Returns the latest attempt of each selected task's
    samples, which decide the exit status."""
    s = batch.settings
    records, _ = read_folder_records(s.output_dir)
    groups = split_experiments(apply_verdicts(records, read_verdicts(s.output_dir)), batch.experiment)
    mine = next((g for g in groups if g.id == batch.experiment.id), experiment_results([], batch.experiment))
    latest = {(r.task_name, r.sample): r for r in mine.latest}
    shown = [latest[key] for key in plan.wanted() if key in latest]
    ran = {(r.task_name, r.sample) for r in batch.records}
    skipped = {(j.task.name, j.sample) for j in batch.skipped_budget}
    not_started = [j for j in plan.to_run if (j.task.name, j.sample) not in ran | skipped]
    this_run = {
        "run_id": batch.folder.run_id,
        "wall_time_seconds": round(wall, 3),
        "this_run_cost": round(batch.cost_so_far, 6),
        "this_run_tasks": len({r.task_name for r in batch.records}),
        "this_run_attempts": len(batch.records),
        "graded_without_running": len(batch.regraded),
        "rate_limits_met": batch.admission.rate.events,
        "start_waits_seconds": {k: round(v, 1) for k, v in batch.admission.waited.items()},
        "not_started": sorted({j.task.name for j in not_started}),
        "skipped_for_budget": sorted({j.task.name for j in batch.skipped_budget}),
        "runner_peak_rss_mb": peak_rss_mb(),
    }
    write_summary_json(s.output_dir, mine, [g for g in groups if g is not mine], this_run, batch.secrets)
    lines = summary_lines(batch, plan, Finish(mine, shown, wall, not_started))
    if s.html:
        report = write_html_report(s.report_output or s.output_dir / "report.html", [mine], batch.secrets, s.output_dir)
        lines.append(f"Report: {report}")
    text = mask("\n".join(lines), batch.secrets)
    batch.log.write(text)
    batch.view.write(text)  # even with --quiet: the one thing it prints
    return shown


def exit_status(stop: StopSignal, shown: list[AttemptRecord], wanted: int, verdicts_count: bool = False) -> int:
    """0 when every selected sample's latest attempt succeeded (and, with --fail-on-evaluation,
    passed), 1 otherwise or when the runner stopped itself, 128+N after signal N."""
    if stop.failure:
        print(
            f"run-batch: error: {stop.failure}; records already written are kept, run the same command "
            "again once it is fixed",
            file=sys.stderr,
        )
        return 1
    if stop.signum:
        return 128 + stop.signum
    every_sample_done = len(shown) == wanted
    if verdicts_count and not (every_sample_done and all(r.verdict == "passed" for r in shown)):
        return 1  # --fail-on-evaluation
    return 0 if every_sample_done and all(r.status == "success" for r in shown) else 1


@dataclass(frozen=True)
class Earlier:
    """What the output folder already holds: this results file's records, the other results
    files' (other runs and shards), and what was wrong with any of them."""

    own: list[AttemptRecord]
    others: list[AttemptRecord]
    warnings: list[str]

    @property
    def every(self) -> list[AttemptRecord]:
        return [*self.own, *self.others]


def read_earlier(settings: Settings) -> Earlier:
    own, warnings = read_records(settings.results_path)
    if not own and any("another tool" in w for w in warnings):
        # GitTaskBench's own batch script writes batch_results.jsonl too: appending ours to it would
        # leave a file neither tool reads whole.
        raise UsageError(
            f"{settings.results_path} was written by another tool; keep it as it is: give run_batch a file of "
            "its own with --results-name (e.g. run_batch.jsonl), or another --output-dir"
        )
    others, other_warnings = read_folder_records(settings.output_dir, skip=settings.results_path)
    return Earlier(own, others, [*warnings, *other_warnings])


def run(settings: Settings, environ: dict[str, str]) -> int:
    """Check, configure, plan, then (unless --dry-run) open the output folder, run, sum up."""
    require_tomli_w()
    check_output_paths(settings)  # cheap checks before the slow probes (Poetry, the release)
    earlier = read_earlier(settings)
    tasks = discover_tasks(settings.prompt_dir)
    setup = configure(resolve_poetry(settings, environ), environ)
    plan, warnings = plan_run(setup, tasks, earlier)
    if settings.dry_run:
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        return dry_run(setup, plan)
    return run_batch(setup, plan, earlier, [*warnings, *start_warnings(setup.settings, environ)])


def plan_run(setup: RunSetup, tasks: list[Task], earlier: Earlier) -> tuple[Plan, list[str]]:
    """The plan over this experiment's records (another experiment's in the folder: a usage
    error), and what the user should know of the folder."""
    settings, experiment = setup.settings, setup.experiment
    if conflict := experiment_conflict(experiment, earlier.every):
        raise UsageError(conflict)
    mine, legacy = records_of(experiment, earlier.every)
    evaluate_command = mask(settings.evaluate, setup.secrets) if settings.evaluate else None
    rules = PlanRules(
        settings.samples, settings.prompt_dir, read_verdicts(settings.output_dir).command_of, evaluate_command
    )
    with with_folder_hints(settings.prompt_dir):
        plan = plan_batch(tasks, settings.selection, mine, settings.rerun, rules)
    check_task_settings(plan.selected, settings, setup.entrypoint)
    upper = [h for h in prompt_folder_hints(settings.prompt_dir) if ".MD" in h]
    return plan, [*earlier.warnings, *legacy_warning(legacy), *upper]


def run_batch(setup: RunSetup, plan: Plan, earlier: Earlier, warnings: list[str]) -> int:
    """Open the output folder, run the pool under the signal handlers, sum up; the exit status."""
    settings = setup.settings
    stop = StopSignal()
    folder = open_output_folder(settings, wanted_limits(settings, plan.selected))
    try:
        batch = make_batch(setup, plan, folder, stop, earlier)
        try:
            t0 = time.monotonic()
            with signal_handlers(stop):
                try:
                    begin(batch, plan, warnings)
                    execute(batch)
                finally:
                    batch.view.close()
                    kill_everything(None, Marker(folder.run_id))  # belt and braces: nothing of this run outlives it
            shown = sum_up(batch, plan, time.monotonic() - t0)
        finally:
            batch.log.close()
    finally:
        folder.close()
    return exit_status(stop, shown, len(plan.wanted()), settings.fail_on_evaluation)


def check_task_settings(tasks: list[Task], settings: Settings, entrypoint: Entrypoint) -> None:
    """What the selected prompts ask for that this run cannot give, before anything runs: a step
    limit or a budget the V1 CLI has no way to honour, {workspace} in a prompt with no workspaces."""
    kind = entrypoint.about().entrypoint
    for t in tasks:
        for key in ("max_iterations", "max_budget_per_task"):
            if kind == "cli" and getattr(t.settings, key) is not None:
                raise UsageError(
                    f"{t.prompt_path}: front matter {key}: the V1 CLI cannot honour it (no step limit or budget of "
                    "its own); leave it out, or use --entrypoint sdk"
                )
        if settings.prompt_placeholders and not settings.workspace_per_task and t.problem is None:
            uses = False
            with contextlib.suppress(OSError, UnicodeDecodeError):
                uses = prompt_uses(prompt_text(t), "workspace")
            if uses:
                raise UsageError(
                    f"{t.prompt_path} uses {{workspace}}, but attempts have no workspace of their own: add "
                    "--workspace-per-task (or --workspace-template DIR), or write {{workspace}} for the text itself"
                )


def legacy_warning(count: int) -> list[str]:
    if not count:
        return []
    return [
        f"{plural(count, 'record')} of run_batch 0.3/0.4 carry no experiment identity (model, release, "
        "configuration): counted as this experiment's, as those releases did; give --label to keep them apart"
    ]


def make_batch(setup: RunSetup, plan: Plan, folder: OutputFolder, stop: StopSignal, earlier: Earlier) -> Batch:
    """The batch and what it reports to: the console view (a lost console stops the batch like
    SIGPIPE would) and the run log."""
    settings, entrypoint, experiment, secrets = setup.settings, setup.entrypoint, setup.experiment, setup.secrets
    view, hint = make_view(
        settings.quiet,
        len(plan.to_run),
        settings.max_workers,
        on_lost=lambda: stop.request(signal.SIGPIPE),
        unit="sample" if settings.samples > 1 else "task",
    )
    log = RunLog(settings.output_dir / "batch_run.log", secrets, view)
    if hint:
        log.warn(hint)
    preloaded = None
    if isinstance(entrypoint, SdkDriver) and entrypoint.preloads and plan.to_run:
        server_log = settings.output_dir / "logs" / f"sdk-server.{folder.run_id}.log"
        preloaded = PreloadedSdk(
            entrypoint.command[0], entrypoint.environ, server_log, Marker(folder.run_id, "sdk-server"), log.warn
        )
    return Batch(
        settings,
        plan.to_run,
        entrypoint,
        experiment,
        folder,
        secrets,
        view,
        log,
        stop,
        attempts=attempt_numbers(earlier.every),
        admission=Admission(RateLimit(settings.max_workers), settings.min_free_memory, settings.start_delay, stop, log),
        folder_spend=ShardSpend(settings.output_dir, earlier.every),
        to_grade=plan.to_grade,
        preloaded=preloaded,
        tasks={t.name: t for t in plan.selected},
    )


def start_warnings(settings: Settings, environ: dict[str, str]) -> list[str]:
    return [
        *template_warnings(settings.workspace_template, settings.output_dir),
        *environment_warnings(settings.max_workers, settings.project_dir, environ),
    ]


def begin(batch: Batch, plan: Plan, warnings: list[str]) -> None:
    """Before the first task: what the user should know, what a dead run left in the folder
    (cleaned up, its status file marked `died`), and the opening line."""
    s, folder = batch.settings, batch.folder
    for w in warnings:
        batch.log.warn(w)
    if folder.dead_run:
        clean_up_dead_run(folder.dead_run, batch.log)
        batch.previous_run = mark_dead_run(s.output_dir / status_file_name(s.results_name), folder.dead_run)
    samples = f" × {plan.samples} samples" if plan.samples > 1 else ""
    grading = f", {len(plan.to_grade)} finished to grade" if plan.to_grade else ""
    batch.log.write(
        f"run {folder.run_id}: {plural(len(plan.selected), 'task')} selected{samples}, {len(plan.done)} "
        f"already done, {plural(len(plan.to_run), batch.unit)} to run{grading}, {s.max_workers} at a time; "
        f"output in {s.output_dir}",
        console=True,
    )
    batch.log.write(f"experiment {batch.experiment.describe()}")


def attempts_to_grade(latest: list[AttemptRecord], command: str, rerun: bool) -> list[AttemptRecord]:
    """The attempts among `latest` that ran the agent and are not yet graded by this command (all
    that ran with --rerun) (pure)."""
    return [r for r in latest if r.status != "error" and r.stdout_log and (rerun or r.evaluate_command != command)]


def verdict_entry(record: AttemptRecord, evaluation: Evaluation, command: str, run_id: str) -> dict[str, Any]:
    """A line of evaluations.jsonl: which attempt, graded by which run and command, the verdict."""
    return {
        "task_name": record.task_name,
        "session_name": record.session_name,
        "attempt": record.attempt,
        "run_id": record.run_id,
        "evaluated_by": run_id,
        "evaluated_at": utc_now(),
        "evaluate_command": command,
        "evaluation": evaluation.as_json(),
    }


def graded_line(i: int, total: int, graded: AttemptRecord) -> str:
    e = graded.evaluation
    score = "" if e is None or e.score is None else f"  score {e.score:g}"
    why = f"  - {one_line(e.reason, 200)}" if e and e.reason else ""
    sample = f" (sample {graded.sample})" if graded.sample > 1 else ""
    return f"[{i}/{total}] {graded.verdict or '?':<7} {printable(graded.task_name)}{sample}{score}{why}"


def evaluate_only(settings: Settings, environ: dict[str, str]) -> int:
    """--evaluate-only: grade the latest attempt of every selected task (and sample) of each
    experiment in an existing output folder (--label's only, when given), running no agent; verdicts
    are appended to evaluations.jsonl (records are never rewritten), then summary.json, and the HTML
    report when there is one, are written again."""
    folder = settings.output_dir
    secrets = find_secrets(load_base_config(settings.base_config), environ)
    command = mask(settings.evaluate or "", secrets)  # as it is stored
    groups, _ = report_groups(settings)
    with with_folder_hints(settings.prompt_dir):
        chosen = select_tasks(discover_tasks(settings.prompt_dir), settings.selection, settings.prompt_dir)
    tasks = {t.name: t for t in chosen}
    selected = [r for g in groups for r in g.latest if r.task_name in tasks]
    to_grade = attempts_to_grade(selected, command, settings.rerun)
    run_id = uuid.uuid4().hex[:8]
    stop = StopSignal()
    # One --evaluate-only at a time per folder (a run grading what it left may append beside it).
    holder = ResultsFile(folder / EVALUATIONS_FILE)
    holder.acquire({"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id})
    print(
        f"evaluating {plural(len(to_grade), 'attempt')} ({len(selected) - len(to_grade)} of the "
        f"{len(selected)} selected already graded with this command, or never ran)",
        flush=True,
    )

    def one(record: AttemptRecord) -> AttemptRecord:
        grading = Grading(run_id, secrets, stop, task_variables(tasks.get(record.task_name)))
        evaluation = grade(settings.grader, record, grading)
        if evaluation is None:
            return record
        append_verdict(folder, verdict_entry(record, evaluation, command, run_id))
        return dataclasses.replace(record, evaluation=evaluation, evaluate_command=command)

    try:
        with signal_handlers(stop), ThreadPoolExecutor(settings.max_workers, thread_name_prefix="evaluate") as pool:
            for i, graded in enumerate(pool.map(one, to_grade), 1):
                print(mask(graded_line(i, len(to_grade), graded), secrets), flush=True)
    finally:
        holder.release()
    if stop.signum:
        return 128 + stop.signum
    groups, _ = report_groups(settings)  # read again: the verdicts just written, any run's since
    rewrite_summaries(folder, groups, secrets, run_id)
    shown = [r for g in groups for r in g.latest if r.task_name in tasks]
    for g in groups:
        heading = f"{g.heading()}: " if len(groups) > 1 else ""
        mine = [r for r in g.latest if r.task_name in tasks]
        sampled = any(r.sample > 1 for r in mine)
        print(heading + (pass_rate_line(pass_rates(mine), sampled) or "Evaluation: nothing evaluated."))
        for line in filter(None, [measures_line(measures(mine))]):
            print(line)
    if settings.fail_on_evaluation:
        return 0 if shown and all(r.verdict == "passed" for r in shown) else 1
    return 0


# summary.json's totals that say what one run did; kept when --evaluate-only writes it again
THIS_RUN_KEYS = (
    "run_id",
    "wall_time_seconds",
    "this_run_cost",
    "this_run_tasks",
    "this_run_attempts",
    "graded_without_running",
    "rate_limits_met",
    "start_waits_seconds",
    "not_started",
    "skipped_for_budget",
    "runner_peak_rss_mb",
)


def rewrite_summaries(folder: Path, groups: list[ExperimentResults], secrets: tuple[str, ...], run_id: str) -> None:
    """After --evaluate-only: summary.json written again for the experiment it described (else the
    newest), with the new verdicts; the HTML report too when the folder has one."""
    if not groups:
        return
    old = _dict(read_json_file(folder / "summary.json", limit=256 << 20))
    described = _dict(old.get("experiment")).get("id")
    mine = next((g for g in groups if g.id == described), groups[-1])
    kept = {k: v for k, v in _dict(old.get("totals")).items() if k in THIS_RUN_KEYS}
    this_run = {**kept, "evaluated_by": run_id, "evaluated_at": utc_now()}
    write_summary_json(folder, mine, [g for g in groups if g is not mine], this_run, secrets)
    if (folder / "report.html").is_file():
        write_html_report(folder / "report.html", groups, secrets, folder)


# ================================================================================================
# The SDK driver: one attempt inside OpenHands' own environment (--entrypoint sdk)
# ================================================================================================
# For --entrypoint sdk, each attempt is this file run by the Python of an environment that has
# openhands-sdk and openhands-tools (the V1 CLI's has both): `python run_batch.py --sdk-driver -f
# PROMPT ...`. It builds the agent the way the V1 CLI's headless mode does and runs the
# conversation itself, which gives what the CLI lacks (docs/openhands.md, "SDK driver"): a step
# limit, a budget, an exit status that tells, a stop in under a second, and the spend saved after
# every LLM call, so a killed attempt keeps its cost and a running one shows it. Its conversation
# folder is the CLI's, so the V1 reader and follower serve it unchanged. Standard library only
# until the SDK is imported, so the same file runs there without run_batch's dependencies.


# ------------------------------------------------------------------------------------------------
# One attempt
# ------------------------------------------------------------------------------------------------


SDK_STOP = "stopped by run_batch's SDK driver"


@dataclass(frozen=True)
class DriverArgs:
    prompt: Path
    max_iterations: int = 500  # the SDK's own default
    max_budget: float | None = None
    grace: float = 20.0  # how long a stop may wait for the step in flight before saving anyway
    override_with_envs: bool = False


def parse_driver_args(argv: list[str]) -> DriverArgs:
    p = argparse.ArgumentParser(prog=f"run_batch.py {SDK_DRIVER_FLAG}", description="One task through the SDK.")
    p.add_argument("-f", dest="prompt", required=True, type=Path)
    p.add_argument("--max-iterations", type=_int_at_least(1), default=500)
    p.add_argument("--max-budget", type=_positive_float)
    p.add_argument("--grace", type=_non_negative_float, default=20.0)
    p.add_argument("--override-with-envs", action="store_true")
    return from_args(DriverArgs, p.parse_args(argv))


def driver_tools() -> list[Any]:
    """The tools of the V1 CLI's headless agent (1.16.0): terminal, file editor, task tracker, tasks."""
    from openhands.sdk.tool import Tool
    from openhands.tools import TaskToolSet
    from openhands.tools.file_editor import FileEditorTool
    from openhands.tools.task_tracker import TaskTrackerTool
    from openhands.tools.terminal import TerminalTool

    return [Tool(name=t.name) for t in (TerminalTool, FileEditorTool, TaskTrackerTool, TaskToolSet)]


def driver_agent(args: DriverArgs, persistence: Path, work_dir: str) -> Any:
    """The agent as the V1 CLI builds it (AgentStore.load_or_create, critic off): the user's
    agent_settings.json, LLM_* over it with --override-with-envs (or alone, when there is no
    file), the CLI's tools, the project's skills, no critic."""
    from openhands.sdk import LLM, Agent, AgentContext, LLMSummarizingCondenser
    from openhands.sdk.context import load_project_skills
    from openhands.tools.preset.default import get_default_condenser
    from pydantic import SecretStr

    tools = driver_tools()
    settings = persistence / "agent_settings.json"
    agent = Agent.model_validate_json(settings.read_text(encoding="utf-8")) if settings.is_file() else None
    overrides: dict[str, Any] = {}
    if args.override_with_envs:
        for variable, key in (("LLM_MODEL", "model"), ("LLM_API_KEY", "api_key"), ("LLM_BASE_URL", "base_url")):
            if os.environ.get(variable):
                overrides[key] = SecretStr(os.environ[variable]) if key == "api_key" else os.environ[variable]
    if agent is None:
        if not ({"model", "api_key"} <= overrides.keys()):
            raise UsageError(f"no agent settings: write {settings}, or set LLM_MODEL and LLM_API_KEY")
        llm = LLM(usage_id="agent", **overrides)
        condenser = get_default_condenser(llm=llm.model_copy(update={"usage_id": "condenser"}))
        agent = Agent(llm=llm, tools=tools, system_prompt_kwargs={"cli_mode": True}, condenser=condenser)
    elif overrides:
        condenser = agent.condenser
        if isinstance(condenser, LLMSummarizingCondenser):
            condenser = condenser.model_copy(update={"llm": condenser.llm.model_copy(update=overrides)})
        agent = agent.model_copy(update={"llm": agent.llm.model_copy(update=overrides), "condenser": condenser})
    context = AgentContext(
        skills=load_project_skills(work_dir),
        system_message_suffix=f"Your current working directory is: {work_dir}\n"
        f"User operating system: {platform.system()} (kernel {platform.release()})",
        load_user_skills=True,
        load_public_skills=True,
    )
    condenser = agent.condenser if isinstance(agent.condenser, LLMSummarizingCondenser) else None
    return agent.model_copy(update={"tools": tools, "agent_context": context, "condenser": condenser, "critic": None})


def driver_spend(conversation: Any) -> float:
    """Accumulated cost over every LLM of the conversation (agent, condenser)."""
    usage = conversation.conversation_stats.usage_to_metrics
    return round(sum(m.accumulated_cost or 0.0 for m in list(usage.values())), 10)


def driver_save_state(conversation: Any, lock_timeout: float = 2.0) -> None:
    """Write base_state.json now, stats included: the SDK saves it only when one of its fields is
    assigned, and the stats grow in place (a private method of SDK 1.21; without it, a killed
    attempt's cost is unknown, as with the CLI)."""
    state = conversation.state
    save, store = getattr(state, "_save_base_state", None), getattr(state, "_fs", None)
    if save is None or store is None:
        return
    held = state.acquire(timeout=lock_timeout)
    try:
        save(store)
    except Exception as exc:  # best effort: the next call saves again
        print(f"run_batch driver: could not save base_state.json: {exc!r}", file=sys.stderr)
    finally:
        if held:
            state.release()


def driver_interrupt_commands(conversation: Any) -> None:
    """Ctrl-C in every terminal pane of the conversation (SDK 1.21's terminal executor; when it
    looks otherwise, run_batch's kill of the agent's commands after the grace period remains)."""
    with contextlib.suppress(Exception):
        executor = conversation.agent.tools_map["terminal"].executor
        if callable(getattr(executor, "interrupt", None)):  # SDK 1.58: its own way
            executor.interrupt()
            return
        pool = getattr(executor, "_pool", None)
        panes = list(getattr(pool, "_all_panes", None) or []) or [getattr(executor, "_session", None)]
        for pane in panes:
            with contextlib.suppress(Exception):
                pane.interrupt()


class DriverStop:
    """Whether, and why, the driver has been asked to stop: a signal (the runner's timeout or
    Ctrl-C, passed on) or the budget. Set from a signal handler or the conversation's thread."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.why: list[str] = []  # the first reason only
        self.requested = threading.Event()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.on_signal)

    def on_signal(self, signum: int, _frame: Any) -> None:
        self.signals.append(signum)
        self.request(signal.Signals(signum).name)

    def request(self, why: str) -> None:
        if not self.why:
            self.why.append(why)
        self.requested.set()

    @property
    def reason(self) -> str:
        return self.why[0] if self.why else ""


def driver_prompt(path: Path) -> str | None:
    try:
        with open_regular(path) as f:
            return f.read(PROMPT_LIMIT).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"run_batch driver: cannot read the prompt {path}: {exc}", file=sys.stderr)
        return None


class SpendFollower:
    """The conversation's callback: after every LLM call, base_state.json saved and the spend
    printed (the runner reads both); over the budget, a stop requested; once a stop is requested,
    no further action run and the conversation paused."""

    def __init__(self, max_budget: float | None, stop: DriverStop) -> None:
        self.max_budget = max_budget
        self.stop = stop
        self.conversation: Any = None  # set once the conversation exists
        self.saved: float | None = None

    def __call__(self, event: Any) -> None:
        """Runs in the conversation's thread, holding its state lock, before the event is stored."""
        from openhands.sdk import ConversationExecutionStatus
        from openhands.sdk.event import ActionEvent

        conversation = self.conversation
        if conversation is None:
            return
        spent = driver_spend(conversation)
        if spent != self.saved:  # an LLM call since the last save
            self.saved = spent
            driver_save_state(conversation)
            print(json.dumps({"spend": spent, "event": type(event).__name__}), flush=True)
        if self.max_budget is not None and spent > self.max_budget:
            self.stop.request(f"budget: spent ${spent:.4f}, over --max-budget-per-task {self.max_budget:g}")
        if not self.stop.requested.is_set():
            return
        if isinstance(event, ActionEvent) and event.tool_name != "finish":
            with contextlib.suppress(Exception):  # not run: the agent sees it rejected
                conversation.state.block_action(event.id, f"{SDK_STOP} ({self.stop.reason})")
        if conversation.state.execution_status == ConversationExecutionStatus.RUNNING:
            # Set here, under the state lock: pause() from another thread can lose the race to a
            # fast loop (seen: four more LLM calls).
            conversation.state.execution_status = ConversationExecutionStatus.PAUSED


def drive_conversation(conversation: Any, text: str, stop: DriverStop, grace: float) -> list[str]:
    """Send the task and run the conversation in a thread; once a stop is requested, pause it and
    press Ctrl-C in its terminals every second until it ends or `grace` runs out (a call or tool
    that will not end: then it is left as it is). Returns the failure, if the run raised one."""
    from openhands.sdk import ConversationExecutionStatus

    failure: list[str] = []

    def work() -> None:
        try:
            if not stop.requested.is_set():
                conversation.send_message(text)
            if not stop.requested.is_set():
                conversation.run()
        except Exception as exc:
            failure.append(one_line(f"{type(exc).__name__}: {exc}"))

    worker = threading.Thread(target=work, name="conversation", daemon=True)
    worker.start()
    deadline: float | None = None
    last_interrupt = 0.0
    while worker.is_alive():
        worker.join(0.2)
        if not stop.requested.is_set():
            continue
        now = time.monotonic()
        if deadline is None:
            deadline = now + grace
            threading.Thread(target=conversation.pause, name="pause", daemon=True).start()
        if now - last_interrupt >= 1.0:  # again each second: the step in flight may start a command
            last_interrupt = now
            driver_interrupt_commands(conversation)
        if now > deadline or len(stop.signals) > 1:  # save as it is
            with contextlib.suppress(Exception):
                conversation.state.execution_status = ConversationExecutionStatus.PAUSED
            break
    driver_save_state(conversation, lock_timeout=0.2 if worker.is_alive() else 2.0)
    return failure


def settle_state(conversation: Any, stop: DriverStop, failure: list[str]) -> None:
    """The end state says why a run that did not finish ended: over budget, or the driver's error
    (saved with a ConversationErrorEvent, as the SDK records its own errors)."""
    from openhands.sdk import ConversationExecutionStatus
    from openhands.sdk.event.conversation_error import ConversationErrorEvent

    state = conversation.state
    ending = None
    if stop.reason.startswith("budget") and state.execution_status != ConversationExecutionStatus.FINISHED:
        ending = ("BudgetExceeded", stop.reason)
    elif failure and state.execution_status == ConversationExecutionStatus.RUNNING:
        ending = ("DriverError", failure[0])
    if ending:
        with contextlib.suppress(Exception):
            state.execution_status = ConversationExecutionStatus.ERROR
            state.events.append(ConversationErrorEvent(source="environment", code=ending[0], detail=ending[1]))
        driver_save_state(conversation, lock_timeout=0.2)


def driver_hooks() -> list[str]:
    """What a release lacks of the SDK parts the driver relies on beyond its public API, each with
    what is lost without it (checked after the imports; docs/openhands.md, "SDK 1.58.2")."""
    from openhands.sdk.conversation.state import ConversationState

    missing = []
    if not (callable(getattr(ConversationState, "_save_base_state", None)) and hasattr(ConversationState, "acquire")):
        missing.append(
            "ConversationState._save_base_state: the spend is saved when the SDK saves its state (after each "
            "step from 1.58, at a change of status in 1.21), so a killed attempt may lose its last calls' cost"
        )
    if not callable(getattr(ConversationState, "block_action", None)):
        missing.append("ConversationState.block_action: a stop lets the step in flight run its action")
    try:
        from openhands.tools.terminal.impl import TerminalExecutor

        interrupt = callable(getattr(TerminalExecutor, "interrupt", None))
    except ImportError:
        interrupt = False
    try:
        from openhands.tools.terminal.terminal.tmux_pane_pool import TmuxPanePool

        panes = "_all_panes" in getattr(TmuxPanePool, "__dataclass_fields__", {})
    except ImportError:
        panes = False
    if not (interrupt or panes):
        missing.append(
            "a way to press Ctrl-C in the agent's terminal: a stop waits for the running command until run_batch "
            "kills it at the end of --grace-period"
        )
    return missing


def sdk_version() -> str | None:
    import importlib.metadata

    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return importlib.metadata.version("openhands-sdk")
    return None


def server_say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def run_sdk_driver(argv: list[str], forked: bool = False) -> int:
    """One task through the SDK: conversation folder, work dir and settings where the V1 CLI finds
    them ($OPENHANDS_CONVERSATIONS_DIR, $OPENHANDS_WORK_DIR, $OPENHANDS_PERSISTENCE_DIR). Exit 0
    finished, 1 any other end (error, stuck, step limit, budget, no settings), 128+N after a
    graceful stop on signal N with the state saved."""
    args = parse_driver_args(argv)
    stop = DriverStop()
    stop.install()  # before the slow imports
    text = driver_prompt(args.prompt)
    if text is None:
        return 1
    persistence = Path(os.environ.get("OPENHANDS_PERSISTENCE_DIR") or Path.home() / ".openhands")
    conversations = Path(os.environ.get("OPENHANDS_CONVERSATIONS_DIR") or persistence / "conversations")
    work_dir = os.environ.get("OPENHANDS_WORK_DIR") or os.getcwd()

    from openhands.sdk import Conversation, ConversationExecutionStatus
    from openhands.sdk.security.confirmation_policy import NeverConfirm
    from openhands.tools.preset.default import register_builtins_agents

    if not forked:  # a preloaded server said it once for the batch; here the runner reads the log
        for lack in driver_hooks():
            print(f"{DRIVER_LACKS}openhands-sdk {sdk_version() or UNKNOWN} lacks {lack}", file=sys.stderr, flush=True)
    if stop.requested.is_set():
        return 128 + stop.signals[0]
    try:
        agent = driver_agent(args, persistence, work_dir)
    except (UsageError, OSError, ValueError) as exc:
        print(f"run_batch driver: {exc}", file=sys.stderr)
        return 1
    register_builtins_agents(enable_browser=False)  # the sub-agents the task tool may start
    follower = SpendFollower(args.max_budget, stop)
    conversation = Conversation(
        agent=agent,
        workspace=work_dir,
        persistence_dir=str(conversations),  # the SDK adds /<conversation id>
        max_iteration_per_run=args.max_iterations,
        visualizer=None,
        callbacks=[follower],
    )
    follower.conversation = conversation
    conversation.set_confirmation_policy(NeverConfirm())
    failure = drive_conversation(conversation, text, stop, args.grace)
    settle_state(conversation, stop, failure)
    print(f"Conversation ID: {conversation.id.hex}", flush=True)
    closing = threading.Thread(target=conversation.close, name="close", daemon=True)  # ends its tmux session
    closing.start()
    closing.join(10)
    if stop.signals:
        return 128 + stop.signals[0]
    finished = conversation.state.execution_status == ConversationExecutionStatus.FINISHED
    return 0 if finished and not failure else 1


# ------------------------------------------------------------------------------------------------
# The preloaded SDK: imported once per batch, each attempt a fork of it
# ------------------------------------------------------------------------------------------------
# Importing the SDK and its tools takes seconds of CPU and hundreds of MB (LiteLLM alone is most of
# it), which every attempt paid again. `python run_batch.py --sdk-server` imports them once; the
# runner then asks it, one JSON line on its stdin per attempt, to fork a child that becomes the
# attempt exactly as a fresh interpreter would: its own session, working folder, environment, log
# files, control group; it answers with the child's pid, and with its exit status once it ends.
# A fork copies no thread: the server refuses to serve when the imports left one running
# (docs/openhands.md, "SDK 1.58.2", fork).


def driver_imports() -> None:
    """Everything the driver imports, and what its first LLM call would import late (the HTTP
    stack, LiteLLM's tokenizer), so that a forked attempt imports nothing itself."""
    import httpx
    import litellm
    from openhands.sdk import LLM, Agent, AgentContext, Conversation, LLMSummarizingCondenser  # noqa: F401
    from openhands.sdk.context import load_project_skills  # noqa: F401
    from openhands.sdk.event import ActionEvent  # noqa: F401
    from openhands.sdk.event.conversation_error import ConversationErrorEvent  # noqa: F401
    from openhands.sdk.security.confirmation_policy import NeverConfirm  # noqa: F401

    driver_tools()
    with contextlib.suppress(Exception):
        litellm.token_counter(model="gpt-4o", text="warm up")
    httpx.Client().close()


def driver_refusal() -> str | None:
    """Why the driver cannot run on this SDK at all (it reads the spend from the conversation's
    stats), or None."""
    from openhands.sdk.conversation.conversation_stats import ConversationStats

    if "usage_to_metrics" not in getattr(ConversationStats, "model_fields", {}):
        return "its ConversationStats has no usage_to_metrics, where the driver reads the spend"
    return None


def run_sdk_server() -> int:
    """Import the SDK once, then fork one attempt per request until stdin closes (the runner is
    done, or gone: then the attempts it left run on, and the next run cleans them up as it does
    any dead run's)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # docs/openhands.md, "SDK 1.58.2"
    try:
        driver_imports()
    except Exception as exc:
        server_say({"ready": False, "why": one_line(f"the SDK cannot be imported: {type(exc).__name__}: {exc}")})
        return 1
    if refusal := driver_refusal():
        server_say({"ready": False, "why": f"openhands-sdk {sdk_version() or UNKNOWN} cannot serve: {refusal}"})
        return 1
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:
        why = f"the SDK's imports left {plural(len(threads), 'thread')} running ({', '.join(threads)[:200]})"
        server_say({"ready": False, "why": why + "; a fork would copy them half-alive"})
        return 1
    gc.freeze()  # the imported objects stay shared with every attempt: no copy-on-write of them
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_write)
    for sig in (signal.SIGINT, signal.SIGHUP):  # the runner ends it by closing stdin
        signal.signal(sig, signal.SIG_IGN)
    server_say({"ready": True, "version": sdk_version(), "missing": driver_hooks(), "pid": os.getpid()})
    pending = b""  # requests are read as bytes and split here: a buffered reader would hide the
    while True:  # second of two lines that arrived together from select()
        readable, _, _ = select.select([0, wake_read], [], [])
        if wake_read in readable:
            with contextlib.suppress(OSError):
                os.read(wake_read, 512)
            report_children()
        if 0 in readable:
            data = os.read(0, 1 << 20)
            if not data:
                return 0
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                server_fork(json.loads(line), (wake_read, wake_write))


def report_children() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        server_say({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})


def server_fork(request: dict[str, Any], wake: tuple[int, int]) -> None:
    """Fork one attempt; its pid goes to the runner only once the child has its own session,
    marker and group, so that a stop sent at once reaches it (a Ctrl-C then kills it outright:
    nothing is spent before the driver takes over the signals)."""
    settled_read, settled_write = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(settled_read)
        os.close(settled_write)
        server_say({"id": request.get("id"), "error": f"fork failed: {exc.strerror or exc}"})
        return
    if pid:
        os.close(settled_write)
        with contextlib.suppress(OSError):  # a byte when settled, or the end of file if it died first
            if select.select([settled_read], [], [], 10.0)[0]:
                os.read(settled_read, 1)
        os.close(settled_read)
        server_say({"id": request.get("id"), "pid": pid})
        return
    os.close(settled_read)
    code = 70
    try:
        become_attempt(request, wake, settled_write)
        code = run_sdk_driver(list(request["argv"]), forked=True)
    except BaseException:  # the attempt's stderr says why; the runner records exit 70
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def mark_session(session: str) -> None:
    """Make /proc/<pid>/environ of a forked attempt carry its own session marker, as a process
    started for it would: the kernel shows the environment the server was started with, whose
    marker is a placeholder of fixed length, overwritten here in place (the sweep that finds every
    process of an attempt reads that file)."""
    if not session or len(session) > len(SESSION_PLACEHOLDER):
        return
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50 and 51)
        needle = f"{MARKER_SESSION}={SESSION_PLACEHOLDER}".encode()
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            at = mem.read(end - start).find(needle)
            if at >= 0:
                mem.seek(start + at + len(MARKER_SESSION) + 1)
                mem.write(session.encode() + b"\0" + b"~" * (len(SESSION_PLACEHOLDER) - len(session) - 1))


def become_attempt(request: dict[str, Any], wake: tuple[int, int], settled: int) -> None:
    """In the forked child: what a fresh interpreter started for the attempt would have, its own
    session, control group, folder, stdin, log files and environment; `settled` is written once
    its session, marker and group are its own."""
    signal.set_wakeup_fd(-1)
    for fd in wake:
        os.close(fd)
    for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    os.setsid()
    mark_session(str(request["env"].get(MARKER_SESSION, "")))
    for procs in request.get("cgroups", []):
        with open(procs, "w", encoding="ascii") as f:
            f.write("0")
    os.write(settled, b"1")
    os.close(settled)
    os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        log = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        os.dup2(log, fd)
        os.close(log)
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [str(Path(__file__).absolute()), SDK_DRIVER_FLAG, *request["argv"]]


# ================================================================================================
# The program: which of the above a command line asks for
# ================================================================================================


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [SDK_SERVER_FLAG]:  # run by OpenHands' own Python, once per batch
        code = run_sdk_server()
        sys.stdout.flush()
        os._exit(code)
    if argv[:1] == [SDK_DRIVER_FLAG]:  # run by OpenHands' own Python, for one attempt
        code = run_sdk_driver(argv[1:])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # not waiting on a thread stuck in an LLM call, nor on the SDK's teardown
    environ = dict(os.environ)
    try:
        settings = settings_from_args(argv, environ)
        if settings.evaluate_only:
            return evaluate_only(settings, environ)
        return report(settings) if settings.report else run(settings, environ)
    except UsageError as exc:
        print(f"run-batch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the handlers were in place
        return 128 + signal.SIGINT
    except BrokenPipeError:  # `run-batch --dry-run | head -1`: the reader has what it wanted
        console_lost()
        return 128 + signal.SIGPIPE
    except OSError as exc:  # the machine's, not the user's: a full disk, a vanished folder
        print(
            f"run-batch: error: {exc.filename or 'the output folder'}: {exc.strerror or exc}; records already "
            "written are kept, run the same command again",
            file=sys.stderr,
        )
        return 1


def main_entry() -> None:
    """Console script `run-batch`."""
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
