#!/usr/bin/env bash
# Installs the real OpenHands (openhands-ai, default 1.6.0: the newest release that still has the
# headless entrypoint `python -m openhands.core.main`) into a virtual environment of its own, and
# prints that environment's python as the last line. A second call only prints it.
#   usage: examples/install-openhands.sh [DIR]   (default ~/.cache/run_batch/openhands-VERSION)
# Needs python3.12 or python3.13 on PATH: OpenHands requires Python >=3.12,<3.14.
set -euo pipefail
VERSION=${OPENHANDS_VERSION:-1.6.0}
DIR=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/run_batch/openhands-$VERSION}
PY=$DIR/bin/python
if [[ -x $PY ]] && "$PY" -c 'import openhands.core.main' 2>/dev/null; then echo "$PY"; exit 0; fi
BASE=
for candidate in python3.13 python3.12; do
  if command -v "$candidate" >/dev/null; then BASE=$(command -v "$candidate"); break; fi
done
if [[ -z $BASE ]]; then
  echo "install-openhands: needs python3.12 or python3.13 on PATH (OpenHands requires >=3.12,<3.14); or set OPENHANDS_PYTHON" >&2
  exit 2
fi
if ! "$BASE" -m venv "$DIR" 2>/dev/null; then
  # Some distributions' Pythons have ensurepip without its wheels: bootstrap pip from a wheel.
  rm -rf "$DIR"
  "$BASE" -m venv --without-pip "$DIR"
  python3 -m pip download -q --no-deps pip -d "$DIR/pip-wheel"
  WHEEL=$(ls "$DIR"/pip-wheel/pip-*.whl)
  "$PY" "$WHEEL/pip" install -q --no-index "$WHEEL"
fi
"$DIR/bin/pip" download -q --no-deps "openhands-ai==$VERSION" -d "$DIR/wheel"
# Pin every dependency to the lock file shipped inside the wheel: unpinned, pip backtracks for ages.
"$PY" - "$DIR" <<'EOF'
import glob, sys, tomllib, zipfile
folder = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{folder}/wheel/openhands_ai-*.whl")[0])
lock = tomllib.loads(wheel.read("openhands/poetry.lock").decode())
registry = [p for p in lock["package"]
            if p.get("source", {}).get("type") not in ("git", "url", "directory", "file")]
pins = sorted({f"{p['name']}=={p['version']}" for p in registry if p["name"] != "openhands-ai"})
with open(f"{folder}/constraints.txt", "w") as f:
    f.write("\n".join(pins) + "\n")
EOF
"$DIR/bin/pip" install -q -c "$DIR/constraints.txt" "$DIR"/wheel/openhands_ai-*.whl
"$PY" -c 'import openhands.core.main' && echo "$PY"
