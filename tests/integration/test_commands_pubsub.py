"""Commands through Google's real Pub/Sub emulator (issue 11's "done when").

``handle_http`` and ``handle_command`` run as two functions-framework processes, wired to the Cloud
Run, Monitoring and Slack emulators; the HTTP function publishes with google-cloud-pubsub
(``PUBSUB_EMULATOR_HOST``) to a topic whose push subscription delivers to the worker.

* A Slack button pressed while every Cloud Run call takes 5 s is answered in under 1 s, the message
  shows the action in progress at once, the worker then acts once, updates the message with the
  outcome and posts it in the message's thread.
* The same command published again (a redelivery) does nothing.
* ``POST /canary/tick`` over 200 services queues 200 commands (HTTP 202) and every service is ticked
  exactly once by the worker.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from tokens import google_claims, make_key, serve_certs

from controller.core.ledger import Action, Ledger, write_ledger
from controller.core.slack_blocks import ACTION_UNDO, BLOCK_ID, action_blocks
from controller.core.state import ServiceRef, TrafficTarget
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.pubsub import pubsub_emulator, pull_subscription, push_topic
from controller.emulator.slack import SlackEmulator
from controller.surfaces.demo import PROJECT, REGION, SERVICE, free_port, function_env, start_function, stop_process

pytestmark = pytest.mark.pubsub

TOPIC = "rollback-commands"
EVENTS_TOPIC = "rollback-events"
SECRET = "test-signing-secret-0123456789abcdef"
USER = "U0123MARIA"
AUDIENCE = "https://europe-west1-demo-proj.cloudfunctions.net/rollback-http"
ALICE = "alice@example.com"
KEY = make_key("local-google-commands")
T0 = datetime.datetime(2024, 6, 1, 12, 0, tzinfo=datetime.UTC)
PREVIOUS, SUSPECT = "checkout-00041-abc", "checkout-00042-xyz"
REF = ServiceRef(project=PROJECT, region=REGION, service=SERVICE)
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
FLEET = 200
POLICIES = """
name: fleet
match: {services: ["*"]}
triggers:
  error_rate: {above: 0.05, for: 2m, min_requests: 50}
canary: {steps: [10, 50, 100], step_for: 5m, metric_lag: 3m, min_requests: 100}
"""


class SlowCloudRun(CloudRunEmulator):
    """The Cloud Run emulator with a delay before every answer (real traffic operations are not instant)."""

    delay = 0.0

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if self.delay:
            time.sleep(self.delay)
        return super().handle(method, raw_path, body)


@dataclass
class Stack:
    run: SlowCloudRun
    slack: SlackEmulator
    pubsub: str
    http_port: int
    worker_log: Path

    def worker_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.worker_log.read_text().splitlines():
            if raw.startswith("{"):
                entry = json.loads(raw)
                if entry.get("event") == "command":
                    lines.append(entry)
        return lines

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(
            f"{what} did not happen within {timeout:.0f}s; worker log:\n" + self.worker_log.read_text()[-3000:]
        )


def rolled_back_ledger() -> Ledger:
    return (
        Ledger()
        .quarantine(SUSPECT, reason="error_rate alert", now=T0)
        .with_last_good(PREVIOUS)
        .record_action(
            Action(
                kind="rollback",
                at=T0,
                actor="rollback-controller",
                reason="error_rate alert",
                from_revision=SUSPECT,
                to_revision=PREVIOUS,
                before=(TrafficTarget(kind="latest", percent=100),),
            ),
            automatic=True,
            now=T0,
        )
    )


def seed_rolled_back(run: CloudRunEmulator) -> None:
    run.reset()
    run.add_service(
        PROJECT,
        REGION,
        SERVICE,
        revisions=[
            RevisionSpec(name=PREVIOUS, create_time=T0 - datetime.timedelta(days=2)),
            RevisionSpec(name=SUSPECT, create_time=T0 - datetime.timedelta(minutes=10)),
        ],
        traffic=[{"type": "REVISION", "revision": PREVIOUS, "percent": 100}],
        annotations=write_ledger(rolled_back_ledger(), {}),
    )


def signed(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = b"payload=" + urllib.parse.quote(json.dumps(payload, separators=(",", ":")), safe="").encode()
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sig,
    }
    return body, headers


def undo_press(posted: dict[str, Any], response_url: str) -> dict[str, Any]:
    """A block_actions payload for the Undo button of ``posted`` (shaped like Slack's, wire/05-slack.md)."""
    message = posted["message"]
    [actions] = [b for b in message["blocks"] if b.get("block_id") == BLOCK_ID]
    [undo] = [e for e in actions["elements"] if e["action_id"] == ACTION_UNDO]
    return {
        "type": "block_actions",
        "user": {"id": USER, "username": "maria", "name": "maria", "team_id": "T0123TEAM"},
        "api_app_id": "A0123456789",
        "container": {
            "type": "message",
            "message_ts": posted["ts"],
            "channel_id": posted["channel"],
            "is_ephemeral": False,
        },
        "trigger_id": "1717243600.123456789.abcdef",
        "team": {"id": "T0123TEAM", "domain": "demo"},
        "channel": {"id": posted["channel"], "name": "deploys"},
        "message": message,
        "response_url": response_url,
        "actions": [
            {
                "action_id": ACTION_UNDO,
                "block_id": BLOCK_ID,
                "value": undo["value"],
                "type": "button",
                "text": {"type": "plain_text", "text": "Undo"},
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("commands")
    (tmp / "policies.yaml").write_text(POLICIES)
    with (
        pytest.MonkeyPatch.context() as mp,
        pubsub_emulator(tmp / "pubsub.log", PROJECT) as host,
        serve_certs(KEY) as certs_url,
        SlowCloudRun() as run,
        SlackEmulator() as slack,
        MonitoringEmulator() as monitoring,
    ):
        for name in PROXY_VARS:
            mp.delenv(name, raising=False)
            mp.delenv(name.upper(), raising=False)
        mp.setenv("PUBSUB_EMULATOR_HOST", host)
        worker_port, http_port = free_port(), free_port()
        topic = push_topic(host, PROJECT, TOPIC, worker_port)
        pull_subscription(host, PROJECT, TOPIC, "commands-audit")
        events_topic = push_topic(host, PROJECT, EVENTS_TOPIC, None)
        pull_subscription(host, PROJECT, EVENTS_TOPIC, "events-audit")
        env = function_env(
            run.url,
            slack.api_url,
            monitoring=monitoring.target,
            PUBSUB_EMULATOR_HOST=host,
            ROLLBACK_COMMANDS_TOPIC=topic,
            ROLLBACK_EVENTS_TOPIC=events_topic,
            ROLLBACK_POLICIES=str(tmp / "policies.yaml"),
            ROLLBACK_REGIONS=REGION,
            ROLLBACK_AUTH_AUDIENCE=AUDIENCE,
            ROLLBACK_ALLOWED_PRINCIPALS=ALICE,
            ROLLBACK_AUTH_CERTS_URL=certs_url,
            SLACK_SIGNING_SECRET=SECRET,
            ROLLBACK_SLACK_ALLOWED_USERS=USER,
        )
        env = {k: v for k, v in env.items() if k.lower() not in PROXY_VARS}
        worker = start_function("handle_command", worker_port, env, log_path=tmp / "worker.log")
        try:
            http = start_function("handle_http", http_port, env, log_path=tmp / "http.log")
            try:
                # Build the HTTP function's API (and its publisher) before anything is timed.
                requests.post(f"http://127.0.0.1:{http_port}/slack/actions", data=b"payload=%7B%7D", timeout=30)
                yield Stack(run, slack, host, http_port, tmp / "worker.log")
            finally:
                stop_process(http)
        finally:
            stop_process(worker)


def _press_undo(stack: Stack) -> tuple[requests.Response, float, dict[str, Any]]:
    from slack_sdk import WebClient

    client = WebClient(token="xoxb-test", base_url=stack.slack.api_url)
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": ":rewind: Rolled back checkout"}},
        action_blocks(REF)[0],
    ]
    posted = client.chat_postMessage(channel="#deploys", text="Rolled back checkout", blocks=blocks).data
    assert isinstance(posted, dict)
    body, headers = signed(undo_press(posted, f"{stack.slack.base_url}/actions/T0123TEAM/1/x"))
    started = time.monotonic()
    response = requests.post(
        f"http://127.0.0.1:{stack.http_port}/slack/actions", data=body, headers=headers, timeout=30
    )
    return response, time.monotonic() - started, posted


def pull_events(stack: Stack) -> list[dict[str, Any]]:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PUBSUB_EMULATOR_HOST", stack.pubsub)
        subscriber = pubsub_v1.SubscriberClient()
        try:
            path = subscriber.subscription_path(PROJECT, "events-audit")
            received = subscriber.pull(subscription=path, max_messages=100, timeout=10).received_messages
            if received:
                subscriber.acknowledge(subscription=path, ack_ids=[m.ack_id for m in received])
            return [json.loads(m.message.data) for m in received]
        finally:
            subscriber.close()


def _updates(stack: Stack) -> list[dict[str, Any]]:
    return [m for m in stack.slack.messages if m["method"] == "chat.update"]


def test_button_is_answered_within_a_second_while_cloud_run_is_slow_and_acts_once(stack: Stack) -> None:
    seed_rolled_back(stack.run)
    stack.slack.reset()
    stack.run.delay = 5.0
    try:
        response, elapsed, posted = _press_undo(stack)
        assert response.status_code == 200, response.text
        assert response.json()["queued"] is True
        assert elapsed < 1.0, f"answered in {elapsed:.2f}s"
        [pending] = _updates(stack)
        assert f"Undoing the last action on checkout… (requested by <@{USER}>)" in json.dumps(
            pending["blocks"], ensure_ascii=False
        )
        assert not any(b.get("block_id") == BLOCK_ID for b in pending["blocks"])  # no second press meanwhile

        stack.wait_for(lambda: len(_updates(stack)) >= 2, 90, "the outcome update")
    finally:
        stack.run.delay = 0.0
    assert stack.run.traffic(PROJECT, REGION, SERVICE)[0]["type"] == "LATEST"
    assert stack.run.applied_traffic_changes(PROJECT, REGION, SERVICE) == 1
    outcome = _updates(stack)[1]
    assert outcome["ts"] == posted["ts"]
    assert "Undone" in json.dumps(outcome["blocks"]) and "LATEST 100%" in json.dumps(outcome["blocks"])
    stack.wait_for(
        lambda: any(m["thread_ts"] == posted["ts"] for m in stack.slack.messages if m["method"] == "chat.postMessage"),
        10,
        "the reply in the thread",
    )
    [done] = [line for line in stack.worker_lines() if line.get("kind") == "slack-action"]
    assert done["outcome"] == "done" and done["changed"] is True

    # The decision also went out as an event on ROLLBACK_EVENTS_TOPIC (docs/events.md).
    [event] = [e for e in pull_events(stack) if e["source"] == "manual"]
    assert (event["what"], event["outcome"], event["actor"]) == ("manual-undo", "acted", f"slack:{USER} (maria)")
    assert event["command_id"] == done["command_id"]
    assert [t["type"] for t in event["traffic_after"]] == ["LATEST"]


def test_a_redelivered_command_does_nothing(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", stack.pubsub)
    seed_rolled_back(stack.run)
    stack.slack.reset()
    subscriber = pubsub_v1.SubscriberClient()
    publisher = pubsub_v1.PublisherClient()
    try:
        audit = subscriber.subscription_path(PROJECT, "commands-audit")
        # Drop what earlier tests published, then press once.
        drained = subscriber.pull(subscription=audit, max_messages=100, timeout=10)
        if drained.received_messages:
            subscriber.acknowledge(subscription=audit, ack_ids=[m.ack_id for m in drained.received_messages])
        response, _, _ = _press_undo(stack)
        assert response.status_code == 200, response.text
        command_id = response.json()["command_id"]
        stack.wait_for(
            lambda: any(line.get("command_id") == command_id for line in stack.worker_lines()),
            60,
            "the first execution",
        )
        updates_before = len(_updates(stack))
        [published] = subscriber.pull(subscription=audit, max_messages=10, timeout=10).received_messages
        assert json.loads(published.message.data)["id"] == command_id

        publisher.publish(publisher.topic_path(PROJECT, TOPIC), published.message.data).result(timeout=30)
        stack.wait_for(
            lambda: sum(line.get("command_id") == command_id for line in stack.worker_lines()) >= 2,
            60,
            "the redelivery",
        )
    finally:
        subscriber.close()
        publisher.transport.close()
    first, again = [line for line in stack.worker_lines() if line.get("command_id") == command_id]
    assert first["outcome"] == "done" and again["outcome"] == "duplicate"
    assert stack.run.applied_traffic_changes(PROJECT, REGION, SERVICE) == 1
    assert len(_updates(stack)) == updates_before  # Slack is not told twice either


def test_fleet_tick_queues_one_command_per_service_and_each_is_ticked_once(stack: Stack) -> None:
    stack.run.reset()
    names = [f"fleet-{i:03d}" for i in range(FLEET)]
    for name in names:
        stack.run.add_service(PROJECT, REGION, name, revisions=[RevisionSpec(name=f"{name}-00001-abc", create_time=T0)])
    before = len(stack.worker_lines())
    token = KEY.sign(google_claims(AUDIENCE, ALICE))
    response = requests.post(
        f"http://127.0.0.1:{stack.http_port}/canary/tick",
        json={},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    assert response.json()["queued"] == FLEET

    def ticks() -> list[dict[str, Any]]:
        return [line for line in stack.worker_lines()[before:] if line.get("kind") == "canary-tick"]

    stack.wait_for(lambda: len(ticks()) >= FLEET, 120, f"{FLEET} ticks")
    time.sleep(1.0)  # nothing more arrives (every push was acknowledged)
    counted = Counter(line["service"]["service"] for line in ticks())
    assert sorted(counted) == names
    assert set(counted.values()) == {1}
    assert {line["outcome"] for line in ticks()} == {"ticked"}
