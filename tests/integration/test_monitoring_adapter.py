"""The Monitoring adapter end to end: the real MetricServiceClient, over plaintext gRPC, to the emulator.

The traffic simulator drives service ``checkout``: revision A is healthy (0.5 % 5xx, 120 ms median),
B is bad (18 % 5xx, 2500 ms median, 2 failed probes a minute); the split is read from the Cloud Run
emulator minute by minute, so an emulated rollback really makes B's numbers disappear.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from controller.adapters.monitoring import MonitoringApi, MonitoringClient, MonitoringUnavailable
from controller.core.evidence import ALL_SIGNALS, Evidence, Window, trailing_window
from controller.core.state import ServiceRef
from controller.core.stats import bucket_bounds, bucket_index
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import CLOUD_RUN_LATENCY_BUCKETS, MonitoringEmulator
from controller.emulator.traffic import RevisionProfile, TrafficSimulator

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
REF = ServiceRef(project="demo-proj", region="us-central1", service="checkout")
A, B = "checkout-00041-abc", "checkout-00042-xyz"
RPM = 2000
FIVE_MIN = timedelta(minutes=5)
GOOD = RevisionProfile(error_rate=0.005, latency_ms=120.0, latency_sigma=0.5)
BAD = RevisionProfile(error_rate=0.18, latency_ms=2500.0, latency_sigma=0.5, probe_failures_per_minute=2)
Z95 = 1.6448536269514722  # standard normal quantile at 0.95


def lognormal_percentile(median: float, sigma: float, z: float) -> float:
    return median * math.exp(sigma * z)


def one_bucket_width(value: float) -> float:
    lower, upper = bucket_bounds(CLOUD_RUN_LATENCY_BUCKETS)[bucket_index(CLOUD_RUN_LATENCY_BUCKETS, value)]
    return upper - lower


@pytest.fixture
def monitoring() -> Iterator[MonitoringEmulator]:
    with MonitoringEmulator() as emu:
        yield emu


@pytest.fixture
def run() -> CloudRunEmulator:
    # Only the in-process helpers are used (service(), set_traffic()): no HTTP server needed.
    emu = CloudRunEmulator()
    emu.add_service(
        REF.project,
        REF.region,
        REF.service,
        revisions=[RevisionSpec(A, T0 - timedelta(days=3)), RevisionSpec(B, T0 - timedelta(minutes=30))],
        traffic=[{"revision": A, "percent": 80}, {"revision": B, "percent": 20}],
    )
    return emu


@pytest.fixture
def sim(run: CloudRunEmulator, monitoring: MonitoringEmulator) -> TrafficSimulator:
    s = TrafficSimulator(
        run,
        monitoring,
        project=REF.project,
        region=REF.region,
        service=REF.service,
        requests_per_minute=RPM,
        seed=7,
        start=T0,
    )
    s.set_profile(A, GOOD)
    s.set_profile(B, BAD)
    s.advance(10)
    return s


@pytest.fixture
def client(monitoring: MonitoringEmulator) -> Iterator[MonitoringClient]:
    with MonitoringClient(monitoring.target) as c:
        yield c


def evidence(client: MonitoringApi, window: Window, signals: frozenset[str] = ALL_SIGNALS) -> tuple[Evidence, float]:
    started = time.monotonic()
    ev = client.evidence(REF, window, signals=signals)
    return ev, time.monotonic() - started


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------


def test_evidence_matches_the_simulated_traffic(
    sim: TrafficSimulator, monitoring: MonitoringEmulator, client: MonitoringClient
) -> None:
    before = len(monitoring.calls)
    ev, _ = evidence(client, trailing_window(sim.now, FIVE_MIN))

    # One ListTimeSeries call per signal, never one per revision.
    assert ev.calls == len(monitoring.calls) - before <= 3
    assert sorted(ev.revisions) == [A, B]

    a, b = ev.get(A), ev.get(B)
    # Requests follow the 80/20 split exactly (5 minutes of 2000 a minute).
    assert (a.requests, b.requests) == (8000, 2000)
    # The true error rates lie inside the Wilson bounds, and the bounds separate the revisions.
    assert b.error_ratio_lower <= BAD.error_rate <= b.error_ratio_upper
    assert a.error_ratio_lower <= GOOD.error_rate <= a.error_ratio_upper
    assert b.error_ratio_lower > 0.05 > a.error_ratio_upper
    assert abs(b.error_ratio - 0.18) < 0.03
    # Latency: every request is in the merged distribution, p95 within one bucket of the truth.
    assert (a.latency_count, b.latency_count) == (8000, 2000)
    for numbers, profile in ((a, GOOD), (b, BAD)):
        expected_p95 = lognormal_percentile(profile.latency_ms, profile.latency_sigma, Z95)
        assert numbers.p95_ms is not None
        assert abs(numbers.p95_ms - expected_p95) <= one_bucket_width(expected_p95)
        assert numbers.p50_ms is not None
        assert abs(numbers.p50_ms - profile.latency_ms) <= one_bucket_width(profile.latency_ms)
        assert numbers.p99_ms is not None and numbers.p50_ms < numbers.p95_ms < numbers.p99_ms
    # Probes: only the failed attempts, 2 a minute for B.
    assert (a.health_failures, b.health_failures) == (0, 10)


def test_requests_sent_are_scoped_aggregated_and_bounded(
    sim: TrafficSimulator, monitoring: MonitoringEmulator, client: MonitoringClient
) -> None:
    window = trailing_window(sim.now, FIVE_MIN)
    evidence(client, window)
    sent = monitoring.calls[-3:]
    assert [r.filter.split('"')[1] for r in sent] == [
        "run.googleapis.com/request_count",
        "run.googleapis.com/request_latencies",
        "run.googleapis.com/container/completed_probe_attempt_count",
    ]
    for r in sent:
        assert r.name == "projects/demo-proj"
        assert 'resource.label.service_name = "checkout"' in r.filter
        assert 'resource.label.location = "us-central1"' in r.filter
        assert r.interval.start_time == window.start and r.interval.end_time == window.end
        assert r.aggregation.alignment_period == FIVE_MIN
        assert r.aggregation.per_series_aligner.name == "ALIGN_DELTA"
        assert r.aggregation.cross_series_reducer.name == "REDUCE_SUM"
    assert list(sent[0].aggregation.group_by_fields) == [
        "resource.label.revision_name",
        "metric.label.response_code_class",
    ]
    assert list(sent[1].aggregation.group_by_fields) == ["resource.label.revision_name"]
    assert sent[2].filter.endswith("metric.label.is_healthy = false")


def test_after_an_emulated_rollback_the_numbers_recover(
    sim: TrafficSimulator, run: CloudRunEmulator, client: MonitoringClient
) -> None:
    ev, _ = evidence(client, trailing_window(sim.now, FIVE_MIN), frozenset({"error_rate"}))
    service_ratio_before = sum(r.errors for r in ev.revisions.values()) / sum(r.requests for r in ev.revisions.values())
    assert service_ratio_before > 0.035  # 20 % of traffic at 18 % 5xx

    run.set_traffic(REF.project, REF.region, REF.service, [{"revision": A, "percent": 100}])
    sim.advance(6)

    ev, _ = evidence(client, trailing_window(sim.now, FIVE_MIN))
    assert B not in ev.revisions  # no series at all: an idle revision reports nothing
    assert ev.get(B).requests == 0 and ev.get(B).p95_ms is None and ev.get(B).health_failures == 0
    assert ev.get(A).requests == 5 * RPM
    service_errors = sum(r.errors for r in ev.revisions.values())
    service_requests = sum(r.requests for r in ev.revisions.values())
    # After an emulated rollback, the simulator's 5xx ratio for the service falls below the threshold.
    assert service_errors / service_requests < 0.05


def test_a_window_off_the_minute_grid_sums_every_point(sim: TrafficSimulator, client: MonitoringClient) -> None:
    # (T0+2:30, T0+7:30] holds the points ending at minutes 3..7, as (T0+2, T0+7] does.
    aligned, _ = evidence(client, Window(start=T0 + timedelta(minutes=2), end=T0 + timedelta(minutes=7)))
    shifted, _ = evidence(
        client, Window(start=T0 + timedelta(minutes=2, seconds=30), end=T0 + timedelta(minutes=7, seconds=30))
    )
    assert shifted.revisions == aligned.revisions
    # A 10-minute window is the sum of its two halves.
    whole, _ = evidence(client, Window(start=T0, end=T0 + timedelta(minutes=10)))
    first, _ = evidence(client, Window(start=T0, end=T0 + timedelta(minutes=5)))
    second, _ = evidence(client, Window(start=T0 + timedelta(minutes=5), end=T0 + timedelta(minutes=10)))
    for rev in (A, B):
        assert whole.get(rev).requests == first.get(rev).requests + second.get(rev).requests
        assert whole.get(rev).errors == first.get(rev).errors + second.get(rev).errors
        assert whole.get(rev).latency_count == first.get(rev).latency_count + second.get(rev).latency_count


def test_only_the_requested_signals_are_queried(
    sim: TrafficSimulator, monitoring: MonitoringEmulator, client: MonitoringClient
) -> None:
    window = trailing_window(sim.now, FIVE_MIN)
    before = len(monitoring.calls)
    ev, _ = evidence(client, window, frozenset({"error_rate"}))
    assert ev.calls == 1 == len(monitoring.calls) - before
    assert ev.get(B).requests == 2000
    assert ev.get(B).p95_ms is None and ev.get(B).latency_count == 0 and ev.get(B).health_failures is None

    ev, _ = evidence(client, window, frozenset({"latency"}))
    assert ev.calls == 1 and ev.get(B).requests == 0 and ev.get(B).latency_count == 2000

    ev, _ = evidence(client, window, frozenset({"health"}))
    assert ev.calls == 1 and ev.get(B).health_failures == 10 and ev.get(A).health_failures == 0


def test_other_services_and_regions_never_leak_in(
    run: CloudRunEmulator, monitoring: MonitoringEmulator, client: MonitoringClient
) -> None:
    # The same service name in another region, and another service in the same region.
    for region, service in (("europe-west1", "checkout"), ("us-central1", "cart")):
        run.add_service(REF.project, region, service, revisions=[RevisionSpec(f"{service}-1", T0 - timedelta(days=1))])
        noisy = TrafficSimulator(
            run, monitoring, project=REF.project, region=region, service=service, start=T0, requests_per_minute=500
        )
        noisy.default_profile = RevisionProfile(error_rate=0.9)
        noisy.advance(5)
    ev, _ = evidence(client, Window(start=T0, end=T0 + FIVE_MIN))
    assert ev.revisions == {}


def test_paging_is_followed(sim: TrafficSimulator, monitoring: MonitoringEmulator) -> None:
    window = trailing_window(sim.now, FIVE_MIN)
    with MonitoringClient(monitoring.target) as plain, MonitoringClient(monitoring.target, page_size=1) as paged:
        one, _ = evidence(plain, window)
        before = len(monitoring.calls)
        many, _ = evidence(paged, window)
    assert many.revisions == one.revisions
    # 4 request_count series (2 revisions × 2 classes), 2 latency, 1 health: one page each.
    assert many.calls == len(monitoring.calls) - before == 7
    assert {r.page_size for r in monitoring.calls[before:]} == {1}


def test_concurrent_first_use_builds_one_working_client(sim: TrafficSimulator, monitoring: MonitoringEmulator) -> None:
    window = trailing_window(sim.now, FIVE_MIN)
    results: list[Evidence] = []
    errors: list[BaseException] = []
    with MonitoringClient(monitoring.target) as shared:

        def work() -> None:
            try:
                results.append(shared.evidence(REF, window, signals=frozenset({"error_rate"})))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert not errors and len(results) == 8
    assert all(r.revisions == results[0].revisions for r in results)


# --------------------------------------------------------------------------------------------
# Failures and the time budget
# --------------------------------------------------------------------------------------------


def test_an_outage_becomes_monitoring_unavailable_within_the_deadline(
    sim: TrafficSimulator, monitoring: MonitoringEmulator
) -> None:
    deadline = 2.0
    monitoring.fail_next(1000)
    with MonitoringClient(monitoring.target, deadline=deadline) as c:
        started = time.monotonic()
        with pytest.raises(MonitoringUnavailable, match="UNAVAILABLE"):
            c.evidence(REF, trailing_window(sim.now, FIVE_MIN), signals=ALL_SIGNALS)
        elapsed = time.monotonic() - started
    assert elapsed < deadline + 1.0
    assert len(monitoring.calls) > 1  # it did retry before giving up


def test_ten_quick_failures_are_retried_through_within_the_default_deadline(
    sim: TrafficSimulator, monitoring: MonitoringEmulator
) -> None:
    # Backoff is 50 ms doubling to 500 ms (jittered), so nine sleeps take at most 3.25 s: a burst
    # of ten UNAVAILABLE answers is ridden out inside the 5 s budget rather than lost.
    monitoring.fail_next(10)
    with MonitoringClient(monitoring.target) as c:
        before = len(monitoring.calls)
        ev, elapsed = evidence(c, trailing_window(sim.now, FIVE_MIN))
    assert ev.get(B).requests == 2000
    assert ev.calls == len(monitoring.calls) - before == 13
    assert elapsed < 5.0


def test_a_transient_failure_is_retried(sim: TrafficSimulator, monitoring: MonitoringEmulator) -> None:
    monitoring.fail_next(2)
    with MonitoringClient(monitoring.target) as c:
        before = len(monitoring.calls)
        ev, elapsed = evidence(c, trailing_window(sim.now, FIVE_MIN))
    assert ev.get(B).requests == 2000
    assert ev.calls == len(monitoring.calls) - before == 5  # 3 queries + 2 retried attempts
    assert elapsed < 2.0


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT],
    ids=lambda c: c.name,
)
def test_errors_a_retry_cannot_fix_fail_at_once(
    sim: TrafficSimulator, monitoring: MonitoringEmulator, code: grpc.StatusCode
) -> None:
    monitoring.fail_next(1, code=code)
    with MonitoringClient(monitoring.target) as c:
        before = len(monitoring.calls)
        started = time.monotonic()
        with pytest.raises(MonitoringUnavailable, match=code.name):
            c.evidence(REF, trailing_window(sim.now, FIVE_MIN), signals=ALL_SIGNALS)
        assert time.monotonic() - started < 1.0
    assert len(monitoring.calls) - before == 1


def test_a_slow_server_is_cut_off_at_the_deadline(sim: TrafficSimulator, monitoring: MonitoringEmulator) -> None:
    deadline = 1.0
    monitoring.delay_next(10, seconds=30)
    with MonitoringClient(monitoring.target, deadline=deadline) as c:
        started = time.monotonic()
        with pytest.raises(MonitoringUnavailable, match=r"DEADLINE_EXCEEDED|budget"):
            c.evidence(REF, trailing_window(sim.now, FIVE_MIN), signals=ALL_SIGNALS)
        elapsed = time.monotonic() - started
    assert deadline - 0.05 <= elapsed < deadline + 0.5


def test_the_budget_covers_all_three_queries(sim: TrafficSimulator, monitoring: MonitoringEmulator) -> None:
    # Each call is slow but within the deadline on its own; together they are not.
    deadline = 1.0
    monitoring.delay_next(3, seconds=0.6)
    with MonitoringClient(monitoring.target, deadline=deadline) as c:
        started = time.monotonic()
        with pytest.raises(MonitoringUnavailable):
            c.evidence(REF, trailing_window(sim.now, FIVE_MIN), signals=ALL_SIGNALS)
        elapsed = time.monotonic() - started
    assert elapsed < deadline + 0.5


def test_nothing_listening_is_unavailable(sim: TrafficSimulator) -> None:
    with MonitoringClient("127.0.0.1:1", deadline=1.0) as c:
        started = time.monotonic()
        with pytest.raises(MonitoringUnavailable):
            c.evidence(REF, trailing_window(sim.now, FIVE_MIN), signals=ALL_SIGNALS)
        assert time.monotonic() - started < 2.0


# --------------------------------------------------------------------------------------------
# Google's endpoint without credentials
# --------------------------------------------------------------------------------------------


def test_no_credentials_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from google.auth.compute_engine import _metadata

    # No ADC anywhere: GOOGLE_APPLICATION_CREDENTIALS is cleared by conftest, gcloud's config dir is
    # empty, and the GCE metadata probe is off (what NO_GCE_CHECK=true does; the library reads that
    # variable at import, so it is set on the module).
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)
    with MonitoringClient() as c:
        started = time.monotonic()
        with pytest.raises(MonitoringUnavailable, match="no credentials"):
            c.evidence(REF, trailing_window(T0, FIVE_MIN), signals=ALL_SIGNALS)
        assert time.monotonic() - started < 1.0


def test_a_slow_credential_search_is_bounded_by_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth

    release = threading.Event()

    def stuck(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)  # a metadata server that never answers
        raise google.auth.exceptions.DefaultCredentialsError("gave up")  # type: ignore[no-untyped-call]

    monkeypatch.setattr(google.auth, "default", stuck)
    try:
        with MonitoringClient(deadline=0.5) as c:
            started = time.monotonic()
            with pytest.raises(MonitoringUnavailable, match=r"within the 0\.5s budget"):
                c.evidence(REF, trailing_window(T0, FIVE_MIN), signals=ALL_SIGNALS)
            assert time.monotonic() - started < 1.0
    finally:
        release.set()
