"""The alert path end to end: functions-framework serving ``handle_alert`` over real HTTP, the
real google-cloud-run and slack-sdk clients inside it, talking to the local emulators.

Each test posts Pub/Sub deliveries (binary-mode CloudEvents as Eventarc sends them, or the raw
push the Pub/Sub emulator sends) and then inspects the emulators: what PATCHes reached Cloud
Run, what traffic the service has now, what Slack received.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from deliveries import cloud_event

from controller.core.ledger import Ledger, write_ledger
from controller.core.slack_blocks import ACTION_HOLD, ACTION_UNDO
from controller.emulator.cloudrun import CloudRunEmulator, PatchRecord, RevisionSpec
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.surfaces.demo import PROJECT, REGION, SERVICE, free_port, function_env, start_function, stop_process

DATA = Path(__file__).resolve().parent.parent / "data"
INCIDENT = json.loads((DATA / "incident-5xx-open.json").read_text())
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
OLDEST, PREVIOUS, SUSPECT = "checkout-00040-aaa", "checkout-00041-abc", "checkout-00042-xyz"


def seed(emu: CloudRunEmulator, annotations: dict[str, str] | None = None, ready_previous: bool = True) -> None:
    emu.reset()
    emu.add_service(
        PROJECT,
        REGION,
        SERVICE,
        revisions=[
            RevisionSpec(name=OLDEST, create_time=T0 - timedelta(days=3)),
            RevisionSpec(name=PREVIOUS, create_time=T0 - timedelta(days=2), ready=ready_previous),
            RevisionSpec(name=SUSPECT, create_time=T0 - timedelta(minutes=10)),
        ],
        annotations=annotations,
    )


def incident(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(INCIDENT)
    doc["incident"].update(changes)
    return doc


class Stack:
    def __init__(self, run: CloudRunEmulator, slack: SlackEmulator, port: int) -> None:
        self.run, self.slack, self.port = run, slack, port

    def deliver(self, doc: dict[str, Any] | bytes) -> requests.Response:
        headers, body = cloud_event(doc)
        return requests.post(f"http://127.0.0.1:{self.port}/", headers=headers, data=body, timeout=30)

    def traffic(self) -> list[dict[str, Any]]:
        return self.run.traffic(PROJECT, REGION, SERVICE)

    def changes(self) -> int:
        return self.run.applied_traffic_changes(PROJECT, REGION, SERVICE)

    def annotations(self) -> dict[str, str]:
        annotations: dict[str, str] = self.run.service(PROJECT, REGION, SERVICE).get("annotations", {})
        return annotations


Emulators = tuple[CloudRunEmulator, SlackEmulator, MonitoringEmulator]


@pytest.fixture(scope="module")
def emulators() -> Iterator[Emulators]:
    # Monitoring holds no data here: verification is inconclusive and the default policy acts
    # on the alert alone (tests/integration/test_verification.py covers the evidence itself).
    with CloudRunEmulator(page_size=2) as run, SlackEmulator() as slack, MonitoringEmulator() as monitoring:
        yield run, slack, monitoring


def _serve(emulators: Emulators, tmp: Path, **env: str) -> Iterator[Stack]:
    run, slack, monitoring = emulators
    port = free_port()
    env_ = function_env(run.url, slack.api_url, monitoring=monitoring.target, **env)
    proc = start_function("handle_alert", port, env_, log_path=tmp / "function.log")
    try:
        yield Stack(run, slack, port)
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def server(emulators: Emulators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from _serve(emulators, tmp_path_factory.mktemp("fn"))


@pytest.fixture
def stack(server: Stack) -> Stack:
    seed(server.run)
    server.run.before_patch = None
    server.slack.reset()
    return server


def traffic_patches(stack: Stack) -> list[PatchRecord]:
    """PATCHes but the one recording that Slack was told (applied, traffic unchanged: controller/core/announce.py)."""
    return [p for p in stack.run.patches if p.outcome != "applied" or p.traffic_changed]


def rollback_messages(stack: Stack) -> list[dict[str, Any]]:
    return [m for m in stack.slack.messages if "Rolled back" in m["text"]]


def test_open_incident_rolls_back_to_previous_ready_revision(stack: Stack) -> None:
    assert stack.traffic()[0]["type"] == "LATEST"
    response = stack.deliver(INCIDENT)
    assert response.status_code == 200
    traffic = stack.traffic()
    assert [(t["type"], t["revision"], t["percent"]) for t in traffic] == [("REVISION", PREVIOUS, 100)]  # LATEST pinned
    assert stack.changes() == 1
    stack.slack.wait_for_messages(1, timeout=5)
    assert len(stack.slack.messages) == 1
    message = stack.slack.messages[0]
    assert message["channel"] == "#deploys"
    assert SUSPECT in json.dumps(message["blocks"])
    assert PREVIOUS in json.dumps(message["blocks"])
    assert "18.3%" in json.dumps(message["blocks"])  # the alert's observed value, with the threshold
    # On-call can undo or hold from the message itself (handled by POST /slack/actions).
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == [ACTION_UNDO, ACTION_HOLD]
    assert {e["value"] for e in actions["elements"]} == {f"{PROJECT}/{REGION}/{SERVICE}"}
    annotations = stack.annotations()
    assert SUSPECT in annotations["rollback-controller/quarantined"]
    assert annotations["rollback-controller/last-good"] == PREVIOUS


def test_same_incident_again_does_nothing_more(stack: Stack) -> None:
    assert stack.deliver(INCIDENT).status_code == 200
    patches_before = len(stack.run.patches)
    assert stack.deliver(INCIDENT).status_code == 200  # a new delivery id, same incident
    assert len(stack.run.patches) == patches_before  # not even a PATCH with the same traffic
    assert stack.changes() == 1
    assert len(rollback_messages(stack)) == 1


def test_closed_incident_changes_nothing_and_says_so(stack: Stack) -> None:
    response = stack.deliver(incident(state="closed", ended_at=1717244000))
    assert response.status_code == 200
    assert stack.changes() == 0
    assert stack.run.patches == []
    stack.slack.wait_for_messages(1, timeout=5)
    assert "closed" in stack.slack.messages[0]["text"].lower()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"not json at all", id="not-json"),
        pytest.param(b'{"incident": {"incident_id": 7}}', id="wrong-types"),
        pytest.param(b"[]", id="json-array"),
        pytest.param(json.dumps({"version": "1.2"}).encode(), id="no-incident"),
    ],
)
def test_malformed_delivery_is_acknowledged_and_changes_nothing(stack: Stack, payload: bytes) -> None:
    response = stack.deliver(payload)
    assert response.status_code == 200  # acknowledged: Pub/Sub must not redeliver it
    assert stack.run.patches == []
    assert stack.slack.messages == []


def test_garbage_envelope_is_acknowledged(stack: Stack) -> None:
    headers, _ = cloud_event(INCIDENT)
    response = requests.post(
        f"http://127.0.0.1:{stack.port}/", headers=headers, data=b'{"message": {"data": "%%%"}}', timeout=10
    )
    assert response.status_code == 200
    assert stack.run.patches == []


def test_suspect_serving_no_traffic_is_left_alone(stack: Stack) -> None:
    stack.run.set_traffic(PROJECT, REGION, SERVICE, [{"type": "REVISION", "revision": PREVIOUS, "percent": 100}])
    patches = len(stack.run.patches)
    assert stack.deliver(INCIDENT).status_code == 200
    assert len(stack.run.patches) == patches
    assert stack.traffic()[0]["revision"] == PREVIOUS


def test_two_concurrent_deliveries_change_traffic_once(stack: Stack) -> None:
    # Hold the first PATCH until the second delivery has read the same etag and PATCHes too,
    # so the race really happens (bounded: if it cannot happen, the barrier times out).
    barrier = threading.Barrier(2, timeout=3)

    held: list[str] = []

    def hold(name: str) -> None:
        if len(held) >= 2:  # the winner's later "announced" write (traffic unchanged) is not raced
            return
        held.append(name)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()

    stack.run.before_patch = hold
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: stack.deliver(INCIDENT), range(2)))
    assert [r.status_code for r in responses] == [200, 200]
    assert stack.changes() == 1
    outcomes = sorted(p.outcome for p in traffic_patches(stack))
    assert outcomes == ["applied", "conflict"]  # the loser re-read, saw the incident handled, stopped
    assert len(rollback_messages(stack)) == 1


def test_stale_etag_is_reread_and_the_rollback_succeeds(stack: Stack) -> None:
    calls: list[int] = []

    def someone_else_writes_first(_name: str) -> None:
        if not calls:
            calls.append(1)
            # Same traffic, new etag: a human touched the service between our read and our write.
            stack.run.set_traffic(PROJECT, REGION, SERVICE, [{"type": "LATEST", "percent": 100}])

    stack.run.before_patch = someone_else_writes_first
    assert stack.deliver(INCIDENT).status_code == 200
    assert [p.outcome for p in traffic_patches(stack)] == ["conflict", "applied"]
    assert stack.traffic()[0]["revision"] == PREVIOUS


def test_quarantined_revision_is_never_the_target(stack: Stack) -> None:
    ledger = Ledger().quarantine(PREVIOUS, reason="rolled back last week", now=T0)
    seed(stack.run, annotations=write_ledger(ledger, {}))
    assert stack.deliver(INCIDENT).status_code == 200
    assert [(t["revision"], t["percent"]) for t in stack.traffic()] == [(OLDEST, 100)]


def test_no_safe_target_changes_nothing_and_tells_slack(stack: Stack) -> None:
    ledger = Ledger().quarantine(OLDEST, reason="bad", now=T0)
    seed(stack.run, annotations=write_ledger(ledger, {}), ready_previous=False)
    assert stack.deliver(INCIDENT).status_code == 200
    assert stack.run.patches == []
    stack.slack.wait_for_messages(1, timeout=5)
    assert "Cannot roll back" in stack.slack.messages[0]["text"]


def test_slack_outage_does_not_block_the_rollback(stack: Stack) -> None:
    stack.slack.fail_next(5, status=500)
    assert stack.deliver(INCIDENT).status_code == 200
    assert stack.changes() == 1


def test_unknown_service_is_acknowledged(stack: Stack) -> None:
    doc = incident()
    doc["incident"]["resource"]["labels"]["service_name"] = "no-such-service"
    assert stack.deliver(doc).status_code == 200
    assert stack.run.patches == []


@pytest.fixture(scope="module")
def dry_run_server(emulators: Emulators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from _serve(emulators, tmp_path_factory.mktemp("fn-dry"), ROLLBACK_DRY_RUN="true")


def test_dry_run_tells_slack_and_changes_nothing(dry_run_server: Stack) -> None:
    stack = dry_run_server
    seed(stack.run)
    stack.slack.reset()
    assert stack.deliver(INCIDENT).status_code == 200
    assert stack.run.patches == []
    assert stack.traffic()[0]["type"] == "LATEST"
    stack.slack.wait_for_messages(1, timeout=5)
    text = stack.slack.messages[0]["text"]
    assert "DRY RUN" in text
    assert SUSPECT in text
    assert PREVIOUS in text
