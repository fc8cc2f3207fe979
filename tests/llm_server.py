"""A scripted OpenAI-compatible chat server on 127.0.0.1, for the tests and the demo.

It answers POST /v1/chat/completions (non-streaming) the way a tool-calling model would, so the
real OpenHands can run a task end to end with no LLM account. What it does is decided by
directives in the task text (the first user message), so one server serves a whole batch:

    RUN: <shell command>     first turn runs this command (default: `echo hello from the agent`);
                             several RUN lines run one per turn, in order
    LLM: fail                every request gets HTTP 500 (the agent ends in ERROR)
    LLM: loop                never finish: run the command again on every turn
    LLM: hang                answer the first turn, then hold every later request open (a hung call)
    LLM: 429 N [S]           the first N requests of this task get HTTP 429 with `Retry-After: S`
                             (default 2) and OpenAI's rate-limit error body; then it answers as usual
    LLM: auth                every request gets HTTP 401 with OpenAI's "Incorrect API key" body
    LLM: no-model            every request gets HTTP 404 with OpenAI's `model_not_found` body

ScriptedLLM.refuse_keys = True answers every request of every task that way (a wrong key), until
it is set back to False (the key fixed).

Then the next turn calls `finish`. Every answer carries a `usage` block of fixed size
(PROMPT_TOKENS / COMPLETION_TOKENS per call), so the tests know the exact token totals.

Run standalone: `python tests/llm_server.py [--port N]` prints `PORT <n>` and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROMPT_TOKENS = 1000
COMPLETION_TOKENS = 50
DEFAULT_COMMAND = "echo hello from the agent"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def task_of(messages: list[dict[str, Any]]) -> str:
    """The task text: the first user message."""
    return next((_text(m.get("content")) for m in messages if m.get("role") == "user"), "")


def rate_limited(task: str) -> tuple[int, float] | None:
    """(N, Retry-After seconds) of an `LLM: 429 N [S]` line, or None (pure)."""
    m = re.search(r"^LLM:\s*429\s+(\d+)(?:\s+(\d+(?:\.\d+)?))?\s*$", task, re.M)
    return (int(m.group(1)), float(m.group(2) or 2)) if m else None


# What OpenAI answers (HTTP 401, 404 and 429), as its API documents and sends them.
AUTH_ERROR = {
    "error": {
        "message": "Incorrect API key provided: sk-e2e-*****6789. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
MODEL_ERROR = {
    "error": {
        "message": "The model `scripted` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
}
RATE_ERROR = {
    "error": {
        "message": "Rate limit reached for gpt-4o in organization org-scripted on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 2s.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


def plan_reply(messages: list[dict[str, Any]]) -> tuple[int, dict[str, Any] | None]:
    """Status code and assistant message for this conversation (pure; the tests use it too)."""
    task = task_of(messages)
    if re.search(r"^LLM:\s*auth\s*$", task, re.M):
        return 401, None
    if re.search(r"^LLM:\s*no-model\s*$", task, re.M):
        return 404, None
    turn = sum(1 for m in messages if m.get("role") == "assistant")
    if re.search(r"^LLM:\s*fail\s*$", task, re.M):
        return 500, None
    if turn and re.search(r"^LLM:\s*hang\s*$", task, re.M):
        return 0, None  # the handler holds the request open
    commands = [c.strip() for c in re.findall(r"^RUN:\s*(.+)$", task, re.M)] or [DEFAULT_COMMAND]
    loop = re.search(r"^LLM:\s*loop\s*$", task, re.M) is not None
    if turn < len(commands) or loop:
        command = commands[0] if loop else commands[turn]
        name, args = "execute_bash", {"command": command, "security_risk": "LOW"}
    else:
        name, args = "finish", {"message": "Done."}
    return 200, {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{turn}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
        ],
    }


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedLLM

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            request = json.loads(body or b"{}")
        except json.JSONDecodeError:
            request = {}
        messages = request.get("messages") or []
        task = task_of(messages)
        limited = rate_limited(task)
        seen = self.server.count_request(task)
        headers: dict[str, str] = {}
        if self.server.refuse_keys:
            status, message = 401, None
        elif limited is not None and seen <= limited[0]:
            status, message = 429, None
            headers["Retry-After"] = f"{limited[1]:g}"
        else:
            status, message = plan_reply(messages)
        if status == 0:  # a hung call: no answer until the server shuts down (or 10 minutes)
            self.server.closing.wait(600)
            return
        if status == 401:
            payload: dict[str, Any] = AUTH_ERROR
        elif status == 404:
            payload = MODEL_ERROR
        elif status == 429:
            payload = RATE_ERROR
        elif message is None:
            payload = {"error": {"message": "scripted failure", "type": "server_error"}}
        else:
            payload = {
                "id": "chatcmpl-scripted",
                "object": "chat.completion",
                "created": 0,
                "model": request.get("model", "scripted"),
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                },
            }
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class ScriptedLLM(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.requests = 0
        self.by_task: dict[str, int] = {}  # requests per task text (`LLM: 429 N` counts them)
        self.limited = 0  # requests answered 429
        self.refuse_keys = False  # answer every request 401, as for a wrong key
        self.closing = threading.Event()
        self._lock = threading.Lock()

    def count_request(self, task: str = "") -> int:
        """Count a request; how many this task has made, this one included."""
        with self._lock:
            self.requests += 1
            self.by_task[task] = self.by_task.get(task, 0) + 1
            seen = self.by_task[task]
            limited = rate_limited(task)
            if limited is not None and seen <= limited[0]:
                self.limited += 1
            return seen

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def shutdown(self) -> None:
        self.closing.set()
        super().shutdown()

    def start(self) -> ScriptedLLM:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    port = parser.parse_args().port
    try:
        server = ScriptedLLM(port)
    except OSError as error:
        sys.exit(f"llm_server: cannot listen on 127.0.0.1:{port}: {error.strerror}")
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
