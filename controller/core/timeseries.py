"""ListTimeSeries in plain values: the requests for each signal, and their answers turned into numbers. Pure.

One request per signal for one service and one window — never one per revision:

* ``error_rate``: ``run.googleapis.com/request_count``, ALIGN_DELTA + REDUCE_SUM grouped by
  ``resource.label.revision_name`` and ``metric.label.response_code_class`` → requests (every
  class) and errors ("5xx");
* ``latency``: ``run.googleapis.com/request_latencies``, ALIGN_DELTA + REDUCE_SUM grouped by
  revision (the reducer merges distributions) → p50/p95/p99 of the merged histogram;
* ``health``: ``run.googleapis.com/container/completed_probe_attempt_count`` with
  ``metric.label.is_healthy = false``, ALIGN_DELTA + REDUCE_SUM grouped by revision → failed
  probe attempts.

Every filter is scoped to the service (``service_name`` and ``location``); the request's ``name`` is
``projects/<project>``. A :class:`Query` is plain values: :mod:`controller.adapters.monitoring`
turns it into the proto. The readers (:func:`request_counts_by_revision`,
:func:`latency_by_revision`, :func:`count_by_revision`, :func:`histogram_from_distribution`) are
duck-typed on the raw protobuf messages (``WhichOneof``, labels, points), so this module imports no
Google library; every point returned is summed, since a window may straddle two alignment buckets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.core.evidence import ALL_SIGNALS, Window, alignment_period
from controller.core.state import ServiceRef
from controller.core.stats import (
    BucketOptions,
    ExplicitBuckets,
    ExponentialBuckets,
    Histogram,
    LinearBuckets,
)

__all__ = [
    "PROBE_ATTEMPTS",
    "REQUEST_COUNT",
    "REQUEST_LATENCIES",
    "Query",
    "count_by_revision",
    "histogram_from_distribution",
    "latency_by_revision",
    "queries",
    "request_counts_by_revision",
    "service_filter",
]

REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"
PROBE_ATTEMPTS = "run.googleapis.com/container/completed_probe_attempt_count"
_RESOURCE_TYPE = "cloud_run_revision"
_REVISION = "resource.label.revision_name"
_CLASS = "metric.label.response_code_class"

# --------------------------------------------------------------------------------------------
# Pure helpers: queries
# --------------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    """A filter string literal (double quotes; backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def service_filter(metric_type: str, ref: ServiceRef, extra: Iterable[str] = ()) -> str:
    """``metric.type = "…" AND resource.type = "cloud_run_revision" AND <service scope> [AND extra…]``."""
    parts = [
        f"metric.type = {_quote(metric_type)}",
        f"resource.type = {_quote(_RESOURCE_TYPE)}",
        f"resource.label.service_name = {_quote(ref.service)}",
        f"resource.label.location = {_quote(ref.region)}",
        *extra,
    ]
    return " AND ".join(parts)


@dataclass(frozen=True)
class Query:
    """One ListTimeSeries request, in plain values (the I/O layer turns it into the proto)."""

    signal: str
    name: str
    filter: str
    start: datetime
    end: datetime
    alignment_period: timedelta
    aligner: str
    reducer: str
    group_by: tuple[str, ...]


def queries(ref: ServiceRef, window: Window, signals: Iterable[str]) -> list[Query]:
    """The requests for ``signals``, one per signal, in a fixed order (error_rate, latency, health)."""
    wanted = frozenset(signals)
    unknown = wanted - ALL_SIGNALS
    if unknown:
        raise ValueError(f"unknown signals {sorted(unknown)}; known: {sorted(ALL_SIGNALS)}")
    period = alignment_period(window)

    def query(signal: str, metric_type: str, group_by: tuple[str, ...], extra: tuple[str, ...] = ()) -> Query:
        return Query(
            signal=signal,
            name=f"projects/{ref.project}",
            filter=service_filter(metric_type, ref, extra),
            start=window.start,
            end=window.end,
            alignment_period=period,
            aligner="ALIGN_DELTA",
            reducer="REDUCE_SUM",
            group_by=group_by,
        )

    out: list[Query] = []
    if "error_rate" in wanted:
        out.append(query("error_rate", REQUEST_COUNT, (_REVISION, _CLASS)))
    if "latency" in wanted:
        # ALIGN_DELTA keeps distributions and REDUCE_SUM merges them per revision: the exact
        # histogram of every request, from which any percentile can be read client-side.
        out.append(query("latency", REQUEST_LATENCIES, (_REVISION,)))
    if "health" in wanted:
        # is_healthy is a BOOL label: compared unquoted, as Monitoring filters on bools are.
        out.append(query("health", PROBE_ATTEMPTS, (_REVISION,), ("metric.label.is_healthy = false",)))
    return out


# --------------------------------------------------------------------------------------------
# Pure helpers: protos → numbers (duck-typed on the raw protobuf messages; no imports needed)
# --------------------------------------------------------------------------------------------


def histogram_from_distribution(dist: Any) -> Histogram | None:
    """A ``google.api.Distribution`` (raw protobuf) → :class:`~controller.stats.Histogram`.

    Returns None for an empty distribution (count 0), which Monitoring may send without bucket
    options. Raises ValueError for a non-empty one without bucket options (no percentile can be
    read from it). The emulator keeps its own converter: production code does not import it.
    """
    which = dist.bucket_options.WhichOneof("options")
    if which is None:
        if int(dist.count) == 0:
            return None
        raise ValueError(f"a distribution of {dist.count} values has no bucket options")
    options: BucketOptions
    if which == "linear_buckets":
        lb = dist.bucket_options.linear_buckets
        options = LinearBuckets(int(lb.num_finite_buckets), float(lb.width), float(lb.offset))
    elif which == "exponential_buckets":
        eb = dist.bucket_options.exponential_buckets
        options = ExponentialBuckets(int(eb.num_finite_buckets), float(eb.growth_factor), float(eb.scale))
    else:
        options = ExplicitBuckets(tuple(float(b) for b in dist.bucket_options.explicit_buckets.bounds))
    hist = Histogram(
        options=options,
        counts=tuple(int(c) for c in dist.bucket_counts),
        mean=float(dist.mean),
        sum_of_squared_deviation=float(dist.sum_of_squared_deviation),
    )
    return hist if hist.count else None


def _int_value(value: Any) -> int:
    """An INT64 (or, after some reducers, DOUBLE) point value as an int; other kinds are errors."""
    which = value.WhichOneof("value")
    if which == "int64_value":
        return int(value.int64_value)
    if which == "double_value":
        return round(float(value.double_value))
    raise ValueError(f"expected a count, got a {which} value")


def count_by_revision(series: Iterable[Any]) -> dict[str, int]:
    """Sum every point of every series per ``revision_name`` (the window may straddle buckets)."""
    out: dict[str, int] = {}
    for ts in series:
        revision = ts.resource.labels.get("revision_name", "")
        total = sum(_int_value(p.value) for p in ts.points)
        out[revision] = out.get(revision, 0) + total
    return out


def request_counts_by_revision(series: Iterable[Any]) -> dict[str, tuple[int, int]]:
    """``request_count`` series → ``{revision: (requests, errors)}``: all classes, and "5xx"."""
    out: dict[str, tuple[int, int]] = {}
    for ts in series:
        revision = ts.resource.labels.get("revision_name", "")
        total = sum(_int_value(p.value) for p in ts.points)
        is_error = ts.metric.labels.get("response_code_class", "") == "5xx"
        requests, errors = out.get(revision, (0, 0))
        out[revision] = (requests + total, errors + (total if is_error else 0))
    return out


def latency_by_revision(series: Iterable[Any]) -> dict[str, Histogram]:
    """``request_latencies`` series → one merged histogram per revision (every point, every series)."""
    out: dict[str, Histogram] = {}
    for ts in series:
        revision = ts.resource.labels.get("revision_name", "")
        for p in ts.points:
            if p.value.WhichOneof("value") != "distribution_value":
                raise ValueError(f"expected a distribution for {revision}, got {p.value.WhichOneof('value')}")
            hist = histogram_from_distribution(p.value.distribution_value)
            if hist is None:
                continue
            previous = out.get(revision)
            # merge() refuses different layouts rather than re-binning: that would invent where
            # values lay inside a bucket.
            out[revision] = hist if previous is None else previous.merge(hist)
    return out
