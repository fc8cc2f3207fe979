"""The OpenHands seam, in process (no processes, no files): the secrets found in the base config and
the environment and their masking, the config and environment each attempt gets (base settings
kept, container labels, the workspace where every release reads it), session names and ids as
each release makes them, the release rules, which entrypoint a command is, and the command line
of run_batch's own SDK driver with the options it refuses."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import EXPERIMENT

import run_batch as rb

# --- secrets --------------------------------------------------------------------------------------


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


# --- an attempt's config and environment ----------------------------------------------------------


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


def test_debug_logging_with_parallel_tasks_is_warned_about() -> None:
    here = Path("/oh")
    assert rb.environment_warnings(4, here, {"LOG_LEVEL": "debug"})
    assert rb.environment_warnings(2, here, {"DEBUG": "true"})
    assert not rb.environment_warnings(1, here, {"LOG_LEVEL": "DEBUG"})
    assert not rb.environment_warnings(4, here, {"LOG_LEVEL": "INFO"})


# --- with_workspace_mount and set_workspace -------------------------------------------------------


WS = Path("/out/ws/t-1")


@pytest.mark.parametrize(
    "volumes, expected",
    [
        ("", f"{WS}:/workspace:rw"),
        ("/data:/data:ro", f"{WS}:/workspace:rw,/data:/data:ro"),
        ("/old:/workspace:rw,/data:/data:ro", f"{WS}:/workspace:rw,/data:/data:ro"),
        (
            "/data:/data:ro,/old:/workspace,/cache:/root/.cache",
            f"{WS}:/workspace:rw,/data:/data:ro,/cache:/root/.cache",
        ),
        ("/src:/workspace/sub:ro", f"{WS}:/workspace:rw,/src:/workspace/sub:ro"),  # inside it: kept
        ("/workspace:/mnt", f"{WS}:/workspace:rw,/workspace:/mnt"),  # host side named so: kept
        (",,/a:/b, ,", f"{WS}:/workspace:rw,/a:/b"),
        ("/a:/workspace:ro,/b:/workspace:rw", f"{WS}:/workspace:rw"),
    ],
)
def test_workspace_mount_replaces_only_the_workspace(volumes: str, expected: str) -> None:
    assert rb.with_workspace_mount(volumes, WS) == expected


def test_set_workspace_everywhere_the_releases_read_it() -> None:
    config: dict[str, Any] = {
        "core": {"workspace_base": "/old", "runtime": "docker"},
        "sandbox": {"volumes": "/data:/data:ro,/old:/workspace:rw", "timeout": 120},
    }
    env: dict[str, str] = {"KEEP": "1"}
    environ = {"SANDBOX_VOLUMES": "/x:/x,/y:/workspace", "HOME": "/root"}
    rb.set_workspace(config, env, environ, WS)
    assert config["core"] == {"workspace_base": str(WS), "workspace_mount_path": str(WS), "runtime": "docker"}
    assert config["sandbox"] == {"volumes": f"{WS}:/workspace:rw,/data:/data:ro", "timeout": 120}
    assert env == {
        "KEEP": "1",
        "WORKSPACE_BASE": str(WS),
        "WORKSPACE_MOUNT_PATH": str(WS),
        "SANDBOX_VOLUMES": f"{WS}:/workspace:rw,/x:/x",
    }
    assert environ == {"SANDBOX_VOLUMES": "/x:/x,/y:/workspace", "HOME": "/root"}  # untouched


def test_set_workspace_adds_no_volumes_where_the_user_has_none() -> None:
    config: dict[str, Any] = {"core": {}}  # 0.33 rejects [sandbox] volumes: it must not appear
    env: dict[str, str] = {}
    rb.set_workspace(config, env, {"SANDBOX_VOLUMES": ""}, WS)
    assert config == {"core": {"workspace_base": str(WS), "workspace_mount_path": str(WS)}}
    assert "SANDBOX_VOLUMES" not in env
    config = {"core": {}, "sandbox": {"timeout": 5, "volumes": ["not", "a", "string"]}}
    rb.set_workspace(config, env, {}, WS)
    assert config["sandbox"] == {"timeout": 5, "volumes": ["not", "a", "string"]}
    assert "SANDBOX_VOLUMES" not in env


# --- session names and ids ------------------------------------------------------------------------


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


def test_session_id_of_0_33_is_never_cut() -> None:
    # seen with openhands-ai 0.33.0 (docs/openhands.md, "Session id and storage")
    assert rb.session_id("first033", legacy=True) == "first033-f0542f4eaa832c6e"
    assert rb.session_id("hello-file-107f7e9a-1", legacy=True) == "hello-file-107f7e9a-1-1f83fc5458f79801"


# --- OpenHands releases and entrypoints (docs/openhands.md) ---------------------------------------


def test_release_rules_follow_the_version() -> None:
    old, last, unknown = rb.Release("0.33.0"), rb.Release("1.6.0"), rb.Release(None)
    assert old.file_store_default == "/tmp/openhands_file_store" and last.file_store_default == "~/.openhands"
    assert old.legacy_session_id and not last.legacy_session_id and not unknown.legacy_session_id
    assert not old.graceful_sigint and last.graceful_sigint and unknown.graceful_sigint
    assert rb.Release("0.44.9").file_store_default == "/tmp/openhands_file_store"
    assert rb.Release("0.45.0").file_store_default == "~/.openhands"


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


# --- the SDK driver entrypoint --------------------------------------------------------------------


def sdk_entrypoint(*args: str, environ: dict[str, str] | None = None) -> rb.Entrypoint:
    env = {"PATH": os.environ.get("PATH", ""), **(environ or {})}
    settings = rb.settings_from_args(
        ["--prompt-dir", ".", "--entrypoint", "sdk", "--command", sys.executable, "--grace-period", "30", *args], env
    )
    return rb.choose_entrypoint(settings, {}, env)


def test_sdk_driver_argv_carries_the_step_limit_and_the_budget() -> None:
    driver = sdk_entrypoint(
        "--max-iterations", "7", "--max-budget-per-task", "0.5", environ={"LLM_MODEL": "m", "LLM_API_KEY": "k"}
    )
    assert isinstance(driver, rb.SdkDriver)
    t = rb.Task("t", Path("/p/t.md"), "t", "sha", None)
    argv = driver.argv(rb.Attempt(t, 1, 1, "run1", "s", EXPERIMENT), Path("/private"))
    assert argv[:4] == [sys.executable, str(Path(rb.__file__).absolute()), "--sdk-driver", "-f"]
    assert argv[argv.index("--max-iterations") + 1] == "7" and argv[argv.index("--max-budget") + 1] == "0.5"
    assert argv[argv.index("--grace") + 1] == "25"  # saved before run_batch's grace period ends
    assert argv[-1] == "--override-with-envs"
    parsed = rb.parse_driver_args(argv[3:])
    assert (parsed.prompt, parsed.max_iterations, parsed.max_budget, parsed.override_with_envs) == (
        Path("/p/t.md"),
        7,
        0.5,
        True,
    )


@pytest.mark.parametrize(
    "args", [("--agent-cls", "X"), ("--llm-config", "x"), ("--runtime", "docker"), ("--", "--selected-repo", "x")]
)
def test_sdk_driver_refuses_what_it_cannot_honour(args: tuple[str, ...]) -> None:
    with pytest.raises(rb.UsageError):
        sdk_entrypoint(*args)
