"""The Monitoring adapter's pure parts: windows, filters, request specs, protos → per-revision numbers.

No server and no client here: series are built as the raw protobuf messages the adapter receives.
"""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.api import distribution_pb2
from google.cloud import monitoring_v3
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.core.evidence import (
    ALL_SIGNALS,
    Evidence,
    RevisionNumbers,
    Window,
    alignment_period,
    build_evidence,
    revision_window_before,
    trailing_window,
)
from controller.core.ratios import ratio
from controller.core.state import ServiceRef
from controller.core.stats import (
    ExplicitBuckets,
    ExponentialBuckets,
    Histogram,
    LinearBuckets,
    bucket_bounds,
    bucket_index,
)
from controller.core.timeseries import (
    count_by_revision,
    histogram_from_distribution,
    latency_by_revision,
    queries,
    request_counts_by_revision,
    service_filter,
)
from controller.emulator.monitoring import CLOUD_RUN_LATENCY_BUCKETS, histogram_to_proto

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
REF = ServiceRef(project="demo-proj", region="us-central1", service="checkout")
SCOPE = (
    'resource.type = "cloud_run_revision" AND resource.label.service_name = "checkout" '
    'AND resource.label.location = "us-central1"'
)

# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


def test_trailing_window_ends_lag_before_now() -> None:
    w = trailing_window(T0, timedelta(minutes=5), lag=timedelta(minutes=2))
    assert (w.start, w.end) == (T0 - timedelta(minutes=7), T0 - timedelta(minutes=2))
    assert w.length == timedelta(minutes=5)
    assert trailing_window(T0, timedelta(minutes=5)).end == T0


def test_revision_window_before_ends_at_creation() -> None:
    w = revision_window_before(T0, timedelta(minutes=10))
    assert (w.start, w.end) == (T0 - timedelta(minutes=10), T0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda: trailing_window(T0.replace(tzinfo=None), timedelta(minutes=5)), "timezone", id="naive"),
        pytest.param(lambda: trailing_window(T0, timedelta(0)), "positive", id="empty"),
        pytest.param(lambda: trailing_window(T0, timedelta(minutes=5), lag=-timedelta(1)), "lag", id="negative-lag"),
        pytest.param(lambda: revision_window_before(T0.replace(tzinfo=None), timedelta(1)), "timezone", id="naive-rev"),
        pytest.param(lambda: revision_window_before(T0, -timedelta(minutes=1)), "positive", id="negative-rev"),
    ],
)
def test_window_helpers_reject_nonsense(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_window_model_validates() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        Window(start=T0.replace(tzinfo=None), end=T0.replace(tzinfo=None) + timedelta(minutes=1))
    with pytest.raises(ValidationError, match="not before"):
        Window(start=T0, end=T0)
    # Other timezones are fine: the instant is what counts.
    plus2 = timezone(timedelta(hours=2))
    w = Window(start=T0.astimezone(plus2), end=T0 + timedelta(minutes=1))
    assert w.length == timedelta(minutes=1)


@pytest.mark.parametrize(
    ("length", "period_s"),
    [
        pytest.param(timedelta(seconds=1), 60, id="1s->60s"),
        pytest.param(timedelta(seconds=60), 60, id="60s"),
        pytest.param(timedelta(seconds=61), 120, id="61s->120s"),
        pytest.param(timedelta(minutes=4, seconds=1), 300, id="4m01->5m"),
        pytest.param(timedelta(minutes=5), 300, id="5m"),
        pytest.param(timedelta(minutes=5, microseconds=1), 360, id="5m+1us->6m"),
        pytest.param(timedelta(hours=1), 3600, id="1h"),
    ],
)
def test_alignment_period_rounds_up_to_whole_minutes(length: timedelta, period_s: int) -> None:
    assert alignment_period(Window(start=T0, end=T0 + length)) == timedelta(seconds=period_s)


# --------------------------------------------------------------------------------------------
# Filters and requests
# --------------------------------------------------------------------------------------------


def test_service_filter_scopes_to_service_and_region() -> None:
    assert service_filter("run.googleapis.com/request_count", REF) == (
        f'metric.type = "run.googleapis.com/request_count" AND {SCOPE}'
    )


def test_service_filter_escapes_quotes() -> None:
    odd = ServiceRef(project="p", region="r", service='a"b\\c')
    assert 'resource.label.service_name = "a\\"b\\\\c"' in service_filter("m", odd)


def test_queries_one_per_signal_in_fixed_order() -> None:
    window = Window(start=T0, end=T0 + timedelta(minutes=5))
    qs = queries(REF, window, ALL_SIGNALS)
    assert [q.signal for q in qs] == ["error_rate", "latency", "health"]
    assert {q.name for q in qs} == {"projects/demo-proj"}
    assert {(q.aligner, q.reducer) for q in qs} == {("ALIGN_DELTA", "REDUCE_SUM")}
    assert {(q.start, q.end, q.alignment_period) for q in qs} == {(T0, T0 + timedelta(minutes=5), timedelta(minutes=5))}
    error_rate, latency, health = qs
    assert error_rate.filter == f'metric.type = "run.googleapis.com/request_count" AND {SCOPE}'
    assert error_rate.group_by == ("resource.label.revision_name", "metric.label.response_code_class")
    assert latency.filter == f'metric.type = "run.googleapis.com/request_latencies" AND {SCOPE}'
    assert latency.group_by == ("resource.label.revision_name",)
    assert health.filter == (
        f'metric.type = "run.googleapis.com/container/completed_probe_attempt_count" AND {SCOPE} '
        "AND metric.label.is_healthy = false"
    )
    assert health.group_by == ("resource.label.revision_name",)


def test_queries_subset_and_unknown_signal() -> None:
    window = Window(start=T0, end=T0 + timedelta(minutes=5))
    assert [q.signal for q in queries(REF, window, {"health", "error_rate"})] == ["error_rate", "health"]
    assert queries(REF, window, ()) == []
    with pytest.raises(ValueError, match="latency_p95"):
        queries(REF, window, {"latency_p95"})


# --------------------------------------------------------------------------------------------
# Distribution → Histogram
# --------------------------------------------------------------------------------------------


def test_exponential_distribution_converts() -> None:
    hist = Histogram.from_samples(CLOUD_RUN_LATENCY_BUCKETS, [100.0, 120.0, 2500.0])
    back = histogram_from_distribution(histogram_to_proto(hist))
    assert back == hist


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(LinearBuckets(10, 50.0, 0.0), id="linear"),
        pytest.param(ExplicitBuckets((10.0, 100.0, 1000.0)), id="explicit"),
        pytest.param(ExponentialBuckets(20, 2.0, 1.0), id="exponential"),
    ],
)
def test_every_layout_converts(options: Any) -> None:
    hist = Histogram.from_samples(options, [5.0, 50.0, 75.0, 300.0])
    back = histogram_from_distribution(histogram_to_proto(hist))
    assert back is not None
    assert back.options == options and back.counts == hist.counts


@given(
    counts=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=102),
    mean=st.floats(min_value=0, max_value=1e6),
)
def test_conversion_round_trips_bucket_counts(counts: list[int], mean: float) -> None:
    hist = Histogram(options=CLOUD_RUN_LATENCY_BUCKETS, counts=tuple(counts), mean=mean, sum_of_squared_deviation=0.0)
    back = histogram_from_distribution(histogram_to_proto(hist))
    if hist.count == 0:
        assert back is None
    else:
        assert back is not None and back.counts == hist.counts and back.options == hist.options


def test_empty_distribution_without_buckets_is_no_data_but_nonempty_is_an_error() -> None:
    assert histogram_from_distribution(distribution_pb2.Distribution(count=0)) is None
    with pytest.raises(ValueError, match="no bucket options"):
        histogram_from_distribution(distribution_pb2.Distribution(count=3, mean=1.0))


# --------------------------------------------------------------------------------------------
# Series → numbers
# --------------------------------------------------------------------------------------------


def series(revision: str, values: list[Any], *, response_class: str | None = None) -> Any:
    """A reduced ``TimeSeries`` as the adapter gets it (raw protobuf), one point per value, newest first."""
    metric_labels = {"response_code_class": response_class} if response_class else {}
    points = []
    for i, v in enumerate(values):
        end = T0 - timedelta(minutes=5 * i)
        interval = monitoring_v3.TimeInterval(start_time=end - timedelta(minutes=5), end_time=end)
        if isinstance(v, Histogram):
            value = monitoring_v3.TypedValue(distribution_value=histogram_to_proto(v))
        elif isinstance(v, float):
            value = monitoring_v3.TypedValue(double_value=v)
        else:
            value = monitoring_v3.TypedValue(int64_value=v)
        points.append(monitoring_v3.Point(interval=interval, value=value))
    ts = monitoring_v3.TimeSeries(
        metric={"type": "run.googleapis.com/request_count", "labels": metric_labels},
        resource={"type": "cloud_run_revision", "labels": {"project_id": "demo-proj", "revision_name": revision}},
        points=points,
    )
    return monitoring_v3.TimeSeries.pb(ts)


def test_request_counts_sum_every_point_and_class() -> None:
    # Two points per series: the window straddled two alignment buckets. Both count.
    got = request_counts_by_revision(
        [
            series("a", [900, 100], response_class="2xx"),
            series("a", [7, 3], response_class="4xx"),
            series("a", [40, 10], response_class="5xx"),
            series("b", [5], response_class="5xx"),
        ]
    )
    assert got == {"a": (1060, 50), "b": (5, 5)}


def test_counts_accept_double_values_and_sum_points() -> None:
    assert count_by_revision([series("a", [2, 3]), series("b", [4.0]), series("a", [1])]) == {"a": 6, "b": 4}


def test_counts_reject_distributions() -> None:
    hist = Histogram.from_samples(CLOUD_RUN_LATENCY_BUCKETS, [1.0])
    with pytest.raises(ValueError, match="count"):
        count_by_revision([series("a", [hist])])


def test_latency_merges_distributions_before_the_percentile() -> None:
    fast = Histogram.from_samples(CLOUD_RUN_LATENCY_BUCKETS, [100.0] * 90)
    slow = Histogram.from_samples(CLOUD_RUN_LATENCY_BUCKETS, [3000.0] * 10)
    empty = Histogram.empty(CLOUD_RUN_LATENCY_BUCKETS)
    got = latency_by_revision([series("a", [fast, empty]), series("a", [slow], response_class="5xx")])
    merged = got["a"]
    assert merged.count == 100
    assert merged == fast.merge(slow)
    # p95 lies in 3000's bucket; a mean of per-series p95s would say ~1550 ms, which no request took.
    lower, upper = bucket_bounds(CLOUD_RUN_LATENCY_BUCKETS)[bucket_index(CLOUD_RUN_LATENCY_BUCKETS, 3000.0)]
    p95 = merged.percentile(95)
    assert p95 is not None and lower <= p95 <= upper


def test_latency_with_two_layouts_is_an_error() -> None:
    a = Histogram.from_samples(CLOUD_RUN_LATENCY_BUCKETS, [100.0])
    b = Histogram.from_samples(LinearBuckets(10, 10.0, 0.0), [50.0])
    with pytest.raises(ValueError, match="layouts"):
        latency_by_revision([series("a", [a, b])])


def test_build_evidence_combines_signals() -> None:
    window = Window(start=T0, end=T0 + timedelta(minutes=5))
    hist = Histogram.from_samples(CLOUD_RUN_LATENCY_BUCKETS, [100.0, 200.0, 300.0, 5000.0])
    ev = build_evidence(
        window,
        ALL_SIGNALS,
        calls=3,
        counts={"a": (1000, 180), "b": (10, 0)},
        latencies={"a": hist},
        health={"c": 4},
    )
    assert sorted(ev.revisions) == ["a", "b", "c"]
    a = ev.get("a")
    r = ratio(180, 1000)
    assert (a.requests, a.errors, a.error_ratio) == (1000, 180, 0.18)
    assert (a.error_ratio_lower, a.error_ratio_upper) == (r.lower, r.upper)
    assert a.latency_count == 4 and a.p50_ms == hist.percentile(50) and a.p95_ms == hist.percentile(95)
    assert a.p99_ms == hist.percentile(99) and a.health_failures == 0
    b = ev.get("b")
    assert b.latency_count == 0 and b.p95_ms is None and b.health_failures == 0
    c = ev.get("c")
    assert (c.requests, c.error_ratio, c.health_failures) == (0, 0.0, 4)


def test_absent_revision_reads_as_zeros() -> None:
    window = Window(start=T0, end=T0 + timedelta(minutes=5))
    ev = build_evidence(window, frozenset({"error_rate"}), calls=1, counts={"a": (10, 1)})
    zero = ev.get("gone")
    assert zero == RevisionNumbers.build("gone")
    assert (zero.requests, zero.errors, zero.error_ratio, zero.latency_count) == (0, 0, 0.0, 0)
    assert (zero.error_ratio_lower, zero.error_ratio_upper) == (0.0, 1.0)
    assert zero.p95_ms is None and zero.health_failures is None  # health was not queried
    assert ev.get("a").health_failures is None
    # Built by hand (as engine tests do), evidence assumes every signal was queried.
    assert Evidence(window=window, revisions={}, calls=0).get("x").health_failures == 0


def test_evidence_is_immutable() -> None:
    ev = build_evidence(Window(start=T0, end=T0 + timedelta(minutes=1)), ALL_SIGNALS, calls=0)
    with pytest.raises(ValidationError):
        ev.calls = 4  # type: ignore[misc]
    assert math.isclose(RevisionNumbers.build("x", requests=3, errors=1).error_ratio, 1 / 3)


def test_importing_the_adapter_loads_no_client_library() -> None:
    """Cold start: google.cloud.monitoring_v3 and grpc are imported on first use, not on import."""
    code = (
        "import sys, controller.adapters.monitoring\n"
        "heavy = [m for m in ('grpc', 'google.cloud.monitoring_v3', 'google.api_core', 'google.auth') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
