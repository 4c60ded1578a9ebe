"""What an incident claims, normalised: which service, which revision, which trigger, which numbers.

``alert_from_incident`` turns a parsed Monitoring incident (``controller.incident``) into an
``Alert``. It is pure: no clock, no network. Where the incident is silent the fields are None,
and the engine decides what that means (e.g. no revision label → the newest serving revision).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field

from controller.core import names
from controller.core.incident import Notification
from controller.core.state import Frozen

TriggerKind = Literal["error_rate", "latency_p95", "health"]

# Alert-policy user labels the controller understands (GCP label keys: lowercase, digits, _ and -).
LABEL_ROLLBACK_POLICY = "rollback_policy"  # name of the rollback policy to apply
LABEL_TRIGGER = "rollback_trigger"  # error_rate | latency_p95 | health, when the metric is ambiguous

TRIGGER_KINDS: Mapping[str, TriggerKind] = {
    "error_rate": "error_rate",
    "latency_p95": "latency_p95",
    "health": "health",
}

METRIC_TRIGGERS: Mapping[str, TriggerKind] = {
    "run.googleapis.com/request_count": "error_rate",
    "run.googleapis.com/request_latencies": "latency_p95",
    "run.googleapis.com/container/completed_probe_attempt_count": "health",
    "run.googleapis.com/container/completed_probe_count": "health",
    "monitoring.googleapis.com/uptime_check/check_passed": "health",
}
"""Metric types whose alerts map to a trigger without help from a user label."""

TEST_RESOURCE_TYPE = "example_resource"  # what the console's "Send test notification" reports


class Alert(Frozen):
    incident_id: str
    state: Literal["open", "closed"]
    is_test: bool = False
    project: str | None = None
    region: str | None = None
    service: str | None = None
    revision: str | None = None
    trigger: TriggerKind | None = None
    metric_type: str = ""
    observed_value: float | None = None
    threshold_value: float | None = None
    window: timedelta | None = None
    alert_policy: str = ""
    condition_name: str = ""
    user_labels: dict[str, str] = Field(default_factory=dict)
    url: str = ""
    summary: str = ""
    started_at: datetime
    ended_at: datetime | None = None

    @property
    def rollback_policy(self) -> str | None:
        return self.user_labels.get(LABEL_ROLLBACK_POLICY) or None


_METRIC_TYPE_IN_FILTER = re.compile(r"""metric\.type\s*=\s*["']([^"']+)["']""")


def _first(*candidates: str | None) -> str | None:
    """The first non-empty candidate; labels that are present but empty count as absent."""
    for candidate in candidates:
        if candidate:
            return candidate
    return None


def _metric_type_from_filter(monitoring_filter: str) -> str:
    """The metric type a condition filter selects, preferring one we map to a trigger.

    Ratio filters name the same type twice; a filter may also join several types with OR.
    """
    found = _METRIC_TYPE_IN_FILTER.findall(monitoring_filter)
    for metric_type in found:
        if metric_type in METRIC_TRIGGERS:
            return str(metric_type)
    return str(found[0]) if found else ""


def alert_from_incident(notification: Notification) -> Alert:
    """Normalise a Monitoring notification into an ``Alert``. Pure; never raises for a parsed one.

    Rules, in order of precedence ("labels" that are empty strings count as absent):

    * ``incident_id``, ``state`` ("open"/"closed", already lower-cased), ``started_at``,
      ``ended_at`` (None while open) are copied.
    * ``is_test``: ``version == "test"`` or resource type ``example_resource`` (the console's
      "Send test notification" button). The engine must not act on it.
    * ``user_labels``: the policy's user labels merged over ``metadata.user_labels`` (the
      resource's own labels, e.g. the Cloud Run service's); the policy wins on a clash.
    * ``project``: ``resource.labels.project_id``, else ``scoping_project_id``, else None.
    * ``region``: ``resource.labels.location``, else metric label ``location``/``region``, else
      user label ``location``/``region``, else None.
    * ``service``: ``resource.labels.service_name``, else metric label ``service_name``, else user
      label ``service_name``/``service``, else None.
    * ``revision``: ``resource.labels.revision_name``, else metric label ``revision_name``, else
      user label ``revision_name``/``revision``, else None (a service-level alert: the engine
      picks the newest revision serving traffic).
    * ``metric_type``: ``metric.type``, else the ``metric.type="…"`` of the condition's filter.
    * ``trigger``: user label ``rollback_trigger`` when it is ``error_rate``, ``latency_p95`` or
      ``health`` (any other value is ignored, not an error); else by metric type —
      ``run.googleapis.com/request_count`` → error_rate, ``run.googleapis.com/request_latencies``
      → latency_p95, Cloud Run probe counts and ``uptime_check/check_passed`` → health; else None.
      MQL/PromQL conditions carry no filter: give such policies the ``rollback_trigger`` label.
    * ``observed_value``/``threshold_value``: the incident's strings as finite floats, None when
      empty or not a number; the threshold falls back to the condition's ``thresholdValue``.
    * ``window``: the condition's ``duration`` ("300s" → 5 min), else None.
    * ``alert_policy`` = ``policy_name`` (a display name; a resource name for the console test),
      ``condition_name`` (else the condition's ``displayName``), ``url``, ``summary``.
    """
    incident = notification.incident
    resource = incident.resource.labels
    metric = incident.metric.labels
    user_labels = {**incident.metadata.user_labels, **incident.policy_user_labels}

    metric_type = incident.metric.type or _metric_type_from_filter(incident.condition_filter)
    trigger = TRIGGER_KINDS.get(user_labels.get(LABEL_TRIGGER, "")) or METRIC_TRIGGERS.get(metric_type)
    display_name = incident.condition.get("displayName")

    return Alert(
        incident_id=incident.incident_id,
        state=incident.state,
        is_test=(notification.version.lower() == "test" or incident.resource.type == TEST_RESOURCE_TYPE),
        project=_first(resource.get("project_id"), incident.scoping_project_id),
        region=_first(
            resource.get("location"),
            metric.get("location"),
            metric.get("region"),
            user_labels.get("location"),
            user_labels.get("region"),
        ),
        service=_first(
            resource.get("service_name"),
            metric.get("service_name"),
            user_labels.get("service_name"),
            user_labels.get("service"),
        ),
        revision=_first(
            resource.get("revision_name"),
            metric.get("revision_name"),
            user_labels.get("revision_name"),
            user_labels.get("revision"),
        ),
        trigger=trigger,
        metric_type=metric_type,
        observed_value=incident.observed_float,
        threshold_value=incident.threshold_float,
        window=incident.condition_duration,
        alert_policy=incident.policy_name,
        condition_name=incident.condition_name or (display_name if isinstance(display_name, str) else ""),
        user_labels=user_labels,
        url=incident.url,
        summary=incident.summary,
        started_at=incident.started_at,
        ended_at=incident.ended_at,
    )


def check_names(alert: Alert) -> None:
    """Raise ``MalformedInput`` when a name the controller would act on is not in Google's format.

    Checked at the edge (``controller.names``), before anything builds a resource name from them;
    a console test notification is exempt (its example resource is never acted on).
    """
    if alert.is_test:
        return
    where = f"incident {names.shown(alert.incident_id)}"
    names.check("project", alert.project, where=where)
    names.check("region", alert.region, where=where)
    names.check("service", alert.service, where=where)
    names.check("revision", alert.revision, where=where)
