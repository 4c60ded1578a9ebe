"""Google's own Pub/Sub emulator for the local stack, the tests and the benchmarks: started on a free
port, stopped with its whole process group. There is no Pub/Sub fake of ours: this is Google's.

``gcloud beta emulators pubsub start`` (Java 17; Debian package google-cloud-cli-pubsub-emulator) is
optional for people: :func:`available` says whether it is installed, and the local stack runs
without it (commands and events then stay off). Tests that need it fail with a clear message if it
is missing (they are the proof that real Pub/Sub pushes reach the functions). Topics and push
subscriptions are made with the real client library, which reads ``PUBSUB_EMULATOR_HOST``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _exited_early(returncode: int, log: Path, lines: int = 15) -> str:
    """The emulator exited before listening: say so with the end of its own output (Java's error)."""
    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:]
    return f"Pub/Sub emulator exited with {returncode} before listening; its output ends:\n" + "\n".join(tail)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(_exited_early(proc.returncode, log))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"Pub/Sub emulator did not listen on {port} within {timeout:.0f}s")


def available() -> bool:
    """Whether gcloud (and so, on our machines, its Pub/Sub emulator) is installed."""
    return shutil.which("gcloud") is not None


@contextlib.contextmanager
def pubsub_emulator(log_path: Path, project: str, port: int = 0) -> Iterator[str]:
    """Run the emulator (``port`` 0 = a free one); yields its ``host:port`` (for PUBSUB_EMULATOR_HOST)."""
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise RuntimeError(
            "gcloud is not installed: the Pub/Sub emulator (google-cloud-cli-pubsub-emulator) is required"
        )
    port = port or _free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{port}", f"--project={project}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # gcloud starts java as a child: stop the whole group
        )
        try:
            _wait_port(port, proc, START_TIMEOUT, log_path)
            yield f"127.0.0.1:{port}"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=15)


def push_topic(host: str, project: str, topic: str, endpoint_port: int | None, *, ack_deadline: int = 60) -> str:
    """Create ``topic`` and (with ``endpoint_port``) a push subscription delivering it to a function on
    that port (the path names the topic so functions-framework can set the CloudEvent's source);
    returns the topic's full name. ``ack_deadline``: seconds a push may take before redelivery."""
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    if os.environ.get("PUBSUB_EMULATOR_HOST") != host:
        raise RuntimeError("set PUBSUB_EMULATOR_HOST to the emulator first (the client reads it)")
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        name = publisher.topic_path(project, topic)
        publisher.create_topic(name=name)
        if endpoint_port is not None:
            subscriber.create_subscription(
                name=subscriber.subscription_path(project, f"{topic}-push"),
                topic=name,
                ack_deadline_seconds=ack_deadline,
                push_config={"push_endpoint": f"http://127.0.0.1:{endpoint_port}/projects/{project}/topics/{topic}"},
            )
        return str(name)
    finally:
        subscriber.close()
        publisher.transport.close()


def pull_subscription(host: str, project: str, topic: str, name: str) -> Any:
    """A pull subscription on ``topic`` (to read back what was published); returns its path."""
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    if os.environ.get("PUBSUB_EMULATOR_HOST") != host:
        raise RuntimeError("set PUBSUB_EMULATOR_HOST to the emulator first (the client reads it)")
    subscriber = pubsub_v1.SubscriberClient()
    try:
        path = subscriber.subscription_path(project, name)
        subscriber.create_subscription(name=path, topic=f"projects/{project}/topics/{topic}")
        return path
    finally:
        subscriber.close()


COMMANDS_TOPIC = "rollback-commands"
EVENTS_TOPIC = "rollback-events"
EVENTS_AUDIT = "rollback-events-audit"


def local_stack(host: str, project: str, worker_port: int) -> dict[str, str]:
    """Topics of the local stack: commands pushed to ``handle_command`` on ``worker_port``, events with
    a pull subscription to read them back. Returns the environment that points the functions at them."""
    commands = push_topic(host, project, COMMANDS_TOPIC, worker_port)
    events = push_topic(host, project, EVENTS_TOPIC, None)
    pull_subscription(host, project, EVENTS_TOPIC, EVENTS_AUDIT)
    return {"PUBSUB_EMULATOR_HOST": host, "ROLLBACK_COMMANDS_TOPIC": commands, "ROLLBACK_EVENTS_TOPIC": events}
