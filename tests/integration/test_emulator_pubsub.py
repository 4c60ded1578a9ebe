"""``python -m controller.emulator --pubsub``: Google's Pub/Sub emulator joins the local stack with the
commands topic pushed to ``handle_command`` and the events topic; stopped with the rest on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.surfaces.demo import free_port

pytestmark = pytest.mark.pubsub
ROOT = Path(__file__).resolve().parent.parent.parent


def test_emulator_command_creates_the_topics_and_the_push_subscription(monkeypatch: pytest.MonkeyPatch) -> None:
    worker_port = free_port()
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
        "--pubsub",
        "--pubsub-port",
        "0",
        "--worker-port",
        str(worker_port),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("Serving until Ctrl-C"):
                break
        exports = dict(
            line.strip().removeprefix("export ").split("=", 1) for line in lines if line.strip().startswith("export ")
        )
        assert exports["ROLLBACK_COMMANDS_TOPIC"] == "projects/demo-proj/topics/rollback-commands", lines
        assert exports["ROLLBACK_EVENTS_TOPIC"] == "projects/demo-proj/topics/rollback-events"
        assert f"--target handle_command --port {worker_port}" in "\n".join(lines)

        from google.cloud import pubsub_v1  # type: ignore[attr-defined]

        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", exports["PUBSUB_EMULATOR_HOST"])
        subscriber = pubsub_v1.SubscriberClient()
        try:
            push = subscriber.get_subscription(subscription="projects/demo-proj/subscriptions/rollback-commands-push")
            assert push.push_config.push_endpoint == (
                f"http://127.0.0.1:{worker_port}/projects/demo-proj/topics/rollback-commands"
            )
            audit = subscriber.get_subscription(subscription="projects/demo-proj/subscriptions/rollback-events-audit")
            assert audit.topic == "projects/demo-proj/topics/rollback-events"
        finally:
            subscriber.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert out.strip().endswith("stopped")
