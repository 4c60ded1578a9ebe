"""``python -m controller.emulator`` for a person trying things out: the printed ``export`` lines are
enough for every CLI command, ``--auth`` prints ready ``curl`` lines that work against ``handle_http``
with no cloud account, and a port already in use is one line, not a traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = str(Path(sys.executable).parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLBACK_", "SLACK_", "GOOGLE_"))}
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture
def emulator_output() -> Iterator[tuple[list[str], int]]:
    http_port = _free_port()
    cmd = [sys.executable, "-m", "controller.emulator", "--run-port", "0", "--slack-port", "0"]
    cmd += ["--monitoring-port", "0", "--auth", "--auth-port", "0", "--http-port", str(http_port)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("Serving until Ctrl-C"):
                break
        yield lines, http_port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)


def test_exports_alone_are_enough_for_a_cli_command(emulator_output: tuple[list[str], int]) -> None:
    lines, _ = emulator_output
    exports = [line.strip() for line in lines if line.strip().startswith("export ")]
    assert any(line.startswith("export GOOGLE_CLOUD_PROJECT=demo-proj") for line in exports)
    script = "\n".join([*exports[:5], f"{sys.executable} -m controller status checkout --region us-central1"])
    done = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Service checkout (demo-proj/us-central1)")


def test_printed_curl_lines_work_against_handle_http(emulator_output: tuple[list[str], int]) -> None:
    lines, http_port = emulator_output
    start = lines.index(next(line for line in lines if line.startswith("Try the HTTP API")))
    commands = [
        line.strip()
        for line in lines[: start + 8]
        if line.strip().startswith(("export ", "functions-framework", "TOKEN="))
    ]
    curls = [line.strip() for line in lines[start + 1 :] if line.strip().startswith("curl -sS ")]
    status, rollback, gate = curls[:3]
    assert any(c.startswith("functions-framework --target handle_http") for c in commands)
    wait = f"for i in $(seq 1 150); do (echo > /dev/tcp/127.0.0.1/{http_port}) 2>/dev/null && break; sleep 0.1; done"
    script = "\n".join(
        [
            "set -e",
            *commands[:-1],  # the exports and functions-framework (which the printed line backgrounds)
            "FF=$!",
            "trap 'kill $FF; wait $FF' EXIT",
            wait,
            commands[-1],  # TOKEN=$(curl ... /token)
            f"echo STATUS; {status}; echo",
            f"echo ROLLBACK; {rollback}; echo",
            f"echo GATE; {gate}; echo",
        ]
    )
    done = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert '"service"' in out.split("ROLLBACK")[0] and "checkout-00042-xyz" in out.split("ROLLBACK")[0]
    rolled = out.split("ROLLBACK")[1].split("GATE")[0]
    assert '"changed": true' in rolled and "operator@example.com" in rolled, out
    assert '"verdict"' in out.split("GATE")[1], out


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "controller.emulator", "--run-port", str(port), "--slack-port", "0"],
            cwd=ROOT,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"python -m controller.emulator: error: port already in use (--run-port {port}): "
        "stop what listens there, or pass another port (0 = any free one)"
    ]
