#!/usr/bin/env bash
# The main job: run the example prompts (examples/prompts/*.md) through a real OpenHands with
# run_batch, then print the report. Arguments are passed on to run-batch (e.g. --rerun).
#
# run_batch: installed into .venv the first time (pip install -e .).
# OpenHands: the interpreter in $OPENHANDS_PYTHON, else the one examples/install-openhands.sh
#   installs (once, about 2 minutes, into ~/.cache/run_batch/openhands-1.6.0) and finds after that.
# LLM: yours when LLM_MODEL is set (with LLM_API_KEY / LLM_BASE_URL as OpenHands reads them);
#   otherwise the tests' scripted OpenAI-compatible server on 127.0.0.1, loudly labelled:
#   its answers are canned and its prices made up.
# Output: examples/output/ (results, trajectories, logs, summary.json).
# Then the same prompts through the V1 CLI (`openhands --headless`, PyPI package `openhands`) when
#   it is installed (by examples/install-openhands.sh --version cli-1.16.0; or OPENHANDS_CLI names
#   the program), or when RUN_BATCH_EXAMPLES_CLI=1 (then it is installed, once, about 4 minutes);
#   RUN_BATCH_EXAMPLES_CLI=0 leaves it out. Its output: examples/output/cli/, with its own report.
# A second run with nothing left to do takes about a second: every step above is skipped once done.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
OUT=${RUN_BATCH_EXAMPLES_OUT:-$HERE/output}
VENV=$ROOT/.venv

# run_batch itself, in its own virtual environment (pip's chatter goes to a log)
if [[ ! -x $VENV/bin/run-batch ]]; then
  echo "run-examples: installing run_batch into $VENV (once)"
  python3 -m venv "$VENV"
  if ! "$VENV/bin/pip" install --disable-pip-version-check -q -e "$ROOT" >"$VENV/install.log" 2>&1; then
    grep -v "^WARNING: Location '.*' is ignored" "$VENV/install.log" | tail -n 15 >&2 || true
    echo "run-examples: installing run_batch failed; full log: $VENV/install.log" >&2
    exit 1
  fi
fi

# a real OpenHands: installed once, found at once after that
if [[ -z ${OPENHANDS_PYTHON:-} ]]; then
  OPENHANDS_PYTHON=$(bash "$HERE/install-openhands.sh" | tail -n 1) || {
    status=$?
    echo "run-examples: no OpenHands (the installer said why, above); or set OPENHANDS_PYTHON" >&2
    exit $status
  }
fi
# Finding the module costs milliseconds; importing it would cost seconds.
if ! "$OPENHANDS_PYTHON" -c 'import importlib.util, sys
sys.exit(importlib.util.find_spec("openhands.core.main") is None)' 2>/dev/null; then
  echo "run-examples: $OPENHANDS_PYTHON has no openhands.core.main (openhands-ai <= 1.6.0 needed)" >&2
  exit 2
fi

mkdir -p "$OUT/workspace" "$OUT/file_store"
CONFIG=$OUT/openhands-config.toml
SERVER_PID=
trap '[[ -z $SERVER_PID ]] || kill "$SERVER_PID" 2>/dev/null || true' EXIT
if [[ -n ${LLM_MODEL:-} ]]; then
  echo "== LLM: your model $LLM_MODEL (from LLM_MODEL; the key stays in your environment) =="
  echo "== OpenHands: $OPENHANDS_PYTHON =="
  LLM_SECTION="[llm]
num_retries = 4"
else
  # The scripted server prints `PORT <n>` once it listens (a fraction of a second). It listens on
  # one fixed port where it can: the LLM's host and port are part of the experiment's identity, so
  # a second run on another port would be another experiment, which this output folder refuses.
  start_scripted_llm() {
    PORT_FILE=$(mktemp)
    "$VENV/bin/python" "$ROOT/tests/llm_server.py" --port "$1" > "$PORT_FILE" &
    SERVER_PID=$!
    for _ in $(seq 250); do
      grep -q PORT "$PORT_FILE" && break
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.02
    done
    PORT=$(awk '/PORT/ {print $2}' "$PORT_FILE"); rm -f "$PORT_FILE"
  }
  WANTED_PORT=${RUN_BATCH_EXAMPLES_LLM_PORT:-18517}
  start_scripted_llm "$WANTED_PORT"
  if [[ -z $PORT ]]; then
    echo "run-examples: port $WANTED_PORT is taken, so the scripted LLM takes a free one; earlier" \
      "results in $OUT then belong to another experiment (set RUN_BATCH_EXAMPLES_LLM_PORT to a free port)" >&2
    start_scripted_llm 0
  fi
  [[ -n $PORT ]] || { echo "run-examples: the scripted LLM server did not start" >&2; exit 1; }
  echo "=================================================================================="
  echo " NO LLM CONFIGURED (set LLM_MODEL and LLM_API_KEY to use yours)."
  echo " Using the tests' SCRIPTED LLM on 127.0.0.1:$PORT: canned answers, made-up prices."
  echo " OpenHands itself is real: $OPENHANDS_PYTHON"
  echo "=================================================================================="
  LLM_SECTION="[llm]
model = \"openai/scripted-test-llm\"
base_url = \"http://127.0.0.1:$PORT/v1\"
api_key = \"scripted-no-key\"
native_tool_calling = true
num_retries = 0
input_cost_per_token = 0.000003
output_cost_per_token = 0.000015"
fi
cat > "$CONFIG" <<EOF
[core]
runtime = "cli"
workspace_base = "$OUT/workspace"
file_store_path = "$OUT/file_store"
max_iterations = 20

[agent]
enable_browsing = false
enable_jupyter = false
enable_mcp = false

$LLM_SECTION
EOF

status=0
LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/run-batch" \
  --prompt-dir "$HERE/prompts" --project-dir "$OUT" --output-dir "$OUT/batch_output" \
  --base-config "$CONFIG" --command "$OPENHANDS_PYTHON -m openhands.core.main" \
  --max-workers 2 --timeout 300 --workspace-per-task --html \
  --evaluate "$(printf '%q %q' "$VENV/bin/python" "$HERE/evaluate.py") {task} {workspace} {trajectory}" \
  "$@" || status=$?
echo
"$VENV/bin/run-batch" --report --output-dir "$OUT/batch_output" || true

# --- the same prompts through the V1 CLI, when it is there (or asked for) --------------------------
CLI=${OPENHANDS_CLI:-}
CLI_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/run_batch/openhands-cli-1.16.0
if [[ -z $CLI && ${RUN_BATCH_EXAMPLES_CLI:-} != 0 ]] &&
   [[ ${RUN_BATCH_EXAMPLES_CLI:-} == 1 || -e $CLI_DIR/.run_batch-installed ]]; then
  # the installer prints the install's python (at once when it is there); the program is beside it
  if CLI_PYTHON=$(bash "$HERE/install-openhands.sh" --version cli-1.16.0 | tail -n 1); then
    CLI=$(dirname "$CLI_PYTHON")/openhands
  else
    echo "run-examples: the V1 CLI could not be installed (the installer said why, above)" >&2
    status=1
  fi
fi
if [[ -n $CLI && ${RUN_BATCH_EXAMPLES_CLI:-} != 0 ]]; then
  CLI_OUT=$OUT/cli
  mkdir -p "$CLI_OUT/workspace"
  echo
  echo "=================================================================================="
  echo " THE SAME PROMPTS THROUGH THE V1 CLI: $CLI --headless"
  echo " Each task works in a workspace of its own; output in $CLI_OUT/batch_output"
  CLI_ENV=()
  if [[ -n ${LLM_MODEL:-} ]]; then
    echo " LLM: your model $LLM_MODEL (run_batch passes --override-with-envs), over your"
    echo " agent_settings.json in \$OPENHANDS_PERSISTENCE_DIR (default ~/.openhands) if there is one."
  else
    # The V1 CLI reads no config.toml: its settings are agent_settings.json (an SDK Agent as JSON)
    # in $OPENHANDS_PERSISTENCE_DIR; here a folder of the examples' own, so yours stay untouched.
    echo " LLM: the SCRIPTED server on 127.0.0.1:$PORT again (canned answers, made-up prices),"
    echo " set in $CLI_OUT/persistence/agent_settings.json"
    mkdir -p "$CLI_OUT/persistence"
    cat > "$CLI_OUT/persistence/agent_settings.json" <<EOF
{"llm": {"model": "openai/scripted-test-llm", "base_url": "http://127.0.0.1:$PORT/v1",
         "api_key": "scripted-no-key", "usage_id": "agent", "num_retries": 0,
         "input_cost_per_token": 0.000003, "output_cost_per_token": 0.000015}}
EOF
    CLI_ENV=(OPENHANDS_PERSISTENCE_DIR="$CLI_OUT/persistence")
  fi
  echo "=================================================================================="
  env "${CLI_ENV[@]}" "$VENV/bin/run-batch" \
    --prompt-dir "$HERE/prompts" --project-dir "$CLI_OUT/workspace" --output-dir "$CLI_OUT/batch_output" \
    --command "$CLI" --max-workers 2 --timeout 300 --workspace-per-task --html \
    --evaluate "$(printf '%q %q' "$VENV/bin/python" "$HERE/evaluate.py") {task} {workspace} {trajectory}" \
    "$@" || status=$?
  echo
  echo "== report of the V1 CLI run ($CLI_OUT/batch_output) =="
  "$VENV/bin/run-batch" --report --output-dir "$CLI_OUT/batch_output" || true
fi
exit $status
