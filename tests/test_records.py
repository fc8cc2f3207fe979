"""The results file and the files an attempt writes, in-process: real files, no processes."""

from __future__ import annotations

from pathlib import Path

import run_batch as rb


def test_redact_file_masks_a_secret_across_chunk_borders(tmp_path: Path) -> None:
    path = tmp_path / "log"
    secret = "sk-SECRET-0123456789"
    path.write_bytes(b"a" * 1000 + secret.encode() + b"b" * 1000 + secret.encode())
    assert rb.redact_file(path, (secret,), chunk=1010)
    data = path.read_bytes()
    assert secret.encode() not in data and data.count(b"****") == 2 and len(data) == 2000 + 8
    assert not rb.redact_file(path, (secret,))


def test_torn_last_line_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"task_name": "a", "status": "success"}\n{"task_name": "b", "sta')
    records, warnings = rb.read_records(path)
    assert [r.task_name for r in records] == ["a"] and len(warnings) == 1 and "line 2" in warnings[0]


def test_appending_after_a_torn_line_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"task_name": "a", "status": "success"}\n{"task_name": "b", "sta')
    results = rb.ResultsFile(path)
    results.append(rb.AttemptRecord.from_json({"task_name": "c", "status": "failed"}))
    results.release()
    records, warnings = rb.read_records(path)
    assert [r.task_name for r in records] == ["a", "c"] and len(warnings) == 1
    assert path.read_text().startswith('{"task_name": "a", "status": "success"}\n{"task_name": "b", "sta\n')
