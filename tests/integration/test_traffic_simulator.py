"""The traffic simulator: metrics written to the Monitoring emulator follow the Cloud Run emulator's split.

Raw points are read back through the real client (``ALIGN_NONE``) to check what Cloud Run would
have reported; the pure helpers (split, scaling, binomial) are checked with properties.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from google.api import metric_pb2
from google.cloud import monitoring_v3
from hypothesis import given
from hypothesis import strategies as st

from controller.core.stats import bucket_bounds, bucket_index, merge_all
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import (
    CLOUD_RUN_LATENCY_BUCKETS,
    MonitoringEmulator,
    histogram_from_proto,
    insecure_client,
)
from controller.emulator.traffic import (
    MAX_MINUTES,
    RevisionProfile,
    TrafficSimulator,
    binomial,
    scale_counts,
    split_requests,
)

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PROJECT, REGION, SERVICE = "demo-proj", "us-central1", "checkout"
OLD, NEW = "checkout-00041-abc", "checkout-00042-xyz"
REQUEST_COUNT = "run.googleapis.com/request_count"
LATENCIES = "run.googleapis.com/request_latencies"
PROBES = "run.googleapis.com/container/completed_probe_attempt_count"


@pytest.fixture
def monitoring() -> Iterator[MonitoringEmulator]:
    with MonitoringEmulator() as emu:
        yield emu


@pytest.fixture
def run() -> CloudRunEmulator:
    emu = CloudRunEmulator()  # in-process helpers only; no HTTP server is started
    emu.add_service(
        PROJECT,
        REGION,
        SERVICE,
        revisions=[RevisionSpec(OLD, T0 - timedelta(days=2)), RevisionSpec(NEW, T0 - timedelta(minutes=10))],
    )
    return emu


@pytest.fixture
def client(monitoring: MonitoringEmulator) -> Iterator[monitoring_v3.MetricServiceClient]:
    c = insecure_client(monitoring.target)
    yield c
    c.transport.close()  # type: ignore[no-untyped-call]


def simulator(
    run: CloudRunEmulator, monitoring: MonitoringEmulator, *, rpm: int = 1000, seed: int = 0
) -> TrafficSimulator:
    return TrafficSimulator(
        run,
        monitoring,
        project=PROJECT,
        region=REGION,
        service=SERVICE,
        requests_per_minute=rpm,
        seed=seed,
        start=T0,
    )


def raw(client: monitoring_v3.MetricServiceClient, metric: str, start: datetime, end: datetime) -> list[Any]:
    """Every stored series of ``metric`` for the service, unaggregated (points newest first)."""
    request = monitoring_v3.ListTimeSeriesRequest(
        name=f"projects/{PROJECT}",
        filter=f'metric.type = "{metric}" AND resource.label.service_name = "{SERVICE}"',
        interval=monitoring_v3.TimeInterval(start_time=start, end_time=end),
    )
    return list(client.list_time_series(request=request, retry=None, timeout=10))


def totals_by(series: list[Any], *labels: str) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    for ts in series:
        key = tuple(ts.resource.labels.get(k, ts.metric.labels.get(k, "")) for k in labels)
        out[key] = out.get(key, 0) + sum(p.value.int64_value for p in ts.points)
    return out


# --------------------------------------------------------------------------------------------
# Following the traffic split
# --------------------------------------------------------------------------------------------


def test_latest_resolves_to_the_newest_ready_revision(run: CloudRunEmulator, monitoring: MonitoringEmulator) -> None:
    sim = simulator(run, monitoring)
    assert sim.split() == {NEW: 100}
    run.set_revision_ready(PROJECT, REGION, SERVICE, NEW, ready=False)
    assert sim.split() == {OLD: 100}
    run.set_traffic(
        PROJECT,
        REGION,
        SERVICE,
        [{"type": "LATEST", "percent": 30}, {"revision": OLD, "percent": 60}, {"revision": NEW, "percent": 10}],
    )
    run.set_revision_ready(PROJECT, REGION, SERVICE, NEW, ready=True)
    # LATEST (now NEW again) and the pinned NEW entry add up; a tagged 0 % entry would be omitted.
    assert sim.split() == {OLD: 60, NEW: 40}


def test_points_follow_the_split_minute_by_minute(
    run: CloudRunEmulator, monitoring: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    sim = simulator(run, monitoring, rpm=1000)
    run.set_traffic(PROJECT, REGION, SERVICE, [{"revision": OLD, "percent": 75}, {"revision": NEW, "percent": 25}])
    sim.advance(3)
    run.set_traffic(PROJECT, REGION, SERVICE, [{"revision": OLD, "percent": 100}])
    sim.advance(2)
    assert sim.now == T0 + timedelta(minutes=5)

    counts = raw(client, REQUEST_COUNT, T0, sim.now)
    by_revision = totals_by(counts, "revision_name")
    assert by_revision == {(OLD,): 3 * 750 + 2 * 1000, (NEW,): 3 * 250}
    assert sim.totals[OLD].requests == 4250 and sim.totals[NEW].requests == 750
    assert sim.totals[NEW].minutes_serving == 3

    # Every point is a 60-s DELTA on the simulated clock, with Cloud Run's resource labels.
    for ts in counts:
        assert ts.metric_kind == metric_pb2.MetricDescriptor.MetricKind.DELTA
        assert dict(ts.resource.labels) == {
            "project_id": PROJECT,
            "service_name": SERVICE,
            "revision_name": ts.resource.labels["revision_name"],
            "location": REGION,
            "configuration_name": SERVICE,
        }
        assert ts.resource.type == "cloud_run_revision"
        assert ts.metric.labels["response_code_class"] in {"2xx", "5xx"}
        for p in ts.points:
            assert p.interval.end_time - p.interval.start_time == timedelta(minutes=1)
            assert (p.interval.end_time - T0) % timedelta(minutes=1) == timedelta(0)
    # NEW stopped at minute 3: its newest point ends there.
    new_ends = {p.interval.end_time for ts in counts if ts.resource.labels["revision_name"] == NEW for p in ts.points}
    assert max(new_ends) == T0 + timedelta(minutes=3)


def test_error_counts_are_binomial_and_classes_add_up(
    run: CloudRunEmulator, monitoring: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    sim = simulator(run, monitoring, rpm=2000, seed=3)
    sim.set_profile(NEW, RevisionProfile(error_rate=0.18))
    sim.advance(10)
    by_class = totals_by(raw(client, REQUEST_COUNT, T0, sim.now), "response_code_class")
    assert by_class[("2xx",)] + by_class[("5xx",)] == 20_000
    errors = by_class[("5xx",)]
    assert errors == sim.totals[NEW].errors
    sd = math.sqrt(20_000 * 0.18 * 0.82)
    assert abs(errors - 3600) < 4 * sd


def test_latency_distributions_have_the_profiles_percentiles(
    run: CloudRunEmulator, monitoring: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    sim = simulator(run, monitoring, rpm=3000, seed=5)
    profile = RevisionProfile(error_rate=0.1, latency_ms=2500.0, latency_sigma=0.5)
    sim.set_profile(NEW, profile)
    sim.advance(5)
    series = raw(client, LATENCIES, T0, sim.now)
    assert {ts.metric.labels["response_code_class"] for ts in series} == {"2xx", "5xx"}
    hists = [histogram_from_proto(p.value.distribution_value) for ts in series for p in ts.points]
    assert {h.options for h in hists} == {CLOUD_RUN_LATENCY_BUCKETS}
    merged = merge_all(hists)
    assert merged is not None and merged.count == 15_000  # one latency per request, exactly
    # Per class, the distribution counts what request_count says.
    counts = totals_by(raw(client, REQUEST_COUNT, T0, sim.now), "response_code_class")
    for cls in ("2xx", "5xx"):
        cls_count = sum(
            histogram_from_proto(p.value.distribution_value).count
            for ts in series
            if ts.metric.labels["response_code_class"] == cls
            for p in ts.points
        )
        assert cls_count == counts[(cls,)]
    for q, z in ((50, 0.0), (95, 1.6448536269514722), (99, 2.3263478740408408)):
        expected = profile.latency_ms * math.exp(profile.latency_sigma * z)
        lower, upper = bucket_bounds(CLOUD_RUN_LATENCY_BUCKETS)[bucket_index(CLOUD_RUN_LATENCY_BUCKETS, expected)]
        got = merged.percentile(q)
        assert got is not None and abs(got - expected) <= upper - lower, (q, got, expected)
    # The mean is the lognormal's, exp(mu + sigma²/2).
    assert merged.mean is not None
    assert merged.mean == pytest.approx(2500.0 * math.exp(0.125), rel=0.05)


def test_probe_attempts_healthy_and_failed(
    run: CloudRunEmulator, monitoring: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    sim = simulator(run, monitoring)
    run.set_traffic(PROJECT, REGION, SERVICE, [{"revision": OLD, "percent": 50}, {"revision": NEW, "percent": 50}])
    sim.set_profile(NEW, RevisionProfile(probe_failures_per_minute=3))
    sim.advance(4)
    probes = totals_by(raw(client, PROBES, T0, sim.now), "revision_name", "is_healthy")
    assert probes == {(OLD, "true"): 24, (NEW, "true"): 12, (NEW, "false"): 12}
    assert sim.totals[NEW].probe_failures == 12 and sim.totals[OLD].probe_failures == 0


def test_idle_revisions_report_nothing(
    run: CloudRunEmulator, monitoring: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    sim = simulator(run, monitoring)
    sim.set_profile(OLD, RevisionProfile(probe_failures_per_minute=5))
    sim.advance(3)  # LATEST = NEW takes everything
    for metric in (REQUEST_COUNT, LATENCIES, PROBES):
        assert {ts.resource.labels["revision_name"] for ts in raw(client, metric, T0, sim.now)} == {NEW}
    assert OLD not in sim.totals


def test_the_same_seed_writes_the_same_points(run: CloudRunEmulator) -> None:
    def snapshot(seed: int) -> list[Any]:
        with MonitoringEmulator() as emu:
            sim = simulator(run, emu, rpm=5000, seed=seed)
            sim.set_profile(NEW, RevisionProfile(error_rate=0.05, latency_ms=300.0))
            sim.advance(3)
            c = insecure_client(emu.target)
            try:
                return [
                    monitoring_v3.TimeSeries.pb(ts).SerializeToString(deterministic=True)
                    for metric in (REQUEST_COUNT, LATENCIES)
                    for ts in raw(c, metric, T0, T0 + timedelta(minutes=3))
                ]
            finally:
                c.transport.close()  # type: ignore[no-untyped-call]

    assert snapshot(11) == snapshot(11)
    assert snapshot(11) != snapshot(12)


def test_high_rates_stay_cheap_and_exact(run: CloudRunEmulator, monitoring: MonitoringEmulator) -> None:
    sim = simulator(run, monitoring, rpm=1_000_000)
    sim.set_profile(NEW, RevisionProfile(error_rate=0.02))
    started = time.monotonic()
    sim.advance(5)
    # At most MAX_LATENCY_SAMPLES latency draws per minute, not a million.
    assert time.monotonic() - started < 5.0
    assert sim.totals[NEW].requests == 5_000_000
    assert abs(sim.totals[NEW].errors - 100_000) < 4 * math.sqrt(5_000_000 * 0.02 * 0.98)


def test_run_until_and_bounds(run: CloudRunEmulator, monitoring: MonitoringEmulator) -> None:
    sim = simulator(run, monitoring, rpm=10)
    sim.run_until(T0 + timedelta(minutes=2, seconds=59))
    assert sim.now == T0 + timedelta(minutes=2)  # partial minutes wait for the next call
    sim.run_until(T0)  # the past: nothing to do
    assert sim.now == T0 + timedelta(minutes=2)
    sim.advance(0)
    assert sim.totals[NEW].requests == 20
    with pytest.raises(ValueError, match="timezone"):
        sim.run_until(datetime(2024, 6, 2))
    with pytest.raises(ValueError, match="minutes"):
        sim.advance(MAX_MINUTES + 1)
    with pytest.raises(ValueError, match="minutes"):
        sim.advance(-1)
    with pytest.raises(ValueError, match="timezone"):
        TrafficSimulator(run, monitoring, project=PROJECT, region=REGION, service=SERVICE, start=datetime(2024, 6, 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"error_rate": 1.5},
        {"error_rate": -0.1},
        {"latency_ms": 0.0},
        {"latency_sigma": -1.0},
        {"probe_failures_per_minute": -1},
    ],
    ids=lambda k: next(iter(k)),
)
def test_profiles_are_validated(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RevisionProfile(**kwargs)


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


@given(
    total=st.integers(min_value=0, max_value=10**7),
    percents=st.dictionaries(st.text(min_size=1, max_size=5), st.integers(min_value=0, max_value=100), max_size=6),
)
def test_split_requests_sums_to_the_total(total: int, percents: dict[str, int]) -> None:
    shares = split_requests(total, percents)
    if sum(percents.values()) == 0:
        assert shares == {}
        return
    assert sum(shares.values()) == total
    weight = sum(percents.values())
    for name, share in shares.items():
        assert percents[name] > 0
        assert abs(share - total * percents[name] / weight) < 1


@given(
    counts=st.lists(st.integers(min_value=0, max_value=2000), min_size=1, max_size=102).filter(lambda c: sum(c) > 0),
    total=st.integers(min_value=0, max_value=10**7),
)
def test_scale_counts_keeps_the_total_and_empty_buckets(counts: list[int], total: int) -> None:
    scaled = scale_counts(counts, total)
    assert sum(scaled) == total
    assert all(s == 0 for c, s in zip(counts, scaled, strict=True) if c == 0)
    have = sum(counts)
    assert all(abs(s - c * total / have) < 1 for c, s in zip(counts, scaled, strict=True))


@pytest.mark.parametrize(
    ("n", "p"),
    [(500, 0.18), (50_000, 0.18), (50_000, 0.0001), (50_000, 0.9999), (200_000, 0.5), (1001, 0.003)],
)
def test_binomial_matches_numpy_moments(n: int, p: float) -> None:
    rng = random.Random(42)
    draws = np.array([binomial(rng, n, p) for _ in range(2000)])
    reference = np.random.default_rng(42).binomial(n, p, size=2000)
    assert draws.min() >= 0 and draws.max() <= n
    sd = math.sqrt(n * p * (1 - p))
    assert abs(draws.mean() - n * p) < 5 * sd / math.sqrt(2000) + 0.05
    assert draws.std() == pytest.approx(reference.std(), rel=0.15, abs=0.2)


def test_binomial_edges() -> None:
    rng = random.Random(0)
    assert binomial(rng, 0, 0.5) == 0
    assert binomial(rng, 100, 0.0) == 0
    assert binomial(rng, 100, 1.0) == 100
    with pytest.raises(ValueError, match="n must"):
        binomial(rng, -1, 0.5)
