"""Never lose work: resume, retries, signals on the runner, a killed runner, one writer, containers,
hostile input. Real processes and real signals throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SECRET, Workspace, alive, processes_with, read_jsonl, wait_until

import run_batch as rb

pytestmark = pytest.mark.e2e  # the runner as a process, against the OpenHands stand-in


# --- 1. resume ------------------------------------------------------------------------------------


def test_same_command_skips_succeeded_tasks_and_reruns_the_rest(ws: Workspace) -> None:
    ws.prompt("good")
    ws.prompt("bad", "STANDIN: llm-error\n")
    ws.prompt("changed", "first version\n")
    assert ws.run().returncode == 1
    ws.prompt("changed", "second version\n")
    ws.run()
    assert len(ws.records_of("good")) == 1  # skipped: success, same prompt
    assert len(ws.records_of("bad")) == 2  # failed: runs again
    assert len(ws.records_of("changed")) == 2  # prompt changed: runs again
    assert [r["attempt"] for r in ws.records_of("bad")] == [1, 2]
    assert ws.run("--rerun").returncode == 1
    assert len(ws.records_of("good")) == 2


def test_torn_last_line_is_kept_warned_and_harmless(ws: Workspace) -> None:
    ws.prompt("a")
    ws.prompt("b")
    ws.run("--tasks", "a")
    with open(ws.results, "a") as f:
        f.write('{"task_name": "b", "status": "succ')  # the runner died mid-write
    torn = ws.results.read_bytes()
    done = ws.run()
    assert done.returncode == 0, done.stderr
    assert "not a complete record" in done.stderr
    assert ws.results.read_bytes().startswith(torn)
    assert [r["task_name"] for r in read_jsonl_tolerant(ws.results)] == ["a", "b"]
    assert ws.run().returncode == 0  # and the next run is fine too, with nothing left to do
    assert len(ws.launches()) == 2


def read_jsonl_tolerant(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


# --- 2. retries -----------------------------------------------------------------------------------


def test_infrastructure_failures_are_retried_with_fresh_sessions(ws: Workspace) -> None:
    ws.prompt("flaky", "STANDIN: crash-times 2\n")
    done = ws.run("--retries", "3", "--retry-backoff", "0.05")
    records = ws.records_of("flaky")
    assert [r["status"] for r in records] == ["failed", "failed", "success"]
    assert [r["attempt"] for r in records] == [1, 2, 3]
    assert len({r["session_name"] for r in records}) == 3
    assert len({r["trajectory_path"] for r in records if r["trajectory_path"]}) == 1
    assert len({r["stderr_log"] for r in records}) == 3  # every attempt keeps its own log
    assert done.returncode == 0
    lines = [l for l in done.stdout.splitlines() if l.startswith("[")]
    assert [l.split()[0] for l in lines] == ["[retrying]", "[retrying]", "[1/1]"]


def test_llm_outage_is_retried_until_retries_run_out(ws: Workspace) -> None:
    ws.prompt("outage", "STANDIN: llm-error\n")
    done = ws.run("--retries", "2", "--retry-backoff", "0.01")
    assert [r["status"] for r in ws.records_of("outage")] == ["failed"] * 3
    assert "1 task: 1 failed" in done.stdout  # one task, not three


@pytest.mark.parametrize("prompt", ["STANDIN: max-iterations\n", "STANDIN: stuck\n", "STANDIN: llm-auth\n", "hi\n"])
def test_agent_outcomes_are_not_retried(ws: Workspace, prompt: str) -> None:
    ws.prompt("t", prompt)
    ws.run("--retries", "3", "--retry-backoff", "0.01")
    assert len(ws.records_of("t")) == 1


# --- 3. Ctrl-C and SIGTERM on the runner ----------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_running_tasks_records_them_and_starts_no_new_one(ws: Workspace, sig: int, code: int) -> None:
    flag = ws.root / "go-fast"
    ws.prompt("a-first", f"RUN: test -f {flag} || sleep 300\n")
    ws.prompt("b-second")
    runner = ws.start("--grace-period", "20")
    assert wait_until(lambda: len(ws.launches()) == 1)
    time.sleep(0.5)
    runner.send_signal(sig)
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == code, err
    [record] = read_jsonl(ws.results)
    assert record["task_name"] == "a-first" and record["status"] == "interrupted"
    assert record["agent_state"] == "STOPPED"  # stopped the graceful way: trajectory saved
    assert record["trajectory_path"]
    assert len(ws.launches()) == 1  # b-second never started
    assert "not started" in out and "interrupted" in out
    assert processes_with(f"RUN_BATCH_RUN_ID={record['run_id']}") == []
    private = Path(ws.launches()[0]["argv"][ws.launches()[0]["argv"].index("--config-file") + 1]).parent
    assert not private.exists()
    # the same command afterwards runs what is left
    flag.touch()
    again = ws.run("--grace-period", "20")
    assert again.returncode == 0, again.stderr
    assert [r["status"] for r in read_jsonl(ws.results)] == ["interrupted", "success", "success"]


def test_second_ctrl_c_kills_at_once(ws: Workspace) -> None:
    ws.prompt("wedged", "STANDIN: hang\n")
    runner = ws.start("--grace-period", "120")
    assert wait_until(lambda: len(ws.launches()) == 1)
    runner.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert runner.poll() is None  # first Ctrl-C: waiting out the grace period
    t0 = time.monotonic()
    runner.send_signal(signal.SIGINT)
    runner.communicate(timeout=30)
    assert time.monotonic() - t0 < 10 and runner.returncode == 130
    assert read_jsonl(ws.results)[0]["status"] == "interrupted"
    assert not alive(ws.launches()[0]["pid"])


# --- 4. the runner itself killed ------------------------------------------------------------------


def test_next_run_cleans_up_after_a_killed_runner_and_completes(ws: Workspace) -> None:
    flag = ws.root / "go-fast"
    ws.prompt("a-done")
    ws.prompt("b-long", f"RUN: test -f {flag} || sleep 300\n")
    ws.prompt("c-later")
    runner = ws.start()
    assert wait_until(lambda: len(ws.launches()) == 2)
    launch = next(l for l in ws.launches() if "b-long" in l["argv"][l["argv"].index("-f") + 1])
    run_id = launch["env"]["RUN_BATCH_RUN_ID"]
    private = Path(launch["argv"][launch["argv"].index("--config-file") + 1]).parent
    assert wait_until(lambda: len(processes_with(f"RUN_BATCH_RUN_ID={run_id}")) >= 2)  # OpenHands + sleep
    before = ws.results.read_bytes()
    runner.kill()  # SIGKILL: no handler runs
    runner.wait()
    assert alive(launch["pid"]) and private.is_dir()  # what a dead run leaves behind
    flag.touch()
    done = ws.run()
    assert done.returncode == 0, done.stderr
    assert "did not finish" in done.stdout
    assert processes_with(f"RUN_BATCH_RUN_ID={run_id}") == [] and not private.exists()
    assert ws.results.read_bytes().startswith(before)
    latest = {r["task_name"]: r["status"] for r in read_jsonl(ws.results)}
    assert latest == {"a-done": "success", "b-long": "success", "c-later": "success"}
    assert len(ws.records_of("a-done")) == 1  # its record survived, so it was not run again


# --- 5. one writer per results file ---------------------------------------------------------------


def test_second_run_on_the_same_results_file_is_refused(ws: Workspace) -> None:
    ws.prompt("slow", "RUN: sleep 2\n")
    first = ws.start()
    assert wait_until(lambda: len(ws.launches()) == 1)
    t0 = time.monotonic()
    second = ws.run()
    assert second.returncode == 2 and time.monotonic() - t0 < 5
    assert f"pid {first.pid}" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert first.wait(60) == 0
    assert [r["status"] for r in read_jsonl(ws.results)] == ["success"]
    # other results files (shards) in the same folder may run at the same time
    third = ws.run("--results-name", "other.jsonl", "--rerun")
    assert third.returncode == 0


# --- 6. Docker sandboxes --------------------------------------------------------------------------


def fake_docker(ws: Workspace) -> Path:
    bin_dir = ws.root / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = ws.root / "docker-calls.txt"
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    docker.chmod(0o755)
    ws.env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    return calls


def test_each_tasks_own_container_is_removed(ws: Workspace) -> None:
    calls = fake_docker(ws)
    ws.prompt("a")
    ws.prompt("b", "STANDIN: llm-error\n")
    ws.run("--runtime", "docker", "--max-workers", "2")
    removed = calls.read_text().splitlines()
    sids = {r["session_id"] for r in read_jsonl(ws.results)}
    assert sorted(removed) == sorted(f"rm -f openhands-runtime-{sid}" for sid in sids)
    labels = ws.launches()[0]["config"]["sandbox"]["docker_runtime_kwargs"]["labels"]
    assert labels["run_batch.run"] == read_jsonl(ws.results)[0]["run_id"]


def test_keep_containers_and_other_runtimes_leave_docker_alone(ws: Workspace) -> None:
    calls = fake_docker(ws)
    ws.prompt("a")
    ws.run("--runtime", "docker", "--keep-containers")
    ws.run("--rerun")  # the base config says runtime = "cli"
    assert not calls.exists()


def test_no_docker_command_is_one_warning_not_a_failure(ws: Workspace) -> None:
    ws.env["PATH"] = "/usr/bin:/bin"
    assert not any(Path(d, "docker").exists() for d in ("/usr/bin", "/bin"))
    ws.prompt("a")
    ws.prompt("b")
    done = ws.run("--runtime", "docker")
    assert done.returncode == 0
    assert done.stderr.count("no `docker` command") == 1


def test_a_dead_runs_containers_are_found_by_label(ws: Workspace) -> None:
    calls = fake_docker(ws)
    ws.prompt("long", "RUN: sleep 300\n")
    runner = ws.start("--runtime", "docker")
    assert wait_until(lambda: len(ws.launches()) == 1)
    run_id = ws.launches()[0]["env"]["RUN_BATCH_RUN_ID"]
    runner.kill()
    runner.wait()
    ws.run("--runtime", "docker", "--timeout", "1", "--grace-period", "1")
    assert f"ps -aq --filter label=run_batch.run={run_id}" in calls.read_text()


# --- 7. hostile input -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["with space", "quote'\"s", "new\nline", "ünïcødé 名前", "-rf", "--help"])
def test_odd_prompt_names_run_and_are_recorded_by_name(ws: Workspace, name: str) -> None:
    ws.prompt(name)
    done = ws.run()
    assert done.returncode == 0, done.stderr
    [record] = read_jsonl(ws.results)
    assert record["task_name"] == name and record["status"] == "success"
    assert Path(record["trajectory_path"]).name == f"{name}.json"
    assert sum(1 for line in done.stdout.splitlines() if line.startswith("[1/1]")) == 1


def test_non_utf8_huge_symlinked_and_broken_prompts(ws: Workspace, tmp_path: Path) -> None:
    (ws.prompts / "latin1.md").write_bytes("café\n".encode("latin-1"))
    ws.prompt("huge", "Fix it.\n" + "x" * (1024 * 1024) + "\n")
    target = tmp_path / "elsewhere.md"
    target.write_text("Say hi.\n")
    (ws.prompts / "linked.md").symlink_to(target)
    (ws.prompts / "dangling.md").symlink_to(tmp_path / "missing.md")
    ws.run()
    status = {r["task_name"]: (r["status"], r["error"]) for r in read_jsonl(ws.results)}
    assert status["latin1"][0] == "error" and "not UTF-8" in status["latin1"][1]
    assert status["huge"] == ("success", None) and status["linked"] == ("success", None)
    assert status["dangling"][0] == "error" and "cannot read" in status["dangling"][1]


def test_unreadable_prompt_is_an_error_record(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = ws.prompt("private")
    ws.prompt("public")
    if os.geteuid() != 0:  # a real permission problem where the tests can make one
        secret.chmod(0)
    else:  # root reads everything: make the read fail the way it would
        real = os.open

        def refuse(path: object, *args: object, **kwargs: object) -> int:
            if str(path).endswith("private.md"):
                raise PermissionError(13, "Permission denied")
            return real(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "open", refuse)
    tasks = {t.name: t for t in rb.discover_tasks(ws.prompts)}
    assert tasks["private"].problem == "cannot read prompt: Permission denied"
    assert tasks["public"].problem is None


def test_names_differing_only_in_case_keep_separate_files(ws: Workspace) -> None:
    ws.prompt("Task")
    ws.prompt("task")
    ws.run()
    records = read_jsonl(ws.results)
    assert {r["task_name"] for r in records} == {"Task", "task"}
    paths = {r["trajectory_path"].lower() for r in records}
    assert len(paths) == 2  # distinct even on a case-blind file system


def test_unwritable_output_and_results_folder_are_usage_errors(ws: Workspace) -> None:
    ws.prompt("a")
    ws.run()
    before = ws.results.read_bytes()
    blocker = ws.root / "a-file"
    blocker.write_text("x")
    done = ws.run("--output-dir", str(blocker / "out"))
    assert done.returncode == 2 and "--output-dir" in done.stderr and "Traceback" not in done.stderr
    (ws.output / "folder.jsonl").mkdir()
    done = ws.run("--results-name", "folder.jsonl")
    assert done.returncode == 2 and "is a folder" in done.stderr
    assert ws.results.read_bytes() == before


@pytest.mark.parametrize(
    "text, words",
    [
        ("this is not toml", "not valid TOML"),
        ("core = 5\n", "[core] must be a table"),
        ("[core]\nruntime = 5\n", "runtime must be a string"),
    ],
)
def test_bad_base_config_is_a_usage_error(ws: Workspace, text: str, words: str) -> None:
    ws.prompt("a")
    ws.run()
    before = ws.results.read_bytes()
    (ws.root / "bad.toml").write_text(text)
    done = ws.run("--base-config", str(ws.root / "bad.toml"), "--rerun")
    assert done.returncode == 2 and words in done.stderr and "bad.toml" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert ws.results.read_bytes() == before


# --- 8. secrets everywhere ------------------------------------------------------------------------


def test_secret_never_on_a_command_line_while_tasks_run(ws: Workspace) -> None:
    ws.prompt("slow", "RUN: sleep 2\n")
    runner = ws.start()
    assert wait_until(lambda: len(ws.launches()) == 1)
    run_id = ws.launches()[0]["env"]["RUN_BATCH_RUN_ID"]
    cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in processes_with(f"RUN_BATCH_RUN_ID={run_id}")]
    cmdlines.append(Path(f"/proc/{runner.pid}/cmdline").read_bytes())
    assert cmdlines and not any(SECRET.encode() in c for c in cmdlines)
    out, err = runner.communicate(timeout=60)
    assert SECRET not in out + err
    assert SECRET not in (ws.output / "batch_run.log").read_text()


def test_prompt_whose_file_name_is_not_utf8_is_an_error_record(ws: Workspace) -> None:
    (ws.prompts / os.fsdecode(b"bad\xffname.md")).write_text("hi\n")
    ws.prompt("good")
    done = ws.run()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    records = {r["task_name"]: r for r in read_jsonl(ws.results)}
    assert records["bad\ufffdname"]["status"] == "error"
    assert "not valid UTF-8" in records["bad\ufffdname"]["error"]
    assert records["good"]["status"] == "success"
    assert json.loads((ws.output / "summary.json").read_text())["totals"]["tasks"] == 2


def test_an_internal_error_still_leaves_a_record(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.prompt("a")
    ws.prompt("b")

    def broken(self: rb.Batch, attempt: rb.Attempt) -> tuple[rb.AttemptRecord, bool]:
        if attempt.task.name == "a":
            raise RuntimeError("simulated bug")
        return real(self, attempt)

    real = rb.Batch.run_attempt
    monkeypatch.setattr(rb.Batch, "run_attempt", broken)
    monkeypatch.setattr(os, "environ", dict(ws.env))
    code = rb.main(ws.command()[2:])
    assert code == 1
    records = {r["task_name"]: r for r in read_jsonl(ws.results)}
    assert records["a"]["status"] == "error" and "simulated bug" in records["a"]["error"]
    assert records["b"]["status"] == "success"
    assert "RuntimeError: simulated bug" in (ws.output / "batch_run.log").read_text()


def test_a_dead_run_on_another_host_is_reported_not_touched(ws: Workspace) -> None:
    ws.prompt("a")
    ws.output.mkdir()
    (ws.output / ".batch_results.jsonl.lock").write_text(
        json.dumps({"pid": 4242, "host": "some-other-node", "run_id": "deadbeef", "private_dir": "/tmp/x"})
    )
    done = ws.run()
    assert done.returncode == 0
    assert "pid 4242 on some-other-node" in done.stderr and "not touched" in done.stderr


def test_docker_without_a_daemon_is_one_warning_not_a_failure(ws: Workspace) -> None:
    bin_dir = ws.root / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?' >&2\nexit 1\n"
    )
    docker.chmod(0o755)
    ws.env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    for n in range(3):
        ws.prompt(f"t{n}")
    done = ws.run("--runtime", "docker", "--max-workers", "3")
    assert done.returncode == 0
    assert done.stderr.count("could not remove Docker containers") == 1
    assert "Cannot connect to the Docker daemon" in done.stderr


def test_results_file_that_cannot_be_written_stops_the_batch(ws: Workspace) -> None:
    import resource

    for n in range(6):
        ws.prompt(f"t{n}", "RUN: sleep 1\n")
    ws.run("--tasks", "t0")  # one record already there
    size = ws.results.stat().st_size

    def small_files() -> None:  # appends past this size fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (size * 2 + 1000, size * 2 + 1000))

    done = subprocess.run(ws.command(), env=ws.env, capture_output=True, text=True, timeout=120, preexec_fn=small_files)
    assert done.returncode == 1
    assert "cannot write" in done.stderr and "Traceback" not in done.stderr
    assert len(ws.launches()) < 6  # it stopped starting tasks it could not record
    records = read_jsonl(ws.results)
    assert records[0]["task_name"] == "t0" and records[0]["status"] == "success"  # nothing lost
