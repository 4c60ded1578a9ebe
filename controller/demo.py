"""The local stack a new user runs first: no cloud account needed.

``python -m controller demo`` starts the Cloud Run and Slack emulators with a sample service
(``checkout``: three Ready revisions, the newest serving 100% through LATEST), serves
``handle_alert`` with the real functions-framework wired to them, posts the shipped sample
alert (a 5xx incident on the newest revision) and prints what happened: the traffic before
and after, and the Slack message. It then keeps serving so more alerts can be posted
(``--once`` stops after the sample instead).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "pubsub-push-5xx-open.json"
PROJECT, REGION, SERVICE = "demo-proj", "us-central1", "checkout"
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def function_env(run_url: str, slack_api_url: str, **extra: str) -> dict[str, str]:
    """Environment that wires the function to the local emulators (never to Google or Slack)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLBACK_", "SLACK_"))}
    env.update(
        {
            "ROLLBACK_RUN_ENDPOINT": run_url,
            "ROLLBACK_SLACK_API_URL": slack_api_url,
            "SLACK_BOT_TOKEN": "xoxb-local-demo",
            "SLACK_CHANNEL": "#deploys",
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


def start_function(
    target: str, port: int, env: dict[str, str], *, log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """Serve ``main.py``'s ``target`` with functions-framework (gunicorn) on 127.0.0.1:port."""
    cmd = [sys.executable, "-m", "functions_framework", "--target", target, "--source", str(ROOT / "main.py")]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    if log_path is None:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    else:
        with open(log_path, "wb") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"functions-framework exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    stop_process(proc)
    raise RuntimeError(f"functions-framework did not listen on port {port} within {START_TIMEOUT:.0f}s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def post_push(port: int, body: dict[str, Any]) -> requests.Response:
    """POST a raw Pub/Sub push body, as Pub/Sub (and its emulator) would."""
    return requests.post(f"http://127.0.0.1:{port}/projects/{PROJECT}/topics/monitoring-alerts", json=body, timeout=30)


def _traffic_line(traffic: list[dict[str, Any]]) -> str:
    parts = []
    for t in traffic:
        name = t.get("revision") or "LATEST"
        tag = f" [tag {t['tag']}]" if t.get("tag") else ""
        parts.append(f"{name} {t.get('percent', 0)}%{tag}")
    return ", ".join(parts) or "(none)"


def run(*, once: bool, port: int | None) -> int:
    from controller.emulator.cloudrun import CloudRunEmulator, seed_sample
    from controller.emulator.slack import SlackEmulator

    port = port or free_port()
    with CloudRunEmulator() as run_emu, SlackEmulator() as slack_emu:
        seed_sample(run_emu)
        print(f"Cloud Run emulator  {run_emu.url}  (service {PROJECT}/{REGION}/{SERVICE})")
        print(f"Slack emulator      {slack_emu.api_url}")
        env = function_env(run_emu.url, slack_emu.api_url)
        proc = start_function("handle_alert", port, env)
        try:
            url = f"http://127.0.0.1:{port}/"
            print(f"handle_alert        {url}  (functions-framework, wired to the emulators)\n")
            print("Traffic before:", _traffic_line(run_emu.traffic(PROJECT, REGION, SERVICE)))
            body = json.loads(SAMPLE.read_text())
            started = time.perf_counter()
            response = post_push(port, body)
            elapsed = (time.perf_counter() - started) * 1000
            print(f"Posted {SAMPLE.relative_to(ROOT)} → HTTP {response.status_code} in {elapsed:.0f} ms")
            print("Traffic after: ", _traffic_line(run_emu.traffic(PROJECT, REGION, SERVICE)))
            slack_emu.wait_for_messages(1, timeout=5)
            for message in slack_emu.messages:
                print(f"Slack → {message.get('channel')}: {message.get('text')}")
            if once:
                return 0 if response.status_code == 200 else 1
            print(
                "\nServing until Ctrl-C. Post another alert with:\n"
                f"  curl -sS -X POST -H 'Content-Type: application/json' --data @{SAMPLE.relative_to(ROOT)} "
                f"{url}projects/{PROJECT}/topics/monitoring-alerts\n"
                "Inspect the service with:\n"
                f"  curl -sS {run_emu.url}/v2/projects/{PROJECT}/locations/{REGION}/services/{SERVICE}"
            )
            try:
                while proc.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                print("\nstopping")
            return 0
        finally:
            stop_process(proc)
