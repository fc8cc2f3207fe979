"""Planning a batch, in process (no processes, no files): which prompts are tasks, the selection
(--tasks, --include, --exclude, --limit, --shard), what is already done and what runs again
(resume), in which order (the longest known first), and the identity each task's files are
named by (distinct even where names collide, are long, or differ only in case)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import record, task

import run_batch as rb


def names(ts: list[rb.Task] | list[rb.Job]) -> list[str]:
    return [t.task.name if isinstance(t, rb.Job) else t.name for t in ts]


# --- plan_batch: what is done, what runs again, in which order ------------------------------------


def test_plan_skips_a_success_with_the_same_prompt_only() -> None:
    a, b, c = task("a"), task("b"), task("c")
    recorded = [record(a), record(b, prompt_sha256="old-sha"), record("zz")]  # zz: no longer a prompt
    plan = rb.plan_batch([a, b, c], rb.Selection(), recorded, rerun=False)
    assert names(plan.done) == ["a"]
    assert sorted(names(plan.to_run)) == ["b", "c"]  # b's prompt changed, c never ran
    assert names(plan.selected) == ["a", "b", "c"]


def test_plan_rerun_runs_everything_selected() -> None:
    ts = [task("a"), task("b")]
    plan = rb.plan_batch(ts, rb.Selection(), [record(ts[0]), record(ts[1])], rerun=True)
    assert plan.done == [] and sorted(names(plan.to_run)) == ["a", "b"]


def test_plan_looks_at_the_latest_record_only() -> None:
    a, b = task("a"), task("b")
    recorded = [record(a), record(a, "failed"), record(b, "failed"), record(b)]
    plan = rb.plan_batch([a, b], rb.Selection(), recorded, rerun=False)
    assert names(plan.to_run) == ["a"]  # success then failure: runs again
    assert names(plan.done) == ["b"]  # failure then success: done


@pytest.mark.parametrize("status", ["failed", "timeout", "stalled", "error", "interrupted"])
def test_plan_runs_again_whatever_did_not_succeed(status: str) -> None:
    a = task("a")
    plan = rb.plan_batch([a], rb.Selection(), [record(a, status)], rerun=False)
    assert names(plan.to_run) == ["a"] and plan.done == []


def test_plan_order_longest_known_first_unknown_first_in_file_order() -> None:
    ts = [task(n) for n in "abcdefg"]
    recorded = [
        record("b", "failed", elapsed_time_seconds=5.0),
        record("c", "timeout", elapsed_time_seconds=50.0),
        record("d", "interrupted", elapsed_time_seconds=100.0),  # cut short: its time says nothing
        record("e", "success", prompt_sha256="old", elapsed_time_seconds=20.0),
        record("f", "error", elapsed_time_seconds=999.0),
        record("g", "failed", elapsed_time_seconds=20.0),  # ties keep file order
    ]
    plan = rb.plan_batch(ts, rb.Selection(), recorded, rerun=False)
    assert names(plan.to_run) == ["a", "d", "f", "c", "e", "g", "b"]


def test_plan_order_with_no_durations_is_file_order() -> None:
    ts = [task(n) for n in ("z", "a", "m")]
    assert names(rb.plan_batch(ts, rb.Selection(), [], rerun=False).to_run) == ["z", "a", "m"]


def test_plan_selection_comes_before_skipping() -> None:
    ts = [task(n) for n in ("a1", "a2", "b1", "b2", "c1", "c2")]
    recorded = [record("a1")]
    plan = lambda **kw: rb.plan_batch(ts, rb.Selection(**kw), recorded, rerun=False)
    assert names(plan(tasks=("c1", "a1")).selected) == ["a1", "c1"]  # file order, not --tasks order
    assert names(plan(tasks=("c1", "a1")).to_run) == ["c1"]
    assert names(plan(include=("a*", "c2")).to_run) == ["a2", "c2"]
    assert names(plan(exclude=("*2",)).selected) == ["a1", "b1", "c1"]
    assert names(plan(include=("a*", "b*"), exclude=("b2",)).selected) == ["a1", "a2", "b1"]
    assert names(plan(shard=(2, 3)).selected) == ["a2", "c1"]  # every third from the second
    assert names(plan(shard=(1, 2), limit=2).selected) == ["a1", "b1"]  # the shard, then the limit
    limited = plan(limit=2)
    assert names(limited.selected) == ["a1", "a2"] and names(limited.done) == ["a1"] and names(limited.to_run) == ["a2"]
    assert plan(limit=0).selected == []
    with pytest.raises(rb.UsageError, match="matches no task"):  # a selection that selects nothing is a mistake
        plan(include=("nothing*",))


def test_plan_selection_is_case_sensitive() -> None:
    ts = [task("Alpha"), task("alpha")]
    assert names(rb.plan_batch(ts, rb.Selection(include=("a*",)), [], rerun=False).selected) == ["alpha"]


def test_plan_unknown_task_name_is_a_usage_error() -> None:
    with pytest.raises(rb.UsageError, match=r"no prompt named 'nope' in /prompts"):
        rb.plan_batch(
            [task("a")],
            rb.Selection(tasks=("a", "nope")),
            [],
            rerun=False,
            rules=rb.PlanRules(prompt_dir=Path("/prompts")),
        )
    with pytest.raises(rb.UsageError, match="'A'"):
        rb.plan_batch([task("a")], rb.Selection(tasks=("A",)), [], rerun=False)


def test_plan_never_skips_a_prompt_whose_hash_is_unknown() -> None:
    unreadable = rb.Task("a", Path("/p/a.md"), "a", None, "cannot read prompt: Permission denied")
    old = record(unreadable, "success", prompt_sha256=None)  # an older record, before prompt_sha256
    plan = rb.plan_batch([unreadable], rb.Selection(), [old], rerun=False)
    assert names(plan.to_run) == ["a"] and plan.done == []


# --- select_tasks, parse_shard and plan_order on their own ----------------------------------------


def selection(**kw: object) -> rb.Selection:
    return rb.Selection(**kw)  # type: ignore[arg-type]


def tasks(*names: str) -> list[rb.Task]:
    return [rb.Task(n, Path(f"/p/{n}.md"), n, "h", None) for n in names]


def test_selection_include_exclude_tasks_limit() -> None:
    ts = tasks("a1", "a2", "b1", "b2", "c1")
    names = lambda s: [t.name for t in rb.select_tasks(ts, s)]
    assert names(selection(include=("a*", "c*"))) == ["a1", "a2", "c1"]
    assert names(selection(exclude=("*1",))) == ["a2", "b2"]
    assert names(selection(tasks=("b2", "a1"))) == ["a1", "b2"]
    assert names(selection(limit=2)) == ["a1", "a2"]
    with pytest.raises(rb.UsageError, match="no prompt named 'zz'"):
        rb.select_tasks(ts, selection(tasks=("zz",)))


def test_shards_cover_every_task_exactly_once() -> None:
    ts = tasks(*[f"t{i:02}" for i in range(11)])
    seen = [t.name for k in range(1, 4) for t in rb.select_tasks(ts, selection(shard=(k, 3)))]
    assert sorted(seen) == [t.name for t in ts] and len(seen) == 11


def test_shard_from_slurm_and_kubernetes() -> None:
    assert rb.parse_shard("2/8", {}) == (2, 8)
    assert rb.parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (4, 4)
    assert rb.parse_shard(
        "auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "5"}
    ) == (1, 4)
    assert rb.parse_shard("auto", {"JOB_COMPLETION_INDEX": "0", "RUN_BATCH_SHARDS": "5"}) == (1, 5)
    for bad in ("0/3", "4/3", "x", "auto"):
        with pytest.raises(rb.UsageError):
            rb.parse_shard(bad, {})


def test_longest_known_task_first() -> None:
    ts = tasks("a", "b", "c", "d")
    order = rb.plan_order(ts, {"a": 5.0, "c": 50.0, "d": 1.0})
    assert [t.name for t in order] == ["b", "c", "a", "d"]
    assert rb.plan_order(ts, {}) == ts


# --- inspect_prompt: a prompt that cannot be a task -----------------------------------------------


def test_inspect_prompt() -> None:
    assert rb.inspect_prompt(b"Fix the bug.\n") is None
    assert rb.inspect_prompt(b" \n\t") == "prompt is empty"
    assert "not UTF-8" in (rb.inspect_prompt(b"\xff\xfe bad") or "")


# --- task_identities: the names a task's files get ------------------------------------------------


TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*-[0-9a-f]{8,64}")


def check_identities(names: list[str]) -> dict[str, tuple[str, str]]:
    ids = rb.task_identities(names)
    assert set(ids) == set(names)
    stems = [stem for stem, _ in ids.values()]
    tags = [tag for _, tag in ids.values()]
    assert len({s.casefold() for s in stems}) == len(names)  # distinct even on a case-blind file system
    assert len(set(tags)) == len(names)
    for name, (stem, tag) in ids.items():
        assert tag.isascii() and TAG.fullmatch(tag), tag
        assert len(tag) <= 24 + 1 + 64
        assert "/" not in stem and stem not in ("", ".", "..")
        assert len(f"{stem}.attempt-99.stdout.log".encode("utf-8", "surrogateescape")) <= 255
        if "~" not in stem:
            assert stem == name  # a plain stem is the name itself
    return ids


def test_identities_of_names_that_share_24_characters() -> None:
    common = "a-very-long-common-prefix"  # 25 characters: the slugs are the same
    ids = check_identities([f"{common}-1", f"{common}-2", common])
    assert all(stem == name for name, (stem, _) in ids.items())
    assert len({tag.rsplit("-", 1)[0] for _, tag in ids.values()}) == 1  # only the hash tells them apart


def test_identities_of_names_that_slug_alike() -> None:
    ids = check_identities(["a b", "a-b", "a!b", "a  b", "-a b-", "a\tb", "a.b", "a_b", "a--b"])
    assert ids["a b"][1].startswith("a-b-") and ids["a!b"][1].startswith("a-b-")


def test_identities_of_non_ascii_names() -> None:
    ids = check_identities(["ünïcødé", "日本語", "中文", "😀", "naïve", "naive"])
    assert ids["日本語"][1].startswith("task-") and ids["😀"][1].startswith("task-")
    assert ids["ünïcødé"][0] == "ünïcødé"  # safe: kept as it is


def test_identities_of_very_long_names() -> None:
    long1, long2 = "y" * 200 + "1", "y" * 200 + "2"
    wide = "é" * 51  # 102 bytes, 51 characters
    ids = check_identities([long1, long2, wide, "z" * 100, "z" * 101])
    for name in (long1, long2, wide, "z" * 101):
        assert "~" in ids[name][0]
    assert ids["z" * 100][0] == "z" * 100  # exactly the limit: plain
    assert ids[wide][0].startswith("é" * 30 + "~")  # cut on a character boundary


def test_identities_of_names_differing_only_in_case() -> None:
    ids = check_identities(["Task", "task", "TASK", "other", "Straße", "STRASSE", "strasse"])
    for name in ("Task", "task", "TASK", "Straße", "STRASSE", "strasse"):
        assert "~" in ids[name][0]
    assert ids["other"][0] == "other"


def test_identities_of_names_that_look_hashed() -> None:
    ids = check_identities(["a~b", "a_b", "a", "x~" + "0" * 8])
    assert "~" in ids["a~b"][0] and ids["a_b"][0] == "a_b"


def test_identities_of_many_names_mixed() -> None:
    names = [
        *(f"t{i}" for i in range(200)),
        *(f"T{i}" for i in range(0, 200, 7)),
        *("q" * 150 + str(i) for i in range(20)),
        "bad\udcff",  # a file name that is not UTF-8, kept by Python as a surrogate
        "bad\udcfe",
        "new\nline",
    ]
    ids = check_identities(names)
    assert ids == rb.task_identities(list(reversed(names)))  # independent of order
