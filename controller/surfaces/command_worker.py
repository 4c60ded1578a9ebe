"""``handle_command``: executes the commands ``handle_http`` published (see :mod:`controller.commands`).

Delivery semantics are the alert path's:

* a malformed delivery or command (not JSON, unknown version or kind, bad field) is logged with
  the reason and acknowledged; it never acts and is never retried;
* a command older than its kind's maximum age is dropped with a notice (the log, and for a Slack
  button the message itself, whose buttons come back);
* a temporary failure (Cloud Run unavailable, conflicts after retries, Slack still refusing a
  queued message) raises, so Pub/Sub redelivers (deploy with ``--retry``);
* a redelivered ``slack-action`` finds its id in the service's ledger and does nothing; a
  ``canary-tick`` is idempotent by itself.

Exactly one log line per delivery (logger ``controller.commands``) says what was done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from controller.adapters import logs
from controller.adapters.clock import Clock, utc_now
from controller.adapters.slack import Notifier
from controller.app.settings import Settings
from controller.core.commands import (
    CanaryTickCommand,
    SlackActionCommand,
    SlackMessageCommand,
    decode,
    expired,
)
from controller.core.envelope import MESSAGE_PUBLISHED, delivery_info, parse_envelope
from controller.core.errors import MalformedInput, PermanentError, TemporaryError
from controller.core.messages import SlackMessage

if TYPE_CHECKING:  # imported lazily at run time: a queued Slack message needs neither
    from controller.app.canary_control import CanaryControl
    from controller.surfaces.slack_actions import SlackActionHandler

log = logging.getLogger("controller.commands")


class CommandWorker:
    def __init__(
        self,
        slack: SlackActionHandler | None,
        canary: CanaryControl | None,
        notifier: Notifier,
        clock: Clock = utc_now,
    ) -> None:
        self.slack = slack
        self.canary = canary
        self.notifier = notifier
        self.clock = clock

    def handle_cloud_event(self, event: Any) -> dict[str, Any]:
        """Returns normally to acknowledge (the outcome, for tests); raises to be redelivered."""
        started = time.perf_counter()
        event_id = delivery_info(event).event_id
        try:
            if str(event.get("type") or "") != MESSAGE_PUBLISHED:
                raise MalformedInput(f"type: {str(event.get('type'))[:100]!r} is not {MESSAGE_PUBLISHED!r}")
            envelope = parse_envelope(event.data)
            command = decode(envelope.message.data)
        except MalformedInput as exc:
            return self._log(
                logging.ERROR,
                f"rejected command (acknowledged, not retried): {exc}",
                started,
                event_id,
                outcome="malformed",
                error=str(exc),
            )
        fields: dict[str, Any] = {
            "command_id": command.id,
            "kind": command.kind,
            "actor": command.actor,
            "requested_at": command.requested_at.isoformat(),
        }
        service = getattr(command, "service", None)
        if service is not None:
            fields["service"] = service.model_dump()
        late = expired(command, self.clock())
        if late is not None:
            self._expired(command, late)
            return self._log(
                logging.WARNING,
                f"command {command.id} ({command.kind}) dropped: older than its "
                f"maximum age by {late.total_seconds():.0f}s",
                started,
                event_id,
                outcome="expired",
                **fields,
            )
        try:
            outcome = self._execute(command)
        except TemporaryError as exc:
            self._log(
                logging.WARNING,
                f"command {command.id} failed, will be redelivered: {exc}",
                started,
                event_id,
                outcome="temporary-error",
                error=str(exc),
                **fields,
            )
            raise
        except MalformedInput as exc:  # e.g. a slack-action whose Slack payload does not validate
            return self._log(
                logging.ERROR,
                f"rejected command {command.id} (acknowledged, not retried): {exc}",
                started,
                event_id,
                outcome="malformed",
                error=str(exc),
                **fields,
            )
        except PermanentError as exc:
            return self._log(
                logging.ERROR,
                f"command {command.id} failed (acknowledged, not retried): {exc}",
                started,
                event_id,
                outcome="failed",
                error=str(exc),
                **fields,
            )
        return self._log(
            logging.INFO,
            f"command {command.id} ({command.kind}): {outcome['outcome']}",
            started,
            event_id,
            **fields,
            **outcome,
        )

    # -- kinds --------------------------------------------------------------------------------
    def _execute(self, command: SlackActionCommand | CanaryTickCommand | SlackMessageCommand) -> dict[str, Any]:
        if isinstance(command, SlackActionCommand):
            return self._slack_action(command)
        if isinstance(command, CanaryTickCommand):
            if self.canary is None:
                raise PermanentError("canary control is not configured in this worker")
            report = self.canary.tick(command.service)
            return {"outcome": "ticked", "step": report.step.value, "changed": report.changed}
        return self._slack_message(command)

    def _payload(self, command: SlackActionCommand) -> Any:
        from controller.core.slack_blocks import BlockActions

        try:
            return BlockActions.model_validate(command.slack)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise MalformedInput(f"command.slack.{where[:120]}: {first['msg'][:200]}") from None

    def _slack_action(self, command: SlackActionCommand) -> dict[str, Any]:
        from controller.surfaces.slack_actions import Pressed

        payload = self._payload(command)
        pressed = Pressed(command.action, command.service, command.candidate)
        if self.slack is None:
            raise PermanentError("Slack actions are not configured in this worker")
        answer, _ = self.slack.execute(payload, pressed, command_id=command.ledger_id, queued=True)
        if answer.get("duplicate"):
            return {"outcome": "duplicate", "changed": False}
        outcome = "done" if answer.get("ok") else "refused"
        return {
            "outcome": outcome,
            "changed": bool(answer.get("changed")),
            "refusal": answer.get("error", ""),
            "slack_updated": bool(answer.get("slack_updated")),
        }

    def _slack_message(self, command: SlackMessageCommand) -> dict[str, Any]:
        queued = command.message
        when = command.requested_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        note = {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f":clock3: Delayed: first sent at {when} (Slack was unavailable then)"}
            ],
        }
        message = SlackMessage(
            text=f"{queued.text} (first sent at {when})"[:40_000],
            blocks=(*queued.blocks[:49], note),
            channel=queued.channel or None,
        )
        send = getattr(self.notifier, "send_or_raise", None)
        if send is None:
            raise PermanentError("no Slack bot token in this function: the queued message cannot be sent")
        ts = send(message, queued.thread_ts or None)
        return {"outcome": "sent", "ts": ts}

    def _expired(self, command: SlackActionCommand | CanaryTickCommand | SlackMessageCommand, late: Any) -> None:
        if not isinstance(command, SlackActionCommand):
            return
        try:
            payload = self._payload(command)
        except MalformedInput:
            return
        line = (
            f":hourglass: The {command.action} requested by {command.actor} at "
            f"{command.requested_at.isoformat()} was not performed: it waited too long in the queue. "
            "Check the service and press again if still needed."
        )
        if self.slack is not None:
            self.slack.restore(payload, line)

    def _log(self, level: int, message: str, started: float, event_id: str, **fields: Any) -> dict[str, Any]:
        payload = {
            "event": "command",
            "delivery": {"event_id": event_id},
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
            **fields,
        }
        labels = {"command": str(fields.get("kind", "")), "outcome": str(fields.get("outcome", ""))}
        log.log(level, message, extra={"fields": payload, "labels": labels})
        return fields


def build_worker(settings: Settings) -> CommandWorker:
    """Wire the worker from settings: the same guards, ledger and Slack handling as the HTTP path."""
    # Lazy for cold start: a queued Slack message needs neither the controls nor their clients.
    from controller.adapters.auth import AuthConfig, SlackVerifier
    from controller.app.wiring import build_canary_control, build_manual_control, build_notifier
    from controller.surfaces.slack_actions import SlackActionHandler

    notifier = build_notifier(settings)
    control = build_manual_control(settings, notifier, utc_now)
    canary = build_canary_control(settings, notifier, utc_now)
    # The worker never verifies a Slack request (the HTTP function did, before publishing).
    slack = SlackActionHandler(
        SlackVerifier(AuthConfig()), control, notifier, slack_api_url=settings.slack_api_url, canary=canary
    )
    return CommandWorker(slack, canary, notifier)


_worker: CommandWorker | None = None
_worker_lock = threading.Lock()


def get_worker(env: Mapping[str, str] | None = None) -> CommandWorker:
    """Built once per process (Cloud Functions reuses it)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            logs.configure()
            settings = Settings.from_env(env)
            from controller.adapters import events

            events.install(settings.events_topic)
            _worker = build_worker(settings)
        return _worker


def reset_worker() -> None:
    global _worker
    with _worker_lock:
        _worker = None
