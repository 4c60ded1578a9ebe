"""The Slack emulator, exercised through the real ``slack_sdk`` WebClient and WebhookClient.

Pins what the controller's Slack adapter relies on: message recording (text, blocks, ts), Slack's
error conventions (HTTP 200 ``ok:false``), 429 + ``Retry-After`` with the SDK's retry handler, and
plain-text webhook answers — and that the bot token is never recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient, WebhookClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator

from controller.emulator.slack import SlackEmulator

TOKEN = "xoxb-test-secret-token-value"
BLOCKS: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": ":rotating_light: Rolled back"}},
    {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": "*Service:*\ncheckout"},
            {"type": "mrkdwn", "text": "*To revision:*\ncheckout-00041-abc"},
        ],
    },
]


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: SlackEmulator) -> WebClient:
    return WebClient(token=TOKEN, base_url=emu.api_url)


def test_post_message_is_answered_and_recorded(emu: SlackEmulator, client: WebClient) -> None:
    first = client.chat_postMessage(channel="C0123ABCD", text="Rolled back checkout", blocks=BLOCKS)
    second = client.chat_postMessage(channel="C0123ABCD", text="again", thread_ts=first["ts"])

    assert first.status_code == 200
    assert first["ok"] is True
    assert first["channel"] == "C0123ABCD"
    assert first["message"]["blocks"] == BLOCKS
    assert first["message"]["subtype"] == "bot_message"
    assert float(second["ts"]) > float(first["ts"])
    messages = emu.messages
    assert [(m["method"], m["channel"], m["text"], m["via"]) for m in messages] == [
        ("chat.postMessage", "C0123ABCD", "Rolled back checkout", "api"),
        ("chat.postMessage", "C0123ABCD", "again", "api"),
    ]
    assert messages[0]["blocks"] == BLOCKS
    assert messages[0]["ts"] == first["ts"]
    assert messages[1]["thread_ts"] == first["ts"]


def test_chat_update_edits_a_posted_message(emu: SlackEmulator, client: WebClient) -> None:
    posted = client.chat_postMessage(channel="C1", text="rolling back…")

    updated = client.chat_update(channel="C1", ts=posted["ts"], text="rolled back", blocks=BLOCKS)

    assert (updated["ok"], updated["ts"], updated["text"]) == (True, posted["ts"], "rolled back")
    assert [m["method"] for m in emu.messages] == ["chat.postMessage", "chat.update"]
    with pytest.raises(SlackApiError) as err:
        client.chat_update(channel="C1", ts="1.000001", text="nope")
    assert err.value.response["error"] == "message_not_found"


def test_rate_limit_then_success_with_retry_handler(emu: SlackEmulator, client: WebClient) -> None:
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=1))
    emu.rate_limit_next(1, retry_after=0)  # the handler still sleeps up to 1 s of jitter

    response = client.chat_postMessage(channel="C1", text="after 429")

    assert response["ok"] is True
    assert [r["status"] for r in emu.requests] == [429, 200]
    assert [m["text"] for m in emu.messages] == ["after 429"]


def test_rate_limit_without_handler_raises_with_retry_after(emu: SlackEmulator, client: WebClient) -> None:
    emu.rate_limit_next(1, retry_after=7)

    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C1", text="x")

    assert err.value.response.status_code == 429
    assert err.value.response["error"] == "ratelimited"
    assert err.value.response.headers["Retry-After"] == "7"
    assert emu.messages == []


def test_server_error_injection_and_recovery(emu: SlackEmulator, client: WebClient) -> None:
    emu.fail_next(1, status=503)
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C1", text="x")
    assert err.value.response.status_code == 503

    emu.fail_next(1, status=500)
    client.retry_handlers.append(
        ServerErrorRetryHandler(max_retry_count=1, interval_calculator=FixedValueRetryIntervalCalculator(0.01))
    )
    assert client.chat_postMessage(channel="C1", text="y")["ok"] is True
    assert [r["status"] for r in emu.requests] == [503, 500, 200]


@pytest.mark.parametrize("token", ["xoxp-user-token", "not-a-token"])
def test_invalid_auth_raises(emu: SlackEmulator, token: str) -> None:
    with pytest.raises(SlackApiError) as err:
        WebClient(token=token, base_url=emu.api_url).chat_postMessage(channel="C1", text="x")

    assert err.value.response.status_code == 200
    assert err.value.response["error"] == "invalid_auth"
    assert emu.messages == []


def test_missing_channel_and_injected_api_error(emu: SlackEmulator, client: WebClient) -> None:
    with pytest.raises(SlackApiError) as missing:
        client.chat_postMessage(channel="", text="x")
    emu.api_error_next(1, "not_in_channel")
    with pytest.raises(SlackApiError) as injected:
        client.chat_postMessage(channel="C1", text="x")

    assert missing.value.response["error"] == "channel_not_found"
    assert injected.value.response["error"] == "not_in_channel"


def test_token_is_never_recorded(emu: SlackEmulator, client: WebClient) -> None:
    client.chat_postMessage(channel="C1", text="x")
    client.auth_test()

    recorded = repr(emu.requests) + repr(emu.messages)
    assert "test-secret-token-value" not in recorded
    assert all(r["token_prefix"] == "xoxb-" and r["token_sent"] for r in emu.requests)


def test_auth_test_ok(client: WebClient) -> None:
    response = client.auth_test()

    assert response["ok"] is True
    assert response["bot_id"]


def test_webhook_answers_plain_ok_and_is_recorded(emu: SlackEmulator) -> None:
    webhook = WebhookClient(emu.webhook_url)

    response = webhook.send(text="fallback", blocks=BLOCKS)
    empty = webhook.send(text="")

    assert (response.status_code, response.body) == (200, "ok")
    assert (empty.status_code, empty.body) == (400, "no_text")
    [message] = emu.messages
    assert (message["via"], message["text"], message["blocks"]) == ("webhook", "fallback", BLOCKS)


def test_webhook_rate_limited_is_plain_text(emu: SlackEmulator) -> None:
    emu.rate_limit_next(1, retry_after=3)

    response = WebhookClient(emu.webhook_url).send(text="x")

    assert (response.status_code, response.body) == (429, "rate_limited")
    assert response.headers["Retry-After"] == "3"


def test_wait_for_messages_is_bounded(emu: SlackEmulator, client: WebClient) -> None:
    with pytest.raises(TimeoutError, match="expected 1 Slack message"):
        emu.wait_for_messages(1, timeout=0.05)

    sender = threading.Thread(target=client.chat_postMessage, kwargs={"channel": "C1", "text": "t"})
    sender.start()
    try:
        messages = emu.wait_for_messages(1, timeout=5)
    finally:
        sender.join(timeout=5)

    assert [m["text"] for m in messages] == ["t"]


def test_reset_clears_records_and_injections(emu: SlackEmulator, client: WebClient) -> None:
    client.chat_postMessage(channel="C1", text="x")
    emu.fail_next(5)

    emu.reset()

    assert (emu.messages, emu.requests) == ([], [])
    assert client.chat_postMessage(channel="C1", text="y")["ok"] is True
