"""examples/gittaskbench: the grading adapter (grade.py), the before-attempt hook (prepare.py) and
the prompt rewriter (rewrite_prompts.py), run directly (no run_batch) against a copy of the
GitTaskBench-shaped checkout in tests/fixtures/gittaskbench."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "gittaskbench"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "gittaskbench"


def _load(name: str) -> Any:
    """The example's script as a module (prepare.py and rewrite_prompts.py import grade.py by
    putting their folder first on sys.path, which is put back as it was)."""
    spec = importlib.util.spec_from_file_location(f"gittaskbench_{name}", EXAMPLE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    return module


grade = _load("grade")
SCRIPTS = {"grade.py": grade, "prepare.py": _load("prepare"), "rewrite_prompts.py": _load("rewrite_prompts")}


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run(script: str, *args: str | Path, cwd: Path | None = None) -> Ran:
    """The script's main() in this process (it starts the test script, as from the command line),
    with what it prints captured; `run_cli` starts it as its own process."""
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = SCRIPTS[script].main([str(a) for a in args])
            except SystemExit as e:  # argparse: --help, usage errors
                code = e.code if isinstance(e.code, int) else 2
    finally:
        os.chdir(before)
    return Ran(code, out.getvalue(), err.getvalue())


def run_cli(script: str, *args: str | Path, cwd: Path | None = None) -> Ran:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / script), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=60
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the fixture checkout whose prompts name absolute paths inside the copy."""
    copy = tmp_path / "GitTaskBench"
    shutil.copytree(FIXTURE, copy)
    for prompt in (copy / "eval_automation" / "output" / "prompt").glob("*.md"):
        prompt.write_text(prompt.read_text(encoding="utf-8").replace("{ROOT}", str(copy)), encoding="utf-8")
    return copy


def prompt(root: Path, task: str) -> Path:
    return root / "eval_automation" / "output" / "prompt" / f"{task}.md"


def out_dir(root: Path, task: str) -> Path:
    """The folder the task's prompt names."""
    return root / "eval_automation" / "output" / task


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run_grade(root: Path, task: str, *extra: str | Path, with_prompt: bool = True) -> Ran:
    args: list[str | Path] = ["--root", root, "--task", task]
    if with_prompt:
        args += ["--prompt", prompt(root, task)]
    return run("grade.py", *args, *extra)


def last_json(proc: Ran) -> dict[str, Any]:
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr
    data = json.loads(lines[-1])
    assert isinstance(data, dict)
    return data


def benchmark_eval(results_dir: Path) -> dict[str, tuple[bool, bool]]:
    """What `gittaskbench eval --result DIR` counts, read the way it reads: every file named
    results.jsonl under DIR, its last line only, the task from the parent folder's name."""
    seen: dict[str, tuple[bool, bool]] = {}
    for dirpath, _dirs, files in os.walk(results_dir):
        if "results.jsonl" in files:
            lines = (Path(dirpath) / "results.jsonl").read_text(encoding="utf-8").splitlines()
            data = json.loads(lines[-1])
            result_key = next(k for k in data if k.lower() in ("result", "results"))
            seen[Path(dirpath).name] = (data["Process"], data[result_key])
    return seen


# --- grade.py: verdicts ---------------------------------------------------------------------------


def test_pass_with_the_folder_the_prompt_names(root: Path) -> None:
    write(out_dir(root, "TextCopy_01") / "output.txt", "hello, benchmark\n")
    proc = run_grade(root, "TextCopy_01")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = last_json(proc)
    assert data["score"] == 1.0
    details = data["details"]
    assert details["process"] is True and details["result"] is True
    assert details["comments"] == "the text matches the ground truth"
    assert details["output"] == str(out_dir(root, "TextCopy_01") / "output.txt")
    assert details["output_source"] == "the prompt"
    assert "TextCopy_01: Process True, Result True" in proc.stdout  # the script's own output is kept


def test_fail_when_the_script_says_result_false(root: Path) -> None:
    write(out_dir(root, "TextCopy_01") / "output.txt", "something else\n")
    proc = run_grade(root, "TextCopy_01")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = last_json(proc)
    assert data["score"] == 0.0
    assert data["details"]["process"] is True and data["details"]["result"] is False
    assert "differs" in data["details"]["comments"]


@pytest.mark.parametrize("state", ["no folder", "empty folder", "no output file", "empty output file"])
def test_nothing_written_is_a_fail_with_process_false(root: Path, state: str) -> None:
    folder = out_dir(root, "TextCopy_01")
    if state != "no folder":
        folder.mkdir(parents=True)
    if state == "no output file":
        write(folder / "notes.txt", "hello, benchmark\n")
    if state == "empty output file":
        write(folder / "output.txt", "")
    results = root.parent / "gtb-results"
    proc = run_grade(root, "TextCopy_01", "--results-dir", results)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    details = last_json(proc)["details"]
    assert details["process"] is False and details["result"] is False
    assert details["comments"].startswith("the agent left nothing to grade")
    assert str(folder) in details["comments"]
    assert benchmark_eval(results) == {"TextCopy_01": (False, False)}


def test_missing_package_is_an_error_that_names_it(root: Path) -> None:
    write(out_dir(root, "NeedsPkg_01") / "output.txt", "anything\n")
    results = root.parent / "gtb-results"
    proc = run_grade(root, "NeedsPkg_01", "--results-dir", results)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    data = last_json(proc)
    assert "score" not in data and "process" not in data["details"]  # no verdict, no measure
    assert "gittaskbench_fixture_absent_package" in data["details"]["comments"]
    assert "cannot import" in data["details"]["comments"]
    assert "ModuleNotFoundError" in proc.stderr  # the script's traceback reaches the grader's log
    line = json.loads((results / "NeedsPkg_01" / "results.jsonl").read_text(encoding="utf-8"))
    assert (line["Process"], line["Result"], line["verdict"]) == (False, False, "error")
    assert line["comments"].startswith("grading error: ")


def test_crashed_script_is_an_error(root: Path) -> None:
    write(root / "test_scripts" / "TextCopy_01" / "test_script.py", "raise RuntimeError('the script broke')\n")
    write(out_dir(root, "TextCopy_01") / "output.txt", "hello, benchmark\n")
    proc = run_grade(root, "TextCopy_01")
    assert proc.returncode == 2
    comments = last_json(proc)["details"]["comments"]
    assert comments == "the test script crashed (exit status 1): RuntimeError: the script broke"


def test_script_that_writes_no_line_is_an_error(root: Path) -> None:
    write(root / "test_scripts" / "TextCopy_01" / "test_script.py", "print('done')\n")
    write(out_dir(root, "TextCopy_01") / "output.txt", "hello, benchmark\n")
    proc = run_grade(root, "TextCopy_01")
    assert proc.returncode == 2
    assert "wrote no line" in last_json(proc)["details"]["comments"]


def test_script_over_its_timeout_is_killed_and_an_error(root: Path) -> None:
    write(root / "test_scripts" / "TextCopy_01" / "test_script.py", "import time\ntime.sleep(30)\n")
    write(out_dir(root, "TextCopy_01") / "output.txt", "hello, benchmark\n")
    proc = run_grade(root, "TextCopy_01", "--timeout", "0.5")
    assert proc.returncode == 2
    assert "--timeout 0.5 s" in last_json(proc)["details"]["comments"]


def test_an_earlier_line_in_the_benchmarks_own_results_file_never_counts(root: Path) -> None:
    # The config's results file holds a passing line from long ago; the script's fresh file is
    # what is read, so this attempt's wrong output fails.
    write(root / "test_results" / "TextCopy_01" / "results.jsonl", json.dumps({"Process": True, "Result": True}) + "\n")
    write(out_dir(root, "TextCopy_01") / "output.txt", "wrong\n")
    assert run_grade(root, "TextCopy_01").returncode == 1


def test_unknown_task_and_no_checkout_are_errors(root: Path, tmp_path: Path) -> None:
    proc = run("grade.py", "--root", root, "--task", "Nope_01")
    assert proc.returncode == 2
    assert "unknown task 'Nope_01'" in last_json(proc)["details"]["comments"]
    proc = run("grade.py", "--task", "TextCopy_01", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no GitTaskBench checkout" in last_json(proc)["details"]["comments"]


def test_root_found_from_the_working_folder_and_task_with_md(root: Path) -> None:
    write(out_dir(root, "TextCopy_01") / "output.txt", "hello, benchmark\n")
    proc = run_cli(
        "grade.py", "--task", "TextCopy_01.md", "--prompt", prompt(root, "TextCopy_01"), cwd=root / "queries"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_missing_ground_truth_is_an_error_not_the_agents_fail(root: Path) -> None:
    (root / "groundtruth" / "TextCopy_01" / "gt.txt").unlink()
    write(out_dir(root, "TextCopy_01") / "output.txt", "hello, benchmark\n")
    proc = run_grade(root, "TextCopy_01")
    assert proc.returncode == 2
    assert "ground truth" in last_json(proc)["details"]["comments"]


# --- grade.py: which folder, which file -----------------------------------------------------------


def test_output_dir_beats_the_prompts_folder(root: Path, tmp_path: Path) -> None:
    write(out_dir(root, "TextCopy_01") / "output.txt", "hello, benchmark\n")  # would pass
    own = write(tmp_path / "ws" / "output" / "output.txt", "wrong\n").parent
    proc = run_grade(root, "TextCopy_01", "--output-dir", own)
    assert proc.returncode == 1
    assert last_json(proc)["details"]["output_source"] == "--output-dir"
    write(own / "output.txt", "hello, benchmark\n")
    shutil.rmtree(out_dir(root, "TextCopy_01"))
    assert run_grade(root, "TextCopy_01", "--output-dir", own).returncode == 0


def test_without_prompt_or_output_dir_the_task_info_folder(root: Path) -> None:
    write(out_dir(root, "TextCopy_01") / "output.txt", "hello, benchmark\n")  # not where task_info points
    proc = run_grade(root, "TextCopy_01", with_prompt=False)
    assert proc.returncode == 1
    details = last_json(proc)["details"]
    assert details["output_source"] == "task_info.yaml"
    assert str(root / "output" / "TextCopy_01") in details["comments"]
    write(root / "output" / "TextCopy_01" / "output.txt", "hello, benchmark\n")
    assert run_grade(root, "TextCopy_01", with_prompt=False).returncode == 0


def test_multi_output_gets_the_folder(root: Path) -> None:
    folder = out_dir(root, "Split_01")
    write(folder / "output_01.txt", "first half\n")
    proc = run_grade(root, "Split_01")
    assert proc.returncode == 1
    assert last_json(proc)["details"]["comments"] == "missing: output_02.txt"
    write(folder / "output_02.txt", "second half\n")
    proc = run_grade(root, "Split_01")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert last_json(proc)["details"]["output"] == str(folder)


def test_parameters_are_passed_and_results_spelling_is_read(root: Path) -> None:
    # CsvRows_01 has no ground truth, `parameters: rows: 3, column: 'Email'`, and writes `Results`.
    write(out_dir(root, "CsvRows_01") / "output.csv", "Username,Email\na,a@x.org\nb,b@x.org\nc,c@x.org\n")
    proc = run_grade(root, "CsvRows_01")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--rows 3 --column Email" in proc.stdout
    assert "--groundtruth" not in proc.stdout
    write(out_dir(root, "CsvRows_01") / "output.csv", "Username,Email\na,a@x.org\n")
    assert run_grade(root, "CsvRows_01").returncode == 1


def test_pick_output_follows_the_benchmark(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    assert grade.pick_output(folder, False)[0] is None
    write(folder / "output_02.txt", "b")
    write(folder / "output_01.txt", "a")
    assert grade.pick_output(folder, False)[0] == folder / "output_01.txt"  # by name, not disk order
    write(folder / "output.csv", "x")
    assert grade.pick_output(folder, False)[0] == folder / "output.csv"  # output.* first
    assert grade.pick_output(folder, True)[0] == folder
    (folder / "output.csv").write_text("")
    write(folder / "output.py", "print()")
    picked, why = grade.pick_output(folder, False)
    assert picked is None and "output.csv, output.py" in why  # the output.* tier has nothing usable
    nested = tmp_path / "nested"
    write(nested / "output_files" / "result.wav", "w")
    assert grade.pick_output(nested, False)[0] == nested / "output_files" / "result.wav"


# --- grade.py: the benchmark's results file -------------------------------------------------------


def test_results_line_shape_and_what_gittaskbench_eval_reads(root: Path) -> None:
    results = root.parent / "gtb-results"
    write(out_dir(root, "TextCopy_01") / "output.txt", "hello, benchmark\n")
    assert run_grade(root, "TextCopy_01", "--results-dir", results, "--attempt", "1", "--sample", "2").returncode == 0
    write(out_dir(root, "CsvRows_01") / "output.csv", "Username\n")
    assert run_grade(root, "CsvRows_01", "--results-dir", results, "--attempt", "1").returncode == 1
    line = json.loads((results / "TextCopy_01" / "results.jsonl").read_text(encoding="utf-8"))
    assert list(line) == [
        "Process",
        "Result",
        "TimePoint",
        "comments",
        "taskid",
        "verdict",
        "output",
        "attempt",
        "sample",
        "graded_by",
    ]
    assert line["Process"] is True and line["Result"] is True and line["verdict"] == "passed"
    assert (line["attempt"], line["sample"], line["taskid"]) == (1, 2, "TextCopy_01")
    assert line["TimePoint"][:4].isdigit()
    csv_line = json.loads((results / "CsvRows_01" / "results.jsonl").read_text(encoding="utf-8"))
    assert "Result" in csv_line and "Results" not in csv_line  # written in the canonical spelling
    assert benchmark_eval(results) == {"TextCopy_01": (True, True), "CsvRows_01": (True, False)}
    # A second attempt appends; the last line (this attempt's) is the one eval reads.
    (out_dir(root, "TextCopy_01") / "output.txt").write_text("wrong\n", encoding="utf-8")
    assert run_grade(root, "TextCopy_01", "--results-dir", results, "--attempt", "2").returncode == 1
    assert len((results / "TextCopy_01" / "results.jsonl").read_text(encoding="utf-8").splitlines()) == 2
    assert benchmark_eval(results)["TextCopy_01"] == (True, False)


def test_results_line_after_a_torn_line_starts_a_new_line(root: Path) -> None:
    results = root.parent / "gtb-results"
    write(results / "TextCopy_01" / "results.jsonl", '{"Process": tr')
    write(out_dir(root, "TextCopy_01") / "output.txt", "hello, benchmark\n")
    assert run_grade(root, "TextCopy_01", "--results-dir", results).returncode == 0
    assert benchmark_eval(results) == {"TextCopy_01": (True, True)}


# --- prepare.py -----------------------------------------------------------------------------------


def test_stale_output_cleared_by_prepare_is_then_a_fail(root: Path) -> None:
    folder = out_dir(root, "TextCopy_01")
    write(folder / "output.txt", "hello, benchmark\n")  # attempt 1's output: it passed
    assert run_grade(root, "TextCopy_01").returncode == 0
    # Attempt 2's agent writes nothing. Graded as it is, the old file would pass again:
    assert run_grade(root, "TextCopy_01").returncode == 0
    # With the hook before attempt 2, it fails, and attempt 1's file is kept as evidence.
    keep = root.parent / "batch_output" / "stale-outputs"
    hook = run_cli("prepare.py", "--root", root, "--task", "TextCopy_01", "--prompt", prompt(root, "TextCopy_01"),
                   "--keep-in", keep)  # fmt: skip
    assert hook.returncode == 0, hook.stderr
    assert "moved to" in hook.stdout and hook.stderr == ""
    assert folder.is_dir() and not any(folder.iterdir())
    assert (keep / "TextCopy_01" / "output.txt").read_text(encoding="utf-8") == "hello, benchmark\n"
    proc = run_grade(root, "TextCopy_01")
    assert proc.returncode == 1
    assert last_json(proc)["details"]["process"] is False
    # A third attempt's leftovers go beside the second's, never over them.
    write(folder / "output.txt", "x")
    assert run("prepare.py", "--root", root, "--task", "TextCopy_01", "--prompt", prompt(root, "TextCopy_01"),
               "--keep-in", keep).returncode == 0  # fmt: skip
    assert (keep / "TextCopy_01.2" / "output.txt").read_text(encoding="utf-8") == "x"


def test_prepare_without_keep_in_deletes_and_creates_the_folder(root: Path, tmp_path: Path) -> None:
    folder = out_dir(root, "Split_01")
    write(folder / "output_01.txt", "first half\n")
    write(folder / "sub" / "deep.txt", "x")
    hook = run("prepare.py", "--root", root, "--task", "Split_01", "--prompt", prompt(root, "Split_01"))
    assert hook.returncode == 0, hook.stderr
    assert "deleted" in hook.stdout
    assert folder.is_dir() and not any(folder.iterdir())
    own = tmp_path / "ws" / "output"  # --output-dir: a folder that does not exist yet is created
    hook = run("prepare.py", "--root", root, "--task", "Split_01", "--output-dir", own)
    assert hook.returncode == 0, hook.stderr
    assert own.is_dir()


@pytest.mark.parametrize("where", ["root", "checkout folder", "above the root", "holds the prompt"])
def test_prepare_refuses_to_clear_what_it_must_not(root: Path, where: str) -> None:
    target = {
        "root": root,
        "checkout folder": root / "queries" / "TextCopy_01",
        "above the root": root.parent,
        "holds the prompt": root / "eval_automation" / "output",
    }[where]
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    args = ["--root", root, "--task", "TextCopy_01", "--prompt", prompt(root, "TextCopy_01"), "--output-dir", target]
    hook = run("prepare.py", *args)
    assert hook.returncode == 1
    lines = hook.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare.py: TextCopy_01: refusing to clear")
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_prepare_stops_on_a_missing_or_lfs_input(root: Path) -> None:
    folder = out_dir(root, "TextCopy_01")
    write(folder / "output.txt", "old\n")
    source = root / "queries" / "TextCopy_01" / "input" / "TextCopy_01_input.txt"
    source.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 5\n", encoding="utf-8")
    hook = run("prepare.py", "--root", root, "--task", "TextCopy_01", "--prompt", prompt(root, "TextCopy_01"))
    assert hook.returncode == 1
    assert "Git LFS pointer" in hook.stderr
    assert (folder / "output.txt").exists()  # checked before anything is moved
    source.unlink()
    hook = run("prepare.py", "--root", root, "--task", "TextCopy_01", "--prompt", prompt(root, "TextCopy_01"))
    assert hook.returncode == 1
    assert f"the prompt names {source}, which does not exist" in hook.stderr
    args = ["--root", root, "--task", "TextCopy_01", "--prompt", prompt(root, "TextCopy_01"), "--no-input-check"]
    assert run("prepare.py", *args).returncode == 0


def test_prepare_unknown_task_is_one_line(root: Path) -> None:
    hook = run("prepare.py", "--root", root, "--task", "Nope_01")
    assert hook.returncode == 1
    assert hook.stderr.count("\n") == 1 and "unknown task" in hook.stderr


# --- the prompt: reading and rewriting ------------------------------------------------------------


def test_prompt_output_folder_in_both_wordings() -> None:
    new = "输出文件目录:/d/GitTaskBench/eval_automation/output/Faker_01, 如果只有一个文件，就以 `output.xxx` 命名; ..."
    old = "输出文件目录:/d/x/Split_01, 如果只有一个文件，就以 `output` 命名; 如果存在多个以 `output_01`开始命名。"
    assert grade.prompt_output_folder("## 文件路径\n" + new + "\n") == "/d/GitTaskBench/eval_automation/output/Faker_01"
    assert grade.prompt_output_folder(old) == "/d/x/Split_01"
    assert grade.prompt_output_folder("输出文件目录： `/d/y/T_01`，如果只有一个文件") == "/d/y/T_01"
    assert grade.prompt_output_folder("输出文件目录:/d/z/T_02") == "/d/z/T_02"
    assert grade.prompt_output_folder("no such line") is None


def test_unfilled_placeholder_in_the_prompt_says_use_output_dir(root: Path) -> None:
    text = prompt(root, "TextCopy_01").read_text(encoding="utf-8")
    folder = str(out_dir(root, "TextCopy_01"))
    p = write(root.parent / "p" / "TextCopy_01.md", text.replace(folder, "{workspace}/output"))
    proc = run("grade.py", "--root", root, "--task", "TextCopy_01", "--prompt", p)
    assert proc.returncode == 2
    assert "--output-dir" in last_json(proc)["details"]["comments"]


def test_rewrite_prompts(root: Path, tmp_path: Path) -> None:
    src = root / "eval_automation" / "output" / "prompt"
    literal = prompt(root, "TextCopy_01")
    literal.write_text(literal.read_text(encoding="utf-8") + "\n保留 {task} 与 {{sample}}。\n", encoding="utf-8")
    dest = tmp_path / "prompts-ws"
    proc = run("rewrite_prompts.py", src, dest)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in src.glob("*.md"))
    text = (dest / "TextCopy_01.md").read_text(encoding="utf-8")
    assert "输出文件目录:{workspace}/output, 如果只有一个文件，就以 `output.xxx` 命名" in text
    assert str(out_dir(root, "TextCopy_01")) not in text
    assert "{remote_repo_path}" in text  # other brace text stays as it is
    assert "保留 {{task}} 与 {{sample}}。" in text  # a literal placeholder name is escaped, once
    assert f"文件路径 (绝对): {root}/queries/TextCopy_01/input/TextCopy_01_input.txt" in text
    original = src / "TextCopy_01.md"
    assert original.read_text(encoding="utf-8").count(str(out_dir(root, "TextCopy_01"))) == 1  # untouched


def test_a_folder_per_attempt_with_rewritten_prompts(root: Path, tmp_path: Path) -> None:
    """The samples set-up: rewritten prompts, the hook and the grader on {workspace}/output."""
    dest = tmp_path / "prompts-ws"
    assert run("rewrite_prompts.py", root / "eval_automation" / "output" / "prompt", dest).returncode == 0
    rewritten = dest / "TextCopy_01.md"
    write(out_dir(root, "TextCopy_01") / "output.txt", "hello, benchmark\n")  # the fixed folder: not used
    for sample, text in ((1, "hello, benchmark\n"), (2, "wrong\n")):
        own = tmp_path / "workspaces" / f"TextCopy_01.sample-{sample}" / "output"
        common = ["--root", root, "--task", "TextCopy_01", "--prompt", rewritten, "--output-dir", own]
        hook = run("prepare.py", *common)
        assert hook.returncode == 0, hook.stderr
        assert own.is_dir() and (out_dir(root, "TextCopy_01") / "output.txt").exists()
        assert run("grade.py", *common).returncode == 1  # the agent wrote nothing yet
        write(own / "output.txt", text)
        assert run("grade.py", *common).returncode == (0 if sample == 1 else 1)
    # The prompt as run_batch fills it in (logs/<stem>.prompt.md) names the attempt's folder.
    filled = write(tmp_path / "logs" / "TextCopy_01.prompt.md", rewritten.read_text(encoding="utf-8").replace(
        "{workspace}", str(tmp_path / "workspaces" / "TextCopy_01.sample-1")))  # fmt: skip
    proc = run("grade.py", "--root", root, "--task", "TextCopy_01", "--prompt", filled)
    assert proc.returncode == 0, proc.stdout
    assert last_json(proc)["details"]["output"].endswith("TextCopy_01.sample-1/output/output.txt")


def test_rewrite_prompts_writes_nothing_when_a_prompt_names_no_folder(root: Path, tmp_path: Path) -> None:
    src = root / "eval_automation" / "output" / "prompt"
    write(src / "Odd_01.md", "## 任务描述\nno output line\n")
    proc = run("rewrite_prompts.py", src, tmp_path / "dest")
    assert proc.returncode == 1
    assert "Odd_01.md: no 输出文件目录: line" in proc.stderr
    assert not (tmp_path / "dest").exists()


# --- task_info.yaml -------------------------------------------------------------------------------


def test_task_info_subset_parser() -> None:
    text = (
        "taskid: Stegano_01\nresult: test_results/Stegano_01/results.jsonl\noutput_dir: output/Stegano_01/\n"
        "groundtruth: groundtruth/Stegano_01/gt.png  # a comment\ntest_script: test_scripts/Stegano_01/test_script.py\n"
        "multi_output: false\nparameters:\n watermark: 'stegano'\n ciede-thresh: 2.0\n niqe: 7\n  "
    )
    assert grade.parse_task_info_text(text) == {
        "taskid": "Stegano_01",
        "result": "test_results/Stegano_01/results.jsonl",
        "output_dir": "output/Stegano_01/",
        "groundtruth": "groundtruth/Stegano_01/gt.png",
        "test_script": "test_scripts/Stegano_01/test_script.py",
        "multi_output": False,
        "parameters": {"watermark": "stegano", "ciede-thresh": 2.0, "niqe": 7},
    }
    assert grade.parse_task_info_text("multi_output: true\nparameters:\n\n") == {
        "multi_output": True,
        "parameters": None,
    }
    assert grade.parse_task_info_text('a: "x\\"y"\nb: it\'s\n') == {"a": 'x"y', "b": "it's"}
    for bad in ("- a\n", "a:\n  b:\n    c: 1\n", "  a: 1\n", "a: [1, 2]\n"):
        with pytest.raises(ValueError):
            grade.parse_task_info_text(bad)


def test_fixture_task_infos_parse_as_pyyaml_would() -> None:
    yaml = pytest.importorskip("yaml")
    for config in sorted(FIXTURE.glob("config/*/task_info.yaml")):
        text = config.read_text(encoding="utf-8")
        assert grade.parse_task_info_text(text) == yaml.safe_load(text), config


def test_help_documents_every_flag() -> None:
    for script, flags in (
        ("grade.py", ["--task", "--root", "--prompt", "--output-dir", "--results-dir", "--python", "--timeout"]),
        ("prepare.py", ["--task", "--root", "--prompt", "--output-dir", "--keep-in", "--no-input-check"]),
        ("rewrite_prompts.py", ["--output-dir", "SRC", "DEST"]),
    ):
        proc = run_cli(script, "--help")
        assert proc.returncode == 0
        for flag in flags:
            assert flag in proc.stdout, (script, flag)
