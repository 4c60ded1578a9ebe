"""Slack button presses: workspace pinned, value bound to its message, replays refused (issue 12 point 10).

The real ``SlackActionHandler`` with the real signature verifier, over an in-memory Cloud Run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from datetime import timedelta
from typing import Any

import pytest
from support import REF, T0, InMemoryCloudRun, RecordingNotifier, rev, state

from controller.adapters.auth import AuthConfig, AuthError, SlackVerifier
from controller.app.manual import ManualControl
from controller.app.settings import Settings
from controller.core.ledger import read_ledger
from controller.core.slack_blocks import ACTION_HOLD, ACTION_RELEASE, action_blocks
from controller.core.state import ServiceRef
from controller.surfaces.slack_actions import SlackActionHandler
from controller.surfaces.slack_guard import SlackGuard

SECRET = "test-signing-secret-0123456789abcdef"
USER, TEAM = "U0123USER", "T0123TEAM"
REVS = [rev("checkout-00041-abc", 2), rev("checkout-00042-xyz", 3)]
OTHER = ServiceRef(project=REF.project, region=REF.region, service="inventory")


def handler(*, team_id: str | None = TEAM) -> tuple[SlackActionHandler, InMemoryCloudRun]:
    run, notes = InMemoryCloudRun(state(REVS)), RecordingNotifier()
    control = ManualControl(run, notes, lambda: T0 + timedelta(minutes=1), Settings())
    auth = AuthConfig.from_env({"SLACK_SIGNING_SECRET": SECRET, "ROLLBACK_SLACK_ALLOWED_USERS": USER})
    guard = SlackGuard(team_id=team_id)
    return SlackActionHandler(SlackVerifier(auth), control, notes, guard=guard), run


def message_about(ref: ServiceRef) -> dict[str, Any]:
    return {
        "type": "message",
        "text": f"Rolled back {ref.service}",
        "blocks": [
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*Service*\n{ref.service}"}]},
            *action_blocks(ref, undo=True, hold=True, release=True),
        ],
    }


def request(
    action_id: str, value: str, *, message: dict[str, Any] | None, team: str = TEAM
) -> tuple[bytes, dict[str, str]]:
    payload = {
        "type": "block_actions",
        "user": {"id": USER, "name": "oncall", "team_id": team},
        "team": {"id": team, "domain": "w"},
        "container": {"type": "message", "message_ts": "1.0", "channel_id": "C1"},
        "channel": {"id": "C1"},
        "actions": [{"action_id": action_id, "value": value, "type": "button", "action_ts": f"{time.time():.6f}"}],
        **({"message": message} if message is not None else {}),
    }
    body = b"payload=" + urllib.parse.quote(json.dumps(payload), safe="").encode()
    ts = str(int(time.time()))
    signature = "v0=" + hmac.new(SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return body, {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}


def held(run: InMemoryCloudRun) -> bool:
    return read_ledger(run.current.annotations).hold is not None


def test_another_workspace_is_refused_with_403() -> None:
    slack, run = handler()
    body, headers = request(ACTION_HOLD, "demo-proj/us-central1/checkout", message=message_about(REF), team="T9EVIL")
    with pytest.raises(AuthError) as caught:
        slack.handle(body, headers)
    assert caught.value.failure.status == 403 and caught.value.failure.error == "wrong_workspace"
    assert run.updates == []


def test_the_pinned_workspace_is_obeyed() -> None:
    slack, run = handler()
    answer, status = slack.handle(*request(ACTION_HOLD, "demo-proj/us-central1/checkout", message=message_about(REF)))
    assert status == 200 and answer["ok"] is True
    assert held(run)


def test_a_value_naming_a_service_outside_its_message_is_refused() -> None:
    slack, run = handler()
    # The message is about inventory; the pressed value names checkout (which exists).
    body, headers = request(ACTION_HOLD, "demo-proj/us-central1/checkout", message=message_about(OTHER))
    answer, status = slack.handle(body, headers)
    assert status == 200 and answer["error"] == "not_on_message"
    assert run.reads == 0 and not held(run)


def test_a_press_without_its_message_is_refused() -> None:
    slack, run = handler()
    answer, _ = slack.handle(*request(ACTION_HOLD, "demo-proj/us-central1/checkout", message=None))
    assert answer["error"] == "no_message"
    assert run.reads == 0


def test_a_replayed_hold_within_the_window_is_not_applied_twice() -> None:
    slack, run = handler()
    hold = request(ACTION_HOLD, "demo-proj/us-central1/checkout", message=message_about(REF))
    assert slack.handle(*hold)[0]["ok"] is True
    release = request(ACTION_RELEASE, "demo-proj/us-central1/checkout", message=message_about(REF))
    assert slack.handle(*release)[0]["ok"] is True
    assert not held(run)
    answer, status = slack.handle(*hold)  # the captured Hold request, sent again
    assert status == 200 and answer["error"] == "replayed"
    assert not held(run)
    writes = len(run.updates)
    assert slack.handle(*release)[0]["error"] == "replayed"
    assert len(run.updates) == writes


def test_replay_memory_forgets_after_its_window() -> None:
    now = [0.0]
    guard = SlackGuard(clock=lambda: now[0], window=600)
    body, headers = b"payload=x", {"X-Slack-Request-Timestamp": "1"}
    assert guard._first_time(body, headers)
    assert not guard._first_time(body, headers)
    now[0] = 601
    assert guard._first_time(body, headers)
