"""Decision events (ROLLBACK_EVENTS_TOPIC): every decision's log line is also published as a versioned
JSON event, and a publish failure never blocks or undoes the action (docs/events.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pubsub_fakes import InMemoryPublisher
from support import REF, T0, InMemoryCloudRun, RecordingNotifier, alert, pinned, rev, state

from controller.adapters import events, logs
from controller.adapters.policy_files import load_policies
from controller.app.engine import Controller
from controller.app.manual import ManualControl, Refused
from controller.app.settings import Settings
from controller.core.decide import Reason
from controller.core.ledger import Action, Hold, Ledger, write_ledger
from controller.core.state import TrafficTarget

ROOT = Path(__file__).resolve().parent.parent.parent
TOPIC = "projects/demo-proj/topics/rollback-events"
REVS = [rev("checkout-00040-aaa", 1), rev("checkout-00041-abc", 2), rev("checkout-00042-xyz", 3)]


@pytest.fixture
def publisher() -> Iterator[InMemoryPublisher]:
    logs.configure()
    fake = InMemoryPublisher()
    events.install(TOPIC, fake)
    try:
        yield fake
    finally:
        events.uninstall()


def published(fake: InMemoryPublisher) -> list[dict[str, Any]]:
    assert all(topic == TOPIC for topic, _ in fake.published)
    return [json.loads(data) for _, data in fake.published]


def test_an_alert_rollback_is_published_with_revisions_traffic_and_incident(publisher: InMemoryPublisher) -> None:
    run = InMemoryCloudRun(state(REVS))
    ctl = Controller(
        Settings(),
        run,
        RecordingNotifier(),
        policies=load_policies(ROOT / "policies"),
        clock=lambda: T0 + timedelta(minutes=7),
    )
    outcome = ctl.handle_alert(alert())
    assert outcome.decision is not None and outcome.decision.reason is Reason.ROLLED_BACK
    [event] = published(publisher)
    assert event["v"] == 1 and event["source"] == "alert"
    assert (event["what"], event["outcome"]) == ("rolled-back", "acted")
    assert event["incident_id"] == "0.inc1"
    assert event["service"] == REF.model_dump()
    assert event["revisions"] == {"suspect": "checkout-00042-xyz", "target": "checkout-00041-abc"}
    assert [t["revision"] for t in event["traffic_after"]] == ["checkout-00041-abc"]
    assert event["time"].endswith("Z") and event["why"]


def test_a_refused_alert_is_an_event_too(publisher: InMemoryPublisher) -> None:
    held = Ledger(hold=Hold(by="alice", at=T0, reason="deploy freeze"))
    run = InMemoryCloudRun(state(REVS, annotations=write_ledger(held, {})))
    ctl = Controller(
        Settings(),
        run,
        RecordingNotifier(),
        policies=load_policies(ROOT / "policies"),
        clock=lambda: T0 + timedelta(minutes=7),
    )
    ctl.handle_alert(alert())
    [event] = published(publisher)
    assert (event["what"], event["outcome"]) == ("held", "no-change")
    assert run.updates == []


def test_manual_actions_and_refusals_are_published_with_the_actor(publisher: InMemoryPublisher) -> None:
    ledger = Ledger().record_action(
        Action(
            kind="rollback",
            at=T0,
            actor="rollback-controller",
            from_revision="checkout-00042-xyz",
            to_revision="checkout-00041-abc",
            before=(TrafficTarget(kind="latest", percent=100),),
        ),
        automatic=True,
        now=T0,
    )
    run = InMemoryCloudRun(state(REVS, [pinned("checkout-00041-abc", 100)], annotations=write_ledger(ledger, {})))
    control = ManualControl(run, RecordingNotifier(), lambda: T0, Settings())
    control.undo(REF, actor="alice@example.com", reason="false alarm")
    with pytest.raises(Refused):
        control.undo(REF, actor="bob@example.com")
    done, refused = published(publisher)
    assert (done["what"], done["outcome"], done["actor"]) == ("manual-undo", "acted", "alice@example.com")
    assert [t["revision"] for t in done["traffic_before"]] == ["checkout-00041-abc"]
    assert [t["type"] for t in done["traffic_after"]] == ["LATEST"]
    assert (refused["outcome"], refused["refusal"], refused["actor"]) == (
        "refused",
        "nothing_to_undo",
        "bob@example.com",
    )


def test_a_publish_failure_is_logged_and_the_action_stands(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure()
    events.install(TOPIC, InMemoryPublisher(fail=True))
    try:
        run = InMemoryCloudRun(state(REVS))
        ctl = Controller(
            Settings(),
            run,
            RecordingNotifier(),
            policies=load_policies(ROOT / "policies"),
            clock=lambda: T0 + timedelta(minutes=7),
        )
        outcome = ctl.handle_alert(alert())
    finally:
        events.uninstall()
    assert outcome.decision is not None and outcome.decision.reason is Reason.ROLLED_BACK
    assert len(run.traffic_changes) == 1  # the rollback (the second write only records that Slack was told)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(line["message"].startswith("decision event not published") for line in lines)
    assert any(line.get("event") == "alert" for line in lines)  # the decision's own line is still written


def test_without_a_topic_nothing_is_installed() -> None:
    assert events.install(None) is None
    assert events.install("") is None
