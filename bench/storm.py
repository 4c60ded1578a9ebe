"""A delivery storm: 1,000 deliveries over 50 services, 8 concurrent senders, two instances.

Two functions-framework servers (gunicorn, as in production) serve ``handle_alert`` and share
one Cloud Run emulator, as two Cloud Functions instances share Cloud Run. Each of the 50 services
has a bad newest revision and one incident; its 20 deliveries (a mix of Pub/Sub redeliveries of
the same message and fresh notifications of the same incident) are shuffled and sent by 8
threads, alternating between the two instances. A delivery that is not acknowledged (non-2xx:
Pub/Sub would redeliver it) is sent again, up to 5 times.

The outcome must be exactly 50 traffic changes (one per service) and exactly 50 rollback
messages in Slack. Printed: deliveries/s, p50/p99 per delivery, Cloud Run calls per delivery,
peak RSS of the function processes. Run: ``.venv/bin/python bench/storm.py [--services 50
--per-service 20 --senders 8]``. Exit status 1 if the outcome is wrong.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec  # noqa: E402
from controller.emulator.monitoring import MonitoringEmulator  # noqa: E402
from controller.emulator.slack import SlackEmulator  # noqa: E402
from controller.surfaces.demo import PROJECT, REGION, SAMPLE, free_port, function_env, start_function, stop_process  # noqa: E402

T0 = datetime.now(UTC)
MAX_SENDS = 5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def service_name(i: int) -> str:
    return f"svc-{i:02d}"


def seed(run: CloudRunEmulator, services: int) -> None:
    for i in range(services):
        name = service_name(i)
        run.add_service(
            PROJECT,
            REGION,
            name,
            revisions=[
                RevisionSpec(name=f"{name}-00001-aaa", create_time=T0 - timedelta(days=2)),
                RevisionSpec(name=f"{name}-00002-bad", create_time=T0 - timedelta(minutes=10)),
            ],
        )


def push_body(template: dict[str, Any], service: int, message_id: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(template))
    doc = json.loads(base64.b64decode(body["message"]["data"]))
    name = service_name(service)
    doc["incident"]["incident_id"] = f"0.storm-{name}"
    doc["incident"]["resource"]["labels"].update({"service_name": name, "revision_name": f"{name}-00002-bad"})
    body["message"]["data"] = base64.b64encode(json.dumps(doc).encode()).decode()
    body["message"]["messageId"] = message_id
    return body


def deliveries(template: dict[str, Any], services: int, per_service: int, seed_: int) -> list[dict[str, Any]]:
    """Per service: a few Pub/Sub messages, each delivered several times (redeliveries share the id)."""
    out = []
    ids = itertools.count(1)
    for s in range(services):
        messages = [str(next(ids)) for _ in range(max(1, per_service // 4))]
        out += [push_body(template, s, messages[k % len(messages)]) for k in range(per_service)]
    random.Random(seed_).shuffle(out)
    return out


def peak_rss_mib(pid: int) -> float:
    """Peak resident set (VmHWM) of a process and its children (gunicorn master + workers), in MiB."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    peak = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--per-service", type=int, default=20)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    template = json.loads(SAMPLE.read_text())
    work = deliveries(template, args.services, args.per_service, args.seed)
    logs = Path(tempfile.gettempdir())
    with CloudRunEmulator() as run, SlackEmulator() as slack, MonitoringEmulator() as monitoring:
        seed(run, args.services)
        env = function_env(run.url, slack.api_url, monitoring=monitoring.target)
        ports = [free_port(), free_port()]
        procs = []
        try:
            for n, port in enumerate(ports):
                procs.append(start_function("handle_alert", port, env, log_path=logs / f"rollback-storm-{n}.log"))
            sessions = threading.local()
            counter = itertools.count()
            resent = itertools.count()

            def send(body: dict[str, Any]) -> float:
                session = getattr(sessions, "s", None) or requests.Session()
                sessions.s = session
                started = time.perf_counter()
                for _ in range(MAX_SENDS):
                    port = ports[next(counter) % len(ports)]
                    url = f"http://127.0.0.1:{port}/projects/{PROJECT}/topics/monitoring-alerts"
                    if session.post(url, json=body, timeout=60).ok:
                        return (time.perf_counter() - started) * 1000
                    next(resent)
                raise RuntimeError(f"delivery not acknowledged after {MAX_SENDS} sends")

            calls_before = len(run.requests)
            started = time.perf_counter()
            with ThreadPoolExecutor(args.senders) as pool:
                timings = list(pool.map(send, work))
            elapsed = time.perf_counter() - started
            calls = len(run.requests) - calls_before
            rss = [peak_rss_mib(p.pid) for p in procs]
        finally:
            for proc in procs:
                stop_process(proc)
        changes = sum(run.applied_traffic_changes(PROJECT, REGION, service_name(i)) for i in range(args.services))
        told = [m for m in slack.messages if "Rolled back" in m["text"]]
    resends = next(resent)
    print(
        f"storm: {len(work)} deliveries over {args.services} services, {args.senders} senders, "
        f"{len(ports)} instances sharing the Cloud Run emulator"
    )
    print(f"  {len(work) / elapsed:6.1f} deliveries/s   p50 {percentile(timings, 50):6.1f} ms   "
          f"p99 {percentile(timings, 99):6.1f} ms   (resent after a non-2xx: {resends})")  # fmt: skip
    print(f"  Cloud Run calls per delivery: {calls / len(work):.2f}   peak RSS per instance: "
          + ", ".join(f"{r:.0f} MiB" for r in rss))  # fmt: skip
    ok = changes == args.services and len(told) == args.services
    print(f"  traffic changes: {changes} (expected {args.services})   rollback messages: {len(told)}   "
          f"{'ok' if ok else 'WRONG'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
