"""The Monitoring emulator's ingestion lag and standing faults, driven by the real google-cloud-monitoring client.

Cloud Run's request metrics are "sampled every 60 seconds; after sampling, data is not visible for
up to 180 seconds" (Cloud Monitoring metrics list): a point exists once written but ListTimeSeries
returns it only when the emulator's clock is ``ingestion_lag`` past its end. Outages and slowness
stand until cleared, so a whole delivery (every retry) sees them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.api_core import exceptions
from google.api_core.retry import Retry
from google.cloud import monitoring_v3

from controller.emulator.monitoring import DEFAULT_INGESTION_LAG, MonitoringEmulator, insecure_client

PROJECT = "demo-proj"
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
REQUEST_COUNT = "run.googleapis.com/request_count"
RESOURCE = {"project_id": PROJECT, "service_name": "checkout", "revision_name": "checkout-1", "location": "r"}
NO_RETRY = Retry(predicate=lambda exc: False, timeout=1.0)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def emulator(clock: Clock) -> Iterator[MonitoringEmulator]:
    with MonitoringEmulator(clock=clock) as emu:
        yield emu


@pytest.fixture
def client(emulator: MonitoringEmulator) -> Iterator[monitoring_v3.MetricServiceClient]:
    c = insecure_client(emulator.target)
    try:
        yield c
    finally:
        c.transport.close()  # type: ignore[no-untyped-call]


def write_minutes(emu: MonitoringEmulator, minutes: int) -> None:
    for i in range(minutes):
        start, end = T0 - timedelta(minutes=minutes - i), T0 - timedelta(minutes=minutes - i - 1)
        emu.write_point(REQUEST_COUNT, {"response_code_class": "2xx"}, "cloud_run_revision", RESOURCE, start, end, 10)


def listed_ends(client: monitoring_v3.MetricServiceClient, *, timeout: float = 5.0) -> list[datetime]:
    request = monitoring_v3.ListTimeSeriesRequest(
        name=f"projects/{PROJECT}",
        filter=f'metric.type = "{REQUEST_COUNT}"',
        interval=monitoring_v3.TimeInterval(start_time=T0 - timedelta(hours=1), end_time=T0 + timedelta(hours=1)),
    )
    pager = client.list_time_series(request=request, retry=NO_RETRY, timeout=timeout)
    return sorted(p.interval.end_time for ts in pager.time_series for p in ts.points)


def test_the_default_lag_is_the_documented_180_seconds() -> None:
    assert timedelta(seconds=180) == DEFAULT_INGESTION_LAG
    assert MonitoringEmulator().ingestion_lag == DEFAULT_INGESTION_LAG


def test_points_become_visible_only_after_the_lag(
    emulator: MonitoringEmulator, client: monitoring_v3.MetricServiceClient, clock: Clock
) -> None:
    write_minutes(emulator, 5)  # points ending T0-4m … T0
    assert listed_ends(client) == [T0 - timedelta(minutes=m) for m in (4, 3)]  # at T0 only 3+ min old ones
    clock.now = T0 + timedelta(seconds=179)
    assert listed_ends(client)[-1] == T0 - timedelta(minutes=1)  # the point ending at T0 is 179 s old
    clock.now = T0 + timedelta(seconds=180)
    assert listed_ends(client)[-1] == T0
    assert len(listed_ends(client)) == 5


def test_a_lag_of_zero_shows_everything_at_once(
    emulator: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    emulator.ingestion_lag = timedelta(0)
    write_minutes(emulator, 5)
    assert len(listed_ends(client)) == 5


def test_a_negative_lag_is_refused() -> None:
    with pytest.raises(ValueError, match="ingestion_lag"):
        MonitoringEmulator(ingestion_lag=timedelta(seconds=-1))


def test_unavailable_fails_every_call_until_cleared(
    emulator: MonitoringEmulator, client: monitoring_v3.MetricServiceClient
) -> None:
    emulator.ingestion_lag = timedelta(0)
    write_minutes(emulator, 1)
    emulator.unavailable = grpc.StatusCode.UNAVAILABLE
    for _ in range(3):
        with pytest.raises(exceptions.ServiceUnavailable):
            listed_ends(client)
    emulator.unavailable = None
    assert len(listed_ends(client)) == 1


def test_latency_delays_every_call(emulator: MonitoringEmulator, client: monitoring_v3.MetricServiceClient) -> None:
    emulator.latency = 1.0
    with pytest.raises(exceptions.DeadlineExceeded):
        listed_ends(client, timeout=0.3)
    started = time.monotonic()
    listed_ends(client, timeout=5.0)
    assert time.monotonic() - started >= 1.0
    emulator.reset()  # ends the standing faults too
    assert emulator.latency == 0.0 and emulator.unavailable is None
