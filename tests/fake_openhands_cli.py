#!/usr/bin/env python3
"""A stand-in for the V1 OpenHands CLI (`openhands --headless`, PyPI `openhands` 1.16.0), for the tests.

It follows docs/openhands.md (facts seen on the real 1.16.0):
- flags: `--headless` with `-f FILE` or `-t TEXT` (`-f` beats `-t`), `--json`, `--always-approve`
  (`--yolo`), `--llm-approve`, `--override-with-envs`, `--resume [ID]`, `--last`, `--version`;
  any other flag, or `--headless` without a task, is an argument error: exit 2;
- settings from `$OPENHANDS_PERSISTENCE_DIR/agent_settings.json` (default `~/.openhands`), its
  `llm` (`model`, `api_key`, `base_url`, `input_cost_per_token`, `output_cost_per_token`, ...).
  `LLM_MODEL`/`LLM_API_KEY`/`LLM_BASE_URL` are ignored with a warning on stderr unless
  `--override-with-envs`; then both LLM_MODEL and LLM_API_KEY are needed (else exit 1) and
  override the file's `llm`, or build the agent when there is no file. With no settings at all:
  "Headless mode requires existing settings." on stdout, exit 0, no conversation folder, but a
  `Conversation ID:` line;
- storage: `$OPENHANDS_CONVERSATIONS_DIR` (default `<persistence dir>/conversations`)
  `/<32 hex>/base_state.json` and `events/event-NNNNN-<uuid>.json` (plus `events/.eventlog.lock`);
  base_state.json is saved only when `execution_status` changes, while the stats change in place:
  after SIGTERM it still says `running` with cost 0, as the real one;
- cost: `stats.usage_to_metrics.{agent,condenser}` each with `accumulated_cost` and
  `accumulated_token_usage`; every LLM call is PROMPT_TOKENS + COMPLETION_TOKENS priced by the
  settings' `llm.input_cost_per_token`/`output_cost_per_token` (or env STANDIN_COST_IN /
  STANDIN_COST_OUT); agent calls also read AGENT_CACHE_READ cached tokens, condenser calls write
  CONDENSER_CACHE_WRITE, so every sum over the usage ids is visible;
- the agent's commands run in tmux like the real one: server `tmux -L openhands` (so
  `$TMUX_TMPDIR/tmux-<uid>/openhands`), one session `openhands-pool-<user>-<uuid>` made at start-up
  with the run's environment, the command typed into its pane (a child of the pane's bash); a
  normal end or SIGINT removes the session, SIGTERM leaves it and its command running;
- exit 0 for every end state (finished, error, stuck); stdout: plain status lines (each event as
  one JSON line too with `--json`), ending with `Conversation ID: <hex>` and a `Hint:` line;
- SIGINT: no handler of its own that stops anything: the running command (or LLM call) is let
  end, then `execution_status` becomes `error`, with the cost so far, no observation for that step,
  exit 0. A second SIGINT changes nothing. SIGTERM: the default, dies at once.

What the agent does is chosen by lines in the task text (the file's contents with `-f`):
    RUN: <command>          the command the agent runs in the terminal (default: echo hello)
    STANDIN: llm-error      the first LLM call fails: ConversationErrorEvent
                            code LLMServiceUnavailableError, status error, exit 0
    STANDIN: stuck          the same action four times: status stuck (no error event), exit 0
    STANDIN: hang           the first LLM call never returns (SIGINT cannot end it)
Each LLM call takes STANDIN_LLM_SECONDS (default 0.05 s).

If STANDIN_RECORD_DIR is set, what it was started with (argv, cwd, environment, pids, the
conversation id, its tmux server and session) is written to <STANDIN_RECORD_DIR>/<ns>-<pid>.json,
first at start and again as it learns more, for the tests to inspect.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

VERSION = "1.16.0"
PROMPT_TOKENS = 1000
COMPLETION_TOKENS = 50
AGENT_CACHE_READ = 100  # cached prompt tokens read per agent call
CONDENSER_CACHE_WRITE = 10  # prompt tokens written to the cache per condenser call
STUCK_REPEATS = 4
TMUX_SOCKET = "openhands"
MASKED = "**********"  # how the SDK writes a SecretStr (the api key) into base_state.json

stopping = False


def on_sigint(_signum: int, _frame: Any) -> None:
    """Like the real CLI: Ctrl-C stops nothing at once; the current step runs to its end."""
    global stopping
    stopping = True


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def warn(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S") + f".{time.time_ns() % 1_000_000_000 // 1000:06d}"


class Recorder:
    """What the stand-in was started with, for the tests (rewritten as it learns more)."""

    def __init__(self) -> None:
        folder = os.environ.get("STANDIN_RECORD_DIR")
        self.path = Path(folder, f"{time.time_ns()}-{os.getpid()}.json") if folder else None
        self.data: dict[str, Any] = {
            "argv": sys.argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "pid": os.getpid(),
            "pgid": os.getpgid(0),
            "sid_unix": os.getsid(0),
            "executable": sys.executable,
            "stdin_is_devnull": os.path.realpath("/proc/self/fd/0") == "/dev/null",
        }

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        if self.path is not None:
            tmp = self.path.with_suffix(".part")
            tmp.write_text(json.dumps(self.data))
            tmp.replace(self.path)


def usage_metrics(model: str) -> dict[str, Any]:
    return {
        "model_name": model,
        "accumulated_cost": 0.0,
        "max_budget_per_task": None,
        "accumulated_token_usage": {
            "model": model,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": 0,
            "context_window": 0,
            "per_turn_token": 0,
            "response_id": "",
        },
        "costs": [],
        "response_latencies": [],
        "token_usages": [],
    }


class Conversation:
    """One conversation's folder: base_state.json (saved on status changes only) and its events."""

    def __init__(
        self,
        folder: Path,
        conversation_id: uuid.UUID,
        llm: dict[str, Any],
        workdir: Path,
        cost_in: float,
        cost_out: float,
        json_events: bool,
    ) -> None:
        self.id = conversation_id
        self.folder = folder
        self.events_dir = folder / "events"
        self.events_dir.mkdir(parents=True, exist_ok=True)
        (self.events_dir / ".eventlog.lock").touch()
        self.count = 0
        self.cost_in, self.cost_out = cost_in, cost_out
        self.json_events = json_events
        model = str(llm.get("model") or "")
        public_llm = {k: v for k, v in llm.items() if k != "api_key"}
        self.state: dict[str, Any] = {
            "id": str(conversation_id),
            "agent": {
                "kind": "Agent",
                "llm": {**public_llm, "api_key": MASKED if llm.get("api_key") else None, "usage_id": "agent"},
                "tools": [
                    {"name": "terminal", "params": {}},
                    {"name": "file_editor", "params": {}},
                    {"name": "task_tracker", "params": {}},
                ],
                "condenser": {
                    "kind": "LLMSummarizingCondenser",
                    "llm": {**public_llm, "api_key": MASKED if llm.get("api_key") else None, "usage_id": "condenser"},
                },
            },
            "workspace": {"kind": "LocalWorkspace", "working_dir": str(workdir)},
            "persistence_dir": str(folder),
            "max_iterations": 500,
            "stuck_detection": True,
            "execution_status": "idle",
            "confirmation_policy": {"kind": "NeverConfirm"},
            "activated_knowledge_skills": [],
            "stats": {"usage_to_metrics": {"agent": usage_metrics(model), "condenser": usage_metrics(model)}},
        }
        self.save()

    def save(self) -> None:
        tmp = self.folder / "base_state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.folder / "base_state.json")

    def set_status(self, status: str) -> None:
        """The real one saves base_state.json when a top-level field is reassigned, never when the
        stats change in place: so a status change is the only moment the cost reaches the disk."""
        self.state["execution_status"] = status
        self.save()

    def add(self, kind: str, source: str, **fields: Any) -> dict[str, Any]:
        event_id = str(uuid.uuid4())
        event = {"kind": kind, "id": event_id, "timestamp": now(), "source": source, **fields}
        path = self.events_dir / f"event-{self.count:05d}-{event_id}.json"
        tmp = path.with_name("." + path.name + ".tmp")
        tmp.write_text(json.dumps(event))
        tmp.replace(path)
        self.count += 1
        if self.json_events:
            say(json.dumps(event))
        return event

    def llm_call(self, usage_id: str) -> None:
        """One completion: PROMPT_TOKENS in, COMPLETION_TOKENS out (in memory only, as the real one)."""
        time.sleep(float(os.environ.get("STANDIN_LLM_SECONDS", "0.05")))
        metrics = self.state["stats"]["usage_to_metrics"][usage_id]
        cost = PROMPT_TOKENS * self.cost_in + COMPLETION_TOKENS * self.cost_out
        metrics["accumulated_cost"] += cost
        metrics["costs"].append({"model": metrics["model_name"], "cost": cost, "timestamp": time.time()})
        usage = metrics["accumulated_token_usage"]
        usage["prompt_tokens"] += PROMPT_TOKENS
        usage["completion_tokens"] += COMPLETION_TOKENS
        if usage_id == "agent":
            usage["cache_read_tokens"] += AGENT_CACHE_READ
        else:
            usage["cache_write_tokens"] += CONDENSER_CACHE_WRITE


class Terminal:
    """The SDK's terminal tool: a session on the `tmux -L openhands` server; commands are typed
    into its pane, so each one is a child of the pane's bash, outside this process' group."""

    def __init__(self, workdir: Path, recorder: Recorder) -> None:
        self.env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
        user = os.environ.get("USER") or "None"
        self.session = f"openhands-pool-{user}-{uuid.uuid4().hex}"
        pass_env = [
            a for k, v in self.env.items() if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for a in ("-e", f"{k}={v}")
        ]
        self.tmux(
            "new-session",
            "-d",
            "-s",
            self.session,
            "-x",
            "250",
            "-y",
            "50",
            "-c",
            str(workdir),
            *pass_env,
            "bash",
            "--norc",
            "--noprofile",
            check=True,
        )
        self.tmux("set-option", "-t", self.session, "history-limit", "100000")
        self.server_pid = int(self.tmux("display-message", "-p", "-t", self.session, "#{pid}").stdout.strip())
        self.pane_pid = int(self.tmux("display-message", "-p", "-t", self.session, "#{pane_pid}").stdout.strip())
        recorder.update(
            tmux_session=self.session,
            tmux_server_pid=self.server_pid,
            pane_pid=self.pane_pid,
            tmux_tmpdir=os.environ.get("TMUX_TMPDIR"),
        )
        self.recorder = recorder

    def tmux(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        # Own session: a Ctrl-C sent to this process' group must not kill a tmux client mid-call.
        done = subprocess.run(
            ["tmux", "-L", TMUX_SOCKET, *args],
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"tmux {args[0]} failed: {done.stderr.strip()}")
        return done

    def run(self, command: str) -> tuple[int | None, str]:
        """Type the command, wait for its end however long (no timeout, as under SIGINT), return
        its exit code and output; (None, ...) if the pane or the server went away."""
        token = uuid.uuid4().hex[:12]
        typed = f"{command}; echo __STANDIN_RC_{token}=$?"
        self.tmux("send-keys", "-t", self.session, "-l", typed)
        self.tmux("send-keys", "-t", self.session, "Enter")
        done = re.compile(rf"^__STANDIN_RC_{token}=(\d+)\s*$", re.M)
        while True:
            shown = self.tmux("capture-pane", "-p", "-J", "-t", self.session, "-S", "-")
            if shown.returncode != 0:
                return None, ""
            found = done.search(shown.stdout)
            if found:
                lines = shown.stdout[: found.start()].splitlines()
                start = max((i for i, line in enumerate(lines) if f"__STANDIN_RC_{token}=$?" in line), default=-1)
                self.recorder.update(pane_shell_alive_at_command_end=pid_alive(self.pane_pid))
                return int(found.group(1)), "\n".join(lines[start + 1 :])
            time.sleep(0.1)

    def close(self) -> None:
        self.tmux("kill-session", "-t", self.session)


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] not in (b"Z", b"X")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="openhands", description="OpenHands CLI (stand-in)")
    p.add_argument("--version", "-v", action="version", version=f"OpenHands CLI {VERSION}")
    p.add_argument("--headless", action="store_true")
    p.add_argument("-t", "--task")
    p.add_argument("-f", "--file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--always-approve", "--yolo", action="store_true")
    p.add_argument("--llm-approve", action="store_true")
    p.add_argument("--override-with-envs", action="store_true")
    p.add_argument("--resume", nargs="?", const="")
    p.add_argument("--last", action="store_true")
    args = p.parse_args(argv)
    if args.json and not args.headless:
        p.error("--json requires --headless")
    if args.headless and not (args.task or args.file):
        p.error("--headless requires a task (-t TEXT or -f FILE)")
    if not args.headless:
        p.error("the stand-in has no interactive mode: use --headless")
    return args


def load_settings(args: argparse.Namespace, persistence: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The agent's `llm` settings and where they came from, or (None, None) with no settings."""
    llm: dict[str, Any] | None = None
    source = None
    path = persistence / "agent_settings.json"
    if path.is_file():
        llm = dict(json.loads(path.read_text()).get("llm") or {})
        source = "file"
    names = ("LLM_MODEL", "LLM_API_KEY", "LLM_BASE_URL")
    if args.override_with_envs:
        missing = [n for n in ("LLM_API_KEY", "LLM_MODEL") if not os.environ.get(n)]
        if missing:
            say(f"Error: Missing required environment variable(s): {', '.join(missing)}")
            say("When using --override-with-envs, you must set:")
            say("  - LLM_API_KEY: Your LLM API key")
            say("  - LLM_MODEL: The model to use (e.g., claude-sonnet-4-5-20250929)")
            sys.exit(1)
        llm = dict(llm or {})
        llm["model"], llm["api_key"] = os.environ["LLM_MODEL"], os.environ["LLM_API_KEY"]
        if os.environ.get("LLM_BASE_URL"):
            llm["base_url"] = os.environ["LLM_BASE_URL"]
        source = "file+env" if source else "env"
    elif any(os.environ.get(n) for n in names):
        warn("Warning: LLM_* environment variables are set but ignored; use --override-with-envs to apply them.")
    return llm, source


def price(llm: dict[str, Any], key: str, env: str) -> float:
    value = llm.get(key)
    if value is None:
        value = os.environ.get(env, "0")
    return float(value or 0)


def main() -> int:
    signal.signal(signal.SIGINT, on_sigint)
    recorder = Recorder()
    recorder.update()
    args = parse_args(sys.argv[1:])
    if not sys.stdout.isatty():
        say(
            "OpenHands CLI terminal UI may not work correctly in this environment: Rich detected a "
            "non-interactive or unsupported terminal; interactive UI may not render correctly"
        )

    persistence = Path(os.path.expanduser(os.environ.get("OPENHANDS_PERSISTENCE_DIR") or "~/.openhands"))
    conversations = Path(
        os.path.expanduser(os.environ.get("OPENHANDS_CONVERSATIONS_DIR") or persistence / "conversations")
    )
    workdir = Path(os.environ.get("OPENHANDS_WORK_DIR") or os.getcwd())
    conversation_id = uuid.uuid4()
    recorder.update(
        conversation_id=conversation_id.hex,
        persistence_dir=str(persistence),
        conversations_dir=str(conversations),
        workdir=str(workdir),
    )

    llm, source = load_settings(args, persistence)
    recorder.update(settings_source=source)
    if llm is None:
        say("\x1b[38;5;203mHeadless mode requires existing settings.\x1b[0m")
        say("Please run: openhands to configure your settings before using --headless.")
        say(f"Conversation ID: {conversation_id.hex}")
        return 0

    if args.file:
        path = Path(args.file).resolve()
        content = path.read_text(encoding="utf-8")
        dashes = "-" * 40
        message = (
            f"Starting this session with file context.\n\nFile path: {path}\n\nFile contents:\n"
            f"{dashes}\n{content}\n{dashes}\n"
        )
    else:
        content = message = args.task
    directives = set(re.findall(r"^STANDIN:[ \t]*([\w-]+)", content, re.M))
    run = re.search(r"^RUN:[ \t]*(.+)$", content, re.M)
    command = run.group(1).strip() if run else "echo hello"

    say("Initializing agent...")
    terminal = Terminal(workdir, recorder)
    conv = Conversation(
        conversations / conversation_id.hex,
        conversation_id,
        llm,
        workdir,
        price(llm, "input_cost_per_token", "STANDIN_COST_IN"),
        price(llm, "output_cost_per_token", "STANDIN_COST_OUT"),
        args.json,
    )
    conv.add(
        "SystemPromptEvent",
        "agent",
        system_prompt={"type": "text", "text": "You are OpenHands agent..."},
        tools=[{"name": "terminal"}, {"name": "file_editor"}, {"name": "finish"}],
    )
    conv.add(
        "MessageEvent",
        "user",
        llm_message={"role": "user", "content": [{"type": "text", "text": message}]},
        activated_skills=[],
        extended_content=[],
    )
    conv.set_status("running")
    say("Agent is working")

    def end(status: str) -> int:
        conv.set_status(status)
        terminal.close()
        say("Agent finished")
        say(f"Conversation ID: {conversation_id.hex}")
        say(f"Hint: run openhands --resume {conversation_id} to resume this conversation.")
        return 0

    if "hang" in directives:  # an LLM call that never returns: only a kill ends it
        while True:
            time.sleep(3600)
    if "llm-error" in directives:
        detail = "litellm.ServiceUnavailableError: OpenAIException - scripted failure (service unavailable)"
        warn(f"ERROR: LLM call failed after retries: {detail}")
        conv.add("ConversationErrorEvent", "environment", code="LLMServiceUnavailableError", detail=detail)
        return end("error")

    def step(tool_command: str) -> bool:
        """One agent step: an LLM call, its action, the command, its observation. False when a
        Ctrl-C arrived meanwhile (the step's observation is then never written)."""
        conv.llm_call("agent")
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        action = conv.add(
            "ActionEvent",
            "agent",
            tool_name="terminal",
            tool_call_id=call_id,
            thought=[{"type": "text", "text": "Running the command."}],
            action={
                "kind": "TerminalAction",
                "command": tool_command,
                "is_input": False,
                "timeout": None,
                "reset": False,
            },
            llm_response_id=f"chatcmpl-{uuid.uuid4().hex[:16]}",
        )
        if stopping:
            return False
        code, output = terminal.run(tool_command)
        if stopping:
            return False
        conv.add(
            "ObservationEvent",
            "environment",
            tool_name="terminal",
            tool_call_id=call_id,
            action_id=action["id"],
            observation={
                "kind": "TerminalObservation",
                "content": [{"type": "text", "text": output}],
                "command": tool_command,
                "exit_code": code,
                "timeout": False,
            },
        )
        return True

    if not step(command):
        return end("error")
    conv.llm_call("condenser")
    if stopping:
        return end("error")
    if "stuck" in directives:
        for _ in range(STUCK_REPEATS - 1):
            if not step(command):
                return end("error")
        return end("stuck")
    conv.llm_call("agent")
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    finish = conv.add(
        "ActionEvent",
        "agent",
        tool_name="finish",
        tool_call_id=call_id,
        thought=[],
        action={"kind": "FinishAction", "message": "Done."},
        llm_response_id=f"chatcmpl-{uuid.uuid4().hex[:16]}",
    )
    conv.add(
        "ObservationEvent",
        "environment",
        tool_name="finish",
        tool_call_id=call_id,
        action_id=finish["id"],
        observation={"kind": "FinishObservation", "content": [{"type": "text", "text": "Done."}]},
    )
    return end("finished")


if __name__ == "__main__":
    sys.exit(main())
