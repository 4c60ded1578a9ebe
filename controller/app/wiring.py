"""The composition root: real adapters built from :class:`Settings` (one place that knows how).

Entry points, the CLI and the HTTP surface ask here for a Slack notifier (and, as the code grows,
for every other adapter) instead of building clients themselves.
"""

from __future__ import annotations

from controller.adapters.command_queue import slack_handover
from controller.adapters.slack import LogOnlyNotifier, Notifier, WebApiNotifier, WebhookNotifier
from controller.app.settings import Settings


def build_notifier(settings: Settings, *, interactive: bool = False) -> Notifier:
    """The configured transport. ``interactive``: for answering a Slack request inline (Slack waits
    3 s): a 1 s timeout and no retry sleeping. Otherwise retries last up to
    ROLLBACK_SLACK_RETRY_BUDGET seconds, and with ROLLBACK_COMMANDS_TOPIC set a message that still
    cannot be sent is handed over as a ``slack-message`` command."""
    timeout, budget = (1, 0.0) if interactive else (10, settings.slack_retry_budget)
    if settings.slack_bot_token is not None:
        handover = None
        if settings.commands_topic and not interactive:
            handover = slack_handover(settings.commands_topic)
        return WebApiNotifier(
            settings.slack_bot_token.get_secret_value(),
            settings.slack_channel,
            settings.slack_api_url,
            timeout=timeout,
            retry_budget=budget,
            handover=handover,
        )
    if settings.slack_webhook_url is not None:
        return WebhookNotifier(settings.slack_webhook_url.get_secret_value(), timeout=timeout, retry_budget=budget)
    return LogOnlyNotifier()
