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

The questions to Cloud Monitoring are in :mod:`controller.app.alert_evidence`, the telling (Slack
and the log line) in :mod:`controller.app.alert_report`; this module holds the loop itself and the
process-wide controller ``main.py`` uses.
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
from controller.adapters.monitoring import MonitoringApi
from controller.adapters.policy_files import load_for_runtime
from controller.adapters.slack import Notifier
from controller.app.alert_evidence import AlertEvidence
from controller.app.alert_report import AlertReporting, Outcome
from controller.app.commit import Change, commit
from controller.app.settings import Settings
from controller.app.wiring import build_monitoring_client, build_notifier, build_run_client
from controller.core.alert import Alert, alert_from_incident, check_names
from controller.core.announce import late_announcement
from controller.core.decide import WOULD_ACT, Decision, Reason, decide
from controller.core.envelope import DeliveryInfo, delivery_info, parse_cloud_event
from controller.core.errors import (
    AccessDenied,
    ControllerError,
    MalformedInput,
    PermanentError,
    TemporaryError,
)
from controller.core.ledger import Ledger, read_ledger
from controller.core.messages import LATE_HEADER
from controller.core.policy import Policy
from controller.core.policy_matching import PolicySet
from controller.core.state import ServiceRef, ServiceState
from controller.core.verify import (
    Verdict,
    Verification,
    alert_age,
    alert_since,
    no_longer_confirmed,
    suspect_window_end,
    unavailable,
)

log = logging.getLogger("controller.alert")


class Controller(AlertReporting):
    """The alert path for one process: one instance per process (``get_controller``), one call per delivery."""

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
        evidence = AlertEvidence(self.monitoring, ref) if self.monitoring is not None else None
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
            from controller.adapters import events  # lazy: loaded with the controller, not by `import main`

            events.install(settings.events_topic)  # ROLLBACK_EVENTS_TOPIC: decisions also as Pub/Sub events
            _controller = Controller.from_settings(settings)
        return _controller


def reset_controller() -> None:
    """Forget the process-wide controller (tests change the environment between cases)."""
    global _controller
    with _controller_lock:
        _controller = None
