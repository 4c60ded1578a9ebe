"""The composition root: real adapters built from :class:`Settings` (the one place that knows how).

Entry points, the CLI, the HTTP surface and the command worker get their settings from
:meth:`Settings.from_env` and ask here for Cloud Run and Monitoring clients, Slack notifiers,
the command queue, the HTTP API's authentication settings and the app-layer controls built on
them, instead of building clients themselves. Nothing here decides anything.

Client libraries load lazily (the adapters import them on first use), and the modules only
some paths need are imported inside the functions that need them, so that a cold start pays
only for what its first request uses (``import main`` loads no client library).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.adapters.clock import Clock, utc_now
from controller.adapters.cloudrun import CloudRunClient
from controller.adapters.command_queue import CommandQueue, slack_handover
from controller.adapters.monitoring import MonitoringClient
from controller.adapters.slack import LogOnlyNotifier, Notifier, WebApiNotifier, WebhookNotifier
from controller.app.canary_control import CanaryControl
from controller.app.manual import ManualControl
from controller.app.settings import Settings

if TYPE_CHECKING:  # imported at run time only by build_auth_config (cold start: see the docstring)
    from controller.adapters.auth import AuthConfig


def build_run_client(
    settings: Settings, *, api_timeout: float | None = None, operation_timeout: float | None = None
) -> CloudRunClient:
    """Cloud Run at ROLLBACK_RUN_ENDPOINT (unset: Google's), bounded by ROLLBACK_API_TIMEOUT and
    ROLLBACK_OPERATION_TIMEOUT unless a caller with a tighter budget (Slack's 3 s) says otherwise."""
    return CloudRunClient(
        settings.run_endpoint,
        api_timeout=settings.api_timeout if api_timeout is None else api_timeout,
        operation_timeout=settings.operation_timeout if operation_timeout is None else operation_timeout,
    )


def build_monitoring_client(settings: Settings, *, deadline: float | None = None) -> MonitoringClient:
    """Cloud Monitoring at ROLLBACK_MONITORING_ENDPOINT (unset: Google's); each read gives up after
    ROLLBACK_MONITORING_DEADLINE seconds (or ``deadline``)."""
    return MonitoringClient(
        settings.monitoring_endpoint, deadline=settings.monitoring_deadline if deadline is None else deadline
    )


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


def build_command_queue(settings: Settings, clock: Clock = utc_now) -> CommandQueue | None:
    """The queue for ROLLBACK_COMMANDS_TOPIC (None when unset), its publisher built and connected
    now rather than on the first button press (Slack waits 3 s)."""
    if not settings.commands_topic:
        return None
    # Lazy for cold start: google-cloud-pubsub loads only when a commands topic is configured.
    from controller.adapters.pubsub import shared_publisher

    publisher = shared_publisher()
    publisher.warm()
    return CommandQueue(settings.commands_topic, publisher, clock)


def build_auth_config(settings: Settings) -> AuthConfig:
    """Who may call the HTTP API (ROLLBACK_AUTH_*, ROLLBACK_ALLOWED_PRINCIPALS, SLACK_SIGNING_SECRET,
    ROLLBACK_SLACK_ALLOWED_USERS). Raises pydantic's ``ValidationError`` naming a malformed entry
    (the caller closes the authenticated routes rather than failing)."""
    # Lazy for cold start: the alert and command paths never verify a caller.
    from controller.adapters.auth import TRUST_PLATFORM_SETTING, AuthConfig

    secret = settings.slack_signing_secret
    raw = {
        "ROLLBACK_AUTH_AUDIENCE": settings.auth_audience,
        "ROLLBACK_ALLOWED_PRINCIPALS": settings.auth_allowed_principals,
        "ROLLBACK_AUTH_CERTS_URL": settings.auth_certs_url,
        TRUST_PLATFORM_SETTING: settings.auth_trust_platform,
        "SLACK_SIGNING_SECRET": secret.get_secret_value() if secret is not None else None,
        "ROLLBACK_SLACK_ALLOWED_USERS": settings.slack_allowed_users,
    }
    # AuthConfig parses the values (lists, flags, URL checks); Settings only read them.
    return AuthConfig.from_env({name: value for name, value in raw.items() if value is not None})


def build_manual_control(settings: Settings, notifier: Notifier, clock: Clock = utc_now) -> ManualControl:
    """Manual rollback/undo/hold/release/status on the real Cloud Run API, within the settings' bounds."""
    return ManualControl(build_run_client(settings), notifier, clock, settings)


def build_canary_control(settings: Settings, notifier: Notifier, clock: Clock = utc_now) -> CanaryControl:
    """A CanaryControl on the real Cloud Run and Monitoring clients, within the settings' bounds."""
    return CanaryControl(build_run_client(settings), build_monitoring_client(settings), notifier, None, settings, clock)
