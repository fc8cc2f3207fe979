#!/usr/bin/env bash
# Installs a real OpenHands into a virtual environment of its own and prints that environment's
# python as the LAST LINE of stdout; every message goes to stderr. When a finished install is
# already there, it prints the path and does nothing else (no Python is started).
#
#   usage: examples/install-openhands.sh [--version V] [--python PATH] [--find-python] [DIR]
#
#   --version V (or OPENHANDS_VERSION=V), one of:
#     1.6.0       openhands-ai 1.6.0, the default: the newest release with the headless entrypoint
#                 `python -m openhands.core.main`; every dependency pinned to the lock file in its
#                 wheel (unpinned, pip backtracks for ages). Needs Python 3.12 or 3.13.
#     cli-1.16.0  the V1 CLI, PyPI package `openhands` 1.16.0: the `openhands` executable in DIR/bin.
#                 Needs Python 3.12 exactly (under 3.11 pip silently takes an empty 0.0.0 placeholder,
#                 under 3.13 an old 1.2.1).
#     0.33.0      openhands-ai 0.33.0 for its `local` runtime (no Docker): the same lock-file pins,
#                 plus jupyter-kernel-gateway, Poetry 2.1.2 (in DIR/poetry-venv, linked as
#                 DIR/bin/poetry), a system Chromium linked where Playwright looks for its own
#                 (DIR/ms-playwright; Debian's `chromium` is installed with apt-get when missing and
#                 this runs as root; else OPENHANDS_CHROMIUM=/path/to/the/browser binary) and the
#                 wrapper DIR/bin/openhands-core-main, which sets VIRTUAL_ENV, PATH,
#                 PLAYWRIGHT_BROWSERS_PATH (and a USER other than root/openhands) and runs
#                 `python -m openhands.core.main`: give run_batch
#                 `--command DIR/bin/openhands-core-main --openhands-version 0.33.0`. Python 3.12.
#     sdk-1.58.2  the SDK alone: openhands-sdk and openhands-tools 1.58.2, for run_batch's own driver:
#                 `--entrypoint sdk --command DIR/bin/python`. Every dependency pinned to the list
#                 this script carries (what pip resolved on 2026-12-07; unpinned, pip takes minutes
#                 to resolve the same set and a later day may give another). Python 3.12 or 3.13.
#     sdk-1.21.0  the SDK of the V1 CLI 1.16.0 (openhands-sdk and openhands-tools 1.21.0) without the
#                 CLI, pinned to the versions in the CLI's environment of 2026-12-07. Python 3.12.
#   DIR           default ${XDG_CACHE_HOME:-~/.cache}/run_batch/openhands-V
#   --python PATH (or OPENHANDS_BASE_PYTHON=PATH): the Python to build it on, instead of searching.
#   --find-python: only say which Python it would build on (last line: its path); install nothing.
#
# The Python is found by running each candidate (a version check), not by `command -v`: pyenv puts
# a shim for every installed version on PATH, and a shim only runs for the version pyenv selects.
# In order: python3.X on PATH (what your shell or PYENV_VERSION selects), then pyenv's installs
# ($(pyenv root)/versions/X.*, PYENV_VERSION's first), then uv's managed Pythons; in each, the
# Python versions OpenHands accepts, the preferred first. Prints the choice and why in one line.
set -euo pipefail

# --- what can be installed: one `case` arm per OpenHands generation -----------------------------
# PACKAGE/PACKAGE_VERSION: the PyPI release; PYTHONS: the Python minor versions it runs on, the
# preferred first; PIN: `wheel-lock` pins every dependency to the poetry.lock inside the wheel,
# `carried` to the list pins_for prints (below), `none` leaves it to pip;
# CHECK: a command run once inside the new environment to prove it starts (CHECK_SAY: how the
# progress line names it, when not the command itself); SIZE/TIME: estimates (measured on 2
# cores); LABEL: its name in messages; EXTRAS: more packages, pinned the same way; LOCAL_RUNTIME:
# also set up what 0.33's local runtime runs (Poetry, Chromium, the wrapper); RUN_HINT: how to give
# it to run_batch, said after the install.
EXTRAS=() LOCAL_RUNTIME= CHECK_SAY= RUN_HINT=
# What run_batch's SDK driver imports (run_batch.py, "The SDK driver"): the check of the SDK installs.
SDK_DRIVER_IMPORTS='from openhands.sdk import LLM, Agent, AgentContext, Conversation, ConversationExecutionStatus, LLMSummarizingCondenser
from openhands.sdk.context import load_project_skills
from openhands.sdk.event import ActionEvent
from openhands.sdk.event.conversation_error import ConversationErrorEvent
from openhands.sdk.security.confirmation_policy import NeverConfirm
from openhands.sdk.tool import Tool
from openhands.tools import TaskToolSet
from openhands.tools.file_editor import FileEditorTool
from openhands.tools.preset.default import get_default_condenser, register_builtins_agents
from openhands.tools.task_tracker import TaskTrackerTool
from openhands.tools.terminal import TerminalTool
from pydantic import SecretStr'
spec() {
  case $1 in
    1.6.0)
      PACKAGE=openhands-ai PACKAGE_VERSION=1.6.0 PYTHONS="3.12 3.13" PIN=wheel-lock
      CHECK=(bin/python -c 'import openhands.core.main') SIZE="1.6 GB" TIME="2-4 minutes"
      LABEL="openhands-ai 1.6.0" ;;
    cli-1.16.0)
      PACKAGE=openhands PACKAGE_VERSION=1.16.0 PYTHONS="3.12" PIN=none
      CHECK=(bin/openhands --help) SIZE="800 MB" TIME="2 minutes"
      LABEL="openhands 1.16.0 (the V1 CLI)" ;;
    0.33.0)
      PACKAGE=openhands-ai PACKAGE_VERSION=0.33.0 PYTHONS="3.12" PIN=wheel-lock
      EXTRAS=(jupyter-kernel-gateway) LOCAL_RUNTIME=1
      CHECK=(bin/openhands-core-main --help) SIZE="1.1 GB" TIME="2-4 minutes"
      LABEL="openhands-ai 0.33.0" ;;
    sdk-1.58.2|sdk-1.21.0)
      PACKAGE=openhands-sdk PACKAGE_VERSION=${1#sdk-} PIN=carried
      EXTRAS=("openhands-tools==$PACKAGE_VERSION")
      CHECK=(bin/python -c "$SDK_DRIVER_IMPORTS") CHECK_SAY="the imports of run_batch's SDK driver"
      LABEL="openhands-sdk $PACKAGE_VERSION (with openhands-tools)"
      RUN_HINT="run_batch.py --entrypoint sdk --command DIR/bin/python, with LLM_MODEL and LLM_API_KEY (and LLM_BASE_URL) set, or an agent_settings.json in ~/.openhands"
      if [[ $1 == sdk-1.58.2 ]]; then PYTHONS="3.12 3.13" SIZE="660 MB" TIME="3-5 minutes"
      else PYTHONS="3.12" SIZE="740 MB" TIME="3-5 minutes"; fi ;;
    *)
      echo "install-openhands: unknown version '$1'; known: 1.6.0 (openhands-ai, default), cli-1.16.0 (the V1 CLI), 0.33.0 (openhands-ai, local runtime), sdk-1.58.2 and sdk-1.21.0 (the SDK alone, for --entrypoint sdk)" >&2
      exit 2 ;;
  esac
}

say() { echo "install-openhands: $*" >&2; }
die() { say "$*"; exit 1; }

VERSION=${OPENHANDS_VERSION:-1.6.0}
BASE=${OPENHANDS_BASE_PYTHON:-}
DIR=
FIND_ONLY=
while (($#)); do
  case $1 in
    --version) VERSION=${2:?--version needs a value}; shift 2 ;;
    --version=*) VERSION=${1#*=}; shift ;;
    --python) BASE=${2:?--python needs a path}; shift 2 ;;
    --python=*) BASE=${1#*=}; shift ;;
    --find-python) FIND_ONLY=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
    -*) echo "install-openhands: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [[ -z $DIR ]] || { echo "install-openhands: one DIR only (see --help)" >&2; exit 2; }
       DIR=$1; shift ;;
  esac
done
spec "$VERSION"
DIR=${DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/run_batch/openhands-$VERSION}
DIR=${DIR%/}
PY=$DIR/bin/python
DIST=${PACKAGE//-/_}-$PACKAGE_VERSION.dist-info  # the installed package's metadata folder
MARKER=$DIR/.run_batch-installed                  # written last, after the check passed
STARTED=$DIR/.run_batch-install-started           # says the folder is ours to redo
NEEDS="Python ${PYTHONS// / or }"

# --- already there? Decided from files alone: starting OpenHands' Python costs seconds ----------
installed() {
  [[ -x $PY ]] || return 1  # also false when the Python it was built on has been removed
  if [[ -f $MARKER ]]; then
    [[ $(head -n 1 "$MARKER") == "$PACKAGE==$PACKAGE_VERSION" ]]
    return
  fi
  # An install made before markers existed: its package metadata is enough.
  [[ ! -e $STARTED ]] && compgen -G "$DIR/lib/python3.*/site-packages/$DIST" >/dev/null
}
how_to_run() {
  [[ -z $LOCAL_RUNTIME ]] ||
    say "run it with: run_batch.py --command $DIR/bin/openhands-core-main --openhands-version $PACKAGE_VERSION, and [core] runtime = \"local\" and a workspace_base in the config"
  [[ -z $RUN_HINT ]] || say "run it with: ${RUN_HINT//DIR/$DIR}"
}
if [[ -z $FIND_ONLY ]] && installed; then
  say "$LABEL is installed in $DIR"
  how_to_run
  echo "$PY"
  exit 0
fi

# --- the Python to build on ----------------------------------------------------------------------
TRIED=() SHIMS=()  # what was passed over, for the message
accepts() {  # accepts VERSION: is X.Y.Z one of $PYTHONS?
  local minor
  for minor in $PYTHONS; do [[ $1 == "$minor".* ]] && return 0; done
  return 1
}
try() {  # try PROGRAM WHERE: run it; on an accepted version set BASE (the real file), BASE_VERSION, WHY
  local out version
  if ! out=$("$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3], sys.executable)' 2>/dev/null); then
    if [[ $1 == */shims/* ]]; then SHIMS+=("${1##*/}"); else TRIED+=("$2 does not run"); fi
    return 1
  fi
  version=${out%% *}
  if ! accepts "$version"; then
    TRIED+=("$2 is Python $version")
    return 1
  fi
  BASE=${out#* } BASE_VERSION=$version WHY=$2
}
find_python() {
  local minor candidate root uvdir version
  # 1. What the shell runs under that name (a pyenv shim runs only for the version selected).
  for minor in $PYTHONS; do
    if candidate=$(command -v "python$minor"); then try "$candidate" "python$minor on PATH" && return; fi
  done
  # 2. pyenv's installs, called directly (no shim): PYENV_VERSION's first, then the newest of each.
  if command -v pyenv >/dev/null || [[ -d ${PYENV_ROOT:-$HOME/.pyenv}/versions ]]; then
    root=$(pyenv root 2>/dev/null) || root=${PYENV_ROOT:-$HOME/.pyenv}
    local selected=${PYENV_VERSION:-}
    for candidate in ${selected//:/ }; do  # PYENV_VERSION may list several, a:b
      for minor in $PYTHONS; do
        [[ -x $root/versions/$candidate/bin/python$minor ]] &&
          try "$root/versions/$candidate/bin/python$minor" "PYENV_VERSION=$candidate, called directly" && return
      done
    done
    for minor in $PYTHONS; do
      while IFS= read -r candidate; do
        version=${candidate#"$root"/versions/}
        try "$candidate" "pyenv's ${version%%/*}" && return
      done < <(compgen -G "$root/versions/$minor.*/bin/python$minor" | sort -rV)
    done
  fi
  # 3. uv's managed Pythons (uv never downloads one for `python find`).
  if command -v uv >/dev/null; then
    for minor in $PYTHONS; do
      candidate=$(uv python find --system --no-project "$minor" 2>/dev/null) &&
        try "$candidate" "uv python find $minor" && return
      uvdir=$(uv python dir 2>/dev/null) || continue
      while IFS= read -r candidate; do
        try "$candidate" "uv's managed $minor" && return
      done < <(compgen -G "$uvdir/cpython-$minor.*/bin/python$minor" | sort -rV)
    done
  fi
  return 1
}

passed_over() {  # the candidates that did not fit, in a few words
  local out='' line
  for line in "${TRIED[@]}"; do out+=", $line"; done
  local shims
  shims=$(IFS=,; echo "${SHIMS[*]}")
  case ${#SHIMS[@]} in
    0) ;;
    1) out+=", $shims on PATH is a pyenv shim of a version not selected" ;;
    *) out+=", ${shims//,/, } on PATH are pyenv shims of versions not selected" ;;
  esac
  echo "${out#, }"
}
pick_python() {  # sets BASE etc. and says which Python and why, or exits saying how to get one
  if [[ -n $BASE ]]; then
    try "$BASE" "$BASE" || die "${TRIED[-1]}, and $LABEL needs $NEEDS"
    WHY="given by --python or OPENHANDS_BASE_PYTHON"
  elif ! find_python; then
    local first=${PYTHONS%% *} line
    say "$LABEL needs $NEEDS and none runs here; get one with \`pyenv install $first\`, \`uv python install $first\` or your system's python$first package (then run this again), or name one with --python PATH"
    [[ -z $(passed_over) ]] || say "  (passed over: $(passed_over))"
    exit 2
  fi
  local passed
  passed=$(passed_over)
  say "using Python $BASE_VERSION at $BASE, found as $WHY${passed:+ ($passed)}; $LABEL needs $NEEDS"
}

if [[ -n $FIND_ONLY ]]; then
  pick_python
  echo "$BASE"
  exit 0
fi

# A folder holding something else is never touched; one this script started is finished or redone.
if [[ -e $DIR && ! -d $DIR ]]; then die "$DIR exists and is not a folder; give another DIR"; fi
if [[ -d $DIR && -n $(ls -A "$DIR") && ! -e $STARTED ]]; then
  # Another generation's install: its marker, or the metadata of openhands-ai, openhands or the SDK.
  other=$(head -n 1 "$MARKER" 2>/dev/null ||
          compgen -G "$DIR/lib/python3.*/site-packages/openhands_ai-*.dist-info" ||
          compgen -G "$DIR/lib/python3.*/site-packages/openhands-[0-9]*.dist-info" ||
          compgen -G "$DIR/lib/python3.*/site-packages/openhands_sdk-*.dist-info") || true
  other=${other##*/}
  if [[ -n $other && -x $PY ]]; then
    die "$DIR holds another install (${other%.dist-info}), not $LABEL: give another DIR"
  elif [[ -f $DIR/pyvenv.cfg ]]; then
    die "$DIR is a virtual environment without a working install of $LABEL (an older or interrupted install, or its Python is gone): remove it (rm -rf '$DIR') and run this again, or give another DIR"
  else
    die "$DIR is not empty and is not an install of $LABEL: give another DIR"
  fi
fi

# --- the install ----------------------------------------------------------------------------------
mkdir -p "$DIR"
# Two installers on one folder (a person and CI) wait for each other, then look again.
if command -v flock >/dev/null; then
  exec 9<"$DIR"
  flock -n 9 || { say "another install into $DIR is running: waiting for it"; flock 9; }
  if installed; then say "$LABEL is installed in $DIR"; echo "$PY"; exit 0; fi
fi
RESUME=
if [[ -e $STARTED && $(head -n 1 "$STARTED") == "$LABEL" ]] && try "$PY" "$PY"; then
  RESUME=1  # its environment works: pip adds only what is missing
  say "finishing the unfinished install in $DIR (Python $BASE_VERSION)"
else
  TRIED=() SHIMS=()
  pick_python
fi
# 0.33's local runtime launches a browser at start-up (5 tries, 200 s apart, when it cannot), and
# Playwright's own Chromium is a download from its CDN: a system Chromium is linked in its place.
find_chromium() {  # prints the browser binary itself (not a launcher script)
  local c
  if [[ -n ${OPENHANDS_CHROMIUM:-} ]]; then
    [[ -x $OPENHANDS_CHROMIUM ]] && echo "$OPENHANDS_CHROMIUM"
    return
  fi
  if command -v dpkg >/dev/null; then
    c=$(dpkg -L chromium 2>/dev/null | grep '/chromium/chromium$' || true)
    c=${c%%$'\n'*}
    [[ -n $c && -x $c ]] && { echo "$c"; return 0; }
  fi
  for c in /usr/lib/chromium/chromium /usr/lib64/chromium-browser/chromium-browser \
           /usr/lib/chromium-browser/chromium-browser; do
    [[ -x $c ]] && { echo "$c"; return 0; }
  done
  return 1
}
CHROME='' APT_CHROMIUM=''
if [[ -n $LOCAL_RUNTIME ]]; then
  if CHROME=$(find_chromium); then
    say "using the Chromium at $CHROME for Playwright"
  elif [[ -n ${OPENHANDS_CHROMIUM:-} ]]; then
    die "OPENHANDS_CHROMIUM=$OPENHANDS_CHROMIUM is not an executable file"
  elif [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    APT_CHROMIUM=1
    say "no Chromium here: Debian's chromium package will be installed with apt-get (about 480 MB)"
  else
    say "$LABEL's local runtime needs a Chromium (its start-up check launches a browser) and none is installed."
    say "  On Debian or Ubuntu, run:  sudo apt-get update && sudo apt-get install -y chromium"
    say "  or name the browser binary: OPENHANDS_CHROMIUM=/path/to/chrome bash $0 --version $VERSION"
    die "then run this again; nothing was installed"
  fi
fi
if [[ -e $STARTED && -z $RESUME ]]; then
  say "$DIR holds an unfinished install that cannot be finished: starting again"
  find "$DIR" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
fi
echo "$LABEL" > "$STARTED"
LOG=$DIR/install.log
touch "$LOG"
say "installing $LABEL into $DIR: about $TIME and $SIZE; pip's output goes to $LOG"

START=$SECONDS
TICKER=
stop_ticker() { [[ -z $TICKER ]] || kill "$TICKER" 2>/dev/null || true; TICKER=; }
trap stop_ticker EXIT
step() { stop_ticker; say "[$1] $2"; }
ticker() {  # a line every 20 s while pip works, so a quiet terminal is not a hung one
  local doing
  while sleep 20 >/dev/null 2>&1; do  # a sleep left behind holds no pipe open
    if grep -q '^Installing collected packages' "$LOG"; then
      doing="unpacking into place"
    else
      doing="$(grep -c '^Collecting ' "$LOG") packages fetched"
    fi
    say "    ... $(( SECONDS - START )) s so far: $doing, $(du -sm "$DIR" 2>/dev/null | cut -f1) MB in $DIR"
  done
}
fail() {
  stop_ticker
  say "FAILED: $1 after $(( SECONDS - START )) s; the last lines of the log:"
  grep -v "^WARNING: Location '.*' is ignored" "$LOG" | tail -n 15 | sed 's/^/    /' >&2 || true
  say "full log: $LOG (run this script again to finish it)"
  exit 1
}
PIP=("$DIR/bin/pip" --disable-pip-version-check --no-input)
N=4  # steps
[[ -z $LOCAL_RUNTIME ]] || N=6

if [[ -n $RESUME ]]; then
  step 1/$N "the virtual environment is there"
elif ! { step 1/$N "creating the virtual environment"; "$BASE" -m venv "$DIR" >>"$LOG" 2>&1; }; then
  # Some distributions' Pythons have ensurepip without its wheels: bootstrap pip from a wheel.
  "$BASE" -m venv --without-pip "$DIR" >>"$LOG" 2>&1 || fail "creating the virtual environment"
  python3 -m pip download -q --no-deps pip -d "$DIR/pip-wheel" >>"$LOG" 2>&1 || fail "downloading pip"
  WHEEL=$(compgen -G "$DIR/pip-wheel/pip-*.whl" | head -n 1)
  "$PY" "$WHEEL/pip" install -q --no-index "$WHEEL" >>"$LOG" 2>&1 || fail "installing pip"
fi

REQUIREMENT=("$PACKAGE==$PACKAGE_VERSION")
CONSTRAINTS=()
if [[ $PIN == wheel-lock ]]; then
  step 2/$N "downloading $LABEL and pinning its dependencies to the lock file in its wheel"
  "${PIP[@]}" download --no-deps "$PACKAGE==$PACKAGE_VERSION" -d "$DIR/wheel" >>"$LOG" 2>&1 ||
    fail "downloading $LABEL"
  WHEEL=$(compgen -G "$DIR/wheel/${PACKAGE//-/_}-$PACKAGE_VERSION-*.whl" | head -n 1)
  [[ -n $WHEEL ]] || fail "downloading $LABEL (no wheel in $DIR/wheel)"
  "$PY" - "$WHEEL" "$DIR/constraints.txt" "$PACKAGE" >>"$LOG" 2>&1 <<'EOF' || fail "reading the lock file in the wheel"
import sys, tomllib, zipfile
wheel, out, package = sys.argv[1:]
lock = tomllib.loads(zipfile.ZipFile(wheel).read("openhands/poetry.lock").decode())
registry = [p for p in lock["package"]
            if p.get("source", {}).get("type") not in ("git", "url", "directory", "file")]
pins = sorted({f"{p['name']}=={p['version']}" for p in registry if p["name"] != package})
with open(out, "w") as f:
    f.write("\n".join(pins) + "\n")
print(f"{len(pins)} pins written to {out}")
EOF
  REQUIREMENT=("$WHEEL")
  CONSTRAINTS=(-c "$DIR/constraints.txt")
elif [[ $PIN == carried ]]; then
  # The pins are the rows between `#pins VERSION ...` and `#end` at the end of this file.
  step 2/$N "pinning $LABEL's dependencies to the list this script carries"
  sed -n "/^#pins $VERSION /,/^#end/{/^#/d;p;}" "$0" | tr -s ' ' '\n' | grep . > "$DIR/constraints.txt" || true
  (( $(wc -l < "$DIR/constraints.txt") > 10 )) || fail "reading the pins of $VERSION at the end of $0"
  echo "$(wc -l < "$DIR/constraints.txt") pins written to $DIR/constraints.txt" >> "$LOG"
  CONSTRAINTS=(-c "$DIR/constraints.txt")
else
  step 2/$N "no lock file to pin to: pip resolves $LABEL's dependencies"
fi

step 3/$N "installing $LABEL and its dependencies (the long step)"
ticker >/dev/null & TICKER=$!
"${PIP[@]}" install --progress-bar off "${CONSTRAINTS[@]}" "${REQUIREMENT[@]}" "${EXTRAS[@]}" >>"$LOG" 2>&1 || fail "pip install"
compgen -G "$DIR/lib/python3.*/site-packages/$DIST" >/dev/null ||
  fail "pip install (it did not install $LABEL: is Python $BASE_VERSION one it supports?)"

if [[ -n $LOCAL_RUNTIME ]]; then
  # The local runtime runs `poetry show -v` in site-packages, takes the venv from its first stdout
  # line `Using virtualenv: ...` (Poetry 2.1.3 on prints it on stderr: 0.33 then dies with an
  # IndexError), then `poetry run jupyter kernelgateway` there. Poetry gets a venv of its own.
  step 4/$N "Poetry 2.1.2 in $DIR/poetry-venv, and OpenHands' pyproject.toml and poetry.lock for it"
  SP=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || fail "finding site-packages"
  cp "$SP/openhands/pyproject.toml" "$SP/openhands/poetry.lock" "$SP/" >>"$LOG" 2>&1 ||
    fail "copying pyproject.toml and poetry.lock"
  [[ -x $DIR/poetry-venv/bin/python ]] || "$PY" -m venv --without-pip "$DIR/poetry-venv" >>"$LOG" 2>&1 ||
    fail "creating Poetry's virtual environment"
  "${PIP[@]}" --python "$DIR/poetry-venv/bin/python" install --progress-bar off "poetry==2.1.2" >>"$LOG" 2>&1 ||
    fail "installing Poetry 2.1.2"
  ln -sfn "$DIR/poetry-venv/bin/poetry" "$DIR/bin/poetry"

  step 5/$N "Chromium for Playwright, and the wrapper $DIR/bin/openhands-core-main"
  if [[ -n $APT_CHROMIUM ]]; then
    say "    apt-get update && apt-get install -y chromium (its output goes to $LOG)"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } >>"$LOG" 2>&1 ||
      fail "apt-get install chromium"
    CHROME=$(find_chromium) || fail "finding the browser in Debian's chromium package"
  fi
  # Playwright looks for <name>-<revision>/chrome-linux/<binary>; the revisions are its pins.
  "$PY" - "$SP/playwright/driver/package/browsers.json" "$CHROME" "$DIR/ms-playwright" >>"$LOG" 2>&1 <<'EOF' ||
import json, os, sys
browsers, chrome, root = sys.argv[1:]
revision = {b["name"]: b["revision"] for b in json.load(open(browsers))["browsers"]}
for name, folder, binary in (("chromium", "chromium", "chrome"),
                             ("chromium-headless-shell", "chromium_headless_shell", "headless_shell")):
    link = os.path.join(root, f"{folder}-{revision[name]}", "chrome-linux", binary)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(chrome, link)
    print(f"{link} -> {chrome}")
EOF
    fail "linking the browser where Playwright looks"
  cat > "$DIR/bin/openhands-core-main" <<EOF
#!/bin/sh
# openhands-ai $PACKAGE_VERSION's headless entrypoint with what its local runtime needs; written by
# run_batch's examples/install-openhands.sh. For run_batch:
#   --command $DIR/bin/openhands-core-main --openhands-version $PACKAGE_VERSION
# The local runtime runs python, poetry and jupyter from PATH, finds its venv through Poetry
# (VIRTUAL_ENV), and launches a browser from PLAYWRIGHT_BROWSERS_PATH at start-up.
DIR='$DIR'
export VIRTUAL_ENV="\$DIR" PATH="\$DIR/bin:\$PATH" PLAYWRIGHT_BROWSERS_PATH="\$DIR/ms-playwright"
# With USER root or openhands (or none) its action server adds that user and edits /etc/sudoers.
case \${USER:-} in ''|root|openhands) export USER=openhands-local ;; esac
exec "\$DIR/bin/python" -m openhands.core.main "\$@"
EOF
  chmod +x "$DIR/bin/openhands-core-main"
fi

step $N/$N "checking that it starts: ${CHECK_SAY:-${CHECK[*]}}"
# (LiteLLM would fetch its price list from the network first; its own copy is enough here.)
(cd "$DIR" && LITELLM_LOCAL_MODEL_COST_MAP=True OPENHANDS_SUPPRESS_BANNER=1 "${CHECK[@]}") >>"$LOG" 2>&1 ||
  fail "the check ${CHECK_SAY:-${CHECK[*]}}"
if [[ -n $LOCAL_RUNTIME ]]; then
  say "    and that Poetry names this venv and that Playwright launches the browser"
  first=$(cd "$SP" && VIRTUAL_ENV=$DIR PATH=$DIR/bin:$PATH poetry show -v 2>>"$LOG") ||
    fail "the check poetry show -v"
  first=${first%%$'\n'*}
  [[ $first == "Using virtualenv: $DIR" ]] || fail "the check poetry show -v (its first line is '$first')"
  PLAYWRIGHT_BROWSERS_PATH=$DIR/ms-playwright "$PY" -c '
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    p.chromium.launch().close()
print("Playwright launched the browser")' >>"$LOG" 2>&1 || fail "the check that Playwright launches $CHROME"
fi

printf '%s\npython=%s\n%s\ninstalled=%s\n' "$PACKAGE==$PACKAGE_VERSION" "$BASE_VERSION" \
  "$(grep '^home' "$DIR/pyvenv.cfg")" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$MARKER"
rm -f "$STARTED"
say "done in $(( SECONDS - START )) s: $LABEL in $DIR ($(du -sm "$DIR" | cut -f1) MB)"
how_to_run
echo "$PY"
exit 0

# --- the carried pins ------------------------------------------------------------------------------
# For each `PIN=carried` version: every package of the environment its check passed in, as
# `pip freeze` listed it, minus the packages asked for (step 2 turns them into constraints.txt).
#pins sdk-1.58.2 (pip's resolution of openhands-sdk==1.58.2 openhands-tools==1.58.2 on 2026-12-07, Python 3.12.1)
  agent-client-protocol==0.12.1 aiofile==3.12.3 aiofiles==25.1.0 aiohappyeyeballs==2.7.1
  aiohttp==3.14.3 aiosignal==1.4.0 annotated-doc==0.0.7 annotated-types==0.8.0 anthropic==0.76.0
  anyio==4.12.1 attrs==26.1.0 authlib==1.9.10 backoff==2.2.1 beartype==0.23.1 beautifulsoup4==4.15.0
  binaryornot==0.6.0 blake3==1.0.11 boto3==1.44.18 botocore==1.44.18 browser-harness==0.1.12
  browser-use-sdk==3.4.2 browser-use==0.13.9 bubus==1.5.6 cachetools==8.0.3 caio==0.12.10
  cdp-use==1.4.5 certifi==2026.10.19.post1 cffi==2.1.1 charset-normalizer==3.5.3 click==8.3.3
  cloudpickle==3.1.2 cryptography==51.0.1 cyclopts==5.5.2 deprecation==2.1.0 distro==1.9.0
  dnspython==2.9.2 docstring-parser==0.18.0 email-validator==2.4.0 exceptiongroup==1.3.2
  fakeredis==2.41.0 fastmcp-slim==3.4.11 fastmcp==3.4.11 fastuuid==0.14.0 fetch-use==0.4.0
  filelock==3.32.7 frozenlist==1.8.0 fsspec==2026.9.0 func-timeout==4.3.5 google-api-core==2.29.0
  google-api-python-client==2.188.0 google-auth-httplib2==0.4.4 google-auth-oauthlib==1.2.4
  google-auth==2.48.0 google-genai==1.65.0 googleapis-common-protos==1.76.0 griffelib==2.4.1
  groq==1.0.0 grpcio==1.85.4 h11==0.16.0 h2==4.4.1 hf-xet==1.8.0 hpack==4.2.0 httpcore==1.0.9
  httplib2==0.32.1 httpx-sse==0.4.3 httpx==0.28.1 huggingface-hub==1.16.1 hyperframe==6.1.0
  idna==3.21 importlib-metadata==8.9.0 inquirerpy==0.3.4 jaraco.classes==3.4.0 jaraco.context==6.1.2
  jaraco.functools==4.6.0 jeepney==0.9.0 jinja2==3.1.6 jiter==0.19.0 jmespath==1.1.0 joserfc==1.8.0
  json-repair==0.64.6 jsonref==1.1.0 jsonschema-path==0.5.0 jsonschema-specifications==2025.9.1
  jsonschema==4.26.0 keyring==25.7.0 libtmux==0.62.0 litellm==1.105.7 lmnr-claude-code-proxy==0.2.0
  lmnr==0.7.66 lupa==2.8 lxml==6.2.1 markdown-it-py==4.3.0 markdownify==1.2.2 markupsafe==3.0.4
  mcp==1.28.1 mdurl==0.1.2 more-itertools==11.2.1 multidict==6.9.1 oauthlib==4.0.1 ollama==0.6.1
  openai==2.26.0 openapi-pydantic==0.6.0 opentelemetry-api==1.45.1
  opentelemetry-exporter-http-transport==0.66b1 opentelemetry-exporter-otlp-common==0.66b1
  opentelemetry-exporter-otlp-proto-common==1.45.1 opentelemetry-exporter-otlp-proto-grpc==1.45.1
  opentelemetry-exporter-otlp-proto-http==1.45.1 opentelemetry-instrumentation-threading==0.66b1
  opentelemetry-instrumentation==0.66b1 opentelemetry-proto==1.45.1 opentelemetry-sdk==1.45.1
  opentelemetry-semantic-conventions-ai==0.4.13 opentelemetry-semantic-conventions==0.66b1
  orjson==3.13.0 packaging==26.4 pathable==0.6.0 pfzy==0.3.4 pillow==12.3.0 platformdirs==4.14.9
  portalocker==4.4.2 posthog==7.7.0 prompt-toolkit==3.0.53 propcache==0.5.4 proto-plus==1.29.0
  protobuf==6.33.6 psutil==7.2.2 py-key-value-aio==0.4.6 pyasn1-modules==0.4.2 pyasn1==0.6.5
  pycparser==3.12 pydantic-core==2.46.5 pydantic-settings==2.16.3 pydantic==2.13.5 pygments==2.21.0
  pyjwt==2.15.1 pyotp==2.9.0 pyparsing==3.3.3 pypdf==6.15.0 pyperclip==1.11.0
  python-dateutil==2.9.0.post0 python-docx==1.2.0 python-dotenv==1.2.2 python-frontmatter==1.3.0
  python-json-logger==4.2.0 python-multipart==0.0.34 pyyaml==6.0.4 redis==8.2.0 referencing==0.37.0
  regex==2026.12.2 reportlab==4.4.9 requests-oauthlib==2.0.0 requests==2.33.0 rich-rst==2.2.0
  rich==14.3.3 rpds-py==2026.9.1 rsa==4.9.1 s3transfer==0.19.3 screeninfo==0.8.1
  secretstorage==3.5.0 shellingham==1.5.4 six==1.17.0 sniffio==1.3.1 socksio==1.0.0
  sortedcontainers==2.4.0 soupsieve==4.1.4 sse-starlette==3.7.1 starlette==1.10.0 tenacity==9.1.4
  tiktoken==0.14.0 tokenizers==0.23.3 tom-swe==1.0.3 tqdm==4.70.1 tree-sitter-bash==0.25.1
  tree-sitter==0.26.1 typer==0.29.2 typing-extensions==4.15.0 typing-inspection==0.4.5
  uncalled-for==0.6.2 uritemplate==4.2.0 urllib3==2.8.0 uuid7==0.1.0 uvicorn==0.55.0
  watchfiles==1.3.0 wcwidth==0.9.5 websockets==15.0.1 wrapt==1.17.3 yarl==1.25.1 zipp==4.1.2
#end
#pins sdk-1.21.0 (pip's resolution of openhands-sdk==1.21.0 openhands-tools==1.21.0 within the V1 CLI 1.16.0's environment of 2026-12-07, Python 3.12.1)
  agent-client-protocol==0.8.1 aiofile==3.12.3 aiofiles==25.1.0 aiohappyeyeballs==2.7.1
  aiohttp==3.14.5 aiosignal==1.4.0 annotated-types==0.8.0 anthropic==0.125.0 anyio==4.16.0
  attrs==26.1.0 authlib==1.9.10 backoff==2.2.1 bashlex==0.18 beartype==0.23.1 beautifulsoup4==4.15.0
  binaryornot==0.6.0 blake3==1.0.11 boto3==1.44.18 botocore==1.44.18 browser-use-sdk==3.12.1
  browser-use==0.11.13 bubus==1.5.6 cachetools==8.0.3 caio==0.12.10 cdp-use==1.4.5
  certifi==2026.10.19.post1 cffi==2.1.1 charset-normalizer==3.5.3 click==8.5.1 cloudpickle==3.1.3
  cryptography==51.0.1 cyclopts==5.5.2 deprecation==2.1.0 distro==1.9.0 dnspython==2.9.2
  docstring-parser==0.18.0 email-validator==2.4.0 exceptiongroup==1.3.2 fakeredis==2.41.0
  fastmcp-slim==4.1.7 fastmcp==4.1.7 fastuuid==0.14.0 filelock==4.3.2 frozenlist==1.8.0
  fsspec==2026.9.0 func-timeout==4.3.5 google-api-core==2.44.0 google-api-python-client==2.202.0
  google-auth-httplib2==0.4.4 google-auth-oauthlib==1.5.0 google-auth==2.63.1 google-genai==1.75.0
  googleapis-common-protos==1.76.0 griffelib==2.4.1 groq==1.7.0 grpcio==1.85.4 h11==0.16.0 h2==4.4.1
  hf-xet==1.8.0 hpack==4.2.0 httpcore2==2.17.0 httpcore==1.0.9 httplib2==0.32.1 httpx2==2.17.0
  httpx==0.29.0 huggingface-hub==2.4.0 hyperframe==6.1.0 idna==3.21 importlib-metadata==8.9.0
  inquirerpy==0.3.4 jinja2==3.1.6 jiter==0.19.0 jmespath==1.1.0 joserfc==1.8.0 json-repair==0.64.6
  jsonref==1.1.0 jsonschema-path==0.5.0 jsonschema-specifications==2025.9.1 jsonschema==4.26.0
  libtmux==0.62.0 litellm==1.110.2 lmnr-claude-code-proxy==0.2.0 lmnr==0.8.1 lupa==2.8 lxml==6.2.1
  markdown-it-py==4.3.0 markdownify==1.2.3 markupsafe==3.0.4 mcp-types==2.3.0 mcp==2.3.0
  mdurl==0.1.2 multidict==7.2.1 oauthlib==4.0.1 ollama==0.6.3 openai==2.54.0 openapi-pydantic==0.6.0
  opentelemetry-api==1.45.1 opentelemetry-exporter-http-transport==0.66b1
  opentelemetry-exporter-otlp-common==0.66b1 opentelemetry-exporter-otlp-proto-common==1.45.1
  opentelemetry-exporter-otlp-proto-grpc==1.45.1 opentelemetry-exporter-otlp-proto-http==1.45.1
  opentelemetry-instrumentation-threading==0.66b1 opentelemetry-instrumentation==0.66b1
  opentelemetry-proto==1.45.1 opentelemetry-sdk==1.45.1 opentelemetry-semantic-conventions-ai==0.5.1
  opentelemetry-semantic-conventions==0.66b1 orjson==3.13.0 packaging==26.4 pathable==0.6.0
  pfzy==0.3.4 pillow==13.0.0 platformdirs==4.14.9 portalocker==2.10.1 posthog==7.91.1
  prompt-toolkit==3.0.53 propcache==0.5.4 proto-plus==1.29.0 protobuf==7.36.2 psutil==7.2.2
  py-key-value-aio==0.4.6 pyasn1-modules==0.4.2 pyasn1==0.6.5 pycparser==3.12 pydantic-core==2.50.5
  pydantic-settings==2.16.3 pydantic==2.14.4 pygments==2.21.0 pyjwt==2.15.1 pyotp==2.12.1
  pyparsing==3.3.3 pypdf==7.1.1 pyperclip==1.11.0 python-dateutil==2.9.0.post0 python-docx==1.2.0
  python-dotenv==1.2.4 python-frontmatter==1.3.0 python-json-logger==4.2.0 python-multipart==0.0.34
  pyyaml==6.0.4 redis==8.2.0 referencing==0.37.0 regex==2026.12.2 reportlab==5.1.0
  requests-oauthlib==2.0.0 requests==2.34.2 rich-rst==2.2.0 rich==14.2.0 rpds-py==2026.9.1
  s3transfer==0.19.3 screeninfo==0.8.1 six==1.17.0 sniffio==1.3.1 socksio==1.0.0
  sortedcontainers==2.4.0 soupsieve==4.1.4 sse-starlette==3.7.1 starlette==1.10.0 tenacity==9.1.4
  tiktoken==0.14.0 tokenizers==0.23.3 tom-swe==1.0.3 tqdm==4.70.1 truststore==0.10.5
  typing-extensions==4.16.0 typing-inspection==0.4.5 uncalled-for==0.6.2 uritemplate==4.2.0
  urllib3==2.8.0 uuid7==0.1.0 uvicorn==0.55.0 watchfiles==1.3.0 wcwidth==0.9.5 websockets==16.1.1
  wrapt==2.5.2 yarl==1.25.1 zipp==4.1.2
#end
