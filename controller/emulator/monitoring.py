"""A local Cloud Monitoring ``MetricService`` over plaintext gRPC, for the real client library.

google-cloud-monitoring speaks gRPC only (no REST transport), so this emulator serves the gRPC
service ``google.monitoring.v3.MetricService`` with generic handlers and the library's own
proto types; the real ``MetricServiceClient`` talks to it through :func:`insecure_client`.

Implemented RPCs (others answer UNIMPLEMENTED, as gRPC does for unknown methods):

* ``CreateTimeSeries`` — stores points, with the checks the real API makes that a writer is most
  likely to trip over: exactly one point per series, points in order, DELTA intervals that do not
  overlap, GAUGE start == end, one metric kind and value type per metric type, ≤ 200 series.
* ``ListTimeSeries`` — filter, interval, aggregation (aligner, reducer, groupByFields), view,
  paging; see :class:`MonitoringEmulator` for the exact semantics and the supported subset.
  Anything outside the subset fails loudly (INVALID_ARGUMENT or UNIMPLEMENTED naming the
  construct) rather than returning an answer the real service would not give.

Simulators can skip gRPC and call :meth:`MonitoringEmulator.write_point` directly. Tests can count
calls (:attr:`MonitoringEmulator.calls`), inject outages (:meth:`MonitoringEmulator.fail_next`, or
every call while :attr:`MonitoringEmulator.unavailable` is set) and slowness
(:meth:`MonitoringEmulator.delay_next`, or every call by :attr:`MonitoringEmulator.latency` seconds).

Ingestion lag: Cloud Run's metrics are "sampled every 60 seconds; after sampling, data is not
visible for up to 180 seconds" (Cloud Monitoring metrics list, run.googleapis.com; "Metric data
latency", https://cloud.google.com/monitoring/api/v3/latency-n-retention). A point becomes visible
to ListTimeSeries only once the emulator's clock has passed its end time by ``ingestion_lag``
(default :data:`DEFAULT_INGESTION_LAG`, the documented worst case; 0 turns the lag off). The clock
is the wall clock unless a test injects one; apart from that, every point carries its own
timestamps and queries say which interval they want.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import grpc
from google.api import distribution_pb2, metric_pb2
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcTransport,
)
from google.protobuf import empty_pb2

from controller.core.stats import (
    BucketOptions,
    ExplicitBuckets,
    ExponentialBuckets,
    Histogram,
    LinearBuckets,
    merge_all,
)
from controller.emulator.monitoring_filter import (
    _SELECTOR,
    EmulatorError,
    ParsedFilter,
    _invalid,
    _unimplemented,
    parse_filter,
)

__all__ = [
    "CLOUD_RUN_LATENCY_BUCKETS",
    "DEFAULT_INGESTION_LAG",
    "KNOWN_METRICS",
    "EmulatorError",
    "MonitoringEmulator",
    "ParsedFilter",
    "histogram_from_proto",
    "histogram_to_proto",
    "insecure_client",
    "parse_filter",
]

_SERVICE = "google.monitoring.v3.MetricService"

# Cloud Run's request_latencies layout as reported by the service: exponential, 100 finite
# buckets, growth factor 1.4, scale 1 ms (bucket 1 is [1, 1.4) ms; the last finite one ends at
# 1.4^100 ms, so every real latency lands in a finite bucket). Each bucket spans 40 % of its lower
# bound, which bounds how far a percentile read from these buckets can be from the exact one.
CLOUD_RUN_LATENCY_BUCKETS = ExponentialBuckets(num_finite_buckets=100, growth_factor=1.4, scale=1.0)

# Kind, value type and unit of the metrics the controller reads (wire doc 04); used when a writer
# does not say. Unknown metric types default to GAUGE (start == end) or DELTA, by the interval.
KNOWN_METRICS: dict[str, tuple[str, str, str]] = {
    "run.googleapis.com/request_count": ("DELTA", "INT64", "1"),
    "run.googleapis.com/request_latencies": ("DELTA", "DISTRIBUTION", "ms"),
    "run.googleapis.com/container/instance_count": ("GAUGE", "INT64", "1"),
    "run.googleapis.com/container/startup_latencies": ("DELTA", "DISTRIBUTION", "ms"),
    "run.googleapis.com/container/completed_probe_attempt_count": ("DELTA", "INT64", "1"),
    "run.googleapis.com/container/completed_probe_count": ("DELTA", "INT64", "1"),
    "run.googleapis.com/container/billable_instance_time": ("DELTA", "DOUBLE", "s"),
    "monitoring.googleapis.com/uptime_check/check_passed": ("GAUGE", "BOOL", ""),
    "monitoring.googleapis.com/uptime_check/request_latency": ("GAUGE", "DOUBLE", "ms"),
}

DEFAULT_INGESTION_LAG = timedelta(seconds=180)
"""Cloud Run's documented worst case: "After sampling, data is not visible for up to 180 seconds"."""

_MAX_SERIES_PER_WRITE = 200  # the real API's limit per CreateTimeSeries request
_MIN_ALIGNMENT_NS = 60 * 1_000_000_000
_NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Value = int | float | bool | Histogram
_Kind = metric_pb2.MetricDescriptor.MetricKind
_VType = metric_pb2.MetricDescriptor.ValueType


# --------------------------------------------------------------------------------------------
# Proto <-> stats conversion
# --------------------------------------------------------------------------------------------


def histogram_from_proto(dist: distribution_pb2.Distribution) -> Histogram:
    """``google.api.Distribution`` → :class:`~controller.stats.Histogram` (mean and SSD kept)."""
    which = dist.bucket_options.WhichOneof("options")
    options: BucketOptions
    if which == "linear_buckets":
        lb = dist.bucket_options.linear_buckets
        options = LinearBuckets(lb.num_finite_buckets, lb.width, lb.offset)
    elif which == "exponential_buckets":
        eb = dist.bucket_options.exponential_buckets
        options = ExponentialBuckets(eb.num_finite_buckets, eb.growth_factor, eb.scale)
    elif which == "explicit_buckets":
        options = ExplicitBuckets(tuple(dist.bucket_options.explicit_buckets.bounds))
    else:
        raise ValueError("distribution without bucket options")
    return Histogram(
        options=options,
        counts=tuple(dist.bucket_counts),
        mean=dist.mean,
        sum_of_squared_deviation=dist.sum_of_squared_deviation,
    )


def histogram_to_proto(hist: Histogram) -> distribution_pb2.Distribution:
    """:class:`~controller.stats.Histogram` → ``google.api.Distribution`` (unknown mean → 0)."""
    dist = distribution_pb2.Distribution(
        count=hist.count,
        mean=hist.mean or 0.0,
        sum_of_squared_deviation=hist.sum_of_squared_deviation or 0.0,
        bucket_counts=list(hist.counts),
    )
    opts = hist.options
    if isinstance(opts, LinearBuckets):
        dist.bucket_options.linear_buckets.num_finite_buckets = opts.num_finite_buckets
        dist.bucket_options.linear_buckets.width = opts.width
        dist.bucket_options.linear_buckets.offset = opts.offset
    elif isinstance(opts, ExponentialBuckets):
        dist.bucket_options.exponential_buckets.num_finite_buckets = opts.num_finite_buckets
        dist.bucket_options.exponential_buckets.growth_factor = opts.growth_factor
        dist.bucket_options.exponential_buckets.scale = opts.scale
    else:
        dist.bucket_options.explicit_buckets.bounds.extend(opts.bounds)
    return dist


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Point:
    start_ns: int
    end_ns: int
    value: Value


@dataclass
class _Series:
    project: str
    metric_type: str
    metric_labels: dict[str, str]
    resource_type: str
    resource_labels: dict[str, str]
    kind: str  # GAUGE | DELTA
    value_type: str  # BOOL | INT64 | DOUBLE | DISTRIBUTION
    unit: str
    points: list[_Point] = field(default_factory=list)  # oldest first


def _labels(mapping: Mapping[str, object]) -> dict[str, str]:
    """Labels are strings on the wire; bools are written the way Monitoring prints them."""
    out: dict[str, str] = {}
    for k, v in mapping.items():
        out[str(k)] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def _to_ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {moment!r} has no timezone")
    # Integer arithmetic on the epoch delta keeps microseconds exact (no float seconds).
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * _NS + delta.microseconds * 1000


def _value_type_of(value: Value) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "DOUBLE"
    return "DISTRIBUTION"


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------

_Aligner = monitoring_v3.Aggregation.Aligner
_Reducer = monitoring_v3.Aggregation.Reducer

# aligner → (input kinds, input value types, output kind or "" for "same as input", output type
# or "" for "same as input")
_ALIGNERS: dict[str, tuple[set[str], set[str], str, str]] = {
    "ALIGN_DELTA": ({"DELTA"}, {"INT64", "DOUBLE", "DISTRIBUTION"}, "DELTA", ""),
    "ALIGN_RATE": ({"DELTA"}, {"INT64", "DOUBLE"}, "GAUGE", "DOUBLE"),
    "ALIGN_SUM": ({"GAUGE", "DELTA"}, {"INT64", "DOUBLE", "DISTRIBUTION"}, "", ""),
    "ALIGN_MEAN": ({"GAUGE", "DELTA"}, {"INT64", "DOUBLE", "DISTRIBUTION"}, "GAUGE", "DOUBLE"),
    "ALIGN_MAX": ({"GAUGE", "DELTA"}, {"INT64", "DOUBLE"}, "GAUGE", ""),
    "ALIGN_MIN": ({"GAUGE", "DELTA"}, {"INT64", "DOUBLE"}, "GAUGE", ""),
    "ALIGN_COUNT": ({"GAUGE", "DELTA"}, {"INT64", "DOUBLE", "BOOL"}, "GAUGE", "INT64"),
    "ALIGN_NEXT_OLDER": ({"GAUGE", "DELTA"}, {"INT64", "DOUBLE", "BOOL", "DISTRIBUTION"}, "GAUGE", ""),
    "ALIGN_COUNT_TRUE": ({"GAUGE"}, {"BOOL"}, "GAUGE", "INT64"),
    "ALIGN_COUNT_FALSE": ({"GAUGE"}, {"BOOL"}, "GAUGE", "INT64"),
    "ALIGN_FRACTION_TRUE": ({"GAUGE"}, {"BOOL"}, "GAUGE", "DOUBLE"),
    "ALIGN_PERCENTILE_99": ({"GAUGE", "DELTA"}, {"DISTRIBUTION"}, "GAUGE", "DOUBLE"),
    "ALIGN_PERCENTILE_95": ({"GAUGE", "DELTA"}, {"DISTRIBUTION"}, "GAUGE", "DOUBLE"),
    "ALIGN_PERCENTILE_50": ({"GAUGE", "DELTA"}, {"DISTRIBUTION"}, "GAUGE", "DOUBLE"),
    "ALIGN_PERCENTILE_05": ({"GAUGE", "DELTA"}, {"DISTRIBUTION"}, "GAUGE", "DOUBLE"),
}

# reducer → (input value types, output type or "" for "same as input")
_REDUCERS: dict[str, tuple[set[str], str]] = {
    "REDUCE_SUM": ({"INT64", "DOUBLE", "DISTRIBUTION"}, ""),
    "REDUCE_MEAN": ({"INT64", "DOUBLE", "DISTRIBUTION"}, "DOUBLE"),
    "REDUCE_MAX": ({"INT64", "DOUBLE"}, ""),
    "REDUCE_MIN": ({"INT64", "DOUBLE"}, ""),
    "REDUCE_COUNT": ({"INT64", "DOUBLE", "BOOL", "DISTRIBUTION"}, "INT64"),
    "REDUCE_COUNT_TRUE": ({"BOOL"}, "INT64"),
    "REDUCE_COUNT_FALSE": ({"BOOL"}, "INT64"),
    "REDUCE_FRACTION_TRUE": ({"BOOL"}, "DOUBLE"),
    "REDUCE_PERCENTILE_99": ({"DISTRIBUTION"}, "DOUBLE"),
    "REDUCE_PERCENTILE_95": ({"DISTRIBUTION"}, "DOUBLE"),
    "REDUCE_PERCENTILE_50": ({"DISTRIBUTION"}, "DOUBLE"),
    "REDUCE_PERCENTILE_05": ({"DISTRIBUTION"}, "DOUBLE"),
}


def _percent(name: str) -> float:
    return float(name.rsplit("_", 1)[1])


def _merge(values: Sequence[Value]) -> Histogram:
    hists = [v for v in values if isinstance(v, Histogram)]
    try:
        merged = merge_all(hists)
    except ValueError as exc:
        raise _invalid(f"cannot combine distributions: {exc}") from exc
    assert merged is not None  # callers never pass an empty list
    return merged


def _sum(values: Sequence[Value], value_type: str) -> Value:
    if value_type == "DISTRIBUTION":
        return _merge(values)
    if value_type == "INT64":
        return sum(int(v) for v in values if not isinstance(v, Histogram))
    return math.fsum(float(v) for v in values if not isinstance(v, Histogram))


def _numbers(values: Sequence[Value]) -> list[float]:
    return [float(v) for v in values if not isinstance(v, Histogram)]


def _mean(values: Sequence[Value], value_type: str) -> float | None:
    if value_type == "DISTRIBUTION":
        merged = _merge(values)
        if merged.count == 0:
            return None
        if merged.mean is None:
            raise EmulatorError(grpc.StatusCode.FAILED_PRECONDITION, "a distribution without a mean was written")
        return merged.mean
    nums = _numbers(values)
    return math.fsum(nums) / len(nums)


def _apply_aligner(name: str, values: Sequence[Value], value_type: str, period_s: float) -> Value | None:
    """One aligned value from the points of one series in one alignment period (oldest first)."""
    if name in {"ALIGN_DELTA", "ALIGN_SUM"}:
        return _sum(values, value_type)
    if name == "ALIGN_RATE":
        return float(_sum(values, value_type)) / period_s  # type: ignore[arg-type]
    if name == "ALIGN_MEAN":
        return _mean(values, value_type)
    if name in {"ALIGN_MAX", "ALIGN_MIN"}:
        pick = max if name == "ALIGN_MAX" else min
        return pick(v for v in values if not isinstance(v, Histogram))
    if name == "ALIGN_COUNT":
        return len(values)
    if name == "ALIGN_NEXT_OLDER":
        return values[-1]
    if name == "ALIGN_COUNT_TRUE":
        return sum(1 for v in values if v is True)
    if name == "ALIGN_COUNT_FALSE":
        return sum(1 for v in values if v is False)
    if name == "ALIGN_FRACTION_TRUE":
        return sum(1 for v in values if v is True) / len(values)
    # ALIGN_PERCENTILE_*: merge the period's distributions, then read the percentile once.
    return _merge(values).percentile(_percent(name))


def _apply_reducer(name: str, values: Sequence[Value], value_type: str) -> Value | None:
    """One value from the aligned values of a group of series at one timestamp."""
    if name == "REDUCE_SUM":
        return _sum(values, value_type)
    if name == "REDUCE_MEAN":
        return _mean(values, value_type)
    if name in {"REDUCE_MAX", "REDUCE_MIN"}:
        pick = max if name == "REDUCE_MAX" else min
        return pick(v for v in values if not isinstance(v, Histogram))
    if name == "REDUCE_COUNT":
        return len(values)
    if name == "REDUCE_COUNT_TRUE":
        return sum(1 for v in values if v is True)
    if name == "REDUCE_COUNT_FALSE":
        return sum(1 for v in values if v is False)
    if name == "REDUCE_FRACTION_TRUE":
        return sum(1 for v in values if v is True) / len(values)
    # REDUCE_PERCENTILE_*: merge every series' distribution first, then one percentile — never
    # a percentile of per-series percentiles.
    return _merge(values).percentile(_percent(name))


@dataclass
class _OutSeries:
    metric_type: str
    metric_labels: dict[str, str]
    resource_type: str
    resource_labels: dict[str, str]
    kind: str
    value_type: str
    unit: str
    points: list[_Point]  # newest first

    def sort_key(self) -> tuple[str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
        return (
            self.resource_type,
            tuple(sorted(self.resource_labels.items())),
            tuple(sorted(self.metric_labels.items())),
        )


def _parse_group_by(fields: Iterable[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for f in fields:
        m = _SELECTOR.match(f)
        if not m:
            raise _invalid(
                f"aggregation.groupByFields: {f!r} is not supported by this emulator "
                "(use resource.label.X or metric.label.X)"
            )
        out.append((m.group(1), m.group(2)))
    return out


def _unit_after(name: str, unit: str) -> str:
    if name == "ALIGN_RATE":
        return f"{unit or '1'}/s"
    if "COUNT" in name or "FRACTION" in name:
        return "1"
    return unit


# --------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------


@dataclass
class _Injection:
    remaining: int
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    seconds: float = 0.0


class MonitoringEmulator:
    """Cloud Monitoring ``MetricService`` on ``127.0.0.1`` (plaintext gRPC) with an in-memory store.

    Query semantics (ListTimeSeries):

    * ``name`` must be ``projects/P``; only series written to project P are seen.
    * ``interval``: ``endTime`` is required. A point is selected when its end time lies in
      ``(startTime, endTime]`` (the real API's half-open read interval); without ``startTime``
      only points ending exactly at ``endTime``.
    * Alignment periods end at ``endTime``: period k covers ``(endTime - (k+1)·P, endTime - k·P]``
      and a raw point belongs to the period holding its *end* time. Aligned points of DELTA
      output have interval ``[t - P, t]``; GAUGE output has start = end = t. Periods without
      input produce no point (and an empty merged distribution gives no percentile point).
    * A cross-series reducer needs an aligner; it groups aligned series by ``groupByFields`` and
      combines values with equal timestamps. The output keeps only the grouped labels, plus the
      resource's ``project_id`` (as the real API does).
    * Output series are sorted by resource then metric labels; points newest first; series with
      no point in the interval are omitted; ``view = HEADERS`` returns the series without points.
    * Paging: ``pageSize`` counts series (0 = all); ``nextPageToken`` is bound to the query and
      rejected (INVALID_ARGUMENT) with any other query. Pages are recomputed per call, so writes
      between pages show up on later pages.
    * Ingestion lag: a point whose end time is later than ``clock() - ingestion_lag`` is not
      returned yet (it exists; it is just not visible), whatever the query's interval.

    Faults: ``unavailable`` (a ``grpc.StatusCode``, or None) fails every RPC with that status
    while set; ``latency`` (seconds) delays every RPC. Both can be given to the constructor and
    changed at any time; :meth:`fail_next` and :meth:`delay_next` inject one-off faults.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        default_project: str = "demo-proj",
        ingestion_lag: timedelta = DEFAULT_INGESTION_LAG,
        clock: Callable[[], datetime] | None = None,
        unavailable: grpc.StatusCode | None = None,
        latency: float = 0.0,
    ) -> None:
        if ingestion_lag < timedelta(0):
            raise ValueError(f"ingestion_lag must not be negative, got {ingestion_lag}")
        self._host = host
        self._requested_port = port
        self.default_project = default_project
        self.ingestion_lag = ingestion_lag
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.unavailable = unavailable
        self.latency = latency
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: grpc.Server | None = None
        self._port = 0
        self._series: dict[tuple[object, ...], _Series] = {}
        self._descriptors: dict[tuple[str, str], tuple[str, str]] = {}
        self._calls: list[monitoring_v3.ListTimeSeriesRequest] = []
        self._create_calls: list[monitoring_v3.CreateTimeSeriesRequest] = []
        self._failures: list[_Injection] = []
        self._delays: list[_Injection] = []

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> MonitoringEmulator:
        """Bind (port 0 = any free port) and serve; returns self so ``.start().target`` works."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        handler = grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                    self._rpc_list_time_series,
                    request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
                    response_serializer=monitoring_v3.ListTimeSeriesResponse.serialize,
                ),
                "CreateTimeSeries": grpc.unary_unary_rpc_method_handler(
                    self._rpc_create_time_series,
                    request_deserializer=monitoring_v3.CreateTimeSeriesRequest.deserialize,
                    response_serializer=empty_pb2.Empty.SerializeToString,
                ),
            },
        )
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="mon-emu"))
        server.add_generic_rpc_handlers((handler,))
        self._port = server.add_insecure_port(f"{self._host}:{self._requested_port}")
        self._stopping.clear()
        server.start()
        self._server = server
        return self

    def stop(self, grace: float = 0.5) -> None:
        """Stop serving; in-flight calls get ``grace`` seconds, injected delays end at once."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait(timeout=grace + 5.0)

    def __enter__(self) -> MonitoringEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def target(self) -> str:
        """``host:port`` for ``grpc.insecure_channel`` / ``ROLLBACK_MONITORING_ENDPOINT``."""
        if not self._port:
            raise RuntimeError("the emulator is not started")
        return f"{self._host}:{self._port}"

    # -- test controls ----------------------------------------------------------------------

    @property
    def calls(self) -> list[monitoring_v3.ListTimeSeriesRequest]:
        """Every ListTimeSeries request received (failed ones included), oldest first."""
        with self._lock:
            return list(self._calls)

    @property
    def create_calls(self) -> list[monitoring_v3.CreateTimeSeriesRequest]:
        """Every CreateTimeSeries request received, oldest first."""
        with self._lock:
            return list(self._create_calls)

    def fail_next(self, n: int = 1, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        """Make the next ``n`` RPCs (of any method) fail with ``code``."""
        with self._lock:
            self._failures.append(_Injection(n, code))

    def delay_next(self, n: int = 1, seconds: float = 1.0) -> None:
        """Make the next ``n`` RPCs wait ``seconds`` before answering (ends early on stop)."""
        with self._lock:
            self._delays.append(_Injection(n, seconds=seconds))

    def reset(self) -> None:
        """Forget all data, recorded calls and pending injections (and end any outage or latency)."""
        self.unavailable = None
        self.latency = 0.0
        with self._lock:
            self._series.clear()
            self._descriptors.clear()
            self._calls.clear()
            self._create_calls.clear()
            self._failures.clear()
            self._delays.clear()

    # -- writing ----------------------------------------------------------------------------

    def write_point(
        self,
        metric_type: str,
        metric_labels: Mapping[str, object],
        resource_type: str,
        resource_labels: Mapping[str, object],
        start: datetime | None,
        end: datetime,
        value: Value | distribution_pb2.Distribution,
        *,
        project: str | None = None,
        metric_kind: str | None = None,
        unit: str | None = None,
    ) -> None:
        """Store one point, with the same checks as CreateTimeSeries (ValueError if it fails).

        ``value`` is an int (INT64), float (DOUBLE), bool (BOOL), or a distribution given as a
        :class:`~controller.stats.Histogram` or a ``google.api.Distribution``. The project is
        ``project``, else the resource's ``project_id`` label, else ``default_project``. The kind
        and unit default from :data:`KNOWN_METRICS`, else GAUGE when ``start`` is None or equal
        to ``end`` and DELTA otherwise. Timestamps must be timezone-aware.
        """
        if isinstance(value, distribution_pb2.Distribution):
            value = histogram_from_proto(value)
        res_labels = _labels(resource_labels)
        proj = project or res_labels.get("project_id") or self.default_project
        end_ns = _to_ns(end)
        start_ns = end_ns if start is None else _to_ns(start)
        known = KNOWN_METRICS.get(metric_type)
        kind = metric_kind or (known[0] if known else ("GAUGE" if start_ns == end_ns else "DELTA"))
        try:
            with self._lock:
                self._store(
                    proj,
                    metric_type,
                    _labels(metric_labels),
                    resource_type,
                    res_labels,
                    kind,
                    unit if unit is not None else (known[2] if known else ""),
                    _Point(start_ns, end_ns, value),
                )
        except EmulatorError as exc:
            raise ValueError(exc.message) from exc

    def _store(
        self,
        project: str,
        metric_type: str,
        metric_labels: dict[str, str],
        resource_type: str,
        resource_labels: dict[str, str],
        kind: str,
        unit: str,
        point: _Point,
    ) -> tuple[object, ...]:
        """Validate and append one point, returning its series key; the caller holds the lock."""
        if kind not in {"GAUGE", "DELTA"}:
            raise _unimplemented(f"metric kind {kind} of {metric_type}")
        value_type = _value_type_of(point.value)
        described = self._descriptors.get((project, metric_type))
        if described is not None and described != (kind, value_type):
            raise _invalid(f"{metric_type} is {described[0]}/{described[1]}, cannot write {kind}/{value_type}")
        if kind == "GAUGE" and point.start_ns != point.end_ns:
            raise _invalid(f"{metric_type}: a GAUGE point needs start time == end time")
        if kind == "DELTA" and point.start_ns >= point.end_ns:
            raise _invalid(f"{metric_type}: a DELTA point needs start time < end time")
        labels = dict(resource_labels)
        if labels.setdefault("project_id", project) != project:
            raise _invalid(f"resource label project_id={labels['project_id']} is not {project}")
        key = (
            project,
            metric_type,
            tuple(sorted(metric_labels.items())),
            resource_type,
            tuple(sorted(labels.items())),
        )
        series = self._series.get(key)
        if series is not None and series.points:
            last = series.points[-1]
            if point.end_ns <= last.end_ns:
                raise _invalid(
                    f"{metric_type}: points must be written in order; one had an end time "
                    "not after the most recent point of its series"
                )
            if kind == "DELTA" and point.start_ns < last.end_ns:
                raise _invalid(f"{metric_type}: DELTA intervals of one series must not overlap")
        if series is None:
            series = _Series(project, metric_type, dict(metric_labels), resource_type, labels, kind, value_type, unit)
            self._series[key] = series
        self._descriptors[(project, metric_type)] = (kind, value_type)
        series.points.append(point)
        return key

    # -- RPC plumbing -------------------------------------------------------------------------

    def _inject(self) -> grpc.StatusCode | None:
        """Consume pending delay and failure injections for one call (and apply the standing ones)."""
        delay = self.latency
        code: grpc.StatusCode | None = self.unavailable
        with self._lock:
            if self._delays:
                delay += self._delays[0].seconds
                self._delays[0].remaining -= 1
                if self._delays[0].remaining <= 0:
                    self._delays.pop(0)
            if self._failures:
                code = code or self._failures[0].code
                self._failures[0].remaining -= 1
                if self._failures[0].remaining <= 0:
                    self._failures.pop(0)
        if delay > 0:
            self._stopping.wait(delay)
        return code

    def _serve(self, context: grpc.ServicerContext, work: Callable[[], Any]) -> Any:
        code = self._inject()
        if code is not None:
            context.abort(code, f"injected failure ({code.name})")
        try:
            return work()
        except EmulatorError as exc:
            context.abort(exc.code, exc.message)

    def _rpc_create_time_series(
        self, request: monitoring_v3.CreateTimeSeriesRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        with self._lock:
            self._create_calls.append(request)
        return self._serve(context, lambda: self._create(request))

    def _rpc_list_time_series(self, request: monitoring_v3.ListTimeSeriesRequest, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self._calls.append(request)
        return self._serve(context, lambda: self._list(request))

    # -- CreateTimeSeries ---------------------------------------------------------------------

    def _create(self, request: monitoring_v3.CreateTimeSeriesRequest) -> empty_pb2.Empty:
        pb = monitoring_v3.CreateTimeSeriesRequest.pb(request)
        project = _project(pb.name)
        if not pb.time_series:
            raise _invalid("time_series: at least one time series is required")
        if len(pb.time_series) > _MAX_SERIES_PER_WRITE:
            raise _invalid(f"time_series: at most {_MAX_SERIES_PER_WRITE} per request")
        staged: list[tuple[str, dict[str, str], str, dict[str, str], str, str, _Point]] = []
        for n, ts in enumerate(pb.time_series):
            where = f"time_series[{n}]"
            if len(ts.points) != 1:
                raise _invalid(f"{where}: exactly one point per time series, got {len(ts.points)}")
            p = ts.points[0]
            value = _typed_value(p.value, where)
            declared_vt = _VType.Name(ts.value_type)
            if ts.value_type and declared_vt != _value_type_of(value):
                raise _invalid(f"{where}: value_type {declared_vt} does not match the point's value")
            if not p.interval.HasField("end_time"):
                raise _invalid(f"{where}: the point needs an end time")
            end_ns = _ns(p.interval.end_time)
            start_ns = _ns(p.interval.start_time) if p.interval.HasField("start_time") else end_ns
            known = KNOWN_METRICS.get(ts.metric.type)
            with self._lock:
                described = self._descriptors.get((project, ts.metric.type))
            # An unspecified kind means "as already described", else Monitoring's default, GAUGE.
            if ts.metric_kind:
                kind = _Kind.Name(ts.metric_kind)
            elif described is not None:
                kind = described[0]
            else:
                kind = known[0] if known else "GAUGE"
            unit = ts.unit or (known[2] if known else "")
            point = _Point(start_ns, end_ns, value)
            labels = (dict(ts.metric.labels), dict(ts.resource.labels))
            staged.append((ts.metric.type, labels[0], ts.resource.type, labels[1], kind, unit, point))
        with self._lock:
            # All or nothing, like the real API for a request that fails validation: undo the
            # points already appended when a later series is rejected.
            saved_desc = dict(self._descriptors)
            done: list[tuple[object, ...]] = []
            try:
                for metric_type, m_labels, r_type, r_labels, kind, unit, point in staged:
                    done.append(self._store(project, metric_type, m_labels, r_type, r_labels, kind, unit, point))
            except EmulatorError:
                for key in reversed(done):
                    self._series[key].points.pop()
                    if not self._series[key].points:
                        del self._series[key]
                self._descriptors = saved_desc
                raise
        return empty_pb2.Empty()

    # -- ListTimeSeries -----------------------------------------------------------------------

    def _list(self, request: monitoring_v3.ListTimeSeriesRequest) -> Any:
        pb = monitoring_v3.ListTimeSeriesRequest.pb(request)
        project = _project(pb.name)
        if not pb.filter:
            raise _invalid("filter: a filter is required")
        parsed = parse_filter(pb.filter)
        if not pb.HasField("interval") or not pb.interval.HasField("end_time"):
            raise _invalid("interval.end_time: an end time is required")
        end_ns = pb.interval.end_time.seconds * _NS + pb.interval.end_time.nanos
        has_start = pb.interval.HasField("start_time")
        start_ns = _ns(pb.interval.start_time) if has_start else end_ns
        if start_ns > end_ns:
            raise _invalid("interval: the start time is after the end time")
        if pb.HasField("secondary_aggregation"):
            raise _unimplemented("secondary_aggregation")
        if pb.order_by:
            raise _invalid("order_by: unsupported, must be left blank")
        if pb.page_size < 0:
            raise _invalid("page_size: must not be negative")

        aligner = _Aligner(pb.aggregation.per_series_aligner).name
        reducer = _Reducer(pb.aggregation.cross_series_reducer).name
        period_ns = _ns(pb.aggregation.alignment_period)
        if reducer != "REDUCE_NONE" and aligner == "ALIGN_NONE":
            raise _invalid("aggregation.perSeriesAligner: a cross-series reducer requires a per-series aligner")
        if aligner != "ALIGN_NONE":
            if aligner not in _ALIGNERS:
                raise _unimplemented(f"aggregation.perSeriesAligner {aligner}")
            if not pb.aggregation.HasField("alignment_period"):
                raise _invalid("aggregation.alignmentPeriod: required with a per-series aligner")
            if period_ns < _MIN_ALIGNMENT_NS:
                raise _invalid("aggregation.alignmentPeriod: must be at least 60 seconds")
        if reducer != "REDUCE_NONE" and reducer not in _REDUCERS:
            raise _unimplemented(f"aggregation.crossSeriesReducer {reducer}")
        group_by = _parse_group_by(pb.aggregation.group_by_fields) if reducer != "REDUCE_NONE" else []

        visible_ns = _to_ns(self.clock() - self.ingestion_lag)
        with self._lock:
            selected = [
                (s, [p for p in s.points if p.end_ns <= visible_ns and _in_interval(p, start_ns, end_ns, has_start)])
                for s in self._series.values()
                if s.project == project and parsed.matches(s)
            ]
        selected = [(s, pts) for s, pts in selected if pts]

        if aligner == "ALIGN_NONE":
            out = [_raw(s, pts) for s, pts in selected]
        else:
            aligned = [_align(s, pts, aligner, period_ns, end_ns) for s, pts in selected]
            aligned = [a for a in aligned if a.points]
            out = _reduce(aligned, reducer, group_by) if reducer != "REDUCE_NONE" else aligned
        out.sort(key=_OutSeries.sort_key)
        return self._page(pb, out)

    def _page(self, pb: Any, out: list[_OutSeries]) -> Any:
        fingerprint_req = type(pb)()
        fingerprint_req.CopyFrom(pb)
        fingerprint_req.page_token = ""
        fingerprint_req.page_size = 0
        fingerprint = hashlib.sha256(fingerprint_req.SerializeToString(deterministic=True)).hexdigest()[:16]
        offset = 0
        if pb.page_token:
            try:
                raw = base64.urlsafe_b64decode(pb.page_token.encode()).decode()
                off_text, token_fp = raw.split(".", 1)
                offset = int(off_text)
            except (ValueError, UnicodeDecodeError) as exc:
                raise _invalid("page_token: malformed") from exc
            if token_fp != fingerprint or offset < 0:
                raise _invalid("page_token: does not belong to this query")
        size = pb.page_size or len(out) or 1
        page = out[offset : offset + size]
        response = monitoring_v3.ListTimeSeriesResponse.pb()()
        if offset + size < len(out):
            response.next_page_token = base64.urlsafe_b64encode(f"{offset + size}.{fingerprint}".encode()).decode()
        headers_only = pb.view == monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.HEADERS
        for s in page:
            _emit(response.time_series.add(), s, headers_only)
        units = {s.unit for s in out}
        if out:
            response.unit = units.pop() if len(units) == 1 else "{not_a_unit}"
        return response


# --------------------------------------------------------------------------------------------
# Query helpers (module level: they touch no emulator state)
# --------------------------------------------------------------------------------------------


def _ns(timestamp: Any) -> int:
    """A ``google.protobuf.Timestamp`` as integer nanoseconds since the epoch."""
    return int(timestamp.seconds) * _NS + int(timestamp.nanos)


def _typed_value(value: Any, where: str) -> Value:
    """A ``TypedValue`` proto → the stored Python value."""
    which = value.WhichOneof("value")
    if which == "int64_value":
        return int(value.int64_value)
    if which == "double_value":
        return float(value.double_value)
    if which == "bool_value":
        return bool(value.bool_value)
    if which == "distribution_value":
        try:
            return histogram_from_proto(value.distribution_value)
        except ValueError as exc:
            raise _invalid(f"{where}: {exc}") from exc
    raise _unimplemented(f"{where}: value {which}")


def _project(name: str) -> str:
    m = re.fullmatch(r"projects/([^/]+)", name)
    if not m:
        if name.startswith(("organizations/", "folders/")):
            raise _unimplemented(f"name {name!r}")
        raise _invalid(f"name: expected projects/PROJECT_ID, got {name!r}")
    return m.group(1)


def _in_interval(point: _Point, start_ns: int, end_ns: int, has_start: bool) -> bool:
    if not has_start:
        return point.end_ns == end_ns
    return start_ns < point.end_ns <= end_ns


def _raw(series: _Series, points: list[_Point]) -> _OutSeries:
    return _OutSeries(
        series.metric_type,
        dict(series.metric_labels),
        series.resource_type,
        dict(series.resource_labels),
        series.kind,
        series.value_type,
        series.unit,
        list(reversed(points)),
    )


def _align(series: _Series, points: list[_Point], aligner: str, period_ns: int, end_ns: int) -> _OutSeries:
    kinds, types, out_kind, out_type = _ALIGNERS[aligner]
    if series.kind not in kinds or series.value_type not in types:
        raise _invalid(
            f'aggregation.perSeriesAligner "{aligner}" cannot be applied to metrics with kind '
            f"{series.kind} and value type {series.value_type}"
        )
    kind = out_kind or series.kind
    value_type = out_type or series.value_type
    buckets: dict[int, list[Value]] = {}
    for p in points:  # oldest first, so NEXT_OLDER can take the last one
        buckets.setdefault((end_ns - p.end_ns) // period_ns, []).append(p.value)
    out_points: list[_Point] = []
    for k in sorted(buckets):  # k = 0 is the newest period
        value = _apply_aligner(aligner, buckets[k], series.value_type, period_ns / _NS)
        if value is None:
            continue
        t = end_ns - k * period_ns
        out_points.append(_Point(t - period_ns if kind == "DELTA" else t, t, value))
    return _OutSeries(
        series.metric_type,
        dict(series.metric_labels),
        series.resource_type,
        dict(series.resource_labels),
        kind,
        value_type,
        _unit_after(aligner, series.unit),
        out_points,
    )


def _reduce(aligned: list[_OutSeries], reducer: str, group_by: list[tuple[str, str]]) -> list[_OutSeries]:
    groups: dict[tuple[object, ...], list[_OutSeries]] = {}
    for s in aligned:
        types, _ = _REDUCERS[reducer]
        if s.value_type not in types:
            if reducer.startswith("REDUCE_PERCENTILE") and s.value_type in {"INT64", "DOUBLE"}:
                raise _unimplemented(
                    f"aggregation.crossSeriesReducer {reducer} on {s.value_type} values "
                    "(a percentile of per-series values; align with ALIGN_DELTA to keep distributions)"
                )
            raise _invalid(f'aggregation.crossSeriesReducer "{reducer}" cannot be applied to value type {s.value_type}')
        key = (
            s.resource_type,
            s.resource_labels.get("project_id", ""),
            tuple(
                (scope, label, (s.metric_labels if scope == "metric" else s.resource_labels).get(label))
                for scope, label in group_by
            ),
        )
        groups.setdefault(key, []).append(s)
    out: list[_OutSeries] = []
    for members in groups.values():
        first = members[0]
        metric_labels = {
            label: first.metric_labels[label]
            for scope, label in group_by
            if scope == "metric" and label in first.metric_labels
        }
        resource_labels = {
            label: first.resource_labels[label]
            for scope, label in group_by
            if scope == "resource" and label in first.resource_labels
        }
        if "project_id" in first.resource_labels:
            resource_labels["project_id"] = first.resource_labels["project_id"]
        by_time: dict[int, list[_Point]] = {}
        for s in members:
            for p in s.points:
                by_time.setdefault(p.end_ns, []).append(p)
        points: list[_Point] = []
        for t in sorted(by_time, reverse=True):
            value = _apply_reducer(reducer, [p.value for p in by_time[t]], first.value_type)
            if value is not None:
                points.append(_Point(by_time[t][0].start_ns, t, value))
        if points:
            out.append(
                _OutSeries(
                    first.metric_type,
                    metric_labels,
                    first.resource_type,
                    resource_labels,
                    first.kind,
                    _REDUCERS[reducer][1] or first.value_type,
                    first.unit,
                    points,
                )
            )
    return out


def _set_time(ts_field: Any, ns: int) -> None:
    ts_field.seconds, ts_field.nanos = divmod(ns, _NS)


def _emit(ts: Any, s: _OutSeries, headers_only: bool) -> None:
    """Fill one ``TimeSeries`` proto from an output series."""
    ts.metric.type = s.metric_type
    ts.metric.labels.update(s.metric_labels)
    ts.resource.type = s.resource_type
    ts.resource.labels.update(s.resource_labels)
    ts.metric_kind = _Kind.Value(s.kind)
    ts.value_type = _VType.Value(s.value_type)
    ts.unit = s.unit
    if headers_only:
        return
    for p in s.points:
        point = ts.points.add()
        if s.kind != "GAUGE":
            _set_time(point.interval.start_time, p.start_ns)
        _set_time(point.interval.end_time, p.end_ns)
        v = p.value
        if isinstance(v, Histogram):
            point.value.distribution_value.CopyFrom(histogram_to_proto(v))
        elif s.value_type == "BOOL":
            point.value.bool_value = bool(v)
        elif s.value_type == "INT64":
            point.value.int64_value = int(v)
        else:
            point.value.double_value = float(v)


def insecure_client(target: str) -> monitoring_v3.MetricServiceClient:
    """A real ``MetricServiceClient`` over a plaintext channel to ``target`` (``host:port``).

    An ``api_endpoint`` with anonymous credentials would build a TLS channel and retry for ~90 s;
    injecting the transport is the only way to reach a plaintext server. Close it with
    ``client.transport.close()``.
    """
    channel = grpc.insecure_channel(target)
    return monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))
