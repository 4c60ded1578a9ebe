"""The alert path's reporting: Slack after the fact and exactly one structured log line per delivery.

:class:`AlertReporting` is mixed into :class:`controller.app.engine.Controller`; it holds how an
outcome is told (``_finish`` for a decision, ``_fail`` for an error, ``_denied`` for a missing
permission, ``_log_rejected`` for an unparseable delivery) and nothing that decides or writes.
Slack can never block or undo a traffic change: it is told after the write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from controller.adapters.cloudrun import Applied
from controller.adapters.slack import Notifier
from controller.app.settings import Settings
from controller.core.alert import Alert
from controller.core.decide import Decision, Reason
from controller.core.envelope import DeliveryInfo
from controller.core.errors import AccessDenied
from controller.core.messages import FAILED_HEADER, UNCONFIRMED_HEADER, SlackMessage, render
from controller.core.policy import Policy
from controller.core.slack_blocks import action_blocks, section
from controller.core.state import Frozen, ServiceRef

log = logging.getLogger("controller.alert")


class Outcome(Frozen):
    """What one delivery led to (returned for tests, the CLI and benchmarks)."""

    decision: Decision | None = None
    error: str = ""
    attempts: int = 0
    confirmed: bool = True
    notified: bool = False


class AlertReporting:
    """Telling Slack and the log what one delivery led to (the ``Controller`` provides the attributes)."""

    settings: Settings
    notifier: Notifier
    clock: Callable[[], datetime]

    def _finish(
        self,
        alert: Alert,
        policy: Policy | None,
        decision: Decision,
        delivery: DeliveryInfo | None,
        started: float,
        *,
        attempts: int,
        applied: Applied | None = None,
        header: str | None = None,
        late: bool = False,
        age: timedelta | None = None,
    ) -> Outcome:
        confirmed = applied.confirmed if applied else True
        notified = False
        # The log-based metrics (deploy/telemetry/metrics) count decisions by outcome and measure
        # incident start -> traffic shifted from these two fields.
        shifted = decision.changes_traffic and applied is not None
        outcome = ("acted" if confirmed else "unconfirmed") if shifted else "no-change"
        timing = {"time_to_shift_s": round((self.clock() - alert.started_at).total_seconds(), 3)} if shifted else {}
        if decision.notify:
            header = UNCONFIRMED_HEADER if not confirmed else header
            extra = applied.detail if applied and not confirmed else ""
            notified = self._notify(decision, alert, policy, header=header, extra=extra)
        self._log(
            logging.INFO if confirmed else logging.WARNING,
            decision.message,
            alert,
            decision,
            delivery,
            started,
            attempts=attempts,
            notified=notified,
            confirmed=confirmed,
            outcome=outcome,
            **timing,
            **({"announced_late": True} if late else {}),
            **({"alert_age_s": round(age.total_seconds())} if age is not None else {}),
        )
        return Outcome(decision=decision, attempts=attempts, confirmed=confirmed, notified=notified)

    def _fail(
        self,
        alert: Alert,
        policy: Policy | None,
        delivery: DeliveryInfo | None,
        started: float,
        error: str,
        attempts: int,
        *,
        temporary: bool = False,
        failed_on: ServiceRef | None = None,
    ) -> Outcome:
        notified = False
        if failed_on is not None:
            failed = Decision(
                reason=Reason.ROLLBACK_FAILED,
                message=error,
                service=failed_on,
                policy=policy.name if policy else "",
                trigger=alert.trigger,
            )
            notified = self._notify(
                failed,
                alert,
                policy,
                header=FAILED_HEADER,
                extra="What served before still serves; the incident will be retried.",
            )
        severity = logging.WARNING if temporary else logging.ERROR
        verb = "will be redelivered" if temporary else "acknowledged, not retried"
        self._log(
            severity,
            f"{error} ({verb})",
            alert,
            None,
            delivery,
            started,
            attempts=attempts,
            notified=notified,
            error=error,
            outcome="retrying" if temporary else "failed",
        )
        return Outcome(error=error, attempts=attempts, notified=notified)

    def _denied(
        self,
        alert: Alert,
        policy: Policy | None,
        delivery: DeliveryInfo | None,
        started: float,
        exc: AccessDenied,
        attempts: int,
    ) -> Outcome:
        """401/403: no redelivery can grant a permission. Acknowledge, say which one is missing."""
        text = f":no_entry: cannot act on {exc.service}: the controller's service account lacks {exc.permission}"
        detail = f"{text}\n{exc.method} was refused; grant {exc.permission} (see docs/security.md)."
        channel = policy.notify.slack_channel if policy else None
        blocks = (section(detail),)
        notified = self.notifier.post(SlackMessage(text=text, blocks=blocks, channel=channel))
        message = f"{exc.method} refused: the controller's service account lacks {exc.permission} ({exc})"
        self._log(
            logging.ERROR,
            f"{message} (acknowledged, not retried)",
            alert,
            None,
            delivery,
            started,
            attempts=attempts,
            notified=notified,
            error=str(exc),
            api_method=exc.method,
            permission=exc.permission,
        )
        return Outcome(error=message, attempts=attempts, notified=notified)

    def _notify(
        self,
        decision: Decision,
        alert: Alert,
        policy: Policy | None,
        *,
        header: str | None = None,
        extra: str = "",
    ) -> bool:
        channel = policy.notify.slack_channel if policy else None
        actions: tuple[dict[str, Any], ...] = ()
        if decision.service is not None and decision.reason in (Reason.ROLLED_BACK, Reason.HELD):
            # On-call can undo or pin straight from the message (see controller/surfaces/slack_actions.py).
            rolled_back = decision.reason is Reason.ROLLED_BACK
            actions = tuple(
                action_blocks(decision.service, undo=rolled_back, hold=rolled_back, release=not rolled_back)
            )
        message = render(decision, alert, policy, channel=channel, header=header, extra=extra, actions=actions)
        return self.notifier.post(message)

    def _log(
        self,
        level: int,
        message: str,
        alert: Alert,
        decision: Decision | None,
        delivery: DeliveryInfo | None,
        started: float,
        **fields: Any,
    ) -> None:
        payload: dict[str, Any] = {
            "event": "alert",
            "incident": {
                "id": alert.incident_id,
                "state": alert.state,
                "trigger": alert.trigger,
                "observed_value": alert.observed_value,
                "threshold_value": alert.threshold_value,
                "alert_policy": alert.alert_policy,
                "url": alert.url,
                "started_at": alert.started_at.isoformat(),
            },
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
            "dry_run": self.settings.dry_run,
            **fields,
        }
        if delivery is not None:
            payload["delivery"] = delivery.model_dump(mode="json")
        labels = {"incident_id": alert.incident_id}
        if decision is not None:
            payload["decision"] = decision.model_dump(mode="json", exclude={"ledger_after"})
            labels["reason"] = decision.reason.value
            if decision.service:
                labels["service"] = str(decision.service)
        log.log(level, message, extra={"fields": payload, "labels": labels})

    def _log_rejected(self, error: str, event_id: str, started: float) -> None:
        log.error(
            f"rejected delivery (acknowledged, not retried): {error}",
            extra={
                "fields": {
                    "event": "alert",
                    "outcome": "rejected",
                    "error": error,
                    "delivery": {"event_id": event_id},
                    "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
                },
                "labels": {"reason": "malformed"},
            },
        )
