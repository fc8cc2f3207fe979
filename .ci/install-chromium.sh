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

bash "$(dirname "$0")/apt-install.sh" Chromium "the browser tests of the HTML report" chromium
if command -v chromium >/dev/null 2>&1; then
  echo "Chromium: $(chromium --version 2>/dev/null | tail -n 1 || echo 'version unknown')"
fi
exit 0
