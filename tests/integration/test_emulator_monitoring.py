"""The Monitoring emulator, driven by the real google-cloud-monitoring client over plaintext gRPC.

Data set (written once per test by ``loaded``): service ``checkout`` with revisions ``checkout-bad``
(20 % 5xx, slow) and ``checkout-good`` (1 % 5xx, fast), plus service ``cart`` whose errors must
never leak into checkout's numbers; ten 60-s DELTA points from T0 to T0+10 min.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.api import metric_pb2
from google.api_core import exceptions
from google.cloud import monitoring_v3

from controller.core.stats import Histogram, merge_all
from controller.emulator.monitoring import (
    CLOUD_RUN_LATENCY_BUCKETS,
    MonitoringEmulator,
    histogram_from_proto,
    insecure_client,
)

PROJECT = "demo-proj"
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
MINUTES = 10
REQUEST_COUNT = "run.googleapis.com/request_count"
LATENCIES = "run.googleapis.com/request_latencies"
GROUP_BY_REVISION = ["resource.label.service_name", "resource.label.revision_name", "resource.label.location"]
CHECKOUT = (
    f'metric.type = "{REQUEST_COUNT}" AND resource.type = "cloud_run_revision" '
    'AND resource.label.service_name = "checkout"'
)
FIVE_XX = CHECKOUT + ' AND metric.label.response_code_class = "5xx"'
Kind = metric_pb2.MetricDescriptor.MetricKind
VType = metric_pb2.MetricDescriptor.ValueType


def resource(service: str, revision: str) -> dict[str, str]:
    return {"project_id": PROJECT, "service_name": service, "revision_name": revision, "location": "us-central1"}


# (service, revision, response_code) -> requests per minute i
COUNTS: dict[tuple[str, str, str], list[int]] = {
    ("checkout", "checkout-bad", "200"): [80 + i for i in range(MINUTES)],
    ("checkout", "checkout-bad", "500"): [15] * MINUTES,
    ("checkout", "checkout-bad", "503"): [5] * MINUTES,
    ("checkout", "checkout-good", "200"): [99] * MINUTES,
    ("checkout", "checkout-good", "503"): [1] * MINUTES,
    ("cart", "cart-00001", "500"): [1000] * MINUTES,
}
# (revision, response_code_class) -> latency samples per minute i (ms)
LATENCY_SAMPLES: dict[tuple[str, str], list[list[float]]] = {
    ("checkout-bad", "2xx"): [[200.0 + 10 * j for j in range(80)] + [2500.0 + i] * 10 for i in range(MINUTES)],
    ("checkout-bad", "5xx"): [[3000.0 + i * 10] * 20 for i in range(MINUTES)],
    ("checkout-good", "2xx"): [[50.0 + j for j in range(99)] for _ in range(MINUTES)],
    ("checkout-good", "5xx"): [[120.0] for _ in range(MINUTES)],
}


def minute(i: int) -> tuple[datetime, datetime]:
    return T0 + timedelta(minutes=i), T0 + timedelta(minutes=i + 1)


def write_data(emu: MonitoringEmulator) -> None:
    for i in range(MINUTES):
        start, end = minute(i)
        for (service, revision, code), per_minute in COUNTS.items():
            labels = {"response_code": code, "response_code_class": f"{code[0]}xx"}
            emu.write_point(
                REQUEST_COUNT, labels, "cloud_run_revision", resource(service, revision), start, end, per_minute[i]
            )
        for (revision, code_class), samples in LATENCY_SAMPLES.items():
            emu.write_point(
                LATENCIES,
                {"response_code_class": code_class},
                "cloud_run_revision",
                resource("checkout", revision),
                start,
                end,
                Histogram.from_samples(CLOUD_RUN_LATENCY_BUCKETS, samples[i]),
            )


@pytest.fixture
def emulator() -> Iterator[MonitoringEmulator]:
    with MonitoringEmulator() as emu:
        yield emu


@pytest.fixture
def loaded(emulator: MonitoringEmulator) -> MonitoringEmulator:
    write_data(emulator)
    return emulator


@pytest.fixture
def client(emulator: MonitoringEmulator) -> Iterator[monitoring_v3.MetricServiceClient]:
    c = insecure_client(emulator.target)
    yield c
    c.transport.close()  # type: ignore[no-untyped-call]


def request(
    filter_: str,
    *,
    aligner: str = "ALIGN_DELTA",
    reducer: str = "REDUCE_SUM",
    group_by: list[str] | None = None,
    period_s: int = 300,
    start: datetime | None = T0,
    end: datetime | None = T0 + timedelta(minutes=MINUTES),
    name: str = f"projects/{PROJECT}",
    **extra: object,
) -> monitoring_v3.ListTimeSeriesRequest:
    interval = monitoring_v3.TimeInterval()
    if start is not None:
        interval.start_time = start
    if end is not None:
        interval.end_time = end
    return monitoring_v3.ListTimeSeriesRequest(
        name=name,
        filter=filter_,
        interval=interval,
        aggregation=monitoring_v3.Aggregation(
            alignment_period=timedelta(seconds=period_s),
            per_series_aligner=aligner,
            cross_series_reducer=reducer,
            group_by_fields=GROUP_BY_REVISION if group_by is None else group_by,
        ),
        **extra,
    )


def fetch(
    client: monitoring_v3.MetricServiceClient, req: monitoring_v3.ListTimeSeriesRequest
) -> list[monitoring_v3.TimeSeries]:
    # retry=None and a short timeout: a broken emulator fails the test in seconds, not 90 s.
    return list(client.list_time_series(request=req, retry=None, timeout=10))


def by_revision(series: list[monitoring_v3.TimeSeries]) -> dict[str, monitoring_v3.TimeSeries]:
    return {ts.resource.labels["revision_name"]: ts for ts in series}


def expected_count(revision: str, code_class: str | None, minutes: range) -> int:
    return sum(
        per_minute[i]
        for (_, rev, code), per_minute in COUNTS.items()
        if rev == revision and (code_class is None or code.startswith(code_class[0]))
        for i in minutes
    )


# --------------------------------------------------------------------------------------------
# Error ratio queries
# --------------------------------------------------------------------------------------------


def test_5xx_numerator_and_denominator_per_revision(
    loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    numerator = by_revision(fetch(client, request(FIVE_XX)))
    denominator = by_revision(fetch(client, request(CHECKOUT)))
    assert set(numerator) == set(denominator) == {"checkout-bad", "checkout-good"}

    # Two 300-s periods ending at the interval's end; the first holds minutes 0..4.
    first, second = range(5), range(5, 10)
    for revision in ("checkout-bad", "checkout-good"):
        for series, code_class in ((numerator[revision], "5xx"), (denominator[revision], None)):
            assert [p.value.int64_value for p in series.points] == [
                expected_count(revision, code_class, second),  # newest first
                expected_count(revision, code_class, first),
            ]
            assert [p.interval.end_time for p in series.points] == [
                T0 + timedelta(minutes=10),
                T0 + timedelta(minutes=5),
            ]
            assert series.points[0].interval.start_time == T0 + timedelta(minutes=5)
            assert series.metric_kind == Kind.DELTA and series.value_type == VType.INT64
            assert series.unit == "1"
            # Only the grouped labels survive (plus project_id); no response_code anywhere.
            assert dict(series.resource.labels) == resource("checkout", revision)
            assert dict(series.metric.labels) == {}
            assert series.metric.type == REQUEST_COUNT

    bad_errors = sum(p.value.int64_value for p in numerator["checkout-bad"].points)
    bad_total = sum(p.value.int64_value for p in denominator["checkout-bad"].points)
    assert (bad_errors, bad_total) == (200, 1045)


def test_one_query_grouped_by_response_code_class(
    loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    series = fetch(client, request(CHECKOUT, group_by=[*GROUP_BY_REVISION, "metric.label.response_code_class"]))
    got = {
        (ts.resource.labels["revision_name"], ts.metric.labels["response_code_class"]): sum(
            p.value.int64_value for p in ts.points
        )
        for ts in series
    }
    assert got == {
        ("checkout-bad", "2xx"): expected_count("checkout-bad", "2xx", range(10)),
        ("checkout-bad", "5xx"): 200,
        ("checkout-good", "2xx"): 990,
        ("checkout-good", "5xx"): 10,
    }


def test_align_rate_is_delta_per_second(loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    series = by_revision(fetch(client, request(FIVE_XX, aligner="ALIGN_RATE")))
    point = series["checkout-bad"].points[0]
    assert point.value.double_value == pytest.approx(100 / 300)
    assert series["checkout-bad"].value_type == VType.DOUBLE


def test_interval_is_half_open(loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    """(start, end]: a window starting at 12:05 excludes the point that ends at 12:05."""
    req = request(FIVE_XX, start=T0 + timedelta(minutes=5), period_s=300)
    series = by_revision(fetch(client, req))
    assert [p.value.int64_value for p in series["checkout-bad"].points] == [100]


# --------------------------------------------------------------------------------------------
# Latency queries
# --------------------------------------------------------------------------------------------

LATENCY = f'metric.type = "{LATENCIES}" AND resource.label.service_name = "checkout"'


def expected_histogram(revision: str, minutes: range) -> Histogram:
    merged = merge_all(
        [
            Histogram.from_samples(CLOUD_RUN_LATENCY_BUCKETS, samples[i])
            for (rev, _), samples in LATENCY_SAMPLES.items()
            if rev == revision
            for i in minutes
        ]
    )
    assert merged is not None
    return merged


def test_latency_sum_keeps_merged_distributions(
    loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    series = by_revision(fetch(client, request(LATENCY)))
    bad = series["checkout-bad"]
    assert bad.value_type == VType.DISTRIBUTION and bad.metric_kind == Kind.DELTA and bad.unit == "ms"
    newest = bad.points[0].value.distribution_value
    expected = expected_histogram("checkout-bad", range(5, 10))
    assert newest.count == expected.count == 5 * (90 + 20)
    assert list(newest.bucket_counts) == list(expected.counts)
    assert newest.mean == pytest.approx(expected.mean)
    assert newest.bucket_options.exponential_buckets.num_finite_buckets == 100
    assert newest.bucket_options.exponential_buckets.growth_factor == pytest.approx(1.4)
    assert histogram_from_proto(newest).counts == expected.counts


def test_reduce_percentile_95_returns_doubles_from_merged_distributions(
    loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    series = by_revision(fetch(client, request(LATENCY, reducer="REDUCE_PERCENTILE_95")))
    for revision in ("checkout-bad", "checkout-good"):
        ts = series[revision]
        assert ts.value_type == VType.DOUBLE
        assert dict(ts.resource.labels) == resource("checkout", revision)
        assert [p.value.double_value for p in ts.points] == pytest.approx(
            [
                expected_histogram(revision, range(5, 10)).percentile(95),
                expected_histogram(revision, range(0, 5)).percentile(95),
            ]
        )
    assert series["checkout-bad"].points[0].value.double_value > 2000
    assert series["checkout-good"].points[0].value.double_value < 200


def test_per_series_percentile_then_reduce_percentile_is_refused(
    loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    with pytest.raises(exceptions.MethodNotImplemented, match="REDUCE_PERCENTILE_95 on DOUBLE"):
        fetch(client, request(LATENCY, aligner="ALIGN_PERCENTILE_95", reducer="REDUCE_PERCENTILE_95"))
    # Without a reducer the per-series percentile is fine: one series per response_code_class.
    series = fetch(client, request(LATENCY, aligner="ALIGN_PERCENTILE_95", reducer="REDUCE_NONE"))
    assert len(series) == 4 and all(ts.value_type == VType.DOUBLE for ts in series)
    assert {ts.metric.labels["response_code_class"] for ts in series} == {"2xx", "5xx"}


# --------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------

ALL_REQUESTS = f'metric.type = "{REQUEST_COUNT}"'


@pytest.mark.parametrize(
    ("filter_", "revisions"),
    [
        pytest.param(ALL_REQUESTS, {"checkout-bad", "checkout-good", "cart-00001"}, id="no-service-filter"),
        pytest.param(CHECKOUT, {"checkout-bad", "checkout-good"}, id="service-filter-excludes-cart"),
        pytest.param(
            ALL_REQUESTS + ' AND resource.labels.service_name != "checkout"', {"cart-00001"}, id="labels-not-equal"
        ),
        pytest.param(
            ALL_REQUESTS + ' AND resource.label.revision_name = one_of("checkout-good", "cart-00001")',
            {"checkout-good", "cart-00001"},
            id="one_of",
        ),
        pytest.param(
            ALL_REQUESTS + ' AND resource.label.revision_name = starts_with("checkout-")',
            {"checkout-bad", "checkout-good"},
            id="starts_with",
        ),
        pytest.param(
            ALL_REQUESTS + ' AND metric.labels.response_code = "503"', {"checkout-bad", "checkout-good"}, id="code"
        ),
        pytest.param(
            ALL_REQUESTS + ' AND metric.label.response_code = "500" AND resource.type = "cloud_run_revision"',
            {"checkout-bad", "cart-00001"},
            id="and-chain",
        ),
        pytest.param(ALL_REQUESTS + ' AND resource.type = "gce_instance"', set(), id="other-resource-type"),
    ],
)
def test_filters_select_the_right_series(
    loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient, filter_: str, revisions: set[str]
) -> None:
    assert set(by_revision(fetch(client, request(filter_)))) == revisions


def test_bool_metric_label(emulator: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    metric = "run.googleapis.com/container/completed_probe_attempt_count"
    for i in range(3):
        start, end = minute(i)
        for healthy, count in ((True, 5), (False, 1)):
            labels = {"probe_type": "STARTUP", "is_healthy": healthy}
            emulator.write_point(metric, labels, "cloud_run_revision", resource("checkout", "r1"), start, end, count)
    filter_ = f'metric.type = "{metric}" AND metric.labels.probe_type = "STARTUP" AND metric.labels.is_healthy = false'
    series = fetch(client, request(filter_, start=T0, end=T0 + timedelta(minutes=3), period_s=180))
    assert [p.value.int64_value for ts in series for p in ts.points] == [3]


@pytest.mark.parametrize(
    ("filter_", "named"),
    [
        (CHECKOUT + ' OR resource.label.service_name = "cart"', "OR"),
        (CHECKOUT + ' AND NOT resource.label.service_name = "cart"', "NOT"),
        (CHECKOUT + ' AND (resource.label.location = "us-central1")', "parentheses"),
        (CHECKOUT + ' AND resource.label.revision_name =~ "checkout-.*"', "=~"),
        (CHECKOUT + ' AND resource.label.revision_name = monitoring.regex.full_match("c.*")', "monitoring.regex"),
        (CHECKOUT + ' AND -resource.label.location = "x"', "negation"),
        (CHECKOUT + ' AND project = "demo-proj"', "project"),
        ('resource.type = "cloud_run_revision"', "metric.type"),
        (f'metric.type = "{REQUEST_COUNT}" AND metric.type = "{LATENCIES}"', "metric.type"),
    ],
)
def test_unsupported_filters_are_invalid_argument(
    loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient, filter_: str, named: str
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match=named):
        fetch(client, request(filter_))


# --------------------------------------------------------------------------------------------
# Request validation
# --------------------------------------------------------------------------------------------


def test_missing_end_time_is_invalid(loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="end time is required"):
        fetch(client, request(FIVE_XX, end=None))


def test_alignment_below_60s_is_invalid(loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="at least 60 seconds"):
        fetch(client, request(FIVE_XX, period_s=30))


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"aligner": "ALIGN_NONE"}, exceptions.InvalidArgument, "requires a per-series aligner"),
        ({"aligner": "ALIGN_FRACTION_TRUE"}, exceptions.InvalidArgument, "kind DELTA and value type INT64"),
        ({"aligner": "ALIGN_STDDEV"}, exceptions.MethodNotImplemented, "ALIGN_STDDEV"),
        ({"reducer": "REDUCE_STDDEV"}, exceptions.MethodNotImplemented, "REDUCE_STDDEV"),
        ({"reducer": "REDUCE_PERCENTILE_95"}, exceptions.MethodNotImplemented, "REDUCE_PERCENTILE_95"),
        ({"group_by": ["resource.type"]}, exceptions.InvalidArgument, "groupByFields"),
    ],
)
def test_unsupported_aggregations_name_the_culprit(
    loaded: MonitoringEmulator,
    client: monitoring_v3.MetricServiceClient,
    kwargs: dict[str, object],
    error: type[Exception],
    named: str,
) -> None:
    with pytest.raises(error, match=named):
        fetch(client, request(CHECKOUT, **kwargs))  # type: ignore[arg-type]


def test_bad_project_name_is_invalid(loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="projects/PROJECT_ID"):
        fetch(client, request(CHECKOUT, name="demo-proj"))


def test_other_project_sees_nothing(loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    assert fetch(client, request(CHECKOUT, name="projects/other")) == []


def test_empty_result_has_no_series_and_no_unit(
    loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    req = request(CHECKOUT, start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=2))
    pager = client.list_time_series(request=req, retry=None, timeout=10)
    assert list(pager) == []
    assert pager.next_page_token == ""
    assert pager.unit == ""


def test_headers_view_returns_series_without_points(
    loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    req = request(CHECKOUT, view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.HEADERS)
    series = fetch(client, req)
    assert {ts.resource.labels["revision_name"] for ts in series} == {"checkout-bad", "checkout-good"}
    assert all(len(ts.points) == 0 for ts in series)


# --------------------------------------------------------------------------------------------
# Paging
# --------------------------------------------------------------------------------------------


def test_paging_across_pages(loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    req = request(ALL_REQUESTS, reducer="REDUCE_NONE", page_size=2)  # 6 series → 3 pages
    series = fetch(client, req)
    assert len(series) == 6
    assert len({(ts.resource.labels["revision_name"], ts.metric.labels["response_code"]) for ts in series}) == 6
    calls = loaded.calls
    assert len(calls) == 3
    assert calls[0].page_token == "" and calls[1].page_token and calls[2].page_token
    assert calls[1].page_token != calls[2].page_token


def test_page_token_belongs_to_its_query(loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    first = client.list_time_series(request=request(ALL_REQUESTS, reducer="REDUCE_NONE", page_size=2), retry=None)
    token = first.next_page_token
    assert token
    with pytest.raises(exceptions.InvalidArgument, match="page_token"):
        fetch(client, request(CHECKOUT, reducer="REDUCE_NONE", page_size=2, page_token=token))


# --------------------------------------------------------------------------------------------
# Outages and call counting
# --------------------------------------------------------------------------------------------


def test_fail_next_raises_service_unavailable(
    loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    loaded.fail_next(2)
    for _ in range(2):
        with pytest.raises(exceptions.ServiceUnavailable):
            fetch(client, request(FIVE_XX))
    assert len(fetch(client, request(FIVE_XX))) == 2
    assert len(loaded.calls) == 3


def test_fail_next_with_another_code(loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    loaded.fail_next(1, code=grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(exceptions.PermissionDenied):
        fetch(client, request(FIVE_XX))


def test_delay_next_hits_the_client_deadline(
    loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    loaded.delay_next(1, seconds=30)
    started = time.monotonic()
    with pytest.raises(exceptions.DeadlineExceeded):
        list(client.list_time_series(request=request(FIVE_XX), retry=None, timeout=0.3))
    assert time.monotonic() - started < 5
    # Stopping the emulator cuts the injected delay short (the fixture's stop must not hang).
    loaded.stop()
    assert time.monotonic() - started < 10


def test_reset_forgets_everything(loaded: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    fetch(client, request(FIVE_XX))
    loaded.fail_next(5)
    loaded.reset()
    assert loaded.calls == []
    assert fetch(client, request(FIVE_XX)) == []


# --------------------------------------------------------------------------------------------
# Writing through the client
# --------------------------------------------------------------------------------------------


def point_series(value: int, end: datetime, start: datetime | None = None) -> monitoring_v3.TimeSeries:
    interval = monitoring_v3.TimeInterval(end_time=end)
    if start is not None:
        interval.start_time = start
    return monitoring_v3.TimeSeries(
        metric={"type": REQUEST_COUNT, "labels": {"response_code": "200", "response_code_class": "2xx"}},
        resource={"type": "cloud_run_revision", "labels": resource("checkout", "checkout-new")},
        metric_kind=Kind.DELTA,
        value_type=VType.INT64,
        points=[monitoring_v3.Point(interval=interval, value=monitoring_v3.TypedValue(int64_value=value))],
    )


def test_create_time_series_then_list(emulator: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    for i in range(3):
        start, end = minute(i)
        client.create_time_series(name=f"projects/{PROJECT}", time_series=[point_series(10 * (i + 1), end, start)])
    assert len(emulator.create_calls) == 3

    raw = fetch(client, request(CHECKOUT, aligner="ALIGN_NONE", reducer="REDUCE_NONE"))
    assert len(raw) == 1
    assert [p.value.int64_value for p in raw[0].points] == [30, 20, 10]  # newest first
    assert raw[0].points[0].interval.end_time == T0 + timedelta(minutes=3)
    assert dict(raw[0].metric.labels) == {"response_code": "200", "response_code_class": "2xx"}

    summed = fetch(client, request(CHECKOUT, start=T0, end=T0 + timedelta(minutes=3), period_s=180))
    assert [p.value.int64_value for p in summed[0].points] == [60]


@pytest.mark.parametrize(
    ("series", "named"),
    [
        pytest.param(
            lambda: [point_series(1, T0 + timedelta(minutes=1), T0), point_series(1, T0 + timedelta(minutes=1), T0)],
            "in order",
            id="same-series-twice",
        ),
        pytest.param(lambda: [point_series(1, T0)], "start time < end time", id="delta-without-start"),
    ],
)
def test_create_time_series_rejections_are_atomic(
    emulator: MonitoringEmulator,
    client: monitoring_v3.MetricServiceClient,
    series: object,
    named: str,
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match=named):
        client.create_time_series(name=f"projects/{PROJECT}", time_series=series(), retry=None, timeout=10)  # type: ignore[operator]
    assert fetch(client, request(CHECKOUT, aligner="ALIGN_NONE", reducer="REDUCE_NONE")) == []


# --------------------------------------------------------------------------------------------
# Gauges and bools (instance counts, uptime checks)
# --------------------------------------------------------------------------------------------


def test_gauge_mean_and_bool_reducers(emulator: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    instances = "run.googleapis.com/container/instance_count"
    uptime = "monitoring.googleapis.com/uptime_check/check_passed"
    for i in range(1, 4):
        at = T0 + timedelta(minutes=i)
        emulator.write_point(
            instances, {"state": "active"}, "cloud_run_revision", resource("checkout", "r1"), None, at, i
        )
        for location, passed in (("usa-iowa", True), ("eur-belgium", i != 3), ("apac-singapore", i != 3)):
            emulator.write_point(
                uptime,
                {"check_id": "checkout-uptime", "checker_location": location},
                "uptime_url",
                {"project_id": PROJECT, "host": "checkout.example.com"},
                None,
                at,
                passed,
            )
    end = T0 + timedelta(minutes=3)
    mean = fetch(client, request(f'metric.type = "{instances}"', aligner="ALIGN_MEAN", end=end, period_s=180))
    assert [p.value.double_value for p in mean[0].points] == [2.0]
    assert mean[0].metric_kind == Kind.GAUGE

    # Per minute: how many locations see the check failing (the typical uptime alert).
    failing = fetch(
        client,
        request(
            f'metric.type = "{uptime}"',
            aligner="ALIGN_NEXT_OLDER",
            reducer="REDUCE_COUNT_FALSE",
            group_by=["metric.label.check_id"],
            end=end,
            period_s=60,
        ),
    )
    assert [p.value.int64_value for p in failing[0].points] == [2, 0, 0]
    assert dict(failing[0].metric.labels) == {"check_id": "checkout-uptime"}
    assert dict(failing[0].resource.labels) == {"project_id": PROJECT}

    uptime_filter = f'metric.type = "{uptime}"'
    fraction = fetch(
        client,
        request(
            uptime_filter, aligner="ALIGN_FRACTION_TRUE", reducer="REDUCE_MEAN", group_by=[], end=end, period_s=180
        ),
    )
    assert fraction[0].points[0].value.double_value == pytest.approx(7 / 9)


def test_write_point_rejects_what_the_api_rejects(emulator: MonitoringEmulator) -> None:
    res = resource("checkout", "r1")
    emulator.write_point(REQUEST_COUNT, {}, "cloud_run_revision", res, T0, T0 + timedelta(minutes=1), 1)
    with pytest.raises(ValueError, match="in order"):
        emulator.write_point(REQUEST_COUNT, {}, "cloud_run_revision", res, T0, T0 + timedelta(minutes=1), 1)
    with pytest.raises(ValueError, match="INT64"):
        emulator.write_point(REQUEST_COUNT, {}, "cloud_run_revision", res, T0, T0 + timedelta(minutes=2), 1.5)
    with pytest.raises(ValueError, match="timezone"):
        emulator.write_point(REQUEST_COUNT, {}, "cloud_run_revision", res, None, datetime(2024, 6, 1), 1)
