"""The evaluator's Monitoring reader: a condition's per-minute deltas, per group, from ListTimeSeries.

For each side of a ``conditionThreshold`` (``filter``, and ``denominatorFilter`` for a ratio) this
asks Cloud Monitoring exactly that filter with the condition's ``groupByFields`` and a 60 s
``ALIGN_DELTA`` + ``REDUCE_SUM`` aggregation (sums for counts, merged distributions for
latencies), and yields ``(group, minute end, value)``; ``controller.evaluator`` rebuilds each
evaluation's look-back from those minutes (see its docstring). Paging is followed (bounded), and
the caller chooses the interval, so a week can be read a day at a time in bounded memory.

Works with any ``MetricServiceClient`` (Google with ADC, or the emulator through
``controller.emulator.monitoring.insecure_client``); the client library is imported lazily.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Final

from controller.core.alertpolicy_spec import ConditionSpec
from controller.core.series_values import GroupKey, MinuteValue, group_key
from controller.core.timeseries import histogram_from_distribution

__all__ = ["MAX_PAGES", "MINUTE", "read_minutes"]

MINUTE: Final = timedelta(seconds=60)
MAX_PAGES: Final = 1000


def _group(fields: tuple[str, ...], ts: Any) -> GroupKey:
    labels: dict[str, str] = {}
    for f in fields:
        scope, _, name = f.partition(".")
        name = name.removeprefix("labels.").removeprefix("label.")
        source = ts.resource.labels if scope == "resource" else ts.metric.labels
        if name in source:
            labels[f"{scope}.label.{name}"] = str(source[name])
    return group_key(labels)


def _value(point: Any) -> MinuteValue | None:
    which = point.value.WhichOneof("value")
    if which == "distribution_value":
        return histogram_from_distribution(point.value.distribution_value)
    if which == "int64_value":
        return float(point.value.int64_value)
    if which == "double_value":
        return float(point.value.double_value)
    if which == "bool_value":
        return 1.0 if point.value.bool_value else 0.0
    return None


def read_minutes(
    client: Any,
    project: str,
    cond: ConditionSpec,
    side: str,
    start: datetime,
    end: datetime,
    *,
    page_size: int = 0,
    timeout: float = 30.0,
) -> Iterator[tuple[GroupKey, datetime, MinuteValue]]:
    """Every minute of ``cond``'s ``side`` ("num"/"den") ending in ``(start, end]``, per group."""
    from google.cloud import monitoring_v3

    agg = cond.aggregation if side == "num" else cond.denominator_aggregation
    text = cond.filter if side == "num" else cond.denominator_filter
    if agg is None or not text:
        raise ValueError(f"condition {cond.name} has no {side} side")
    request = monitoring_v3.ListTimeSeriesRequest(
        name=f"projects/{project}",
        filter=text,
        interval=monitoring_v3.TimeInterval(start_time=start, end_time=end),
        aggregation=monitoring_v3.Aggregation(
            alignment_period=MINUTE,
            per_series_aligner=monitoring_v3.Aggregation.Aligner.ALIGN_DELTA,
            cross_series_reducer=monitoring_v3.Aggregation.Reducer.REDUCE_SUM,
            group_by_fields=list(agg.group_by),
        ),
        view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
        page_size=page_size,
    )
    for _page in range(MAX_PAGES):
        response = client.list_time_series(request=request, timeout=timeout)
        for raw in response.time_series:
            ts = monitoring_v3.TimeSeries.pb(raw)
            group = _group(agg.group_by, ts)
            for point in ts.points:
                value = _value(point)
                moment = point.interval.end_time.ToDatetime(tzinfo=start.tzinfo)
                if value is not None and start < moment <= end:
                    yield group, moment, value
        token = response.next_page_token
        if not token:
            return
        request.page_token = token
    raise RuntimeError(f"ListTimeSeries for {cond.name} did not finish within {MAX_PAGES} pages")
