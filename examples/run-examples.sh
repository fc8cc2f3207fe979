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
  # The scripted server prints `PORT <n>` once it listens (a fraction of a second).
  PORT_FILE=$(mktemp)
  "$VENV/bin/python" "$ROOT/tests/llm_server.py" > "$PORT_FILE" &
  SERVER_PID=$!
  for _ in $(seq 250); do grep -q PORT "$PORT_FILE" && break; sleep 0.02; done
  PORT=$(awk '/PORT/ {print $2}' "$PORT_FILE"); rm -f "$PORT_FILE"
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
  --max-workers 2 --timeout 300 "$@" || status=$?
echo
"$VENV/bin/run-batch" --report --output-dir "$OUT/batch_output" || true
exit $status
