"""Slack messages are not lost to one 5xx, a long rate limit or an outage (issue 12 point 3).

The real slack_sdk client against the Slack emulator's faults: 5xx, a rate-limit *window* (every
call before ``Retry-After`` is refused again, as Slack does) and "down" (connections dropped). A
message that cannot be sent within the retry budget is handed over as a ``slack-message``
command and sent later by ``handle_command`` with its original time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pubsub_fakes import InMemoryPublisher, message_event

from controller.adapters.command_queue import CommandQueue
from controller.adapters.slack import WebApiNotifier
from controller.core.commands import SlackMessageCommand, decode
from controller.core.messages import SlackMessage
from controller.emulator.slack import SlackEmulator
from controller.surfaces.command_worker import CommandWorker

TOPIC = "projects/demo-proj/topics/rollback-commands"
MESSAGE = SlackMessage(
    text=":rewind: Rolled back checkout",
    blocks=({"type": "section", "text": {"type": "mrkdwn", "text": "rolled back"}},),
)


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emu:
        yield emu


def test_a_5xx_is_retried(slack: SlackEmulator) -> None:
    slack.fail_next(2, status=500)
    notifier = WebApiNotifier("xoxb-test", "#deploys", slack.api_url, retry_budget=10)
    assert notifier.post(MESSAGE)
    assert len(slack.messages) == 1
    assert [r["status"] for r in slack.requests] == [500, 500, 200]


def test_a_long_retry_after_is_honoured_within_the_budget(slack: SlackEmulator) -> None:
    slack.rate_limit_for(6)  # longer than the old 5 s cap: retrying after 5 s is refused again
    notifier = WebApiNotifier("xoxb-test", "#deploys", slack.api_url, retry_budget=10)
    started = time.monotonic()
    assert notifier.post(MESSAGE)
    assert time.monotonic() - started >= 5.0
    assert [r["status"] for r in slack.requests] == [429, 200]


def test_slack_down_without_a_queue_is_logged_and_does_not_raise(
    slack: SlackEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    slack.set_down()
    notifier = WebApiNotifier("xoxb-test", "#deploys", slack.api_url, timeout=1, retry_budget=1)
    assert notifier.post(MESSAGE) is False
    assert "chat.postMessage failed" in caplog.text


@pytest.mark.parametrize("fault", ["rate-limited", "down"])
def test_a_message_that_cannot_be_sent_in_time_is_handed_over_and_sent_later_with_its_time(
    slack: SlackEmulator, fault: str
) -> None:
    publisher = InMemoryPublisher()
    queue = CommandQueue(TOPIC, publisher)
    notifier = WebApiNotifier(
        "xoxb-test", "#deploys", slack.api_url, timeout=1, retry_budget=1.0, handover=queue.slack_message
    )
    if fault == "down":
        slack.set_down()
    else:
        slack.rate_limit_for(30)
    before = datetime.now(UTC)
    assert notifier.post(MESSAGE) is False
    assert slack.messages == []
    [(topic, data)] = publisher.published
    command = decode(data)
    assert topic == TOPIC and isinstance(command, SlackMessageCommand)
    assert command.message.channel == "#deploys" and command.requested_at >= before

    # Later: Slack is back, handle_command delivers it, saying when it was first sent.
    slack.set_down(False)
    slack.rate_limit_for(0)
    worker = CommandWorker(slack=None, canary=None, notifier=notifier)
    outcome = worker.handle_cloud_event(message_event(data))
    assert outcome["outcome"] == "sent"
    [sent] = slack.messages
    assert sent["channel"] == "#deploys"
    assert f"first sent at {command.requested_at.strftime('%Y-%m-%d %H:%M:%S')} UTC" in sent["text"]


def test_a_queued_message_slack_still_refuses_is_redelivered(slack: SlackEmulator) -> None:
    from controller.core.errors import TemporaryError

    publisher = InMemoryPublisher()
    queue = CommandQueue(TOPIC, publisher)
    notifier = WebApiNotifier("xoxb-test", "#deploys", slack.api_url, retry_budget=0, handover=queue.slack_message)
    slack.rate_limit_for(30)
    assert notifier.post(MESSAGE) is False
    [(_, data)] = publisher.published
    with pytest.raises(TemporaryError):
        CommandWorker(slack=None, canary=None, notifier=notifier).handle_cloud_event(message_event(data))
    assert len(publisher.published) == 1  # the worker never hands the message over again


def test_the_interactive_notifier_never_sleeps_on_a_rate_limit(slack: SlackEmulator) -> None:
    """Answering a Slack button inline (Slack waits 3 s): no Retry-After sleeping, a short timeout."""
    from pydantic import SecretStr

    from controller.app.settings import Settings
    from controller.app.wiring import build_notifier

    settings = Settings(slack_bot_token=SecretStr("xoxb-test"), slack_channel="#deploys", slack_api_url=slack.api_url)
    notifier = build_notifier(settings, interactive=True)
    slack.rate_limit_for(30)
    started = time.monotonic()
    assert notifier.post(MESSAGE) is False
    assert time.monotonic() - started < 1.0
    assert [r["status"] for r in slack.requests] == [429]
