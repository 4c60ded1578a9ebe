"""Fleet-wide canary tick through Google's Pub/Sub emulator: how long ``POST /canary/tick`` takes to
enqueue one ``canary-tick`` command per service, and how long until the worker (``handle_command``)
has ticked every one of them.

Both functions run under functions-framework (gunicorn, as in production) against the Cloud Run,
Monitoring and Slack emulators; the HTTP function publishes with google-cloud-pubsub to the
emulator, whose push subscription delivers to the worker. Each of the N services has a canary policy
and one revision (a tick reads it and finds nothing to do, the common case of a fleet tick). Run:
``.venv/bin/python bench/fleet_tick.py [--services 500]`` (needs gcloud's Pub/Sub emulator).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tokens: Google-style ID tokens signed by a local key

import requests  # noqa: E402
from tokens import google_claims, make_key, serve_certs  # noqa: E402

from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec  # noqa: E402
from controller.emulator.monitoring import MonitoringEmulator  # noqa: E402
from controller.emulator.pubsub import pubsub_emulator, push_topic  # noqa: E402
from controller.emulator.slack import SlackEmulator  # noqa: E402
from controller.surfaces.demo import PROJECT, REGION, free_port, function_env, start_function, stop_process  # noqa: E402

AUDIENCE = "https://bench.example/rollback-http"
CALLER = "scheduler@demo-proj.iam.gserviceaccount.com"
POLICIES = """
name: fleet
match: {services: ["*"]}
triggers:
  error_rate: {above: 0.05, for: 2m, min_requests: 50}
canary: {steps: [10, 50, 100], step_for: 5m, metric_lag: 3m, min_requests: 100}
"""
FINISH_TIMEOUT = 600.0


def ticked(log: Path) -> int:
    count = 0
    for raw in log.read_text().splitlines():
        if raw.startswith("{") and '"canary-tick"' in raw:
            entry = json.loads(raw)
            count += entry.get("event") == "command" and entry.get("outcome") == "ticked"
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=500)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-tick-"))
    (tmp / "policies.yaml").write_text(POLICIES)
    key = make_key("bench-key")
    created = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        os.environ.pop(name, None)
    with (
        pubsub_emulator(tmp / "pubsub.log", PROJECT) as host,
        serve_certs(key) as certs_url,
        CloudRunEmulator() as run,
        SlackEmulator() as slack,
        MonitoringEmulator() as monitoring,
    ):
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        for i in range(args.services):
            name = f"svc-{i:04d}"
            run.add_service(
                PROJECT, REGION, name, revisions=[RevisionSpec(name=f"{name}-00001-abc", create_time=created)]
            )
        worker_port, http_port = free_port(), free_port()
        topic = push_topic(host, PROJECT, "rollback-commands", worker_port)
        env = function_env(
            run.url,
            slack.api_url,
            monitoring=monitoring.target,
            PUBSUB_EMULATOR_HOST=host,
            ROLLBACK_COMMANDS_TOPIC=topic,
            ROLLBACK_POLICIES=str(tmp / "policies.yaml"),
            ROLLBACK_REGIONS=REGION,
            ROLLBACK_AUTH_AUDIENCE=AUDIENCE,
            ROLLBACK_ALLOWED_PRINCIPALS=CALLER,
            ROLLBACK_AUTH_CERTS_URL=certs_url,
        )
        worker = start_function("handle_command", worker_port, env, log_path=tmp / "worker.log")
        http = start_function("handle_http", http_port, env, log_path=tmp / "http.log")
        try:
            headers = {"Authorization": f"Bearer {key.sign(google_claims(AUDIENCE, CALLER))}"}
            url = f"http://127.0.0.1:{http_port}/canary/tick"
            requests.post(url, json={"region": "nowhere-1"}, headers=headers, timeout=60)  # warm-up: builds the API
            started = time.perf_counter()
            response = requests.post(url, json={}, headers=headers, timeout=120)
            enqueued = time.perf_counter() - started
            if response.status_code != 202:
                raise SystemExit(f"POST /canary/tick answered {response.status_code}: {response.text[:500]}")
            queued = response.json()["queued"]
            deadline = time.monotonic() + FINISH_TIMEOUT
            done = 0
            while time.monotonic() < deadline:
                done = ticked(tmp / "worker.log")
                if done >= queued:
                    break
                time.sleep(0.2)
            finished = time.perf_counter() - started
        finally:
            stop_process(http)
            stop_process(worker)
    print(f"services with a canary policy          {queued}")
    print(
        f"POST /canary/tick -> 202 (enqueued)     {enqueued * 1000:8.0f} ms  (list services, publish {queued} commands)"
    )
    print(
        f"every service ticked by handle_command  {finished * 1000:8.0f} ms  ({done}/{queued} ticked, "
        f"{done / finished:.0f} ticks/s through the Pub/Sub emulator's push)"
    )


if __name__ == "__main__":
    main()
