#!/usr/bin/env python3
"""run_batch: run a folder of task prompts through OpenHands' headless mode.

Every `*.md` file in --prompt-dir is one task. Each attempt of a task runs OpenHands once, with a
private config, a fresh session and a timeout; every trajectory and log is kept, and one JSON line
per attempt is appended to the results file: status, agent state, time, cost and tokens.

The file reads top to bottom in the order the data flows:
    command line -> plan -> configure (the OpenHands seam) -> launch and wait -> read the outcome
    -> record -> report (console, log, summary) -> the batch, which ties the steps together.
What the code relies on about OpenHands is written down, with the versions it was checked on, in
docs/openhands.md.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import dataclasses
import datetime as dt
import errno
import fcntl
import fnmatch
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
from typing import Any, BinaryIO, Protocol, TypeVar

__version__ = "0.4.0"

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


class UsageError(Exception):
    """A user's mistake: reported in one line, exit status 2, nothing written."""


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
    """Which of the discovered tasks run: --tasks, --include, --exclude, --shard, --limit."""

    tasks: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    shard: tuple[int, int] | None = None
    limit: int | None = None


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
    venv: Path | None = None  # set when `poetry run` was resolved to the environment's python

    @property
    def results_path(self) -> Path:
        return self.output_dir / self.results_name

    @property
    def grader(self) -> Grader:
        return Grader(self.evaluator, self.project_dir, self.output_dir, self.evaluate_timeout)


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
        "--openhands-version",
        metavar="X.Y.Z",
        help="the OpenHands release --command runs, when run_batch cannot ask its interpreter (a wrapper "
        "script); it decides the release's rules (file store, session id, stop), e.g. --openhands-version 0.33.0",
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
        type=_positive_float,
        default=None,
        help="per task wall-clock limit (default: none), e.g. --timeout 1800",
    )
    run.add_argument(
        "--grace-period",
        metavar="SECONDS",
        type=_non_negative_float,
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
        type=_non_negative_float,
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
        type=_non_negative_float,
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
        "--stall-timeout",
        metavar="SECONDS",
        type=_positive_float,
        default=None,
        help="stop a task whose agent has produced no new event and no new output for this long, like a "
        "timeout, and record it `stalled` (retried by --retries, rerun by resume; default: off), "
        "e.g. --stall-timeout 600",
    )
    run.add_argument(
        "--heartbeat",
        metavar="SECONDS",
        type=_non_negative_float,
        default=None,
        help="off a terminal, a progress line this often: done/total, running, spend so far, ETA "
        "(default: 60, and none with --quiet; 0 turns it off), e.g. --heartbeat 300",
    )


def _evaluation_options(ev: argparse._ArgumentGroup) -> None:
    ev.add_argument(
        "--evaluate",
        metavar="CMD",
        help="grade each attempt that ran the agent with CMD, split like a shell would (never run through one), "
        "with placeholders {task} {prompt} {output_dir} {trajectory} {workspace} {status}; exit 0 passed, 1 "
        "failed, else error; a JSON object on its last line adds score and details, "
        "e.g. --evaluate 'gittaskbench grade --taskid {task}'",
    )
    ev.add_argument(
        "--evaluate-timeout",
        metavar="SECONDS",
        type=_positive_float,
        default=600.0,
        help="the evaluator's time limit (default: 600), e.g. --evaluate-timeout 120",
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
        template = Path(args.workspace_template).expanduser().absolute()
        if not template.is_dir():
            raise UsageError(f"--workspace-template {args.workspace_template}: not a folder")

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
        workspace_per_task=args.workspace_per_task or template is not None,
        heartbeat=args.heartbeat if args.heartbeat is not None else (0.0 if args.quiet else 60.0),
        command=command,
        openhands=from_args(OpenHandsOptions, args, extra_args=tuple(extra)),
        selection=from_args(Selection, args, tasks=names, shard=shard),
    )


def check_output_options(args: argparse.Namespace) -> None:
    """File names that are names, and --format and --output where they mean something."""
    for option, name in (("--results-name", args.results_name), ("--config-name", args.config_name)):
        if "/" in name or "\0" in name or name in ("", ".", ".."):
            raise UsageError(f"{option} {name!r}: give a file name, not a path")
    if args.dry_run and args.output_format in ("markdown", "html"):
        raise UsageError(f"--dry-run --format {args.output_format}: the plan is shown as table or json")
    if args.report_output:
        if not (args.html or (args.report and args.output_format == "html")):
            raise UsageError("--output FILE is where the HTML report goes: with --html, or --report --format html")
        where = Path(args.report_output).expanduser().absolute().parent
        if not where.is_dir():
            raise UsageError(f"--output {args.report_output}: there is no folder {where}; create it or pick another")


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


# ================================================================================================
# Plan: which tasks there are, which run, in which order (pure, apart from reading the prompts)
# ================================================================================================


@dataclass(frozen=True)
class Task:
    name: str  # the prompt's file name without .md
    prompt_path: Path
    stem: str  # file-name stem of this task's logs and trajectories: unique, also case-blind
    prompt_sha256: str | None
    problem: str | None  # why it cannot be launched (empty, unreadable, not UTF-8, ...), else None
    tag: str = ""  # ASCII identity for session names: readable slug plus a hash of the whole name


def inspect_prompt(data: bytes) -> str | None:
    """Why this prompt cannot be given to OpenHands, or None when it can (pure)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"prompt is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); save it as UTF-8"
    if not text.strip():
        return "prompt is empty"
    return None


def readable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (kept by Python as lone surrogates, which
    no UTF-8 file can hold) become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:length]


def _cut_utf8(text: str, limit: int) -> str:
    """At most `limit` bytes of text, cut on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


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


def loads_json(data: str | bytes) -> Any:
    """JSON from outside the runner, strictly: Python's reader takes NaN and Infinity, which no
    other reader does, and which would pass through sums and comparisons (a budget against NaN is
    never reached) into files others read."""
    return json.loads(data, parse_constant=_not_json)


def read_prompt(path: Path) -> tuple[str | None, str | None]:
    """(sha256, problem) of a prompt file. Only regular files are prompts (a FIFO would block, a
    device never ends) and a prompt is read up to PROMPT_LIMIT bytes, never more."""
    try:
        f = open_regular(path)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return None, "not a regular file (a FIFO, device or socket named .md); only files are prompts"
        return None, f"cannot read prompt: {exc.strerror or exc}"
    with f:
        info = os.fstat(f.fileno())
        if info.st_size > PROMPT_LIMIT:
            return None, f"prompt is {info.st_size} bytes, over the limit of {PROMPT_LIMIT} (10 MiB)"
        try:
            data = f.read(PROMPT_LIMIT + 1)
        except OSError as exc:
            return None, f"cannot read prompt: {exc.strerror or exc}"
    if len(data) > PROMPT_LIMIT:
        return None, f"prompt is over the limit of {PROMPT_LIMIT} bytes (10 MiB)"
    return hashlib.sha256(data).hexdigest(), inspect_prompt(data)


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
        sha, problem = read_prompt(path)
        tasks.append(Task(name, path, stem, sha, problem, tag))
    return tasks


def select_tasks(tasks: list[Task], selection: Selection, prompt_dir: Path | None = None) -> list[Task]:
    """Apply --tasks, --include, --exclude, --shard and --limit, in that order (pure)."""
    chosen = tasks
    if selection.tasks:
        known = {t.name for t in tasks}
        missing = [n for n in selection.tasks if n not in known]
        if missing:
            raise UsageError(f"--tasks: no prompt named {missing[0]!r} in {prompt_dir or 'the prompt folder'}")
        chosen = [t for t in chosen if t.name in selection.tasks]
    if selection.include:
        chosen = [t for t in chosen if any(fnmatch.fnmatchcase(t.name, g) for g in selection.include)]
    if selection.exclude:
        chosen = [t for t in chosen if not any(fnmatch.fnmatchcase(t.name, g) for g in selection.exclude)]
    if selection.shard:
        k, n = selection.shard
        chosen = [t for i, t in enumerate(chosen) if i % n == k - 1]
    if selection.limit is not None:
        chosen = chosen[: selection.limit]
    return chosen


def plan_order(tasks: list[Task], durations: dict[str, float]) -> list[Task]:
    """Longest known task first (LPT): fewer workers idle while one long task ends the batch.
    Tasks with no recorded duration keep file order, ahead of the known ones (pure)."""
    if not durations:
        return tasks
    unknown = [t for t in tasks if t.name not in durations]
    known = sorted((t for t in tasks if t.name in durations), key=lambda t: -durations[t.name])
    return unknown + known


@dataclass(frozen=True)
class Plan:
    """What a run will do: the selected tasks, those to run (in order), those already done."""

    selected: list[Task]
    to_run: list[Task]
    done: list[Task]  # latest record `success` for the same prompt: skipped


def plan_batch(
    tasks: list[Task], selection: Selection, recorded: list[AttemptRecord], rerun: bool, prompt_dir: Path | None = None
) -> Plan:
    """Select, skip what already succeeded with the same prompt, and order the rest (pure)."""
    selected = select_tasks(tasks, selection, prompt_dir)
    latest = latest_by_task(recorded)
    done = (
        []
        if rerun
        else [
            t
            for t in selected
            if t.name in latest
            and latest[t.name].status == "success"
            and t.prompt_sha256 is not None  # unreadable now: not "the same prompt"
            and latest[t.name].prompt_sha256 == t.prompt_sha256
        ]
    )
    done_names = {t.name for t in done}
    durations = {n: r.elapsed_time_seconds for n, r in latest.items() if r.status in ("success", "failed", "timeout")}
    to_run = plan_order([t for t in selected if t.name not in done_names], durations)
    return Plan(selected, to_run, done)


# ================================================================================================
# Configure: the base config, secrets, and the OpenHands seam
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
    return tuple(sorted(found, key=len, reverse=True))  # longest first: no partial masking


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "****")
    return text


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
    """OpenHands' sid for `-n name` (docs/openhands.md, "Session id"). Its jwt secret is a
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
    """Make `workspace` the agent's workspace on every release (docs/openhands.md, "Workspace"):
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


def build_command(
    command: tuple[str, ...], options: OpenHandsOptions, prompt_path: Path, config_path: Path, session: str
) -> list[str]:
    """argv for one attempt; never a shell. Flags beat env and TOML in OpenHands."""
    argv = [*command, "-f", str(prompt_path.absolute()), "--config-file", str(config_path), "-n", session]
    if options.max_iterations is not None:
        argv += ["-i", str(options.max_iterations)]
    if options.max_budget_per_task is not None:
        argv += ["-b", str(options.max_budget_per_task)]
    if options.llm_config:
        argv += ["-l", options.llm_config]
    if options.agent_cls:
        argv += ["-c", options.agent_cls]
    return argv + list(options.extra_args)


def write_private_config(folder: Path, name: str, config: dict[str, Any]) -> Path:
    """Write the TOML config readable by the user only (it may hold API keys)."""
    import tomli_w  # checked at start-up, see require_tomli_w()

    path = folder / name
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


@dataclass(frozen=True)
class AttemptFiles:
    """Where one attempt's evidence goes: claimed fresh, never another attempt's."""

    trajectory: Path
    stdout_log: Path
    stderr_log: Path


@dataclass(frozen=True)
class Prepared:
    """One attempt, ready to launch: argv, environment, and the private files to remove after."""

    argv: list[str]
    env: dict[str, str]
    private_files: tuple[Path, ...]


class Entrypoint(Protocol):
    """What differs between OpenHands entrypoints: how an attempt is configured and started, how
    it is asked to stop, where its outcome is read, and what it leaves to clean up."""

    name: str

    def session_id(self, session: str) -> str: ...

    def prepare(
        self, task: Task, session: str, files: AttemptFiles, marker: Marker, private_dir: Path, workspace: Path | None
    ) -> Prepared: ...

    def request_stop(self, proc: subprocess.Popen[bytes], marker: Marker) -> None: ...

    def read_outcome(self, files: AttemptFiles, session: str) -> Outcome: ...

    def follow(self, files: AttemptFiles, session: str) -> Follower: ...

    def evidence(self, files: AttemptFiles) -> list[Path]: ...

    def clean_up(self, session: str, log: RunLog) -> None: ...

    def about(self) -> dict[str, Any]: ...

    def describe(
        self, task: Task, files: AttemptFiles, secrets: tuple[str, ...], workspace: Path | None
    ) -> dict[str, Any]: ...


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

    def rules(self) -> dict[str, Any]:
        return {
            "file_store_default": self.file_store_default,
            "session_id": "NAME-h[:16] (before 0.51)" if self.legacy_session_id else "cut to 32 (0.51+)",
            "sigint": "graceful stop, trajectory saved" if self.graceful_sigint else "KeyboardInterrupt, no trajectory",
        }


def attempt_environment(marker: Marker, tmux_dir: Path) -> dict[str, str]:
    """What every attempt's environment gets, whatever the entrypoint: the markers, and a tmux
    folder of its own (OpenHands' local runtime and the V1 CLI run commands in tmux; a shared
    server would carry the environment, markers included, of whichever task started it)."""
    return {**marker.environment(), "TMUX_TMPDIR": str(tmux_dir), "PYTHONUNBUFFERED": "1"}


def make_tmux_dir(private_dir: Path) -> Path:
    """A private folder for one attempt's tmux server; short, since a socket path has a limit."""
    base = private_dir if len(str(private_dir)) < 60 else Path("/tmp")
    return Path(tempfile.mkdtemp(prefix="tmux-", dir=base))


def kill_agent_commands(proc: subprocess.Popen[bytes], marker: Marker) -> None:
    """End the commands the agent is running, outside OpenHands' process group: OpenHands stops
    gracefully only once they end. Left alone: tmux itself and a tmux pane's shell (killing the
    shell makes the V1 CLI hang); they go with the attempt."""
    for pid in marker.processes():
        if _pgid(pid) == proc.pid or _comm(pid).startswith("tmux"):
            continue
        parent = _parent(pid)
        if parent is not None and _comm(parent).startswith("tmux"):
            continue
        signal_quietly(pid, signal.SIGKILL)


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

    def prepare(
        self, task: Task, session: str, files: AttemptFiles, marker: Marker, private_dir: Path, workspace: Path | None
    ) -> Prepared:
        config = task_config(self.base_config, self.options, files.trajectory, marker.run_id, session)
        env = child_environment(self.environ, self.options, files.trajectory, marker, self.venv)
        if workspace is not None:
            set_workspace(config, env, self.environ, workspace)
        config_path = write_private_config(private_dir, f"{session}.{self.config_name}", config)
        argv = build_command(self.command, self.options, task.prompt_path, config_path, session)
        tmux_dir = make_tmux_dir(private_dir)
        env.update(attempt_environment(marker, tmux_dir))
        return Prepared(argv, env, (config_path, tmux_dir))

    def request_stop(self, proc: subprocess.Popen[bytes], marker: Marker) -> None:
        # As a terminal's Ctrl-C would: OpenHands 0.60+ then stops the agent and saves its
        # trajectory, but only after the agent's running command ends: end those commands now.
        signal_quietly(proc.pid, signal.SIGINT, group=True)
        kill_agent_commands(proc, marker)

    def read_outcome(self, files: AttemptFiles, session: str) -> Outcome:
        return read_outcome(files, self.event_folders(session))

    def event_folders(self, session: str) -> list[Path]:
        sids = [self.session_id(session)]
        if self.release.version is None:  # unknown release: either formula
            sids.append(session_id(session, legacy=not self.release.legacy_session_id))
        return [self.file_store / "sessions" / sid / "events" for sid in sids]

    def follow(self, files: AttemptFiles, session: str) -> Follower:
        return EventFollower(self.event_folders(session))

    def evidence(self, files: AttemptFiles) -> list[Path]:
        return []  # its session events live in the user's file store, outside the output folder

    def clean_up(self, session: str, log: RunLog) -> None:
        if self.uses_docker and not self.keep_containers:
            remove_container(self.session_id(session), log)

    def about(self) -> dict[str, Any]:
        return {"entrypoint": "core-main", "version": self.release.version, "rules": self.release.rules()}

    def describe(
        self, task: Task, files: AttemptFiles, secrets: tuple[str, ...], workspace: Path | None
    ) -> dict[str, Any]:
        session = session_name(task, "RUNID", 1)
        argv = build_command(
            self.command, self.options, task.prompt_path, Path("<private>") / f"{session}.{self.config_name}", session
        )
        config = task_config(self.base_config, self.options, files.trajectory, "RUNID", session)
        if workspace is not None:
            set_workspace(config, {}, self.environ, workspace)
        return {
            "command": [mask(a, secrets) for a in argv],
            "config": json.loads(mask(json.dumps(config, default=str), secrets)),
        }


CLI_END_STATES = ("FINISHED", "ERROR", "STUCK", "PAUSED")


@dataclass
class CliV1:
    """The V1 CLI, `openhands --headless` (the `openhands` package, 1.16.0 checked): no config
    file or session name; its settings are the user's agent_settings.json; each attempt gets a
    conversations folder of its own in the output folder, whose base_state.json holds the end
    state and the money (docs/openhands.md)."""

    command: tuple[str, ...]
    options: OpenHandsOptions
    environ: dict[str, str]
    output_dir: Path
    version: str | None = None
    name: str = "openhands (V1 CLI)"

    def conversations(self, files: AttemptFiles) -> Path:
        return self.output_dir / "conversations" / files.trajectory.stem

    def session_id(self, session: str) -> str:
        return ""  # the conversation id is known once OpenHands has written it

    def argv(self, prompt: Path) -> list[str]:
        override = ["--override-with-envs"] if self.environ.get("LLM_MODEL") else []
        return [
            *self.command,
            "--headless",
            "--always-approve",
            *override,
            "-f",
            str(prompt.absolute()),
            *self.options.extra_args,
        ]

    def prepare(
        self, task: Task, session: str, files: AttemptFiles, marker: Marker, private_dir: Path, workspace: Path | None
    ) -> Prepared:
        folder = self.conversations(files)
        folder.mkdir(parents=True, exist_ok=False)  # a fresh name: the trajectory's was just claimed
        tmux_dir = make_tmux_dir(private_dir)
        env = {**self.environ, "OPENHANDS_CONVERSATIONS_DIR": str(folder), **attempt_environment(marker, tmux_dir)}
        env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of litellm's price list
        if workspace is not None:
            env["OPENHANDS_WORK_DIR"] = str(workspace)
        return Prepared(self.argv(task.prompt_path), env, (tmux_dir,))

    def request_stop(self, proc: subprocess.Popen[bytes], marker: Marker) -> None:
        # It waits for the running command or LLM call before it saves its state: end the command.
        signal_quietly(proc.pid, signal.SIGINT, group=True)
        kill_agent_commands(proc, marker)

    def read_outcome(self, files: AttemptFiles, session: str) -> Outcome:
        return read_cli_outcome(files, self.conversations(files))

    def follow(self, files: AttemptFiles, session: str) -> Follower:
        return ConversationFollower(self.conversations(files))

    def evidence(self, files: AttemptFiles) -> list[Path]:
        """The conversation's files: they are in the output folder, and the agent's commands see
        the whole environment, keys included."""
        try:
            return [p for p in self.conversations(files).rglob("*") if p.is_file() and not p.is_symlink()]
        except OSError:
            return []

    def clean_up(self, session: str, log: RunLog) -> None:
        pass  # its tmux server carries the attempt's marker: the sweep ends it

    def about(self) -> dict[str, Any]:
        settings = "agent_settings.json in $OPENHANDS_PERSISTENCE_DIR (default ~/.openhands)"
        if self.environ.get("LLM_MODEL"):
            settings += ", LLM_* from the environment (--override-with-envs)"
        rules = {"settings": settings, "conversations": str(self.output_dir / "conversations" / "<task>")}
        return {"entrypoint": "cli", "version": self.version, "rules": rules}

    def describe(
        self, task: Task, files: AttemptFiles, secrets: tuple[str, ...], workspace: Path | None
    ) -> dict[str, Any]:
        described: dict[str, Any] = {"command": [mask(a, secrets) for a in self.argv(task.prompt_path)]}
        if workspace is not None:
            described["workspace"] = str(workspace)  # as OPENHANDS_WORK_DIR
        return described


@dataclass
class SdkDriver(CliV1):
    """--entrypoint sdk: each attempt is run_batch's own SDK driver (the section at the end of this
    file), run by the Python of an environment with openhands-sdk (the V1 CLI's): the CLI's agent
    and conversation folder, plus a step limit, a budget, a real exit status and the spend saved as
    it goes. --command names that Python, or the V1 CLI's `openhands` (its interpreter is used)."""

    grace_period: float = DEFAULT_GRACE_PERIOD
    name: str = "run_batch's SDK driver (openhands-sdk)"

    def argv(self, prompt: Path) -> list[str]:
        # The driver saves the state before run_batch's grace period ends and everything is killed.
        grace = self.grace_period - 5 if self.grace_period > 10 else self.grace_period / 2
        argv = [*self.command, str(Path(__file__).absolute()), SDK_DRIVER_FLAG, "-f", str(prompt.absolute())]
        argv += ["--grace", f"{grace:g}"]
        if self.options.max_iterations is not None:
            argv += ["--max-iterations", str(self.options.max_iterations)]
        if self.options.max_budget_per_task is not None:
            argv += ["--max-budget", f"{self.options.max_budget_per_task:g}"]
        if self.environ.get("LLM_MODEL"):
            argv.append("--override-with-envs")
        return argv

    def prepare(
        self, task: Task, session: str, files: AttemptFiles, marker: Marker, private_dir: Path, workspace: Path | None
    ) -> Prepared:
        prepared = super().prepare(task, session, files, marker, private_dir, workspace)
        prepared.env["OPENHANDS_SUPPRESS_BANNER"] = "1"
        return prepared

    def request_stop(self, proc: subprocess.Popen[bytes], marker: Marker) -> None:
        # The driver ends the agent's commands itself (Ctrl-C in their panes) and saves the state.
        signal_quietly(proc.pid, signal.SIGINT, group=True)

    def about(self) -> dict[str, Any]:
        about = super().about()
        about["entrypoint"] = "sdk"
        about["rules"]["driver"] = f"{Path(__file__).absolute()} {SDK_DRIVER_FLAG}, run by {self.command[0]}"
        return about


def script_interpreter(program: str) -> str | None:
    """The interpreter a script's `#!` line names (an installed console script's Python)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        with open_regular(program) as f:
            first = f.readline(512).decode()
        if first.startswith("#!") and len(first.split()) == 1:
            return first[2:].strip()
    return None


def detect_entrypoint(command: tuple[str, ...], forced: str) -> str:
    """`cli` for the V1 CLI (a program named `openhands`, or `-m openhands_cli...`), else `core-main`."""
    if forced != "auto":
        return forced
    modules = [command[i + 1] for i, word in enumerate(command[:-1]) if word == "-m"]
    if Path(command[0]).name == "openhands" or any(m.startswith("openhands_cli") for m in modules):
        return "cli"
    return "core-main"


def ask_version(command: tuple[str, ...], kind: str, environ: dict[str, str]) -> str | None:
    """The installed release, asked once per batch of the interpreter that runs it (package
    metadata: milliseconds, where importing OpenHands takes seconds); None when it cannot be told."""
    python: str | None = None
    if kind == "core-main" and "-m" in command and "openhands.core.main" in command:
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


CLI_UNSUPPORTED = (
    ("max_iterations", "--max-iterations", "it has no step limit (500, fixed)"),
    ("agent_cls", "--agent-cls", "it has one agent"),
    ("llm_config", "--llm-config", "its LLM is the one in agent_settings.json or LLM_MODEL"),
    ("max_budget_per_task", "--max-budget-per-task", "it has no budget limit"),
)


def choose_entrypoint(settings: Settings, base_config: dict[str, Any], environ: dict[str, str]) -> Entrypoint:
    """The OpenHands entrypoint --command names (or --entrypoint forces), with its release's rules."""
    kind = detect_entrypoint(settings.command, settings.entrypoint)
    command = settings.command
    if kind == "sdk" and Path(command[0]).name == "openhands":  # the V1 CLI's program: its Python
        command = (script_interpreter(command[0]) or command[0],)
    version = settings.openhands_version or ask_version(command, kind, environ)
    if kind == "core-main":
        return CoreMain(
            settings.command,
            settings.openhands,
            base_config,
            environ,
            settings.config_name,
            settings.venv,
            settings.keep_containers,
            Release(version),
        )
    what = "the V1 CLI (`openhands`)" if kind == "cli" else "--entrypoint sdk"
    for attr, option, why in CLI_UNSUPPORTED:
        if kind == "sdk" and attr in ("max_iterations", "max_budget_per_task"):
            continue  # what the driver adds
        if getattr(settings.openhands, attr) is not None:
            raise UsageError(f"{option}: {what} cannot honour it ({why}); leave it out")
    if kind == "sdk" and settings.openhands.extra_args:
        raise UsageError(
            "-- OPENHANDS_ARGS: --entrypoint sdk runs run_batch's own driver, which takes no extra arguments"
        )
    if settings.openhands.runtime not in (None, "local"):
        raise UsageError(
            f"--runtime {settings.openhands.runtime}: the V1 CLI runs commands on this machine only; "
            "leave --runtime out"
        )
    if environ.get("LLM_MODEL") and not environ.get("LLM_API_KEY"):
        raise UsageError(
            "LLM_MODEL is set but LLM_API_KEY is not: the V1 CLI takes its LLM from the environment "
            "only with both; set LLM_API_KEY, or unset LLM_MODEL to use agent_settings.json"
        )
    if settings.base_config_given:
        raise UsageError(
            "--base-config: the V1 CLI reads no config.toml; its settings are agent_settings.json in "
            "$OPENHANDS_PERSISTENCE_DIR (default ~/.openhands), or LLM_MODEL/LLM_API_KEY"
        )
    if kind == "sdk":
        return SdkDriver(
            command, settings.openhands, environ, settings.output_dir, version, grace_period=settings.grace_period
        )
    return CliV1(settings.command, settings.openhands, environ, settings.output_dir, version)


# ================================================================================================
# Launch and wait (process handling)
# ================================================================================================


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

    def processes(self) -> list[int]:
        """Live processes (zombies count as gone) whose environment carries this marker; Linux
        only (/proc), elsewhere none are found and only the process group is killed."""
        # Whole entries only: NUL-delimited, the environment read with a NUL in front.
        wanted = [f"\0{MARKER_RUN}={self.run_id}\0".encode()]
        if self.session is not None:
            wanted.append(f"\0{MARKER_SESSION}={self.session}\0".encode())
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
                if self.orphans_only and _runner_alive(environ.split(b"\0")):
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


def signal_quietly(pid: int, sig: int, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid, sig)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def kill_everything(proc: subprocess.Popen[bytes] | None, marker: Marker, patience: float = 5.0) -> list[int]:
    """SIGKILL the task's process group and every process carrying its marker, until none is
    left (a zombie counts as gone). Returns the pids that had to be killed."""
    killed: list[int] = []
    if proc is not None and proc.poll() is None:
        signal_quietly(proc.pid, signal.SIGKILL, group=True)
        killed.append(proc.pid)
    deadline = time.monotonic() + patience
    while True:
        left = marker.processes()
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
    halted: str | None = None  # the runner stopped this attempt alone: "stalled" or "task-budget"
    halt_reason: str | None = None


@dataclass
class Halt:
    """A request to stop one attempt, from the runner's watch over it (a stall, its budget)."""

    kind: str | None = None
    reason: str | None = None

    def request(self, kind: str, reason: str) -> None:
        if self.kind is None:
            self.kind, self.reason = kind, reason


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def launch_and_wait(
    prepared: Prepared,
    cwd: Path,
    files: AttemptFiles,
    timeout: float | None,
    grace_period: float,
    stop: StopSignal,
    marker: Marker,
    request_stop: Callable[[subprocess.Popen[bytes], Marker], None],
    halt: Halt | None = None,
) -> Launch:
    """Start OpenHands, wait for it to end, the timeout, or a stop; ask it to stop, give it the
    grace period, then kill every process of the attempt. Its output goes straight to the logs."""
    started_at, t0 = utc_now(), time.monotonic()
    try:
        with open_new(files.stdout_log, exclusive=False) as out, open_new(files.stderr_log, exclusive=False) as err:
            # Own session: a Ctrl-C on the terminal reaches the runner only, which then stops
            # tasks the graceful way; OpenHands' stdin is closed (a question would hang it).
            proc = subprocess.Popen(
                prepared.argv,
                cwd=cwd,
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
        )
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
                    request_stop(proc, marker)
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
    return Launch(
        return_code, timed_out, interrupted, started_at, utc_now(), time.monotonic() - t0, None, halt.kind, halt.reason
    )


def remove_container(sid: str, log: RunLog) -> None:
    """Remove this task's own Docker sandbox (OpenHands only stops it, or leaves it running)."""
    docker = shutil.which("docker")
    if docker is None:
        log.once("docker-missing", "Docker runtime but no `docker` command: containers not removed")
        return
    try:
        done = subprocess.run(
            [docker, "rm", "-f", f"openhands-runtime-{sid}"],
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


def remove_run_containers(run_id: str, log: RunLog) -> int:
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


# ================================================================================================
# Read the outcome (pure parsing; every read bounded, whatever a task printed or saved)
# ================================================================================================

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
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
_ACTION_METRICS = re.compile(
    r"Action metrics - accumulated_cost: ([\d.eE+-]+),.{0,400}?accumulated tokens \(prompt/completion\): (\d+)/(\d+)"
)
_ACTION_LATEST = re.compile(r"latest tokens \(prompt/completion/cache_read/cache_write\): (\d+)/(\d+)/(\d+)/(\d+)")
_DEBUG_COST = re.compile(r"Accumulated Cost: ([\d.]+) USD")
_DEBUG_TOKENS = re.compile(r"Input tokens: ([\d,]+)(?: \| Output tokens: ([\d,]+))?")
_BOX_COST = re.compile(r"Total Cost(?: \(USD\))?:\s*\$\s*([\d,.]+)")
_BOX_IN = re.compile(r"Total Input Tokens:\s*([\d,]+)")
_BOX_OUT = re.compile(r"Total Output Tokens:\s*([\d,]+)")
_BOX_CACHE_READ = re.compile(r"Cache Hits?:\s*([\d,]+)")
_BOX_CACHE_WRITE = re.compile(r"Cache Writes?:\s*([\d,]+)")
_METRICS_KEY = re.compile(rb'"llm_metrics"\s*:\s*')
_ROOT_ERROR = re.compile(r"^ERROR:root:<class '([\w.]+)'>: (.*)$")


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
    box: dict[str, float] = {}
    after_traceback = False
    for raw in lines:
        line = ANSI.sub("", raw.rstrip("\r\n")) if "\x1b" in raw else raw.rstrip("\r\n")
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
            after_traceback = True
        elif after_traceback and line and not line[0].isspace():
            if m := _EXCEPTION.match(line):
                facts.last_exception = m.group(1).strip()
            after_traceback = False
        if "openhands:ERROR" in line and (m := _LOG_PREFIX.match(line)):
            facts.last_error_line = m.group(2).strip()
        elif line.startswith("ERROR:root:<class '") and (m := _ROOT_ERROR.match(line)):  # 0.33
            facts.last_exception = f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}"
        if "accumulated tokens" in line and (m := _ACTION_METRICS.search(line)):
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
            for key, pattern in (("in", _BOX_IN), ("out", _BOX_OUT)):
                if m := pattern.search(line):
                    box[key] = _int(m.group(1)) or 0
        if "Cache" in line:
            for key, pattern in (("cache_read", _BOX_CACHE_READ), ("cache_write", _BOX_CACHE_WRITE)):
                if m := pattern.search(line):
                    box[key] = _int(m.group(1)) or 0

    def whole(key: str) -> int | None:
        return int(box[key]) if key in box else None

    if action:  # full precision, every LLM, accumulated
        facts.metrics = Metrics(
            float(action[0]), int(action[1]), int(action[2]), latest_cache[0], latest_cache[1], "output"
        )
    elif box:
        facts.metrics = Metrics(
            box.get("cost"), whole("in"), whole("out"), whole("cache_read"), whole("cache_write"), "output"
        )
    elif debug_cost is not None:  # 2 decimals, agent LLM only; tokens are per call, summed
        facts.metrics = Metrics(float(debug_cost), debug_in or None, debug_out or None, None, None, "output")
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


def _number_or_none(value: Any) -> float | None:
    """A finite number from outside, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


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


def read_json_file(path: Path, limit: int = 1 << 20) -> Any:
    """A small JSON file (an event), or None when it is missing, broken or over the limit."""
    try:
        with open_regular(path) as f:
            data = f.read(limit + 1)
        return loads_json(data) if len(data) <= limit else None
    except (OSError, ValueError, RecursionError):
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


@dataclass
class Outcome:
    agent_state: str | None
    metrics: Metrics
    facts: OutputFacts
    problem: str | None = None  # OpenHands ran but could not run the agent at all (no conversation)
    session_id: str | None = None  # known only afterwards (the V1 CLI's conversation id)


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
    if launch.halted:
        return "stalled" if launch.halted == "stalled" else "failed"
    if launch.timed_out:
        return "timeout"
    if launch.return_code != 0:
        return "failed"
    if agent_state is None or agent_state == "FINISHED":
        return "success"
    return "failed"


def one_line(text: str, limit: int = REASON_CHARS) -> str:
    """Text as one line of at most limit characters, without control characters (a task's output
    may hold terminal escapes, which must not reach the console) (pure)."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text[: limit * 4]).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def explain(
    status: str, launch: Launch, facts: OutputFacts, agent_state: str | None, timeout: float | None, stopped_by: str
) -> str | None:
    """One short line saying why the attempt did not succeed (pure)."""
    if status == "success":
        return None
    if launch.error:
        return one_line(launch.error)
    if status == "timeout":
        return f"timed out after {timeout:g}s" if timeout else "timed out"
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
    if status == "error":
        return launch.error is not None  # could not start; an empty prompt stays empty
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


def redact_file(path: Path, secrets: tuple[str, ...], chunk: int = 1 << 20) -> bool:
    """Replace secrets in a file the task wrote (OpenHands or the agent may print a key).
    Streams in chunks, so a big log costs no memory; rewrites only when a secret is there."""
    if not secrets or not path.is_file() or path.is_symlink():
        return False
    needles = [s.encode() for s in secrets]
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
# Evaluate: did the agent do the task? (a command of the user's, after each attempt)
# ================================================================================================

EVALUATION_PLACEHOLDERS = ("task", "prompt", "output_dir", "trajectory", "workspace", "status")
VERDICTS = ("passed", "failed", "error")


def parse_evaluator(text: str) -> tuple[str, ...]:
    """--evaluate: split like a shell would (never run through one); every `{name}` must be a
    known placeholder, so a typo is a usage error now, not a crash at task 30."""
    try:
        words = tuple(shlex.split(text))
    except ValueError as exc:
        raise UsageError(f"--evaluate {text!r}: {exc}; check the quotes") from None
    if not words:
        raise UsageError("--evaluate is empty; give the command that grades a task")
    formatter = string.Formatter()
    for word in words:
        try:
            names = [name for _, name, spec, conv in formatter.parse(word) if name is not None]
        except ValueError as exc:
            raise UsageError(f"--evaluate: {word!r}: {exc} (write {{{{ and }}}} for a literal brace)") from None
        for name in names:
            if name not in EVALUATION_PLACEHOLDERS:
                known = ", ".join(f"{{{p}}}" for p in EVALUATION_PLACEHOLDERS)
                raise UsageError(f"--evaluate: unknown placeholder {{{name}}}; the known ones are {known}")
        try:  # what parse() lets through: `{task:{x}}`, `{task!x}`, `{task:d}`, `{task[0]}`
            word.format(**dict.fromkeys(EVALUATION_PLACEHOLDERS, ""))
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise UsageError(
                f"--evaluate: {word!r}: {exc!r}; placeholders take no format, conversion or index ({{task}})"
            ) from None
    return words


def evaluator_argv(words: tuple[str, ...], values: dict[str, str]) -> list[str]:
    """The evaluator's argv with the placeholders filled in, each word on its own (pure): a task
    name with spaces or quotes stays one argument."""
    return [word.format(**values) for word in words]


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
        found = loads_json(last_line)
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


def last_line_of(path: Path) -> str:
    lines = [line.strip() for line in tail(path, 64 * 1024).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_evaluator(
    argv: list[str],
    cwd: Path,
    environ: dict[str, str],
    log_path: Path,
    timeout: float,
    marker: Marker,
    secrets: tuple[str, ...],
    stop: StopSignal | None = None,
) -> Evaluation:
    """Run the evaluator like a task: its own session, its stdout and stderr in their logs
    (secrets masked; the score is on stdout's last line, whatever it says on stderr), its timeout,
    every process it leaves killed (the same marker sweep), and stopped at once when the batch is
    stopped (Ctrl-C, SIGTERM)."""
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
    elapsed = round(time.monotonic() - t0, 3)
    return Evaluation(verdict, score, details, code, elapsed, str(log_path), reason, str(stderr_path))


@dataclass(frozen=True)
class Grader:
    """--evaluate: the command (split, placeholders checked), where it runs, its time limit."""

    words: tuple[str, ...]
    project_dir: Path
    output_dir: Path
    timeout: float


def grade(
    grader: Grader,
    record: AttemptRecord,
    prompt: str,
    stdout_log: Path,
    run_id: str,
    secrets: tuple[str, ...],
    stop: StopSignal | None = None,
) -> Evaluation:
    """Run --evaluate on one attempt, its log beside the attempt's logs: `<stem>.eval.log` (or, when
    that name is taken by an earlier grading, `<stem>.eval.<run id>.log`)."""
    values = {
        "task": record.task_name,
        "prompt": prompt,
        "output_dir": str(grader.output_dir),
        "trajectory": record.trajectory_path or "",
        "workspace": record.workspace or "",
        "status": record.status,
    }
    stem = stdout_log.name.removesuffix(".stdout.log")
    log_path = stdout_log.with_name(f"{stem}.eval.log")
    if os.path.lexists(log_path) or os.path.lexists(stdout_log.with_name(f"{stem}.eval.stderr.log")):
        log_path = stdout_log.with_name(f"{stem}.eval.{run_id}.log")
    marker = Marker(run_id, f"{record.session_name or record.task_name}-eval")
    return run_evaluator(
        evaluator_argv(grader.words, values),
        grader.project_dir,
        dict(os.environ),
        log_path,
        grader.timeout,
        marker,
        secrets,
        stop,
    )


@dataclass(frozen=True)
class Verdicts:
    """The latest verdict of every evaluated attempt: a record's own, or a later one from
    evaluations.jsonl (--evaluate-only never rewrites a record)."""

    by_attempt: dict[tuple[str, str], tuple[Evaluation, str | None]]  # (task, session) -> (verdict, command)

    def of(self, record: AttemptRecord) -> Evaluation | None:
        found = self.by_attempt.get((record.task_name, record.session_name))
        return found[0] if found else Evaluation.from_json(record.evaluation)

    def command_of(self, record: AttemptRecord) -> str | None:
        found = self.by_attempt.get((record.task_name, record.session_name))
        return found[1] if found else record.evaluate_command


EVALUATIONS_FILE = "evaluations.jsonl"


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
        out.append(dataclasses.replace(r, evaluation=found[0].as_json(), evaluate_command=found[1]) if found else r)
    return out


def pass_rates(latest: list[AttemptRecord]) -> dict[str, Any] | None:
    """passed / evaluated, passed / selected, mean score (pure); None when nothing was evaluated."""
    graded = [v for v in (Evaluation.from_json(r.evaluation) for r in latest) if v is not None]
    if not graded:
        return None
    passed = sum(v.verdict == "passed" for v in graded)
    scores = [v.score for v in graded if v.score is not None]
    return {
        "evaluated": len(graded),
        "passed": passed,
        "failed": sum(v.verdict == "failed" for v in graded),
        "error": sum(v.verdict == "error" for v in graded),
        "pass_rate_evaluated": round(passed / len(graded), 4),
        "pass_rate_selected": round(passed / len(latest), 4) if latest else None,
        "mean_score": round(sum(scores) / len(scores), 4) if scores else None,
    }


def pass_rate_line(rates: dict[str, Any] | None) -> str | None:
    if not rates:
        return None
    mean = "" if rates["mean_score"] is None else f", mean score {rates['mean_score']:g}"
    return (
        f"Evaluation: {rates['passed']} passed of {rates['evaluated']} evaluated "
        f"({rates['pass_rate_evaluated']:.0%}; {rates['pass_rate_selected']:.0%} of the selected tasks), "
        f"{rates['failed']} failed, {rates['error']} error{mean}."
    )


# ================================================================================================
# Follow running attempts: live spend and steps, stalls, budgets (read only what is new)
# ================================================================================================


@dataclass
class Progress:
    """What one look at a running attempt found new."""

    events: int = 0  # new events since the last look
    steps: int = 0  # of which agent actions
    metrics: Metrics | None = None  # the newest accumulated totals seen, if any
    last_event: str | None = None  # the newest event, in a few words


def describe_event(event: dict[str, Any]) -> str:
    """A few words for an event of either generation (pure)."""
    what = event.get("action") or event.get("observation") or event.get("kind") or "event"
    extra = event.get("tool_name") or (event.get("args") or {}).get("command") if isinstance(event, dict) else None
    text = f"{what} {extra}" if isinstance(extra, str) and extra else str(what)
    return one_line(text, 80)


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


class Follower(Protocol):
    def poll(self) -> Progress: ...


@dataclass
class LiveAttempt:
    """A running attempt as the runner sees it: spend and steps so far, and when it last moved."""

    task: str
    session: str
    files: AttemptFiles
    follower: Follower
    halt: Halt
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
                size += path.stat().st_size
        if progress.events or size != self.output_size:
            self.output_size = size
            self.last_progress, self.last_progress_at = now, utc_now()


def check_attempt(live: LiveAttempt, now: float, stall_timeout: float | None, task_budget: float | None) -> None:
    """Stop an attempt that has not moved for stall_timeout, or has spent its budget."""
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
        """Spend recorded by other results files since the last look (ours is counted as we write it)."""
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
                    self.spent += AttemptRecord.from_json(loads_json(line)).total_cost or 0.0
        return self.spent


# ================================================================================================
# Record: the results file, its records, and the attempt's files
# ================================================================================================


@dataclass(frozen=True)
class AttemptRecord:
    """One line of the results file: what one attempt of one task did (README, "The record")."""

    task_name: str
    prompt_file: str
    status: str  # one of STATUSES: success | failed | timeout | stalled | error | interrupted
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
    error: str | None  # one line, at most REASON_CHARS
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
    evaluation: dict[str, Any] | None = None  # Evaluation.as_json(); None: not evaluated
    evaluate_command: str | None = None  # the --evaluate that graded it (resume of --evaluate-only)
    workspace: str | None = None  # the attempt's own workspace (--workspace-per-task)

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # asdict deep-copies: slow

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
        for name, (kinds, empty) in _RECORD_FIELDS.items():
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
        return cls(**values)


# Each field's accepted JSON types and its value when an older record lacks it.
_RECORD_FIELDS: dict[str, tuple[tuple[type, ...], Any]] = {
    "task_name": ((str,), ""),
    "prompt_file": ((str,), ""),
    "status": ((str,), "error"),
    "return_code": ((int,), None),
    "elapsed_time_seconds": ((int, float), 0.0),
    "stdout": ((str,), ""),
    "stderr": ((str,), ""),
    "total_cost": ((int, float), None),
    "total_input_tokens": ((int,), None),
    "total_output_tokens": ((int,), None),
    "cache_read_tokens": ((int,), None),
    "cache_write_tokens": ((int,), None),
    "metrics_source": ((str,), None),
    "agent_state": ((str,), None),
    "error": ((str,), None),
    "trajectory_path": ((str,), None),
    "attempt": ((int,), 1),
    "started_at": ((str,), ""),
    "finished_at": ((str,), ""),
    "session_name": ((str,), ""),
    "session_id": ((str,), ""),
    "stdout_log": ((str,), None),
    "stderr_log": ((str,), None),
    "command": ((list,), None),
    "prompt_sha256": ((str,), None),
    "run_id": ((str,), ""),
    "evaluation": ((dict,), None),
    "evaluate_command": ((str,), None),
    "workspace": ((str,), None),
}


def blank_record(
    task: Task, attempt: int, session: str, sid: str, run_id: str, problem: str | None = None
) -> AttemptRecord:
    """The record of an attempt that never ran: status error, nothing measured (pure)."""
    now = utc_now()
    return AttemptRecord(
        task_name=task.name,
        prompt_file=readable(str(task.prompt_path)),
        status="error",
        return_code=None,
        elapsed_time_seconds=0.0,
        stdout="",
        stderr="",
        total_cost=None,
        total_input_tokens=None,
        total_output_tokens=None,
        cache_read_tokens=None,
        cache_write_tokens=None,
        metrics_source=None,
        agent_state=None,
        error=one_line(problem or task.problem or "not run"),
        trajectory_path=None,
        attempt=attempt,
        started_at=now,
        finished_at=now,
        session_name=session,
        session_id=sid,
        stdout_log=None,
        stderr_log=None,
        command=None,
        prompt_sha256=task.prompt_sha256,
        run_id=run_id,
    )


@dataclass(frozen=True)
class Evidence:
    """What an attempt left on disk that goes into its record, secrets already masked."""

    stdout: str
    stderr: str
    trajectory_saved: bool


def build_record(
    blank: AttemptRecord,
    launch: Launch,
    outcome: Outcome,
    files: AttemptFiles,
    argv: list[str],
    evidence: Evidence,
    timeout: float | None,
    stopped_by: str,
    secrets: tuple[str, ...],
) -> tuple[AttemptRecord, bool]:
    """The record of an attempt that was launched, and whether it is worth another try (pure).
    Texts are masked before they are cut to one line: a cut could leave most of a key unmasked."""

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
    why = explain(status, launch, facts, state, timeout, stopped_by)
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


def open_for_writing(path: Path, flags: int, mode: int = 0o644) -> int:
    """A file descriptor to write a file of ours: never through a symbolic link (in a shared output
    folder nobody may redirect our writes), and only to a regular file (opening a FIFO someone put
    in our place would block until a reader came: O_NONBLOCK makes it fail at once instead)."""
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


def open_new(path: Path, exclusive: bool = True, mode: int = 0o644) -> Any:
    """A file of ours opened for writing (see open_for_writing); exclusive: it must not exist yet."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    return os.fdopen(open_for_writing(path, flags, mode), "wb")


def claim_attempt_files(output_dir: Path, task: Task, attempt: int, run_id: str) -> AttemptFiles:
    """Fresh file names for one attempt: `<stem>.json` and `<stem>.stdout.log` for a first attempt,
    `<stem>.attempt-N...` after. A name some file already has (another results file's record, a
    run in the same folder, a planted link) is never reused: each file is created here,
    exclusively, and a taken name moves on to `<stem>.attempt-N.<run id>`. A name whose workspace
    or conversations folder is already there (left by hand, or by a run that died) is taken too:
    those folders are named after the files, and the files' owner alone creates them."""
    numbered = "" if attempt == 1 else f".attempt-{attempt}"
    for extra in ("", f".{run_id}", *(f".{run_id}-{k}" for k in range(2, 50))):
        stem = f"{task.stem}{numbered}{extra}"
        if any(os.path.lexists(output_dir / folder / stem) for folder in ("workspaces", "conversations")):
            continue
        files = AttemptFiles(
            output_dir / "trajectories" / f"{stem}.json",
            output_dir / "logs" / f"{stem}.stdout.log",
            output_dir / "logs" / f"{stem}.stderr.log",
        )
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
    raise OSError(17, "every file name for this attempt is taken", str(output_dir / "logs" / task.stem))


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
        # Everything in the template but the output folder, when it lies inside (a copy of itself).
        inside = output_dir.absolute().is_relative_to(template)
        entries = [
            template / e
            for e in sorted(os.listdir(template))
            if not (inside and output_dir.absolute().is_relative_to(template / e))
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
    inside = output_dir.absolute().is_relative_to(template)
    aside = [f":(exclude){output_dir.absolute().relative_to(template)}"] if inside else []
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
        self._mutex = threading.Lock()

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
        never keeps half a record of ours."""
        data = (json.dumps(value, ensure_ascii=False) + "\n").encode()
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
        fd = open_for_writing(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        # A torn last line (a run died mid-write) stays as it is, but the next record must start
        # on its own line or it would be glued to it and lost.
        size = os.lseek(fd, 0, os.SEEK_END)
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")
        return fd


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
                records.append(AttemptRecord.from_json(loads_json(line)))
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
    """The records of every results file (*.jsonl) in an output folder, oldest first, with the
    paths of a moved or copied folder's files where they are now (`relocated`)."""
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
    records.sort(key=lambda r: r.finished_at)
    return records, warnings


def latest_by_task(records: Iterable[AttemptRecord]) -> dict[str, AttemptRecord]:
    latest: dict[str, AttemptRecord] = {}
    for record in records:
        latest[record.task_name] = record
    return latest


# ================================================================================================
# Report: totals, the console views, the runner's log, summary.json, --report and --dry-run
# ================================================================================================


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
    evaluation: dict[str, Any] | None = None  # pass rates, when any task was evaluated


def summarise(records: list[AttemptRecord]) -> Totals:
    """Totals over records, unknown costs and tokens left out of the means (pure)."""
    counts = dict.fromkeys(STATUSES, 0) | Counter(r.status for r in records)
    costs = [r.total_cost for r in records if r.total_cost is not None]
    with_tokens = [r for r in records if r.total_input_tokens is not None]
    tokens_in = sum(r.total_input_tokens or 0 for r in records)
    tokens_out = sum(r.total_output_tokens or 0 for r in records)
    return Totals(
        tasks=len(records),
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
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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


def printable(name: str) -> str:
    """A task name on one console line (names may hold newlines or control characters)."""
    return name if name.isprintable() else repr(name)


def finished_line(record: AttemptRecord, done: int, total: int, last: bool = True) -> str:
    where = f"[{done}/{total}]" if last else "[retrying]"
    line = (
        f"{where} {record.status:<11} {printable(record.task_name)}  {record.elapsed_time_seconds:.1f}s  "
        f"{format_money(record.total_cost)}  {format_count(record.total_input_tokens)}/"
        f"{format_count(record.total_output_tokens)} tokens"
    )
    if record.attempt > 1:
        line += f"  (attempt {record.attempt})"
    if record.error:
        line += f"  - {record.error[:160]}"
    return line


def totals_line(totals: Totals) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in totals.counts.items() if n)
    rates = totals.evaluation
    passed = "" if not rates else f"; {rates['passed']}/{rates['evaluated']} evaluated passed"
    return (
        f"{plural(totals.tasks, 'task')}: {counts or 'none'}; cost ${totals.total_cost:.4f} "
        f"(known for {totals.tasks_with_cost}), tokens {totals.total_input_tokens} in / "
        f"{totals.total_output_tokens} out, task time {format_duration(totals.task_time_seconds)}{passed}"
    )


REPORT_HEAD = ("task", "status", "state", "secs", "cost $", "in tok", "out tok", "verdict", "why")


def report_rows(latest: list[AttemptRecord]) -> list[tuple[str, ...]]:
    return [
        (
            printable(r.task_name),
            r.status,
            one_line(r.agent_state or UNKNOWN, 32),
            f"{r.elapsed_time_seconds:.1f}",
            UNKNOWN if r.total_cost is None else f"{r.total_cost:.4f}",
            format_count(r.total_input_tokens),
            format_count(r.total_output_tokens),
            str((r.evaluation or {}).get("verdict", "-")),
            one_line(r.error or "", 100),  # a record read back is data from outside
        )
        for r in latest
    ]


def table_lines(latest: list[AttemptRecord]) -> list[str]:
    """The report table as aligned lines, header first (pure)."""
    rows = report_rows(latest)
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(REPORT_HEAD)]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [REPORT_HEAD, *rows]]


def render_summary(latest: list[AttemptRecord], totals: Totals, fmt: str) -> str:
    """--report text: json, markdown or an aligned table (pure)."""
    if fmt == "json":
        return json.dumps(
            {"totals": dataclasses.asdict(totals), "tasks": [r.as_json() for r in latest]}, indent=2, ensure_ascii=False
        )
    if fmt == "markdown":
        lines = ["| " + " | ".join(REPORT_HEAD) + " |", "|" + "---|" * len(REPORT_HEAD)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in report_rows(latest)]
        return "\n".join([*lines, "", totals_line(totals)])
    return "\n".join([*table_lines(latest), "", totals_line(totals)])


STATUS_STYLE = {
    "success": "green",
    "failed": "red",
    "timeout": "yellow",
    "stalled": "yellow",
    "error": "magenta",
    "interrupted": "cyan",
}


def print_report_table(latest: list[AttemptRecord], totals: Totals) -> None:
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
    for line, record in zip(lines[1:], latest, strict=True):
        text.append(line + "\n", style=STATUS_STYLE.get(record.status))
    text.append("\n" + totals_line(totals))
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

    def __init__(self, total: int, workers: int, on_lost: Callable[[], None]) -> None:
        super().__init__(quiet=False, on_lost=on_lost)
        from rich.console import Console
        from rich.live import Live

        self.total, self.workers = total, workers
        self.counts: Counter[str] = Counter()
        self.cost = 0.0
        self.durations: list[float] = []
        self.running: dict[str, tuple[str, float]] = {}
        self.spend: dict[str, tuple[float | None, int]] = {}  # running attempts' spend and steps, by session
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
                f"{done}/{self.total} done   {counts}   ${so_far:.4f} so far   "
                f"{format_duration(now - self.t0)} elapsed   {eta}",
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


def make_view(quiet: bool, total: int, workers: int, on_lost: Callable[[], None]) -> tuple[PlainView, str | None]:
    """A live view on a terminal, plain lines elsewhere; rich is only imported for the first."""
    if quiet or not sys.stdout.isatty() or os.environ.get("TERM") == "dumb":
        return PlainView(quiet, on_lost), None
    try:
        return LiveView(total, workers, on_lost), None
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


def write_json_atomically(path: Path, data: dict[str, Any]) -> Path:
    """A JSON file replaced atomically: a reader never sees half of it, and a failed write (a full
    disk) leaves neither half a file nor its temporary behind."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".json", dir=path.parent)
    except OSError as exc:  # name the file the user knows, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    return path


def write_summary_json(output_dir: Path, latest: list[AttemptRecord], totals: dict[str, Any]) -> Path:
    """summary.json: the latest attempt of every selected task and the totals."""
    data = {"generated_at": utc_now(), "totals": totals, "tasks": [r.as_json() for r in latest]}
    return write_json_atomically(output_dir / "summary.json", data)


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


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def workspace_line(disk: dict[str, int]) -> str | None:
    if not disk:
        return None
    big = max(disk, key=lambda k: disk[k])
    return (
        f"Workspaces: {plural(len(disk), 'task')}, {format_bytes(sum(disk.values()))} on disk "
        f"(largest: {printable(big)} {format_bytes(disk[big])})"
    )


def read_live_runs(output_dir: Path) -> list[dict[str, Any]]:
    """The status files of runs that are running (run*.json): a file that says `running` for a
    process on this machine that is gone is a dead run's, and left out."""
    runs = []
    for path in sorted(output_dir.glob("run*.json")):
        data = read_json_file(path, limit=64 << 20)
        if not (isinstance(data, dict) and data.get("state") == "running" and isinstance(data.get("running"), list)):
            continue
        pid = data.get("pid")
        if data.get("host") == socket.gethostname() and isinstance(pid, int) and not process_alive(pid):
            continue
        runs.append(data)
    return runs


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not is_zombie(pid)


def live_run_lines(runs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for run in runs:
        lines.append(
            f"Running now: run {run.get('run_id')} (pid {run.get('pid')} on {run.get('host')}), "
            f"updated {run.get('updated_at')}"
        )
        for t in run["running"]:
            if isinstance(t, dict):
                spend = t.get("spend")
                lines.append(
                    f"  {printable(str(t.get('task')))}  {format_duration(float(t.get('elapsed') or 0))}  "
                    f"{format_money(spend if isinstance(spend, (int, float)) else None)}  "
                    f"{t.get('steps')} steps"
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


def _seconds(stamp: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


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


def trajectory_html(record: AttemptRecord, output_dir: Path) -> str:
    """A trajectory, readably: messages and thoughts, each action with its observation, each step's
    cost and tokens, the final state and error; bounded however big the file. Only a file inside
    the output folder is read: a record is data from outside, and may name any file."""
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
            if size > HTML_TRAJECTORY_FILE_CAP:
                return head + f"<p>The trajectory is {size >> 20} MB: too big to show here; open the file.</p>"
            events = loads_json(f.read(HTML_TRAJECTORY_FILE_CAP + 1))
    except (OSError, ValueError, RecursionError):
        return head + "<p>The trajectory could not be read.</p>"
    if not isinstance(events, list):
        return head + "<p>The trajectory is not a list of events.</p>"
    out, used, last_cost = [head, "<ol class=steps>"], 0, 0.0
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
        item = f"<li><span class=kind>{_e(source)} {_e(kind)}</span>{money}{''.join(parts)}</li>"
        used += len(item)
        if used > HTML_TRAJECTORY_CAP:
            out.append(f"<li>… the rest is cut here ({HTML_TRAJECTORY_CAP} characters); open the trajectory file.</li>")
            break
        out.append(item)
    return "".join([*out, "</ol>"])


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
    ("status", 0),
    ("state", 0),
    ("verdict", 0),
    ("secs", 1),
    ("cost", 1),
    ("in tok", 1),
    ("out tok", 1),
    ("attempts", 1),
    ("why", 0),
    ("files", 0),
    ("workspace disk", 1),
)


def html_totals(totals: Totals, records: list[AttemptRecord], output_dir: Path, disk: dict[str, int]) -> str:
    """The totals block: counts and spend, pass rate, disk, and which runs and files it covers."""
    runs = sorted({r.run_id for r in records if r.run_id})
    starts = [t for t in (_seconds(r.started_at) for r in records) if t is not None]
    ends = [t for t in (_seconds(r.finished_at) for r in records) if t is not None]
    wall = format_duration(max(ends) - min(starts)) if starts and ends else UNKNOWN
    try:
        files = sorted(p.name for p in output_dir.glob("*.jsonl") if p.name != EVALUATIONS_FILE)
    except OSError:
        files = []
    covers = (
        f"{len(runs)} run(s): {', '.join(runs)}; results files (one per shard): {', '.join(files) or '-'}; "
        f"wall time from the first start to the last end {wall}"
    )
    return (
        f"<div class=totals><p>{_e(totals_line(totals))}</p><p>{_e(pass_rate_line(totals.evaluation) or '')}</p>"
        f"<p>{_e(workspace_line(disk) or '')}</p>\n"
        f"<p>{_e(covers)}; generated {_e(utc_now())} by run_batch {__version__}</p></div>"
    )


def html_task_table(
    latest: list[AttemptRecord], records: list[AttemptRecord], report_dir: Path, disk: dict[str, int]
) -> str:
    """The status filters and the task table, each row linking its files relative to the page."""
    attempts = Counter(r.task_name for r in records)
    outliers = {r.task_name for r in cost_outliers(latest)}

    def link(path: str | None, label: str) -> str:
        if not path:
            return ""
        return f'<a href="{_e(urllib.parse.quote(os.path.relpath(path, report_dir)))}">{_e(label)}</a>'

    rows = []
    for r in latest:
        verdict = (r.evaluation or {}).get("verdict", "-")
        files = (
            link(r.stdout_log, "stdout"),
            link(r.stderr_log, "stderr"),
            link(r.trajectory_path, "trajectory"),
            link(r.workspace, "workspace"),
        )
        colour = STATUS_COLOUR.get(r.status, "#777")
        cost = "" if r.total_cost is None else r.total_cost
        rows.append(
            f'<tr data-status="{_e(r.status)}"><td>{_e(r.task_name)}</td>'
            f'<td><span class=status style="background:{colour}">{_e(r.status)}</span></td>'
            f"<td>{_e(r.agent_state or UNKNOWN)}</td><td>{_e(verdict)}</td>"
            f'<td class=num data-v="{r.elapsed_time_seconds}">{r.elapsed_time_seconds:.1f}</td>'
            f'<td class=num data-v="{cost}">{_e(format_money(r.total_cost))}'
            f"{' ⚑' if r.task_name in outliers else ''}</td>"
            f'<td class=num data-v="{r.total_input_tokens or ""}">{_e(format_count(r.total_input_tokens))}</td>'
            f'<td class=num data-v="{r.total_output_tokens or ""}">{_e(format_count(r.total_output_tokens))}</td>'
            f"<td class=num>{attempts[r.task_name]}</td><td>{_e(r.error or '')}</td>"
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
    """Every task's trajectory, folded, until the page's cap; the rest say where the file is."""
    shown: list[str] = []
    budget = HTML_PAGE_TRAJECTORIES_CAP
    for i, r in enumerate(latest):
        body = (
            trajectory_html(r, output_dir)
            if budget > 0
            else ("<p>Not shown: the page holds at most 20 million characters of trajectories; open the file.</p>")
        )
        budget -= len(body)
        shown.append(
            f'<details class=traj id="t-{i}"><summary>{_e(r.task_name)} · {_e(r.status)}</summary>{body}</details>'
        )
    return "".join(shown)


def render_html(
    latest: list[AttemptRecord],
    records: list[AttemptRecord],
    totals: Totals,
    report_dir: Path,
    secrets: tuple[str, ...],
    title: str,
    output_dir: Path | None = None,
    disk: dict[str, int] | None = None,
) -> str:
    """The whole report page (pure but for reading trajectories). Everything not written here is
    escaped: task names, reasons and outputs are data from outside."""
    output_dir = output_dir or report_dir
    disk = disk or {}
    outliers = {r.task_name for r in cost_outliers(latest)}
    durations = sorted(r.elapsed_time_seconds for r in latest)
    median = durations[len(durations) // 2] if durations else 0.0
    cost_items = [(r.task_name, r.total_cost, r.task_name in outliers) for r in latest if r.total_cost is not None]
    time_items = [
        (r.task_name, r.elapsed_time_seconds, median > 0 and r.elapsed_time_seconds > 3 * median) for r in latest
    ]
    page = f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<meta http-equiv="Content-Security-Policy" content="{HTML_POLICY}">
<title>{_e(title)}</title><style>{HTML_STYLE}</style></head><body>
<h1>{_e(title)}</h1>
{html_totals(totals, records, output_dir, disk)}
<h2>Timeline</h2><p>One lane per worker slot of each run; hover a bar for its task.</p>{svg_timeline(records)}
<h2>Cost per task</h2><p>Red: more than 3× the median.</p>{svg_bars(cost_items, "$")}
<h2>Time per task</h2>{svg_bars(time_items, "s")}
<h2>Durations</h2>{svg_histogram(durations)}
<h2>Tasks</h2>{html_task_table(latest, records, report_dir, disk)}
<h2>Trajectories</h2>{html_trajectories(latest, output_dir)}
<script>{HTML_SCRIPT}</script></body></html>
"""
    return mask(page, secrets)


def write_html_report(
    path: Path,
    latest: list[AttemptRecord],
    records: list[AttemptRecord],
    totals: Totals,
    secrets: tuple[str, ...],
    title: str,
    output_dir: Path,
    disk: dict[str, int] | None = None,
) -> Path:
    """The report page, written atomically."""
    text = render_html(latest, records, totals, path.parent.absolute(), secrets, title, output_dir, disk)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    return path


def markdown_report(latest: list[AttemptRecord], totals: Totals) -> str:
    """--format markdown: the tasks, the totals, the pass rate and a per-status table (GitHub's
    job summary reads markdown)."""
    lines = [render_summary(latest, totals, "markdown"), ""]
    if rates := pass_rate_line(totals.evaluation):
        lines += [rates, ""]
    lines += ["| status | tasks |", "|---|---|", *(f"| {st} | {n} |" for st, n in totals.counts.items() if n)]
    return "\n".join(lines)


def report(settings: Settings) -> int:
    """--report: the latest attempt of every task across every results file in the folder."""
    folder = settings.output_dir
    if not folder.is_dir():
        raise UsageError(f"--output-dir {folder}: no such folder; nothing to report")
    records, warnings = read_folder_records(folder)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    latest = apply_verdicts(sorted(latest_by_task(records).values(), key=lambda r: r.task_name), read_verdicts(folder))
    totals = summarise(latest)
    live = read_live_runs(folder)
    disk = workspace_disk(latest, folder)
    if settings.output_format == "json":
        data = json.loads(render_summary(latest, totals, "json"))
        data["cost_outliers"] = [r.task_name for r in cost_outliers(latest)]
        data["live_runs"] = live
        data["workspaces_disk_bytes"] = {"total": sum(disk.values()), "by_task": disk}
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0 if latest and all(r.status == "success" for r in latest) else 1
    if settings.output_format == "html":
        path = settings.report_output or folder / "report.html"
        secrets = find_secrets(load_base_config(settings.base_config), dict(os.environ))
        write_html_report(path, latest, records, totals, secrets, f"run_batch report: {folder}", folder, disk)
        print(f"Report: {path}")
        return 0 if latest and all(r.status == "success" for r in latest) else 1
    if settings.output_format == "table":
        print_report_table(latest, totals)
        if rates := pass_rate_line(totals.evaluation):
            print(rates)
    elif settings.output_format == "markdown":
        print(markdown_report(latest, totals))
    else:
        print(render_summary(latest, totals, settings.output_format))
    for line in [*filter(None, [outlier_line(latest), workspace_line(disk)]), *live_run_lines(live)]:
        print(line)
    return 0 if latest and all(r.status == "success" for r in latest) else 1


def dry_run(settings: Settings, plan: Plan, entrypoint: Entrypoint, secrets: tuple[str, ...]) -> int:
    """--dry-run: the plan, the first task's command and effective config; nothing run or written."""
    about = entrypoint.about()
    described: dict[str, Any] = {}
    if plan.to_run or plan.done:
        example = (plan.to_run or plan.done)[0]
        files = AttemptFiles(
            settings.output_dir / "trajectories" / f"{example.stem}.json",
            settings.output_dir / "logs" / f"{example.stem}.stdout.log",
            settings.output_dir / "logs" / f"{example.stem}.stderr.log",
        )
        workspace = settings.output_dir / "workspaces" / example.stem if settings.workspace_per_task else None
        described = entrypoint.describe(example, files, secrets, workspace)
    if settings.output_format == "json":
        print(
            json.dumps(
                {
                    "project_dir": str(settings.project_dir),
                    "output_dir": str(settings.output_dir),
                    "results_file": str(settings.results_path),
                    "max_workers": settings.max_workers,
                    "to_run": [{"task": t.name, "problem": t.problem} for t in plan.to_run],
                    "skipped": [{"task": t.name, "why": "already success"} for t in plan.done],
                    "openhands": about,
                    "first_task": described,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    import tomli_w

    print(
        f"Would run {plural(len(plan.to_run), 'task')} ({len(plan.done)} already done, skipped), "
        f"{settings.max_workers} at a time, from {settings.project_dir}:"
    )
    rules = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in about["rules"].items())
    print(f"OpenHands: {about['entrypoint']}, version {about['version'] or 'unknown (newest rules)'} ({rules})")
    for t in plan.to_run:
        print(f"  run   {printable(t.name)}" + (f"  (will be recorded as error: {t.problem})" if t.problem else ""))
    for t in plan.done:
        print(f"  skip  {printable(t.name)}  (already success)")
    if "command" in described:
        print("Command (first task):\n  " + shlex.join(described["command"]))
    if "workspace" in described:
        print(f"Workspace (first task): {described['workspace']}")
    if "config" in described:
        print("Effective config (first task, secrets masked):")
        print(tomli_w.dumps(described["config"]).rstrip())
    return 0


# ================================================================================================
# The batch: opens the output folder, runs the tasks in a thread pool, answers signals, sums up
# ================================================================================================


@dataclass
class OutputFolder:
    """The output folder while a run holds it: its results file (locked), the run's identity, and
    the private folder of configs (mode 0700, outside the output folder: it may hold keys)."""

    path: Path
    results: ResultsFile
    run_id: str
    private_dir: Path
    dead_run: dict[str, Any] | None  # what an earlier run that died left in the lock file

    def close(self) -> None:
        self.results.release()
        shutil.rmtree(self.private_dir, ignore_errors=True)


def check_output_paths(settings: Settings) -> None:
    """Refuse, before anything is written, what the runner must never write through (pure reads)."""
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


def open_output_folder(settings: Settings) -> OutputFolder:
    """Folders, the results file's lock, and a private folder for this run's configs."""
    try:
        for sub in ("trajectories", "logs"):
            (settings.output_dir / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"--output-dir {settings.output_dir}: cannot create it ({exc.strerror}); pick a folder you can write"
        ) from None
    if not os.access(settings.output_dir, os.W_OK):
        raise UsageError(f"--output-dir {settings.output_dir}: not writable; pick a folder you can write")
    run_id = uuid.uuid4().hex[:8]
    results = ResultsFile(settings.results_path)
    private_dir = Path(tempfile.mkdtemp(prefix=f"run_batch-{run_id}-"))  # mode 0700
    try:
        dead_run = results.acquire(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "run_id": run_id,
                "private_dir": str(private_dir),
                "started_at": utc_now(),
            }
        )
    except BaseException:
        shutil.rmtree(private_dir, ignore_errors=True)
        raise
    return OutputFolder(settings.output_dir, results, run_id, private_dir, dead_run)


def mark_dead_run(status_file: Path, previous: dict[str, Any]) -> dict[str, Any] | None:
    """A dead run's status file says `running` for ever: make it say `died` (the new run keeps
    that under `previous_run` once it writes its own)."""
    data = read_json_file(status_file, limit=64 << 20)
    if isinstance(data, dict) and data.get("run_id") == previous.get("run_id") and data.get("state") == "running":
        data = {**data, "state": "died", "died_noticed_at": utc_now()}
        with contextlib.suppress(OSError):
            write_json_atomically(status_file, data)
        return {
            k: data.get(k) for k in ("run_id", "pid", "host", "state", "started_at", "updated_at", "died_noticed_at")
        }
    return None


def clean_up_dead_run(previous: dict[str, Any], log: RunLog) -> None:
    """What a run that died (SIGKILL, OOM, reboot) left behind: its tasks' processes, their
    containers, its private folder of configs."""
    old_run = previous.get("run_id")
    if not isinstance(old_run, str) or not old_run:
        return
    if previous.get("host") != socket.gethostname():
        log.warn(
            f"an earlier run (pid {previous.get('pid')} on {previous.get('host')}) did not "
            "finish; processes or containers it left on that machine were not touched"
        )
        return
    pid = previous.get("pid")
    if isinstance(pid, int) and not isinstance(pid, bool) and pid != os.getpid() and process_alive(pid):
        log.warn(
            f"the lock file names run {printable(old_run)[:40]} of pid {pid}, which is still running (is this "
            "folder a copy of another run's?): nothing of that run was touched"
        )
        return
    killed = kill_everything(None, Marker(old_run, orphans_only=True))
    containers = remove_run_containers(old_run, log)
    folder = previous.get("private_dir")
    removed = isinstance(folder, str) and is_own_private_dir(Path(folder), old_run)
    if removed:
        shutil.rmtree(str(folder), ignore_errors=True)
    log.write(
        f"an earlier run (pid {previous.get('pid')}, run {old_run}) did not finish: killed "
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


@dataclass
class Batch:
    """One run's tasks and what they share: where they run, how OpenHands is driven, the results
    file, the console and the log, and the stop signal."""

    settings: Settings
    tasks: list[Task]
    entrypoint: Entrypoint
    folder: OutputFolder
    secrets: tuple[str, ...]
    view: PlainView
    log: RunLog
    stop: StopSignal
    previous_attempts: Counter[str]  # attempts per task already recorded in the output folder
    folder_spend: ShardSpend | None = None  # what the folder's results files recorded, kept current
    done: int = 0
    cost_so_far: float = 0.0
    skipped_budget: list[str] = field(default_factory=list)
    records: list[AttemptRecord] = field(default_factory=list)
    live: dict[str, LiveAttempt] = field(default_factory=dict)  # running attempts, by session
    started_at: str = field(default_factory=utc_now)
    previous_run: dict[str, Any] | None = None  # a dead run's status, as the status file said `died`
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_start: float = 0.0

    def run_task(self, task: Task) -> None:
        """All attempts of one task, and the error policy: retried while the failure is
        infrastructure's; a bug of the runner's becomes an `error` record, never a lost task."""
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
            except Exception as exc:
                session = session_name(task, self.folder.run_id, attempt)
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                    # The output folder cannot hold an attempt's files: stop, as for the results file.
                    why = f"cannot write {exc.filename or self.folder.path} ({exc.strerror})"
                    self.stop.fail(why)
                else:
                    self.log.write(f"{printable(task.name)}: internal error\n{traceback.format_exc()}")
                    why = f"run_batch internal error: {exc!r} (details in batch_run.log)"
                record = blank_record(
                    task,
                    attempt,
                    session,
                    self.entrypoint.session_id(session),
                    self.folder.run_id,
                    mask(why, self.secrets),
                )
                retryable = False
            last = not retryable or retry == self.settings.retries
            self.finish(record, last)
            if last:
                return

    def may_start(self, task: Task, first: bool) -> bool:
        self.check_budgets()
        with self._lock:
            if self.stop.budget:
                if first:
                    self.skipped_budget.append(task.name)
                return False
            if self.stop.stopping:
                return False
            wait_for = self._last_start + self.settings.start_delay - time.monotonic()
            self._last_start = max(time.monotonic(), self._last_start + self.settings.start_delay)
        return not (wait_for > 0 and self.stop.event.wait(wait_for))

    def run_attempt(self, task: Task, attempt: int) -> tuple[AttemptRecord, bool]:
        """One attempt: fresh files, workspace and session; launch and wait; read what it left;
        the record; the grade."""
        session = session_name(task, self.folder.run_id, attempt)
        blank = blank_record(task, attempt, session, self.entrypoint.session_id(session), self.folder.run_id)
        if task.problem:
            return blank, False
        files = claim_attempt_files(self.folder.path, task, attempt, self.folder.run_id)
        workspace = None
        if self.settings.workspace_per_task:
            try:
                workspace = make_workspace(self.folder.path, files, self.settings.workspace_template)
            except OSError as exc:
                return dataclasses.replace(blank, error=one_line(str(exc))), True
        blank = dataclasses.replace(blank, workspace=str(workspace) if workspace else None)
        launch, live, argv = self.launch(task, session, files, workspace)
        outcome = self.read_outcome(files, session, live)
        record, retryable = build_record(
            blank,
            launch,
            outcome,
            files,
            argv,
            self.collect_evidence(task, files),
            self.settings.timeout,
            self.stop.reason,
            self.secrets,
        )
        if self.settings.evaluator and record.status != "error" and not self.stop.stopping:
            record = self.evaluate(task, record, files.stdout_log)
        return record, retryable

    def launch(
        self, task: Task, session: str, files: AttemptFiles, workspace: Path | None
    ) -> tuple[Launch, LiveAttempt, list[str]]:
        """Configure the attempt, launch it and wait (followed by the monitor meanwhile), then clean
        up after it: its private files, its container. Returns what happened, what the monitor saw
        and the argv that ran."""
        marker = Marker(self.folder.run_id, session)
        prepared = self.entrypoint.prepare(task, session, files, marker, self.folder.private_dir, workspace)
        live = LiveAttempt(task.name, session, files, self.entrypoint.follow(files, session), Halt())
        with self._lock:
            self.live[session] = live
        self.view.started(task.name, session)
        try:
            launch = launch_and_wait(
                prepared,
                self.settings.project_dir,
                files,
                self.settings.timeout,
                self.settings.grace_period,
                self.stop,
                marker,
                self.entrypoint.request_stop,
                live.halt,
            )
        finally:
            with self._lock:
                self.live.pop(session, None)
            self.view.ended(session)
            for path in prepared.private_files:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            self.entrypoint.clean_up(session, self.log)
        return launch, live, prepared.argv

    def read_outcome(self, files: AttemptFiles, session: str, live: LiveAttempt) -> Outcome:
        """What the attempt left; when its totals were never saved (killed), the spend the monitor
        saw last rather than nothing."""
        outcome = self.entrypoint.read_outcome(files, session)
        with contextlib.suppress(Exception):
            live.look(time.monotonic())  # the last events, for a task killed before it saved its totals
        if not outcome.metrics.known and live.metrics.known:
            outcome.metrics = live.metrics
        return outcome

    def evaluate(self, task: Task, record: AttemptRecord, stdout_log: Path) -> AttemptRecord:
        """Grade one attempt with --evaluate."""
        evaluation = grade(
            self.settings.grader, record, str(task.prompt_path), stdout_log, self.folder.run_id, self.secrets, self.stop
        )
        if evaluation.reason and evaluation.reason.startswith("stopped with the batch"):
            return record  # not graded: the next run or --evaluate-only grades it
        command = mask(self.settings.evaluate or "", self.secrets)
        return dataclasses.replace(record, evaluation=evaluation.as_json(), evaluate_command=command)

    def watch(self, done: threading.Event) -> None:
        """The monitor thread: every few seconds, look at each running attempt (new events and
        output only), stop a stalled one or one over its budget, hold the batch budgets, write the
        status file, and off a terminal print a heartbeat."""
        poll = min(2.0, self.settings.heartbeat or 2.0)
        last_heartbeat = time.monotonic()
        while not done.wait(poll):
            now = time.monotonic()
            with self._lock:
                running = list(self.live.values())
            for live in running:
                try:
                    live.look(now)
                except Exception as exc:  # a follower's bug must not stop the watch
                    self.log.once(f"follow-{type(exc).__name__}", f"could not follow a running task: {exc!r}")
                check_attempt(live, now, self.settings.stall_timeout, self.settings.openhands.max_budget_per_task)
            self.check_budgets()
            self.view.progress({r.session: (r.metrics.total_cost, r.steps) for r in running})
            self.write_status("running")
            if (
                self.settings.heartbeat
                and not isinstance(self.view, LiveView)
                and now - last_heartbeat >= self.settings.heartbeat
            ):
                last_heartbeat = now
                self.view.write(self.heartbeat_line())

    def spend(self) -> dict[str, float]:
        """This run's recorded spend, the running attempts' spend, and the folder's (every results file)."""
        with self._lock:
            running = sum(live.cost for live in self.live.values())
            recorded = self.cost_so_far
        folder = (self.folder_spend.refresh(self.folder.results.path) if self.folder_spend else 0.0) + recorded
        for other in read_live_runs(self.settings.output_dir):  # other shards' running tasks, as they last said
            if other.get("run_id") != self.folder.run_id and isinstance(other.get("spend"), dict):
                folder += _number_or_none(other["spend"].get("running")) or 0.0
        return {
            "this_run": round(recorded + running, 6),
            "running": round(running, 6),
            "folder": round(folder + running, 6),
        }

    def check_budgets(self) -> None:
        """Reached budget: no new start, running tasks stopped gracefully (recorded interrupted)."""
        s = self.settings
        if (s.max_total_cost is None and s.max_run_cost is None) or self.stop.stopping:
            return
        spend = self.spend()
        if s.max_total_cost is not None and spend["folder"] >= s.max_total_cost:
            self.stop.budget_reached(f"batch budget of ${s.max_total_cost:g} reached (--max-total-cost)")
        elif s.max_run_cost is not None and spend["this_run"] >= s.max_run_cost:
            self.stop.budget_reached(f"run budget of ${s.max_run_cost:g} reached (--max-run-cost)")

    def eta(self) -> float | None:
        with self._lock:
            durations = [r.elapsed_time_seconds for r in self.records]
            left = len(self.tasks) - self.done
        if not left:
            return 0.0
        if not durations:
            return None
        return sum(durations) / len(durations) * left / min(self.settings.max_workers, left)

    def heartbeat_line(self) -> str:
        spend, eta = self.spend(), self.eta()
        return (
            f"[heartbeat {utc_now()[11:19]}] {self.done}/{len(self.tasks)} done, {len(self.live)} running, "
            f"${spend['this_run']:.4f} spent this run (${spend['running']:.4f} by running tasks), "
            f"ETA {UNKNOWN if eta is None else format_duration(eta)}"
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
                    "last_event": r.last_event,
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
            "tasks": {"selected": len(self.tasks), "done": self.done, "running": len(running)},
            "running": running,
            "spend": self.spend(),
            "budgets": {
                "max_total_cost": s.max_total_cost,
                "max_run_cost": s.max_run_cost,
                "stopped_by": self.stop.budget,
            },
            "eta_seconds": None if eta is None else round(eta, 1),
            "previous_run": self.previous_run,
        }
        try:
            write_json_atomically(s.output_dir / status_file_name(s.results_name), data)
        except OSError as exc:
            self.log.once(
                "status-file", f"cannot write the status file {exc.filename} ({exc.strerror}); going on without it"
            )

    def collect_evidence(self, task: Task, files: AttemptFiles) -> Evidence:
        """Secrets masked in what the task wrote, the logs' tails, whether a trajectory was saved."""
        saved = trajectory_saved(files.trajectory)
        for path in (files.trajectory, files.stdout_log, files.stderr_log, *self.entrypoint.evidence(files)):
            if redact_file(path, self.secrets):
                self.log.warn(f"{printable(task.name)}: a secret appeared in {path.name}; masked")
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
            line = mask(finished_line(record, self.done, len(self.tasks), last), self.secrets)
            if not recorded:
                line += "  (NOT RECORDED: the results file cannot be written)"
        self.log.write(line)
        self.view.finished(record, line, last)


def execute(batch: Batch) -> None:
    """The pool of tasks, watched by the monitor thread, with the status file from start to end."""
    done = threading.Event()
    monitor = threading.Thread(target=batch.watch, args=(done,), name="monitor", daemon=True)
    monitor.start()
    batch.write_status("running")
    try:
        run_pool(batch)
    finally:
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
        for task in batch.tasks:
            pool.submit(batch.run_task, task).add_done_callback(ended.put)
        left = len(batch.tasks)
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


def summary_lines(
    batch: Batch, plan: Plan, shown: list[AttemptRecord], totals: Totals, wall: float, not_started: list[str]
) -> list[str]:
    """The final summary: what this run did, then the state of every selected task (pure)."""
    s = batch.settings
    counts = ", ".join(f"{n} {st}" for st, n in totals.counts.items() if n) or "nothing recorded"
    if not batch.records and not plan.to_run:
        lines = [
            f"Nothing to run: {plural(len(plan.selected), 'selected task')} "
            f"{'has' if len(plan.selected) == 1 else 'have'} already succeeded "
            "(--rerun runs them again)."
            if plan.selected
            else "Nothing to run: no task selected."
        ]
    else:
        task_time = sum(r.elapsed_time_seconds for r in batch.records)
        lines = [
            f"Done in {format_duration(wall)} wall time ({format_duration(task_time)} of task time, "
            f"{plural(len(batch.records), 'attempt')} this run), {plural(totals.tasks, 'task')}: {counts}."
        ]
    if not_started:
        lines.append(f"{plural(len(not_started), 'task')} not started (run the same command to continue).")
    if batch.stop.budget:
        lines.append(
            f"Stopped: {batch.stop.budget}; {plural(len(batch.skipped_budget), 'task')} skipped, not failed "
            f"(${batch.cost_so_far:.4f} recorded this run). Raise the budget and run the same command to go on."
        )
    mean = "" if totals.mean_cost is None else f", mean ${totals.mean_cost:.4f} per task"
    tokens_mean = (
        ""
        if totals.mean_input_tokens is None or totals.mean_output_tokens is None
        else f", mean {totals.mean_input_tokens:.0f} / {totals.mean_output_tokens:.0f} per task"
    )
    lines.append(
        f"Cost ${totals.total_cost:.4f} (known for {totals.tasks_with_cost} of {totals.tasks} tasks{mean}; "
        f"this run ${batch.cost_so_far:.4f}). Tokens {totals.total_input_tokens} in / "
        f"{totals.total_output_tokens} out{tokens_mean}."
    )
    for r in [r for r in shown if r.status != "success"][:20]:
        lines.append(f"  {r.status:<11} {printable(r.task_name)}: {one_line(r.error or '', 180)}"[:200])
    slowest = sorted(shown, key=lambda r: -r.elapsed_time_seconds)[:3]
    if slowest:
        lines.append(
            "Slowest: " + ", ".join(f"{printable(r.task_name)} {r.elapsed_time_seconds:.0f}s" for r in slowest)
        )
    if outliers := outlier_line(shown):
        lines.append(outliers)
    if rates := pass_rate_line(totals.evaluation):
        lines.append(rates)
    lines.append(f"Results: {s.results_path}  Summary: {s.output_dir / 'summary.json'}")
    return lines


def sum_up(batch: Batch, plan: Plan, earlier: list[AttemptRecord], wall: float) -> list[AttemptRecord]:
    """summary.json and the final summary over the latest attempt of every selected task, this
    run's or an earlier one's. Returns those latest attempts."""
    latest = latest_by_task([*earlier, *batch.records])
    shown = apply_verdicts(
        [latest[t.name] for t in plan.selected if t.name in latest], read_verdicts(batch.settings.output_dir)
    )
    ran = {r.task_name for r in batch.records}
    not_started = sorted(t.name for t in plan.to_run if t.name not in ran and t.name not in batch.skipped_budget)
    totals = summarise(shown)
    write_summary_json(
        batch.settings.output_dir,
        shown,
        {
            **dataclasses.asdict(totals),
            "run_id": batch.folder.run_id,
            "wall_time_seconds": round(wall, 3),
            "this_run_cost": round(batch.cost_so_far, 6),
            "this_run_tasks": len(ran),
            "not_started": not_started,
            "skipped_for_budget": sorted(batch.skipped_budget),
            "runner_peak_rss_mb": peak_rss_mb(),
        },
    )
    lines = summary_lines(batch, plan, shown, totals, wall, not_started)
    if batch.settings.html:
        records, _ = read_folder_records(batch.settings.output_dir)
        report = write_html_report(
            batch.settings.report_output or batch.settings.output_dir / "report.html",
            shown,
            records,
            totals,
            batch.secrets,
            f"run_batch report: {batch.settings.output_dir}",
            batch.settings.output_dir,
            workspace_disk(shown, batch.settings.output_dir),
        )
        lines.append(f"Report: {report}")
    text = mask("\n".join(lines), batch.secrets)
    batch.log.write(text)
    batch.view.write(text)  # even with --quiet: the one thing it prints
    return shown


def exit_status(
    stop: StopSignal, shown: list[AttemptRecord], selected: list[Task], verdicts_count: bool = False
) -> int:
    if stop.failure:
        print(
            f"run-batch: error: {stop.failure}; records already written are kept, run the same command "
            "again once it is fixed",
            file=sys.stderr,
        )
        return 1
    if stop.signum:
        return 128 + stop.signum
    every_task_done = len(shown) == len(selected)
    if verdicts_count and not (every_task_done and all((r.evaluation or {}).get("verdict") == "passed" for r in shown)):
        return 1  # --fail-on-evaluation
    return 0 if every_task_done and all(r.status == "success" for r in shown) else 1


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
    others, other_warnings = read_folder_records(settings.output_dir, skip=settings.results_path)
    return Earlier(own, others, [*warnings, *other_warnings])


def run(settings: Settings, environ: dict[str, str]) -> int:
    """Configure, plan, open the output folder, run the pool, sum up."""
    require_tomli_w()
    settings = resolve_poetry(settings, environ)
    base_config = load_base_config(settings.base_config)
    secrets = find_secrets(base_config, environ)
    entrypoint = choose_entrypoint(settings, base_config, environ)
    check_output_paths(settings)
    earlier = read_earlier(settings)
    tasks = discover_tasks(settings.prompt_dir)
    plan = plan_batch(tasks, settings.selection, earlier.own, settings.rerun, settings.prompt_dir)
    if settings.dry_run:
        return dry_run(settings, plan, entrypoint, secrets)

    stop = StopSignal()
    folder = open_output_folder(settings)
    try:
        batch = make_batch(settings, plan, entrypoint, folder, secrets, stop, earlier)
        try:
            t0 = time.monotonic()
            with signal_handlers(stop):
                try:
                    begin(batch, plan, [*earlier.warnings, *start_warnings(settings, environ)])
                    execute(batch)
                finally:
                    batch.view.close()
                    kill_everything(None, Marker(folder.run_id))  # belt and braces: nothing of this run outlives it
            shown = sum_up(batch, plan, earlier.own, time.monotonic() - t0)
        finally:
            batch.log.close()
    finally:
        folder.close()
    return exit_status(stop, shown, plan.selected, settings.fail_on_evaluation)


def make_batch(
    settings: Settings,
    plan: Plan,
    entrypoint: Entrypoint,
    folder: OutputFolder,
    secrets: tuple[str, ...],
    stop: StopSignal,
    earlier: Earlier,
) -> Batch:
    """The batch and what it reports to: the console view (a lost console stops the batch like
    SIGPIPE would) and the run log."""
    view, hint = make_view(
        settings.quiet, len(plan.to_run), settings.max_workers, on_lost=lambda: stop.request(signal.SIGPIPE)
    )
    log = RunLog(settings.output_dir / "batch_run.log", secrets, view)
    if hint:
        log.warn(hint)
    return Batch(
        settings,
        plan.to_run,
        entrypoint,
        folder,
        secrets,
        view,
        log,
        stop,
        previous_attempts=Counter(r.task_name for r in earlier.every),
        folder_spend=ShardSpend(settings.output_dir, earlier.every),
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
    batch.log.write(
        f"run {folder.run_id}: {plural(len(plan.selected), 'task')} selected, {len(plan.done)} "
        f"already done, {len(plan.to_run)} to run, {s.max_workers} at a time; output in {s.output_dir}",
        console=True,
    )


def attempts_to_grade(
    latest: dict[str, AttemptRecord], selected: list[Task], command: str, rerun: bool
) -> list[AttemptRecord]:
    """The latest attempt of each selected task that ran and is not yet graded by this command
    (all of them with --rerun) (pure)."""
    return [
        latest[t.name]
        for t in selected
        if latest[t.name].status != "error"
        and latest[t.name].stdout_log
        and (rerun or latest[t.name].evaluate_command != command)
    ]


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
    verdict = graded.evaluation or {}
    score = "" if verdict.get("score") is None else f"  score {verdict['score']:g}"
    why = f"  - {verdict['reason']}" if verdict.get("reason") else ""
    return f"[{i}/{total}] {verdict.get('verdict', '?'):<7} {printable(graded.task_name)}{score}{why}"


def evaluate_only(settings: Settings, environ: dict[str, str]) -> int:
    """--evaluate-only: grade the latest attempt of every selected task in an existing output folder,
    running no agent; verdicts are appended to evaluations.jsonl (records are never rewritten)."""
    folder = settings.output_dir
    if not folder.is_dir():
        raise UsageError(f"--output-dir {folder}: no such folder; nothing to evaluate")
    secrets = find_secrets(load_base_config(settings.base_config), environ)
    command = mask(settings.evaluate or "", secrets)  # as it is stored
    records, warnings = read_folder_records(folder)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    latest = {r.task_name: r for r in apply_verdicts(list(latest_by_task(records).values()), read_verdicts(folder))}
    tasks = select_tasks(discover_tasks(settings.prompt_dir), settings.selection, settings.prompt_dir)
    selected = [t for t in tasks if t.name in latest]
    to_grade = attempts_to_grade(latest, selected, command, settings.rerun)
    run_id = uuid.uuid4().hex[:8]
    stop = StopSignal()
    verdicts_file = ResultsFile(folder / EVALUATIONS_FILE)
    verdicts_file.acquire({"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id})
    print(
        f"evaluating {plural(len(to_grade), 'attempt')} ({len(selected) - len(to_grade)} of the "
        f"{len(selected)} selected already graded with this command, or never ran)",
        flush=True,
    )

    def one(record: AttemptRecord) -> AttemptRecord:
        evaluation = grade(
            settings.grader, record, record.prompt_file, Path(str(record.stdout_log)), run_id, secrets, stop
        )
        if evaluation.reason and evaluation.reason.startswith("stopped with the batch"):
            return record
        verdicts_file.append_json(verdict_entry(record, evaluation, command, run_id))
        return dataclasses.replace(record, evaluation=evaluation.as_json(), evaluate_command=command)

    try:
        with signal_handlers(stop), ThreadPoolExecutor(settings.max_workers, thread_name_prefix="evaluate") as pool:
            for i, graded in enumerate(pool.map(one, to_grade), 1):
                print(mask(graded_line(i, len(to_grade), graded), secrets), flush=True)
                latest[graded.task_name] = graded
    finally:
        verdicts_file.release()
    if stop.signum:
        return 128 + stop.signum
    shown = [latest[t.name] for t in selected]
    print(pass_rate_line(pass_rates(shown)) or "Evaluation: nothing evaluated.")
    if settings.fail_on_evaluation:
        return 0 if shown and all((r.evaluation or {}).get("verdict") == "passed" for r in shown) else 1
    return 0


# ================================================================================================
# The SDK driver: one attempt inside OpenHands' own environment (--entrypoint sdk)
# ================================================================================================
# For --entrypoint sdk, each attempt is this file run by the Python of an environment that has
# openhands-sdk and openhands-tools (the V1 CLI's has both): `python run_batch.py --sdk-driver -f
# PROMPT ...`. It builds the agent the way the V1 CLI's headless mode does and runs the
# conversation itself, which gives what the CLI lacks (docs/openhands.md, "SDK driver"): a step
# limit, a budget, an exit status that tells, a stop in under a second, and the spend saved after
# every LLM call, so a killed attempt keeps its cost and a running one shows it. Its conversation
# folder is the CLI's, so CliV1's reader and follower serve it unchanged. Standard library only
# until the SDK is imported, so the same file runs there without run_batch's dependencies.

SDK_DRIVER_FLAG = "--sdk-driver"
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


def run_sdk_driver(argv: list[str]) -> int:
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
