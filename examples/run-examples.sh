#!/usr/bin/env bash
# The main job: run the example prompts (examples/prompts/*.md) through a real OpenHands with
# run_batch, then print the report. Arguments are passed on to run-batch (e.g. --rerun).
#
# OpenHands: the interpreter in $OPENHANDS_PYTHON, else one this script installs
#   (examples/install-openhands.sh, or this workplace's ../shared/real-openhands/setup.sh).
# LLM: yours when LLM_MODEL is set (with LLM_API_KEY / LLM_BASE_URL as OpenHands reads them);
#   otherwise the tests' scripted OpenAI-compatible server on 127.0.0.1, loudly labelled:
#   its answers are canned and its prices made up.
# Output: examples/output/ (results, trajectories, logs, summary.json).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
OUT=${RUN_BATCH_EXAMPLES_OUT:-$HERE/output}

# run_batch itself, in its own virtual environment
if [[ ! -x $ROOT/.venv/bin/run-batch ]]; then
  python3 -m venv "$ROOT/.venv"
  "$ROOT/.venv/bin/pip" install -q -e "$ROOT"
fi

# a real OpenHands
if [[ -z ${OPENHANDS_PYTHON:-} ]]; then
  if [[ -x $ROOT/../shared/real-openhands/setup.sh ]]; then
    OPENHANDS_PYTHON=$("$ROOT/../shared/real-openhands/setup.sh" | tail -n 1)
  else
    OPENHANDS_PYTHON=$("$HERE/install-openhands.sh" | tail -n 1)
  fi
fi
"$OPENHANDS_PYTHON" -c 'import openhands.core.main' || {
  echo "run-examples: $OPENHANDS_PYTHON has no openhands.core.main (openhands-ai <= 1.6.0 needed)" >&2; exit 2; }

mkdir -p "$OUT/workspace" "$OUT/file_store"
CONFIG=$OUT/openhands-config.toml
SERVER_PID=
trap '[[ -n $SERVER_PID ]] && kill $SERVER_PID 2>/dev/null || true' EXIT
if [[ -n ${LLM_MODEL:-} ]]; then
  echo "== LLM: your model $LLM_MODEL (from LLM_MODEL; the key stays in your environment) =="
  LLM_SECTION="[llm]
num_retries = 4"
else
  PORT_FILE=$(mktemp)
  "$ROOT/.venv/bin/python" "$ROOT/tests/llm_server.py" > "$PORT_FILE" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q PORT "$PORT_FILE" && break; sleep 0.05; done
  PORT=$(awk '/PORT/ {print $2}' "$PORT_FILE"); rm -f "$PORT_FILE"
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
LITELLM_LOCAL_MODEL_COST_MAP=True "$ROOT/.venv/bin/run-batch" \
  --prompt-dir "$HERE/prompts" --project-dir "$OUT" --output-dir "$OUT/batch_output" \
  --base-config "$CONFIG" --command "$OPENHANDS_PYTHON -m openhands.core.main" \
  --max-workers 2 --timeout 300 "$@" || status=$?
echo
"$ROOT/.venv/bin/run-batch" --report --output-dir "$OUT/batch_output" || true
exit $status
