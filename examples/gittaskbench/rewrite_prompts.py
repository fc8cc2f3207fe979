#!/usr/bin/env python3
"""Copy GitTaskBench prompts with each one's output folder replaced by `{workspace}/output`, for
`run-batch --prompt-placeholders --workspace-per-task`: every attempt (and every sample of the
same task) then writes into a folder of its own, and no two attempts can share or inherit one.

    rewrite_prompts.py SRC DEST [--output-dir TEMPLATE]

SRC holds the generated prompts (`<checkout>/eval_automation/output/prompt/*.md`); DEST gets a
copy of each, the same but for:
  - the folder on the `输出文件目录:` line, replaced by TEMPLATE (default `{workspace}/output`; the
    naming rule after it, `output.xxx` / `output_01.xxx`, is kept);
  - a literal `{task}`, `{workspace}`, `{output_dir}`, `{attempt}`, `{sample}`, `{session}` or
    `{experiment}` already in the text, doubled (`{{task}}`) so that run_batch leaves it as it
    was. Other brace text (the prompts' `{remote_repo_path}`) is left alone: run_batch does too.
The repository and input paths stay as they are: absolute paths into the checkout.
Grade such a run with `grade.py --output-dir {workspace}/output` (the prompt no longer names a
real folder) and prepare it with `prepare.py --output-dir {workspace}/output`.

Exit 0 written (one line per run saying how many); 1 a prompt has no `输出文件目录:` line or is
not UTF-8 (nothing is written then); 2 bad usage. Standard library only, Python 3.11+.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

# The sibling grading adapter (one reading of the output line), importable however this script is started.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import grade

PLACEHOLDERS = ("task", "workspace", "output_dir", "attempt", "sample", "session", "experiment")
_LITERAL = re.compile(r"(?<!\{)\{(" + "|".join(PLACEHOLDERS) + r")\}(?!\})")


def rewrite(text: str, template: str) -> str | None:
    """The prompt with its output folder replaced, or None when it names none."""
    escaped = _LITERAL.sub(r"{{\1}}", text)
    lines = escaped.splitlines(keepends=True)
    for number, line in enumerate(lines):
        span = grade.output_folder_span(line)
        if span:
            lines[number] = line[: span[0]] + template + line[span[1] :]
            return "".join(lines)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rewrite_prompts.py",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="the folder of generated prompts (*.md)")
    parser.add_argument("dest", help="where the rewritten copies go (created when missing)")
    parser.add_argument(
        "--output-dir", metavar="TEMPLATE", default="{workspace}/output", help="the folder to name instead"
    )
    args = parser.parse_args(argv)
    src, dest = Path(args.src).expanduser(), Path(args.dest).expanduser()
    if not src.is_dir():
        parser.error(f"{src} is not a folder")
    if dest.resolve() == src.resolve():
        parser.error("DEST must not be SRC: the originals are kept as they are")
    prompts = sorted(p for p in src.glob("*.md") if p.is_file() and not p.name.startswith("."))
    if not prompts:
        parser.error(f"no *.md prompt in {src}")
    rewritten: dict[str, str] = {}
    problems: list[str] = []
    for prompt in prompts:
        try:
            text = prompt.read_bytes().decode("utf-8")  # line ends kept as they are
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"{prompt}: cannot read it as UTF-8 ({e})")
            continue
        new = rewrite(text, args.output_dir)
        if new is None:
            problems.append(f"{prompt}: no {grade.OUTPUT_LABEL}: line")
        else:
            rewritten[prompt.name] = new
    if problems:
        for problem in problems:
            print(f"rewrite_prompts.py: {problem}", file=sys.stderr)
        print(f"rewrite_prompts.py: nothing written ({len(problems)} of {len(prompts)} prompts)", file=sys.stderr)
        return 1
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in rewritten.items():
        (dest / name).write_bytes(text.encode("utf-8"))
    print(f"rewrite_prompts.py: {len(rewritten)} prompts written to {dest}, each naming {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
