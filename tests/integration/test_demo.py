"""The README's run command, as a person runs it: ``python -m controller demo --once``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLBACK_", "SLACK_"))}
    return subprocess.run(
        [sys.executable, "-m", "controller", "demo", "--once", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_tells_the_story_and_keeps_the_log_lines_in_a_file(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    result = _demo("--log-file", str(log))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    lines = out.splitlines()
    assert f"Log (JSON lines)    {log}  (--verbose shows them here)" in lines
    assert "1. Traffic before:  LATEST 100%" in lines
    assert any(line.startswith("2. The alert:       incident 0.nk3l9v2x1abc open") for line in lines)
    assert "3. The decision:" in lines
    assert any("observed 0.183 (threshold 0.05)" in line for line in lines)  # the decision's numbers
    assert any(line.startswith("   measured suspect checkout-00042-xyz: 5xx 18.4% of 4,000 requests") for line in lines)
    assert "4. Traffic after:   checkout-00041-abc 100%" in lines
    assert any(line.startswith("   → #deploys: :rewind: Rolled back checkout") for line in lines)
    assert any(
        line.startswith("6. Reposted the same alert → HTTP 200: already handled: exactly once") for line in lines
    )
    assert '"severity"' not in out  # the JSON lines are in the file, not in the story
    logged = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert [line["decision"]["reason"] for line in logged if "decision" in line] == ["rolled-back", "already-handled"]


def test_demo_verbose_shows_the_json_lines(tmp_path: Path) -> None:
    result = _demo("--verbose", "--log-file", str(tmp_path / "demo.log"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"reason": "rolled-back"' in result.stdout


def test_demo_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _demo("--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"python -m controller demo: error: port {port} is already in use on 127.0.0.1: "
        "pass another --port, or omit it for a free one"
    ]
    assert "Traceback" not in result.stderr
