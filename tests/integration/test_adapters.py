"""The Cloud Run and Slack adapters, with the real client libraries against the emulators."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support import REF, alert

from controller.adapters.cloudrun import CloudRunClient, OperationFailed
from controller.adapters.slack import WebApiNotifier, WebhookNotifier
from controller.core.decide import Decision, Reason
from controller.core.errors import ConflictError, ServiceNotFound
from controller.core.messages import render
from controller.core.policy import Policy
from controller.core.state import ServiceRef, TrafficTarget
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.slack import SlackEmulator

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
NAMES = ["checkout-00040-aaa", "checkout-00041-abc", "checkout-00042-xyz"]
TO_PREVIOUS = (TrafficTarget(kind="revision", revision="checkout-00041-abc", percent=100),)


@pytest.fixture
def emulator() -> Iterator[CloudRunEmulator]:
    with CloudRunEmulator(page_size=1) as emu:
        emu.add_service(
            REF.project,
            REF.region,
            REF.service,
            revisions=[RevisionSpec(name=n, create_time=T0 + timedelta(minutes=i)) for i, n in enumerate(NAMES)],
            annotations={"team": "payments"},
        )
        yield emu


def test_read_follows_paging_and_maps_the_service(emulator: CloudRunEmulator) -> None:
    state = CloudRunClient(emulator.url).read(REF)
    assert sorted(r.name for r in state.revisions) == NAMES  # three pages of one
    assert all(r.ready for r in state.revisions)
    assert state.traffic == (TrafficTarget(kind="latest", percent=100),)
    assert state.latest_ready_revision == "checkout-00042-xyz"
    assert state.annotations == {"team": "payments"}
    assert state.etag == emulator.etag(REF.project, REF.region, REF.service)


@pytest.mark.parametrize("polls", [0, 2], ids=["done-at-once", "polled-operation"])
def test_update_writes_traffic_and_annotations_and_waits(emulator: CloudRunEmulator, polls: int) -> None:
    emulator.operation_polls = polls
    client = CloudRunClient(emulator.url, operation_timeout=30)
    state = client.read(REF)
    applied = client.update(state, TO_PREVIOUS, {"team": "payments", "rollback-controller/last-good": "x"})
    assert applied.confirmed
    assert applied.state.traffic == TO_PREVIOUS
    assert emulator.traffic(REF.project, REF.region, REF.service)[0]["revision"] == "checkout-00041-abc"
    assert emulator.service(REF.project, REF.region, REF.service)["annotations"]["rollback-controller/last-good"] == "x"
    # template.revision was cleared: echoing it back is what makes real Cloud Run answer 409.
    assert emulator.patches[-1].outcome == "applied"


def test_operation_not_done_in_time_is_reported_unconfirmed(emulator: CloudRunEmulator) -> None:
    emulator.operation_polls = 1000
    client = CloudRunClient(emulator.url, operation_timeout=0.5)
    started = time.monotonic()
    applied = client.update(client.read(REF), TO_PREVIOUS, {})
    assert time.monotonic() - started < 5
    assert not applied.confirmed
    assert "not done after" in applied.detail


def test_stale_etag_is_a_conflict(emulator: CloudRunEmulator) -> None:
    client = CloudRunClient(emulator.url)
    state = client.read(REF)
    emulator.set_traffic(REF.project, REF.region, REF.service, [{"type": "LATEST", "percent": 100}])
    with pytest.raises(ConflictError):
        client.update(state, TO_PREVIOUS, {})


def test_unknown_service_is_not_found(emulator: CloudRunEmulator) -> None:
    with pytest.raises(ServiceNotFound):
        CloudRunClient(emulator.url).read(ServiceRef(project="demo-proj", region="us-central1", service="nope"))


def test_failed_operation_is_reported(emulator: CloudRunEmulator) -> None:
    emulator.set_revision_ready(REF.project, REF.region, REF.service, "checkout-00041-abc", ready=False)
    client = CloudRunClient(emulator.url)
    state = client.read(REF).model_copy()
    with pytest.raises(OperationFailed, match=r"not ready|Ready"):
        client.update(state, TO_PREVIOUS, {})
    assert emulator.traffic(REF.project, REF.region, REF.service)[0]["type"] == "LATEST"


# -- Slack ------------------------------------------------------------------------------------

POLICY = Policy.model_validate({"name": "default", "triggers": {"error_rate": {"above": 0.05, "for": "2m"}}})
DECISION = Decision(
    reason=Reason.ROLLED_BACK,
    message="rolled back checkout-00042-xyz → checkout-00041-abc",
    service=REF,
    policy="default",
    trigger="error_rate",
    suspect="checkout-00042-xyz",
    target="checkout-00041-abc",
)


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emu:
        yield emu


def test_web_api_posts_block_kit_with_the_numbers(slack: SlackEmulator) -> None:
    notifier = WebApiNotifier("xoxb-test", "#deploys", slack.api_url)
    assert notifier.post(render(DECISION, alert(), POLICY))
    [message] = slack.messages
    assert message["channel"] == "#deploys"
    text = str(message["blocks"])
    assert "`checkout-00042-xyz` → `checkout-00041-abc`" in text
    assert "5xx ratio 18.3% &gt; 5% for 5m" in text  # mrkdwn: ">" escaped as Slack documents
    assert "console.cloud.google.com/run/detail/us-central1/checkout" in text
    assert "Incident 0.inc1" in text


def test_rate_limit_is_retried_once(slack: SlackEmulator) -> None:
    slack.rate_limit_next(1, retry_after=0)
    notifier = WebApiNotifier("xoxb-test", "#deploys", slack.api_url)
    assert notifier.post(render(DECISION, alert(), POLICY))
    assert len(slack.messages) == 1


def test_slack_errors_are_swallowed_and_reported(slack: SlackEmulator) -> None:
    bad_token = WebApiNotifier("not-a-bot-token", "#deploys", slack.api_url)
    assert bad_token.post(render(DECISION, alert(), POLICY)) is False
    slack.fail_next(3, status=500)
    no_retries = WebApiNotifier("xoxb-test", "#deploys", slack.api_url, retry_budget=0)
    assert no_retries.post(render(DECISION, alert(), POLICY)) is False


def test_incoming_webhook_alternative(slack: SlackEmulator) -> None:
    assert WebhookNotifier(slack.webhook_url).post(render(DECISION, alert(), POLICY))
    assert slack.messages[0]["via"] == "webhook"


def test_dry_run_header_is_unmistakable() -> None:
    dry = DECISION.model_copy(update={"reason": Reason.DRY_RUN, "message": "would roll back"})
    message = render(dry, alert(), POLICY)
    assert message.text.startswith(":test_tube: DRY RUN")
    fields = [f["text"] for block in message.blocks for f in block.get("fields", [])]
    assert "*Mode*\nDRY RUN" in fields
