"""The local stack a new user runs first: no cloud account needed.

``python -m controller demo`` starts the Cloud Run and Slack emulators with a sample service
(``checkout``: three Ready revisions, the newest serving 100% through LATEST), serves
``handle_alert`` with the real functions-framework wired to them, posts the shipped sample
alert (a 5xx incident on the newest revision) and prints the story: the traffic before, the
alert, the decision with its numbers, the traffic after, the Slack message, and what reposting
the same alert does (nothing: exactly once). The function's JSON log lines go to a file whose
path it prints (``--verbose`` prints them too). It then keeps serving so more alerts can be
posted (``--once`` stops after the sample instead).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from controller.core.errors import EXIT_USAGE
from controller.emulator.traffic import simulate_bad_release

ROOT = Path(__file__).resolve().parents[2]  # the repository root
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


def port_problem(port: int) -> str | None:
    """Why ``port`` cannot be served on 127.0.0.1 (in use, not allowed), or None: checked before starting."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} is already in use on 127.0.0.1: pass another --port, or omit it for a free one"
            return f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): pass another --port"
    return None


def _log_lines(path: Path) -> list[dict[str, Any]]:
    """The function's JSON log lines so far (anything else it printed, such as gunicorn's, skipped)."""
    lines: list[dict[str, Any]] = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if raw.startswith("{"):
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
    return lines


def _decision_line(lines: list[dict[str, Any]], incident_id: str) -> dict[str, Any] | None:
    """The last alert-path log line about ``incident_id`` (it carries the decision)."""
    for line in reversed(lines):
        if isinstance(line.get("decision"), dict) and (line.get("incident") or {}).get("id") == incident_id:
            found: dict[str, Any] = line
            return found
    return None


def _describe_decision(line: dict[str, Any] | None) -> list[str]:
    """The decision as a person reads it: what, why, and the numbers Cloud Monitoring measured."""
    if line is None:
        return ["   (no decision log line: see the log file)"]
    decision: dict[str, Any] = line["decision"]
    incident = line.get("incident") or {}
    out = [f"   {decision.get('reason')}: {decision.get('message', '')}"]
    if incident.get("observed_value") is not None:
        out.append(
            f"   alert: {incident.get('trigger')} observed {incident['observed_value']:g} "
            f"(threshold {incident.get('threshold_value', '?')}), policy {decision.get('policy', '?')}"
        )
    verification = decision.get("verification") or {}
    for role in ("suspect", "target"):
        measured = verification.get(role)
        if isinstance(measured, dict):
            out.append(f"   measured {role} {measured.get('revision')}: {measured.get('text')}")
    if verification.get("verdict"):
        out.append(f"   verification: {verification['verdict']}")
    return out


def _alert_line(body: dict[str, Any]) -> str:
    import base64

    try:
        incident = json.loads(base64.b64decode(body["message"]["data"]))["incident"]
    except (KeyError, ValueError, TypeError):
        return "(not a Cloud Monitoring incident)"
    labels = (incident.get("resource") or {}).get("labels") or {}
    return (
        f"incident {incident.get('incident_id')} {incident.get('state')}: {incident.get('policy_name')} "
        f"(revision {labels.get('revision_name', '?')}, observed {incident.get('observed_value', '?')})"
    )


def _story(port: int, run_emu: Any, slack_emu: Any, log_path: Path) -> tuple[int, int]:
    """Post the sample alert, then post it again; print what happened at each step. Returns the
    two HTTP statuses."""
    print("1. Traffic before: ", _traffic_line(run_emu.traffic(PROJECT, REGION, SERVICE)))
    body = json.loads(SAMPLE.read_text())
    incident_id = json.loads(base64.b64decode(body["message"]["data"]))["incident"]["incident_id"]
    print("2. The alert:      ", _alert_line(body))
    started = time.perf_counter()
    response = post_push(port, body)
    elapsed = (time.perf_counter() - started) * 1000
    print(f"   posted {SAMPLE.relative_to(ROOT)} → HTTP {response.status_code} in {elapsed:.0f} ms")
    lines = _log_lines(log_path)
    print("3. The decision:")
    print("\n".join(_describe_decision(_decision_line(lines, incident_id))))
    print("4. Traffic after:  ", _traffic_line(run_emu.traffic(PROJECT, REGION, SERVICE)))
    slack_emu.wait_for_messages(1, timeout=5)
    print("5. Slack:")
    for message in slack_emu.messages:
        print(f"   → {message.get('channel')}: {message.get('text')}")
        for block in message.get("blocks") or []:
            text = (block.get("text") or {}).get("text", "")
            if text.startswith("*Measured by Cloud Monitoring*"):
                print("     " + text.replace("\n", "\n     "))
    before_repost = run_emu.traffic(PROJECT, REGION, SERVICE)
    seen = len(_log_lines(log_path))
    again = post_push(port, body)
    repost = _decision_line(_log_lines(log_path)[seen:], incident_id)
    same = run_emu.traffic(PROJECT, REGION, SERVICE) == before_repost
    if repost is not None and repost["decision"].get("reason") == "already-handled" and same:
        outcome = "already handled: exactly once (traffic unchanged, Slack not told again)"
    else:
        outcome = (repost or {}).get("message", "no decision logged")
    print(f"6. Reposted the same alert → HTTP {again.status_code}: {outcome}")
    return response.status_code, again.status_code


def run(*, once: bool, port: int | None, verbose: bool = False, log_file: Path | None = None) -> int:
    from controller.emulator.cloudrun import CloudRunEmulator, seed_sample
    from controller.emulator.monitoring import MonitoringEmulator
    from controller.emulator.slack import SlackEmulator

    if port is not None and (problem := port_problem(port)):
        from controller.surfaces.cli_common import PROG

        print(f"{PROG} demo: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    port = port or free_port()
    # Kept after the demo on purpose: the path is printed so the lines can be read afterwards.
    log_path = log_file or Path(tempfile.mkdtemp(prefix="rollback-demo-")) / "handle_alert.log"
    with CloudRunEmulator() as run_emu, SlackEmulator() as slack_emu, MonitoringEmulator() as monitoring_emu:
        seed_sample(run_emu)
        simulate_bad_release(run_emu, monitoring_emu)
        print(f"Cloud Run emulator  {run_emu.url}  (service {PROJECT}/{REGION}/{SERVICE})")
        print(f"Monitoring emulator {monitoring_emu.target}  (10 simulated minutes: checkout-00042-xyz at 18% 5xx)")
        print(f"Slack emulator      {slack_emu.api_url}")
        env = function_env(run_emu.url, slack_emu.api_url, monitoring=monitoring_emu.target)
        proc = start_function("handle_alert", port, env, log_path=log_path)
        try:
            url = f"http://127.0.0.1:{port}/"
            print(f"handle_alert        {url}  (functions-framework, wired to the emulators)")
            print(f"Log (JSON lines)    {log_path}" + ("" if verbose else "  (--verbose shows them here)") + "\n")
            first, again = _story(port, run_emu, slack_emu, log_path)
            if verbose:
                print("\nLog lines:")
                print(log_path.read_text(encoding="utf-8", errors="replace").rstrip())
            if once:
                return 0 if first == again == 200 else 1
            print(
                "\nServing until Ctrl-C. Post another alert with:\n"
                f"  curl -sS -X POST -H 'Content-Type: application/json' --data @{SAMPLE.relative_to(ROOT)} "
                f"{url}projects/{PROJECT}/topics/monitoring-alerts\n"
                "Inspect the service with:\n"
                f"  rollback-controller status {SERVICE} --region {REGION} --project {PROJECT}  "
                f"# after: export ROLLBACK_RUN_ENDPOINT={run_emu.url}\n"
                f"Follow the log with:\n  tail -f {log_path}"
            )
            try:
                while proc.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                print("\nstopping")
            return 0
        finally:
            stop_process(proc)
