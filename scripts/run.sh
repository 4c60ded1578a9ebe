#!/usr/bin/env bash
# The main job, locally: installs the runtime into .venv, starts the Cloud Run and Slack emulators
# with a sample service, serves handle_alert (functions-framework) wired to them, posts the shipped
# sample alert and shows the rollback. Keeps serving until Ctrl-C (pass --once to stop after it).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
exec .venv/bin/python -m controller demo "$@"
