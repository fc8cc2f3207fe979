#!/usr/bin/env bash
# Debian's Chromium for tests/test_html_report.py, which opens the HTML report in headless
# Chromium and drives it over the DevTools protocol (its own profile in a temporary folder).
# Idempotent: does nothing when a Chromium is there (chromium, chromium-browser, or $CHROMIUM).
# Never fails the caller: when apt-get cannot install it (no root, no network, not Debian), it
# says so and exits 0, and the browser tests skip with that reason.
set -uo pipefail

found=""
if [[ -n "${CHROMIUM:-}" && -x "${CHROMIUM}" ]]; then
  found="$CHROMIUM"
else
  for program in chromium chromium-browser; do
    if command -v "$program" >/dev/null 2>&1; then
      found=$(command -v "$program")
      break
    fi
  done
fi
if [[ -n "$found" ]]; then
  echo "Chromium: already installed ($("$found" --version 2>/dev/null | tail -n 1 || echo 'version unknown'))"
  exit 0
fi

as_root=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "Chromium: not installed and not root: the browser tests of the HTML report will skip"
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Chromium: not installed and no apt-get here: the browser tests of the HTML report will skip"
  exit 0
fi

echo "Chromium: installing Debian's chromium with apt-get..."
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
if "${as_root[@]}" apt-get update -q >"$log" 2>&1 &&
   "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium >>"$log" 2>&1; then
  echo "Chromium: installed ($(chromium --version 2>/dev/null | tail -n 1 || echo 'version unknown'))"
else
  echo "Chromium: apt-get failed, the browser tests of the HTML report will skip; the end of its output:"
  tail -n 5 "$log"
fi
rm -f "$log"
exit 0
