"""Warm alert-to-traffic-shifted latency against the local Cloud Run emulator.

One functions-framework server (gunicorn, as in production) serves ``handle_alert``; after one
warm-up delivery, each of N deliveries is a new incident on a freshly reset service, and we time
the HTTP delivery until the function answers, which it does only after the traffic update's
operation is done. The reset happens outside the timed region. Run:
``.venv/bin/python bench/alert_latency.py [--deliveries 250]``. Target: p99 < 250 ms.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG = Path(tempfile.gettempdir()) / "rollback-bench-function.log"  # the function's own JSON log lines
sys.path.insert(0, str(ROOT))

from controller.emulator.cloudrun import CloudRunEmulator, seed_sample  # noqa: E402
from controller.emulator.monitoring import MonitoringEmulator  # noqa: E402
from controller.emulator.slack import SlackEmulator  # noqa: E402
from controller.surfaces.demo import (  # noqa: E402
    PROJECT,
    REGION,
    SAMPLE,
    SERVICE,
    free_port,
    function_env,
    post_push,
    start_function,
    stop_process,
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def delivery(template: dict[str, object], incident_id: str) -> dict[str, object]:
    body = json.loads(json.dumps(template))
    message = body["message"]
    assert isinstance(message, dict)
    doc = json.loads(base64.b64decode(message["data"]))
    doc["incident"]["incident_id"] = incident_id
    # A fresh incident, published now: the sample's 2024 times would make it an old delivery,
    # which acts only on Cloud Monitoring's current confirmation (rollback.max_alert_age).
    now = datetime.now(UTC)
    doc["incident"]["started_at"] = int(now.timestamp()) - 240
    message["data"] = base64.b64encode(json.dumps(doc).encode()).decode()
    message["messageId"] = incident_id
    message["publishTime"] = now.isoformat().replace("+00:00", "Z")
    result: dict[str, object] = body
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=250)
    args = parser.parse_args()
    template = json.loads(SAMPLE.read_text())
    with CloudRunEmulator() as run, SlackEmulator() as slack, MonitoringEmulator() as monitoring:
        port = free_port()
        proc = start_function(
            "handle_alert", port, function_env(run.url, slack.api_url, monitoring=monitoring.target), log_path=LOG
        )
        try:
            seed_sample(run)
            assert post_push(port, delivery(template, "warm-up")).status_code == 200
            timings: list[float] = []
            for i in range(args.deliveries):
                run.reset()
                seed_sample(run)
                body = delivery(template, f"bench-{i}")
                started = time.perf_counter()
                response = post_push(port, body)
                timings.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
                assert run.applied_traffic_changes(PROJECT, REGION, SERVICE) == 1, f"delivery {i} did not roll back"
        finally:
            stop_process(proc)
    p50, p99 = percentile(timings, 50), percentile(timings, 99)
    print(f"alert -> traffic shifted (warm, emulator, over HTTP): {len(timings)} deliveries")
    print(
        f"  p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   "
        f"mean {statistics.mean(timings):6.1f} ms   max {max(timings):6.1f} ms"
    )
    print(f"  target p99 < 250 ms: {'ok' if p99 < 250 else 'MISSED'}")


if __name__ == "__main__":
    main()
