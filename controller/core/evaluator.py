"""A Cloud Monitoring alert-policy evaluator for ``conditionThreshold`` conditions, as a pure core.

Given the AlertPolicy JSON that ``python -m controller alert-policies`` generates (or any policy in
the supported subset) and, per evaluation time, the per-minute deltas Cloud Monitoring would hold
for each of the condition's groups, :class:`PolicyEvaluator` decides when incidents open and close,
and emits them as schema-1.2 notifications (wire doc 01), which ``controller.incident`` and
``controller.alert`` parse like Google's. The lab (``controller.lab``) and the backtest
(``controller.backtest``) drive it; reading the minutes from Monitoring is their job.

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
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from controller.core.errors import InvalidInput
from controller.core.stats import Histogram, merge_all

__all__ = [
    "DEFAULT_AUTO_CLOSE",
    "EVALUATION_PERIOD",
    "AlertPolicySpec",
    "ConditionSpec",
    "Event",
    "GroupKey",
    "IncidentRecord",
    "MinuteFeed",
    "MinuteValue",
    "PolicyEvaluator",
    "UnsupportedPolicy",
    "aggregate",
    "condition_values",
    "evaluate_feed",
    "group_key",
    "minutes_in",
    "parse_duration_text",
    "parse_policy",
    "ratio",
]

EVALUATION_PERIOD: Final = timedelta(seconds=60)
DEFAULT_AUTO_CLOSE: Final = timedelta(days=7)

MinuteValue = float | Histogram
GroupKey = tuple[tuple[str, str], ...]
MissingData = Literal["INACTIVE", "ACTIVE", "NO_OP"]

_COMPARISONS: Final = {
    "COMPARISON_GT": lambda v, t: v > t,
    "COMPARISON_GE": lambda v, t: v >= t,
    "COMPARISON_LT": lambda v, t: v < t,
    "COMPARISON_LE": lambda v, t: v <= t,
    "COMPARISON_EQ": lambda v, t: v == t,
    "COMPARISON_NE": lambda v, t: v != t,
}
_SYMBOL: Final = {
    "COMPARISON_GT": "above",
    "COMPARISON_GE": "at or above",
    "COMPARISON_LT": "below",
    "COMPARISON_LE": "at or below",
    "COMPARISON_EQ": "equal to",
    "COMPARISON_NE": "not equal to",
}
_ALIGNERS: Final = frozenset({"ALIGN_DELTA", "ALIGN_RATE", "ALIGN_SUM"})
_PERCENTILE = re.compile(r"^REDUCE_PERCENTILE_(\d\d)$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")
_METRIC_TYPE = re.compile(r'metric\.type\s*=\s*"([^"]+)"')


class UnsupportedPolicy(InvalidInput):
    """An alert policy outside the modelled subset (the message names the construct)."""


def parse_duration_text(text: object, where: str) -> timedelta:
    """``"300s"`` (the API's JSON form of a Duration) → 5 minutes."""
    if not isinstance(text, str) or not (m := _DURATION.match(text.strip())):
        raise UnsupportedPolicy(f'{where}: {text!r} is not a duration like "300s"')
    return timedelta(seconds=float(m.group(1)))


@dataclass(frozen=True)
class Aggregation:
    """One ``aggregations[0]`` entry: alignment period, aligner, reducer, group-by fields."""

    period: timedelta
    aligner: str
    reducer: str
    group_by: tuple[str, ...]

    @property
    def percentile(self) -> float | None:
        m = _PERCENTILE.match(self.reducer)
        return float(m.group(1)) if m else None


def _aggregation(raw: object, where: str) -> Aggregation:
    items = raw if isinstance(raw, list) else []
    if len(items) != 1 or not isinstance(items[0], Mapping):
        raise UnsupportedPolicy(f"{where}: exactly one aggregation is supported")
    a = items[0]
    aligner = str(a.get("perSeriesAligner", ""))
    reducer = str(a.get("crossSeriesReducer", "REDUCE_NONE"))
    if aligner not in _ALIGNERS:
        raise UnsupportedPolicy(f"{where}: perSeriesAligner {aligner or '(none)'} (supported: {sorted(_ALIGNERS)})")
    if reducer != "REDUCE_SUM" and not _PERCENTILE.match(reducer):
        raise UnsupportedPolicy(f"{where}: crossSeriesReducer {reducer} (supported: REDUCE_SUM, REDUCE_PERCENTILE_nn)")
    period = parse_duration_text(a.get("alignmentPeriod", "60s"), f"{where}.alignmentPeriod")
    if period < EVALUATION_PERIOD or period.total_seconds() % 60:
        raise UnsupportedPolicy(f"{where}.alignmentPeriod: whole minutes of at least 60s are supported")
    group_by = tuple(str(g) for g in a.get("groupByFields", []) or [])
    return Aggregation(period, aligner, reducer, group_by)


@dataclass(frozen=True)
class ConditionSpec:
    """One ``conditionThreshold`` condition, parsed and checked."""

    name: str
    display_name: str
    filter: str
    aggregation: Aggregation
    comparison: str
    threshold: float
    duration: timedelta
    trigger_count: int | None
    trigger_percent: float | None
    missing_data: MissingData
    denominator_filter: str = ""
    denominator_aggregation: Aggregation | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_ratio(self) -> bool:
        return bool(self.denominator_filter)

    @property
    def metric_type(self) -> str:
        m = _METRIC_TYPE.search(self.filter)
        return m.group(1) if m else ""

    @property
    def look_back(self) -> timedelta:
        """How many minutes of deltas one evaluation needs (numerator and denominator)."""
        periods = [self.aggregation.period]
        if self.denominator_aggregation is not None:
            periods.append(self.denominator_aggregation.period)
        return max(periods)

    def met(self, value: float) -> bool:
        return bool(_COMPARISONS[self.comparison](value, self.threshold))


@dataclass(frozen=True)
class AlertPolicySpec:
    display_name: str
    conditions: tuple[ConditionSpec, ...]
    user_labels: Mapping[str, str]
    auto_close: timedelta
    documentation: Mapping[str, Any]
    severity: str = ""
    name: str = ""


def _condition(raw: Mapping[str, Any], index: int, policy_name: str) -> ConditionSpec:
    where = f"conditions[{index}]"
    ct = raw.get("conditionThreshold")
    if not isinstance(ct, Mapping):
        kinds = [k for k in raw if k.startswith("condition")]
        raise UnsupportedPolicy(f"{where}: only conditionThreshold is supported (got {kinds or 'none'})")
    comparison = str(ct.get("comparison", ""))
    if comparison not in _COMPARISONS:
        raise UnsupportedPolicy(f"{where}.comparison: {comparison or '(none)'}")
    threshold = ct.get("thresholdValue", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise UnsupportedPolicy(f"{where}.thresholdValue: {threshold!r} is not a number")
    trigger = ct.get("trigger") or {}
    count = trigger.get("count") if isinstance(trigger, Mapping) else None
    percent = trigger.get("percent") if isinstance(trigger, Mapping) else None
    if count is None and percent is None:
        count = 1
    missing = str(raw.get("evaluationMissingData") or ct.get("evaluationMissingData") or "")
    missing = missing.removeprefix("EVALUATION_MISSING_DATA_") or "NO_OP"
    if missing == "UNSPECIFIED":
        missing = "NO_OP"  # documented as equivalent
    if missing not in ("INACTIVE", "ACTIVE", "NO_OP"):
        raise UnsupportedPolicy(f"{where}.evaluationMissingData: {missing}")
    denominator = str(ct.get("denominatorFilter", "") or "")
    filter_ = str(ct.get("filter", "") or "")
    if not filter_:
        raise UnsupportedPolicy(f"{where}.conditionThreshold.filter: required")
    return ConditionSpec(
        name=str(raw.get("name") or f"{policy_name}/conditions/{index}"),
        display_name=str(raw.get("displayName", "")),
        filter=filter_,
        aggregation=_aggregation(ct.get("aggregations"), f"{where}.aggregations"),
        comparison=comparison,
        threshold=float(threshold),
        duration=parse_duration_text(ct.get("duration", "0s"), f"{where}.duration"),
        trigger_count=int(count) if count is not None else None,
        trigger_percent=float(percent) if percent is not None else None,
        missing_data=missing,  # type: ignore[arg-type]
        denominator_filter=denominator,
        denominator_aggregation=(
            _aggregation(ct.get("denominatorAggregations"), f"{where}.denominatorAggregations") if denominator else None
        ),
        raw=dict(raw),
    )


def parse_policy(body: Mapping[str, Any]) -> AlertPolicySpec:
    """The evaluable part of an AlertPolicy (API JSON, camelCase). Raises :class:`UnsupportedPolicy`."""
    combiner = str(body.get("combiner", "OR"))
    if combiner != "OR":
        raise UnsupportedPolicy(f"combiner {combiner}: only OR is supported")
    raw_conditions = body.get("conditions")
    if not isinstance(raw_conditions, list) or not raw_conditions:
        raise UnsupportedPolicy("conditions: at least one condition is required")
    name = str(body.get("name", ""))
    strategy = body.get("alertStrategy") or {}
    auto_close = (
        parse_duration_text(strategy["autoClose"], "alertStrategy.autoClose")
        if isinstance(strategy, Mapping) and "autoClose" in strategy
        else DEFAULT_AUTO_CLOSE
    )
    labels = body.get("userLabels") or {}
    return AlertPolicySpec(
        display_name=str(body.get("displayName", "")),
        conditions=tuple(_condition(c, i, name or "policy") for i, c in enumerate(raw_conditions)),
        user_labels={str(k): str(v) for k, v in labels.items()},
        auto_close=auto_close,
        documentation=dict(body.get("documentation") or {}),
        severity=str(body.get("severity", "")),
        name=name,
    )


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def group_key(labels: Mapping[str, str]) -> GroupKey:
    """A group's identity: its labels after aggregation, sorted (``resource.x``/``metric.x`` keys)."""
    return tuple(sorted((str(k), str(v)) for k, v in labels.items()))


def aggregate(agg: Aggregation, minutes: Sequence[MinuteValue]) -> float | None:
    """One group's aligned+reduced value over its look-back, from the per-minute deltas in it.

    None when there is nothing to aggregate (no data), or the percentile of an empty distribution.
    """
    if not minutes:
        return None
    if agg.percentile is not None:
        hists = [m for m in minutes if isinstance(m, Histogram)]
        merged = merge_all(hists) if hists else None
        return merged.percentile(agg.percentile) if merged is not None and merged.count else None
    total = math.fsum(float(m.count) if isinstance(m, Histogram) else float(m) for m in minutes)
    if agg.aligner == "ALIGN_RATE":
        return total / agg.period.total_seconds()
    return total


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


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """A ratio condition's value: None (no data) for a zero or absent denominator, else num/den
    with an absent numerator counting as 0 (a revision with no 5xx has no 5xx series)."""
    if denominator is None or denominator == 0:
        return None
    return (numerator or 0.0) / denominator


def condition_values(
    cond: ConditionSpec,
    numerator: Mapping[GroupKey, Sequence[MinuteValue]],
    denominator: Mapping[GroupKey, Sequence[MinuteValue]] | None = None,
) -> dict[GroupKey, float | None]:
    """Each group's value at one evaluation, from the per-minute deltas inside its look-back(s)."""
    if not cond.is_ratio:
        return {g: aggregate(cond.aggregation, mins) for g, mins in numerator.items()}
    assert cond.denominator_aggregation is not None
    den = denominator or {}
    out: dict[GroupKey, float | None] = {}
    for group in set(numerator) | set(den):
        out[group] = ratio(
            aggregate(cond.aggregation, numerator.get(group, ())),
            aggregate(cond.denominator_aggregation, den.get(group, ())),
        )
    return out


def minutes_in(period: timedelta, now: datetime, series: Iterable[tuple[datetime, MinuteValue]]) -> list[MinuteValue]:
    """The deltas of one group whose minute ends inside the look-back ``(now - period, now]``."""
    start = now - period
    return [v for end, v in series if start < end <= now]


class MinuteFeed:
    """Per-minute deltas per (condition, side, group), kept only as long as a look-back needs them.

    ``side`` is ``"num"`` (the condition's ``filter``) or ``"den"`` (its ``denominatorFilter``).
    Memory is bounded by ``keep`` (the longest look-back) whatever the length of the history fed.
    """

    def __init__(self, keep: timedelta) -> None:
        self.keep = keep
        self._data: dict[tuple[str, str], dict[GroupKey, dict[datetime, MinuteValue]]] = {}

    def add(self, condition: str, side: str, group: GroupKey, end: datetime, value: MinuteValue) -> None:
        self._data.setdefault((condition, side), {}).setdefault(group, {})[end] = value

    def window(self, condition: str, side: str, now: datetime, period: timedelta) -> dict[GroupKey, list[MinuteValue]]:
        groups = self._data.get((condition, side), {})
        out: dict[GroupKey, list[MinuteValue]] = {}
        for group, minutes in groups.items():
            found = minutes_in(period, now, minutes.items())
            if found:
                out[group] = found
        return out

    def prune(self, now: datetime) -> None:
        horizon = now - self.keep
        for groups in self._data.values():
            for group in list(groups):
                minutes = groups[group]
                for end in [e for e in minutes if e <= horizon]:
                    del minutes[end]
                if not minutes:
                    del groups[group]

    def values(self, cond: ConditionSpec, now: datetime) -> dict[GroupKey, float | None]:
        """Each group's value of ``cond`` at the evaluation ``now``."""
        num = self.window(cond.name, "num", now, cond.aggregation.period)
        den = None
        if cond.denominator_aggregation is not None:
            den = self.window(cond.name, "den", now, cond.denominator_aggregation.period)
        return condition_values(cond, num, den)


def evaluate_feed(evaluator: PolicyEvaluator, feed: MinuteFeed, now: datetime) -> list[Event]:
    """One evaluation of every condition from what ``feed`` holds at ``now``; prunes the feed."""
    values = {c.name: feed.values(c, now) for c in evaluator.policy.conditions}
    events = evaluator.evaluate(now, values)
    feed.prune(now)
    return events
