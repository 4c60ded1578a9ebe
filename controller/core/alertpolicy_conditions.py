"""The threshold conditions of the generated alert policies, one builder per trigger.

Part of the alert-policy generator (``controller.core.alertpolicies``): the Cloud Run metrics
each trigger reads, their alignment and group-by (what ``alert_from_incident`` needs to name the
revision), ``for`` rounded to whole minutes, the health trigger's window (``health_window``), and
the markdown explanation of what each condition cannot express. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from controller.core.alertpolicy_scope import quote
from controller.core.durations import format_duration
from controller.core.policy import ErrorRateTrigger, HealthTrigger, LatencyTrigger

__all__ = [
    "ALIGNMENT",
    "GROUP_BY",
    "PROBE_PERIOD",
    "RESOURCE_TYPE",
    "STARTUP_PROBE_PERIOD",
    "Spec",
    "error_rate",
    "health",
    "health_window",
    "latency",
]

RESOURCE_TYPE: Final = "cloud_run_revision"
REQUEST_COUNT: Final = "run.googleapis.com/request_count"
REQUEST_LATENCIES: Final = "run.googleapis.com/request_latencies"
PROBE_ATTEMPTS: Final = "run.googleapis.com/container/completed_probe_attempt_count"

# What alert_from_incident reads from resource labels: without revision_name in the group-by the
# incident could not name the suspect revision (wire doc 01, pitfall 4).
GROUP_BY: Final = (
    "resource.label.service_name",
    "resource.label.revision_name",
    "resource.label.location",
)

# Cloud Run samples its metrics every 60 s, and 60 s is the smallest alignment period.
ALIGNMENT: Final = timedelta(seconds=60)

# Cloud Run's default period for liveness (and HTTP startup) probes; the health mapping sizes its
# window so that this many consecutive failed attempts always land in one window.
PROBE_PERIOD: Final = timedelta(seconds=10)
# Cloud Run's default startup probe (TCP, every 240 s): all a service deployed with defaults has.
STARTUP_PROBE_PERIOD: Final = timedelta(seconds=240)


def _seconds(value: timedelta) -> str:
    return f"{int(value.total_seconds())}s"


def _whole_minutes(value: timedelta) -> timedelta:
    """Monitoring accepts threshold durations in whole minutes only (0, 60, 120, … seconds)."""
    return timedelta(minutes=math.ceil(value.total_seconds() / 60))


def _aggregation(reducer: str, period: timedelta = ALIGNMENT) -> dict[str, Any]:
    return {
        "alignmentPeriod": _seconds(period),
        "perSeriesAligner": "ALIGN_DELTA",
        "crossSeriesReducer": reducer,
        "groupByFields": list(GROUP_BY),
    }


def _filter(metric_type: str, scope: Sequence[str], *extra: str) -> str:
    return " AND ".join(
        [f"metric.type = {quote(metric_type)}", f"resource.type = {quote(RESOURCE_TYPE)}", *scope, *extra]
    )


def health_window(consecutive_failures: int, probe_period: timedelta = PROBE_PERIOD) -> timedelta:
    """The window that always holds a run of ``consecutive_failures`` probe attempts whole.

    Cloud Run reports probe attempts as 60-s deltas. A run of N attempts ``probe_period`` apart
    spans (N-1)·period seconds, so it touches at most ceil(span / 60) + 1 of those samples; a
    window that long never splits the run between two windows.
    """
    span = (consecutive_failures - 1) * probe_period.total_seconds()
    return timedelta(minutes=math.ceil(span / 60) + 1)


@dataclass(frozen=True)
class Spec:
    """What differs between the three triggers."""

    title: str  # for display names: "5xx ratio > 5% for 2m"
    conditions: tuple[dict[str, Any], ...]
    explanation: str  # markdown: what the condition measures and what it cannot express


def _threshold(
    *,
    filter_: str,
    aggregation: dict[str, Any],
    threshold: float,
    duration: timedelta,
    denominator: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"filter": filter_, "aggregations": [aggregation]}
    if denominator is not None:
        body["denominatorFilter"] = denominator
        body["denominatorAggregations"] = [dict(aggregation)]
    body |= {
        "comparison": "COMPARISON_GT",
        "thresholdValue": threshold,
        "duration": _seconds(duration),
        "trigger": {"count": 1},
        # A revision that was rolled back stops getting requests, so its series goes silent;
        # treating that as "condition not met" closes the incident (and Slack hears "recovered").
        "evaluationMissingData": "EVALUATION_MISSING_DATA_INACTIVE",
    }
    return body


def _rounded_note(written: timedelta, used: timedelta) -> str:
    if written == used:
        return ""
    return f" (`for: {format_duration(written)}` rounded up to {format_duration(used)}: Monitoring takes whole minutes)"


# Where min_requests is enforced instead (controller/core/verify.py, the policy's verification block).
_MIN_REQUESTS = (
    "the controller's verification applies it, reading the revision's own numbers back from Monitoring "
    "before acting; with fewer requests the evidence is inconclusive and the policy's "
    "`verification.on_inconclusive` decides."
)


def error_rate(t: ErrorRateTrigger, scopes: Sequence[tuple[str, ...]]) -> Spec:
    duration = _whole_minutes(t.for_)
    title = f"5xx ratio > {t.above * 100:g}% for {format_duration(duration)}"
    conditions = tuple(
        {
            "conditionThreshold": _threshold(
                filter_=_filter(REQUEST_COUNT, scope, 'metric.label.response_code_class = "5xx"'),
                denominator=_filter(REQUEST_COUNT, scope),
                aggregation=_aggregation("REDUCE_SUM"),
                threshold=t.above,
                duration=duration,
            )
        }
        for scope in scopes
    )
    explanation = (
        f"Fires when a revision's 5xx responses / all responses, per minute, stay above {t.above:g} "
        f"for {format_duration(duration)}{_rounded_note(t.for_, duration)}. "
        f"`min_requests: {t.min_requests}` cannot be written into a ratio condition (one 5xx out of "
        f"one request is 100%); {_MIN_REQUESTS}"
    )
    return Spec(title, conditions, explanation)


def latency(t: LatencyTrigger, scopes: Sequence[tuple[str, ...]]) -> Spec:
    duration = _whole_minutes(t.for_)
    title = f"p95 latency > {t.above_ms:g} ms for {format_duration(duration)}"
    conditions = tuple(
        {
            "conditionThreshold": _threshold(
                filter_=_filter(REQUEST_LATENCIES, scope),
                # ALIGN_DELTA keeps each series' distribution; the reducer merges a revision's
                # distributions before reading p95 (never a percentile of percentiles).
                aggregation=_aggregation("REDUCE_PERCENTILE_95"),
                threshold=t.above_ms,
                duration=duration,
            )
        }
        for scope in scopes
    )
    explanation = (
        f"Fires when a revision's p95 request latency, per minute, stays above {t.above_ms:g} ms for "
        f"{format_duration(duration)}{_rounded_note(t.for_, duration)}. `min_requests: {t.min_requests}` "
        f"cannot be written into a threshold condition; {_MIN_REQUESTS}"
    )
    return Spec(title, conditions, explanation)


def health(t: HealthTrigger, scopes: Sequence[tuple[str, ...]], probe_period: timedelta | None) -> Spec:
    n = t.consecutive_failures
    blind = probe_period is None  # no liveness probe: only startup probes (Cloud Run's default) report
    probe_period = STARTUP_PROBE_PERIOD if probe_period is None else probe_period
    window = health_window(n, probe_period)
    title = f">= {n} failed health checks in {format_duration(window)}"
    conditions = tuple(
        {
            "conditionThreshold": _threshold(
                filter_=_filter(PROBE_ATTEMPTS, scope, "metric.label.is_healthy = false"),
                aggregation=_aggregation("REDUCE_SUM", window),
                # Counts are whole numbers: "> N-1" is ">= N".
                threshold=n - 1,
                # The window already demands N failures; waiting longer only delays the rollback.
                duration=timedelta(0),
            )
        }
        for scope in scopes
    )
    explanation = (
        f"Fires when a revision records at least {n} failed probe attempts (startup or liveness, all "
        f"instances together) within {format_duration(window)}. Monitoring sees per-minute counts, "
        f"not runs, so 'consecutive' becomes 'within a window that always holds {n} consecutive "
        f"attempts {format_duration(probe_period)} apart'; failures spread over instances count together."
    )
    if blind:
        explanation += (
            " The service has no liveness probe, so this trigger sees only startup probes (Cloud Run's "
            f"default: TCP, every {format_duration(STARTUP_PROBE_PERIOD)}), which run only while an "
            "instance starts: a revision that fails after starting never trips it, and the controller "
            "skips health verification. Add a liveness probe to make this trigger meaningful."
        )
    return Spec(title, conditions, explanation)
