"""One delivery through Google's real Pub/Sub emulator: publish → push subscription → the running
function (functions-framework) → rollback in the Cloud Run emulator → Slack message.

The emulator is started by this test (``gcloud beta emulators pubsub start``, Java 17) and
stopped with its whole process group. It is preinstalled on our machines; if it is missing the
test fails with that message rather than skipping, because this is the only proof that a real
Pub/Sub push reaches the function.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pubsub_emulator import missing_piece

from controller.emulator.cloudrun import CloudRunEmulator, seed_sample
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.pubsub import pubsub_emulator as start_pubsub_emulator
from controller.emulator.slack import SlackEmulator
from controller.surfaces.demo import PROJECT, REGION, SERVICE, free_port, function_env, start_function, stop_process

pytestmark = pytest.mark.pubsub

DATA = Path(__file__).resolve().parent.parent / "data"
TOPIC = "monitoring-alerts"
START_TIMEOUT = 60.0
DELIVERY_TIMEOUT = 30.0


@pytest.fixture
def pubsub_emulator(tmp_path: Path) -> Iterator[str]:
    problem = missing_piece()
    if problem:
        pytest.fail(problem, pytrace=False)  # one line naming what is missing (never a skip: see above)
    try:
        with start_pubsub_emulator(tmp_path / "pubsub.log", PROJECT) as host:
            yield host
    except RuntimeError as exc:  # exited early (with its output's tail) or never listened
        pytest.fail(str(exc), pytrace=False)


def test_published_alert_is_pushed_to_the_function_and_rolls_back(
    pubsub_emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator)
    with CloudRunEmulator() as run, SlackEmulator() as slack, MonitoringEmulator() as monitoring:
        seed_sample(run)
        port = free_port()
        env = function_env(run.url, slack.api_url, monitoring=monitoring.target)
        proc = start_function("handle_alert", port, env, log_path=tmp_path / "fn.log")
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        try:
            topic = publisher.topic_path(PROJECT, TOPIC)
            publisher.create_topic(name=topic)
            subscriber.create_subscription(
                name=subscriber.subscription_path(PROJECT, "rollback-push"),
                topic=topic,
                # The path carries the topic so functions-framework can name the CloudEvent's source.
                push_config={"push_endpoint": f"http://127.0.0.1:{port}/projects/{PROJECT}/topics/{TOPIC}"},
            )
            # A fresh incident (the sample's 2024 start would make it an old delivery, acted on
            # only with Cloud Monitoring's current confirmation).
            doc = json.loads((DATA / "incident-5xx-open.json").read_bytes())
            doc["incident"]["started_at"] = int(time.time()) - 240
            publisher.publish(topic, json.dumps(doc).encode()).result(timeout=30)

            deadline = time.monotonic() + DELIVERY_TIMEOUT
            while time.monotonic() < deadline and run.applied_traffic_changes(PROJECT, REGION, SERVICE) == 0:
                time.sleep(0.2)
            traffic = run.traffic(PROJECT, REGION, SERVICE)
            assert [(t["revision"], t["percent"]) for t in traffic] == [("checkout-00041-abc", 100)], (
                tmp_path / "fn.log"
            ).read_text()[-3000:]
            assert slack.wait_for_messages(1, timeout=10)
            assert "checkout-00042-xyz" in json.dumps(slack.messages[0])
            # The push was acknowledged (2xx), so the emulator does not redeliver: still one change.
            time.sleep(1.0)
            assert run.applied_traffic_changes(PROJECT, REGION, SERVICE) == 1
        finally:
            subscriber.close()
            publisher.transport.close()
            stop_process(proc)
