"""The shape of run_batch.py that keeps it readable as one file: it reads top to bottom (no
top-level definition uses one from a later section), and the map at the top names every section."""

from __future__ import annotations

import ast
import re

from conftest import SCRIPT

BANNER = re.compile(r"^# ={20,}$")


def sections(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, title) of each `# ====` banner's title line."""
    return [
        (i + 2, lines[i + 1][2:].strip())
        for i in range(len(lines) - 2)
        if BANNER.match(lines[i]) and BANNER.match(lines[i + 2]) and not BANNER.match(lines[i + 1])
    ]


def section_of(heads: list[tuple[int, str]], lineno: int) -> int:
    return sum(1 for line, _ in heads if line <= lineno)


def defined_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def forward_references(source: str) -> list[str]:
    """`name (section i) uses other (section j)` for every use of a later section's top-level
    name, annotations included; a name bound inside the definition is its own, not a use."""
    lines = source.splitlines()
    heads = sections(lines)
    tree = ast.parse(source)
    where = {name: section_of(heads, node.lineno) for node in tree.body for name in defined_names(node)}
    found = []
    for node in tree.body:
        names = defined_names(node)
        if not names:
            continue
        mine = section_of(heads, node.lineno)
        bound = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
        bound |= {a.arg for a in ast.walk(node) if isinstance(a, ast.arg)}
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound
        found += [
            f"{names[0]} ({heads[mine - 1][1][:40]}) uses {u} ({heads[where[u] - 1][1][:40]})"
            for u in sorted(used)
            if u in where and where[u] > mine
        ]
    return found


def test_the_file_reads_top_to_bottom() -> None:
    assert forward_references(SCRIPT.read_text(encoding="utf-8")) == []


def test_the_check_sees_a_forward_reference() -> None:
    """The check itself: a first section using a second's name is caught."""
    banner = "# " + "=" * 30
    source = f"{banner}\n# One\n{banner}\ndef a():\n    return b()\n{banner}\n# Two\n{banner}\ndef b():\n    return 1\n"
    assert forward_references(source) == ["a (One) uses b (Two)"]


def test_the_map_at_the_top_names_every_section() -> None:
    source = SCRIPT.read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(source)) or ""
    titles = [title for _, title in sections(source.splitlines())]
    assert len(titles) >= 10
    for title in titles:
        first_words = re.split(r"[:(]", title)[0].strip()
        assert first_words.split()[0] in docstring, f"the map at the top does not name {first_words!r}"
