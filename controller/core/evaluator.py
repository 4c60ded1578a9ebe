"""A Cloud Monitoring alert-policy evaluator for ``conditionThreshold`` conditions, as a pure core.

Given the AlertPolicy JSON that ``python -m controller alert-policies`` generates (or any policy in
the supported subset) and, per evaluation time, the per-minute deltas Cloud Monitoring would hold
for each of the condition's groups, :class:`PolicyEvaluator` decides when incidents open and close,
and emits them as schema-1.2 notifications (wire doc 01), which ``controller.incident`` and
``controller.alert`` parse like Google's. The lab (``controller.surfaces.lab``) and the backtest
(``controller.app.backtest``) drive it; reading the minutes from Monitoring is their job.

Semantics modelled (source: Google's "Behavior of metric-based alerting policies",
https://cloud.google.com/monitoring/alerts/concepts-indepth, and the AlertPolicy reference,
https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.alertPolicies); the simplifications
are listed in docs/lab.md ("The evaluator"):

* **Alignment period = sliding look-back.** At each evaluation (every ``EVALUATION_PERIOD``, 60 s)
  a group's value is computed over the ``alignmentPeriod`` ending at the evaluation time, from the
  per-minute deltas visible then: ``ALIGN_DELTA`` sums them, ``ALIGN_RATE`` divides the sum by the
  period in seconds; ``REDUCE_SUM`` (numbers) or ``REDUCE_PERCENTILE_nn`` (merged distributions:
  a percentile of all requests, never a percentile of percentiles) combine the series of a group.
* **Ratio** (``denominatorFilter``): numerator / denominator per group, each aggregated as above.
  A zero or absent denominator gives *no value* (missing data), never 0 or infinity; a group with a
  denominator but no numerator series (no 5xx at all) has ratio 0.
* **comparison / thresholdValue**: ``COMPARISON_GT``, ``_GE``, ``_LT``, ``_LE``, ``_EQ``, ``_NE``.
* **duration (retest window)**: a group's condition is met once every evaluation for ``duration``
  has been met; a single evaluation that is not met resets the timer. ``0s`` opens at the first
  met evaluation. An incident opens only on an evaluation with a met value (silence under NO_OP
  neither resets the window nor lets it elapse).
* **trigger**: ``count`` N (default 1) groups, or ``percent`` of the groups with data, must be met
  at the same evaluation; then each met group without an open incident opens one (one incident per
  time series).
* **evaluationMissingData**: ``INACTIVE`` evaluates a group without data as not met (resets the
  timer, closes its incident); ``ACTIVE`` as met; ``NO_OP`` and unspecified (documented equivalent
  to NO_OP) change nothing: the timer is neither advanced nor reset, an open incident stays open.
* **closing**: an open incident closes at the first evaluation where its group has a value that is
  not met (or missing data under INACTIVE); or, with no data at all for its group, after
  ``alertStrategy.autoClose`` (default 7 days) since the last data.
* **combiner**: ``OR`` only (the generator's); each condition is evaluated on its own.

Pure: no clock (times are arguments), no network, no client library.

The policy's JSON is parsed into specs by ``controller.core.alertpolicy_spec``, the groups'
values come from ``controller.core.series_values``; this module holds the incident state
machine (``PolicyEvaluator``) and ``evaluate_feed``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from controller.core.alertpolicy_spec import EVALUATION_PERIOD, AlertPolicySpec, ConditionSpec, parse_policy
from controller.core.series_values import GroupKey, MinuteFeed

__all__ = [
    "EVALUATION_PERIOD",
    "Event",
    "IncidentRecord",
    "PolicyEvaluator",
    "evaluate_feed",
]

_SYMBOL: Final = {
    "COMPARISON_GT": "above",
    "COMPARISON_GE": "at or above",
    "COMPARISON_LT": "below",
    "COMPARISON_LE": "at or below",
    "COMPARISON_EQ": "equal to",
    "COMPARISON_NE": "not equal to",
}

# --------------------------------------------------------------------------------------------
# Incidents and notifications
# --------------------------------------------------------------------------------------------


@dataclass
class IncidentRecord:
    """One incident the evaluator opened (and maybe closed)."""

    incident_id: str
    condition: str
    group: GroupKey
    started_at: datetime
    opened_value: float | None
    ended_at: datetime | None = None
    closed_value: float | None = None
    closed_by: str = ""  # "recovered" | "missing-data" | "auto-close"


@dataclass(frozen=True)
class Event:
    """A state change of one incident, with the notification Monitoring would publish for it."""

    at: datetime
    state: Literal["open", "closed"]
    incident: IncidentRecord
    notification: dict[str, Any]


@dataclass
class _GroupState:
    since: datetime | None = None  # first evaluation of the current run of met evaluations
    last_data: datetime | None = None
    last_value: float | None = None
    open: IncidentRecord | None = None


def _epoch(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp())


def _labels_by_prefix(group: GroupKey, prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in group:
        for p in (f"{prefix}.label.", f"{prefix}.labels.", f"{prefix}."):
            if key.startswith(p):
                out[key[len(p) :]] = value
                break
    return out


class PolicyEvaluator:
    """The evaluation state of one alert policy over time. Feed :meth:`evaluate` in time order.

    ``project`` / ``project_number`` fill the notification's scoping fields and the resource's
    ``project_id`` label (Monitoring adds it to every group).
    """

    def __init__(self, policy: AlertPolicySpec | Mapping[str, Any], *, project: str, project_number: int = 0) -> None:
        self.policy = policy if isinstance(policy, AlertPolicySpec) else parse_policy(policy)
        self.project = project
        self.project_number = project_number
        self.incidents: list[IncidentRecord] = []
        self._state: dict[tuple[str, GroupKey], _GroupState] = {}
        self._last: datetime | None = None

    def open_incidents(self) -> list[IncidentRecord]:
        return [i for i in self.incidents if i.ended_at is None]

    def evaluate(
        self,
        now: datetime,
        values: Mapping[str, Mapping[GroupKey, float | None]],
    ) -> list[Event]:
        """One evaluation at ``now``: ``values[condition.name][group]`` is the group's look-back value
        (None or absent = no data; see :func:`aggregate` and :func:`ratio`). Returns the state changes."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if self._last is not None and now <= self._last:
            raise ValueError(f"evaluations must move forward in time ({now} after {self._last})")
        self._last = now
        events: list[Event] = []
        for cond in self.policy.conditions:
            events += self._evaluate_condition(now, cond, values.get(cond.name, {}))
        return events

    def _evaluate_condition(
        self, now: datetime, cond: ConditionSpec, values: Mapping[GroupKey, float | None]
    ) -> list[Event]:
        known = {g for (c, g) in self._state if c == cond.name} | set(values)
        met_now: dict[GroupKey, bool | None] = {}
        for group in sorted(known):
            st = self._state.setdefault((cond.name, group), _GroupState())
            value = values.get(group)
            if value is not None and math.isfinite(value):
                st.last_data, st.last_value = now, value
                met: bool | None = cond.met(value)
            elif cond.missing_data == "ACTIVE":
                met = True
            elif cond.missing_data == "INACTIVE":
                met = False
            else:
                met = None  # NO_OP: nothing changes
            met_now[group] = met
            if met is True and st.since is None:
                st.since = now
            elif met is False:
                st.since = None

        events: list[Event] = []
        # Closing first: a group that is no longer met, or silent for autoClose.
        for group in sorted(known):
            st = self._state[(cond.name, group)]
            if st.open is None:
                continue
            met = met_now[group]
            silent_since = st.last_data or st.open.started_at
            if met is False:
                how = "recovered" if values.get(group) is not None else "missing-data"
                events.append(self._close(now, cond, st, how))
            elif values.get(group) is None and now - silent_since >= self.policy.auto_close:
                events.append(self._close(now, cond, st, "auto-close"))

        # A group opens only on an evaluation with a met value: under NO_OP, silence neither
        # resets the retest window nor lets it elapse.
        ready = [
            g
            for g in sorted(known)
            if met_now[g] is True
            and (since := self._state[(cond.name, g)].since) is not None
            and now - since >= cond.duration
        ]
        with_data = [g for g in known if values.get(g) is not None]
        if cond.trigger_percent is not None:
            needed = max(1, math.ceil(len(with_data) * cond.trigger_percent / 100.0))
        else:
            needed = max(1, cond.trigger_count or 1)
        if len(ready) >= needed:
            for group in ready:
                st = self._state[(cond.name, group)]
                if st.open is None:
                    events.append(self._open(now, cond, group, st, values.get(group)))
        return events

    # -- incidents -----------------------------------------------------------------------

    def _open(self, now: datetime, cond: ConditionSpec, group: GroupKey, st: _GroupState, value: float | None) -> Event:
        digest = hashlib.sha256(f"{cond.name}|{group}|{now.isoformat()}".encode()).hexdigest()[:12]
        record = IncidentRecord(
            incident_id=f"0.{digest}",
            condition=cond.name,
            group=group,
            started_at=now,
            opened_value=value,
        )
        st.open = record
        self.incidents.append(record)
        return Event(now, "open", record, self.notification(record, cond))

    def _close(self, now: datetime, cond: ConditionSpec, st: _GroupState, how: str) -> Event:
        record = st.open
        assert record is not None
        record.ended_at, record.closed_by = now, how
        record.closed_value = st.last_value if how == "recovered" else None
        st.open = None
        st.since = None  # an auto-closed group must be met for a whole duration again to reopen
        return Event(now, "closed", record, self.notification(record, cond))

    def condition(self, name: str) -> ConditionSpec:
        return next(c for c in self.policy.conditions if c.name == name)

    def notification(self, record: IncidentRecord, cond: ConditionSpec | None = None) -> dict[str, Any]:
        """The schema-1.2 document Monitoring publishes for ``record``'s current state (wire doc 01)."""
        cond = cond or self.condition(record.condition)
        resource_labels = {"project_id": self.project, **_labels_by_prefix(record.group, "resource")}
        metric_labels = _labels_by_prefix(record.group, "metric")
        state = "closed" if record.ended_at is not None else "open"
        value = record.opened_value if state == "open" else record.closed_value
        observed = "" if value is None else f"{value:.3f}"
        threshold = f"{cond.threshold:g}"
        subject = cond.display_name or self.policy.display_name
        if state == "open":
            summary = (
                f"{subject} for {resource_labels.get('revision_name', self.project)} is "
                f"{_SYMBOL[cond.comparison]} the threshold of {threshold} with a value of {observed or 'n/a'}."
            )
        else:
            summary = f"{subject} for {resource_labels.get('revision_name', self.project)} returned to normal" + (
                f" with a value of {observed}." if observed else "."
            )
        doc = self.policy.documentation
        documentation: dict[str, Any] = {
            "content": str(doc.get("content", "")),
            "mime_type": str(doc.get("mimeType", doc.get("mime_type", "text/markdown"))),
        }
        if doc.get("subject"):
            documentation["subject"] = str(doc["subject"])
        incident: dict[str, Any] = {
            "incident_id": record.incident_id,
            "scoping_project_id": self.project,
            "scoping_project_number": self.project_number,
            "url": f"https://console.cloud.google.com/monitoring/alerting/incidents/{record.incident_id}?project={self.project}",
            "started_at": _epoch(record.started_at),
            "ended_at": _epoch(record.ended_at) if record.ended_at is not None else None,
            "state": state,
            "summary": summary,
            "observed_value": observed,
            "threshold_value": threshold,
            "resource": {"type": "cloud_run_revision", "labels": resource_labels},
            "resource_type_display_name": "Cloud Run Revision",
            "resource_id": "",
            "resource_name": f"{self.project} Cloud Run Revision labels {json.dumps(resource_labels, sort_keys=True)}",
            "metric": {"type": cond.metric_type, "displayName": cond.metric_type, "labels": metric_labels},
            "metadata": {"system_labels": {}, "user_labels": {}},
            "policy_name": self.policy.display_name,
            "documentation": documentation,
            "condition": dict(cond.raw),
            "condition_name": cond.display_name,
        }
        if self.policy.user_labels:
            incident["policy_user_labels"] = dict(self.policy.user_labels)
        if self.policy.severity:
            incident["severity"] = self.policy.severity
        return {"incident": incident, "version": "1.2"}


def evaluate_feed(evaluator: PolicyEvaluator, feed: MinuteFeed, now: datetime) -> list[Event]:
    """One evaluation of every condition from what ``feed`` holds at ``now``; prunes the feed."""
    values = {c.name: feed.values(c, now) for c in evaluator.policy.conditions}
    events = evaluator.evaluate(now, values)
    feed.prune(now)
    return events
