"""Fuzzing the alert path: the envelope/incident parser and the whole delivery (hypothesis).

Deliveries go through the engine with the real google-cloud-run adapter against the Cloud Run
emulator (a fake could not show a label turning into a bad resource name).

Properties, for any input (bounded to a few seconds; the CI profile is in tests/fuzz/conftest.py):

* the parser raises nothing but ``MalformedInput`` (a 500 from Pub/Sub's point of view would be a
  poison message, redelivered forever);
* a delivery either acts, decides not to, or is rejected, and never raises for input that can
  never succeed: with every API up, the only exception a delivery may raise is none at all;
* an invalid delivery (rejected, or naming a service that does not exist) changes nothing;
* every delivery writes at least one log line, and every line is one JSON object.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fuzz_profile  # noqa: F401  (loads the bounded CI profile)
import pytest
from cloudevents.http import CloudEvent
from hypothesis import given
from hypothesis import strategies as st
from support import RecordingNotifier

from controller.adapters import logs
from controller.adapters.cloudrun import CloudRunClient
from controller.adapters.policy_files import load_policies
from controller.app.engine import Controller
from controller.app.settings import Settings
from controller.core.envelope import parse_cloud_event
from controller.core.errors import MalformedInput
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec

ROOT = Path(__file__).resolve().parent.parent.parent
INCIDENT: dict[str, Any] = json.loads((ROOT / "tests" / "data" / "incident-5xx-open.json").read_text())
POLICIES = load_policies(ROOT / "policies")
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

# Text that has broken things before: markup, path segments, lone surrogates, NUL, long runs.
HOSTILE = st.sampled_from(
    ["", "..", "/", "checkout/../inventory", "\ud800", "\x00", "<!channel>", "&amp;", "a" * 5000, "CHECKOUT", " "]
)
TEXT = st.one_of(HOSTILE, st.text(max_size=40))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), TEXT)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
LABEL_KEYS = st.sampled_from(["project_id", "service_name", "revision_name", "location", "region", "service"])
INCIDENT_KEYS = st.sampled_from(
    ["incident_id", "state", "started_at", "ended_at", "url", "summary", "observed_value", "threshold_value",
     "resource", "metric", "metadata", "policy_name", "policy_user_labels", "condition", "condition_name",
     "scoping_project_id", "documentation"]
)  # fmt: skip


@st.composite
def incidents(draw: st.DrawFn) -> dict[str, Any]:
    """The real sample with some fields replaced by anything, and some labels by hostile text."""
    doc = copy.deepcopy(INCIDENT)
    for key in draw(st.lists(INCIDENT_KEYS, max_size=3)):
        doc["incident"][key] = draw(JSON)
    labels = doc["incident"].get("resource")
    if isinstance(labels, dict) and isinstance(labels.get("labels"), dict):
        for key in draw(st.lists(LABEL_KEYS, max_size=2)):
            labels["labels"][key] = draw(st.one_of(TEXT, JSON))
    if draw(st.booleans()):
        doc["version"] = draw(JSON)
    return doc


def encode(doc: Any) -> str:
    return base64.b64encode(json.dumps(doc).encode("utf-8", "surrogatepass")).decode()


@st.composite
def events(draw: st.DrawFn) -> CloudEvent:
    kind = draw(st.sampled_from(["incident", "incident", "incident", "raw-data", "envelope"]))
    if kind == "incident":
        data: Any = {"message": {"data": encode(draw(incidents())), "messageId": draw(st.text(max_size=8))}}
    elif kind == "raw-data":
        raw = draw(st.one_of(st.binary(max_size=200), st.just(b"{" * 3000)))
        data = {"message": {"data": base64.b64encode(raw).decode(), "messageId": "1"}}
    else:
        data = draw(JSON)
    event_type = draw(st.sampled_from(["google.cloud.pubsub.topic.v1.messagePublished", "other", ""]))
    return CloudEvent({"type": event_type or "x", "source": "//pubsub", "id": draw(st.text(min_size=1)) or "1"}, data)


class Lines(logging.Handler):
    """Every line the controller writes, formatted exactly as Cloud Logging would get it."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logs.CloudLoggingFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        text.encode("utf-8")  # what writing it to stdout does; raising here is a lost record
        self.lines.append(text)

    def handleError(self, record: logging.LogRecord) -> None:
        self.lines.append("LOST: " + record.getMessage()[:200])


@pytest.fixture(scope="module")
def lines() -> Iterator[Lines]:
    logs.configure()
    handler = Lines()
    logger = logging.getLogger("controller")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@given(events())
def test_parser_raises_only_malformed_input(event: CloudEvent) -> None:
    error = ""
    try:
        parse_cloud_event(event)
    except MalformedInput as exc:
        error = str(exc)
    assert len(error) < 2000  # bounded: it is logged and may reach Slack


@pytest.fixture(scope="module")
def emulator() -> Iterator[CloudRunEmulator]:
    with CloudRunEmulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def client(emulator: CloudRunEmulator) -> CloudRunClient:
    return CloudRunClient(emulator.url, api_timeout=5, operation_timeout=5)


@given(event=events())
def test_every_delivery_is_logged_never_raises_and_invalid_ones_change_nothing(
    lines: Lines, emulator: CloudRunEmulator, client: CloudRunClient, event: CloudEvent
) -> None:
    emulator.reset()
    emulator.add_service(
        "demo-proj",
        "us-central1",
        "checkout",
        revisions=[
            RevisionSpec(name="checkout-00041-abc", create_time=T0 - timedelta(days=1)),
            RevisionSpec(name="checkout-00042-xyz", create_time=T0 - timedelta(minutes=10)),
        ],
    )
    ctl = Controller(Settings(), client, RecordingNotifier(), policies=POLICIES, clock=lambda: T0)
    before = len(lines.lines)
    outcome = ctl.handle_cloud_event(event)  # never raises: every API is up, nothing can be temporary
    written = lines.lines[before:]
    assert written, "a delivery without a log line"
    for text in written:
        assert isinstance(json.loads(text), dict), text
        assert len(text) <= logs.MAX_LINE_CHARS
    changed = emulator.applied_traffic_changes("demo-proj", "us-central1", "checkout")
    if outcome.error:
        assert changed == 0 and not [p for p in emulator.patches if p.outcome == "applied"]
    if changed:
        assert outcome.decision is not None and outcome.decision.changes_traffic
