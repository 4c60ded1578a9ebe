"""Slack buttons end to end: signed ``block_actions`` requests to ``POST /slack/actions`` on
functions-framework, the action performed on the Cloud Run emulator, the original message updated on
the Slack emulator (``chat.update``), refusals answered ephemerally through ``response_url``.

Requests are built like Slack's (``payload=<url-encoded JSON>``, see wire/05-slack.md) and signed
here with the documented HMAC scheme and a fresh timestamp; the message the buttons sit on is
really posted to the Slack emulator first, so ``chat.update`` finds it.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import inspect
import json
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from slack_sdk import WebClient

from controller.core.ledger import Action, Ledger, write_ledger
from controller.core.slack_blocks import ACTION_HOLD, ACTION_RELEASE, ACTION_UNDO, BLOCK_ID, action_blocks
from controller.core.state import ServiceRef, TrafficTarget
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.surfaces.demo import PROJECT, REGION, SERVICE, free_port, function_env, start_function, stop_process

SECRET = "test-signing-secret-0123456789abcdef"
USER, OTHER_USER = "U0123USER", "U0999OTHER"
T0 = datetime.datetime(2024, 6, 1, 12, 0, tzinfo=datetime.UTC)
OLDEST, PREVIOUS, SUSPECT = "checkout-00040-aaa", "checkout-00041-abc", "checkout-00042-xyz"
REF = ServiceRef(project=PROJECT, region=REGION, service=SERVICE)
LATEST_100 = [{"type": "LATEST", "revision": "", "percent": 100, "tag": ""}]
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def automatic_rollback_ledger() -> Ledger:
    """What handle_alert leaves behind after rolling SUSPECT back to PREVIOUS from LATEST 100%."""
    return (
        Ledger()
        .record_incident("0.nk3l9v2x1abc", to=PREVIOUS, now=T0)
        .quarantine(SUSPECT, reason="error_rate alert", now=T0)
        .with_last_good(PREVIOUS)
        .record_action(
            Action(
                kind="rollback",
                at=T0,
                actor="rollback-controller",
                reason="error_rate alert 0.nk3l9v2x1abc",
                incident_id="0.nk3l9v2x1abc",
                from_revision=SUSPECT,
                to_revision=PREVIOUS,
                before=(TrafficTarget(kind="latest", percent=100),),
            ),
            automatic=True,
            now=T0,
        )
    )


def seed(emu: CloudRunEmulator, *, rolled_back: bool) -> None:
    emu.reset()
    emu.add_service(
        PROJECT,
        REGION,
        SERVICE,
        revisions=[
            RevisionSpec(name=OLDEST, create_time=T0 - datetime.timedelta(days=3)),
            RevisionSpec(name=PREVIOUS, create_time=T0 - datetime.timedelta(days=2)),
            RevisionSpec(name=SUSPECT, create_time=T0 - datetime.timedelta(minutes=10)),
        ],
        traffic=[{"type": "REVISION", "revision": PREVIOUS, "percent": 100}] if rolled_back else None,
        annotations=write_ledger(automatic_rollback_ledger(), {}) if rolled_back else None,
    )


@dataclass
class Stack:
    run: CloudRunEmulator
    slack: SlackEmulator
    port: int

    def post_rollback_message(self) -> dict[str, Any]:
        """Post a rollback message carrying our buttons, as the alert path will; returns Slack's answer."""
        client = WebClient(token="xoxb-test", base_url=self.slack.api_url)
        blocks = [
            {"type": "header", "text": {"type": "plain_text", "text": ":rewind: Rolled back checkout"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"rolled back {SUSPECT} → {PREVIOUS}"}},
            # All three buttons, so a Release press finds its button on the message (slack_guard).
            action_blocks(REF, undo=True, hold=True, release=True)[0],
        ]
        answer = client.chat_postMessage(channel="#deploys", text="Rolled back checkout", blocks=blocks)
        return dict(answer.data) if isinstance(answer.data, dict) else {}

    def press(
        self,
        action_id: str,
        *,
        user: str = USER,
        value: str | None = None,
        timestamp: int | None = None,
        secret: str = SECRET,
        tamper: bool = False,
    ) -> requests.Response:
        posted = self.post_rollback_message()
        payload = block_actions(posted, action_id, user=user, value=value, response_url=self.response_url)
        body = b"payload=" + urllib.parse.quote(json.dumps(payload, separators=(",", ":")), safe="").encode()
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sign(secret, ts, body),
        }
        if tamper:
            body = body.replace(b"U0123USER", b"U0123USEX")
        return requests.post(f"http://127.0.0.1:{self.port}/slack/actions", data=body, headers=headers, timeout=30)

    @property
    def response_url(self) -> str:
        return f"{self.slack.base_url}/actions/T0123TEAM/1717243600123/AbCdEf"

    def traffic(self) -> list[dict[str, Any]]:
        return self.run.traffic(PROJECT, REGION, SERVICE)

    def ledger_value(self, key: str) -> str:
        annotations: dict[str, str] = self.run.service(PROJECT, REGION, SERVICE).get("annotations", {})
        return annotations.get(f"rollback-controller/{key}", "")

    def updates(self) -> list[dict[str, Any]]:
        return [m for m in self.slack.messages if m["method"] == "chat.update"]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def block_actions(
    posted: dict[str, Any], action_id: str, *, user: str, value: str | None, response_url: str
) -> dict[str, Any]:
    """A block_actions payload shaped like Slack's (wire/json/05-slack-block-actions-payload-decoded.json)."""
    message = posted["message"]
    [actions] = [b for b in message["blocks"] if b.get("block_id") == BLOCK_ID]
    button = next((e for e in actions["elements"] if e["action_id"] == action_id), actions["elements"][0])
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "oncall", "name": "oncall", "team_id": "T0123TEAM"},
        "api_app_id": "A0123456789",
        "token": "verification-token-deprecated",
        "container": {
            "type": "message",
            "message_ts": posted["ts"],
            "channel_id": posted["channel"],
            "is_ephemeral": False,
        },
        "trigger_id": "1717243600.123456789.0123456789abcdef0123456789abcdef",
        "team": {"id": "T0123TEAM", "domain": "demo-workspace"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": posted["channel"], "name": "deploys"},
        "message": message,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": BLOCK_ID,
                "text": {"type": "plain_text", "text": "Undo", "emoji": True},
                "value": button["value"] if value is None else value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


@pytest.fixture(scope="module")
def stack_(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with CloudRunEmulator() as run, SlackEmulator() as slack, MonitoringEmulator() as monitoring:
        extra = {"SLACK_SIGNING_SECRET": SECRET, "ROLLBACK_SLACK_ALLOWED_USERS": f"{USER},W0456ABCD"}
        if "monitoring" in inspect.signature(function_env).parameters:
            extra = {"monitoring": monitoring.target, **extra}
        env = {k: v for k, v in function_env(run.url, slack.api_url, **extra).items() if k.lower() not in PROXY_VARS}
        port = free_port()
        proc = start_function("handle_http", port, env, log_path=tmp_path_factory.mktemp("slack") / "http.log")
        try:
            yield Stack(run, slack, port)
        finally:
            stop_process(proc)


@pytest.fixture
def stack(stack_: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    seed(stack_.run, rolled_back=True)
    stack_.slack.reset()
    return stack_


def test_undo_button_restores_traffic_and_updates_the_message(stack: Stack) -> None:
    response = stack.press(ACTION_UNDO)
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True
    assert stack.traffic() == LATEST_100
    last_action = json.loads(stack.ledger_value("last-action"))
    assert last_action["kind"] == "undo"
    assert last_action["actor"] == f"slack:{USER} (oncall)"
    assert SUSPECT not in stack.ledger_value("quarantined")  # the undone rollback's quarantine is lifted
    [update] = stack.updates()
    text = json.dumps(update["blocks"])
    assert f"<@{USER}>" in text and "Undone" in text
    assert "Rolled back checkout" in text  # the original message is kept, the outcome appended
    [buttons] = [b for b in update["blocks"] if b.get("block_id") == BLOCK_ID]
    assert [e["action_id"] for e in buttons["elements"]] == [ACTION_HOLD]  # no second Undo


def test_hold_then_release_buttons(stack: Stack) -> None:
    response = stack.press(ACTION_HOLD)
    assert response.status_code == 200, response.text
    hold = json.loads(stack.ledger_value("hold"))
    assert hold["by"] == f"slack:{USER} (oncall)"
    assert stack.traffic()[0]["revision"] == PREVIOUS  # a hold changes no traffic
    [update] = stack.updates()
    [buttons] = [b for b in update["blocks"] if b.get("block_id") == BLOCK_ID]
    assert [e["action_id"] for e in buttons["elements"]] == [ACTION_RELEASE]

    stack.slack.reset()
    response = stack.press(ACTION_RELEASE)
    assert response.status_code == 200
    assert stack.ledger_value("hold") == ""
    assert len(stack.updates()) == 1


def test_refused_action_answers_ephemerally(stack: Stack) -> None:
    seed(stack.run, rolled_back=False)  # nothing to undo
    response = stack.press(ACTION_UNDO)
    assert response.status_code == 200
    assert response.json()["error"] == "nothing_to_undo"
    assert response.json()["response_type"] == "ephemeral"
    assert stack.run.patches == []
    [ephemeral] = [m for m in stack.slack.messages if m["via"] == "response_url"]
    assert "nothing_to_undo" in ephemeral["text"]
    assert stack.updates() == []


def test_unknown_service_in_the_button_answers_ephemerally(stack: Stack) -> None:
    # A value that is not one of the message's own buttons is refused before anything is read
    # (controller/surfaces/slack_guard.py; tests/integration/test_slack_guard.py covers the rest).
    response = stack.press(ACTION_HOLD, value=f"{PROJECT}/{REGION}/no-such-service")
    assert response.status_code == 200
    assert response.json()["error"] == "not_on_message"
    assert stack.run.requests == []


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        pytest.param({"secret": "another-secret"}, 401, "invalid_signature", id="bad-signature"),
        pytest.param({"tamper": True}, 401, "invalid_signature", id="body-tampered"),
        # Offsets from the time the test runs (collection may be minutes earlier in a full run).
        pytest.param({"offset": -301}, 401, "stale_request", id="stale-timestamp"),
        pytest.param({"offset": 400}, 401, "stale_request", id="future-timestamp"),
        pytest.param({"user": OTHER_USER}, 403, "forbidden_principal", id="user-not-allowed"),
    ],
)
def test_refused_requests_change_nothing(stack: Stack, kwargs: dict[str, Any], status: int, error: str) -> None:
    kwargs = dict(kwargs)
    if "offset" in kwargs:
        kwargs["timestamp"] = int(time.time()) + kwargs.pop("offset")
    response = stack.press(ACTION_UNDO, **kwargs)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert stack.run.patches == []
    assert stack.updates() == []


def test_missing_signature_headers_is_401(stack: Stack) -> None:
    response = requests.post(f"http://127.0.0.1:{stack.port}/slack/actions", data=b"payload=%7B%7D", timeout=30)
    assert response.status_code == 401
    assert response.json()["error"] == "missing_signature"


def test_signed_but_malformed_payload_is_422(stack: Stack) -> None:
    body = b"payload=not-json"
    ts = str(int(time.time()))
    headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sign(SECRET, ts, body)}
    response = requests.post(f"http://127.0.0.1:{stack.port}/slack/actions", data=body, headers=headers, timeout=30)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_id_token_routes_stay_closed_on_a_slack_only_deployment(stack: Stack) -> None:
    # docs/security.md: the Slack deployment sets no ID-token audience, so those routes answer 503.
    response = requests.get(
        f"http://127.0.0.1:{stack.port}/status", params={"region": REGION, "service": SERVICE}, timeout=30
    )
    assert response.status_code == 503
    assert response.json()["error"] == "auth_not_configured"
