#!/usr/bin/env python3
"""A task for `benchmarks/run.py --only follow`: writes OpenHands' event files at a steady rate.

Started by run_batch like `python -m openhands.core.main` (it takes -f, --config-file, -n and
ignores the rest). A prompt line says what to write:

    EVENTS: <count> <seconds> <sessions|elsewhere>

`count` events spread evenly over `seconds`, agent actions (each with a grown llm_metrics, one
more LLM call) and their observations in turn, each about 1 KB, to
`<file_store>/sessions/<sid>/events/<n>.json` (`sessions`: where run_batch follows them) or to
`<file_store>/elsewhere/<sid>/events/<n>.json` (`elsewhere`: the same work, in a folder
run_batch never looks at: the baseline). The sid is run_batch's own `session_id(-n name)`,
imported from the run_batch under test (RUN_BATCH_BENCH_DIR, else the checkout). At the end:
the final state event, the state line on stderr, a small trajectory (the last events), exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, os.environ.get("RUN_BATCH_BENCH_DIR") or str(Path(__file__).resolve().parent.parent))

from run_batch import session_id  # the sid run_batch computes for -n

PROMPT_TOKENS, COMPLETION_TOKENS, PRICE_IN = 1000, 50, 0.000001
FILLER = "output line of the agent's command\n" * 14  # an observation of about 0.5 KB


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("-f", "--file", required=True)
    p.add_argument("--config-file", required=True)
    p.add_argument("-n", "--name", required=True)
    args, _unknown = p.parse_known_args()
    with open(args.config_file, "rb") as f:
        core = tomllib.load(f).get("core", {})
    found = re.search(r"^EVENTS:\s*(\d+)\s+([\d.]+)\s+(sessions|elsewhere)\s*$", Path(args.file).read_text(), re.M)
    if not found:
        sys.stderr.write("event_writer: the prompt has no `EVENTS: <count> <seconds> <sessions|elsewhere>` line\n")
        return 1
    count, seconds, where = int(found.group(1)), float(found.group(2)), found.group(3)
    sid = session_id(args.name)
    store = os.environ.get("FILE_STORE_PATH") or core.get("file_store_path", "~/.openhands")
    folder = Path(os.path.expanduser(store)) / where / sid / "events"
    folder.mkdir(parents=True, exist_ok=True)

    calls = 0
    last: list[dict] = []

    def write(event: dict) -> None:
        event = {"id": n, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), **event}
        (folder / f"{n}.json").write_text(json.dumps(event))
        last[:] = [*last[-3:], event]

    t0 = time.monotonic()
    for n in range(count):
        if n % 2 == 0:
            calls += 1
            tokens_in, tokens_out = PROMPT_TOKENS * calls, COMPLETION_TOKENS * calls
            write(
                {
                    "source": "agent",
                    "action": "run",
                    "message": f"step {calls}",
                    "args": {"command": f"step {calls}"},
                    "llm_metrics": {
                        "accumulated_cost": tokens_in * PRICE_IN,
                        "max_budget_per_task": None,
                        "accumulated_token_usage": {
                            "model": "default",
                            "prompt_tokens": tokens_in,
                            "completion_tokens": tokens_out,
                            "cache_read_tokens": 0,
                            "cache_write_tokens": 0,
                        },
                    },
                }
            )
        else:
            write(
                {
                    "source": "environment",
                    "observation": "run",
                    "content": FILLER,
                    "extras": {"command": f"step {calls}", "exit_code": 0},
                    "message": "",
                }
            )
        pause = t0 + (n + 1) * seconds / count - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    n = count
    write(
        {
            "source": "environment",
            "observation": "agent_state_changed",
            "content": "",
            "extras": {"agent_state": "finished", "reason": ""},
            "message": "",
        }
    )
    sys.stderr.write(
        f"\x1b[92m{time.strftime('%H:%M:%S')} - openhands:INFO\x1b[0m: agent_controller.py:679 - "
        f"[Agent Controller {sid}] Setting agent(CodeActAgent) state from AgentState.RUNNING to "
        "AgentState.FINISHED\n"
    )
    trajectory = os.environ.get("SAVE_TRAJECTORY_PATH") or core.get("save_trajectory_path")
    if trajectory:
        target = Path(trajectory)
        if target.is_dir():
            target = target / f"{sid}.json"
        target.write_text(json.dumps(last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
