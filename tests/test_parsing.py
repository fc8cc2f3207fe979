"""Pure functions: text in, values out."""

from __future__ import annotations

import hashlib
from pathlib import Path

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


def launch(
    rc: int | None = 0, timed_out: bool = False, interrupted: bool = False, error: str | None = None
) -> rb.Launch:
    return rb.Launch(rc, timed_out, interrupted, "s", "f", 1.0, error)


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


def test_session_id_matches_openhands() -> None:
    # seen with openhands-ai 1.6.0: -n mytask-1 gave this sid
    assert rb.session_id("mytask-1") == "mytask-1-7f0834bc0d9e5d48df9c73c"
    long = "a-very-long-session-name-1"
    digest = hashlib.sha256(f"{long}**********".encode()).hexdigest()
    assert rb.session_id(long) == f"{long[:16]}-{digest[:15]}"
    assert len(rb.session_id(long)) == 32
    assert rb.session_id("x", legacy=True) == "x-" + hashlib.sha256(b"x**********").hexdigest()[:16]


@pytest.mark.parametrize("name", ["-rf", "with space", "quote'\"s", "new\nline", "ünïcødé", "..."])
def test_session_names_are_safe_and_unique(name: str) -> None:
    task = rb.Task(name, Path(f"/p/{name}.md"), name, "h", None)
    a, b = rb.session_name(task, "run1", 1), rb.session_name(task, "run1", 2)
    assert a != b and a[0].isalnum()
    assert all(c.isalnum() or c in "-_." for c in a) and a.isascii()


def test_secrets_from_config_and_environment_are_found_and_masked() -> None:
    config = {
        "llm": {
            "api_key": "sk-abcdefgh12345",
            "model": "gpt",
            "input_cost_per_token": 1e-6,
            "max_input_tokens": 100,
            "claude": {"api_key": "sk-ant-99999999"},
        },
        "core": {"search_api_key": "tvly-1234567890"},
        "sandbox": {"runtime_container_image": "img:latest"},
    }
    env = {
        "OPENAI_API_KEY": "sk-env-123456789",
        "GITHUB_TOKEN": "ghp_abcdefghij",
        "HOME": "/root/secret",
        "SHORT_TOKEN": "abc",
    }
    secrets = rb.find_secrets(config, env)
    assert set(secrets) == {
        "sk-abcdefgh12345",
        "sk-ant-99999999",
        "tvly-1234567890",
        "sk-env-123456789",
        "ghp_abcdefghij",
    }
    assert rb.mask("key sk-abcdefgh12345 and ghp_abcdefghij", secrets) == "key **** and ****"


def selection(**kw: object) -> rb.Selection:
    return rb.Selection(**kw)  # type: ignore[arg-type]


def tasks(*names: str) -> list[rb.Task]:
    return [rb.Task(n, Path(f"/p/{n}.md"), n, "h", None) for n in names]


def test_selection_include_exclude_tasks_limit() -> None:
    ts = tasks("a1", "a2", "b1", "b2", "c1")
    names = lambda s: [t.name for t in rb.select_tasks(ts, s)]
    assert names(selection(include=("a*", "c*"))) == ["a1", "a2", "c1"]
    assert names(selection(exclude=("*1",))) == ["a2", "b2"]
    assert names(selection(tasks=("b2", "a1"))) == ["a1", "b2"]
    assert names(selection(limit=2)) == ["a1", "a2"]
    with pytest.raises(rb.UsageError, match="no prompt named 'zz'"):
        rb.select_tasks(ts, selection(tasks=("zz",)))


def test_shards_cover_every_task_exactly_once() -> None:
    ts = tasks(*[f"t{i:02}" for i in range(11)])
    seen = [t.name for k in range(1, 4) for t in rb.select_tasks(ts, selection(shard=(k, 3)))]
    assert sorted(seen) == [t.name for t in ts] and len(seen) == 11


def test_shard_from_slurm_and_kubernetes() -> None:
    assert rb.parse_shard("2/8", {}) == (2, 8)
    assert rb.parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (4, 4)
    assert rb.parse_shard(
        "auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "5"}
    ) == (1, 4)
    assert rb.parse_shard("auto", {"JOB_COMPLETION_INDEX": "0", "RUN_BATCH_SHARDS": "5"}) == (1, 5)
    for bad in ("0/3", "4/3", "x", "auto"):
        with pytest.raises(rb.UsageError):
            rb.parse_shard(bad, {})


def test_longest_known_task_first() -> None:
    ts = tasks("a", "b", "c", "d")
    order = rb.plan_order(ts, {"a": 5.0, "c": 50.0, "d": 1.0})
    assert [t.name for t in order] == ["b", "c", "a", "d"]
    assert rb.plan_order(ts, {}) == ts


def test_inspect_prompt() -> None:
    assert rb.inspect_prompt(b"Fix the bug.\n") is None
    assert rb.inspect_prompt(b" \n\t") == "prompt is empty"
    assert "not UTF-8" in (rb.inspect_prompt(b"\xff\xfe bad") or "")


def test_task_config_keeps_every_base_setting_including_dates() -> None:
    import datetime as dt
    import tomllib

    base = tomllib.loads(
        '[core]\nruntime = "docker"\nstarted = 2026-11-24T10:00:00Z\n'
        '[sandbox.docker_runtime_kwargs.labels]\nteam = "ml"\n[llm]\nmodel = "x"\n'
    )
    config = rb.task_config(
        base, rb.OpenHandsOptions(runtime="cli", max_iterations=9), Path("/out/t.json"), "run1", "s-1"
    )
    assert config["core"]["started"] == dt.datetime(2026, 11, 24, 10, tzinfo=dt.UTC)
    assert config["core"]["runtime"] == "cli" and config["core"]["max_iterations"] == 9
    assert config["core"]["save_trajectory_path"] == "/out/t.json"
    assert config["sandbox"]["docker_runtime_kwargs"]["labels"] == {
        "team": "ml",
        "run_batch.run": "run1",
        "run_batch.session": "s-1",
    }
    assert base["core"]["runtime"] == "docker" and "run_batch.run" not in str(base)  # untouched
    import tomli_w

    assert tomllib.loads(tomli_w.dumps(config))["core"]["started"] == config["core"]["started"]


def test_debug_logging_with_parallel_tasks_is_warned_about() -> None:
    here = Path("/oh")
    assert rb.environment_warnings(4, here, {"LOG_LEVEL": "debug"})
    assert rb.environment_warnings(2, here, {"DEBUG": "true"})
    assert not rb.environment_warnings(1, here, {"LOG_LEVEL": "DEBUG"})
    assert not rb.environment_warnings(4, here, {"LOG_LEVEL": "INFO"})


def test_container_labels_survive_a_users_docker_kwargs_variable() -> None:
    import ast

    env = rb.child_environment(
        {"SANDBOX_DOCKER_RUNTIME_KWARGS": "{'mem_limit': '4g', 'labels': {'team': 'ml'}}"},
        rb.OpenHandsOptions(),
        Path("/o/t.json"),
        rb.Marker("run1", "s-1"),
    )
    kwargs = ast.literal_eval(env["SANDBOX_DOCKER_RUNTIME_KWARGS"])
    assert kwargs == {"mem_limit": "4g", "labels": {"team": "ml", "run_batch.run": "run1", "run_batch.session": "s-1"}}
    assert rb.with_labels("not a dict", rb.Marker("r", "s")) == "not a dict"
    assert "SANDBOX_DOCKER_RUNTIME_KWARGS" not in rb.child_environment(
        {}, rb.OpenHandsOptions(), Path("/o/t.json"), rb.Marker("r", "s")
    )


# --- OpenHands releases and entrypoints (docs/openhands.md) ----------------------------------------


def test_release_rules_follow_the_version() -> None:
    old, last, unknown = rb.Release("0.33.0"), rb.Release("1.6.0"), rb.Release(None)
    assert old.file_store_default == "/tmp/openhands_file_store" and last.file_store_default == "~/.openhands"
    assert old.legacy_session_id and not last.legacy_session_id and not unknown.legacy_session_id
    assert not old.graceful_sigint and last.graceful_sigint and unknown.graceful_sigint
    assert rb.Release("0.44.9").file_store_default == "/tmp/openhands_file_store"
    assert rb.Release("0.45.0").file_store_default == "~/.openhands"


def test_session_id_of_0_33_is_never_cut() -> None:
    # seen with openhands-ai 0.33.0 (docs/openhands.md, "Session id and storage")
    assert rb.session_id("first033", legacy=True) == "first033-f0542f4eaa832c6e"
    assert rb.session_id("hello-file-107f7e9a-1", legacy=True) == "hello-file-107f7e9a-1-1f83fc5458f79801"


def test_the_config_max_iterations_is_passed_as_a_flag() -> None:
    base = {"core": {"max_iterations": 100}}
    entry = rb.CoreMain(("python", "-m", "openhands.core.main"), rb.OpenHandsOptions(), base, {})
    t = rb.Task("t", Path("/p/t.md"), "t", "sha", None)
    attempt = rb.Attempt(t, 1, 1, "run1", "s", entry.identity())
    argv = entry.argv(attempt, Path("/c"))
    assert argv[argv.index("-i") + 1] == "100"
    chosen = rb.CoreMain(("python",), rb.OpenHandsOptions(max_iterations=7), base, {})
    assert chosen.options.max_iterations == 7  # the user's flag wins


@pytest.mark.parametrize(
    "command, forced, kind",
    [
        (("/venv/bin/openhands",), "auto", "cli"),
        (("/usr/bin/python3", "-m", "openhands_cli.simple_main"), "auto", "cli"),
        (("/venv/bin/python", "-m", "openhands.core.main"), "auto", "core-main"),
        (("/venv/bin/python", "wrapper.py"), "cli", "cli"),
    ],
)
def test_entrypoint_is_told_from_the_command(command: tuple[str, ...], forced: str, kind: str) -> None:
    assert rb.detect_entrypoint(command, forced) == kind


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
