#!/usr/bin/env python3
"""Grade one GitTaskBench attempt for `run-batch --evaluate`: the task's own test script, run on
the output the attempt wrote, with a verdict that means what it says.

    grade.py --task TASK [--root ROOT] [--prompt PROMPT | --output-dir DIR]
             [--results-dir DIR] [--attempt N] [--sample N] [--python PY] [--timeout SECONDS]

run_batch fills these in, e.g.
    --evaluate 'python grade.py --root ~/GitTaskBench --task {task} --prompt {prompt}
                --attempt {attempt} --sample {sample} --results-dir {output_dir}/gittaskbench'

Which output folder is graded, first that applies:
  1. --output-dir DIR (e.g. the attempt's own `{workspace}/output`);
  2. the folder the prompt names on its `输出文件目录:` line (--prompt);
  3. `output_dir` of config/TASK/task_info.yaml (what `gittaskbench grade` uses by default).
Which file in it, as `gittaskbench grade` picks it: the files named `output.*`, else those named
`output*`, else everything in sub-folders named `output*`; a multi_output task is given the folder
itself, any other task the first (by name) of those that is a non-empty file not ending in `.py`.

The test script runs as the benchmark runs it (`PY test_script.py --output OUT --result FILE
[--groundtruth GT] [--KEY VALUE for every task_info parameter]`), in ROOT, with this interpreter
(or --python), a time limit, and a FRESH result file, so no line an earlier grading appended can
count. Its line's `Process` (the output was usable: GitTaskBench's execution completion) and
`Result` (it met the task's bar: the task pass) make the verdict.

Exit status and the last stdout line (JSON):
  0  passed: Process and Result true         {"score": 1.0, "details": {"process": true, "result": true, ...}}
  1  failed: the script ran, Process or Result false; or the agent left no output folder or no
     output file in it (Process false: the agent wrote nothing, so the attempt fails)
                                             {"score": 0.0, "details": {"process": false, "result": false, ...}}
  2  error, no verdict: unknown task, no GitTaskBench checkout, missing test script or ground
     truth, the script crashed, needs a package PY cannot import (named), ran over --timeout, or
     wrote no readable line                  {"details": {"comments": "why"}}
details also holds `comments` (the script's), `output` (what was graded) and `output_source`.

--results-dir DIR appends the benchmark's own line, {"Process", "Result", "TimePoint", "comments"}
plus `taskid`, `verdict`, `output`, `attempt`, `sample`, `graded_by`, to DIR/TASK/results.jsonl:
the layout `gittaskbench eval --result DIR` reads (the last line of each TASK/results.jsonl). A
grading error appends Process and Result false with the reason, as `gittaskbench grade` does for a
crashed script, so the last line is always the latest grading.

Standard library only (PyYAML is used for task_info.yaml when importable); Python 3.11+.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PASSED, FAILED, ERROR = 0, 1, 2
VERDICTS = {PASSED: "passed", FAILED: "failed", ERROR: "error"}
OUTPUT_LABEL = "输出文件目录"
REPOSITORY_LABEL = "仓库路径 (绝对)"
INPUT_LABEL = "文件路径 (绝对)"
# `输出文件目录:<folder>, 如果只有一个文件...`: the folder ends at the comma before the naming rule.
_OUTPUT_LINE = re.compile(OUTPUT_LABEL + r"\s*[:：]\s*")
_RULE_START = re.compile(r"\s*[,，]\s*如果")
_FIELD_END = re.compile(r"\s*[,，;；]")
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([^']+)'")
# Import names whose pip package is called something else (the ones GitTaskBench's scripts use).
PIP_NAMES = {
    "cv2": "opencv-python",
    "PIL": "pillow",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "yaml": "PyYAML",
    "clip": "clip (https://github.com/openai/CLIP)",
}
COMMENTS_IN_DETAILS = 2000
TEXT_ECHOED = 20000


class GradeError(Exception):
    """No verdict is possible (exit 2); the message says why."""


# --- task_info.yaml -------------------------------------------------------------------------------


def _unquote_double(body: str) -> str:
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "/": "/"}
    out: list[str] = []
    chars = iter(body)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append(escapes.get(nxt, "\\" + nxt))
        else:
            out.append(char)
    return "".join(out)


def yaml_scalar(text: str) -> Any:
    """One scalar of the small YAML subset task_info.yaml uses, valued as PyYAML would."""
    text = text.strip()
    if text[:1] in ("'", '"'):
        quote = text[0]
        end = text.rfind(quote)
        if end == 0:
            raise ValueError(f"unterminated quoted value {text}")
        rest = text[end + 1 :].strip()
        if rest and not rest.startswith("#"):
            raise ValueError(f"text after a quoted value: {text}")
        body = text[1:end]
        return body.replace("''", "'") if quote == "'" else _unquote_double(body)
    text = re.split(r"\s+#", text, maxsplit=1)[0].strip()
    lowered = text.lower()
    if text in ("", "~") or lowered == "null":
        return None
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?", text):
        return float(text)
    if text[:1] in ("[", "{", "&", "*", "!", "|", ">"):
        raise ValueError(f"unsupported YAML value: {text}")
    return text


def parse_task_info_text(text: str) -> dict[str, Any]:
    """task_info.yaml's subset of YAML: `key: scalar` lines, and one level of indented `key:
    scalar` lines under a key with no value (`parameters:`). Anything else is a ValueError."""
    data: dict[str, Any] = {}
    parent: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ValueError(f"line {number}: a tab in the indentation")
        key, colon, value = stripped.partition(":")
        if not colon or not key.strip() or stripped.startswith("- ") or (value and not value[0].isspace()):
            raise ValueError(f"line {number}: not a `key: value` line: {stripped}")
        key = yaml_scalar(key)
        if not isinstance(key, str):
            key = str(key)
        if raw[0].isspace():
            if parent is None:
                raise ValueError(f"line {number}: indented, but no key above it takes a mapping")
            if not value.strip():
                raise ValueError(f"line {number}: nesting deeper than one level is not supported")
            data[parent][key] = yaml_scalar(value)
        elif value.strip() and not value.strip().startswith("#"):
            data[key] = yaml_scalar(value)
            parent = None
        else:
            data[key] = {}
            parent = key
    # A key whose mapping never came is null, as in YAML.
    return {key: (None if value == {} else value) for key, value in data.items()}


def load_yaml(text: str) -> Any:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return parse_task_info_text(text)
    return yaml.safe_load(text)


@dataclass
class TaskInfo:
    task: str
    config: Path
    test_script: Path
    output_dir: Path
    multi_output: bool
    groundtruth: Path | None
    parameters: dict[str, Any] = field(default_factory=dict)


def find_root(explicit: str | None) -> Path:
    """The GitTaskBench checkout: --root, else the working folder or the nearest folder above it
    that has a config/ folder (as `gittaskbench` looks for it)."""
    if explicit:
        root = Path(explicit).expanduser().absolute()
        if not (root / "config").is_dir():
            raise GradeError(f"--root {root} has no config/ folder: it is not a GitTaskBench checkout")
        return root
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "config").is_dir():
            return folder
    raise GradeError(f"no GitTaskBench checkout: no config/ folder in {here} or above it; pass --root")


def normalise_task(name: str) -> str:
    """run_batch's {task} (the prompt's stem), or the benchmark batch script's `Faker_01.md`."""
    task = name[:-3] if name.lower().endswith(".md") else name
    if not task or task in (".", "..") or "/" in task or "\\" in task:
        raise GradeError(f"not a task name: {name!r}")
    return task


def load_task_info(root: Path, task: str) -> TaskInfo:
    config = root / "config" / task / "task_info.yaml"
    if not config.is_file():
        raise GradeError(f"unknown task {task!r}: there is no {config}")
    try:
        data = load_yaml(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise GradeError(f"cannot read {config}: {e}") from e
    except Exception as e:  # PyYAML's own errors
        raise GradeError(f"{config} is not YAML: {e}") from e
    if not isinstance(data, dict):
        raise GradeError(f"{config} is not a mapping of task fields")
    missing = [key for key in ("test_script", "output_dir") if not isinstance(data.get(key), str)]
    if missing:
        raise GradeError(f"{config} has no {' or '.join(missing)}")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise GradeError(f"{config}: parameters is not a mapping")
    groundtruth = data.get("groundtruth")
    return TaskInfo(
        task=task,
        config=config,
        test_script=root / data["test_script"],
        output_dir=root / data["output_dir"],
        multi_output=data.get("multi_output") is True,
        groundtruth=root / str(groundtruth) if groundtruth else None,
        parameters={str(key): value for key, value in parameters.items()},
    )


# --- the prompt -----------------------------------------------------------------------------------


def output_folder_span(line: str) -> tuple[int, int] | None:
    """Where the folder is on a prompt line `输出文件目录:<folder>, 如果...`, or None."""
    label = _OUTPUT_LINE.search(line)
    if label is None:
        return None
    start = label.end()
    rest = line[start:]
    end_match = _RULE_START.search(rest) or _FIELD_END.search(rest)
    end = start + (end_match.start() if end_match else len(rest.rstrip()))
    while start < end and line[start] in "`'\"":
        start += 1
    while end > start and line[end - 1] in "`'\" \t":
        end -= 1
    return (start, end) if end > start else None


def prompt_output_folder(text: str) -> str | None:
    """The output folder the prompt names (its first `输出文件目录:` line), as written."""
    for line in text.splitlines():
        span = output_folder_span(line)
        if span:
            return line[span[0] : span[1]]
    return None


def read_prompt(path: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GradeError(f"cannot read the prompt {path}: {e}") from e


def choose_output_dir(output_dir: str | None, prompt: str | None, info: TaskInfo, root: Path) -> tuple[Path, str]:
    """The folder to grade and where it came from: --output-dir, the prompt, task_info.yaml."""
    if output_dir:
        return Path(os.path.abspath(Path(output_dir).expanduser())), "--output-dir"
    if prompt:
        folder = prompt_output_folder(read_prompt(prompt))
        if folder is not None:
            if _PLACEHOLDER.search(folder):
                raise GradeError(
                    f"the prompt's output folder {folder} still holds a placeholder; "
                    "pass the folder itself with --output-dir (e.g. --output-dir {workspace}/output)"
                )
            return Path(os.path.abspath(root / Path(folder).expanduser())), "the prompt"
        print(f"note: {prompt} names no output folder (no {OUTPUT_LABEL}: line); using task_info.yaml's")
    return Path(os.path.abspath(info.output_dir)), "task_info.yaml"


# --- the output file ------------------------------------------------------------------------------


def pick_output(folder: Path, multi_output: bool) -> tuple[Path | None, str]:
    """(what to pass as --output, a note) or (None, why there is nothing to grade)."""
    if not folder.is_dir():
        return None, f"no output folder: {folder} does not exist" + (" as a folder" if folder.exists() else "")
    entries = sorted(folder.iterdir(), key=lambda p: p.name)
    files = [p for p in entries if p.is_file()]
    tier = [p for p in files if p.name.startswith("output.")] or [p for p in files if p.name.startswith("output")]
    if not tier:
        for sub in entries:
            if sub.is_dir() and sub.name.startswith("output"):
                tier.extend(sorted(sub.iterdir(), key=lambda p: p.name))
    if not tier:
        seen = ", ".join(p.name for p in entries[:5]) + (", ..." if len(entries) > 5 else "")
        return None, f"no output file in {folder}: nothing named output.* or output_01.*" + (
            f" (it holds {seen})" if entries else " (it is empty)"
        )
    if multi_output:
        return folder, f"the folder itself (multi_output), {len(tier)} output file(s)"
    usable = [p for p in tier if p.is_file() and not p.name.endswith(".py") and p.stat().st_size > 0]
    if not usable:
        names = ", ".join(p.name for p in tier)
        return None, f"no usable output file in {folder}: {names} (empty, or a .py file)"
    note = f"{usable[0].name}, first of {', '.join(p.name for p in usable)}" if len(usable) > 1 else usable[0].name
    return usable[0], note


# --- the test script ------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    process: bool | None = None
    result: bool | None = None
    comments: str = ""
    timepoint: str | None = None


def as_bool(value: Any) -> bool | None:
    """A Process/Result value as `gittaskbench eval` reads it: a bool, or "true"/"false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def script_command(info: TaskInfo, python: str, output: Path, result_file: Path) -> list[str]:
    """The benchmark's argument order: --output, --result, --groundtruth, then the parameters."""
    command = [python, str(info.test_script), "--output", str(output), "--result", str(result_file)]
    if info.groundtruth is not None:
        command += ["--groundtruth", str(info.groundtruth)]
    for key, value in info.parameters.items():
        command += [f"--{key}", str(value)]
    return command


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def crash_reason(code: int, stderr: str, python: str) -> str:
    missing = _MISSING_MODULE.findall(stderr)
    if missing:
        top = missing[-1].split(".")[0]
        return (
            f"the test script needs the Python package {top!r} (pip: {PIP_NAMES.get(top, top)}), which {python} "
            "cannot import: install GitTaskBench's requirements.txt into it, or pass --python"
        )
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    last = _last_line(stderr)
    return f"the test script crashed ({how})" + (f": {last}" if last else "")


def run_test_script(info: TaskInfo, output: Path, python: str, timeout: float, root: Path) -> Outcome:
    for what, path in (("test script", info.test_script), ("ground truth", info.groundtruth)):
        if path is not None and not path.exists():
            raise GradeError(f"the task's {what} {path} is missing: is the GitTaskBench checkout complete?")
    with tempfile.TemporaryDirectory(prefix="gittaskbench-grade-") as tmp:
        result_file = Path(tmp) / info.task / "results.jsonl"
        result_file.parent.mkdir()
        command = script_command(info, python, output, result_file)
        print(f"test script (in {root}): {shlex.join(command)}", flush=True)
        try:
            proc = subprocess.Popen(
                command,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            raise GradeError(f"cannot run {python}: {e}") from e
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, err = proc.communicate()
            _echo(out, err)
            raise GradeError(f"the test script ran longer than --timeout {timeout:g} s and was killed") from None
        _kill_group(proc.pid)  # anything it left running
        _echo(out, err)
        if proc.returncode != 0:
            raise GradeError(crash_reason(proc.returncode, err.decode("utf-8", "replace"), python))
        try:
            written = result_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            written = ""
    line = _last_line(written)
    if not line:
        raise GradeError("the test script exited 0 but wrote no line to its --result file")
    try:
        data = json.loads(line)
    except ValueError:
        raise GradeError(f"the test script's result line is not JSON: {line[:200]}") from None
    if not isinstance(data, dict):
        raise GradeError(f"the test script's result line is not a JSON object: {line[:200]}")
    process = as_bool(data.get("Process"))
    result_keys = [key for key in data if key.lower() in ("result", "results")]
    result = as_bool(data[result_keys[0]]) if result_keys else None
    if process is None or result is None:
        raise GradeError(f"the test script's result line has no true/false Process and Result: {line[:200]}")
    comments = data.get("comments", "")
    if not isinstance(comments, str):
        comments = json.dumps(comments, ensure_ascii=False, default=str)
    timepoint = data.get("TimePoint")
    return Outcome(
        PASSED if process and result else FAILED,
        process,
        result,
        comments,
        timepoint if isinstance(timepoint, str) else None,
    )


def _echo(out: bytes, err: bytes) -> None:
    """The script's own output into the grader's logs (stdout to stdout, stderr to stderr)."""
    for data, stream in ((out, sys.stdout), (err, sys.stderr)):
        text = data.decode("utf-8", "replace")
        if len(text) > TEXT_ECHOED:
            text = text[: TEXT_ECHOED // 2] + "\n[... cut ...]\n" + text[-TEXT_ECHOED // 2 :]
        if text.strip():
            stream.write(text if text.endswith("\n") else text + "\n")
            stream.flush()


# --- the benchmark's results file -----------------------------------------------------------------


def _number_or_text(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def results_line(
    task: str, outcome: Outcome, graded: Path | None, attempt: str | None, sample: str | None
) -> dict[str, Any]:
    return {
        "Process": bool(outcome.process),
        "Result": bool(outcome.result),
        "TimePoint": outcome.timepoint or dt.datetime.now().isoformat(timespec="seconds"),
        "comments": outcome.comments if outcome.code != ERROR else f"grading error: {outcome.comments}",
        "taskid": task,
        "verdict": VERDICTS[outcome.code],
        "output": str(graded) if graded else None,
        "attempt": _number_or_text(attempt),
        "sample": _number_or_text(sample),
        "graded_by": "run_batch examples/gittaskbench/grade.py",
    }


def append_results_line(results_dir: str, task: str, line: dict[str, Any]) -> Path:
    path = Path(results_dir).expanduser() / task / "results.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a torn last line stays a line of its own
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


# --- the command ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="grade.py",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--task", metavar="TASK", required=True, help="the task, e.g. Faker_01 (run_batch's {task}; `.md` is dropped)"
    )
    parser.add_argument(
        "--root",
        metavar="ROOT",
        help="the GitTaskBench checkout (default: the working folder or the nearest above it with config/)",
    )
    parser.add_argument(
        "--prompt", metavar="PROMPT", help="the task's prompt, whose `输出文件目录:` line names the output folder"
    )
    parser.add_argument(
        "--output-dir", metavar="DIR", help="grade this folder instead of the prompt's, e.g. {workspace}/output"
    )
    parser.add_argument(
        "--results-dir",
        metavar="DIR",
        help="append the benchmark's line to DIR/TASK/results.jsonl (for `gittaskbench eval --result DIR`)",
    )
    parser.add_argument("--attempt", metavar="N", help="run_batch's {attempt}, kept in the results line")
    parser.add_argument("--sample", metavar="N", help="run_batch's {sample}, kept in the results line")
    parser.add_argument(
        "--python",
        metavar="PY",
        default=sys.executable,
        help="the interpreter for the test script (default: the one running this)",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=500,
        help="the test script's time limit in seconds (default: 500, under run_batch's --evaluate-timeout 600)",
    )
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be more than 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = args.task
    info: TaskInfo | None = None
    graded: Path | None = None
    source = ""
    try:
        task = normalise_task(args.task)
        root = find_root(args.root)
        info = load_task_info(root, task)
        folder, source = choose_output_dir(args.output_dir, args.prompt, info, root)
        print(f"task {task}: output folder {folder} (from {source})", flush=True)
        output, note = pick_output(folder, info.multi_output)
        if output is None:
            graded = folder
            outcome = Outcome(FAILED, False, False, f"the agent left nothing to grade: {note}")
        else:
            graded = output
            print(f"graded: {output} ({note})", flush=True)
            outcome = run_test_script(info, output, args.python, args.timeout, root)
    except GradeError as e:
        outcome = Outcome(ERROR, comments=str(e))
    if args.results_dir and info is not None:
        try:
            where = append_results_line(
                args.results_dir, task, results_line(task, outcome, graded, args.attempt, args.sample)
            )
            print(f"results line appended to {where}", flush=True)
        except OSError as e:
            outcome = Outcome(ERROR, comments=f"{outcome.comments}; and cannot append to --results-dir: {e}")
    verdict = VERDICTS[outcome.code]
    if outcome.code == ERROR:
        print(f"grade.py: {task}: error: {outcome.comments}", file=sys.stderr, flush=True)
        summary: dict[str, Any] = {"details": {"comments": outcome.comments}}
    else:
        print(f"{task}: {verdict} (Process {outcome.process}, Result {outcome.result}): {outcome.comments}", flush=True)
        summary = {
            "score": 1.0 if outcome.code == PASSED else 0.0,
            "details": {
                "process": outcome.process,
                "result": outcome.result,
                "comments": outcome.comments[:COMMENTS_IN_DETAILS],
                "output": str(graded) if graded else None,
                "output_source": source,
            },
        }
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
