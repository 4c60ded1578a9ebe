"""A rollback whose write the delivery never saw confirmed is announced exactly once (issue 12 points 1, 4).

Point 1, answer lost: the real google-cloud-run adapter talks to the Cloud Run emulator; a thin
wrapper lets the PATCH commit and then raises what the adapter raises for a read timeout, so the
delivery fails and Pub/Sub redelivers it. Point 4, crash: functions-framework serves the function
in a subprocess, and the emulator kills it (SIGKILL) the moment the PATCH has committed, before
it can answer; a fresh process then receives the redelivery.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cloudevents.http import CloudEvent
from deliveries import cloud_event
from support import RecordingNotifier

from controller.adapters import logs
from controller.adapters.cloudrun import Applied, CloudRunClient
from controller.adapters.policy_files import load_policies
from controller.app.engine import Controller
from controller.app.settings import Settings
from controller.core.decide import Reason
from controller.core.errors import TemporaryError
from controller.core.ledger import K_UNANNOUNCED
from controller.core.state import ServiceRef, ServiceState, TrafficTarget
from controller.emulator.cloudrun import CloudRunEmulator, PatchRecord, RevisionSpec
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.surfaces.demo import PROJECT, REGION, SERVICE, free_port, function_env, start_function, stop_process

ROOT = Path(__file__).resolve().parent.parent.parent
INCIDENT = json.loads((ROOT / "tests" / "data" / "incident-5xx-open.json").read_text())
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PREVIOUS, SUSPECT = "checkout-00041-abc", "checkout-00042-xyz"


def seed(emu: CloudRunEmulator) -> None:
    emu.reset()
    emu.add_service(
        PROJECT,
        REGION,
        SERVICE,
        revisions=[
            RevisionSpec(name=PREVIOUS, create_time=T0 - timedelta(days=2)),
            RevisionSpec(name=SUSPECT, create_time=T0 - timedelta(minutes=10)),
        ],
    )


class AnswerLost:
    """The real adapter, except that the next ``lose`` updates commit and then time out."""

    def __init__(self, inner: CloudRunClient, lose: int = 1) -> None:
        self.inner, self.lose = inner, lose

    def read(self, ref: ServiceRef) -> ServiceState:
        return self.inner.read(ref)

    def list_services(self, project: str, region: str) -> list[ServiceRef]:
        return self.inner.list_services(project, region)

    def update(
        self, state: ServiceState, traffic: tuple[TrafficTarget, ...], annotations: Mapping[str, str]
    ) -> Applied:
        applied = self.inner.update(state, traffic, annotations)  # committed on the emulator
        if self.lose:
            self.lose -= 1
            # What CloudRunClient raises when requests gives up waiting for the answer.
            raise TemporaryError(f"update: {state.ref}: ReadTimeout: Read timed out. (read timeout=10.0)")
        return applied


def delivery(message_id: str) -> CloudEvent:
    data = base64.b64encode(json.dumps(INCIDENT).encode()).decode()
    attrs = {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//pubsub", "id": message_id}
    return CloudEvent(attrs, {"message": {"data": data, "messageId": message_id}})


@pytest.fixture(scope="module")
def run_emulator() -> Iterator[CloudRunEmulator]:
    with CloudRunEmulator() as emu:
        yield emu


@pytest.fixture
def lost(run_emulator: CloudRunEmulator) -> tuple[Controller, AnswerLost, RecordingNotifier]:
    logs.configure()
    seed(run_emulator)
    run = AnswerLost(CloudRunClient(run_emulator.url, api_timeout=5, operation_timeout=5))
    notes = RecordingNotifier()
    ctl = Controller(Settings(), run, notes, policies=load_policies(ROOT / "policies"), clock=lambda: T0)
    return ctl, run, notes


def rolled_back(notes: RecordingNotifier) -> list[str]:
    return [m.text for m in notes.messages if "Rolled back" in m.text]


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]


def test_lost_answer_is_announced_once_by_the_redelivery(
    lost: tuple[Controller, AnswerLost, RecordingNotifier],
    run_emulator: CloudRunEmulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ctl, _, notes = lost
    with pytest.raises(TemporaryError):
        ctl.handle_cloud_event(delivery("m1"))  # raised: Pub/Sub redelivers
    assert run_emulator.applied_traffic_changes(PROJECT, REGION, SERVICE) == 1  # yet traffic moved
    assert rolled_back(notes) == []
    assert lines(capsys)[-1]["severity"] == "WARNING"

    outcome = ctl.handle_cloud_event(delivery("m1"))  # the redelivery
    assert outcome.notified
    (text,) = rolled_back(notes)
    assert "announced late" in text
    assert f"Serving now: {PREVIOUS} 100%" in text  # read from the service, not assumed
    (line,) = lines(capsys)
    assert line["announced_late"] is True
    assert line["decision"]["reason"] == Reason.ROLLED_BACK.value
    assert line["decision"]["suspect"] == SUSPECT and line["decision"]["target"] == PREVIOUS
    annotations = run_emulator.service(PROJECT, REGION, SERVICE)["annotations"]
    assert K_UNANNOUNCED not in annotations  # "announced" is recorded

    for again in ("m1", "m2"):  # a further redelivery, another notification: silent
        outcome = ctl.handle_cloud_event(delivery(again))
        assert outcome.decision is not None and outcome.decision.reason is Reason.ALREADY_HANDLED
    assert len(rolled_back(notes)) == 1
    assert run_emulator.applied_traffic_changes(PROJECT, REGION, SERVICE) == 1


def test_another_message_for_the_incident_leaves_the_announcement_to_the_writer(
    lost: tuple[Controller, AnswerLost, RecordingNotifier],
) -> None:
    ctl, _, notes = lost
    with pytest.raises(TemporaryError):
        ctl.handle_cloud_event(delivery("m1"))
    ctl.handle_cloud_event(delivery("m2"))  # not the message that wrote: it may still be posting
    assert rolled_back(notes) == []
    ctl.handle_cloud_event(delivery("m1"))
    assert len(rolled_back(notes)) == 1


def test_if_slack_is_down_the_next_redelivery_announces(
    lost: tuple[Controller, AnswerLost, RecordingNotifier], run_emulator: CloudRunEmulator
) -> None:
    ctl, _, notes = lost
    with pytest.raises(TemporaryError):
        ctl.handle_cloud_event(delivery("m1"))
    notes.fail = True
    assert not ctl.handle_cloud_event(delivery("m1")).notified
    assert K_UNANNOUNCED in run_emulator.service(PROJECT, REGION, SERVICE)["annotations"]
    notes.fail = False
    assert ctl.handle_cloud_event(delivery("m1")).notified
    assert K_UNANNOUNCED not in run_emulator.service(PROJECT, REGION, SERVICE)["annotations"]
    ctl.handle_cloud_event(delivery("m1"))
    assert len(rolled_back(notes)) == 2  # the failed post and the one that reached Slack; no third


def test_confirmed_rollback_is_announced_once_and_recorded(
    lost: tuple[Controller, AnswerLost, RecordingNotifier], run_emulator: CloudRunEmulator
) -> None:
    ctl, run, notes = lost
    run.lose = 0
    ctl.handle_cloud_event(delivery("m1"))
    ctl.handle_cloud_event(delivery("m1"))  # Pub/Sub may redeliver even an acknowledged message
    assert len(rolled_back(notes)) == 1
    assert K_UNANNOUNCED not in run_emulator.service(PROJECT, REGION, SERVICE)["annotations"]


def test_a_real_read_timeout_after_the_commit_is_announced_once(
    run_emulator: CloudRunEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    # No wrapper: the emulator's observer hook holds the answer of the committed PATCH longer than
    # the client's timeout, so requests raises ReadTimeout inside the real adapter.
    logs.configure()
    seed(run_emulator)
    held: list[str] = []

    def hold_answer(rec: PatchRecord) -> None:
        if rec.outcome == "applied" and not held:
            held.append(rec.operation)
            time.sleep(1.0)

    run_emulator.after_patch = hold_answer
    try:
        client = CloudRunClient(run_emulator.url, api_timeout=0.3, operation_timeout=0.3)
        notes = RecordingNotifier()
        settings = Settings(api_timeout=0.3, operation_timeout=0.3)
        ctl = Controller(settings, client, notes, policies=load_policies(ROOT / "policies"), clock=lambda: T0)
        with pytest.raises(TemporaryError):  # the answer timed out: Pub/Sub redelivers
            ctl.handle_cloud_event(delivery("m1"))
        assert run_emulator.applied_traffic_changes(PROJECT, REGION, SERVICE) == 1
        assert rolled_back(notes) == []
        for _ in range(2):
            ctl.handle_cloud_event(delivery("m1"))
        (text,) = rolled_back(notes)
        assert "announced late" in text and f"Serving now: {PREVIOUS} 100%" in text
    finally:
        run_emulator.after_patch = None
    capsys.readouterr()


# --------------------------------------------------------------------------- point 4: a crash


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def test_function_killed_between_write_and_post_is_announced_after_restart(tmp_path: Path) -> None:
    with CloudRunEmulator() as run, SlackEmulator() as slack, MonitoringEmulator() as monitoring:
        seed(run)
        env = function_env(run.url, slack.api_url, monitoring=monitoring.target)
        port = free_port()
        proc = start_function("handle_alert", port, env, log_path=tmp_path / "first.log")
        killed: list[int] = []

        def kill_on_commit(rec: PatchRecord) -> None:
            if rec.outcome == "applied" and not killed:
                # The gunicorn worker that made the write, and its master: nothing gets to post.
                for pid in [*_children(proc.pid), proc.pid]:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

        run.after_patch = kill_on_commit
        headers, body = cloud_event(INCIDENT)  # one Pub/Sub message, delivered twice
        try:
            with pytest.raises(requests.ConnectionError):
                requests.post(f"http://127.0.0.1:{port}/", headers=headers, data=body, timeout=30)
        finally:
            stop_process(proc)
        run.after_patch = None
        assert run.applied_traffic_changes(PROJECT, REGION, SERVICE) == 1
        assert [m for m in slack.messages if "Rolled back" in m["text"]] == []

        port = free_port()
        proc = start_function("handle_alert", port, env, log_path=tmp_path / "second.log")
        try:
            for _ in range(2):  # the redelivery announces; a further one stays silent
                answer = requests.post(f"http://127.0.0.1:{port}/", headers=headers, data=body, timeout=30)
                assert answer.status_code == 200
        finally:
            stop_process(proc)
        announced = [m for m in slack.messages if "Rolled back" in m["text"]]
        assert len(announced) == 1
        assert "announced late" in announced[0]["text"]
        assert run.applied_traffic_changes(PROJECT, REGION, SERVICE) == 1
        logged = [json.loads(x) for x in (tmp_path / "second.log").read_text().splitlines() if x.startswith("{")]
        assert [x.get("announced_late") for x in logged if x.get("event") == "alert"] == [True, None]
