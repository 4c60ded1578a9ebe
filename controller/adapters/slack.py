"""Slack transport: chat.postMessage via slack-sdk, or an incoming webhook, or nothing.

A Slack failure never blocks or undoes a rollback: ``post`` catches everything, logs it
(never the token or the webhook URL, which is a secret too) and returns False.

A rollback's message must reach Slack or be visibly queued, so a failed call is retried: on a
5xx or a network error with a short backoff, on a 429 after the *whole* ``Retry-After`` (Slack
refuses every call until then), all within the retry budget (``ROLLBACK_SLACK_RETRY_BUDGET``,
default 20 s, inside the 50 s delivery deadline). When the budget cannot cover the wait and
``ROLLBACK_COMMANDS_TOPIC`` is set, the message is handed over durably as a ``slack-message``
command and sent later by ``handle_command``, saying when it was first meant to be sent. Errors
retrying cannot fix (``invalid_auth``, ``channel_not_found``) are logged at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from controller.core.errors import TemporaryError
from controller.core.messages import SlackMessage

log = logging.getLogger("controller.slack")  # a log field: stable across module moves


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


def _retry_after(headers: Any) -> float | None:
    for key in headers or {}:
        if key.lower() == "retry-after":
            values = headers[key]
            raw = values[0] if isinstance(values, list) else values
            try:
                return max(0.0, float(raw))
            except ValueError:
                break
    return None


class _Retry(TemporaryError):
    """A failed Slack call that may succeed later (5xx, 429, network); ``wait`` is how long to wait first."""

    def __init__(self, wait: float, description: str) -> None:
        super().__init__(description)
        self.wait = wait


_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds between attempts after a 5xx or a network error


def _classify(exc: Exception, attempt: int) -> _Retry | None:
    """A retryable failure as ``_Retry``; None for one retrying cannot fix (``invalid_auth``, ``channel_not_found``)."""
    from slack_sdk.errors import SlackApiError

    backoff = _BACKOFF[min(attempt, len(_BACKOFF) - 1)]
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        if status == 429:
            wait = _retry_after(exc.response.headers)
            return _Retry(1.0 if wait is None else wait, _describe(exc))
        if status >= 500:
            return _Retry(backoff, _describe(exc))
        return None
    if isinstance(exc, _WebhookStatus):
        if exc.status == 429:
            wait = _retry_after(exc.headers)
            return _Retry(1.0 if wait is None else wait, str(exc))
        return _Retry(backoff, str(exc))
    if isinstance(exc, OSError | TimeoutError):  # URLError, connection refused, read timeout
        return _Retry(backoff, type(exc).__name__)
    return None


Handover = Callable[[SlackMessage, "str | None", datetime], bool]


class _Retrying:
    """Retries a Slack call on 5xx, 429 (honouring the whole ``Retry-After``) and network errors, for
    at most ``budget`` seconds; Slack's client-side retry handlers are not used (they sleep without
    a bound and cannot hand a message over)."""

    def __init__(self, budget: float) -> None:
        self.budget = budget

    def call(self, what: str, fn: Callable[[], Any]) -> tuple[Any, str, bool]:
        """``(response, "", False)`` on success; ``(None, why, retryable)`` when retrying cannot help
        (``retryable`` False) or the budget cannot cover the next wait (True: worth handing over)."""
        deadline = time.monotonic() + self.budget
        attempt = 0
        while True:
            try:
                return fn(), "", False
            except Exception as exc:
                retry = _classify(exc, attempt)
                if retry is None:
                    return None, _describe(exc), False
                left = deadline - time.monotonic()
                if retry.wait > left:
                    why = f"{retry} (would wait {retry.wait:.1f}s, {max(left, 0.0):.1f}s of the retry budget left)"
                    return None, why, True
                log.warning(
                    "slack: %s failed, retrying",
                    what,
                    extra={"fields": {"slack_error": str(retry), "retry_in_s": retry.wait, "attempt": attempt + 1}},
                )
                time.sleep(retry.wait)
                attempt += 1


class WebApiNotifier:
    """chat.postMessage / chat.update with retries within ``retry_budget`` seconds.

    A message that still cannot be sent is given to ``handover`` (a ``slack-message`` command on
    ROLLBACK_COMMANDS_TOPIC, see ``controller.command_worker``) with the time it was first meant
    to be sent, so it reaches Slack later instead of being lost. The interactive path (a Slack
    button answered inline) uses ``retry_budget=0`` and a short ``timeout``: no sleeping there.
    """

    def __init__(
        self,
        token: str,
        default_channel: str | None,
        base_url: str | None = None,
        *,
        timeout: int = 10,
        retry_budget: float = 20.0,
        handover: Handover | None = None,
    ) -> None:
        from slack_sdk import WebClient

        kwargs: dict[str, Any] = {"token": token, "timeout": timeout}
        if base_url:
            kwargs["base_url"] = base_url
        self._client = WebClient(**kwargs)
        self._client.retry_handlers = []  # ours: bounded, and honouring the whole Retry-After
        self._retrying = _Retrying(retry_budget)
        self._handover = handover
        self._default_channel = default_channel

    def post(self, message: SlackMessage) -> bool:
        return self._send(message, None) is not None

    def post_in_thread(self, message: SlackMessage, thread_ts: str | None) -> str | None:
        return self._send(message, thread_ts)

    def send_or_raise(self, message: SlackMessage, thread_ts: str | None) -> str:
        """Deliver a handed-over message: its ts; TemporaryError if Slack still cannot take it."""
        ts = self._send(message, thread_ts, handover=False)
        if ts is None:
            raise TemporaryError("Slack did not accept the queued message; it will be redelivered")
        return ts

    def _send(self, message: SlackMessage, thread_ts: str | None, *, handover: bool = True) -> str | None:
        first_try = datetime.now(UTC)
        channel = message.channel or self._default_channel
        if not channel:
            log.error("slack: no channel (set SLACK_CHANNEL or the policy's notify.slack_channel)")
            return None
        kwargs: dict[str, Any] = {"channel": channel, "text": message.text, "blocks": list(message.blocks)}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        response, why, retryable = self._retrying.call(
            "chat.postMessage", lambda: self._client.chat_postMessage(**kwargs)
        )
        if response is not None:
            return str(response.get("ts") or "")
        fields = {"slack_error": why, "slack_channel": channel}
        if handover and self._handover is not None and retryable:
            queued = message.model_copy(update={"channel": channel})
            if self._handover(queued, thread_ts, first_try):
                log.warning("slack: message queued for later delivery; the decision stands", extra={"fields": fields})
                return None
        log.error("slack: chat.postMessage failed; the decision stands", extra={"fields": fields})
        return None

    def update(self, channel: str, ts: str, message: SlackMessage) -> bool:
        response, why, _ = self._retrying.call(
            "chat.update",
            lambda: self._client.chat_update(channel=channel, ts=ts, text=message.text, blocks=list(message.blocks)),
        )
        if response is None:
            fields = {"slack_error": why, "slack_channel": channel}
            log.error("slack: chat.update failed; the action stands", extra={"fields": fields})
            return False
        return True


class WebhookNotifier:
    def __init__(self, url: str, *, timeout: int = 10, retry_budget: float = 20.0) -> None:
        from slack_sdk.webhook import WebhookClient

        self._client = WebhookClient(url, timeout=timeout)
        self._client.retry_handlers = []
        self._retrying = _Retrying(retry_budget)

    def post(self, message: SlackMessage) -> bool:
        def send() -> Any:
            response = self._client.send(text=message.text, blocks=list(message.blocks))
            if response.status_code == 429 or response.status_code >= 500:
                # WebhookClient never raises for an HTTP status: turn the retryable ones into errors.
                raise _WebhookStatus(response.status_code, response.headers)
            return response

        response, why, _ = self._retrying.call("webhook", send)
        if response is None:
            log.error("slack: webhook failed; the decision stands", extra={"fields": {"slack_error": why}})
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


class _WebhookStatus(TemporaryError):
    def __init__(self, status: int, headers: Any) -> None:
        super().__init__(f"webhook HTTP {status}")
        self.status = status
        self.headers = headers


def _describe(exc: Exception) -> str:
    """A short, secret-free description (SlackApiError carries the response, never the token)."""
    from slack_sdk.errors import SlackApiError

    if isinstance(exc, SlackApiError):
        return f"{exc.response.status_code} {exc.response.get('error', '')}"
    if isinstance(exc, _WebhookStatus):
        return str(exc)
    return type(exc).__name__
