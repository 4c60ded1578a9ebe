"""Cold start: what importing ``main`` costs, against importing every client library eagerly,
and the cold path from process start to the first alert's traffic shift.

Each import figure is the median of fresh interpreter processes (``-X importtime`` is not used:
we time the import statement itself). Run: ``.venv/bin/python bench/cold_start.py``.
Target: lazy/eager ≤ 0.5.
"""

from __future__ import annotations

import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOG = Path(tempfile.gettempdir()) / "rollback-bench-function.log"  # the function's own JSON log lines
sys.path.insert(0, str(ROOT))

RUNS = 7
LAZY = "import main"
EAGER = (
    "import main, controller.app.engine, google.cloud.run_v2, google.cloud.monitoring_v3, slack_sdk, "
    "google.auth.credentials"
)


def time_import(statement: str) -> float:
    code = f"import time; t=time.perf_counter(); {statement}; print(time.perf_counter()-t)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def cold_path() -> float:
    """Seconds from starting the function's process to the first alert's traffic shift done."""
    from controller.emulator.cloudrun import CloudRunEmulator, seed_sample
    from controller.emulator.monitoring import MonitoringEmulator
    from controller.emulator.slack import SlackEmulator
    from controller.surfaces.demo import (
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

    with CloudRunEmulator() as run, SlackEmulator() as slack, MonitoringEmulator() as monitoring:
        seed_sample(run)
        port = free_port()
        started = time.perf_counter()
        proc = start_function(
            "handle_alert", port, function_env(run.url, slack.api_url, monitoring=monitoring.target), log_path=LOG
        )
        try:
            response = post_push(port, fresh(json.loads(SAMPLE.read_text())))
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text
            assert run.applied_traffic_changes(PROJECT, REGION, SERVICE) == 1, "no traffic shift happened"
            return elapsed
        finally:
            stop_process(proc)


def fresh(body: dict[str, Any]) -> dict[str, Any]:
    """The sample push body as a fresh incident published now (its 2024 times would make it an old
    delivery, which acts only on Cloud Monitoring's current confirmation: rollback.max_alert_age)."""
    now = datetime.now(UTC)
    doc = json.loads(base64.b64decode(body["message"]["data"]))
    doc["incident"]["started_at"] = int(now.timestamp()) - 240
    body["message"]["data"] = base64.b64encode(json.dumps(doc).encode()).decode()
    body["message"]["publishTime"] = now.isoformat().replace("+00:00", "Z")
    return body


def main() -> None:
    lazy = [time_import(LAZY) for _ in range(RUNS)]
    eager = [time_import(EAGER) for _ in range(RUNS)]
    lazy_ms, eager_ms = statistics.median(lazy) * 1000, statistics.median(eager) * 1000
    ratio = lazy_ms / eager_ms
    print(f"import main (lazy clients)          median {lazy_ms:7.1f} ms over {RUNS} fresh processes")
    print(f"import main + all clients (eager)   median {eager_ms:7.1f} ms over {RUNS} fresh processes")
    print(f"ratio lazy/eager                    {ratio:7.2f}   (target <= 0.50: {'ok' if ratio <= 0.5 else 'MISSED'})")
    paths = [cold_path() for _ in range(3)]
    print(
        "cold path: process start -> first alert's traffic shift done "
        f"(functions-framework + gunicorn, emulator): median {statistics.median(paths) * 1000:.0f} ms "
        f"(runs: {', '.join(f'{p * 1000:.0f}' for p in paths)} ms)"
    )


if __name__ == "__main__":
    main()
