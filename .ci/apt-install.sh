#!/usr/bin/env bash
# apt-install.sh WHAT WHO_SKIPS PACKAGE...: install Debian packages for a part of the tests, as
# root or through passwordless sudo. Never fails the caller: when apt-get cannot install them (no
# root, no network, not Debian), it says so in a line and exits 0, and WHO_SKIPS (the tests that
# need them) then skip with that reason. Used by install-slurm.sh and install-chromium.sh.
set -uo pipefail
what=$1 who_skips=$2
shift 2

as_root=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "$what: not installed and not root: $who_skips will skip"
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$what: not installed and no apt-get here: $who_skips will skip"
  exit 0
fi

echo "$what: installing $* with apt-get..."
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
if "${as_root[@]}" apt-get update -q >"$log" 2>&1 &&
   "${as_root[@]}" apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1; then
  echo "$what: installed $*"
else
  echo "$what: apt-get failed, $who_skips will skip; the end of its output:"
  tail -n 5 "$log"
fi
rm -f "$log"
exit 0
