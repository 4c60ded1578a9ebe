"""handle_command's delivery rules on in-memory fakes: malformed commands are acknowledged and
logged, old ones dropped with a notice, temporary failures raised, redeliveries do nothing; and the
Slack dispatch modes (queued / inline within one deadline)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from pubsub_fakes import InMemoryPublisher, message_event
from support import REF, T0, InMemoryCloudRun, RecordingNotifier, latest, pinned, rev, state

from controller.adapters import logs
from controller.adapters.auth import AuthConfig, SlackVerifier
from controller.adapters.cloudrun import Applied
from controller.adapters.command_queue import CommandQueue
from controller.app.manual import ManualControl
from controller.app.settings import Settings
from controller.core.commands import MAX_AGE, SlackActionCommand, decode, encode
from controller.core.errors import TemporaryError
from controller.core.ledger import Action, Ledger, read_ledger, write_ledger
from controller.core.slack_blocks import BLOCK_ID, BlockActions, action_blocks
from controller.core.state import ServiceState, TrafficTarget
from controller.surfaces.command_worker import CommandWorker
from controller.surfaces.slack_actions import Pressed, SlackActionHandler

TOPIC = "projects/demo-proj/topics/rollback-commands"
REVS = [rev("checkout-00041-abc", 2), rev("checkout-00042-xyz", 3)]
NOW = T0 + timedelta(minutes=1)


def rolled_back() -> InMemoryCloudRun:
    ledger = Ledger().record_action(
        Action(
            kind="rollback",
            at=T0,
            actor="rollback-controller",
            from_revision="checkout-00042-xyz",
            to_revision="checkout-00041-abc",
            before=(latest(),),
        ),
        automatic=True,
        now=T0,
    )
    return InMemoryCloudRun(state(REVS, [pinned("checkout-00041-abc", 100)], annotations=write_ledger(ledger, {})))


def payload() -> dict[str, Any]:
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": "Rolled back checkout"}}, action_blocks(REF)[0]]
    return {
        "type": "block_actions",
        "user": {"id": "U0123MARIA", "name": "maria"},
        "container": {"type": "message", "message_ts": "1717243600.000100", "channel_id": "C0DEPLOYS"},
        "message": {"text": "Rolled back checkout", "blocks": blocks},
        "response_url": "",
        "actions": [{"action_id": "rollback_undo", "block_id": BLOCK_ID, "value": "demo-proj/us-central1/checkout"}],
    }


def command(*, requested_at: Any = T0, command_id: str = "c0ffee") -> SlackActionCommand:
    return SlackActionCommand(
        v=1,
        id=command_id,
        kind="slack-action",
        service=REF,
        action="undo",
        actor="slack:U0123MARIA (maria)",
        requested_at=requested_at,
        slack=payload(),
    )


def worker(run: Any, notifier: RecordingNotifier, *, now: Any = NOW) -> CommandWorker:
    control = ManualControl(run, notifier, lambda: now, Settings())
    slack = SlackActionHandler(SlackVerifier(AuthConfig()), control, notifier)
    return CommandWorker(slack, None, notifier, clock=lambda: now)


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.fixture(autouse=True)
def _json_logs() -> None:
    logs.configure()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"not json", "command: not JSON"),
        (json.dumps({"v": 2, "id": "x", "kind": "canary-tick"}).encode(), "command.v"),
        (
            json.dumps(
                {"v": 1, "id": "x", "kind": "reboot", "actor": "a", "requested_at": "2024-06-01T12:00:00Z"}
            ).encode(),
            "command",
        ),
        (encode(command()).replace(b'"undo"', b'"delete"'), "command.slack-action.action"),
    ],
    ids=["not-json", "unknown-version", "unknown-kind", "unknown-action"],
)
def test_malformed_commands_are_acknowledged_and_logged(
    data: bytes, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = rolled_back()
    outcome = worker(run, RecordingNotifier()).handle_cloud_event(message_event(data))
    assert outcome["outcome"] == "malformed"
    assert run.updates == []
    [line] = log_lines(capsys)
    assert line["severity"] == "ERROR" and line["outcome"] == "malformed"
    assert line["error"].startswith(error)


def test_a_slack_action_whose_slack_payload_is_broken_is_malformed(capsys: pytest.CaptureFixture[str]) -> None:
    broken = command().model_copy(update={"slack": {"type": "block_actions", "actions": []}})
    run = rolled_back()
    outcome = worker(run, RecordingNotifier()).handle_cloud_event(message_event(encode(broken)))
    assert outcome["outcome"] == "malformed" and run.updates == []
    [line] = log_lines(capsys)
    assert line["error"].startswith("command.slack.")


def test_a_slack_action_is_performed_once_and_its_id_is_recorded_with_the_effect() -> None:
    run, notes = rolled_back(), RecordingNotifier()
    data = encode(command())
    first = worker(run, notes).handle_cloud_event(message_event(data))
    assert first["outcome"] == "done" and first["changed"] is True
    assert read_ledger(run.current.annotations).handled("cmd:c0ffee") is not None
    assert len(run.updates) == 1
    again = worker(run, notes).handle_cloud_event(message_event(data))
    assert again["outcome"] == "duplicate"
    assert len(run.updates) == 1
    assert len(notes.updates) == 1  # the message was updated once, not again on redelivery
    [reply] = notes.messages
    assert reply.thread_ts == "1717243600.000100" and reply.channel == "C0DEPLOYS"
    assert "LATEST 100%" in json.dumps(reply.blocks)  # the numbers: traffic now
    assert not any(b.get("block_id") == BLOCK_ID for b in reply.blocks)  # buttons only on the message


def test_an_expired_press_is_dropped_with_a_notice_and_the_buttons_come_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run, notes = rolled_back(), RecordingNotifier()
    late = NOW - MAX_AGE["slack-action"] - timedelta(seconds=30)
    outcome = worker(run, notes).handle_cloud_event(message_event(encode(command(requested_at=late))))
    assert outcome["outcome"] == "expired"
    assert run.updates == []
    [(channel, ts, restored)] = notes.updates
    assert (channel, ts) == ("C0DEPLOYS", "1717243600.000100")
    assert any(b.get("block_id") == BLOCK_ID for b in restored.blocks)
    assert "waited too long" in json.dumps(restored.blocks)
    assert [line["severity"] for line in log_lines(capsys)] == ["WARNING"]


class UnavailableCloudRun(InMemoryCloudRun):
    def update(
        self, state: ServiceState, traffic: tuple[TrafficTarget, ...], annotations: Mapping[str, str]
    ) -> Applied:
        raise TemporaryError("Cloud Run unavailable (503)")


def test_a_temporary_failure_raises_for_redelivery_and_nothing_is_recorded() -> None:
    ledger = rolled_back().current.annotations
    run, notes = (
        UnavailableCloudRun(state(REVS, [pinned("checkout-00041-abc", 100)], annotations=ledger)),
        RecordingNotifier(),
    )
    with pytest.raises(TemporaryError):
        worker(run, notes).handle_cloud_event(message_event(encode(command())))
    assert read_ledger(run.current.annotations).handled("cmd:c0ffee") is None
    assert notes.updates == []  # the message keeps saying "in progress" until a redelivery acts


def test_queued_press_publishes_and_marks_the_message_in_progress() -> None:
    publisher, notes = InMemoryPublisher(), RecordingNotifier()
    control = ManualControl(rolled_back(), notes, lambda: NOW, Settings())
    handler = SlackActionHandler(
        SlackVerifier(AuthConfig()), control, notes, commands=CommandQueue(TOPIC, publisher, lambda: NOW)
    )
    body, status = handler.dispatch(
        BlockActions.model_validate(payload()), Pressed("undo", REF), started=time.monotonic()
    )
    assert status == 200 and body["queued"] is True
    [(_, data)] = publisher.published
    queued = decode(data)
    assert isinstance(queued, SlackActionCommand) and queued.action == "undo" and queued.requested_at == NOW
    [(_, _, pending)] = notes.updates
    assert "Undoing the last action on checkout… (requested by <@U0123MARIA>)" in json.dumps(
        pending.blocks, ensure_ascii=False
    )


def test_queued_press_that_cannot_be_published_says_so_and_does_nothing() -> None:
    notes = RecordingNotifier()
    run = rolled_back()
    handler = SlackActionHandler(
        SlackVerifier(AuthConfig()),
        ManualControl(run, notes, lambda: NOW, Settings()),
        notes,
        commands=CommandQueue(TOPIC, InMemoryPublisher(fail=True), lambda: NOW),
    )
    body, status = handler.dispatch(
        BlockActions.model_validate(payload()), Pressed("undo", REF), started=time.monotonic()
    )
    assert status == 200 and body["error"] == "unavailable" and "could not be queued" in body["text"]
    assert run.updates == []
    pending, restored = (message for _, _, message in notes.updates)
    assert not any(b.get("block_id") == BLOCK_ID for b in pending.blocks)
    assert any(b.get("block_id") == BLOCK_ID for b in restored.blocks)  # the buttons are back


class SlowCloudRun(InMemoryCloudRun):
    def __init__(self, initial: ServiceState, delay: float) -> None:
        super().__init__(initial)
        self.delay = delay
        self.done = threading.Event()

    def update(
        self, state: ServiceState, traffic: tuple[TrafficTarget, ...], annotations: Mapping[str, str]
    ) -> Applied:
        time.sleep(self.delay)
        try:
            return super().update(state, traffic, annotations)
        finally:
            self.done.set()


def test_inline_press_answers_within_one_deadline_and_finishes_afterwards() -> None:
    slow = SlowCloudRun(rolled_back().current, delay=2.0)
    notes = RecordingNotifier()
    handler = SlackActionHandler(
        SlackVerifier(AuthConfig()), ManualControl(slow, notes, lambda: NOW, Settings()), notes, inline_deadline=0.5
    )
    started = time.monotonic()
    body, status = handler.dispatch(BlockActions.model_validate(payload()), Pressed("undo", REF), started=started)
    assert time.monotonic() - started < 1.5
    assert status == 200 and body["pending"] is True
    assert slow.done.wait(10)
    deadline = time.monotonic() + 5
    while not notes.updates and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(slow.updates) == 1 and len(notes.updates) == 1  # the message is updated when it is done
