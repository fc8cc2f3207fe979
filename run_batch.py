#!/usr/bin/env python3
"""run_batch: run a folder of task prompts through OpenHands' headless mode.

Every `*.md` file in --prompt-dir is one task. Each task runs as
`<command> -f <prompt> --config-file <private temp config> -n <fresh session name>`, serially or
in parallel, with a per-task timeout; every trajectory and log is kept, and one JSON line per
attempt is appended to the results file: status, agent state, time, cost and tokens.

The file reads top to bottom in the order the data flows:
command line -> discover prompts -> configure -> launch and wait -> read the outcome -> record
-> report, then the batch that ties them together.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as dt
import fnmatch
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__version__ = "0.3.0"

DEFAULT_COMMAND = "poetry run python -m openhands.core.main"
DEFAULT_GRACE_PERIOD = 30.0
TAIL_CHARS = 4000  # how much of each log's end goes into a record; the whole text is in logs/
SECRET_MIN_LENGTH = 8  # shorter values are not treated as secrets (they would mask ordinary words)
MARKER_RUN = "RUN_BATCH_RUN_ID"  # environment marker every process of a task inherits
MARKER_SESSION = "RUN_BATCH_SESSION"
STATUSES = ("success", "failed", "timeout", "error", "interrupted")


class UsageError(Exception):
    """A user's mistake: reported in one line, exit status 2, nothing written."""


# ================================================================================================
# Command line
# ================================================================================================

EPILOG = """\
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
130/143 stopped by SIGINT/SIGTERM.
"""


@dataclass(frozen=True)
class Settings:
    prompt_dir: Path
    project_dir: Path
    output_dir: Path
    max_workers: int
    timeout: float | None
    grace_period: float
    config_name: str
    results_name: str
    command: tuple[str, ...]
    base_config: Path | None
    runtime: str | None
    max_iterations: int | None
    max_budget_per_task: float | None
    llm_config: str | None
    agent_cls: str | None
    extra_args: tuple[str, ...]
    retries: int
    retry_backoff: float
    rerun: bool
    keep_containers: bool
    quiet: bool
    dry_run: bool
    report: bool
    report_format: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    tasks: tuple[str, ...]
    limit: int | None
    max_total_cost: float | None
    start_delay: float
    shard: tuple[int, int] | None
    keep_poetry_run: bool = False
    venv: Path | None = None  # set when `poetry run` was resolved to the environment's python

    @property
    def results_path(self) -> Path:
        return self.output_dir / self.results_name


def _number(minimum: float, inclusive: bool) -> Callable[[str], float]:
    """argparse type: a finite number above (or at least) minimum."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value != value or value == float("inf") or value < minimum or (value == minimum and not inclusive):
            bound = "zero or more" if inclusive else "greater than zero"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
        return value

    return parse


_positive_float = _number(0.0, inclusive=False)
_non_negative_float = _number(0.0, inclusive=True)


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
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="run-batch",
        description="Run every *.md prompt in a folder through OpenHands' headless mode, with a "
        "per-task timeout, keeping every trajectory and log, and append one JSON line per "
        "attempt (status, agent state, time, cost, tokens) to a results file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("where things are")
    io.add_argument("--prompt-dir", metavar="DIR", help="folder of task prompts (*.md), e.g. prompts/")
    io.add_argument("--project-dir", metavar="DIR", default=".",
                    help="the OpenHands checkout; tasks run with it as working directory "
                    "(default: the current directory), e.g. --project-dir ~/OpenHands")
    io.add_argument("--output-dir", metavar="DIR",
                    help="where results, trajectories and logs go (default: "
                    "<project-dir>/batch_output; a relative path is taken relative to --project-dir), "
                    "e.g. --output-dir /data/run-07")
    io.add_argument("--config-name", metavar="NAME", default="batch_config.toml",
                    help="file name of each task's temporary OpenHands config; it lives in a "
                    "private temporary folder and is removed after the task (default: %(default)s), "
                    "e.g. --config-name gittaskbench.toml")
    io.add_argument("--results-name", metavar="NAME", default="batch_results.jsonl",
                    help="results file inside --output-dir (default: %(default)s; with --shard, "
                    "batch_results.shard-K-of-N.jsonl), e.g. --results-name nightly.jsonl")
    io.add_argument("--base-config", metavar="PATH",
                    help="OpenHands config.toml to start from (default: <project-dir>/config.toml "
                    "when it exists), e.g. --base-config ~/oh/config.toml")

    run = p.add_argument_group("how tasks run")
    run.add_argument("--command", metavar="CMD", default=DEFAULT_COMMAND,
                     help="OpenHands entrypoint, split like a shell would but never run through one "
                     "(default: %(default)r), e.g. --command '.venv/bin/python -m openhands.core.main'")
    run.add_argument("--keep-poetry-run", action="store_true",
                     help="with the default --command, run `poetry run` for every task; by default "
                     "Poetry's interpreter is looked up once per batch and run directly, with the "
                     "same environment `poetry run` gives (it saves 0.3-1 s per task), "
                     "e.g. --keep-poetry-run")
    run.add_argument("--max-workers", metavar="N", type=_int_at_least(1), default=1,
                     help="tasks running at once (default: %(default)s), e.g. --max-workers 4")
    run.add_argument("--timeout", metavar="SECONDS", type=_positive_float, default=None,
                     help="per task wall-clock limit (default: none), e.g. --timeout 1800")
    run.add_argument("--grace-period", metavar="SECONDS", type=_non_negative_float,
                     default=DEFAULT_GRACE_PERIOD,
                     help="after a timeout or Ctrl-C, how long OpenHands gets to stop by itself "
                     "after SIGINT (it then saves its trajectory) before every process of the task "
                     "is killed. The agent's running command is killed at once, so with the CLI "
                     "runtime OpenHands stops in seconds; the default (%(default)ss) covers a slow "
                     "save or a Docker sandbox, e.g. --grace-period 150")
    run.add_argument("--retries", metavar="N", type=_int_at_least(0), default=0,
                     help="try an attempt that failed for an infrastructure reason (OpenHands or "
                     "its runtime failed to start, LLM unavailable) up to N more times, with "
                     "exponential backoff (default: 0), e.g. --retries 2")
    run.add_argument("--retry-backoff", metavar="SECONDS", type=_non_negative_float, default=10.0,
                     help="first retry delay; doubles each time, with jitter (default: %(default)s), "
                     "e.g. --retry-backoff 30")
    run.add_argument("--rerun", action="store_true",
                     help="run every selected task, even those already recorded as success, "
                     "e.g. --rerun --tasks flaky-one")
    run.add_argument("--keep-containers", action="store_true",
                     help="leave each task's Docker container (openhands-runtime-<sid>) in place for "
                     "inspection, e.g. --runtime docker --keep-containers")
    run.add_argument("--start-delay", metavar="SECONDS", type=_non_negative_float, default=0.0,
                     help="at least this long between two task starts (rate limits, container "
                     "start storms), e.g. --start-delay 5")
    run.add_argument("--max-total-cost", metavar="USD", type=_positive_float, default=None,
                     help="once this run's recorded cost reaches USD, start no new task; "
                     "the rest are reported as skipped, e.g. --max-total-cost 25")

    oh = p.add_argument_group("OpenHands settings for every task")
    oh.add_argument("--runtime", metavar="NAME", help="[core] runtime, e.g. --runtime cli")
    oh.add_argument("--max-iterations", metavar="N", type=_int_at_least(1),
                    help="agent step limit (-i), e.g. --max-iterations 50")
    oh.add_argument("--max-budget-per-task", metavar="USD", type=_positive_float,
                    help="LLM spending limit per task (-b), e.g. --max-budget-per-task 2.5")
    oh.add_argument("--llm-config", metavar="NAME", help="[llm.NAME] section to use (-l), e.g. --llm-config claude")
    oh.add_argument("--agent-cls", metavar="NAME", help="agent class (-c), e.g. CodeActAgent")

    sel = p.add_argument_group("which tasks")
    sel.add_argument("--include", metavar="GLOB", action="append", default=[],
                     help="only task names matching GLOB (repeatable), e.g. --include 'Trans*'")
    sel.add_argument("--exclude", metavar="GLOB", action="append", default=[],
                     help="leave out task names matching GLOB (repeatable), e.g. --exclude '*-slow'")
    sel.add_argument("--tasks", metavar="NAME,...", action="append", default=[],
                     help="only these task names, comma separated, e.g. --tasks Trans_01,Trans_07")
    sel.add_argument("--limit", metavar="N", type=_int_at_least(1),
                     help="at most N tasks (after the other selections), e.g. --limit 3")
    sel.add_argument("--shard", metavar="K/N",
                     help="run shard K of N (1-based) of the sorted tasks, each shard with its own "
                     "results file; 'auto' reads SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, or "
                     "JOB_COMPLETION_INDEX with N from RUN_BATCH_SHARDS, e.g. --shard 3/8")

    out = p.add_argument_group("what is shown")
    out.add_argument("--dry-run", action="store_true",
                     help="show the tasks that would run, the command and the effective config "
                     "(secrets masked); run nothing, write nothing, e.g. --dry-run --include 'api-*'")
    out.add_argument("--report", action="store_true",
                     help="summarise an existing --output-dir (latest attempt per task, every "
                     "results file in it) and run nothing, e.g. --report --format markdown")
    out.add_argument("--format", dest="report_format", choices=("table", "json", "markdown"),
                     default="table", help="--report output format (default: %(default)s), "
                     "e.g. --format json")
    out.add_argument("--quiet", action="store_true",
                     help="print only the final summary, e.g. from cron: --quiet >> batch.log")
    out.add_argument("--version", action="version", version=f"run_batch {__version__}")
    p.add_argument("openhands_args", nargs="*", metavar="-- OPENHANDS_ARGS",
                   help="anything after -- is passed to OpenHands unchanged, e.g. -- --selected-repo me/repo")
    return p


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
                raise UsageError("--shard auto: set SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, "
                                 "or JOB_COMPLETION_INDEX and RUN_BATCH_SHARDS, or give --shard K/N")
        except ValueError:
            raise UsageError("--shard auto: the shard variables must be whole numbers; "
                             "check SLURM_ARRAY_* or JOB_COMPLETION_INDEX/RUN_BATCH_SHARDS") from None
    else:
        m = re.fullmatch(r"(\d+)/(\d+)", text)
        if not m:
            raise UsageError(f"--shard {text!r}: expected K/N such as 2/8, or auto")
        k, n = int(m.group(1)), int(m.group(2))
    if not 1 <= k <= n:
        raise UsageError(f"--shard {k}/{n}: K must be between 1 and N")
    return k, n


def settings_from_args(argv: list[str], environ: dict[str, str]) -> Settings:
    parser = build_parser()
    # Everything after the first `--` goes to OpenHands untouched (argparse would parse it).
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    if args.openhands_args:
        raise UsageError(f"unexpected argument {args.openhands_args[0]!r}; "
                         "put OpenHands arguments after --")

    project_dir = Path(args.project_dir).expanduser().absolute()
    if not project_dir.is_dir():
        raise UsageError(f"--project-dir {args.project_dir}: not a folder; give the OpenHands checkout")
    output_dir = Path(args.output_dir).expanduser() if args.output_dir else Path("batch_output")
    if not output_dir.is_absolute():
        output_dir = project_dir / output_dir
    if "/" in args.results_name or args.results_name in ("", ".", ".."):
        raise UsageError(f"--results-name {args.results_name!r}: give a file name, not a path")
    if "/" in args.config_name or args.config_name in ("", ".", ".."):
        raise UsageError(f"--config-name {args.config_name!r}: give a file name, not a path")

    shard = parse_shard(args.shard, environ)
    results_name = args.results_name
    if shard and args.results_name == parser.get_default("results_name"):
        stem = Path(results_name)
        results_name = f"{stem.stem}.shard-{shard[0]}-of-{shard[1]}{stem.suffix}"

    prompt_dir = Path(args.prompt_dir).expanduser().absolute() if args.prompt_dir else None
    if not args.report:
        if prompt_dir is None:
            raise UsageError("--prompt-dir is required: the folder of *.md task prompts")
        if not prompt_dir.is_dir():
            raise UsageError(f"--prompt-dir {args.prompt_dir}: not a folder of *.md prompts")

    try:
        command = tuple(shlex.split(args.command))
    except ValueError as exc:
        raise UsageError(f"--command {args.command!r}: {exc}; check the quotes") from None
    if not command:
        raise UsageError("--command is empty; give the OpenHands entrypoint")
    if not args.report:
        command = (resolve_program(command[0], project_dir, environ),) + command[1:]

    base_config: Path | None
    if args.base_config:
        base_config = Path(args.base_config).expanduser().absolute()
        if not base_config.is_file():
            raise UsageError(f"--base-config {args.base_config}: no such file")
    else:
        default = project_dir / "config.toml"
        base_config = default if default.is_file() else None

    names = tuple(n.strip() for group in args.tasks for n in group.split(",") if n.strip())
    return Settings(
        prompt_dir=prompt_dir or Path("."), project_dir=project_dir, output_dir=output_dir,
        max_workers=args.max_workers, timeout=args.timeout, grace_period=args.grace_period,
        config_name=args.config_name, results_name=results_name, command=command,
        base_config=base_config, runtime=args.runtime, max_iterations=args.max_iterations,
        max_budget_per_task=args.max_budget_per_task, llm_config=args.llm_config,
        agent_cls=args.agent_cls, extra_args=tuple(extra), retries=args.retries,
        retry_backoff=args.retry_backoff, rerun=args.rerun, keep_containers=args.keep_containers,
        quiet=args.quiet, dry_run=args.dry_run, report=args.report,
        report_format=args.report_format, include=tuple(args.include),
        exclude=tuple(args.exclude), tasks=names, limit=args.limit,
        max_total_cost=args.max_total_cost, start_delay=args.start_delay, shard=shard,
        keep_poetry_run=args.keep_poetry_run,
    )


def resolve_program(program: str, project_dir: Path, environ: dict[str, str]) -> str:
    """The command's program as an absolute path, found the way the OS would from project_dir."""
    expanded = os.path.expanduser(program)
    if os.sep in expanded:
        path = Path(expanded) if os.path.isabs(expanded) else project_dir / expanded
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise UsageError(f"--command: {program} is not an executable file; check the path")
    found = shutil.which(expanded, path=environ.get("PATH", os.defpath))
    if not found:
        hint = " (install Poetry, or pass --command with OpenHands' python)" if expanded == "poetry" else ""
        raise UsageError(f"--command: {program!r} not found on PATH{hint}")
    return found


def resolve_poetry(settings: Settings, environ: dict[str, str]) -> Settings:
    """Replace the default `poetry run python -m openhands.core.main` by the Poetry
    environment's own python, looked up once per batch: `poetry run` costs 0.4-1 s at every
    launch, and all it adds is VIRTUAL_ENV and the environment's bin folder first on PATH, which
    child_environment() gives too. Any doubt keeps `poetry run`."""
    default = tuple(shlex.split(DEFAULT_COMMAND))
    if settings.keep_poetry_run or Path(settings.command[0]).name != "poetry" or settings.command[1:] != default[1:]:
        return settings
    try:
        found = subprocess.run([settings.command[0], "env", "info", "--executable"], cwd=settings.project_dir,
                               env=environ, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return settings
    python = Path(found.stdout.strip().splitlines()[-1]) if found.returncode == 0 and found.stdout.strip() else None
    if python is None or not python.is_file():
        return settings
    venv = python.parent.parent
    return dataclasses.replace(settings, command=(str(python), "-m", "openhands.core.main"), venv=venv)


# ================================================================================================
# Discover prompts
# ================================================================================================


@dataclass(frozen=True)
class Task:
    name: str  # the prompt's file name without .md
    prompt_path: Path
    stem: str  # file-name stem for this task's trajectory and logs (unique even case-blind)
    prompt_sha256: str | None
    problem: str | None  # why it cannot be launched (empty, unreadable, not UTF-8), else None


def inspect_prompt(data: bytes) -> str | None:
    """Why this prompt cannot be given to OpenHands, or None when it can (pure)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"prompt is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); save it as UTF-8"
    if not text.strip():
        return "prompt is empty"
    return None


def discover_tasks(prompt_dir: Path) -> list[Task]:
    """Every visible `*.md` entry of prompt_dir that is not a folder, sorted by name."""
    try:
        entries = sorted(e for e in os.listdir(prompt_dir) if e.endswith(".md") and not e.startswith("."))
    except OSError as exc:
        raise UsageError(f"--prompt-dir {prompt_dir}: cannot list it ({exc.strerror})") from None
    paths = [prompt_dir / e for e in entries if not (prompt_dir / e).is_dir()]
    folded: dict[str, int] = {}
    for path in paths:
        key = path.name[:-3].casefold()
        folded[key] = folded.get(key, 0) + 1
    tasks = []
    for path in paths:
        name = readable(path.name[:-3])
        # Names equal but for case would share artefact files on a case-blind file system.
        stem = name if folded[path.name[:-3].casefold()] == 1 else f"{name}~{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        if name != path.name[:-3]:  # TOML and JSON hold only text: such a path cannot be passed on
            tasks.append(Task(name, path, stem, None, "the file name is not valid UTF-8; rename the prompt"))
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            tasks.append(Task(name, path, stem, None, f"cannot read prompt: {exc.strerror or exc}"))
            continue
        tasks.append(Task(name, path, stem, hashlib.sha256(data).hexdigest(), inspect_prompt(data)))
    return tasks


def readable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (kept by Python as lone surrogates, which
    no UTF-8 file can hold) become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def select_tasks(tasks: list[Task], settings: Settings) -> list[Task]:
    """Apply --tasks, --include, --exclude, --shard and --limit, in that order (pure)."""
    chosen = tasks
    if settings.tasks:
        known = {t.name for t in tasks}
        missing = [n for n in settings.tasks if n not in known]
        if missing:
            raise UsageError(f"--tasks: no prompt named {missing[0]!r} in {settings.prompt_dir}")
        chosen = [t for t in chosen if t.name in settings.tasks]
    if settings.include:
        chosen = [t for t in chosen if any(fnmatch.fnmatchcase(t.name, g) for g in settings.include)]
    if settings.exclude:
        chosen = [t for t in chosen if not any(fnmatch.fnmatchcase(t.name, g) for g in settings.exclude)]
    if settings.shard:
        k, n = settings.shard
        chosen = [t for i, t in enumerate(chosen) if i % n == k - 1]
    if settings.limit is not None:
        chosen = chosen[: settings.limit]
    return chosen


# ================================================================================================
# Configure
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
    except OSError as exc:
        raise UsageError(f"base config {path}: cannot read it ({exc.strerror})") from None
    for section in ("core", "llm", "agent", "sandbox", "security"):
        if section in config and not isinstance(config[section], dict):
            raise UsageError(f"base config {path}: [{section}] must be a table, not "
                             f"{type(config[section]).__name__}; fix the file")
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
    return tuple(sorted(found, key=len, reverse=True))  # longest first: no partial masking


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "****")
    return text


def effective_core(config: dict[str, Any], environ: dict[str, str], key: str, default: str) -> str:
    """A [core] setting as OpenHands would see it: environment > TOML > default."""
    return environ.get(key.upper()) or config.get("core", {}).get(key) or default


def task_config(base: dict[str, Any], settings: Settings, trajectory_path: Path, run_id: str,
                session: str) -> dict[str, Any]:
    """The base config plus the runner's per-task settings (pure)."""
    config: dict[str, Any] = copy.deepcopy(base)  # the base config stays untouched for the next task
    core = config.setdefault("core", {})
    core["save_trajectory_path"] = str(trajectory_path)
    if settings.runtime:
        core["runtime"] = settings.runtime
    if settings.max_iterations is not None:
        core["max_iterations"] = settings.max_iterations
    if settings.max_budget_per_task is not None:
        core["max_budget_per_task"] = settings.max_budget_per_task
    # Label Docker sandboxes so a later run can find a dead run's containers, and only its own.
    sandbox = config.setdefault("sandbox", {})
    kwargs = sandbox.setdefault("docker_runtime_kwargs", {})
    if isinstance(kwargs, dict):
        labels = kwargs.setdefault("labels", {})
        if isinstance(labels, dict):
            labels.update({"run_batch.run": run_id, "run_batch.session": session})
    return config


def child_environment(environ: dict[str, str], settings: Settings, trajectory_path: Path,
                      run_id: str, session: str) -> dict[str, str]:
    """OpenHands' environment: the user's, with the runner's settings winning (pure).

    An environment variable beats the TOML file in OpenHands, so a user's SAVE_TRAJECTORY_PATH or
    RUNTIME is replaced here by the runner's value rather than left to override it.
    """
    env = dict(environ)
    if settings.venv is not None:  # what `poetry run` would have set
        env.pop("PYTHONHOME", None)
        env["VIRTUAL_ENV"] = str(settings.venv)
        env["PATH"] = os.pathsep.join([str(settings.venv / "bin"), environ.get("PATH", os.defpath)])
    env["SAVE_TRAJECTORY_PATH"] = str(trajectory_path)
    if settings.runtime:
        env["RUNTIME"] = settings.runtime
    for key, value in (("MAX_ITERATIONS", settings.max_iterations),
                       ("MAX_BUDGET_PER_TASK", settings.max_budget_per_task)):
        if value is not None:
            env[key] = str(value)
    if environ.get("SANDBOX_DOCKER_RUNTIME_KWARGS"):
        # It beats [sandbox] docker_runtime_kwargs in the TOML: the runner's labels go in here too.
        env["SANDBOX_DOCKER_RUNTIME_KWARGS"] = with_labels(environ["SANDBOX_DOCKER_RUNTIME_KWARGS"], run_id, session)
    env[MARKER_RUN] = run_id
    env[MARKER_SESSION] = session
    env["PYTHONUNBUFFERED"] = "1"
    return env


def with_labels(kwargs_literal: str, run_id: str, session: str) -> str:
    """The user's SANDBOX_DOCKER_RUNTIME_KWARGS (a Python dict literal) plus the runner's container
    labels; left as it is when it is not a dict literal (pure)."""
    import ast

    try:
        kwargs = ast.literal_eval(kwargs_literal)
    except (ValueError, SyntaxError):
        return kwargs_literal
    if not isinstance(kwargs, dict) or not isinstance(kwargs.get("labels", {}), dict):
        return kwargs_literal
    kwargs["labels"] = {**kwargs.get("labels", {}), "run_batch.run": run_id, "run_batch.session": session}
    return repr(kwargs)


def session_name(task: Task, run_id: str, attempt: int) -> str:
    """A fresh OpenHands session name per attempt (a reused name resumes the old session).

    Only [A-Za-z0-9_.-], starting with a letter or digit: it ends up in a container name, and a
    leading dash would be read as an option.
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", task.name).strip("-._")[:24] or "task"
    return f"{slug}-{run_id}-{attempt}"


def session_id(name: str, legacy: bool = False) -> str:
    """OpenHands' sid for `-n name` (openhands/core/setup.py generate_sid; its jwt secret is a
    SecretStr, so the formatted text is the mask '**********', the same on every machine)."""
    digest = hashlib.sha256(f"{name}**********".encode()).hexdigest()
    if legacy:  # before 0.51
        return f"{name}-{digest[:16]}"
    if len(name) > 16:
        return f"{name[:16]}-{digest[:15]}"[:32]
    return f"{name}-{digest[:32 - len(name) - 1]}"[:32]


def build_command(settings: Settings, prompt_path: Path, config_path: Path, session: str) -> list[str]:
    """argv for one attempt; never a shell. Flags beat env and TOML in OpenHands."""
    argv = [*settings.command, "-f", str(prompt_path.absolute()), "--config-file", str(config_path),
            "-n", session]
    if settings.max_iterations is not None:
        argv += ["-i", str(settings.max_iterations)]
    if settings.max_budget_per_task is not None:
        argv += ["-b", str(settings.max_budget_per_task)]
    if settings.llm_config:
        argv += ["-l", settings.llm_config]
    if settings.agent_cls:
        argv += ["-c", settings.agent_cls]
    return argv + list(settings.extra_args)


def write_private_config(folder: Path, name: str, config: dict[str, Any]) -> Path:
    """Write the TOML config readable by the user only (it may hold API keys)."""
    import tomli_w  # checked at start-up, see require_tomli_w()

    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        tomli_w.dump(config, f)
    return path


def require_tomli_w() -> None:
    try:
        import tomli_w  # noqa: F401
    except ImportError:
        raise UsageError(f"the package tomli-w is missing: run `{Path(sys.executable).name} -m pip "
                         "install tomli-w` (inside OpenHands: `poetry run pip install tomli-w`)") from None


# ================================================================================================
# Launch and wait
# ================================================================================================


def marked_processes(run_id: str, session: str | None = None) -> list[int]:
    """Live processes whose environment carries this run's (and session's) marker.

    OpenHands' CLI runtime starts each command in its own session, so a process-group kill
    misses them, and once reparented they are no one's descendants; the inherited environment
    still says whose they are.
    """
    wanted = [f"{MARKER_RUN}={run_id}".encode()]
    if session is not None:
        wanted.append(f"{MARKER_SESSION}={session}".encode())
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
            with open(f"/proc/{pid}/environ", "rb") as f:
                entries = f.read().split(b"\0")
        except OSError:  # gone, or not ours
            continue
        if all(w in entries for w in wanted) and not is_zombie(pid):
            found.append(pid)
    return found


def is_zombie(pid: int) -> bool:
    """A zombie has finished; PID 1 reaps reparented ones in its own time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] in (b"Z", b"X")
    except (OSError, ValueError):
        return True


def signal_quietly(pid: int, sig: int, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid, sig)


def kill_everything(proc: subprocess.Popen[bytes] | None, run_id: str, session: str | None,
                    patience: float = 5.0) -> list[int]:
    """SIGKILL the task's process group and every process carrying its marker, until none is
    left (a zombie counts as gone). Returns the pids that had to be killed."""
    killed: list[int] = []
    if proc is not None and proc.poll() is None:
        signal_quietly(proc.pid, signal.SIGKILL, group=True)
        killed.append(proc.pid)
    deadline = time.monotonic() + patience
    while True:
        left = marked_processes(run_id, session)
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


def wait_for_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code, or None if still running after `timeout` seconds. Uses a pidfd where the
    OS has one, so an exit is noticed at once rather than at the next poll."""
    if timeout <= 0:
        return proc.poll()
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            fd = pidfd_open(proc.pid)
        except OSError:
            fd = None
        if fd is not None:
            try:
                import select

                select.select([fd], [], [], timeout)
            finally:
                os.close(fd)
            return proc.poll()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


@dataclass
class StopSignal:
    """What the batch was asked: stop gracefully (first Ctrl-C/SIGTERM) or at once (second)."""

    requested: int = 0  # the signal number (SIGINT also when the runner stops itself), 0 while running
    kill_now: bool = False
    failure: str | None = None  # why the runner stopped itself
    event: threading.Event = field(default_factory=threading.Event)

    def request(self, signum: int) -> None:
        if self.requested:
            self.kill_now = True
        else:
            self.requested = signum
        self.event.set()

    @property
    def reason(self) -> str:
        return self.failure or (f"{signal.Signals(self.requested).name} received" if self.requested else "")

    def fail(self, why: str) -> None:
        """Stop the batch the graceful way because the runner cannot go on."""
        if not self.requested:
            self.failure = why
            self.request(signal.SIGINT)


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


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def launch_and_wait(argv: list[str], env: dict[str, str], cwd: Path, stdout_log: Path,
                    stderr_log: Path, settings: Settings, stop: StopSignal, run_id: str,
                    session: str) -> Launch:
    started_at, t0 = utc_now(), time.monotonic()
    try:
        with open(stdout_log, "wb") as out, open(stderr_log, "wb") as err:
            # Own session: a Ctrl-C on the terminal reaches the runner only, which then stops
            # tasks the graceful way; OpenHands' stdin is closed (a question would hang it).
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, start_new_session=True)
    except OSError as exc:
        return Launch(None, False, False, started_at, utc_now(), time.monotonic() - t0,
                      f"could not start {argv[0]}: {exc.strerror or exc}")
    deadline = t0 + settings.timeout if settings.timeout else None
    timed_out = interrupted = False
    grace_until: float | None = None
    return_code: int | None = None
    try:
        while return_code is None:
            now = time.monotonic()
            if grace_until is None and (stop.requested or (deadline is not None and now >= deadline)):
                timed_out, interrupted = not stop.requested, bool(stop.requested)
                # OpenHands 0.60+ stops on SIGINT and saves its trajectory, but only after the
                # agent's running command ends: end those commands now (they are in their own
                # sessions, outside OpenHands' process group).
                signal_quietly(proc.pid, signal.SIGINT, group=True)  # as a terminal's Ctrl-C would
                for pid in marked_processes(run_id, session):
                    if _pgid(pid) != proc.pid:
                        signal_quietly(pid, signal.SIGKILL)
                grace_until = now + settings.grace_period
            if stop.kill_now or (grace_until is not None and now >= grace_until):
                interrupted = interrupted or bool(stop.requested and not timed_out)
                break
            wakes = [0.5]
            if grace_until is not None:
                wakes.append(grace_until - now)
            elif deadline is not None:
                wakes.append(deadline - now)
            return_code = wait_for_exit(proc, max(0.0, min(wakes)))
    finally:
        # Whatever happened, nothing the task started stays alive (background servers too).
        kill_everything(proc, run_id, session)
    if return_code is None:
        return_code = proc.returncode
    return Launch(return_code, timed_out, interrupted, started_at, utc_now(), time.monotonic() - t0)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def remove_container(sid: str, warn: RunLog) -> None:
    """Remove this task's own Docker sandbox (OpenHands only stops it, or leaves it running)."""
    docker = shutil.which("docker")
    if docker is None:
        warn.once("docker-missing", "Docker runtime but no `docker` command: containers not removed")
        return
    try:
        done = subprocess.run([docker, "rm", "-f", f"openhands-runtime-{sid}"], capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        warn.once("docker-failed", f"could not remove Docker containers: {exc}")
        return
    if done.returncode != 0 and "No such container" not in done.stderr:
        warn.once("docker-failed", f"could not remove Docker containers: {done.stderr.strip()[:200]}")


def remove_run_containers(run_id: str, warn: RunLog) -> int:
    """Remove every container a (dead) run labelled as its own; never by name prefix alone."""
    docker = shutil.which("docker")
    if docker is None:
        return 0
    try:
        listed = subprocess.run([docker, "ps", "-aq", "--filter", f"label=run_batch.run={run_id}"],
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        ids = listed.stdout.split() if listed.returncode == 0 else []
        if ids:
            subprocess.run([docker, "rm", "-f", *ids], capture_output=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        return len(ids)
    except (OSError, subprocess.TimeoutExpired):
        warn.once("docker-failed", "could not list Docker containers of an earlier run")
        return 0


# ================================================================================================
# Read the outcome
# ================================================================================================

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_STATE = re.compile(r"Setting agent\(\w+\) state from AgentState\.(\w+) to AgentState\.(\w+)")
_REASONS = (
    re.compile(r"(Agent reached maximum iteration[^\n]*)"),
    re.compile(r"(Agent reached maximum budget[^\n]*)"),
    re.compile(r"(Agent got stuck in a loop)"),
    re.compile(r"(STATUS\$ERROR_[A-Z_]+)"),
)
_AGENT_ERROR = re.compile(r"Error while running the agent \(session ID: [^)]*\): (.*)")
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b:?.*)$")
_LOG_PREFIX = re.compile(r"^\d\d:\d\d:\d\d - openhands:(\w+): \S+ - (.*)$")
# Cost and token lines, in every format OpenHands has printed (see openhands-headless.md).
_ACTION_METRICS = re.compile(
    r"Action metrics - accumulated_cost: ([\d.eE+-]+),.*?accumulated tokens \(prompt/completion\): (\d+)/(\d+)")
_ACTION_LATEST = re.compile(r"latest tokens \(prompt/completion/cache_read/cache_write\): (\d+)/(\d+)/(\d+)/(\d+)")
_DEBUG_COST = re.compile(r"Accumulated Cost: ([\d.]+) USD")
_DEBUG_TOKENS = re.compile(r"Input tokens: ([\d,]+)(?: \| Output tokens: ([\d,]+))?")
_BOX_COST = re.compile(r"Total Cost(?: \(USD\))?:\s*\$\s*([\d,.]+)")
_BOX_IN = re.compile(r"Total Input Tokens:\s*([\d,]+)")
_BOX_OUT = re.compile(r"Total Output Tokens:\s*([\d,]+)")
_BOX_CACHE_READ = re.compile(r"Cache Hits?:\s*([\d,]+)")
_BOX_CACHE_WRITE = re.compile(r"Cache Writes?:\s*([\d,]+)")


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


def _int(text: str | None) -> int | None:
    return int(text.replace(",", "")) if text else None


def scan_output(lines: Iterable[str]) -> OutputFacts:
    """Facts from OpenHands' log text, line by line so any size fits in memory (pure)."""
    facts = OutputFacts()
    action: tuple[str, str, str] | None = None
    latest_cache = [0, 0]
    debug_cost: str | None = None
    debug_in = debug_out = 0
    box: dict[str, int | float] = {}
    after_traceback = False
    for raw in lines:
        line = ANSI.sub("", raw.rstrip("\r\n")) if "\x1b" in raw else raw.rstrip("\r\n")
        # Cheap substring tests first: most lines are none of these.
        if "AgentState." in line and (m := _STATE.search(line)):
            facts.agent_state = m.group(2)
        if "Agent " in line or "STATUS$" in line:
            for pattern in _REASONS:
                if m := pattern.search(line):
                    facts.reason = m.group(1).strip()
        if "Error while running the agent" in line and (m := _AGENT_ERROR.search(line)):
            facts.last_exception = m.group(1).strip()
        if line.startswith("Traceback (most recent call last)"):
            after_traceback = True
        elif after_traceback and line and not line[0].isspace():
            if m := _EXCEPTION.match(line):
                facts.last_exception = m.group(1).strip()
            after_traceback = False
        if "openhands:ERROR" in line and (m := _LOG_PREFIX.match(line)):
            facts.last_error_line = m.group(2).strip()
        if "metrics" in line and (m := _ACTION_METRICS.search(line)):
            action = (m.group(1), m.group(2), m.group(3))
            if lm := _ACTION_LATEST.search(line):
                latest_cache[0] += int(lm.group(3))
                latest_cache[1] += int(lm.group(4))
        if "Cost" in line:
            if m := _DEBUG_COST.search(line):
                debug_cost = m.group(1)
            if m := _BOX_COST.search(line):
                box["cost"] = float(m.group(1).replace(",", ""))
        if "tokens" in line and (m := _DEBUG_TOKENS.search(line)):
            debug_in += _int(m.group(1)) or 0
            debug_out += _int(m.group(2)) or 0
        if "Tokens" in line:
            if m := _BOX_IN.search(line):
                box["in"] = _int(m.group(1)) or 0
            if m := _BOX_OUT.search(line):
                box["out"] = _int(m.group(1)) or 0
        if "Cache" in line:
            if m := _BOX_CACHE_READ.search(line):
                box["cache_read"] = _int(m.group(1)) or 0
            if m := _BOX_CACHE_WRITE.search(line):
                box["cache_write"] = _int(m.group(1)) or 0
    if action:  # full precision, every LLM, accumulated
        facts.metrics = Metrics(float(action[0]), int(action[1]), int(action[2]),
                                latest_cache[0], latest_cache[1], "output")
    elif box:
        facts.metrics = Metrics(box.get("cost"), box.get("in"), box.get("out"),  # type: ignore[arg-type]
                                box.get("cache_read"), box.get("cache_write"), "output")  # type: ignore[arg-type]
    elif debug_cost is not None:  # 2 decimals, agent LLM only; tokens are per call, summed
        facts.metrics = Metrics(float(debug_cost), debug_in or None, debug_out or None, None, None,
                                "output")
    return facts


def metrics_from_events(events: Iterable[dict[str, Any]], source: str) -> Metrics:
    """Totals from the last event that carries llm_metrics (pure)."""
    last: dict[str, Any] | None = None
    for event in events:
        if isinstance(event, dict) and isinstance(event.get("llm_metrics"), dict):
            last = event["llm_metrics"]
    if last is None:
        return Metrics()
    usage = last.get("accumulated_token_usage") or {}

    def num(value: Any) -> int | None:
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    cost = last.get("accumulated_cost")
    return Metrics(
        float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
        num(usage.get("prompt_tokens")), num(usage.get("completion_tokens")),
        num(usage.get("cache_read_tokens")), num(usage.get("cache_write_tokens")), source)


def agent_state_from_events(events: Iterable[dict[str, Any]]) -> str | None:
    """The last agent_state_changed observation's state, upper case like the log (pure)."""
    state = None
    for event in events:
        if isinstance(event, dict) and event.get("observation") == "agent_state_changed":
            value = (event.get("extras") or {}).get("agent_state")
            if isinstance(value, str):
                state = value.upper()
    return state


def read_trajectory(path: Path) -> list[dict[str, Any]] | None:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) else None


def read_session_events(file_store: Path, session: str) -> list[dict[str, Any]]:
    """A session's events from OpenHands' local file store, in order (they survive a kill)."""
    for sid in (session_id(session), session_id(session, legacy=True)):
        folder = file_store / "sessions" / sid / "events"
        if folder.is_dir():
            events = []
            for path in sorted(folder.glob("*.json"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1):
                with contextlib.suppress(OSError, ValueError):
                    events.append(json.loads(path.read_bytes()))
            return events
    return []


@dataclass
class Outcome:
    agent_state: str | None
    metrics: Metrics
    facts: OutputFacts


def read_outcome(stdout_log: Path, stderr_log: Path, trajectory: Path, file_store: Path,
                 session: str) -> Outcome:
    """What an attempt left behind, each fact from the best source there is: the final agent
    state from the log (else the session's events); cost and tokens from the trajectory, else
    the session's events (they survive a kill), else the log text."""
    facts = scan_output(read_lines(stderr_log))
    if not facts.agent_state and not facts.metrics.known:
        stdout_facts = scan_output(read_lines(stdout_log))  # LOG_JSON, or a wrapper that prints
        facts.agent_state = stdout_facts.agent_state
        facts.metrics = stdout_facts.metrics
    events = read_trajectory(trajectory)
    metrics = metrics_from_events(events, "trajectory") if events else Metrics()
    agent_state = facts.agent_state
    if not metrics.known or agent_state is None:
        stored = read_session_events(file_store, session)
        if not metrics.known:
            metrics = metrics_from_events(stored, "events")
        agent_state = agent_state or agent_state_from_events(stored)
    return Outcome(agent_state, metrics if metrics.known else facts.metrics, facts)


def classify(launch: Launch, agent_state: str | None) -> str:
    """The attempt's status (pure). Exit 0 is not success when the agent ended in ERROR."""
    if launch.error is not None:
        return "error"
    if launch.interrupted:
        return "interrupted"
    if launch.timed_out:
        return "timeout"
    if launch.return_code != 0:
        return "failed"
    if agent_state is None or agent_state == "FINISHED":
        return "success"
    return "failed"


def explain(status: str, launch: Launch, facts: OutputFacts, agent_state: str | None,
            settings: Settings, stopped_by: str) -> str | None:
    """One line saying why the attempt did not succeed (pure)."""
    if status == "success":
        return None
    if launch.error:
        return launch.error
    if status == "timeout":
        return f"timed out after {settings.timeout:g}s"
    if status == "interrupted":
        return f"runner stopped: {stopped_by}"
    detail = facts.reason
    if detail and detail.startswith("STATUS$") and facts.last_exception:
        detail = f"{detail}: {facts.last_exception}"
    detail = detail or facts.last_exception or facts.last_error_line
    if agent_state and agent_state != "FINISHED" and not detail:
        detail = f"agent ended in {agent_state}"
    if launch.return_code not in (0, None):
        code = launch.return_code
        how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit code {code}"
        return f"{how}: {detail}" if detail else how
    return (detail or "no final agent state")[:1000]


def is_retryable(status: str, launch: Launch, facts: OutputFacts, agent_state: str | None) -> bool:
    """Infrastructure failures are worth another attempt; agent outcomes are not (pure)."""
    if status == "error":
        return launch.error is not None  # could not start; an empty prompt stays empty
    if status != "failed":
        return False
    if launch.return_code not in (0, None) and agent_state in (None, "LOADING"):
        return True  # OpenHands or its runtime failed before the agent ran
    reason = facts.reason or ""
    if reason in ("STATUS$ERROR_LLM_INTERNAL_SERVER_ERROR", "STATUS$ERROR_LLM_SERVICE_UNAVAILABLE"):
        return True
    text = facts.last_exception or ""
    return any(k in text for k in ("RateLimitError", "APIConnectionError", "ServiceUnavailable", "Timeout"))


def read_lines(path: Path) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            yield from f
    except OSError:
        return


def tail(path: Path, chars: int = TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars * 4))
            data = f.read()
    except OSError:
        return ""
    return ANSI.sub("", data.decode("utf-8", errors="replace"))[-chars:]


def redact_file(path: Path, secrets: tuple[str, ...], chunk: int = 1 << 20) -> bool:
    """Replace secrets in a file the task wrote (OpenHands or the agent may print a key).
    Streams in chunks, so a big log costs no memory; rewrites only when a secret is there."""
    if not secrets or not path.is_file():
        return False
    needles = [s.encode() for s in secrets]
    overlap = max(len(n) for n in needles) - 1
    found = False
    with open(path, "rb") as f:
        carry = b""
        while block := f.read(chunk):
            window = carry + block
            if any(n in window for n in needles):
                found = True
                break
            carry = window[-overlap:] if overlap else b""
    if not found:
        return False
    tmp = path.with_name(path.name + ".redacting")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        data = src.read(chunk)
        carry = b""
        while data or carry:
            window = carry + data
            for n in needles:
                window = window.replace(n, b"****")
            keep = min(overlap, len(window)) if data else 0
            dst.write(window[: len(window) - keep])
            carry = window[len(window) - keep:]
            data = src.read(chunk) if data else b""
    os.replace(tmp, path)
    return True


# ================================================================================================
# Record
# ================================================================================================


@dataclass(frozen=True)
class AttemptRecord:
    """One line of the results file: what one attempt of one task did (README, "The record")."""

    task_name: str
    prompt_file: str
    status: str  # success | failed | timeout | error | interrupted
    return_code: int | None  # negative: killed by that signal; None: never started
    elapsed_time_seconds: float
    stdout: str  # the last TAIL_CHARS characters, colour codes removed, secrets masked
    stderr: str
    total_cost: float | None  # None: unknown, never invented
    total_input_tokens: int | None
    total_output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    metrics_source: str | None  # trajectory | events | output
    agent_state: str | None
    error: str | None
    trajectory_path: str | None
    attempt: int
    started_at: str
    finished_at: str
    session_name: str
    session_id: str
    stdout_log: str | None
    stderr_log: str | None
    command: list[str] | None
    prompt_sha256: str | None
    run_id: str

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
        self._mutex = threading.Lock()

    def acquire(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """Take the lock; returns what a dead earlier run left in it (None if it ended cleanly)."""
        import fcntl

        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_json_fd(fd)
            os.close(fd)
            who = f"pid {other.get('pid')} on {other.get('host')}" if other else "another run"
            raise UsageError(f"{self.path} is being written by {who}; wait for it, or use another "
                             "--output-dir or --results-name") from None
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
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, json.dumps({"finished": True}).encode(), 0)
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def append(self, record: dict[str, Any]) -> None:
        """Append one line, on disk (fsync) before this returns. A write that fails part way
        (a full disk) is cut back off, so the file never keeps half a record of ours."""
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        with self._mutex:
            if self._fd is None:
                self._fd = self._open()
            start = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                written = 0
                while written < len(data):
                    written += os.write(self._fd, data[written:])
                os.fsync(self._fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
                raise

    def _open(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        # A torn last line (a run died mid-write) stays as it is, but the next record must start
        # on its own line or it would be glued to it and lost.
        size = os.lseek(fd, 0, os.SEEK_END)
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")
        return fd


def _read_json_fd(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 65536, 0)
        value = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every well-formed record, and a warning per line that is not one (a torn last line)."""
    records, warnings = [], []
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):  # nothing recorded yet (or no folder: said later)
        return [], []
    except OSError as exc:
        raise UsageError(f"results file {path}: cannot read it ({exc.strerror})") from None
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                warnings.append(f"{path.name} line {number} is not a complete record (a run died "
                                "while writing it?); kept as it is and ignored")
                continue
            if isinstance(record, dict) and "task_name" in record:
                records.append(record)
    return records, warnings


def latest_by_task(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        latest[record["task_name"]] = record
    return latest


def attempt_paths(output_dir: Path, task: Task, attempt: int) -> tuple[Path, Path, Path]:
    """Trajectory, stdout log and stderr log of one attempt; the first keeps the plain names."""
    suffix = "" if attempt == 1 else f".attempt-{attempt}"
    return (output_dir / "trajectories" / f"{task.stem}{suffix}.json",
            output_dir / "logs" / f"{task.stem}{suffix}.stdout.log",
            output_dir / "logs" / f"{task.stem}{suffix}.stderr.log")


# ================================================================================================
# Report
# ================================================================================================


class PlainView:
    """The console when it is not a terminal (cron, CI, a pipe): one plain line per finished
    task, no control characters. --quiet leaves only the final summary."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def started(self, name: str, session: str) -> None:
        pass

    def ended(self, session: str) -> None:
        pass

    def finished(self, record: dict[str, Any], line: str, last: bool) -> None:
        self.line(line)

    def line(self, text: str, err: bool = False) -> None:
        if not self.quiet:
            print(text, file=sys.stderr if err else sys.stdout, flush=True)

    def close(self) -> None:
        pass


class LiveView(PlainView):
    """On a terminal: finished tasks scroll above a live panel with done/total, counts per
    status, the running tasks and their elapsed time, cost so far and an ETA (rich)."""

    def __init__(self, total: int, workers: int) -> None:
        super().__init__(quiet=False)
        from rich.console import Console
        from rich.live import Live

        self.total, self.workers = total, workers
        self.counts: dict[str, int] = {}
        self.cost = 0.0
        self.durations: list[float] = []
        self.running: dict[str, tuple[str, float]] = {}
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self.console = Console(highlight=False)
        self.live = Live(console=self.console, get_renderable=self._render, refresh_per_second=4,
                         transient=True, redirect_stdout=False, redirect_stderr=False)
        self.live.start()

    def started(self, name: str, session: str) -> None:
        with self._lock:
            self.running[session] = (name, time.monotonic())

    def ended(self, session: str) -> None:
        with self._lock:
            self.running.pop(session, None)

    def finished(self, record: dict[str, Any], line: str, last: bool) -> None:
        with self._lock:
            self.cost += record.get("total_cost") or 0.0
            if last:  # an attempt that will be retried is not a finished task
                self.counts[record["status"]] = self.counts.get(record["status"], 0) + 1
                self.durations.append(record.get("elapsed_time_seconds") or 0.0)
        self.live.refresh()  # a printed line re-emits the last panel: make it the current one
        self.line(line)

    def line(self, text: str, err: bool = False) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True,
                           style="red" if err else None)

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            done = sum(self.counts.values())
            now = time.monotonic()
            left = max(0, self.total - done)
            if self.durations and left:
                mean = sum(self.durations) / len(self.durations)
                eta = f"ETA {format_duration(mean * left / min(self.workers, left))}"
            else:
                eta = "ETA ?" if left else "ETA 0s"
            counts = "  ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "-"
            head = Text(f"{done}/{self.total} done   {counts}   ${self.cost:.4f} so far   "
                        f"{format_duration(now - self.t0)} elapsed   {eta}", style="bold")
            table = Table(box=None, show_header=bool(self.running), pad_edge=False)
            table.add_column("running")
            table.add_column("for", justify="right")
            for name, since in sorted(self.running.values(), key=lambda r: r[1]):
                table.add_row(printable(name), format_duration(now - since))
        return Group(head, table)

    def close(self) -> None:
        self.live.stop()


def make_view(settings: Settings, total: int) -> tuple[PlainView, str | None]:
    """A live view on a terminal, plain lines elsewhere; rich is only imported for the first."""
    if settings.quiet or not sys.stdout.isatty() or os.environ.get("TERM") == "dumb":
        return PlainView(settings.quiet), None
    try:
        return LiveView(total, settings.max_workers), None
    except ImportError:
        return PlainView(False), ("live progress needs the package rich: "
                                  f"`{Path(sys.executable).name} -m pip install rich`")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class RunLog:
    """The runner's own log (<output-dir>/batch_run.log) and the console, secrets masked."""

    def __init__(self, path: Path | None, secrets: tuple[str, ...], view: PlainView) -> None:
        self.secrets = secrets
        self.view = view
        self._file = open(path, "a", encoding="utf-8") if path else None
        self._lock = threading.Lock()
        self._once: set[str] = set()

    def write(self, message: str, console: bool = False, err: bool = False) -> None:
        message = mask(message, self.secrets)
        broken = None
        with self._lock:
            if self._file:
                try:
                    self._file.write(f"{utc_now()} {message}\n")
                    self._file.flush()
                except OSError as exc:  # the log is a convenience; results go on being written
                    broken, self._file = exc, None
        if console:
            self.view.line(message, err)
        if broken is not None:
            self.view.line(f"warning: batch_run.log cannot be written ({broken.strerror}); "
                           "going on without it", err=True)

    def warn(self, message: str) -> None:
        self.write(f"warning: {message}", console=True, err=True)

    def once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._once:
                return
            self._once.add(key)
        self.warn(message)

    def close(self) -> None:
        self.view.close()
        if self._file:
            self._file.close()


def printable(name: str) -> str:
    """A task name on one console line (names may hold newlines or control characters)."""
    return name if name.isprintable() else repr(name)


def format_money(value: float | None) -> str:
    return "cost ?" if value is None else f"${value:.4f}"


def finished_line(record: dict[str, Any], done: int, total: int, last: bool = True) -> str:
    tokens = ("tokens ?" if record.get("total_input_tokens") is None else
              f"{record['total_input_tokens']}/{record.get('total_output_tokens') or 0} tokens")
    where = f"[{done}/{total}]" if last else "[retrying]"
    line = (f"{where} {record['status']:<11} {printable(record['task_name'])}  "
            f"{record['elapsed_time_seconds']:.1f}s  {format_money(record.get('total_cost'))}  {tokens}")
    if record.get("attempt", 1) > 1:
        line += f"  (attempt {record['attempt']})"
    if record.get("error"):
        line += f"  - {record['error'][:160]}"
    return line


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and totals over the latest attempt of each task (pure)."""
    counts = {s: 0 for s in STATUSES}
    cost = 0.0
    costs_known = tokens_known = tokens_in = tokens_out = 0
    task_time = 0.0
    for r in records:
        counts[r.get("status", "error")] = counts.get(r.get("status", "error"), 0) + 1
        if r.get("total_cost") is not None:
            cost += r["total_cost"]
            costs_known += 1
        if r.get("total_input_tokens") is not None:
            tokens_known += 1
        tokens_in += r.get("total_input_tokens") or 0
        tokens_out += r.get("total_output_tokens") or 0
        task_time += r.get("elapsed_time_seconds") or 0.0
    return {
        "tasks": len(records), "counts": counts, "total_cost": round(cost, 6),
        "tasks_with_cost": costs_known,
        "mean_cost": round(cost / costs_known, 6) if costs_known else None,
        "total_input_tokens": tokens_in, "total_output_tokens": tokens_out,
        "mean_input_tokens": round(tokens_in / tokens_known, 1) if tokens_known else None,
        "mean_output_tokens": round(tokens_out / tokens_known, 1) if tokens_known else None,
        "task_time_seconds": round(task_time, 3),
    }


def report_rows(latest: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [(printable(r["task_name"]), r["status"], r.get("agent_state") or "-",
             f"{r.get('elapsed_time_seconds') or 0:.1f}",
             "?" if r.get("total_cost") is None else f"{r['total_cost']:.4f}",
             "?" if r.get("total_input_tokens") is None else str(r["total_input_tokens"]),
             "?" if r.get("total_output_tokens") is None else str(r["total_output_tokens"]),
             (r.get("error") or "")[:100]) for r in latest]


REPORT_HEAD = ("task", "status", "state", "secs", "cost $", "in tok", "out tok", "why")


def table_lines(latest: list[dict[str, Any]]) -> list[str]:
    """The report table as aligned lines, header first (pure)."""
    rows = report_rows(latest)
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(REPORT_HEAD)]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [REPORT_HEAD, *rows]]


def render_summary(latest: list[dict[str, Any]], totals: dict[str, Any], fmt: str) -> str:
    """--report text: json, markdown or an aligned table (pure)."""
    if fmt == "json":
        return json.dumps({"totals": totals, "tasks": latest}, indent=2, ensure_ascii=False)
    if fmt == "markdown":
        lines = ["| " + " | ".join(REPORT_HEAD) + " |", "|" + "---|" * len(REPORT_HEAD)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in report_rows(latest)]
        return "\n".join(lines + ["", totals_line(totals)])
    return "\n".join([*table_lines(latest), "", totals_line(totals)])


def totals_line(totals: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in totals["counts"].items() if n)
    return (f"{plural(totals['tasks'], 'task')}: {counts or 'none'}; cost ${totals['total_cost']:.4f} "
            f"(known for {totals['tasks_with_cost']}), tokens {totals['total_input_tokens']} in / "
            f"{totals['total_output_tokens']} out, task time {format_duration(totals['task_time_seconds'])}")


STATUS_STYLE = {"success": "green", "failed": "red", "timeout": "yellow", "error": "magenta",
                "interrupted": "cyan"}


def print_report_table(latest: list[dict[str, Any]], totals: dict[str, Any]) -> None:
    """On a terminal, rich colours each row by status (and honours NO_COLOR); into a pipe or a
    file, plain text. One styled Text: rich's Table takes ~0.1 s for 250 rows."""
    plain = render_summary(latest, totals, "table")
    if not sys.stdout.isatty():
        print(plain)
        return
    try:
        from rich.console import Console
        from rich.text import Text
    except ImportError:
        print(plain)
        return
    lines = table_lines(latest)
    text = Text(lines[0] + "\n", style="bold")
    for line, record in zip(lines[1:], latest):
        text.append(line + "\n", style=STATUS_STYLE.get(record["status"]))
    text.append("\n" + totals_line(totals))
    Console(highlight=False).print(text, soft_wrap=True)


def write_summary_json(output_dir: Path, latest: list[dict[str, Any]], totals: dict[str, Any]) -> Path:
    """summary.json, replaced atomically: a reader never sees half of it."""
    path = output_dir / "summary.json"
    fd, tmp = tempfile.mkstemp(prefix=".summary-", suffix=".json", dir=output_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"generated_at": utc_now(), "totals": totals, "tasks": latest}, f, indent=2,
                  ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def report(settings: Settings) -> int:
    """--report: the latest attempt of every task across every results file in the folder."""
    folder = settings.output_dir
    if not folder.is_dir():
        raise UsageError(f"--output-dir {folder}: no such folder; nothing to report")
    records: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        found, warnings = read_records(path)
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        records += found
    records.sort(key=lambda r: r.get("finished_at") or "")
    latest = sorted(latest_by_task(records).values(), key=lambda r: r["task_name"])
    totals = summarise(latest)
    if settings.report_format == "table":
        print_report_table(latest, totals)
    else:
        print(render_summary(latest, totals, settings.report_format))
    return 0 if latest and all(r["status"] == "success" for r in latest) else 1


# ================================================================================================
# The batch: ties the steps together, in a thread pool, and answers signals
# ================================================================================================


@dataclass
class Batch:
    settings: Settings
    tasks: list[Task]
    base_config: dict[str, Any]
    secrets: tuple[str, ...]
    environ: dict[str, str]
    run_id: str
    private_dir: Path
    results: ResultsFile
    log: RunLog
    previous_attempts: Counter[str]  # records per task already in the results file
    stop: StopSignal = field(default_factory=StopSignal)
    cost_so_far: float = 0.0
    done: int = 0
    skipped_budget: list[str] = field(default_factory=list)
    records: list[AttemptRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_start: float = 0.0

    @property
    def file_store(self) -> Path:
        path = effective_core(self.base_config, self.environ, "file_store_path", "~/.openhands")
        return Path(os.path.expanduser(path))

    @property
    def uses_docker(self) -> bool:
        runtime = self.settings.runtime or effective_core(self.base_config, self.environ, "runtime", "docker")
        return runtime == "docker"

    def run_task(self, task: Task) -> None:
        """All attempts of one task: retried while the failure is infrastructure's."""
        attempt = self.previous_attempts.get(task.name, 0)
        for retry in range(self.settings.retries + 1):
            if retry:
                delay = self.settings.retry_backoff * 2 ** (retry - 1) * random.uniform(0.8, 1.2)
                self.log.write(f"{printable(task.name)}: retrying in {delay:.1f}s")
                if self.stop.event.wait(delay):
                    return
            if not self.may_start(task, first=not retry):
                return
            attempt += 1
            try:
                record, retryable = self.run_attempt(task, attempt)
            except Exception as exc:  # a bug of the runner's must not make a task vanish
                import traceback

                self.log.write(f"{printable(task.name)}: internal error\n{traceback.format_exc()}")
                record = dataclasses.replace(
                    self.blank_record(task, attempt, session_name(task, self.run_id, attempt)),
                    error=f"run_batch internal error: {exc!r} (details in batch_run.log)")
                retryable = False
            last = not retryable or retry == self.settings.retries
            self.finish(record, last)
            if last:
                return

    def may_start(self, task: Task, first: bool) -> bool:
        with self._lock:
            if self.stop.requested:
                return False
            if self.settings.max_total_cost is not None and self.cost_so_far >= self.settings.max_total_cost:
                if first:
                    self.skipped_budget.append(task.name)
                return False
            wait_for = self._last_start + self.settings.start_delay - time.monotonic()
            self._last_start = max(time.monotonic(), self._last_start + self.settings.start_delay)
        if wait_for > 0 and self.stop.event.wait(wait_for):
            return False
        return True

    def blank_record(self, task: Task, attempt: int, session: str) -> AttemptRecord:
        """The record of an attempt that never ran: status error, nothing measured."""
        now = utc_now()
        return AttemptRecord(
            task_name=task.name, prompt_file=readable(str(task.prompt_path)), status="error",
            return_code=None, elapsed_time_seconds=0.0, stdout="", stderr="", total_cost=None,
            total_input_tokens=None, total_output_tokens=None, cache_read_tokens=None,
            cache_write_tokens=None, metrics_source=None, agent_state=None, error=task.problem,
            trajectory_path=None, attempt=attempt, started_at=now, finished_at=now,
            session_name=session, session_id=session_id(session), stdout_log=None, stderr_log=None,
            command=None, prompt_sha256=task.prompt_sha256, run_id=self.run_id)

    def run_attempt(self, task: Task, attempt: int) -> tuple[AttemptRecord, bool]:
        s = self.settings
        trajectory, stdout_log, stderr_log = attempt_paths(s.output_dir, task, attempt)
        session = session_name(task, self.run_id, attempt)
        record = self.blank_record(task, attempt, session)
        if task.problem:
            return record, False
        config_path = write_private_config(self.private_dir, f"{session}.{s.config_name}",
                                           task_config(self.base_config, s, trajectory, self.run_id, session))
        argv = build_command(s, task.prompt_path, config_path, session)
        env = child_environment(self.environ, s, trajectory, self.run_id, session)
        with contextlib.suppress(FileNotFoundError):
            trajectory.unlink()  # a stale file from a dead run must not pass for this attempt's
        self.log.view.started(task.name, session)
        try:
            launch = launch_and_wait(argv, env, s.project_dir, stdout_log, stderr_log, s, self.stop,
                                     self.run_id, session)
        finally:
            self.log.view.ended(session)
            with contextlib.suppress(FileNotFoundError):
                config_path.unlink()
            if self.uses_docker and not s.keep_containers:
                remove_container(session_id(session), self.log)

        outcome = read_outcome(stdout_log, stderr_log, trajectory, self.file_store, session)
        for path in (trajectory, stdout_log, stderr_log):
            if redact_file(path, self.secrets):
                self.log.warn(f"{printable(task.name)}: a secret appeared in {path.name}; masked")

        status = classify(launch, outcome.agent_state)
        m = outcome.metrics
        why = explain(status, launch, outcome.facts, outcome.agent_state, s, self.stop.reason)
        record = dataclasses.replace(
            record, status=status, return_code=launch.return_code,
            elapsed_time_seconds=round(launch.elapsed, 3),
            stdout=mask(tail(stdout_log), self.secrets), stderr=mask(tail(stderr_log), self.secrets),
            total_cost=m.total_cost, total_input_tokens=m.total_input_tokens,
            total_output_tokens=m.total_output_tokens, cache_read_tokens=m.cache_read_tokens,
            cache_write_tokens=m.cache_write_tokens, metrics_source=m.source if m.known else None,
            agent_state=outcome.agent_state, error=mask(why, self.secrets) if why else None,
            trajectory_path=str(trajectory) if trajectory.is_file() else None,
            started_at=launch.started_at, finished_at=launch.finished_at,
            stdout_log=str(stdout_log), stderr_log=str(stderr_log),
            command=[mask(a, self.secrets) for a in argv])
        retryable = not self.stop.requested and is_retryable(status, launch, outcome.facts, outcome.agent_state)
        return record, retryable

    def finish(self, record: AttemptRecord, last: bool) -> None:
        """Record an attempt; `last` when the task will not be tried again in this run."""
        data = record.as_json()
        try:
            self.results.append(data)
        except OSError as exc:  # no point paying for tasks whose results cannot be kept
            self.stop.fail(f"cannot write {self.results.path} ({exc.strerror or exc})")
            self.log.write(f"{printable(record.task_name)}: its record could not be written: {exc}",
                           console=True, err=True)
        with self._lock:
            self.done += last
            self.records.append(record)
            self.cost_so_far += record.total_cost or 0.0
            line = mask(finished_line(data, self.done, len(self.tasks), last), self.secrets)
        self.log.write(line)
        self.log.view.finished(data, line, last)


def clean_up_dead_run(previous: dict[str, Any], log: RunLog) -> None:
    """What a run that died (SIGKILL, OOM, reboot) left behind: its tasks' processes, their
    containers, its private folder of configs."""
    old_run = previous.get("run_id")
    if not isinstance(old_run, str):
        return
    if previous.get("host") != socket.gethostname():
        log.warn(f"an earlier run (pid {previous.get('pid')} on {previous.get('host')}) did not "
                 "finish; processes or containers it left on that machine were not touched")
        return
    killed = kill_everything(None, old_run, None)
    containers = remove_run_containers(old_run, log)
    folder = previous.get("private_dir")
    removed = False
    if isinstance(folder, str) and Path(folder).name.startswith("run_batch-") and Path(folder).is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        removed = True
    log.write(f"an earlier run (pid {previous.get('pid')}, run {old_run}) did not finish: killed "
              f"{len(killed)} leftover processes, removed {containers} containers"
              f"{' and its temporary configs' if removed else ''}", console=True)


def install_signal_handlers(stop: StopSignal) -> dict[int, Any]:
    """Ctrl-C / SIGTERM only set flags (a handler that took a lock could deadlock the main
    thread); the workers act on them and the main loop reports them."""

    def handler(signum: int, _frame: Any) -> None:
        stop.request(signum)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def environment_warnings(settings: Settings, environ: dict[str, str]) -> list[str]:
    """Settings of the user's that work against a batch (pure)."""
    debug = environ.get("LOG_LEVEL", "").upper() == "DEBUG" or environ.get("DEBUG", "").lower() in ("1", "true")
    if debug and settings.max_workers > 1:
        return [f"DEBUG logging with --max-workers {settings.max_workers}: OpenHands then writes LLM "
                f"logs to {settings.project_dir / 'logs'} and clears logs/llm/default when a task "
                "starts, so parallel tasks overwrite each other's there (each task's own log is "
                "whole in the output folder's logs/)"]
    return []


def plan_order(tasks: list[Task], durations: dict[str, float]) -> list[Task]:
    """Longest known task first (LPT): fewer workers idle while one long task ends the batch.
    Tasks with no recorded duration keep file order, ahead of the known ones (pure)."""
    if not durations:
        return tasks
    unknown = [t for t in tasks if t.name not in durations]
    known = sorted((t for t in tasks if t.name in durations), key=lambda t: -durations[t.name])
    return unknown + known


def run(settings: Settings, environ: dict[str, str]) -> int:
    require_tomli_w()
    settings = resolve_poetry(settings, environ)
    base_config = load_base_config(settings.base_config)
    secrets = find_secrets(base_config, environ)
    all_tasks = discover_tasks(settings.prompt_dir)
    selected = select_tasks(all_tasks, settings)

    if settings.results_path.is_dir():
        raise UsageError(f"results file {settings.results_path} is a folder; pick another --results-name")
    records, warnings = read_records(settings.results_path)
    latest = latest_by_task(records)
    done_before = [] if settings.rerun else [
        t for t in selected if latest.get(t.name, {}).get("status") == "success"
        and latest[t.name].get("prompt_sha256") == t.prompt_sha256]
    done_names = {t.name for t in done_before}
    to_run = [t for t in selected if t.name not in done_names]
    durations = {n: r["elapsed_time_seconds"] for n, r in latest.items()
                 if isinstance(r.get("elapsed_time_seconds"), (int, float)) and r.get("status") in ("success", "failed", "timeout")}
    to_run = plan_order(to_run, durations)

    if settings.dry_run:
        return dry_run(settings, to_run, done_before, base_config, secrets)

    try:
        for sub in ("trajectories", "logs"):
            (settings.output_dir / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--output-dir {settings.output_dir}: cannot create it ({exc.strerror}); "
                         "pick a folder you can write") from None
    if not os.access(settings.output_dir, os.W_OK):
        raise UsageError(f"--output-dir {settings.output_dir}: not writable; pick a folder you can write")

    run_id = uuid.uuid4().hex[:8]
    results = ResultsFile(settings.results_path)
    private_dir = Path(tempfile.mkdtemp(prefix=f"run_batch-{run_id}-"))  # mode 0700
    try:
        previous = results.acquire({"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id,
                                    "private_dir": str(private_dir), "started_at": utc_now()})
    except BaseException:
        shutil.rmtree(private_dir, ignore_errors=True)
        raise
    view, hint = make_view(settings, len(to_run))
    log = RunLog(settings.output_dir / "batch_run.log", secrets, view)
    batch = Batch(settings, to_run, base_config, secrets, environ, run_id, private_dir, results, log,
                  previous_attempts=Counter(r["task_name"] for r in records))
    old_handlers = install_signal_handlers(batch.stop)
    t0 = time.monotonic()
    try:
        try:
            for w in warnings + ([hint] if hint else []) + environment_warnings(settings, environ):
                log.warn(w)
            if previous:
                clean_up_dead_run(previous, log)
            log.write(f"run {run_id}: {plural(len(selected), 'task')} selected, {len(done_before)} already "
                      f"done, {len(to_run)} to run, {settings.max_workers} at a time; output in "
                      f"{settings.output_dir}", console=True)
            execute(batch)
        finally:
            view.close()
            kill_everything(None, run_id, None)  # belt and braces: nothing of this run outlives it
            shutil.rmtree(private_dir, ignore_errors=True)
            for sig, h in old_handlers.items():
                signal.signal(sig, h)

        # The summary covers the latest attempt of every selected task, this run's or earlier.
        latest_now = {**latest, **latest_by_task(r.as_json() for r in batch.records)}
        shown = [latest_now[t.name] for t in selected if t.name in latest_now]
        ran = {r.task_name for r in batch.records}
        totals = summarise(shown)
        totals.update({
            "run_id": run_id, "wall_time_seconds": round(time.monotonic() - t0, 3),
            "this_run_cost": round(batch.cost_so_far, 6), "this_run_tasks": len(ran),
            "not_started": sorted(t.name for t in to_run if t.name not in ran and t.name not in batch.skipped_budget),
            "skipped_for_budget": sorted(batch.skipped_budget),
            "runner_peak_rss_mb": peak_rss_mb(),
        })
        write_summary_json(settings.output_dir, shown, totals)
        print_final_summary(batch, totals, shown)
    finally:
        log.close()
        results.release()
    if batch.stop.failure:
        print(f"run-batch: error: {batch.stop.failure}; records already written are kept, run the "
              "same command again once it is fixed", file=sys.stderr)
        return 1
    if batch.stop.requested:
        return 128 + batch.stop.requested
    every_task_done = len(shown) == len(selected)
    return 0 if every_task_done and all(r["status"] == "success" for r in shown) else 1


def peak_rss_mb() -> float | None:
    """The runner's own peak memory (not its tasks'), for the summary and the benchmarks."""
    try:
        import resource
    except ImportError:
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def execute(batch: Batch) -> None:
    with ThreadPoolExecutor(max_workers=batch.settings.max_workers, thread_name_prefix="task") as pool:
        futures: set[Future[None]] = {pool.submit(batch.run_task, t) for t in batch.tasks}
        # The main thread only waits, in short steps, so signal handlers run promptly.
        said = (0, False)
        while futures:
            finished, futures = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
            if (batch.stop.requested, batch.stop.kill_now) != said:
                said = (batch.stop.requested, batch.stop.kill_now)
                why = batch.stop.reason
                batch.log.write(
                    "stopping at once: killing every running task" if batch.stop.kill_now else
                    f"{why}: no new task starts; running tasks get SIGINT and --grace-period to "
                    "stop (send Ctrl-C to kill them at once)", console=True, err=True)
            for f in finished:
                if f.exception() is not None:
                    batch.log.write(f"internal error in a task: {f.exception()!r}", console=True, err=True)


def print_final_summary(batch: Batch, totals: dict[str, Any], shown: list[dict[str, Any]]) -> None:
    s = batch.settings
    counts = ", ".join(f"{n} {st}" for st, n in totals["counts"].items() if n) or "nothing recorded"
    lines = [f"Done in {format_duration(totals['wall_time_seconds'])} wall time "
             f"({format_duration(totals['task_time_seconds'])} of task time), "
             f"{plural(totals['tasks'], 'task')}: {counts}."]
    if totals["not_started"]:
        lines.append(f"{plural(len(totals['not_started']), 'task')} not started (run the same command to continue).")
    if batch.skipped_budget:
        lines.append(f"{plural(len(batch.skipped_budget), 'task')} skipped, not failed: --max-total-cost "
                     f"{s.max_total_cost:g} reached (${batch.cost_so_far:.4f} recorded this run).")
    mean = "" if totals["mean_cost"] is None else f", mean ${totals['mean_cost']:.4f} per task"
    lines.append(f"Cost ${totals['total_cost']:.4f} (known for {totals['tasks_with_cost']} of "
                 f"{totals['tasks']} tasks{mean}; this run ${totals['this_run_cost']:.4f}). Tokens "
                 f"{totals['total_input_tokens']} in / {totals['total_output_tokens']} out"
                 + (f", mean {totals['mean_input_tokens']:.0f} / {totals['mean_output_tokens']:.0f} per task."
                    if totals["mean_input_tokens"] is not None else "."))
    failures = [r for r in shown if r["status"] != "success"]
    for r in failures[:20]:
        lines.append(f"  {r['status']:<11} {printable(r['task_name'])}: {r.get('error') or ''}"[:200])
    slowest = sorted(shown, key=lambda r: -(r.get("elapsed_time_seconds") or 0))[:3]
    if slowest:
        lines.append("Slowest: " + ", ".join(f"{printable(r['task_name'])} {r['elapsed_time_seconds']:.0f}s" for r in slowest))
    lines.append(f"Results: {s.results_path}  Summary: {s.output_dir / 'summary.json'}")
    text = mask("\n".join(lines), batch.secrets)
    batch.log.write(text)
    print(text, flush=True)  # even with --quiet: the one thing it prints


def dry_run(settings: Settings, to_run: list[Task], done: list[Task], base_config: dict[str, Any],
            secrets: tuple[str, ...]) -> int:
    import tomli_w

    print(f"Would run {len(to_run)} tasks ({len(done)} already done, skipped), "
          f"{settings.max_workers} at a time, from {settings.project_dir}:")
    for t in to_run:
        print(f"  run   {printable(t.name)}" + (f"  (will be recorded as error: {t.problem})" if t.problem else ""))
    for t in done:
        print(f"  skip  {printable(t.name)}  (already success)")
    example = to_run[0] if to_run else (done[0] if done else None)
    if example:
        trajectory, _, _ = attempt_paths(settings.output_dir, example, 1)
        session = session_name(example, "RUNID", 1)
        argv = build_command(settings, example.prompt_path, Path("<private>") / f"{session}.{settings.config_name}", session)
        print("Command (first task):\n  " + mask(shlex.join(argv), secrets))
        config = task_config(base_config, settings, trajectory, "RUNID", session)
        print("Effective config (first task, secrets masked):")
        print(mask(tomli_w.dumps(config), secrets).rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    environ = dict(os.environ)
    try:
        settings = settings_from_args(argv, environ)
        if settings.report:
            return report(settings)
        return run(settings, environ)
    except UsageError as exc:
        print(f"run-batch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the handlers were in place
        return 130
    except OSError as exc:  # the machine's, not the user's: a full disk, a vanished folder
        print(f"run-batch: error: {exc.filename or ''}: {exc.strerror or exc}; records already "
              "written are kept, run the same command again", file=sys.stderr)
        return 1


def main_entry() -> None:
    """Console script `run-batch`."""
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
