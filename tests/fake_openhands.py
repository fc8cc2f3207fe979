#!/usr/bin/env python3
"""A stand-in for `python -m openhands.core.main` (V0 headless mode), for the tests.

It follows docs/openhands.md and what the real openhands-ai 1.6.0 was seen to do:
- flags -f/-t/--config-file/-n/-i/-b/-l/-c; config precedence flag > environment > TOML;
- session id from -n exactly as OpenHands computes it;
- logs on stderr only, every line `ESC[92mHH:MM:SS - openhands:LEVELESC[0m: file.py:N - msg`,
  colour codes even without a terminal; final-state lines `Setting agent(CodeActAgent) state
  from AgentState.X to AgentState.Y`;
- exit 0 for every end state, ERROR included; 1 for a failure before the agent runs;
- each event written as it happens to <file_store_path>/sessions/<sid>/events/<n>.json,
  the trajectory (with llm_metrics on agent actions) only at a normal end or after SIGINT;
- the agent's commands run with `bash -c` in their own session (start_new_session), in the
  workspace like the CLI runtime: WORKSPACE_BASE, else [core] workspace_base (created when
  missing), else the working directory;
- SIGINT: graceful stop after the running command ends (up to its 120 s timeout), state
  STOPPED, trajectory saved, exit 0; a second SIGINT exits 1. SIGTERM: dies at once.

What the agent does is chosen by lines in the prompt:
    RUN: <command>          the command the agent runs (default: echo hello)
    STANDIN: <behaviour>    llm-error | llm-auth | llm-unreachable | rate-limited N [S] | max-iterations |
                            stuck | crash | crash-times N | no-state | debug-metrics | print-mb N |
                            print-secret | background | hang | slow-start S |
                            long-line-mb N [stdout|stderr] | big-trajectory-mb N | big-event-mb N |
                            no-trajectory | error-mb N | tick S | hang-after-events N | wipe-on-stop |
                            runtime-wait
    (several STANDIN lines combine).
    runtime-wait            as the real 0.33.0 when its local runtime's action server missed the
                            ~65 s wait (a loaded machine): httpx's ConnectError, then tenacity's
                            RetryError, exit 1 before the agent ran
    llm-auth                as the real 1.6.0 when the provider answers 401 (a wrong key): the agent's
                            error line, litellm's traceback ending in AuthenticationError, state ERROR
    llm-unreachable         as the real 1.6.0 when nothing listens at base_url: litellm's
                            "InternalServerError: OpenAIException - Connection error." after 4.5 KB
                            of traceback, state ERROR
    rate-limited N [S]      the first LLM call meets N rate limits (HTTP 429) first, each logged as
                            the real 1.6.0 logs a retried one (retry_mixin.py, `litellm.RateLimitError`),
                            S seconds apart (default 1), then succeeds
    The environment variable STANDIN_LLM=auth or =unreachable makes every task fail as llm-auth or
    llm-unreachable does: the provider's state, not the task's (unset it to "fix the key").
    tick S                  for S seconds, an agent action with a grown llm_metrics (one more LLM
                            call) every 0.5 s, printing nothing, then the usual end; ignores -b;
                            SIGINT ends it within 0.5 s (STOPPED, trajectory saved)
    hang-after-events N     N agent actions (each an LLM call), then blocks for ever without
                            printing or writing (a hung LLM call); SIGINT does not end it
    wipe-on-stop            with tick: on SIGINT, remove the session's event folder and exit 0
                            without a trajectory (nothing on disk tells the cost)
    The hostile-output ones, written in 1 MiB chunks so the stand-in itself stays small:
    long-line-mb N          at the very end, one N MiB line without any newline (stderr by default)
    big-trajectory-mb N     the trajectory is N MiB: filler events first (each with an earlier,
                            smaller llm_metrics), the real events, whose last llm_metrics is
                            the true total, at its end
    big-event-mb N          one N MiB observation among the session's event files
    no-trajectory           no trajectory is saved (cost only in the event files)
    error-mb N              fails before the agent runs (exit 1), logging an openhands:ERROR line
                            and a traceback whose exception message is N MiB on one line
Each LLM call costs PROMPT/COMPLETION tokens below, priced by [llm] input/output_cost_per_token.
If STANDIN_RECORD_DIR is set, the argv, working directory, workspace, config and environment it
was started with, the task text it got (`-f` file or `-t`) and its /proc/self/cgroup, are written to
<STANDIN_RECORD_DIR>/<sid>.json for the tests to inspect.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

PROMPT_TOKENS = 1000
COMPLETION_TOKENS = 50

stopping = False
running_command: subprocess.Popen[bytes] | None = None


def log(level: str, where: str, message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    sys.stderr.write(f"\x1b[92m{stamp} - openhands:{level}\x1b[0m: {where} - {message}\n")
    sys.stderr.flush()


def generate_sid(name: str | None) -> str:
    if not name:
        import uuid

        name = str(uuid.uuid4())
    digest = hashlib.sha256(f"{name}**********".encode()).hexdigest()
    if len(name) > 16:
        return f"{name[:16]}-{digest[:15]}"[:32]
    return f"{name}-{digest[: 32 - len(name) - 1]}"[:32]


def on_sigint(_signum: int, _frame: Any) -> None:
    global stopping
    if stopping:
        sys.stderr.write("KeyboardInterrupt\n")
        os._exit(1)
    stopping = True


class Session:
    def __init__(self, sid: str, file_store: Path, cost_in: float, cost_out: float) -> None:
        self.sid = sid
        self.events: list[dict[str, Any]] = []
        self.folder = file_store / "sessions" / sid / "events"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cost_in, self.cost_out = cost_in, cost_out
        self.calls = 0
        self.state = "LOADING"
        self.log_states = True

    def add(self, event: dict[str, Any]) -> None:
        event = {"id": len(self.events), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), **event}
        self.events.append(event)
        (self.folder / f"{event['id']}.json").write_text(json.dumps(event))

    def add_big(self, mib: float) -> None:
        """One observation event of about mib MiB, written in chunks."""
        event_id = len(self.events)
        self.events.append(
            {
                "id": event_id,
                "source": "environment",
                "observation": "run",
                "content": "(big)",
                "extras": {},
                "message": "",
            }
        )
        with open(self.folder / f"{event_id}.json", "w") as f:
            f.write(json.dumps({"id": event_id, "source": "environment", "observation": "run"})[:-1])
            f.write(', "content": "')
            write_chunks(f, mib, "y")
            f.write('", "extras": {}, "message": ""}')

    def llm_call(self) -> dict[str, Any]:
        self.calls += 1
        p, c = PROMPT_TOKENS * self.calls, COMPLETION_TOKENS * self.calls
        return {
            "accumulated_cost": p * self.cost_in + c * self.cost_out,
            "max_budget_per_task": None,
            "accumulated_token_usage": {
                "model": "default",
                "prompt_tokens": p,
                "completion_tokens": c,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
                "context_window": 0,
                "per_turn_token": 0,
                "response_id": "",
            },
            "costs": [],
            "response_latencies": [],
            "token_usages": [],
        }

    def set_state(self, new: str) -> None:
        if self.log_states:
            log(
                "INFO",
                "agent_controller.py:679",
                f"[Agent Controller {self.sid}] Setting agent(CodeActAgent) "
                f"state from AgentState.{self.state} to AgentState.{new}",
            )
        self.state = new
        self.add(
            {
                "source": "environment",
                "observation": "agent_state_changed",
                "content": "",
                "extras": {"agent_state": new.lower(), "reason": ""},
                "message": "",
            }
        )


def write_chunks(stream: Any, mib: float, char: str = "x") -> None:
    """mib MiB of char, no newline, 1 MiB at a time (the stand-in stays small)."""
    block = char * (1 << 20)
    whole, rest = divmod(int(mib * (1 << 20)), 1 << 20)
    for _ in range(whole):
        stream.write(block)
    stream.write(char * rest)
    stream.flush()


def write_big_trajectory(target: Path, events: list[dict[str, Any]], mib: float, early: dict[str, Any]) -> None:
    """A trajectory of about mib MiB, streamed: filler events carrying an earlier llm_metrics
    (early), then the real events, so only the last llm_metrics gives the true total."""
    filler = "z" * (64 << 10)
    count = max(1, int(mib * 16))  # 16 fillers of 64 KiB per MiB
    with open(target, "w") as f:
        f.write("[")
        for n in range(count):
            f.write(
                json.dumps(
                    {
                        "id": -1 - n,
                        "source": "agent",
                        "action": "think",
                        "message": filler,
                        "args": {"thought": "filler"},
                        "llm_metrics": early,
                    }
                )
            )
            f.write(", ")
        f.write(", ".join(json.dumps(e) for e in events))
        f.write("]")


def run_command(command: str, cwd: str | None = None) -> tuple[int, str]:
    """Like the CLI runtime: bash -c in its own session, in the workspace, 120 s command timeout."""
    global running_command
    running_command = subprocess.Popen(
        ["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd
    )
    try:
        out, _ = running_command.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(running_command.pid, signal.SIGKILL)
        out, _ = running_command.communicate()
    code = running_command.returncode
    running_command = None
    return code, out.decode(errors="replace")


# What the real openhands-ai 1.6.0 printed (tests/llm_server.py `LLM: auth`, and a closed port),
# shortened: the agent's error line, litellm's traceback, its last exception line, the status.
LLM_FAILURES = {
    "auth": (
        "litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect API key provided: "
        "sk-e2e-*****6789. You can find your API key at https://platform.openai.com/account/api-keys.",
        "openai.AuthenticationError: Error code: 401 - {'error': {'message': 'Incorrect API key provided: "
        "sk-e2e-*****6789. You can find your API key at https://platform.openai.com/account/api-keys.', "
        "'type': 'invalid_request_error', 'param': None, 'code': 'invalid_api_key'}}",
        "litellm.exceptions.AuthenticationError: litellm.AuthenticationError: AuthenticationError: "
        "OpenAIException - Incorrect API key provided: sk-e2e-*****6789. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "AUTHENTICATION",
    ),
    "unreachable": (
        "litellm.InternalServerError: InternalServerError: OpenAIException - Connection error.",
        "httpx.ConnectError: [Errno 111] Connection refused",
        "litellm.exceptions.InternalServerError: litellm.InternalServerError: InternalServerError: "
        "OpenAIException - Connection error.",
        "INTERNAL_SERVER_ERROR",
    ),
}


# A retried rate limit, as the real 1.6.0 logged it against tests/llm_server.py's `LLM: 429 N`.
RATE_LIMITED = (
    "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached for gpt-4o in organization "
    "org-scripted on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 2s.."
)
RETRY_HINT = "You can customize retry values in the configuration."


def llm_failure(sid: str, kind: str) -> None:
    """Log an LLM call that failed for good, as the real 1.6.0 does (the caller ends in ERROR): its
    traceback puts about 4.5 KB of frames (tenacity, litellm) between the cause and the end."""
    said, cause, last, code = LLM_FAILURES[kind]
    log(
        "ERROR",
        "agent_controller.py:386",
        f"[Agent Controller {sid}] Error while running the agent (session ID: {sid}): {said}",
    )
    site = "/opt/openhands/lib/python3.12/site-packages"
    frames = "".join(
        f'  File "{site}/tenacity/__init__.py", line {300 + n}, in wrapped_f\n    return copy(f, *args, **kw)\n'
        f"           ^^^^^^^^^^^^^^^^^^^^\n"
        for n in range(30)
    )
    sys.stderr.write(
        f'Traceback (most recent call last):\n  File "{site}/httpx/_transports/default.py", line 101, in '
        f"map_httpcore_exceptions\n    yield\n{cause}\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        f"Traceback (most recent call last):\n{frames}"
        f'  File "{site}/litellm/main.py", line 4046, in completion\n    raise exception_type(\n{last}\n'
    )
    sys.stderr.flush()
    log("ERROR", "loop.py:32", f"STATUS$ERROR_LLM_{code}")


def main() -> int:
    signal.signal(signal.SIGINT, on_sigint)
    p = argparse.ArgumentParser()
    p.add_argument("-t", "--task", default="")
    p.add_argument("-f", "--file")
    p.add_argument("--config-file", default="config.toml")
    p.add_argument("-n", "--name", default="")
    p.add_argument("-i", "--max-iterations", type=int)
    p.add_argument("-b", "--max-budget-per-task", type=float)
    p.add_argument("-l", "--llm-config")
    p.add_argument("-c", "--agent-cls")
    p.add_argument("--no-auto-continue", action="store_true")
    p.add_argument("--selected-repo")
    args, unknown = p.parse_known_args()

    config: dict[str, Any] = {}
    if os.path.exists(args.config_file):
        with open(args.config_file, "rb") as f:
            config = tomllib.load(f)
    else:
        log("INFO", "utils.py:123", f"{args.config_file} not found")
    core = config.get("core", {})
    llm = config.get("llm", {})
    if args.llm_config:
        if args.llm_config not in llm:
            sys.stderr.write(f"ValueError: Invalid LLM config: {args.llm_config}\n")
            return 1
        llm = {**llm, **llm[args.llm_config]}

    def setting(key: str, default: Any) -> Any:
        return os.environ.get(key.upper()) or core.get(key) or default

    sid = generate_sid(args.name)
    file_store = Path(os.path.expanduser(setting("file_store_path", "~/.openhands")))
    trajectory = setting("save_trajectory_path", None)
    max_iterations = args.max_iterations or int(setting("max_iterations", 500))
    workspace = setting("workspace_base", None)  # the CLI runtime makes it and works there
    if workspace:
        workspace = os.path.abspath(os.path.expanduser(workspace))
        os.makedirs(workspace, exist_ok=True)

    try:
        task: str | None = Path(args.file).read_text(encoding="utf-8") if args.file else args.task
    except (OSError, UnicodeDecodeError):
        task = None  # fails below, as before, once recorded
    record_dir = os.environ.get("STANDIN_RECORD_DIR")
    if record_dir:
        Path(record_dir, f"{sid}.json").write_text(
            json.dumps(
                {
                    "argv": sys.argv,
                    "cwd": os.getcwd(),
                    "workspace": workspace,
                    "config": config,
                    "sid": sid,
                    "pid": os.getpid(),
                    "executable": sys.executable,
                    "sys_path_prefix": sys.prefix,
                    "stdin_is_devnull": os.path.realpath("/proc/self/fd/0") == "/dev/null",
                    "pgid": os.getpgid(0),
                    "sid_unix": os.getsid(0),
                    "unknown_args": unknown,
                    "task": task,
                    "cgroup": Path("/proc/self/cgroup").read_text(),
                    "env": dict(os.environ),
                    "config_mode": oct(os.stat(args.config_file).st_mode & 0o777)
                    if os.path.exists(args.config_file)
                    else None,
                }
            )
        )

    if task is None:
        task = Path(args.file).read_text(encoding="utf-8")  # the error it raises
    directives = dict(re.findall(r"^STANDIN:[ \t]*([\w-]+)[ \t]*(.*)$", task, re.M))  # one per line
    run = re.search(r"^RUN:\s*(.+)$", task, re.M)
    command = run.group(1).strip() if run else "echo hello"

    if "slow-start" in directives:
        time.sleep(float(directives["slow-start"] or 1))
    if "hang" in directives:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a wedged OpenHands: only a kill ends it
        time.sleep(3600)
    if "crash-times" in directives:  # fail the first N launches of this prompt (retry tests)
        counter = Path(os.environ["STANDIN_RECORD_DIR"]) / (hashlib.sha256(task.encode()).hexdigest() + ".count")
        seen = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(seen + 1))
        if seen < int(directives["crash-times"]):
            directives["crash"] = ""
    if "error-mb" in directives:  # a failure whose message is megabytes long, on one line
        stamp = time.strftime("%H:%M:%S")
        sys.stderr.write(f"\x1b[92m{stamp} - openhands:ERROR\x1b[0m: main.py:300 - Runtime failed: ")
        write_chunks(sys.stderr, float(directives["error-mb"] or 5), "e")
        sys.stderr.write(
            '\nTraceback (most recent call last):\n  File "openhands/core/main.py", line 1\n'
            "RuntimeError: Failed to start runtime: "
        )
        write_chunks(sys.stderr, float(directives["error-mb"] or 5), "f")
        sys.stderr.write("\n")
        sys.stderr.flush()
        return 1
    if "runtime-wait" in directives:  # the lines of a CI run of the real 0.33.0 (2026-12-07)
        log("INFO", "local_runtime.py:250", "Waiting for server to become ready at http://localhost:30417...")
        sys.stderr.write(
            'Traceback (most recent call last):\n  File "httpx/_transports/default.py", line 101, in map_httpcore_'
            "exceptions\nhttpx.ConnectError: [Errno 111] Connection refused\n\nThe above exception was the direct "
            "cause of the following exception:\n\nTraceback (most recent call last):\n  File "
            '"openhands/core/main.py", line 1\ntenacity.RetryError: RetryError[<Future at 0x7fb87389b950 '
            "state=finished raised ConnectError>]\n"
        )
        return 1
    if "crash" in directives:
        sys.stderr.write(
            'Traceback (most recent call last):\n  File "openhands/core/main.py", line 1\n'
            "RuntimeError: Failed to start runtime: docker daemon not reachable\n"
        )
        return 1
    if not task.strip():
        log("ERROR", "main.py:300", "No task provided")
        return 1

    session = Session(
        sid, file_store, float(llm.get("input_cost_per_token", 0) or 0), float(llm.get("output_cost_per_token", 0) or 0)
    )
    session.add({"source": "agent", "action": "system", "message": "system prompt", "args": {}})
    session.add({"source": "user", "action": "message", "message": task, "args": {"content": task}})
    log("INFO", "state_tracker.py:101", f"AgentController {sid} - created new state. start_id: 0")
    session.log_states = "no-state" not in directives  # an old OpenHands that logs no state line
    session.set_state("RUNNING")
    if "print-mb" in directives:
        block = ("x" * 1023 + "\n").encode()
        for _ in range(int(float(directives["print-mb"]) * 1024)):  # logs go to stderr
            sys.stderr.buffer.write(block)
        sys.stderr.flush()
    if "print-secret" in directives:
        log("WARNING", "llm.py:1", f"using key {llm.get('api_key')} env {os.environ.get('LLM_API_KEY')}")
    if "background" in directives:  # the agent leaves a server running
        subprocess.Popen(
            ["bash", "-c", "sleep 300"], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    if "big-event-mb" in directives:
        session.add_big(float(directives["big-event-mb"] or 150))
    if "hang-after-events" in directives:  # a hung LLM call: events stop, the process stays
        for n in range(int(directives["hang-after-events"] or 1)):
            session.add(
                {
                    "source": "agent",
                    "action": "run",
                    "message": f"step {n + 1}",
                    "args": {"command": f"step {n + 1}"},
                    "llm_metrics": session.llm_call(),
                }
            )
        while True:
            time.sleep(3600)

    def end(state: str) -> int:
        session.set_state(state)
        if trajectory and "no-trajectory" not in directives:
            target = Path(trajectory)
            if target.is_dir():
                target = target / f"{sid}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            if "big-trajectory-mb" in directives:
                early = {
                    "accumulated_cost": 0.5,
                    "accumulated_token_usage": {
                        "prompt_tokens": 7,
                        "completion_tokens": 7,
                        "cache_read_tokens": 0,
                        "cache_write_tokens": 0,
                    },
                }
                write_big_trajectory(target, session.events, float(directives["big-trajectory-mb"] or 150), early)
            else:
                target.write_text(json.dumps(session.events))
        if "long-line-mb" in directives:  # the last thing printed: one huge line, no newline
            size, _, where = directives["long-line-mb"].partition(" ")
            write_chunks(sys.stdout if where.strip() == "stdout" else sys.stderr, float(size or 200))
        return 0

    if "llm-error" in directives:
        log(
            "ERROR",
            "agent_controller.py:386",
            f"[Agent Controller {sid}] Error while running the agent "
            f"(session ID: {sid}): litellm.InternalServerError: OpenAIException - scripted failure",
        )
        log("ERROR", "loop.py:32", "STATUS$ERROR_LLM_INTERNAL_SERVER_ERROR")
        return end("ERROR")
    provider = os.environ.get("STANDIN_LLM", "")
    if provider in ("auth", "unreachable"):
        directives[f"llm-{provider}"] = ""
    if "llm-auth" in directives or "llm-unreachable" in directives:
        llm_failure(sid, "auth" if "llm-auth" in directives else "unreachable")
        return end("ERROR")

    if "tick" in directives:  # steady progress and growing spend, -b ignored
        ticks_until = time.monotonic() + float(directives["tick"] or 5)
        while time.monotonic() < ticks_until and not stopping:
            session.add(
                {
                    "source": "agent",
                    "action": "run",
                    "message": "tick",
                    "args": {"command": "tick"},
                    "llm_metrics": session.llm_call(),
                }
            )
            time.sleep(0.5)
        if stopping and "wipe-on-stop" in directives:
            import shutil

            shutil.rmtree(session.folder.parent, ignore_errors=True)
            return 0
        if stopping:
            return end("STOPPED")
    if "rate-limited" in directives:
        count, _, pause = directives["rate-limited"].partition(" ")
        for attempt in range(1, int(count or 1) + 1):
            log("ERROR", "retry_mixin.py:105", f"{RATE_LIMITED} Attempt #{attempt} | {RETRY_HINT}")
            time.sleep(float(pause or 1))
    metrics = session.llm_call()
    session.add(
        {
            "source": "agent",
            "action": "run",
            "message": f"Running command: {command}",
            "args": {"command": command},
            "llm_metrics": metrics,
        }
    )
    if "debug-metrics" in directives:
        log("DEBUG", "llm.py:627", "Cost: 0.00 USD | Accumulated Cost: 0.01 USD")
        log(
            "DEBUG",
            "agent_controller.py:1218",
            f"Action metrics - accumulated_cost: {metrics['accumulated_cost']}, max_budget: None, latest "
            "tokens (prompt/completion/cache_read/cache_write): 1000/50/7/3, accumulated tokens "
            "(prompt/completion): 1000/50",
        )
    if not stopping:
        code, output = run_command(command, workspace)
        session.add(
            {
                "source": "agent",
                "observation": "run",
                "content": output,
                "extras": {"command": command, "exit_code": code},
                "message": "",
            }
        )
    if stopping:
        return end("STOPPED")
    if "max-iterations" in directives:
        log(
            "ERROR",
            "agent_controller.py:386",
            f"[Agent Controller {sid}] Error while running the agent "
            f"(session ID: {sid}): RuntimeError: Agent reached maximum iteration. Current iteration: "
            f"{max_iterations}, max iteration: {max_iterations}",
        )
        return end("ERROR")
    if "stuck" in directives:
        log(
            "ERROR",
            "agent_controller.py:386",
            f"[Agent Controller {sid}] Error while running the agent "
            f"(session ID: {sid}): AgentStuckInLoopError: Agent got stuck in a loop",
        )
        return end("ERROR")
    metrics = session.llm_call()
    session.add({"source": "agent", "action": "finish", "message": "Done.", "args": {}, "llm_metrics": metrics})
    return end("FINISHED")


if __name__ == "__main__":
    sys.exit(main())
