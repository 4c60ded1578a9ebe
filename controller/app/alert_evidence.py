"""The alert path's questions to Cloud Monitoring for one delivery: which revision, and is it confirmed.

``AlertEvidence.attribute`` names the suspect of a service-level alert (the serving revision whose
numbers breach worst); ``AlertEvidence.verify`` measures the suspect over the trigger's window and
the target over the window before the suspect took traffic. Every read of one delivery goes
through one :class:`~controller.adapters.monitoring.EvidenceCache`, conflict retries included.
"""

from __future__ import annotations

from datetime import datetime

from controller.adapters.monitoring import MonitoringApi, MonitoringUnavailable
from controller.app.evidence_cache import EvidenceCache
from controller.core.alert import Alert
from controller.core.decide import Decision
from controller.core.evidence import Evidence, Window, revision_window_before, trailing_window
from controller.core.policy import Policy
from controller.core.probes import blind_spot
from controller.core.state import ServiceRef, ServiceState
from controller.core.verify import Verdict, Verification, attribute, judge, measure, trigger_window, unavailable

_SIGNALS: dict[str, str] = {"error_rate": "error_rate", "latency_p95": "latency", "health": "health"}
UPTIME_METRIC = "monitoring.googleapis.com/uptime_check/check_passed"


class AlertEvidence:
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
