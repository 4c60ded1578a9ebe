"""A memo over Cloud Monitoring for one delivery or one canary tick.

The alert path and the canary ask for evidence through :class:`EvidenceCache`, so one
(window, signals) is asked once even when the caller re-plans after an etag conflict, and once
Monitoring has failed it is not asked again: an outage costs one deadline, not one per look-up.
"""

from __future__ import annotations

from datetime import datetime

from controller.adapters.monitoring import MonitoringApi, MonitoringUnavailable
from controller.core.evidence import Evidence, Window
from controller.core.state import ServiceRef

__all__ = ["EvidenceCache"]


class EvidenceCache:
    """A memo over a ``MonitoringApi`` for one delivery or one tick.

    Each (window, signals) is asked once, even when the caller re-plans after an etag conflict;
    and once Monitoring has failed it is not asked again, so an outage costs one deadline, not one
    per look-up. ``failure`` says why, for logs and Slack.
    """

    def __init__(self, monitoring: MonitoringApi | None, ref: ServiceRef) -> None:
        self._monitoring = monitoring
        self._ref = ref
        self._answers: dict[tuple[datetime, datetime, frozenset[str]], Evidence] = {}
        self.failure = "" if monitoring is not None else "Cloud Monitoring is not configured"

    def get(self, window: Window, signals: frozenset[str]) -> Evidence:
        if self.failure or self._monitoring is None:
            raise MonitoringUnavailable(self.failure)
        key = (window.start, window.end, signals)
        if key not in self._answers:
            try:
                self._answers[key] = self._monitoring.evidence(self._ref, window, signals=signals)
            except MonitoringUnavailable as exc:
                self.failure = str(exc) or type(exc).__name__
                raise
        return self._answers[key]
