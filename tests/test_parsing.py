"""Reading what an attempt left, in process (no processes, no files): OpenHands' log lines (state
lines, reasons, tracebacks, cost and token lines in every format a release prints), the events
and trajectories it saves, the V1 CLI's saved state, and the agent state's name. What those facts
make of the attempt (status, retry, why) is test_outcome.py's."""

from __future__ import annotations

from typing import Any

import pytest

import run_batch as rb

ESC = "\x1b"


def log_line(level: str, message: str, where: str = "agent_controller.py:679") -> str:
    return f"{ESC}[92m21:46:34 - openhands:{level}{ESC}[0m: {where} - {message}\n"


def state_line(old: str, new: str, sid: str = "t-1-abc") -> str:
    return log_line(
        "INFO", f"[Agent Controller {sid}] Setting agent(CodeActAgent) state from AgentState.{old} to AgentState.{new}"
    )


def test_final_state_is_the_last_state_line_with_colour_codes_stripped() -> None:
    facts = rb.scan_output(
        [state_line("LOADING", "RUNNING"), state_line("RUNNING", "ERROR"), state_line("ERROR", "ERROR")]
    )
    assert facts.agent_state == "ERROR"


def test_reason_from_status_code_and_agent_error_detail() -> None:
    lines = [
        log_line(
            "ERROR",
            "[Agent Controller s] Error while running the agent (session ID: s): litellm.InternalServerError: boom",
            "agent_controller.py:386",
        ),
        log_line("ERROR", "STATUS$ERROR_LLM_INTERNAL_SERVER_ERROR", "loop.py:32"),
        state_line("RUNNING", "ERROR"),
    ]
    facts = rb.scan_output(lines)
    assert facts.reason == "STATUS$ERROR_LLM_INTERNAL_SERVER_ERROR"
    assert facts.last_exception == "litellm.InternalServerError: boom"


@pytest.mark.parametrize(
    "text, reason",
    [
        (
            "RuntimeError: Agent reached maximum iteration. Current iteration: 50, max iteration: 50",
            "Agent reached maximum iteration. Current iteration: 50, max iteration: 50",
        ),
        (
            "RuntimeError: Agent reached maximum budget for conversation.Current budget: 1.01, max budget: 1.00",
            "Agent reached maximum budget for conversation.Current budget: 1.01, max budget: 1.00",
        ),
        (
            "RuntimeError: Agent reached maximum iteration in headless mode. Current iteration: 3, max iteration: 3",
            "Agent reached maximum iteration in headless mode. Current iteration: 3, max iteration: 3",
        ),
        ("AgentStuckInLoopError: Agent got stuck in a loop", "Agent got stuck in a loop"),
    ],
)
def test_agent_limit_reasons(text: str, reason: str) -> None:
    facts = rb.scan_output([log_line("ERROR", f"Error while running the agent (session ID: s): {text}")])
    assert facts.reason == reason


def test_last_traceback_line_is_the_exception() -> None:
    facts = rb.scan_output(
        [
            "Traceback (most recent call last):\n",
            '  File "x.py", line 1, in <module>\n',
            "    boom()\n",
            "docker.errors.DockerException: Error while fetching server API version\n",
        ]
    )
    assert facts.last_exception == "docker.errors.DockerException: Error while fetching server API version"


def test_debug_action_metrics_line_gives_full_precision_totals() -> None:
    lines = [
        log_line("DEBUG", "Cost: 0.00 USD | Accumulated Cost: 0.01 USD", "llm.py:627"),
        log_line(
            "DEBUG",
            "Action metrics - accumulated_cost: 0.004542, max_budget: None, latest tokens "
            "(prompt/completion/cache_read/cache_write): 1234/56/100/7, accumulated tokens "
            "(prompt/completion): 1234/56",
        ),
        log_line(
            "DEBUG",
            "Action metrics - accumulated_cost: 0.009084, max_budget: None, latest tokens "
            "(prompt/completion/cache_read/cache_write): 1234/56/200/0, accumulated tokens "
            "(prompt/completion): 2468/112",
        ),
    ]
    m = rb.scan_output(lines).metrics
    assert (m.total_cost, m.total_input_tokens, m.total_output_tokens) == (0.009084, 2468, 112)
    assert (m.cache_read_tokens, m.cache_write_tokens) == (300, 7)
    assert m.source == "output"


def test_debug_cost_lines_alone() -> None:
    lines = [
        log_line("DEBUG", "Cost: 0.01 USD | Accumulated Cost: 0.01 USD\nInput tokens: 1234 | Output tokens: 56"),
        "Input tokens: 1234 | Output tokens: 56\n",
        log_line("DEBUG", "Cost: 0.01 USD | Accumulated Cost: 0.02 USD"),
        "Input tokens: 1000 | Output tokens: 44\n",
    ]
    m = rb.scan_output(lines).metrics
    assert m.total_cost == 0.02 and m.total_input_tokens == 2234 + 1234 and m.total_output_tokens == 100 + 56


def test_usage_metrics_box_with_dollar_and_thousands_separators() -> None:
    box = [
        "│ Usage Metrics                    │\n",
        "│ Total Cost (USD): $1.234567      │\n",
        "│ Total Input Tokens: 1,234,567    │\n",
        "│ Cache Hits: 1,000                │\n",
        "│ Cache Writes: 20                 │\n",
        "│ Total Output Tokens: 12,345      │\n",
        "│ Total Tokens: 1,246,912          │\n",
    ]
    m = rb.scan_output(box).metrics
    assert (m.total_cost, m.total_input_tokens, m.total_output_tokens) == (1.234567, 1234567, 12345)
    assert (m.cache_read_tokens, m.cache_write_tokens) == (1000, 20)


def test_the_original_scripts_patterns_are_not_what_decides() -> None:
    # INFO output of a normal run has no cost line at all: unknown, never zero
    m = rb.scan_output([state_line("RUNNING", "FINISHED")]).metrics
    assert not m.known and m.total_cost is None and m.total_input_tokens is None


def test_metrics_from_the_last_event_that_has_them() -> None:
    events = [
        {
            "id": 5,
            "action": "run",
            "llm_metrics": {
                "accumulated_cost": 0.0011,
                "accumulated_token_usage": {
                    "prompt_tokens": 1000,
                    "completion_tokens": 50,
                    "cache_read_tokens": 1,
                    "cache_write_tokens": 2,
                },
            },
        },
        {"id": 6, "observation": "run"},
        {
            "id": 7,
            "action": "finish",
            "llm_metrics": {
                "accumulated_cost": 0.0022,
                "accumulated_token_usage": {
                    "prompt_tokens": 2000,
                    "completion_tokens": 100,
                    "cache_read_tokens": 3,
                    "cache_write_tokens": 4,
                },
            },
        },
        {"id": 8, "observation": "agent_state_changed", "extras": {"agent_state": "finished"}},
    ]
    m = rb.metrics_from_events(events, "trajectory")
    assert (
        m.total_cost,
        m.total_input_tokens,
        m.total_output_tokens,
        m.cache_read_tokens,
        m.cache_write_tokens,
        m.source,
    ) == (0.0022, 2000, 100, 3, 4, "trajectory")
    assert rb.agent_state_from_events(events) == "FINISHED"
    assert not rb.metrics_from_events([{"id": 1}], "events").known


@pytest.mark.parametrize(
    "value, name",
    [
        ("finished", "FINISHED"),
        ("AWAITING_USER_INPUT", "AWAITING_USER_INPUT"),
        ("Error", "ERROR"),
        ("x" * 32, "X" * 32),
        ("x" * 33, None),
        ("", None),
        ("AgentState.FINISHED", None),
        ("finished\n", None),
        ("fin ished", None),
        ("ÉTAT", None),
        ("sk-secret-123", None),
        (5, None),
        (None, None),
        (["FINISHED"], None),
        ({"state": "FINISHED"}, None),
    ],
)
def test_agent_state_name(value: Any, name: str | None) -> None:
    assert rb.agent_state_name(value) == name


# --- other releases and entrypoints (docs/openhands.md) -------------------------------------------


def test_0_33_root_logger_errors_give_the_reason() -> None:
    facts = rb.scan_output(["ERROR:root:<class 'IndexError'>: list index out of range\n"])
    assert facts.last_exception == "IndexError: list index out of range"


def test_state_on_stderr_and_cost_on_stdout_are_both_kept() -> None:
    stderr = rb.scan_output([state_line("RUNNING", "FINISHED")])
    stdout = rb.scan_output(["Total Cost (USD): $0.123456\n", "Total Input Tokens: 12,345\n"])
    facts = rb.merge_facts(stderr, stdout)
    assert facts.agent_state == "FINISHED" and facts.metrics.total_cost == 0.123456
    assert facts.metrics.total_input_tokens == 12345


def test_cli_money_is_summed_over_its_llms() -> None:
    state = {
        "stats": {
            "usage_to_metrics": {
                "agent": {
                    "accumulated_cost": 0.006,
                    "accumulated_token_usage": {
                        "prompt_tokens": 2000,
                        "completion_tokens": 100,
                        "cache_read_tokens": 5,
                        "cache_write_tokens": 0,
                    },
                },
                "condenser": {
                    "accumulated_cost": 0.001,
                    "accumulated_token_usage": {"prompt_tokens": 300, "completion_tokens": 10},
                },
            }
        }
    }
    m = rb.cli_metrics(state)
    assert (m.total_cost, m.total_input_tokens, m.total_output_tokens, m.cache_read_tokens, m.source) == (
        pytest.approx(0.007),
        2300,
        110,
        5,
        "state",
    )
    assert not rb.cli_metrics({}).known and not rb.cli_metrics({"stats": {"usage_to_metrics": 5}}).known
