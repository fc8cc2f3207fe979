"""What an attempt's end means, in process (no processes, no files): its status from the process
facts and the agent's last state (classify), whether another attempt is worth it (is_retryable),
and the one short line that says why it did not succeed (explain, one_line). Reading those facts
out of OpenHands' output is test_parsing.py's."""

from __future__ import annotations

import pytest

import run_batch as rb


def launch(
    rc: int | None = 0,
    timed_out: bool = False,
    interrupted: bool = False,
    error: str | None = None,
    halted: str | None = None,
    halt_reason: str | None = None,
    timeout: float | None = 30.0,
) -> rb.Launch:
    """What happened to one OpenHands process: its exit code (a signal as minus its number), whether
    it timed out (after a 30 s timeout), was interrupted, could not start, or was halted by the runner."""
    return rb.Launch(rc, timed_out, interrupted, "s", "f", 1.0, error, halted, halt_reason, timeout)


# --- classify and is_retryable --------------------------------------------------------------------


@pytest.mark.parametrize(
    "l, state, status",
    [
        (launch(0), "FINISHED", "success"),
        (launch(0), None, "success"),  # no state line: exit code alone
        (launch(0), "ERROR", "failed"),  # OpenHands exits 0 on ERROR
        (launch(0), "STOPPED", "failed"),
        (launch(0), "AWAITING_USER_INPUT", "failed"),
        (launch(1), None, "failed"),
        (launch(1), "FINISHED", "failed"),
        (launch(0, timed_out=True), "FINISHED", "timeout"),
        (launch(-9, interrupted=True), None, "interrupted"),
        (launch(None, error="could not start"), None, "error"),
        (launch(-15), "RUNNING", "interrupted"),  # SIGTERM from outside: Slurm, scancel, a kubelet
        (launch(-15), "FINISHED", "interrupted"),
    ],
)
def test_classify(l: rb.Launch, state: str | None, status: str) -> None:
    assert rb.classify(l, state) == status


# (launch, agent_state, problem, status, retryable with no facts)
OUTCOMES = [
    (launch(0), "FINISHED", None, "success", False),
    (launch(0), None, None, "success", False),
    (launch(0), "ERROR", None, "failed", False),
    (launch(0), "RUNNING", None, "failed", False),
    (launch(1), "FINISHED", None, "failed", False),  # the agent ran: its outcome
    (launch(1), None, None, "failed", True),  # died before the agent ran
    (launch(1), "LOADING", None, "failed", True),
    (launch(1), "RUNNING", None, "failed", False),
    (launch(-9), None, None, "failed", True),  # OOM killer
    (launch(-15), "RUNNING", None, "interrupted", False),  # SIGTERM from outside
    (launch(-9, interrupted=True), None, None, "interrupted", False),
    (launch(0, interrupted=True), "FINISHED", None, "interrupted", False),
    (launch(-9, timed_out=True), "RUNNING", None, "timeout", False),
    (launch(0, timed_out=True), "FINISHED", None, "timeout", False),
    (launch(None, error="could not start"), None, None, "error", True),
    (launch(0), "FINISHED", "the prompt went away", "error", False),  # an empty prompt stays empty
    (launch(-9, interrupted=True), None, "problem", "interrupted", False),
    (launch(-9, timed_out=True), None, "problem", "timeout", False),
    (launch(-9, halted="stalled", halt_reason="no progress"), "RUNNING", None, "stalled", True),
    (launch(-9, halted="task-budget", halt_reason="spent"), "RUNNING", None, "failed", False),
    (launch(0, halted="task-budget", halt_reason="spent"), "FINISHED", None, "failed", False),
    (launch(-2, interrupted=True, halted="stalled"), None, None, "interrupted", False),
]


@pytest.mark.parametrize("l, state, problem, status, retryable", OUTCOMES)
def test_classify_and_retry(l: rb.Launch, state: str | None, problem: str | None, status: str, retryable: bool) -> None:
    assert rb.classify(l, state, problem) == status
    assert rb.is_retryable(status, l, rb.OutputFacts(), state) is retryable


def test_retry_only_infrastructure_failures() -> None:
    crash = rb.OutputFacts(last_exception="RuntimeError: Failed to start runtime")
    assert rb.is_retryable("failed", launch(1), crash, None)
    llm = rb.OutputFacts(reason="STATUS$ERROR_LLM_INTERNAL_SERVER_ERROR")
    assert rb.is_retryable("failed", launch(0), llm, "ERROR")
    auth = rb.OutputFacts(reason="STATUS$ERROR_LLM_AUTHENTICATION")
    assert not rb.is_retryable("failed", launch(0), auth, "ERROR")
    limit = rb.OutputFacts(reason="Agent reached maximum iteration. Current iteration: 5, max iteration: 5")
    assert not rb.is_retryable("failed", launch(0), limit, "ERROR")
    assert not rb.is_retryable("failed", launch(0), rb.OutputFacts(reason="Agent got stuck in a loop"), "ERROR")
    assert not rb.is_retryable("success", launch(0), rb.OutputFacts(), "FINISHED")
    assert not rb.is_retryable("timeout", launch(0, timed_out=True), rb.OutputFacts(), "STOPPED")


@pytest.mark.parametrize(
    "facts, retryable",
    [
        (rb.OutputFacts(reason="STATUS$ERROR_LLM_INTERNAL_SERVER_ERROR"), True),
        (rb.OutputFacts(reason="STATUS$ERROR_LLM_SERVICE_UNAVAILABLE"), True),
        (rb.OutputFacts(reason="STATUS$ERROR_LLM_AUTHENTICATION"), False),
        (rb.OutputFacts(last_exception="litellm.RateLimitError: slow down"), True),
        (rb.OutputFacts(last_exception="openai.APIConnectionError: Connection error."), True),
        (rb.OutputFacts(last_exception="litellm.ServiceUnavailableError: 503"), True),
        (rb.OutputFacts(last_exception="httpx.ReadTimeout: timed out"), True),
        (rb.OutputFacts(last_exception="ValueError: bad tool call"), False),
        (rb.OutputFacts(last_error_line="RateLimitError in a line that is not the exception"), False),
    ],
)
def test_retry_an_agent_error_only_for_the_llm_service(facts: rb.OutputFacts, retryable: bool) -> None:
    assert rb.is_retryable("failed", launch(0), facts, "ERROR") is retryable
    assert not rb.is_retryable("failed", launch(0, halted="task-budget"), facts, "ERROR")  # halted: never
    assert not rb.is_retryable("timeout", launch(0, timed_out=True), facts, "ERROR")


# --- explain: why, in one line --------------------------------------------------------------------


EXPLAINED = [
    ("success", launch(0), rb.OutputFacts(reason="ignored"), "FINISHED", None),
    ("error", launch(None, error="could not\nstart: [Errno 2]"), rb.OutputFacts(), None, "could not start: [Errno 2]"),
    ("timeout", launch(-9, timed_out=True), rb.OutputFacts(reason="x"), "RUNNING", "timed out after 30s"),
    (
        "stalled",
        launch(-9, halted="stalled", halt_reason="no progress\tfor 60s"),
        rb.OutputFacts(),
        None,
        "no progress for 60s",
    ),
    ("failed", launch(-9, halted="task-budget", halt_reason="spent $2"), rb.OutputFacts(reason="x"), None, "spent $2"),
    ("interrupted", launch(-2, interrupted=True), rb.OutputFacts(), None, "runner stopped: SIGINT received"),
    (
        "interrupted",
        launch(-15),
        rb.OutputFacts(),
        "RUNNING",
        "killed by SIGTERM from outside the runner (a scheduler's time limit or scancel?)",
    ),
    (
        "failed",
        launch(1),
        rb.OutputFacts(reason="STATUS$ERROR_LLM", last_exception="litellm.Err: boom"),
        "ERROR",
        "exit code 1: STATUS$ERROR_LLM: litellm.Err: boom",
    ),
    (
        "failed",
        launch(0),
        rb.OutputFacts(reason="Agent got stuck in a loop", last_exception="E: x"),
        "ERROR",
        "Agent got stuck in a loop",
    ),
    (
        "failed",
        launch(0),
        rb.OutputFacts(last_exception="RuntimeError: x", last_error_line="y"),
        "ERROR",
        "RuntimeError: x",
    ),
    ("failed", launch(2), rb.OutputFacts(last_error_line="usage: bad flag"), None, "exit code 2: usage: bad flag"),
    ("failed", launch(0), rb.OutputFacts(), "ERROR", "agent ended in ERROR"),
    ("failed", launch(-9), rb.OutputFacts(), None, "killed by SIGKILL"),
    ("failed", launch(-11), rb.OutputFacts(), "RUNNING", "killed by SIGSEGV: agent ended in RUNNING"),
    ("failed", launch(-1000), rb.OutputFacts(), None, "exit code -1000"),  # not a signal number
    ("failed", launch(137), rb.OutputFacts(), None, "exit code 137"),
]


@pytest.mark.parametrize("status, l, facts, state, why", EXPLAINED)
def test_explain(status: str, l: rb.Launch, facts: rb.OutputFacts, state: str | None, why: str | None) -> None:
    assert rb.explain(status, l, facts, state, "SIGINT received") == why


def test_explain_timeouts_and_budget_stops() -> None:
    t = launch(-9, timed_out=True, timeout=None)
    assert rb.explain("timeout", t, rb.OutputFacts(), None, "") == "timed out"
    t = launch(-9, timed_out=True, timeout=1.5)
    assert rb.explain("timeout", t, rb.OutputFacts(), None, "") == "timed out after 1.5s"
    stopped = launch(-2, interrupted=True)
    for why in ("batch budget of $5 reached (--max-total-cost)", "run budget of $1 reached (--max-run-cost)"):
        assert rb.explain("interrupted", stopped, rb.OutputFacts(), None, why) == why


def test_explain_is_one_short_line() -> None:
    facts = rb.OutputFacts(last_exception="E: " + "x\x1b[31m\n" * 1000)
    why = rb.explain("failed", launch(1), facts, "ERROR", "")
    assert why is not None and len(why) == rb.REASON_CHARS and why.endswith("…") and why.startswith("exit code 1: ")
    assert why.isprintable()


# --- one_line: the text a record and a console line keep ------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("plain", "plain"),
        ("  a \n\n b\t\tc  ", "a b c"),
        ("red \x1b[31mtext\x1b[0m", "red [31mtext [0m"),
        ("nul\x00bell\x07del\x7fend", "nul bell del end"),
        ("bidi \u202eevil\u202c zero\u200bwidth", "bidi evil zero width"),
        ("line\r\nbreak\u2028sep", "line break sep"),
        ("ünïcødé ✓", "ünïcødé ✓"),
        ("", ""),
        ("\n\t ", ""),
    ],
)
def test_one_line_removes_control_characters(text: str, expected: str) -> None:
    assert rb.one_line(text) == expected


def test_one_line_limit() -> None:
    assert rb.one_line("x" * 500) == "x" * 500
    assert rb.one_line("x" * 501) == "x" * 499 + "…"
    assert rb.one_line("abcdefghijkl", 10) == "abcdefghi…"
    assert rb.one_line("abc", 3) == "abc"
    assert rb.one_line("a \n" * 2_000_000, 20) == "a a a a a a a a a a…"  # a huge text is cut first
