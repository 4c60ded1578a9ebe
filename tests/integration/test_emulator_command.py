"""``python -m controller.emulator``, as a person runs it: starts, says where, stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent.parent


def test_emulators_start_print_their_addresses_and_stop() -> None:
    cmd = [
        sys.executable,
        "-m",
        "controller.emulator",
        "--run-port",
        "0",
        "--slack-port",
        "0",
        "--monitoring-port",
        "0",
        "--simulate",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("Serving until Ctrl-C"):
                break
        exports = dict(
            line.strip().removeprefix("export ").split("=", 1)
            for line in lines
            if line.strip().startswith("export ROLLBACK_")
        )
        run_url = exports["ROLLBACK_RUN_ENDPOINT"]
        assert exports["ROLLBACK_MONITORING_ENDPOINT"].startswith("127.0.0.1:")
        service = requests.get(f"{run_url}/v2/projects/demo-proj/locations/us-central1/services/checkout", timeout=5)
        assert service.status_code == 200
        assert service.json()["name"].endswith("/services/checkout")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert out.strip().endswith("stopped")
