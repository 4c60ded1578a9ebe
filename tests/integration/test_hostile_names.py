"""Names from an alert's labels are checked at the edge (issue 12 point 5).

The engine runs in-process with the real google-cloud-run adapter against the Cloud Run emulator:
a label that is not a valid project, region, service or revision name must be rejected with one
clear log line and acknowledged, before any resource name is built from it (no Cloud Run call).
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from support import RecordingNotifier

from controller.adapters import logs
from controller.adapters.cloudrun import CloudRunClient
from controller.adapters.policy_files import load_policies
from controller.app.engine import Controller
from controller.app.settings import Settings
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec

ROOT = Path(__file__).resolve().parent.parent.parent
INCIDENT = json.loads((ROOT / "tests" / "data" / "incident-5xx-open.json").read_text())
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def emulator() -> Iterator[CloudRunEmulator]:
    with CloudRunEmulator() as emu:
        yield emu


@pytest.fixture
def ctl(emulator: CloudRunEmulator) -> Controller:
    logs.configure()
    emulator.reset()
    for service in ("checkout", "inventory"):
        emulator.add_service(
            "demo-proj",
            "us-central1",
            service,
            revisions=[
                RevisionSpec(name=f"{service}-00041-abc", create_time=T0 - timedelta(days=1)),
                RevisionSpec(name=f"{service}-00042-xyz", create_time=T0 - timedelta(minutes=10)),
            ],
        )
    run = CloudRunClient(emulator.url, api_timeout=5, operation_timeout=5)
    # The sample incident opened at 12:06; a clock minutes later keeps the delivery fresh.
    clock = lambda: T0 + timedelta(minutes=9)  # noqa: E731
    return Controller(Settings(), run, RecordingNotifier(), policies=load_policies(ROOT / "policies"), clock=clock)


def event(**labels: str) -> CloudEvent:
    doc: dict[str, Any] = copy.deepcopy(INCIDENT)
    doc["incident"]["resource"]["labels"].update(labels)
    data = base64.b64encode(json.dumps(doc).encode("utf-8", "surrogatepass")).decode()
    attrs = {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//pubsub", "id": "7"}
    return CloudEvent(attrs, {"message": {"data": data, "messageId": "7"}})


HOSTILE = [
    pytest.param({"service_name": "checkout/../inventory"}, "service", id="service-path-traversal"),
    pytest.param({"service_name": "checkout/inventory"}, "service", id="service-slash"),
    pytest.param({"service_name": ".."}, "service", id="service-dotdot"),
    pytest.param({"service_name": "c" * 70_000}, "service", id="service-70kb"),
    pytest.param({"service_name": "check\ud800out"}, "service", id="service-lone-surrogate"),
    pytest.param({"revision_name": "checkout-00042-xyz/../../x"}, "revision", id="revision-traversal"),
    pytest.param({"location": "us-central1/services/inventory"}, "region", id="region-slash"),
    pytest.param({"project_id": "demo-proj/locations/x"}, "project", id="project-slash"),
    pytest.param({"project_id": "Demo_Proj"}, "project", id="project-uppercase"),
]


@pytest.mark.parametrize(("labels", "kind"), HOSTILE)
def test_invalid_name_is_rejected_logged_and_acknowledged(
    ctl: Controller, emulator: CloudRunEmulator, capsys: pytest.CaptureFixture[str], labels: dict[str, str], kind: str
) -> None:
    outcome = ctl.handle_cloud_event(event(**labels))  # returns: acknowledged
    assert outcome.error and outcome.decision is None
    assert emulator.requests == []  # no resource name was built, nothing was asked of Cloud Run
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert len(lines) == 1
    line = lines[0]
    assert line["severity"] == "ERROR"
    assert str(line["message"]).startswith("rejected delivery (acknowledged, not retried)")
    assert f"{kind} " in str(line["error"])
    assert len(str(line["error"])) < 400  # the bad value is shown clipped, not 70 KB of it


def test_valid_names_still_act(ctl: Controller, emulator: CloudRunEmulator) -> None:
    outcome = ctl.handle_cloud_event(event())
    assert outcome.decision is not None and outcome.decision.changes_traffic
    assert emulator.applied_traffic_changes("demo-proj", "us-central1", "checkout") == 1
