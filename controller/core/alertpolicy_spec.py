"""AlertPolicy JSON, parsed into the typed specs the evaluator runs (the supported subset). Pure.

``parse_policy`` reads an AlertPolicy in the API's JSON form (as ``alert-policies`` generates
it) into an ``AlertPolicySpec`` of ``ConditionSpec`` (filters, aggregations, comparison,
threshold, duration, trigger, missing-data handling); anything outside the subset
``controller.core.evaluator`` models raises ``UnsupportedPolicy`` naming the construct.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, Literal

from controller.core.errors import InvalidInput

__all__ = [
    "DEFAULT_AUTO_CLOSE",
    "EVALUATION_PERIOD",
    "Aggregation",
    "AlertPolicySpec",
    "ConditionSpec",
    "MissingData",
    "UnsupportedPolicy",
    "parse_duration_text",
    "parse_policy",
]

EVALUATION_PERIOD: Final = timedelta(seconds=60)
DEFAULT_AUTO_CLOSE: Final = timedelta(days=7)

MissingData = Literal["INACTIVE", "ACTIVE", "NO_OP"]

_COMPARISONS: Final = {
    "COMPARISON_GT": lambda v, t: v > t,
    "COMPARISON_GE": lambda v, t: v >= t,
    "COMPARISON_LT": lambda v, t: v < t,
    "COMPARISON_LE": lambda v, t: v <= t,
    "COMPARISON_EQ": lambda v, t: v == t,
    "COMPARISON_NE": lambda v, t: v != t,
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
