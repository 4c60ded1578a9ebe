# Sourced by run.sh and test.sh (not run on its own): make sure .venv exists, was made by the
# interpreter the user means (PYTHON, default python3; 3.11+), and holds REQUIREMENTS plus this
# project (the rollback-controller command). Says what it does; never hides a failure.

PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found: install Python 3.11 or newer, or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
# "3.11.7 /usr/bin/python3.11": the version and the real interpreter behind any venv.
_identity='import os, sys; print("%d.%d.%d" % sys.version_info[:3], os.path.realpath(getattr(sys, "_base_executable", sys.executable)))'
want=$("$PY" -c "$_identity") || { echo "error: $PY does not run" >&2; exit 1; }
case "${want%% *}" in
  3.1[1-9].* | 3.[2-9][0-9].*) ;;
  *)
    echo "error: Python 3.11 or newer is needed; $PY is Python ${want%% *} (set PYTHON=/path/to/python3.11)" >&2
    exit 1
    ;;
esac

first_run=""
if [ -e .venv ]; then
  have=$(.venv/bin/python -c "$_identity" 2>/dev/null || echo "broken")
  if [ "$have" = "broken" ]; then
    echo "recreating .venv: its Python does not run"
    rm -rf .venv
  elif [ -n "${PYTHON:-}" ] && [ "$have" != "$want" ]; then
    echo "recreating .venv: it was made by ${have#* } (Python ${have%% *}); PYTHON is ${want#* } (Python ${want%% *})"
    rm -rf .venv
  fi
fi
if [ ! -e .venv ]; then
  "$PY" -m venv .venv
  first_run=1
fi

_pip() {
  # Quiet when it works; pip's whole output when it does not.
  local log
  log=$(mktemp)
  if ! .venv/bin/python -m pip install --disable-pip-version-check "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "error: pip install $* failed (output above)" >&2
    exit 1
  fi
  rm -f "$log"
}

if [ -n "$first_run" ]; then
  echo "installing dependencies into .venv (first run, a minute or two)…"
fi
_pip -r "$REQUIREMENTS"
# The project itself, editable: provides .venv/bin/rollback-controller (same commands as python -m controller).
_pip --no-deps -e .
