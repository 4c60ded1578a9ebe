"""Orchestration of the alert path: parse → pick policy → read → decide → act → notify → log.

The engine owns the side effects the pure core refuses to have, and the rules for failure:

* Bad input (unparseable delivery, an alert that names no service, a service that does not
  exist) is a *permanent* error: logged with the reason and acknowledged, never retried.
* A stale etag means someone changed the service between our read and our write: re-read,
  re-decide (the ledger may now say the incident was handled by another instance) and retry,
  ``conflict_retries`` times at most; still conflicting → raise so Pub/Sub redelivers.
* An unavailable API, or an invalid policy set, is *temporary*: raised so Pub/Sub redelivers
  (nothing is lost); the ledger guarantees that a redelivery never acts twice.
* Slack is told after the fact and can never block or undo a traffic change.

Exactly one structured log line is written per delivery, with the whole decision.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from controller import logs
from controller.alert import Alert, alert_from_incident
from controller.cloudrun import Applied, CloudRunApi, CloudRunClient, OperationFailed
from controller.commit import Change, commit
from controller.decide import WOULD_ACT, Decision, Reason, decide
from controller.errors import (
    MalformedInput,
    PermanentError,
    TemporaryError,
)
from controller.incident import DeliveryInfo, parse_cloud_event
from controller.ledger import Ledger
from controller.messages import FAILED_HEADER, UNCONFIRMED_HEADER, render
from controller.monitoring import (
    Evidence,
    EvidenceCache,
    MonitoringApi,
    MonitoringUnavailable,
    Window,
    revision_window_before,
    trailing_window,
)
from controller.policy import Policy, PolicySet
from controller.policy_files import load_for_runtime
from controller.settings import Settings
from controller.slack import Notifier, build_notifier
from controller.state import Frozen, ServiceRef, ServiceState
from controller.verify import Verification, attribute, judge, measure, trigger_window, unavailable

log = logging.getLogger("controller.alert")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Outcome(Frozen):
    """What one delivery led to (returned for tests, the CLI and benchmarks)."""

    decision: Decision | None = None
    error: str = ""
    attempts: int = 0
    confirmed: bool = True
    notified: bool = False


class Controller:
    def __init__(
        self,
        settings: Settings,
        run: CloudRunApi,
        notifier: Notifier,
        *,
        policies: PolicySet | None = None,
        clock: Clock = utc_now,
        monitoring: MonitoringApi | None = None,
    ) -> None:
        self.settings = settings
        self.run = run
        self.notifier = notifier
        self.monitoring = monitoring
        self.clock = clock
        self._policies = policies
        self._policy_error = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Controller:
        run = CloudRunClient(
            settings.run_endpoint,
            api_timeout=settings.api_timeout,
            operation_timeout=settings.operation_timeout,
        )
        from controller.monitoring import MonitoringClient

        monitoring = MonitoringClient(settings.monitoring_endpoint, deadline=settings.monitoring_deadline)
        return cls(settings, run, build_notifier(settings), monitoring=monitoring)

    # -- policies ------------------------------------------------------------------------
    def policies(self) -> PolicySet:
        """Loaded once per process (see ``policy.load_for_runtime`` for what invalid files do)."""
        if self._policies is None:
            self._policies = load_for_runtime(self.settings.policies)
        return self._policies

    # -- entry points ----------------------------------------------------------------------
    def handle_cloud_event(self, event: Any) -> Outcome:
        """The Pub/Sub path: returns normally to acknowledge, raises to have Pub/Sub redeliver."""
        started = time.perf_counter()
        try:
            notification, delivery = parse_cloud_event(event)
            alert = alert_from_incident(notification)
        except MalformedInput as exc:
            self._log_rejected(str(exc), _event_id(event), started)
            return Outcome(error=str(exc))
        return self.handle_alert(alert, delivery, started=started)

    def handle_alert(
        self, alert: Alert, delivery: DeliveryInfo | None = None, *, started: float | None = None
    ) -> Outcome:
        started = time.perf_counter() if started is None else started
        policy: Policy | None = None
        ref: ServiceRef | None = None
        attempts = 0
        try:
            if alert.is_test:
                decision = decide(alert, None, None, Ledger(), self.clock(), dry_run=self.settings.dry_run)
                return self._finish(alert, None, decision, delivery, started, attempts=0)
            ref = self._service_ref(alert)
            selection = self.policies().select(alert.model_copy(update={"project": ref.project}))
            policy = selection.policy
            decision, applied, attempts = self._decide_and_act(alert, ref, policy, selection.reason)
            return self._finish(alert, policy, decision, delivery, started, attempts=attempts, applied=applied)
        except OperationFailed as exc:
            # The API accepted the write but could not complete it: tell humans loudly, and do
            # not retry blindly (the same write would fail the same way).
            return self._fail(alert, policy, delivery, started, str(exc), attempts, failed_on=ref)
        except PermanentError as exc:
            return self._fail(alert, policy, delivery, started, str(exc), attempts)
        except TemporaryError as exc:
            self._fail(alert, policy, delivery, started, str(exc), attempts, temporary=True)
            raise

    # -- the loop --------------------------------------------------------------------------
    def _decide_and_act(
        self, alert: Alert, ref: ServiceRef, policy: Policy | None, policy_reason: str
    ) -> tuple[Decision, Applied | None, int]:
        evidence = _Evidence(self.monitoring, ref) if self.monitoring is not None else None

        def plan(state: ServiceState, ledger: Ledger) -> tuple[Decision, Change | None]:
            now = self.clock()
            claim = alert
            verifying = evidence is not None and policy is not None and policy.verification.enabled
            if (
                evidence is not None
                and policy is not None
                and verifying
                and alert.state == "open"
                and not alert.revision
            ):
                claim = evidence.attribute(alert, policy, state, now)

            def decide_with(verification: Verification | None) -> Decision:
                return decide(
                    claim,
                    policy,
                    state,
                    ledger,
                    now,
                    dry_run=self.settings.dry_run,
                    policy_reason=policy_reason,
                    verification=verification,
                )

            decision = decide_with(None)
            if evidence is not None and policy is not None and verifying and decision.reason in WOULD_ACT:
                decision = decide_with(evidence.verify(claim, policy, state, decision, now))
            if not decision.changes_traffic or decision.ledger_after is None:
                return decision, None
            return decision, Change(decision.traffic_after, decision.ledger_after)

        done = commit(self.run, ref, plan, retries=self.settings.conflict_retries)
        return done.outcome, done.applied, done.attempts

    def _service_ref(self, alert: Alert) -> ServiceRef:
        project = alert.project or self.settings.default_project
        missing = [n for n, v in (("project", project), ("region", alert.region), ("service", alert.service)) if not v]
        if missing:
            raise PermanentError(
                f"incident {alert.incident_id} does not say which service to act on (missing {', '.join(missing)}); "
                "group the alert policy by resource.label.service_name, revision_name and location"
            )
        assert project and alert.region and alert.service
        return ServiceRef(project=project, region=alert.region, service=alert.service)

    # -- reporting -------------------------------------------------------------------------
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
    ) -> Outcome:
        confirmed = applied.confirmed if applied else True
        notified = False
        if decision.notify:
            header = UNCONFIRMED_HEADER if not confirmed else None
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
                extra="Traffic may be unchanged: check the service now.",
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
        )
        return Outcome(error=error, attempts=attempts, notified=notified)

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
            # On-call can undo or pin straight from the message (see controller/slack_actions.py).
            from controller.slack_actions import action_blocks

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
                    "error": error,
                    "delivery": {"event_id": event_id},
                    "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
                },
                "labels": {"reason": "malformed"},
            },
        )


_SIGNALS: dict[str, str] = {"error_rate": "error_rate", "latency_p95": "latency", "health": "health"}
UPTIME_METRIC = "monitoring.googleapis.com/uptime_check/check_passed"


class _Evidence:
    """The alert path's questions to Cloud Monitoring for one delivery (memoised by EvidenceCache)."""

    def __init__(self, monitoring: MonitoringApi, ref: ServiceRef) -> None:
        self._cache = EvidenceCache(monitoring, ref)

    def _fetch(self, window: Window, signal: str) -> Evidence:
        return self._cache.get(window, frozenset({signal}))

    def attribute(self, alert: Alert, policy: Policy, state: ServiceState, now: datetime) -> Alert:
        """A service-level alert names no revision: blame the serving revision whose numbers breach worst."""
        if alert.trigger is None or getattr(policy.triggers, alert.trigger) is None:
            return alert
        window = trailing_window(now, trigger_window(policy, alert.trigger, alert.window))
        try:
            found = self._fetch(window, _SIGNALS[alert.trigger])
        except MonitoringUnavailable:
            return alert
        numbers = list(found.revisions.values())
        suspect = attribute(policy, alert.trigger, numbers, state.serving(), window.start, window.end)
        return alert.model_copy(update={"revision": suspect}) if suspect else alert

    def verify(
        self, alert: Alert, policy: Policy, state: ServiceState, decision: Decision, now: datetime
    ) -> Verification:
        trigger = alert.trigger
        assert trigger is not None
        signal = _SIGNALS[trigger]
        length = trigger_window(policy, trigger, alert.window)
        probe_data = alert.metric_type != UPTIME_METRIC
        window = trailing_window(now, length)
        try:
            found = self._fetch(window, signal)
        except MonitoringUnavailable as exc:
            return unavailable(str(exc))
        suspect = measure(policy, trigger, found.get(decision.suspect), window.start, window.end, probe_data=probe_data)
        target = None
        created = state.revision(decision.suspect)
        if policy.verification.compare_target and decision.target and created is not None:
            before = revision_window_before(created.create_time, length)
            try:
                then = self._fetch(before, signal)
                target = measure(
                    policy, trigger, then.get(decision.target), before.start, before.end, probe_data=probe_data
                )
            except MonitoringUnavailable:
                target = None
        return judge(suspect, target)


def _event_id(event: Any) -> str:
    try:
        return str(event["id"])
    except Exception:
        return ""


# -- the process-wide controller used by main.py --------------------------------------------
_controller: Controller | None = None
_controller_lock = threading.Lock()


def get_controller(env: Mapping[str, str] | None = None) -> Controller:
    """Build the controller from the environment once per process (Cloud Functions reuses it)."""
    global _controller
    with _controller_lock:
        if _controller is None:
            logs.configure()
            settings = Settings.from_env(os.environ if env is None else env)
            from controller import events

            events.install(settings.events_topic)  # ROLLBACK_EVENTS_TOPIC: decisions also as Pub/Sub events
            _controller = Controller.from_settings(settings)
        return _controller


def reset_controller() -> None:
    """Forget the process-wide controller (tests change the environment between cases)."""
    global _controller
    with _controller_lock:
        _controller = None
