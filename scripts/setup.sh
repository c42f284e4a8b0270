#!/usr/bin/env bash
# Sets up a fresh machine for wxsub: a virtualenv with the project and its dev tools, and Apache
# Kafka's jars resolved from Maven Central into a cache outside the repo. Idempotent and quick
# when nothing changed. Needs: python3 >= 3.11, Java 17, Maven, Go (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${WXSUB_VENV:-.venv}
PY=${PYTHON:-python3}

"$PY" - <<'PYCHK' || { echo "wxsub setup: Python >= 3.11 is required (set PYTHON=...)" >&2; exit 2; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PYCHK

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.wxsub-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "==> installing wxsub and its dev tools into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[dev,bench]"
  touch "$stamp"
fi

if [ -f deploy/kafka/fetch-jars.sh ]; then
  bash deploy/kafka/fetch-jars.sh
fi
if [ -f deploy/prometheus/install.sh ]; then
  bash deploy/prometheus/install.sh
fi
# the support console's browser test runs Debian's chromium headless
if [ -f scripts/install-chromium.sh ]; then
  bash scripts/install-chromium.sh
fi
# The SDK interop probes (tests/interop: silenceper/wechat in Go, WxJava via Maven), built once
# into ~/.cache/wxsub/interop keyed by their sources' hash: instant when nothing changed. A
# missing toolchain is reported here and fails only the interop tests that need it.
if [ -f tests/interop/builds.py ]; then
  "$VENV/bin/python" -m tests.interop.builds || echo "wxsub setup: an interop probe was not built (see above)" >&2
fi
echo "==> setup done"
