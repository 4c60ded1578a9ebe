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
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from controller.adapters import logs
from controller.adapters.clock import Clock, utc_now
from controller.adapters.cloudrun import Applied, CloudRunApi, OperationFailed
from controller.adapters.deadline import Deadline, scope
from controller.adapters.monitoring import MonitoringApi, MonitoringUnavailable
from controller.adapters.policy_files import load_for_runtime
from controller.adapters.slack import Notifier
from controller.app.commit import Change, commit
from controller.app.evidence_cache import EvidenceCache
from controller.app.settings import Settings
from controller.app.wiring import build_monitoring_client, build_notifier, build_run_client
from controller.core.alert import Alert, alert_from_incident, check_names
from controller.core.announce import late_announcement
from controller.core.decide import WOULD_ACT, Decision, Reason, decide
from controller.core.errors import (
    AccessDenied,
    ControllerError,
    MalformedInput,
    PermanentError,
    TemporaryError,
)
from controller.core.evidence import Evidence, Window, revision_window_before, trailing_window
from controller.core.incident import DeliveryInfo, delivery_info, parse_cloud_event
from controller.core.ledger import Ledger, read_ledger
from controller.core.messages import FAILED_HEADER, LATE_HEADER, UNCONFIRMED_HEADER, render
from controller.core.policy import Policy
from controller.core.policy_matching import PolicySet
from controller.core.probes import blind_spot
from controller.core.slack_blocks import action_blocks
from controller.core.state import Frozen, ServiceRef, ServiceState
from controller.core.verify import (
    Verdict,
    Verification,
    alert_age,
    alert_since,
    attribute,
    judge,
    measure,
    no_longer_confirmed,
    suspect_window_end,
    trigger_window,
    unavailable,
)

log = logging.getLogger("controller.alert")


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
        monitoring = build_monitoring_client(settings)
        return cls(settings, build_run_client(settings), build_notifier(settings), monitoring=monitoring)

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
            check_names(alert)  # before any name goes into a resource name (controller/core/names.py)
        except MalformedInput as exc:
            self._log_rejected(str(exc), delivery_info(event).event_id, started)
            return Outcome(error=str(exc))
        return self.handle_alert(alert, delivery, started=started)

    def handle_alert(
        self, alert: Alert, delivery: DeliveryInfo | None = None, *, started: float | None = None
    ) -> Outcome:
        # One deadline for the whole delivery: reads, Monitoring, the write and the operation wait.
        with scope(Deadline(self.settings.delivery_deadline)):
            return self._handle_alert(alert, delivery, started=started)

    def _handle_alert(self, alert: Alert, delivery: DeliveryInfo | None, *, started: float | None) -> Outcome:
        started = time.perf_counter() if started is None else started
        policy: Policy | None = None
        ref: ServiceRef | None = None
        attempts = 0
        try:
            check_names(alert)  # also for callers other than Pub/Sub (the CLI, tests)
            if alert.is_test:
                decision = decide(alert, None, None, Ledger(), self.clock(), dry_run=self.settings.dry_run)
                return self._finish(alert, None, decision, delivery, started, attempts=0)
            ref = self._service_ref(alert)
            selection = self.policies().select(alert.model_copy(update={"project": ref.project}))
            policy = selection.policy
            since = alert_since(alert.started_at, _published_at(delivery))
            age = alert_age(self.clock(), alert.started_at, _published_at(delivery))
            message_id = delivery.message_id if delivery else ""
            decision, applied, attempts, seen = self._decide_and_act(
                alert, ref, policy, selection.reason, age, since, message_id=message_id
            )
            if decision.reason is Reason.ALREADY_HANDLED:
                late = late_announcement(
                    alert, seen, read_ledger(seen.annotations), message_id=message_id, policy=decision.policy
                )
                if late is not None:  # the write happened, nobody was told (controller/core/announce.py)
                    outcome = self._finish(
                        alert,
                        policy,
                        late,
                        delivery,
                        started,
                        attempts=attempts,
                        header=LATE_HEADER,
                        late=True,
                        age=age,
                    )
                    self._mark_announced(ref, alert.incident_id, outcome.notified)
                    return outcome
            outcome = self._finish(
                alert, policy, decision, delivery, started, attempts=attempts, applied=applied, age=age
            )
            if decision.changes_traffic:
                self._mark_announced(ref, alert.incident_id, outcome.notified)
            return outcome
        except OperationFailed as exc:
            # Cloud Run accepted the write but could not serve it; commit() restored what serves
            # and left the incident retryable. Tell humans loudly, and let Pub/Sub redeliver.
            self._fail(
                alert, policy, delivery, started, f"rollback FAILED: {exc}", attempts, failed_on=ref, temporary=True
            )
            raise
        except AccessDenied as exc:
            return self._denied(alert, policy, delivery, started, exc, attempts)
        except PermanentError as exc:
            return self._fail(alert, policy, delivery, started, str(exc), attempts)
        except TemporaryError as exc:
            self._fail(alert, policy, delivery, started, str(exc), attempts, temporary=True)
            raise

    # -- the loop --------------------------------------------------------------------------
    def _decide_and_act(
        self,
        alert: Alert,
        ref: ServiceRef,
        policy: Policy | None,
        policy_reason: str,
        age: timedelta,
        since: datetime,
        *,
        message_id: str = "",
    ) -> tuple[Decision, Applied | None, int, ServiceState]:
        evidence = _Evidence(self.monitoring, ref) if self.monitoring is not None else None
        # An old delivery (Eventarc redelivers for up to 24 h) acts only on Cloud Monitoring's
        # *current* confirmation, whatever the policy says about verification.
        stale = alert.state == "open" and policy is not None and age > policy.rollback.max_alert_age

        def plan(state: ServiceState, ledger: Ledger) -> tuple[Decision, Change | None]:
            now = self.clock()
            claim = alert
            verifying = evidence is not None and policy is not None and (policy.verification.enabled or stale)
            end = (
                suspect_window_end(now, alert.started_at, policy.verification.ingestion_lag, stale=stale)
                if policy is not None
                else now
            )
            if (
                evidence is not None
                and policy is not None
                and verifying
                and alert.state == "open"
                and not alert.revision
            ):
                claim = evidence.attribute(alert, policy, state, end)

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
            if policy is not None and decision.reason in WOULD_ACT and (verifying or stale):
                found = (
                    evidence.verify(claim, policy, state, decision, end)
                    if evidence is not None
                    else unavailable("Cloud Monitoring is not configured")
                )
                if stale and found.verdict is not Verdict.CONFIRMED:
                    found = no_longer_confirmed(found, since, now - since)
                decision = decide_with(found)
            if not decision.changes_traffic or decision.ledger_after is None:
                return decision, None
            # Unannounced until Slack has it: a redelivery of this message then knows to tell.
            ledger_after = decision.ledger_after.await_announcement(alert.incident_id, message_id=message_id, now=now)
            return decision, Change(decision.traffic_after, ledger_after)

        done = commit(self.run, ref, plan, retries=self.settings.conflict_retries)
        return done.outcome, done.applied, done.attempts, done.state

    def _mark_announced(self, ref: ServiceRef, incident_id: str, notified: bool) -> None:
        """Record that Slack was told (a second write, traffic unchanged); see controller/core/announce.py."""
        if not notified:
            return  # the entry stays: a redelivery of this message tries again

        def plan(state: ServiceState, ledger: Ledger) -> tuple[None, Change | None]:
            if ledger.pending_announcement(incident_id) is None:
                return None, None
            return None, Change(state.traffic, ledger.announced(incident_id))

        try:
            commit(self.run, ref, plan, retries=self.settings.conflict_retries)
        except ControllerError as exc:
            # Told but not recorded: at worst a redelivery of this message says it twice.
            log.warning(
                "announcement not recorded in the ledger",
                extra={"fields": {"event": "alert", "incident": {"id": incident_id}, "error": str(exc)}},
            )

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
        from controller.core.messages import SlackMessage

        text = f":no_entry: cannot act on {exc.service}: the controller's service account lacks {exc.permission}"
        detail = f"{text}\n{exc.method} was refused; grant {exc.permission} (see docs/security.md)."
        channel = policy.notify.slack_channel if policy else None
        blocks = ({"type": "section", "text": {"type": "mrkdwn", "text": detail}},)
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


_SIGNALS: dict[str, str] = {"error_rate": "error_rate", "latency_p95": "latency", "health": "health"}
UPTIME_METRIC = "monitoring.googleapis.com/uptime_check/check_passed"


class _Evidence:
    """The alert path's questions to Cloud Monitoring for one delivery (memoised by EvidenceCache)."""

    def __init__(self, monitoring: MonitoringApi, ref: ServiceRef) -> None:
        self._cache = EvidenceCache(monitoring, ref)

    def _fetch(self, window: Window, signal: str) -> Evidence:
        return self._cache.get(window, frozenset({signal}))

    def attribute(self, alert: Alert, policy: Policy, state: ServiceState, end: datetime) -> Alert:
        """A service-level alert names no revision: blame the serving revision whose numbers breach worst."""
        if alert.trigger is None or getattr(policy.triggers, alert.trigger) is None:
            return alert
        window = trailing_window(end, trigger_window(policy, alert.trigger, alert.window))
        try:
            found = self._fetch(window, _SIGNALS[alert.trigger])
        except MonitoringUnavailable:
            return alert
        numbers = list(found.revisions.values())
        suspect = attribute(policy, alert.trigger, numbers, state.serving(), window.start, window.end)
        return alert.model_copy(update={"revision": suspect}) if suspect else alert

    def verify(
        self, alert: Alert, policy: Policy, state: ServiceState, decision: Decision, end: datetime
    ) -> Verification:
        """The suspect over the trigger's window ending at ``end`` (see ``verify.suspect_window_end``);
        the target over the window before the suspect took traffic."""
        trigger = alert.trigger
        assert trigger is not None
        signal = _SIGNALS[trigger]
        length = trigger_window(policy, trigger, alert.window)
        probe_data = alert.metric_type != UPTIME_METRIC
        suspect_rev = state.revision(decision.suspect)
        if trigger == "health" and probe_data and suspect_rev is not None and blind_spot(suspect_rev):
            # No liveness probe: Monitoring's probe counts cannot confirm or refute; say so.
            return Verification(verdict=Verdict.INCONCLUSIVE, note=blind_spot(suspect_rev))
        window = trailing_window(end, length)
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


def _published_at(delivery: DeliveryInfo | None) -> datetime | None:
    """Pub/Sub's ``publishTime`` (RFC 3339) as a datetime; None when absent or unreadable."""
    text = delivery.publish_time if delivery is not None else None
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


# -- the process-wide controller used by main.py --------------------------------------------
_controller: Controller | None = None
_controller_lock = threading.Lock()


def get_controller(env: Mapping[str, str] | None = None) -> Controller:
    """Build the controller from the environment once per process (Cloud Functions reuses it)."""
    global _controller
    with _controller_lock:
        if _controller is None:
            logs.configure()
            settings = Settings.from_env(env)
            from controller.adapters import events

            events.install(settings.events_topic)  # ROLLBACK_EVENTS_TOPIC: decisions also as Pub/Sub events
            _controller = Controller.from_settings(settings)
        return _controller


def reset_controller() -> None:
    """Forget the process-wide controller (tests change the environment between cases)."""
    global _controller
    with _controller_lock:
        _controller = None
