"""GitTaskBench end to end (issue 23): the commands of examples/gittaskbench/README.md, run as they
are written there, from a GitTaskBench-shaped checkout (a copy of tests/fixtures/gittaskbench, at
~/GitTaskBench as the README has it), through the real runner, with the OpenHands stand-in installed
where the README's --command points (~/.cache/run_batch/openhands-0.33.0/bin/openhands-core-main).

The commands are read from the README itself: its variables are kept but RB (this repository) and
PY (this Python), and `run-batch` is this run_batch.py. So a change to the README's commands is
tested as it is written. The stand-in agent's "work" is the `RUN:` line a test appends to its copy
of a prompt: copying the right answer into the folder the prompt names, writing a wrong one, or
nothing."""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e  # the runner as a process, the example's scripts, the stand-in

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
RUN_BATCH = REPO / "run_batch.py"
STANDIN = TESTS / "fake_openhands.py"
README = REPO / "examples" / "gittaskbench" / "README.md"
FIXTURE = TESTS / "fixtures" / "gittaskbench"
MISSING_PACKAGE = "gittaskbench_fixture_absent_package"  # what NeedsPkg_01's test script imports
WRAPPER = ".cache/run_batch/openhands-0.33.0/bin/openhands-core-main"  # under HOME, as installed
SECRET = "sk-gtb-SECRET-0123456789abcdef"


# --- the README's commands ------------------------------------------------------------------------


def readme_block(heading: str) -> list[str]:
    """The README's first ```bash block under `## heading`: one entry per logical line
    (continuation lines joined), blank lines left out, comments kept (bash drops them)."""
    text = README.read_text(encoding="utf-8")
    assert f"\n## {heading}\n" in text, f"the README has no section {heading!r}"
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, f"no bash block under {heading!r}"
    return [line.strip() for line in match.group(1).replace("\\\n", " ").splitlines() if line.strip()]


def commands(block: list[str], start: str) -> list[str]:
    return [line for line in block if line.startswith(start)]


FIRST = readme_block("From a checkout to the two rates")
SAMPLES = readme_block("Samples, and a folder per attempt")
VARIABLES = [line for line in FIRST if re.match(r"[A-Z]+=", line)]
[INSTALL] = commands(FIRST, "bash $RB/examples/install-openhands.sh")
[RUN] = commands(FIRST, "run-batch ")
[REWRITE] = commands(SAMPLES, "$PY $RB/examples/gittaskbench/rewrite_prompts.py")
[RUN_SAMPLES] = commands(SAMPLES, "run-batch ")
# The second command writes `--command ...` for the first one's OpenHands part.
COMMAND_PART = re.search(r"--command .*?(?= --max-workers)", RUN).group(0)  # type: ignore[union-attr]


def output_dir_of(command: str, home: Path) -> Path:
    match = re.search(r"--output-dir (\S+)", command)
    assert match, command
    return Path(match.group(1).replace("~", str(home), 1))


def without_option(command: str, option: str) -> str:
    """The command without `option "..."` (a quoted value)."""
    shorter = re.sub(rf' {re.escape(option)} "[^"]*"', "", command)
    assert shorter != command, f"{option} not in {command}"
    return shorter


def test_the_readme_commands_are_the_ones_tested() -> None:
    """What the other tests rely on: the README's variables, the OpenHands this file installs in
    their place, and the placeholders each command gives the example's scripts."""
    assert [v.split("=")[0] for v in VARIABLES] == ["RB", "GTB", "PY"]
    assert "GTB=~/GitTaskBench" in [v.split("#")[0].strip() for v in VARIABLES]
    assert "--version 0.33.0" in INSTALL
    assert COMMAND_PART.startswith(f"--command ~/{WRAPPER} --openhands-version 0.33.0 ")
    assert "--prompt-dir $GTB/eval_automation/output/prompt " in RUN
    for command in (RUN, RUN_SAMPLES):
        assert "$RB/examples/gittaskbench/prepare.py --root $GTB --task {task}" in command
        assert "$RB/examples/gittaskbench/grade.py --root $GTB --task {task}" in command
        assert "--results-dir {output_dir}/gittaskbench" in command
    assert "--prompt {prompt} --keep-in {output_dir}/stale-outputs" in RUN
    assert "--output-dir {workspace}/output" in RUN_SAMPLES
    assert "--prompt-placeholders --workspace-per-task --samples " in RUN_SAMPLES
    assert " --command ... " in RUN_SAMPLES
    assert REWRITE.endswith("$GTB/eval_automation/output/prompt ~/gtb-prompts-ws")
    assert "--prompt-dir ~/gtb-prompts-ws " in RUN_SAMPLES


# --- a GitTaskBench checkout, the stand-in where the README installs OpenHands ----------------------


@dataclass
class Bench:
    home: Path  # HOME for the commands: the checkout, the config, the runs and the stand-in are under it
    env: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.home / "GitTaskBench"

    @property
    def launches_dir(self) -> Path:
        return self.home.parent / "launches"

    def prompt(self, task: str, folder: Path | None = None) -> Path:
        return (folder or self.root / "eval_automation" / "output" / "prompt") / f"{task}.md"

    def out(self, task: str) -> Path:
        """The folder the task's (original) prompt names."""
        return self.root / "eval_automation" / "output" / task

    def agent(self, task: str, command: str, folder: Path | None = None) -> None:
        """What the stand-in's agent does for the task: the prompt's RUN line (replaced if there)."""
        path = self.prompt(task, folder)
        text = re.sub(r"\nRUN: .*\n", "\n", path.read_text(encoding="utf-8"))
        path.write_text(text.rstrip("\n") + f"\n\nRUN: {command}\n", encoding="utf-8")

    def sh(self, command: str, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """One README command through bash, after the README's variables (RB and PY set to this
        repository and this Python); `run-batch` is run_batch.py, with `extra` after its arguments."""
        script = "\n".join(
            [
                "set -eo pipefail",
                *VARIABLES,
                f"RB={shlex.quote(str(REPO))}",
                f"PY={shlex.quote(sys.executable)}",
                f"EXTRA=({shlex.join(extra)})",
                f'run-batch() {{ {shlex.quote(sys.executable)} {shlex.quote(str(RUN_BATCH))} "$@" "${{EXTRA[@]}}"; }}',
                command,
            ]
        )
        return subprocess.run(
            ["bash", "-c", script],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def run_batch(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """run_batch.py itself, with the README's OpenHands (the stand-in) and config."""
        return subprocess.run(
            [
                sys.executable,
                str(RUN_BATCH),
                *shlex.split(COMMAND_PART.replace("~", str(self.home))),
                *map(str, args),
            ],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def report(self, output_dir: Path, fmt: str) -> str:
        done = self.run_batch("--report", "--output-dir", output_dir, "--format", fmt)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def launches(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.launches_dir.glob("*.json"))]


def make_bench(base: Path) -> Bench:
    home = base / "home"
    root = home / "GitTaskBench"
    shutil.copytree(FIXTURE, root)
    for prompt in (root / "eval_automation" / "output" / "prompt").glob("*.md"):
        prompt.write_text(prompt.read_text(encoding="utf-8").replace("{ROOT}", str(root)), encoding="utf-8")
    wrapper = home / WRAPPER
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))} "$@"\n')
    wrapper.chmod(0o755)
    (home / "gtb-config.toml").write_text(
        "[core]\n"
        f'workspace_base = "{home / "workspace"}"\n'
        f'file_store_path = "{home / "file_store"}"\n'
        "[llm]\n"
        'model = "openai/scripted"\n'
        f'api_key = "{SECRET}"\n'
        "input_cost_per_token = 0.000001\n"
        "output_cost_per_token = 0.000002\n"
    )
    (base / "launches").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUN_BATCH", "STANDIN", "PYTHONPATH"))}
    env.update(
        {
            "HOME": str(home),
            "STANDIN_RECORD_DIR": str(base / "launches"),
            "NO_COLOR": "1",
            "PYTHONDONTWRITEBYTECODE": "1",  # the example's scripts leave no __pycache__ in the repository
        }
    )
    return Bench(home, env)


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return make_bench(tmp_path)


def records(output_dir: Path) -> list[dict[str, Any]]:
    lines = (output_dir / "batch_results.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def latest(output_dir: Path) -> dict[str, dict[str, Any]]:
    return {r["task_name"]: r for r in records(output_dir)}


def benchmark_eval(results_dir: Path) -> dict[str, tuple[bool, bool]]:
    """What `gittaskbench eval --result DIR` counts: every results.jsonl under DIR, its last line."""
    seen = {}
    for path in results_dir.rglob("results.jsonl"):
        data = json.loads(path.read_text(encoding="utf-8").splitlines()[-1])
        result = next(k for k in data if k.lower() in ("result", "results"))
        seen[path.parent.name] = (data["Process"], data[result])
    return seen


def html_rows(page: str) -> dict[str, dict[str, str]]:
    """The HTML report's task table: task -> {column heading: the cell's text (tags kept)}."""
    table = re.search(r"<table id=tasks>(.*?)</table>", page, re.S)
    assert table, "no task table in the page"
    heads = [html.unescape(h) for h in re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", table.group(1))]
    rows = {}
    for row in re.findall(r"<tr data-status[^>]*>(.*?)</tr>", table.group(1), re.S):
        cells = re.findall(r"<td(?:\s[^>]*)?>(.*?)</td>", row, re.S)
        assert len(cells) == len(heads), (heads, cells)
        named = dict(zip(heads, cells, strict=True))
        rows[html.unescape(named["task"])] = named
    return rows


def text_of(cell: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", cell))


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("run-batch: error: "), lines[0]
    return lines[0]


# --- 1 and 6: the example's first command, four tasks, every verdict -----------------------------


@dataclass
class Graded:
    bench: Bench
    done: subprocess.CompletedProcess[str]
    output_dir: Path
    reports: dict[str, str]
    page: str


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Graded:
    """The README's first command (with --html) on the four fixture tasks: TextCopy_01's agent
    copies the right text, CsvRows_01's writes a CSV with one row of the three asked for, Split_01's
    writes both parts (multi_output), NeedsPkg_01's output is fine but its test script needs a
    package that is installed nowhere."""
    b = make_bench(tmp_path_factory.mktemp("graded"))
    q = shlex.quote
    gt, inputs = b.root / "groundtruth", b.root / "queries"
    b.agent("TextCopy_01", f"cp {q(str(gt / 'TextCopy_01' / 'gt.txt'))} {q(str(b.out('TextCopy_01')))}/output.txt")
    b.agent("CsvRows_01", f"printf 'Username,Email\\nann,a@x.org\\n' > {q(str(b.out('CsvRows_01')))}/output.csv")
    split_in, split_out = q(str(inputs / "Split_01" / "input" / "Split_01_input.txt")), q(str(b.out("Split_01")))
    b.agent(
        "Split_01", f"head -1 {split_in} > {split_out}/output_01.txt && tail -1 {split_in} > {split_out}/output_02.txt"
    )
    need_in = q(str(inputs / "NeedsPkg_01" / "input" / "NeedsPkg_01_input.txt"))
    b.agent("NeedsPkg_01", f"cp {need_in} {q(str(b.out('NeedsPkg_01')))}/output.txt")
    done = b.sh(RUN, "--html")
    output_dir = output_dir_of(RUN, b.home)
    reports = {fmt: b.report(output_dir, fmt) for fmt in ("table", "markdown", "json")}
    page = (output_dir / "report.html").read_text(encoding="utf-8")
    return Graded(b, done, output_dir, reports, page)


RATES = "Measures: process 3/4 (75%), result 2/4 (50%)."


def test_readme_command_gives_the_right_verdicts(graded: Graded) -> None:
    assert graded.done.returncode == 0, graded.done.stdout + graded.done.stderr  # verdicts alone fail no run
    found = latest(graded.output_dir)
    assert {t: r["status"] for t, r in found.items()} == dict.fromkeys(found, "success")
    verdicts = {t: r["evaluation"]["verdict"] for t, r in found.items()}
    assert verdicts == {"TextCopy_01": "passed", "Split_01": "passed", "CsvRows_01": "failed", "NeedsPkg_01": "error"}
    details = {t: r["evaluation"]["details"] for t, r in found.items()}
    assert (details["CsvRows_01"]["process"], details["CsvRows_01"]["result"]) == (True, False)
    assert details["CsvRows_01"]["comments"] == "1 rows, 3 wanted"
    assert details["TextCopy_01"]["output"] == str(graded.bench.out("TextCopy_01") / "output.txt")
    assert details["Split_01"]["output"] == str(graded.bench.out("Split_01"))  # the folder: multi_output
    assert "process" not in details["NeedsPkg_01"] and found["NeedsPkg_01"]["evaluation"]["score"] is None
    assert MISSING_PACKAGE in details["NeedsPkg_01"]["comments"]
    for name in ("batch_results.jsonl", "summary.json", "report.html"):
        assert SECRET not in (graded.output_dir / name).read_text(encoding="utf-8")
    for r in found.values():  # prepare.py ran before every agent, with nothing to clear
        assert r["before_attempt"]["exit_code"] == 0 and r["before_attempt"]["reason"] is None
        assert "is empty: it did not exist" in Path(r["before_attempt"]["log"]).read_text()


def test_both_rates_in_the_summary_and_every_report(graded: Graded) -> None:
    assert RATES in graded.done.stdout
    assert (
        "Evaluation: 2 passed of 4 evaluated (50%; 50% of the selected tasks), 1 failed, 1 error" in graded.done.stdout
    )
    assert RATES in graded.reports["table"]
    assert RATES in graded.reports["markdown"]
    assert RATES in graded.page
    want = [
        {"name": "process", "kind": "rate", "true": 3, "of": 4, "value": 0.75},
        {"name": "result", "kind": "rate", "true": 2, "of": 4, "value": 0.5},
    ]
    summary = json.loads((graded.output_dir / "summary.json").read_text())
    for measures in (json.loads(graded.reports["json"])["measures"], summary["measures"]):
        assert [{k: m[k] for k in ("name", "kind", "true", "of", "value")} for m in measures] == want


def test_the_benchmarks_own_results_files(graded: Graded) -> None:
    """`gittaskbench eval --result ~/gtb-runs/run1/gittaskbench`, as the README says, reads them."""
    assert benchmark_eval(graded.output_dir / "gittaskbench") == {
        "TextCopy_01": (True, True),
        "Split_01": (True, True),
        "CsvRows_01": (True, False),
        "NeedsPkg_01": (False, False),
    }


def test_console_lines_show_verdicts(graded: Graded) -> None:
    console = [line for line in graded.done.stdout.splitlines() if line.startswith("[")]
    lines = {t: [line for line in console if f" {t} " in line] for t in latest(graded.output_dir)}
    assert all(len(found) == 1 for found in lines.values()), graded.done.stdout
    assert "verdict passed 1" in lines["TextCopy_01"][0]
    assert "verdict failed 0" in lines["CsvRows_01"][0]
    assert "verdict error" in lines["NeedsPkg_01"][0]


def test_html_shows_score_details_and_the_graders_log(graded: Graded) -> None:
    rows = html_rows(graded.page)
    assert text_of(rows["TextCopy_01"]["score"]) == "1.0"
    assert text_of(rows["CsvRows_01"]["score"]) == "0.0"
    assert text_of(rows["NeedsPkg_01"]["score"]) == ""
    assert 'process: true; result: false; comments: "1 rows, 3 wanted"' in text_of(rows["CsvRows_01"]["details"])
    assert MISSING_PACKAGE in text_of(rows["NeedsPkg_01"]["details"])
    for task, row in rows.items():
        link = re.search(r'<a href="([^"]+)">grader log</a>', row["files"])
        assert link, row["files"]
        log = (graded.output_dir / link.group(1)).resolve()  # relative to the page, in the output folder
        assert log == (graded.output_dir / "logs" / f"{task}.eval.log").resolve()
        assert f"task {task}: output folder" in log.read_text()


def why_of_the_error(graded: Graded, where: str) -> str:
    """The `why` the run's console, a report or the page gives NeedsPkg_01 (an `error` verdict)."""
    if where == "console":
        return next(line for line in graded.done.stdout.splitlines() if " NeedsPkg_01 " in line)
    if where in ("table", "markdown"):
        return next(line for line in graded.reports[where].splitlines() if "NeedsPkg_01" in line)
    if where == "json":
        task = next(t for t in json.loads(graded.reports["json"])["tasks"] if t["task_name"] == "NeedsPkg_01")
        return str(task.get("why") or task["evaluation"]["reason"])
    return text_of(html_rows(graded.page)["NeedsPkg_01"]["why"])


@pytest.mark.parametrize("where", ["console", "table", "markdown", "json", "html"])
def test_an_error_verdicts_reason_is_its_why(graded: Graded, where: str) -> None:
    why = why_of_the_error(graded, where)
    assert why and MISSING_PACKAGE in why, f"{where} says: {why}"


def test_evaluate_only_after_the_fix_grades_again_without_clearing(bench: Bench) -> None:
    """The README's advice for an `error`: fix the cause, then `... --evaluate-only --rerun` grades
    again, running no agent, and not --before-attempt (which would clear the outputs to grade)."""
    q = shlex.quote
    need_in = q(str(bench.root / "queries" / "NeedsPkg_01" / "input" / "NeedsPkg_01_input.txt"))
    bench.agent("NeedsPkg_01", f"cp {need_in} {q(str(bench.out('NeedsPkg_01')))}/output.txt")
    done = bench.sh(RUN, "--tasks", "NeedsPkg_01")
    output_dir = output_dir_of(RUN, bench.home)
    assert latest(output_dir)["NeedsPkg_01"]["evaluation"]["verdict"] == "error", done.stdout + done.stderr
    site = bench.home / "site-packages"  # the cause fixed: the package installed
    site.mkdir()
    (site / f"{MISSING_PACKAGE}.py").write_text("")
    bench.env["PYTHONPATH"] = str(site)
    launched = len(bench.launches())
    again = bench.sh(RUN, "--tasks", "NeedsPkg_01", "--evaluate-only", "--rerun")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "passed  NeedsPkg_01" in again.stdout
    assert "Measures: process 1/1 (100%), result 1/1 (100%)." in again.stdout
    assert len(bench.launches()) == launched
    assert (bench.out("NeedsPkg_01") / "output.txt").is_file()
    assert benchmark_eval(output_dir / "gittaskbench") == {"NeedsPkg_01": (True, True)}


# --- 2: a stale output never passes ---------------------------------------------------------------


def test_a_stale_output_never_passes(bench: Bench) -> None:
    """Attempt 1's agent writes the right output into the folder the prompt names; later attempts'
    agents write nothing. Without the README's --before-attempt the old file would pass them (the
    issue's problem 1); with it, prepare.py moves it away first, and the attempt fails."""
    q = shlex.quote
    output_dir = output_dir_of(RUN, bench.home)
    folder = bench.out("TextCopy_01")
    gt = bench.root / "groundtruth" / "TextCopy_01" / "gt.txt"
    bench.agent("TextCopy_01", f"cp {q(str(gt))} {q(str(folder))}/output.txt")
    first = bench.sh(RUN, "--tasks", "TextCopy_01")
    assert latest(output_dir)["TextCopy_01"]["evaluation"]["verdict"] == "passed", first.stdout + first.stderr
    assert (folder / "output.txt").read_text() == gt.read_text()  # attempt 1's output: stale from now on

    bench.agent("TextCopy_01", "true")  # the agent writes nothing
    unprepared = bench.sh(without_option(RUN, "--before-attempt"), "--tasks", "TextCopy_01", "--rerun")
    found = latest(output_dir)["TextCopy_01"]
    assert (found["attempt"], found["before_attempt"]) == (2, None), unprepared.stdout + unprepared.stderr
    assert found["evaluation"]["verdict"] == "passed"  # graded on attempt 1's file: what the hook prevents

    prepared = bench.sh(RUN, "--tasks", "TextCopy_01", "--rerun")
    found = latest(output_dir)["TextCopy_01"]
    assert found["attempt"] == 3, prepared.stdout + prepared.stderr
    assert found["evaluation"]["verdict"] == "failed"
    details = found["evaluation"]["details"]
    assert (details["process"], details["result"]) == (False, False)
    assert details["comments"].startswith(f"the agent left nothing to grade: no output file in {folder}")
    assert "verdict failed" in prepared.stdout
    assert found["before_attempt"]["exit_code"] == 0
    assert "moved to" in Path(found["before_attempt"]["log"]).read_text()
    kept = output_dir / "stale-outputs" / "TextCopy_01" / "output.txt"  # --keep-in: evidence, not deleted
    assert kept.read_text() == gt.read_text()
    assert list(folder.iterdir()) == []
    assert benchmark_eval(output_dir / "gittaskbench") == {"TextCopy_01": (False, False)}
    lines = (output_dir / "gittaskbench" / "TextCopy_01" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["attempt"] for line in lines] == [1, 2, 3]


def test_samples_each_write_and_are_graded_in_their_own_workspace(bench: Bench) -> None:
    """The README's second part: rewrite_prompts.py, then --samples with --prompt-placeholders and
    --workspace-per-task. Only sample 1's agent writes the answer; a right answer left in the
    folder the original prompt names passes nobody."""
    rewrite = bench.sh(REWRITE)
    assert rewrite.returncode == 0, rewrite.stderr
    prompts = bench.home / "gtb-prompts-ws"
    gt = bench.root / "groundtruth" / "TextCopy_01" / "gt.txt"
    bench.agent(
        "TextCopy_01",
        f"if [ {{sample}} = 1 ]; then cp {shlex.quote(str(gt))} {{workspace}}/output/output.txt; fi",
        folder=prompts,
    )
    bench.out("TextCopy_01").mkdir(parents=True)
    shutil.copy(gt, bench.out("TextCopy_01") / "output.txt")  # right, but not this run's

    done = bench.sh(RUN_SAMPLES.replace(" --command ... ", f" {COMMAND_PART} "), "--tasks", "TextCopy_01")
    assert done.returncode == 0, done.stdout + done.stderr
    output_dir = output_dir_of(RUN_SAMPLES, bench.home)
    samples = int(re.search(r"--samples (\d+)", RUN_SAMPLES).group(1))  # type: ignore[union-attr]
    found = {r["sample"]: r for r in records(output_dir)}
    assert sorted(found) == list(range(1, samples + 1))
    workspaces = {r["workspace"] for r in found.values()}
    assert len(workspaces) == samples and all(w.startswith(str(output_dir / "workspaces")) for w in workspaces)
    for sample, r in found.items():
        own = Path(r["workspace"]) / "output"
        details = r["evaluation"]["details"]
        assert details["output_source"] == "--output-dir"
        if sample == 1:
            assert r["evaluation"]["verdict"] == "passed"
            assert details["output"] == str(own / "output.txt")
        else:
            assert r["evaluation"]["verdict"] == "failed", r["evaluation"]
            assert details["process"] is False and details["output"] == str(own)
        text = (output_dir / "logs" / f"{Path(r['stdout_log']).name.removesuffix('.stdout.log')}.prompt.md").read_text()
        assert f"输出文件目录:{own}, 如果只有一个文件" in text  # what this sample's agent was told
        assert f"RUN: if [ {sample} = 1 ]; then" in text
        assert "{remote_repo_path}" in text  # the prompts' own brace text, untouched
    assert f"Measures: process 1/{samples} " in done.stdout and f"result 1/{samples} " in done.stdout
    assert (bench.out("TextCopy_01") / "output.txt").is_file()  # not the samples' folder: left alone
    argv_files = {launch["argv"][launch["argv"].index("-f") + 1] for launch in bench.launches()}
    assert all(Path(f).parent == output_dir / "logs" and f.endswith(".prompt.md") for f in argv_files)


# --- 3: a --before-attempt that fails --------------------------------------------------------------


def test_readme_hook_failing_is_an_error_before_any_agent(bench: Bench) -> None:
    """prepare.py stops an attempt whose prompt names an input that is not there (an incomplete
    checkout): an `error` record, no agent, nothing graded, the hook's reason."""
    q = shlex.quote
    (bench.root / "queries" / "TextCopy_01" / "input" / "TextCopy_01_input.txt").unlink()
    bench.out("TextCopy_01").mkdir(parents=True)
    (bench.out("TextCopy_01") / "output.txt").write_text("left by an earlier attempt\n")
    bench.agent("TextCopy_01", f"cp /dev/null {q(str(bench.out('TextCopy_01')))}/output.txt")
    done = bench.sh(RUN, "--tasks", "TextCopy_01")
    assert done.returncode == 1, done.stdout + done.stderr
    output_dir = output_dir_of(RUN, bench.home)
    r = latest(output_dir)["TextCopy_01"]
    assert r["status"] == "error" and r["evaluation"] is None
    assert r["error"].startswith("--before-attempt failed: exit code 1: prepare.py: TextCopy_01: the prompt names ")
    assert "TextCopy_01_input.txt, which does not exist" in r["error"]
    hook = r["before_attempt"]
    assert hook["exit_code"] == 1 and hook["reason"] in r["error"]
    assert Path(hook["log"]).is_file() and Path(hook["log"]).parent == output_dir / "logs"
    assert bench.launches() == []
    assert not r["total_cost"] and not r["total_input_tokens"]
    assert "--before-attempt failed" in done.stdout
    assert (bench.out("TextCopy_01") / "output.txt").read_text() == "left by an earlier attempt\n"  # checked first


HOOK = """\
import json, os, sys
with open(os.environ["HOOK_SPY"], "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd()}) + "\\n")
print("hook: looked at", sys.argv[1])
print("hook: a first complaint", file=sys.stderr)
print("hook: the input for", sys.argv[1], "is missing", file=sys.stderr)
sys.exit(int(os.environ.get("HOOK_EXIT", "3")))
"""


def test_failing_hook_gets_every_placeholder_and_its_last_stderr_line_is_the_reason(bench: Bench) -> None:
    hook = bench.home / "hook.py"
    hook.write_text(HOOK)
    bench.env["HOOK_SPY"] = str(bench.home / "hook.jsonl")
    names = ("task", "attempt", "sample", "workspace", "output_dir", "session", "experiment", "prompt", "log")
    output_dir = bench.home / "runs" / "hooked"
    done = bench.run_batch(
        "--prompt-dir",
        bench.root / "eval_automation" / "output" / "prompt",
        "--output-dir",
        output_dir,
        "--tasks",
        "TextCopy_01",
        "--workspace-per-task",
        "--before-attempt",
        f"{shlex.quote(sys.executable)} {shlex.quote(str(hook))} " + " ".join(f"{{{n}}}" for n in names),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    r = latest(output_dir)["TextCopy_01"]
    assert r["status"] == "error"
    assert r["error"].startswith("--before-attempt failed: ")
    assert r["error"].endswith("exit code 3: hook: the input for TextCopy_01 is missing")  # its last stderr line
    assert bench.launches() == []
    [seen] = [json.loads(line) for line in (bench.home / "hook.jsonl").read_text().splitlines()]
    got = dict(zip(names, seen["argv"], strict=True))
    assert got == {
        "task": "TextCopy_01",
        "attempt": "1",
        "sample": "1",
        "workspace": r["workspace"],
        "output_dir": str(output_dir),
        "session": r["session_name"],
        "experiment": r["experiment_id"],
        "prompt": str(bench.prompt("TextCopy_01")),
        "log": str(output_dir / "logs" / "TextCopy_01.stdout.log"),  # the agent's log-to-be: it never ran
    }
    assert r["workspace"] and Path(r["workspace"]).is_dir()
    assert seen["cwd"] == str(bench.home)  # the project folder: no --evaluate-cwd
    before = r["before_attempt"]
    assert before["exit_code"] == 3 and r["error"] == f"--before-attempt failed: {before['reason']}"
    assert Path(before["log"]).read_text() == "hook: looked at TextCopy_01\n"
    assert "a first complaint" in Path(before["stderr_log"]).read_text()
    assert "evaluator" not in r["error"], r["error"]  # the hook is not the evaluator


# --- 4: placeholders in the prompt text -----------------------------------------------------------

PLACEHOLDER_PROMPT = """\
Task {task}, attempt {attempt}, sample {sample}: write into {workspace}/out.
Literal: {{task}} and {{workspace}}; {remote_repo_path}; { task }; JSON {"a": {"b": [1, 2]}}, {}.
RUN: echo {task} > {workspace}/marker.txt
"""


def test_prompt_placeholders_filled_in_the_text_the_agent_gets(bench: Bench) -> None:
    prompts = bench.home / "prompts"
    prompts.mkdir()
    (prompts / "Echo_01.md").write_text(PLACEHOLDER_PROMPT)
    output_dir = bench.home / "runs" / "filled"
    done = bench.run_batch(
        "--prompt-dir", prompts, "--output-dir", output_dir, "--prompt-placeholders", "--workspace-per-task"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    r = latest(output_dir)["Echo_01"]
    [launch] = bench.launches()
    given = Path(launch["argv"][launch["argv"].index("-f") + 1])
    assert given == output_dir / "logs" / "Echo_01.prompt.md"
    workspace = r["workspace"]
    assert given.read_text() == (
        f"Task Echo_01, attempt 1, sample 1: write into {workspace}/out.\n"
        'Literal: {task} and {workspace}; {remote_repo_path}; { task }; JSON {"a": {"b": [1, 2]}}, {}.\n'
        f"RUN: echo Echo_01 > {workspace}/marker.txt\n"
    )
    assert (Path(workspace) / "marker.txt").read_text() == "Echo_01\n"  # the agent ran the filled command
    assert r["prompt_sha256"]  # the record still names the task's own prompt
    assert r["prompt_file"] == str(prompts / "Echo_01.md")
    assert (prompts / "Echo_01.md").read_text() == PLACEHOLDER_PROMPT


def test_without_the_option_the_prompt_file_itself_is_passed(bench: Bench) -> None:
    prompts = bench.home / "prompts"
    prompts.mkdir()
    (prompts / "Echo_01.md").write_text(PLACEHOLDER_PROMPT.replace("RUN: ", "NOT RUN: "))
    done = bench.run_batch("--prompt-dir", prompts, "--output-dir", bench.home / "runs" / "plain")
    assert done.returncode == 0, done.stdout + done.stderr
    [launch] = bench.launches()
    assert launch["argv"][launch["argv"].index("-f") + 1] == str(prompts / "Echo_01.md")
    assert not list((bench.home / "runs" / "plain" / "logs").glob("*.prompt.md"))


def test_workspace_in_a_prompt_without_workspaces_stops_before_anything_runs(bench: Bench) -> None:
    prompts = bench.home / "prompts"
    prompts.mkdir()
    (prompts / "Echo_01.md").write_text(PLACEHOLDER_PROMPT)
    (prompts / "Plain_01.md").write_text("Say hello.\n")
    output_dir = bench.home / "runs" / "nows"
    line = one_error_line(bench.run_batch("--prompt-dir", prompts, "--output-dir", output_dir, "--prompt-placeholders"))
    assert str(prompts / "Echo_01.md") in line and "{workspace}" in line and "--workspace-per-task" in line
    assert not output_dir.exists() and bench.launches() == []


# --- 5: the evaluator (and the hook) checked at start; where they run ------------------------------


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--evaluate", "gtb-no-such-grader --task {task}", "'gtb-no-such-grader' not found on PATH"),
        ("--evaluate", "{PY} grade.py --task {tsk}", "unknown placeholder {tsk}"),
        ("--evaluate", "{PY} grade.py --task {task} --output-dir {workspace}/output", "add --workspace-per-task"),
        ("--evaluate", "./grade.py --task {task}", "is not an executable file"),
        ("--before-attempt", "gtb-no-such-hook {task}", "'gtb-no-such-hook' not found on PATH"),
        ("--before-attempt", "{PY} prepare.py {trajectory}", "unknown placeholder {trajectory}"),
        ("--before-attempt", "{PY} prepare.py --output-dir {workspace}/output", "add --workspace-per-task"),
        ("--evaluate-cwd", "/gtb/no/such/folder", "--evaluate-cwd /gtb/no/such/folder: not a folder"),
    ],
)
def test_grader_and_hook_checked_at_start(bench: Bench, option: str, value: str, says: str) -> None:
    output_dir = bench.home / "runs" / "checked"
    args = [option, value.replace("{PY}", shlex.quote(sys.executable))]
    if option == "--evaluate-cwd":
        args += ["--evaluate", f"{shlex.quote(sys.executable)} grade.py --task {{task}}"]
    line = one_error_line(
        bench.run_batch(
            "--prompt-dir", bench.root / "eval_automation" / "output" / "prompt", "--output-dir", output_dir, *args
        )
    )
    assert says in line
    assert not output_dir.exists() and bench.launches() == []


WHERE = """\
#!{python}
import json, os, sys
print("where:", os.getcwd())
print(json.dumps({{"score": 1, "details": {{"cwd": os.getcwd(), "task": sys.argv[1]}}}}))
"""


def test_evaluate_cwd_is_where_the_evaluator_and_the_hook_run(bench: Bench) -> None:
    graders = bench.home / "graders"
    graders.mkdir()
    where = graders / "where.py"
    where.write_text(WHERE.format(python=sys.executable))
    where.chmod(0o755)
    prompt_dir = bench.root / "eval_automation" / "output" / "prompt"
    runs = bench.home / "runs"
    # From the project folder (the default), ./where.py is not there: refused at start.
    line = one_error_line(
        bench.run_batch("--prompt-dir", prompt_dir, "--output-dir", runs / "a", "--evaluate", "./where.py {task}")
    )
    assert f"looked from {bench.home}" in line
    done = bench.run_batch(
        "--prompt-dir",
        prompt_dir,
        "--output-dir",
        runs / "b",
        "--tasks",
        "TextCopy_01",
        "--evaluate-cwd",
        graders,
        "--evaluate",
        "./where.py {task}",
        "--before-attempt",
        "./where.py {task}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    r = latest(runs / "b")["TextCopy_01"]
    assert r["evaluation"]["verdict"] == "passed"
    assert r["evaluation"]["details"] == {"cwd": str(graders), "task": "TextCopy_01"}
    assert Path(r["before_attempt"]["log"]).read_text().startswith(f"where: {graders}\n")
    # Without --evaluate-cwd: the project folder.
    done = bench.run_batch(
        "--prompt-dir",
        prompt_dir,
        "--output-dir",
        runs / "c",
        "--tasks",
        "TextCopy_01",
        "--evaluate",
        f"{shlex.quote(str(where))} {{task}}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert latest(runs / "c")["TextCopy_01"]["evaluation"]["details"]["cwd"] == str(bench.home)


# --- 7: selections that select nothing ------------------------------------------------------------


@pytest.fixture
def folders(bench: Bench) -> Bench:
    """~/queries/<task>/prompt.md (prompts one level down, all named the same); ~/sel with
    Faker_01.md, Faker_02.MD and SpeechBrain_01.md; ~/upper with only Faker_02.MD."""
    for task in ("Faker_01", "Faker_02"):
        (bench.home / "queries" / task).mkdir(parents=True)
        (bench.home / "queries" / task / "prompt.md").write_text("Say hello.\n")
    (bench.home / "sel").mkdir()
    (bench.home / "upper").mkdir()
    for name in ("sel/Faker_01.md", "sel/Faker_02.MD", "sel/SpeechBrain_01.md", "upper/Faker_02.MD"):
        (bench.home / name).write_text("Say hello.\n")
    return bench


@pytest.mark.parametrize(
    ("folder", "args", "says"),
    [
        ("queries", [], ["no *.md prompt there", "one level down", "Faker_01, Faker_02", "--prompt-dir"]),
        (
            "sel",
            ["--include", "speechbrain*"],
            ["--include 'speechbrain*': matches no task", "'SpeechBrain_01'", "case"],
        ),
        ("sel", ["--tasks", "Fakr_01"], ["no prompt named 'Fakr_01'", "did you mean 'Faker_01'?"]),
        ("upper", [], ["no *.md prompt there", "Faker_02.MD", "only names ending in .md are"]),
    ],
)
def test_a_selection_of_nothing_is_a_usage_error_with_a_hint(
    folders: Bench, folder: str, args: list[str], says: list[str]
) -> None:
    output_dir = folders.home / "runs" / "none"
    line = one_error_line(folders.run_batch("--prompt-dir", folders.home / folder, "--output-dir", output_dir, *args))
    for part in says:
        assert part in line
    assert not output_dir.exists() and folders.launches() == []


def test_tasks_named_with_md_run_and_an_upper_case_md_is_named(folders: Bench) -> None:
    output_dir = folders.home / "runs" / "md"
    done = folders.run_batch("--prompt-dir", folders.home / "sel", "--output-dir", output_dir, "--tasks", "Faker_01.md")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["task_name"] for r in records(output_dir)] == ["Faker_01"]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert any("Faker_02.MD" in w and ("not a task" in w or "not tasks" in w) for w in warnings), done.stderr
    assert len(folders.launches()) == 1


# --- 8: a huge trajectory in the HTML report ------------------------------------------------------


def test_a_huge_trajectory_is_shown_by_its_first_and_last_steps(bench: Bench) -> None:
    prompts = bench.home / "prompts"
    prompts.mkdir()
    (prompts / "Big_01.md").write_text("Work long.\nSTANDIN: big-trajectory-mb 1\nRUN: echo the-last-command\n")
    (prompts / "Small_01.md").write_text("Say hello.\n")
    output_dir = bench.home / "runs" / "big"
    done = bench.run_batch("--prompt-dir", prompts, "--output-dir", output_dir, "--html")
    assert done.returncode == 0, done.stdout + done.stderr
    page = (output_dir / "report.html").read_text(encoding="utf-8")
    shown = {}
    for name in ("Big_01", "Small_01"):
        match = re.search(rf"<details class=traj[^>]*><summary>{name} [^<]*</summary>(.*?)</ol></details>", page, re.S)
        assert match, f"no trajectory for {name}"
        shown[name] = match.group(1)
    events = {n: json.loads(Path(r["trajectory_path"]).read_text()) for n, r in latest(output_dir).items()}
    assert len(events["Big_01"]) > 20 and Path(latest(output_dir)["Big_01"]["trajectory_path"]).stat().st_size > 1 << 20

    big = shown["Big_01"]
    gap = re.search(r"<li class=gap>… (\d+) steps not shown here", big)
    assert gap, big[:2000]
    items = re.findall(r"<li>", big)
    assert len(items) + int(gap.group(1)) == len(events["Big_01"])  # every step shown or counted
    assert 0 < big.index("filler") < gap.start()  # the first steps: the stand-in's fillers come first
    tail = big[gap.end() :]
    assert "echo the-last-command" in tail and "Done." in tail  # the last steps: the command, the finish
    assert "too big to show" not in big
    assert len(big) < 400_000

    small = shown["Small_01"]
    assert "class=gap" not in small and len(re.findall(r"<li>", small)) == len(events["Small_01"])


def test_a_trajectory_file_too_big_to_read_whole_still_shows_its_ends(bench: Bench) -> None:
    """Past the 32 MiB a page reads of one file, the issue still wants the first and the last steps,
    not only "open the file"."""
    prompts = bench.home / "prompts"
    prompts.mkdir()
    (prompts / "Huge_01.md").write_text("Work long.\nSTANDIN: big-trajectory-mb 40\nRUN: echo the-last-command\n")
    output_dir = bench.home / "runs" / "huge"
    done = bench.run_batch("--prompt-dir", prompts, "--output-dir", output_dir, "--html")
    assert done.returncode == 0, done.stdout + done.stderr
    assert Path(latest(output_dir)["Huge_01"]["trajectory_path"]).stat().st_size > 40 << 20
    page = (output_dir / "report.html").read_text(encoding="utf-8")
    # Up to the next trajectory: a step's long output folds into a <details> of its own inside.
    match = re.search(
        r"<details class=traj[^>]*><summary>Huge_01 [^<]*</summary>(.*?)(?=<details class=traj|<script>)", page, re.S
    )
    assert match and "final state <b>FINISHED</b>" in match.group(1)
    assert "too big to show here" not in match.group(1), text_of(match.group(1))
    assert "steps not shown here" in match.group(1) and "the-last-command" in match.group(1)
