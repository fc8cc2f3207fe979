"""The README and docs/ hold together: every relative link resolves to a file and every #anchor to
a heading that exists (as GitHub makes anchors), the README stays short with a table of contents
and the two set-up commands CI runs, and every option `--help` lists is in docs/options.md.
In-process and fast: files are read, nothing is run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import run_batch

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

# The two commands a fresh clone is set up with; .ci/run runs them as the README gives them.
SETUP_COMMANDS = (
    "bash examples/run-examples.sh",
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest",
)

README_MOST_LINES = 320

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line outside fenced code blocks, inline code removed."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, re.sub(r"`[^`]*`", "``", line)))
    return lines


def heading_lines(path: Path) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading outside fenced code, inline code kept as its text."""
    found, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text as rendered (code marks, emphasis and link
    targets dropped), lower case, punctuation dropped except `-` and `_`, each space a `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a page: each heading's slug, a repeated one numbered -1, -2, ... as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for _, text in heading_lines(path):
        slug = github_slug(text)
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug}-{seen[slug]}"
        else:
            seen[slug] = 0
        found.add(slug)
    return found


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image that is not a URL."""
    links = []
    for number, line in prose_lines(path):
        for target in LINK.findall(line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                links.append((number, target))
    return links


# ------------------------------------------------------------------------------------------------
# The helpers themselves, on GitHub's own examples
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Set-up (two commands on a fresh machine)", "set-up-two-commands-on-a-fresh-machine"),
        ("SDK driver (`--entrypoint sdk`)", "sdk-driver---entrypoint-sdk"),
        ("SDK 1.58.2 (`--entrypoint sdk`)", "sdk-1582---entrypoint-sdk"),
        ("Processes, tmux and containers", "processes-tmux-and-containers"),
        ("run.json", "runjson"),
        ("Did the agent do the task? Evaluation and workspaces", "did-the-agent-do-the-task-evaluation-and-workspaces"),
        ("The [record](records.md) field_name", "the-record-field_name"),
        ("Ünïcode — stays", "ünïcode--stays"),
    ],
)
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_links_are_found_outside_code_only(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "See [a](a.md#x), ![img](i.png) and [web](https://example.com).\n"
        "`[not](code.md)` inline\n```\n[not](fenced.md)\n# not a heading\n```\n# Real heading\n# Real heading\n",
        encoding="utf-8",
    )
    assert relative_links(page) == [(1, "a.md#x"), (1, "i.png")]
    assert anchors(page) == {"real-heading", "real-heading-1"}


# ------------------------------------------------------------------------------------------------
# The pages
# ------------------------------------------------------------------------------------------------


def test_docs_exist() -> None:
    names = {p.name for p in DOCS}
    for wanted in ("options.md", "records.md", "output-folder.md", "operations.md", "scale-out.md", "evaluation.md"):
        assert wanted in names
    for kept in ("openhands.md", "statistics.md", "cgroups.md", "experiments.md"):
        assert kept in names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for number, target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"line {number}: {target}: no file {destination}")
            continue
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"line {number}: {target}: no heading with the anchor #{anchor} in {destination.name}")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MOST_LINES, f"README.md has {len(lines)} lines; at most {README_MOST_LINES}"


def test_readme_has_a_table_of_contents() -> None:
    """A `Contents` heading near the top, whose list links every second-level heading."""
    text = README.read_text(encoding="utf-8")
    headings = heading_lines(README)
    titles = [t for level, t in headings if level == 2]
    assert titles and titles[0].lower() in ("contents", "table of contents")
    toc = text.split(f"## {titles[0]}", 1)[1].split("\n## ", 1)[0]
    linked = set(re.findall(r"\]\(#([^)]+)\)", toc))
    missing = [t for t in titles[1:] if github_slug(t) not in linked]
    assert not missing, f"the table of contents leaves out: {missing}"


def test_readme_gives_the_two_setup_commands_verbatim() -> None:
    """Each command on a line of its own in a code block of the README (a comment may follow it),
    and in .ci/run, which runs them as the README gives them."""
    fenced, code = False, []
    for line in README.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif fenced:
            code.append(line)
    ci = ROOT / ".ci" / "run"
    ci_lines = [line.strip() for line in ci.read_text(encoding="utf-8").splitlines()] if ci.exists() else []
    for command in SETUP_COMMANDS:
        assert any(line == command or line.startswith(command + " ") for line in code), command
        if ci_lines:
            assert command in ci_lines, f".ci/run no longer runs {command!r}"


def help_options() -> list[str]:
    """Every option string `run-batch --help` lists."""
    parser = run_batch.build_parser()
    return sorted({s for action in parser._actions for s in action.option_strings})


def test_help_lists_options() -> None:
    options = help_options()
    assert "--prompt-dir" in options and "--help" in options and len(options) > 40


def test_every_option_is_in_docs_options() -> None:
    text = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    missing = [o for o in help_options() if not re.search("`" + re.escape(o) + r"(?![\w-])", text)]
    assert not missing, f"docs/options.md does not give: {', '.join(missing)}"
