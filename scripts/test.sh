#!/usr/bin/env bash
# The test command: installs everything into .venv, then lint, type-check and the whole test suite.
# Needs only python3 (3.11+; PYTHON picks another) and, for the Pub/Sub end-to-end test, Google's
# Pub/Sub emulator (Debian packages google-cloud-cli google-cloud-cli-pubsub-emulator and Java 17:
# see the README; `bash scripts/test.sh -m "not pubsub"` runs everything else).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUIREMENTS=requirements-dev.txt
# shellcheck source=scripts/venv.sh
. scripts/venv.sh

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== import contracts (the folders are the layers)"
.venv/bin/lint-imports --no-cache
echo "== mypy (strict)"
.venv/bin/mypy controller main.py tests bench
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
