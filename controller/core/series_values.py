"""What a condition's groups are worth at one evaluation: per-minute deltas over a look-back. Pure.

Cloud Monitoring's per-minute deltas per group (``MinuteValue``: a count or a latency
``Histogram``), the group identity (``group_key``), alignment and reduction over the
``alignmentPeriod`` (``aggregate``), ratios with Google's missing-data rule (``ratio``), and
``MinuteFeed``, which holds only as many minutes as the longest look-back needs. The semantics
are described in ``controller.core.evaluator``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from controller.core.alertpolicy_spec import Aggregation, ConditionSpec
from controller.core.stats import Histogram, merge_all

__all__ = [
    "GroupKey",
    "MinuteFeed",
    "MinuteValue",
    "aggregate",
    "condition_values",
    "group_key",
    "minutes_in",
    "ratio",
]

MinuteValue = float | Histogram
GroupKey = tuple[tuple[str, str], ...]


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
