#!/usr/bin/env bash
# The main job, locally: installs the runtime into .venv, starts the Cloud Run and Slack emulators
# with a sample service, serves handle_alert (functions-framework) wired to them, posts the shipped
# sample alert and shows the rollback. Keeps serving until Ctrl-C (pass --once to stop after it).
# PYTHON picks the interpreter (default python3, 3.11+).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUIREMENTS=requirements.txt
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
exec .venv/bin/rollback-controller demo "$@"
