#!/usr/bin/env python3
"""Prepare one GitTaskBench attempt (`run-batch --before-attempt`): the output folder it will be
graded in starts empty, and the files its prompt names are there.

    prepare.py --task TASK [--root ROOT] [--prompt PROMPT | --output-dir DIR]
               [--keep-in DIR] [--no-input-check]

run_batch fills these in, e.g.
    --before-attempt 'python prepare.py --root ~/GitTaskBench --task {task} --prompt {prompt}
                      --keep-in {output_dir}/stale-outputs'

1. The output folder is decided as grade.py decides it (--output-dir, else the prompt's
   `输出文件目录:` line, else task_info.yaml's output_dir). Whatever is in it, an earlier attempt's
   output above all, is moved into --keep-in DIR (as DIR/<folder name>, then .2, .3, ...: kept as
   evidence) or, without --keep-in, deleted. The folder is then created empty, so an attempt whose
   agent writes nothing fails its grade instead of passing on an old file.
2. Inputs: GitTaskBench's prompts name their inputs and repository by absolute paths inside the
   checkout (`文件路径 (绝对):`, `仓库路径 (绝对):`), read in place: nothing needs copying. Each one the
   prompt names must exist and must not be a Git LFS pointer; a missing one stops the attempt
   before any LLM spend (--no-input-check skips this).

It refuses to clear a folder that is the file system root, your home, the checkout or a folder
above it, one of the checkout's own folders (config, test_scripts, groundtruth, queries,
code_base), or a folder holding the prompt, the working folder or --keep-in.

Exit 0 ready (one line on stdout saying what it did); 1 it cannot (one line on stderr; run_batch
then records an `error` attempt and runs no agent); 2 bad usage. Standard library only, Python 3.11+.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

# The sibling grading adapter (one way to find the folder), importable however this script is started.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import grade

CHECKOUT_FOLDERS = ("config", "test_scripts", "groundtruth", "queries", "code_base")
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
_NAMED_PATH = re.compile(
    "(?:" + re.escape(grade.INPUT_LABEL) + "|" + re.escape(grade.REPOSITORY_LABEL) + r")\s*[:：]\s*(.*)$"
)


class CannotPrepare(Exception):
    pass


def _within(path: Path, folder: Path) -> bool:
    """Whether path is folder or inside it (both already absolute and resolved)."""
    return path == folder or folder in path.parents


def check_clearable(folder: Path, root: Path, prompt: str | None, keep_in: Path | None) -> None:
    real = folder.parent.resolve() / folder.name  # the folder itself may be a link: not followed
    home = Path.home().resolve()
    root = root.resolve()
    if real == Path(real.anchor) or real == home:
        raise CannotPrepare(f"refusing to clear {folder}: it is {'your home' if real == home else 'the root'}")
    if _within(root, real):
        raise CannotPrepare(f"refusing to clear {folder}: it holds the GitTaskBench checkout {root}")
    for name in CHECKOUT_FOLDERS:
        if _within(real, root / name):
            raise CannotPrepare(f"refusing to clear {folder}: it is part of the checkout's {name}/")
    guarded = [
        ("the prompt", Path(prompt).expanduser().resolve() if prompt else None),
        ("the working folder", Path.cwd()),
    ]
    guarded.append(("--keep-in", keep_in.resolve() if keep_in else None))
    for what, path in guarded:
        if path is not None and _within(path, real):
            raise CannotPrepare(f"refusing to clear {folder}: it holds {what} ({path})")


def clear(folder: Path, keep_in: Path | None) -> str:
    """Empty the folder: its old contents moved into keep_in, or deleted. Says what it did."""
    if folder.is_symlink():
        folder.unlink()
        return "removed the symbolic link that stood there"
    if not folder.exists():
        return "it did not exist"
    if folder.is_dir() and not any(folder.iterdir()):
        return "it was empty"
    if keep_in is not None:
        keep_in.mkdir(parents=True, exist_ok=True)
        dest, n = keep_in / folder.name, 1
        while dest.exists() or dest.is_symlink():
            n += 1
            dest = keep_in / f"{folder.name}.{n}"
        shutil.move(str(folder), str(dest))
        return f"what was in it moved to {dest}"
    if folder.is_dir():
        count = sum(1 for _ in folder.rglob("*"))
        shutil.rmtree(folder)
        return f"deleted what was in it ({count} entries)"
    folder.unlink()
    return "deleted the file that stood there"


def check_inputs(prompt_text: str, root: Path) -> int:
    """Every repository and input path the prompt names exists and is not an LFS pointer."""
    checked = 0
    for line in prompt_text.splitlines():
        match = _NAMED_PATH.search(line)
        if not match:
            continue
        value = match.group(1).strip().strip("`'\"").strip()
        if not value or value.upper() == "N/A" or grade._PLACEHOLDER.search(value):
            continue
        path = Path(value).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.exists():
            raise CannotPrepare(
                f"the prompt names {path}, which does not exist: is the GitTaskBench checkout complete?"
            )
        if path.is_file():
            try:
                with path.open("rb") as f:
                    head = f.read(len(LFS_POINTER))
            except OSError as e:
                raise CannotPrepare(f"the prompt names {path}, which cannot be read: {e}") from e
            if head == LFS_POINTER:
                raise CannotPrepare(f"{path} is a Git LFS pointer, not the file: run `git lfs pull` in {root}")
        checked += 1
    return checked


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="prepare.py",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", metavar="TASK", required=True, help="the task, e.g. Faker_01 (run_batch's {task})")
    parser.add_argument(
        "--root", metavar="ROOT", help="the GitTaskBench checkout (default: the working folder or above it)"
    )
    parser.add_argument("--prompt", metavar="PROMPT", help="the task's prompt (its output folder, the inputs it names)")
    parser.add_argument(
        "--output-dir", metavar="DIR", help="clear this folder instead of the prompt's, e.g. {workspace}/output"
    )
    parser.add_argument("--keep-in", metavar="DIR", help="move an old output folder into DIR instead of deleting it")
    parser.add_argument("--no-input-check", action="store_true", help="do not check the prompt's input paths")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        try:
            task = grade.normalise_task(args.task)
            root = grade.find_root(args.root)
            info = grade.load_task_info(root, task)
            folder, source = grade.choose_output_dir(args.output_dir, args.prompt, info, root)
        except grade.GradeError as e:
            raise CannotPrepare(str(e)) from e
        keep_in = Path(args.keep_in).expanduser().absolute() if args.keep_in else None
        check_clearable(folder, root, args.prompt, keep_in)
        checked = 0
        if args.prompt and not args.no_input_check:
            checked = check_inputs(grade.read_prompt(args.prompt), root)  # before anything is moved
        done = clear(folder, keep_in)
        folder.mkdir(parents=True, exist_ok=True)
    except (CannotPrepare, grade.GradeError) as e:
        print(f"prepare.py: {args.task}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"prepare.py: {args.task}: cannot prepare the output folder: {e}", file=sys.stderr)
        return 1
    inputs = f"; {checked} input path(s) the prompt names are there" if checked else ""
    print(f"prepare.py: {task}: output folder {folder} (from {source}) is empty: {done}{inputs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
