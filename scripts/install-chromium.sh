#!/usr/bin/env bash
# Installs Debian's `chromium` when it is missing, for the support console's browser test
# (tests/support/test_trace_e2e.py runs it headless). Idempotent and silent when installed.
# Nothing downloads a browser build: only the distribution's package.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "wxsub chromium: chromium missing; run as root or: apt-get install chromium" >&2
  exit 2
fi

echo "==> installing chromium (Debian package)"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "wxsub chromium: apt-get install chromium failed" >&2
  exit 1
fi
