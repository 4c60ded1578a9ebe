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
from datetime import UTC, datetime, timedelta
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


def function_env(run_url: str, slack_api_url: str, *, monitoring: str, **extra: str) -> dict[str, str]:
    """Environment that wires the function to the local emulators (never to Google or Slack).

    ``monitoring`` (``host:port`` of the Monitoring emulator) is required on purpose: without an
    endpoint the function would look for Google credentials, probing the metadata server.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLBACK_", "SLACK_"))}
    env.update(
        {
            "ROLLBACK_RUN_ENDPOINT": run_url,
            "ROLLBACK_MONITORING_ENDPOINT": monitoring,
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


def simulate_bad_release(run_emu: Any, monitoring_emu: Any, minutes: int = 10) -> None:
    """Ten minutes of traffic up to now: the newest revision serves 18% 5xx at ~450 ms, the others are fine."""
    from controller.emulator.traffic import RevisionProfile, TrafficSimulator

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    simulator = TrafficSimulator(
        run_emu,
        monitoring_emu,
        project=PROJECT,
        region=REGION,
        service=SERVICE,
        seed=7,
        start=now - timedelta(minutes=minutes),
    )
    simulator.set_profile("checkout-00042-xyz", RevisionProfile(error_rate=0.18, latency_ms=450.0))
    for good in ("checkout-00040-aaa", "checkout-00041-abc"):
        simulator.set_profile(good, RevisionProfile(error_rate=0.004, latency_ms=120.0))
    simulator.run_until(now)


def run(*, once: bool, port: int | None) -> int:
    from controller.emulator.cloudrun import CloudRunEmulator, seed_sample
    from controller.emulator.monitoring import MonitoringEmulator
    from controller.emulator.slack import SlackEmulator

    port = port or free_port()
    with CloudRunEmulator() as run_emu, SlackEmulator() as slack_emu, MonitoringEmulator() as monitoring_emu:
        seed_sample(run_emu)
        simulate_bad_release(run_emu, monitoring_emu)
        print(f"Cloud Run emulator  {run_emu.url}  (service {PROJECT}/{REGION}/{SERVICE})")
        print(f"Monitoring emulator {monitoring_emu.target}  (10 simulated minutes: checkout-00042-xyz at 18% 5xx)")
        print(f"Slack emulator      {slack_emu.api_url}")
        env = function_env(run_emu.url, slack_emu.api_url, monitoring=monitoring_emu.target)
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
                for block in message.get("blocks") or []:
                    text = (block.get("text") or {}).get("text", "")
                    if text.startswith("*Measured by Cloud Monitoring*"):
                        print("  " + text.replace("\n", "\n  "))
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
