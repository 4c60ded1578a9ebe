"""When the alert path measures, end to end, with the Monitoring emulator's ingestion lag on.

functions-framework serves ``handle_alert`` with the real google-cloud-run, google-cloud-monitoring
and slack-sdk clients against the emulators; the traffic simulator writes each revision's numbers
up to the current minute. The Monitoring emulator models Cloud Run's documented delay (points are
visible 180 s after their end time), so:

* issue 9, point 5: a window ending *now* sees nothing; the suspect's window must end at the
  incident's start or at ``now - verification.ingestion_lag``, whichever is later;
* issue 9, point 7: an old delivery (started or published longer ago than
  ``rollback.max_alert_age``) acts only on Cloud Monitoring's current confirmation, and is
  otherwise acknowledged with a notice; ``delivery_attempt`` is logged;
* the emulator's standing faults (unavailable, slow) bound what an outage costs a delivery.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from deliveries import cloud_event

from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import DEFAULT_INGESTION_LAG, MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.emulator.traffic import RevisionProfile, TrafficSimulator
from controller.surfaces.demo import free_port, function_env, start_function, stop_process

ROOT = Path(__file__).resolve().parents[2]
INCIDENT = json.loads((ROOT / "tests" / "data" / "incident-5xx-open.json").read_text())
PROJECT, REGION, SERVICE = "demo-proj", "us-central1", "checkout"
OLDEST, PREVIOUS, SUSPECT = "checkout-00040-aaa", "checkout-00041-abc", "checkout-00042-xyz"
GOOD = RevisionProfile(error_rate=0.004, latency_ms=120.0)
BAD = RevisionProfile(error_rate=0.18, latency_ms=900.0)
LATEST = [{"type": "LATEST", "percent": 100}]
ON_PREVIOUS = [{"type": "REVISION", "revision": PREVIOUS, "percent": 100}]
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
_incidents = itertools.count(1)


class Stack:
    def __init__(
        self, run: CloudRunEmulator, slack: SlackEmulator, monitoring: MonitoringEmulator, port: int, log: Path
    ) -> None:
        self.run, self.slack, self.monitoring, self.port, self.log = run, slack, monitoring, port, log
        self.now = datetime.now(UTC).replace(second=0, microsecond=0)
        self.started = self.now

    def service(self, history: list[tuple[int, dict[str, RevisionProfile], list[dict[str, Any]]]]) -> None:
        """checkout (revisions created 90/60/40 minutes ago), then ``history``: (minutes ago,
        profiles from then on, traffic from then on), simulated up to the current minute."""
        self.run.add_service(
            PROJECT,
            REGION,
            SERVICE,
            revisions=[
                RevisionSpec(name=OLDEST, create_time=self.now - timedelta(minutes=90)),
                RevisionSpec(name=PREVIOUS, create_time=self.now - timedelta(minutes=60)),
                RevisionSpec(name=SUSPECT, create_time=self.now - timedelta(minutes=40)),
            ],
            traffic=history[0][2],
        )
        sim = TrafficSimulator(
            self.run, self.monitoring, project=PROJECT, region=REGION, service=SERVICE, seed=7,
            start=self.now - timedelta(minutes=history[0][0]),
        )  # fmt: skip
        for minutes_ago, profiles, traffic in history:
            sim.run_until(self.now - timedelta(minutes=minutes_ago))
            for revision, profile in profiles.items():
                sim.set_profile(revision, profile)
            self.run.set_traffic(PROJECT, REGION, SERVICE, traffic)
        sim.run_until(self.now)

    def deliver(self, *, age: timedelta, published_age: timedelta | None = None, **kwargs: Any) -> requests.Response:
        doc = json.loads(json.dumps(INCIDENT))
        doc["incident"]["incident_id"] = f"0.timing{next(_incidents)}-{time.monotonic_ns()}"
        now = datetime.now(UTC)
        published = now - (published_age if published_age is not None else age)
        self.started = datetime.fromtimestamp(int((now - age).timestamp()), UTC)  # as the incident says it
        headers, body = cloud_event(doc, published=published, started_at=self.started, **kwargs)
        return requests.post(f"http://127.0.0.1:{self.port}/", headers=headers, data=body, timeout=60)

    def traffic(self) -> list[tuple[str, int]]:
        return [(t["revision"] or t["type"], t["percent"]) for t in self.run.traffic(PROJECT, REGION, SERVICE)]

    def message(self) -> dict[str, Any]:
        self.slack.wait_for_messages(1, timeout=10)
        found: dict[str, Any] = self.slack.messages[-1]
        return found

    def alert_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(raw)
                if isinstance(entry, dict) and entry.get("event") == "alert":
                    lines.append(entry)
        return lines


def measured(message: dict[str, Any]) -> str:
    texts = [(b.get("text") or {}).get("text", "") for b in message["blocks"]]
    return next((t for t in texts if t.startswith("*Measured by Cloud Monitoring*")), "")


@pytest.fixture(scope="module")
def stack_(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("evidence-timing")
    # The lag is on, at the documented worst case: only points 180 s old are visible.
    with (
        CloudRunEmulator() as run,
        SlackEmulator() as slack,
        MonitoringEmulator(ingestion_lag=DEFAULT_INGESTION_LAG) as monitoring,
    ):
        port = free_port()
        env = function_env(run.url, slack.api_url, monitoring=monitoring.target)
        env = {k: v for k, v in env.items() if k.lower() not in PROXY_VARS}
        proc = start_function("handle_alert", port, env, log_path=tmp / "function.log")
        try:
            yield Stack(run, slack, monitoring, port, tmp / "function.log")
        finally:
            stop_process(proc)


@pytest.fixture
def stack(stack_: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    stack_.run.reset()
    stack_.slack.reset()
    stack_.monitoring.reset()
    stack_.now = datetime.now(UTC).replace(second=0, microsecond=0)
    return stack_


BAD_SINCE_20_MIN = [(60, {PREVIOUS: GOOD, SUSPECT: BAD}, ON_PREVIOUS), (20, {}, LATEST)]


def _suspect_query_ends(stack: Stack) -> list[datetime]:
    return [
        c.interval.end_time
        for c in stack.monitoring.calls
        if "request_count" in c.filter and c.interval.end_time > stack.now - timedelta(minutes=30)
    ]


# --------------------------------------------------------------------------- point 5: ingestion lag


def test_a_fresh_alert_is_measured_over_data_monitoring_already_shows(stack: Stack) -> None:
    stack.service(BAD_SINCE_20_MIN)
    before = datetime.now(UTC)
    assert stack.deliver(age=timedelta(minutes=4)).status_code == 200
    after = datetime.now(UTC)
    assert stack.traffic() == [(PREVIOUS, 100)]
    text = measured(stack.message())
    assert f"suspect {SUSPECT}: 5xx 1" in text, text  # confirmed by ~18% 5xx, not "only 0 requests"
    assert "acting on the alert alone" not in json.dumps(stack.message()["blocks"])
    # The suspect's window ended at now - 3 min (later than the incident's start, 4 min ago).
    ends = _suspect_query_ends(stack)
    assert ends, "no suspect query"
    assert all(before - timedelta(minutes=3, seconds=1) <= end <= after - timedelta(minutes=3) for end in ends)


def test_the_window_ends_at_the_incident_start_when_that_is_later(stack: Stack) -> None:
    stack.service(BAD_SINCE_20_MIN)
    assert stack.deliver(age=timedelta(seconds=90)).status_code == 200
    ends = _suspect_query_ends(stack)
    assert ends and all(end == stack.started for end in ends)


# --------------------------------------------------------------------------- point 7: old deliveries


def test_an_old_alert_still_breaching_now_is_acted_on(stack: Stack) -> None:
    stack.service(BAD_SINCE_20_MIN)
    assert stack.deliver(age=timedelta(hours=3)).status_code == 200
    assert stack.traffic() == [(PREVIOUS, 100)]
    assert f"suspect {SUSPECT}: 5xx 1" in measured(stack.message())


def test_an_old_alert_no_longer_breaching_is_acknowledged_with_a_notice(stack: Stack) -> None:
    # The suspect was bad from 40 to 15 minutes ago (its dependency failed), then recovered.
    history = [
        (60, {PREVIOUS: GOOD, SUSPECT: BAD}, ON_PREVIOUS),
        (40, {}, LATEST),
        (15, {SUSPECT: GOOD}, LATEST),
    ]
    stack.service(history)
    age = timedelta(hours=3, minutes=2)
    response = stack.deliver(age=age, delivery_attempt=17)
    assert response.status_code == 200  # acknowledged: no redelivery
    assert stack.run.patches == []
    message = stack.message()
    assert "does not confirm" in message["text"]
    started = stack.started.strftime("%H:%M UTC")
    assert f"alert from {started} is 3 h old and no longer confirmed" in json.dumps(message["blocks"])
    line = stack.alert_lines()[-1]
    assert line["delivery"]["delivery_attempt"] == 17
    assert line["alert_age_s"] >= age.total_seconds() - 5


def test_an_old_alert_with_too_little_traffic_now_is_not_acted_on(stack: Stack) -> None:
    # Fresh, the default policy acts on an inconclusive alert; old, it needs a confirmation.
    stack.service(BAD_SINCE_20_MIN)
    stack.monitoring.reset()  # no data at all now
    assert stack.deliver(age=timedelta(hours=2)).status_code == 200
    assert stack.run.patches == []
    assert "no longer confirmed" in json.dumps(stack.message()["blocks"])


def test_an_old_publish_time_makes_a_delivery_old(stack: Stack) -> None:
    stack.service(BAD_SINCE_20_MIN)
    stack.monitoring.reset()
    response = stack.deliver(age=timedelta(minutes=4), published_age=timedelta(hours=5))
    assert response.status_code == 200
    assert stack.run.patches == []
    assert "no longer confirmed" in json.dumps(stack.message()["blocks"])


def test_an_old_alert_during_a_monitoring_outage_is_not_acted_on(stack: Stack) -> None:
    stack.service(BAD_SINCE_20_MIN)
    stack.monitoring.unavailable = grpc.StatusCode.UNAVAILABLE
    assert stack.deliver(age=timedelta(hours=1)).status_code == 200
    assert stack.run.patches == []
    text = json.dumps(stack.message()["blocks"])
    assert "no longer confirmed" in text and "Cloud Monitoring unavailable" in text


# --------------------------------------------------------------------------- emulator faults


def test_a_fresh_alert_during_an_outage_acts_on_the_alert_alone(stack: Stack) -> None:
    stack.service(BAD_SINCE_20_MIN)
    stack.monitoring.unavailable = grpc.StatusCode.UNAVAILABLE
    assert stack.deliver(age=timedelta(minutes=4)).status_code == 200
    assert stack.traffic() == [(PREVIOUS, 100)]
    assert "Cloud Monitoring unavailable" in measured(stack.message())


def test_a_slow_monitoring_costs_at_most_its_deadline(stack: Stack) -> None:
    stack.service(BAD_SINCE_20_MIN)
    stack.monitoring.latency = 8.0  # beyond the 5 s Monitoring budget of a delivery
    started = time.monotonic()
    assert stack.deliver(age=timedelta(minutes=4)).status_code == 200
    assert time.monotonic() - started < 15
    assert stack.traffic() == [(PREVIOUS, 100)]
    assert "Cloud Monitoring unavailable" in measured(stack.message())
