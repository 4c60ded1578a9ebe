"""Slack transport: chat.postMessage via slack-sdk, or an incoming webhook, or nothing.

A Slack failure never blocks or undoes a rollback: ``post`` catches everything, logs it
(never the token or the webhook URL, which is a secret too) and returns False. A 429 is
retried once, honouring ``Retry-After`` up to a small cap, because the traffic has already
moved and the function should not sit waiting on Slack.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from controller.messages import SlackMessage
from controller.settings import Settings

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 5.0  # seconds we are willing to wait on a Slack rate limit


class Notifier(Protocol):
    def post(self, message: SlackMessage) -> bool: ...

    def update(self, channel: str, ts: str, message: SlackMessage) -> bool:
        """Replace a message the app posted earlier (Slack buttons update the message they sit on)."""
        ...

    def post_in_thread(self, message: SlackMessage, thread_ts: str | None) -> str | None:
        """Post (as a reply when ``thread_ts`` is given); the new message's ts, or None if unknown."""
        ...


class LogOnlyNotifier:
    """Used when no Slack destination is configured: the decision is still in the logs."""

    def post(self, message: SlackMessage) -> bool:
        log.info("slack not configured; message not sent", extra={"fields": {"slack_text": message.text}})
        return False

    def update(self, channel: str, ts: str, message: SlackMessage) -> bool:
        return self.post(message)

    def post_in_thread(self, message: SlackMessage, thread_ts: str | None) -> str | None:
        self.post(message)
        return None


def _retry_after(headers: Any) -> float:
    for key in headers:
        if key.lower() == "retry-after":
            values = headers[key]
            raw = values[0] if isinstance(values, list) else values
            try:
                return max(0.0, float(raw))
            except ValueError:
                break
    return 1.0


def _rate_limit_handler() -> Any:
    import time

    from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

    class _CappedRateLimitHandler(RateLimitErrorRetryHandler):
        """Slack's own handler sleeps the full Retry-After (plus jitter); cap it, the traffic already moved."""

        def prepare_for_next_attempt(
            self, *, state: Any, request: Any, response: Any = None, error: Any = None
        ) -> None:
            if response is None:
                raise error
            state.next_attempt_requested = True
            time.sleep(min(_retry_after(response.headers), MAX_RETRY_AFTER))
            state.increment_current_attempt()

    return _CappedRateLimitHandler(max_retry_count=1)


class WebApiNotifier:
    def __init__(self, token: str, default_channel: str | None, base_url: str | None = None) -> None:
        from slack_sdk import WebClient

        kwargs: dict[str, Any] = {"token": token, "timeout": 10}
        if base_url:
            kwargs["base_url"] = base_url
        self._client = WebClient(**kwargs)
        self._client.retry_handlers.append(_rate_limit_handler())
        self._default_channel = default_channel

    def post(self, message: SlackMessage) -> bool:
        return self._send(message, None) is not None

    def post_in_thread(self, message: SlackMessage, thread_ts: str | None) -> str | None:
        return self._send(message, thread_ts)

    def _send(self, message: SlackMessage, thread_ts: str | None) -> str | None:
        channel = message.channel or self._default_channel
        if not channel:
            log.error("slack: no channel (set SLACK_CHANNEL or the policy's notify.slack_channel)")
            return None
        kwargs: dict[str, Any] = {"channel": channel, "text": message.text, "blocks": list(message.blocks)}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        try:
            response = self._client.chat_postMessage(**kwargs)
        except Exception as exc:
            log.error(
                "slack: chat.postMessage failed; the decision stands",
                extra={"fields": {"slack_error": _describe(exc), "slack_channel": channel}},
            )
            return None
        return str(response.get("ts") or "")

    def update(self, channel: str, ts: str, message: SlackMessage) -> bool:
        try:
            self._client.chat_update(channel=channel, ts=ts, text=message.text, blocks=list(message.blocks))
        except Exception as exc:
            fields = {"slack_error": _describe(exc), "slack_channel": channel}
            log.error("slack: chat.update failed; the action stands", extra={"fields": fields})
            return False
        return True


class WebhookNotifier:
    def __init__(self, url: str) -> None:
        from slack_sdk.webhook import WebhookClient

        self._client = WebhookClient(url, timeout=10)
        self._client.retry_handlers.append(_rate_limit_handler())

    def post(self, message: SlackMessage) -> bool:
        try:
            response = self._client.send(text=message.text, blocks=list(message.blocks))
        except Exception as exc:
            log.error(
                "slack: webhook failed; the decision stands",
                extra={"fields": {"slack_error": _describe(exc)}},
            )
            return False
        if response.status_code != 200:
            log.error(
                "slack: webhook refused the message; the decision stands",
                extra={
                    "fields": {
                        "slack_status": response.status_code,
                        "slack_error": str(response.body)[:200],
                    }
                },
            )
            return False
        return True

    def update(self, channel: str, ts: str, message: SlackMessage) -> bool:
        """A webhook cannot edit what it posted: post the new state as a new message instead."""
        return self.post(message)

    def post_in_thread(self, message: SlackMessage, thread_ts: str | None) -> str | None:
        """A webhook cannot thread or tell the ts: each message stands alone."""
        self.post(message)
        return None


def _describe(exc: Exception) -> str:
    """A short, secret-free description (SlackApiError carries the response, never the token)."""
    from slack_sdk.errors import SlackApiError

    if isinstance(exc, SlackApiError):
        return f"{exc.response.status_code} {exc.response.get('error', '')}"
    return type(exc).__name__


def build_notifier(settings: Settings) -> Notifier:
    if settings.slack_bot_token is not None:
        return WebApiNotifier(
            settings.slack_bot_token.get_secret_value(),
            settings.slack_channel,
            settings.slack_api_url,
        )
    if settings.slack_webhook_url is not None:
        return WebhookNotifier(settings.slack_webhook_url.get_secret_value())
    return LogOnlyNotifier()
