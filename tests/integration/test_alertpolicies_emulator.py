"""Generated alert conditions run as ListTimeSeries queries against the Monitoring emulator.

The real ``MetricServiceClient`` sends each condition's filter and aggregation to the emulator,
which evaluates them as Monitoring does for the supported subset. The data set has four services
in two regions, two revisions each, with 2xx and 5xx requests, latencies and probe attempts, so
a filter that selects one series too many (or too few) shows up as a wrong set of series.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import monitoring_v3

from controller.core.alertpolicies import GeneratedAlertPolicy, generate
from controller.core.policy import Policy
from controller.core.policy_matching import PolicySet
from controller.core.stats import Histogram
from controller.emulator.monitoring import CLOUD_RUN_LATENCY_BUCKETS, MonitoringEmulator, insecure_client

PROJECT = "demo-proj"
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
MINUTES = 5
END = T0 + timedelta(minutes=MINUTES)
REQUEST_COUNT = "run.googleapis.com/request_count"
LATENCIES = "run.googleapis.com/request_latencies"
PROBES = "run.googleapis.com/container/completed_probe_attempt_count"

# (service, region) → revisions; every revision serves 2xx and 5xx.
SERVICES = {
    ("checkout", "us-central1"): ("checkout-00041-abc", "checkout-00042-xyz"),
    ("checkout", "europe-west1"): ("checkout-00007-eu1", "checkout-00008-eu2"),
    ("payments-api", "us-central1"): ("payments-api-00003-aaa", "payments-api-00004-bbb"),
    ("cart", "us-central1"): ("cart-00001-ccc", "cart-00002-ddd"),
}
OK_PER_MINUTE = 90
ERRORS_PER_MINUTE = 10
FAILED_PROBES_PER_MINUTE = 2


def resource(service: str, revision: str, region: str) -> dict[str, str]:
    return {"project_id": PROJECT, "service_name": service, "revision_name": revision, "location": region}


def latency(ms: float, count: int) -> Histogram:
    return Histogram.from_samples(CLOUD_RUN_LATENCY_BUCKETS, [ms] * count)


@pytest.fixture(scope="module")
def emulator() -> Iterator[MonitoringEmulator]:
    with MonitoringEmulator(default_project=PROJECT) as emu:
        for i in range(MINUTES):
            start, end = T0 + timedelta(minutes=i), T0 + timedelta(minutes=i + 1)
            for (service, region), revisions in SERVICES.items():
                for revision in revisions:
                    res = resource(service, revision, region)
                    for code, count in (("200", OK_PER_MINUTE), ("503", ERRORS_PER_MINUTE)):
                        labels = {"response_code": code, "response_code_class": f"{code[0]}xx"}
                        emu.write_point(REQUEST_COUNT, labels, "cloud_run_revision", res, start, end, count)
                        emu.write_point(LATENCIES, labels, "cloud_run_revision", res, start, end, latency(100.0, count))
                    for healthy, count in ((True, 6), (False, FAILED_PROBES_PER_MINUTE)):
                        labels_p: dict[str, object] = {"probe_type": "LIVENESS", "is_healthy": healthy}
                        emu.write_point(PROBES, labels_p, "cloud_run_revision", res, start, end, count)
        yield emu


@pytest.fixture(scope="module")
def client(emulator: MonitoringEmulator) -> Iterator[monitoring_v3.MetricServiceClient]:
    c = insecure_client(emulator.target)
    yield c
    c.transport.close()  # type: ignore[no-untyped-call]


Series = tuple[str, str, str]  # service, revision, region


def query(
    client: monitoring_v3.MetricServiceClient, filter_: str, aggregation: dict[str, Any], minutes: int = MINUTES
) -> dict[Series, float]:
    """Run one filter + aggregation; sum each output series' points (as the adapter does)."""
    seconds = int(aggregation["alignmentPeriod"].removesuffix("s"))
    request = monitoring_v3.ListTimeSeriesRequest(
        name=f"projects/{PROJECT}",
        filter=filter_,
        interval=monitoring_v3.TimeInterval(start_time=END - timedelta(minutes=minutes), end_time=END),
        aggregation=monitoring_v3.Aggregation(
            alignment_period=timedelta(seconds=seconds),
            per_series_aligner=aggregation["perSeriesAligner"],
            cross_series_reducer=aggregation["crossSeriesReducer"],
            group_by_fields=aggregation["groupByFields"],
        ),
    )
    out: dict[Series, float] = {}
    for ts in client.list_time_series(request=request):
        labels = ts.resource.labels
        assert set(labels) == {"project_id", "service_name", "revision_name", "location"}
        key = (labels["service_name"], labels["revision_name"], labels["location"])
        value = 0.0
        for point in ts.points:
            v = point.value
            value += v.int64_value if "int64_value" in v else v.double_value
        out[key] = value
    return out


def revisions_of(*wanted: tuple[str, str]) -> set[Series]:
    return {(s, rev, r) for (s, r), revs in SERVICES.items() if (s, r) in wanted for rev in revs}


def adapter_series(client: monitoring_v3.MetricServiceClient, service: str, region: str) -> set[Series]:
    """What the Monitoring adapter queries for one service: request_count grouped by revision."""
    filter_ = (
        f'metric.type = "{REQUEST_COUNT}" AND resource.type = "cloud_run_revision" '
        f'AND resource.label.service_name = "{service}" AND resource.label.location = "{region}"'
    )
    aggregation = {
        "alignmentPeriod": f"{MINUTES * 60}s",
        "perSeriesAligner": "ALIGN_DELTA",
        "crossSeriesReducer": "REDUCE_SUM",
        "groupByFields": ["resource.label.service_name", "resource.label.revision_name", "resource.label.location"],
    }
    return set(query(client, filter_, aggregation))


def policy(**fields: Any) -> Policy:
    return Policy.model_validate({"name": "p", **fields}, by_alias=True, by_name=False)


def condition(item: GeneratedAlertPolicy, index: int = 0) -> dict[str, Any]:
    value: dict[str, Any] = item.body["conditions"][index]["conditionThreshold"]
    return value


def selected(client: monitoring_v3.MetricServiceClient, item: GeneratedAlertPolicy) -> set[Series]:
    """The union of series every condition of the policy watches (denominator where there is one)."""
    found: set[Series] = set()
    for i in range(len(item.body["conditions"])):
        c = condition(item, i)
        if "denominatorFilter" in c:
            found |= set(query(client, c["denominatorFilter"], c["denominatorAggregations"][0]))
        else:
            found |= set(query(client, c["filter"], c["aggregations"][0]))
    return found


ALL = set(SERVICES)


@pytest.mark.parametrize(
    ("match", "covered"),
    [
        ({}, ALL),
        ({"services": ["checkout"]}, {("checkout", "us-central1"), ("checkout", "europe-west1")}),
        ({"services": ["checkout"], "regions": ["us-central1"]}, {("checkout", "us-central1")}),
        (
            {"services": ["checkout", "cart"], "regions": ["us-*"]},
            {("checkout", "us-central1"), ("cart", "us-central1")},
        ),
        ({"services": ["payments-*"]}, {("payments-api", "us-central1")}),
        ({"services": ["checkout", "payments-*"], "projects": [PROJECT]}, ALL - {("cart", "us-central1")}),
        ({"regions": ["europe-west1"]}, {("checkout", "europe-west1")}),
    ],
    ids=["any", "exact", "exact+region", "one_of+prefix-region", "prefix", "mixed+project", "region-only"],
)
def test_every_condition_selects_exactly_the_covered_revisions(
    client: monitoring_v3.MetricServiceClient, match: dict[str, Any], covered: set[tuple[str, str]]
) -> None:
    triggers = {"error_rate": {"above": 0.05}, "latency_p95": {"above_ms": 500}, "health": {}}
    generated = generate([policy(match=match, triggers=triggers)])
    assert [g.trigger for g in generated] == ["error_rate", "latency_p95", "health"]
    for item in generated:
        assert selected(client, item) == revisions_of(*covered), item.filename


def test_the_5xx_numerator_counts_only_5xx(client: monitoring_v3.MetricServiceClient) -> None:
    (item,) = generate([policy(match={"services": ["checkout"]}, triggers={"error_rate": {"above": 0.05}})])
    c = condition(item)
    numerator = query(client, c["filter"], c["aggregations"][0])
    denominator = query(client, c["denominatorFilter"], c["denominatorAggregations"][0])
    assert set(numerator) == set(denominator) == revisions_of(("checkout", "us-central1"), ("checkout", "europe-west1"))
    for series, errors in numerator.items():
        assert errors == ERRORS_PER_MINUTE * MINUTES
        assert errors / denominator[series] == pytest.approx(0.1)  # 10 of 100: above 5%, the alert fires


def test_latency_condition_reads_a_p95_per_revision(client: monitoring_v3.MetricServiceClient) -> None:
    (item,) = generate([policy(match={"services": ["cart"]}, triggers={"latency_p95": {"above_ms": 50}})])
    c = condition(item)
    p95 = query(client, c["filter"], c["aggregations"][0], minutes=1)
    assert set(p95) == revisions_of(("cart", "us-central1"))
    assert all(90 <= v <= 150 for v in p95.values())  # 100 ms within one bucket's width


def test_health_condition_counts_failed_attempts_over_its_window(client: monitoring_v3.MetricServiceClient) -> None:
    (item,) = generate([policy(match={"services": ["cart"]}, triggers={"health": {"consecutive_failures": 3}})])
    c = condition(item)
    assert c["aggregations"][0]["alignmentPeriod"] == "120s"
    # One evaluation: the last window only (the interval is exactly one alignment period).
    failures = query(client, c["filter"], c["aggregations"][0], minutes=2)
    assert set(failures) == revisions_of(("cart", "us-central1"))
    # 2 failed attempts a minute, 4 per window: more than consecutive_failures - 1, so it fires.
    assert all(v == 2 * FAILED_PROBES_PER_MINUTE > c["thresholdValue"] for v in failures.values())


@pytest.mark.parametrize(("service", "region"), sorted(SERVICES))
def test_conditions_select_the_same_series_as_the_adapter(
    client: monitoring_v3.MetricServiceClient, service: str, region: str
) -> None:
    (item,) = generate(
        [policy(match={"services": [service], "regions": [region]}, triggers={"error_rate": {"above": 0.05}})]
    )
    assert selected(client, item) == adapter_series(client, service, region) == revisions_of((service, region))


def test_a_policy_set_watches_each_revision_under_the_policy_the_controller_picks(
    client: monitoring_v3.MetricServiceClient,
) -> None:
    """Every series is watched by alerts of exactly the policy that ``select_for`` would choose."""
    policies = PolicySet(
        [
            policy(name="default", triggers={"error_rate": {"above": 0.05}}),
            policy(name="checkout-trial", match={"services": ["checkout"]}, mode="dry-run", triggers={"health": {}}),
            policy(name="eu", match={"services": ["checkout"], "regions": ["europe-west1"]}, canary={}),
        ]
    )
    watched: dict[Series, set[str]] = {}
    for item in generate(policies):
        for series in selected(client, item):
            watched.setdefault(series, set()).add(item.body["userLabels"].get("rollback_policy", "(by match)"))
    for series, names in watched.items():
        service, _, region = series
        choice = policies.select_for(PROJECT, region, service)
        assert choice.policy is not None
        # A named alert must name the chosen policy; an unnamed one lets the controller choose.
        assert names <= {choice.policy.name, "(by match)"}, (series, names, choice.reason)
    # The dry-run service's errors are no longer watched under "default" (which would enforce).
    assert not any("default" in names for (s, _, _), names in watched.items() if s == "checkout")
