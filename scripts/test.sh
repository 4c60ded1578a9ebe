#!/usr/bin/env bash
# The test command: installs everything into .venv, then lint, type-check and the whole test suite.
# Needs only python3 (3.11+) and, for the Pub/Sub end-to-end test, Google's Pub/Sub emulator
# (Debian package google-cloud-cli-pubsub-emulator + Java 17, preinstalled on our machines).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy (strict)"
.venv/bin/mypy controller main.py tests bench
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
