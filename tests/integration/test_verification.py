"""Evidence before action, end to end: functions-framework serving ``handle_alert`` with the real
google-cloud-run, google-cloud-monitoring and slack-sdk clients against the emulators, while the
traffic simulator writes each revision's requests, errors and latencies as traffic is split.

The function judges windows against the real "now", so the simulated clock is laid out in the
past up to the current minute. The Monitoring emulator's ingestion lag is on (points are visible
180 s after their end, Cloud Run's documented worst case) and each incident started four minutes
before its delivery, so the suspect is measured over data Monitoring already shows.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from controller.adapters.monitoring import MonitoringClient
from controller.core.evidence import Evidence, trailing_window
from controller.core.state import ServiceRef
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.emulator.traffic import RevisionProfile, TrafficSimulator
from controller.surfaces.demo import free_port, function_env, start_function, stop_process

ROOT = Path(__file__).resolve().parent.parent.parent
INCIDENT = json.loads((ROOT / "tests" / "data" / "incident-5xx-open.json").read_text())
PROJECT, REGION = "demo-proj", "us-central1"
OLDEST, PREVIOUS, SUSPECT = "checkout-00040-aaa", "checkout-00041-abc", "checkout-00042-xyz"
GOOD = RevisionProfile(error_rate=0.004, latency_ms=120.0)
BAD = RevisionProfile(error_rate=0.18, latency_ms=900.0)

SKIP_POLICY = """
name: careful
match: {services: ["careful-*"]}
triggers:
  error_rate: {above: 0.05, for: 2m, min_requests: 50}
verification: {on_unavailable: skip, on_inconclusive: skip}
"""


class Stack:
    def __init__(self, run: CloudRunEmulator, slack: SlackEmulator, monitoring: MonitoringEmulator, port: int) -> None:
        self.run, self.slack, self.monitoring, self.port = run, slack, monitoring, port
        self.now = datetime.now(UTC).replace(second=0, microsecond=0)

    def service(
        self, name: str, profiles: dict[str, RevisionProfile], *, history: list[tuple[int, list[dict[str, Any]]]]
    ) -> TrafficSimulator:
        """Create ``name`` (revisions created 90/60/15 minutes ago) and replay ``history``:
        (minutes ago, traffic from then on) steps, with the simulator writing metrics up to now."""
        self.run.add_service(
            PROJECT,
            REGION,
            name,
            revisions=[
                RevisionSpec(name=OLDEST, create_time=self.now - timedelta(minutes=90)),
                RevisionSpec(name=PREVIOUS, create_time=self.now - timedelta(minutes=60)),
                RevisionSpec(name=SUSPECT, create_time=self.now - timedelta(minutes=15)),
            ],
            traffic=history[0][1],
        )
        sim = TrafficSimulator(
            self.run, self.monitoring, project=PROJECT, region=REGION, service=name, seed=11,
            start=self.now - timedelta(minutes=history[0][0]),
        )  # fmt: skip
        for revision, profile in profiles.items():
            sim.set_profile(revision, profile)
        for _, (later, traffic) in itertools.pairwise(history):
            sim.run_until(self.now - timedelta(minutes=later))
            self.run.set_traffic(PROJECT, REGION, name, traffic)
        sim.run_until(self.now)
        return sim

    def deliver(self, service: str, revision: str | None = SUSPECT) -> requests.Response:
        doc = copy.deepcopy(INCIDENT)
        labels = doc["incident"]["resource"]["labels"]
        labels["service_name"] = service
        if revision is None:
            del labels["revision_name"]
        else:
            labels["revision_name"] = revision
        doc["incident"]["incident_id"] = f"inc-{service}-{time.monotonic_ns()}"
        now = datetime.now(UTC)
        doc["incident"]["started_at"] = int((now - timedelta(minutes=4)).timestamp())
        published = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        msg = {"data": base64.b64encode(json.dumps(doc).encode()).decode(), "messageId": "1", "publishTime": published}
        return requests.post(
            f"http://127.0.0.1:{self.port}/projects/{PROJECT}/topics/alerts",
            json={"message": msg, "subscription": "s"},
            timeout=30,
        )

    def traffic(self, service: str) -> list[tuple[str, int]]:
        return [(t["revision"] or t["type"], t["percent"]) for t in self.run.traffic(PROJECT, REGION, service)]

    def last_message(self) -> dict[str, Any]:
        self.slack.wait_for_messages(1, timeout=5)
        message: dict[str, Any] = self.slack.messages[-1]
        return message


def _measured(message: dict[str, Any]) -> str:
    texts = [(b.get("text") or {}).get("text", "") for b in message["blocks"]]
    return next((t for t in texts if t.startswith("*Measured by Cloud Monitoring*")), "")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    policies = tmp_path_factory.mktemp("policies")
    (policies / "default.yaml").write_text((ROOT / "policies" / "default.yaml").read_text())
    (policies / "careful.yaml").write_text(SKIP_POLICY)
    with CloudRunEmulator() as run, SlackEmulator() as slack, MonitoringEmulator() as monitoring:
        port = free_port()
        env = function_env(run.url, slack.api_url, monitoring=monitoring.target, ROLLBACK_POLICIES=str(policies))
        proc = start_function("handle_alert", port, env, log_path=policies / "function.log")
        try:
            yield Stack(run, slack, monitoring, port)
        finally:
            stop_process(proc)


@pytest.fixture(autouse=True)
def _fresh(stack: Stack) -> None:
    stack.run.reset()
    stack.slack.reset()
    stack.monitoring.reset()
    stack.now = datetime.now(UTC).replace(second=0, microsecond=0)


LATEST = [{"type": "LATEST", "percent": 100}]
ON_PREVIOUS = [{"type": "REVISION", "revision": PREVIOUS, "percent": 100}]


def test_confirmed_breach_rolls_back_with_measured_numbers(stack: Stack) -> None:
    stack.service("checkout", {PREVIOUS: GOOD, SUSPECT: BAD}, history=[(60, ON_PREVIOUS), (15, LATEST)])
    calls_before = len(stack.monitoring.calls)
    assert stack.deliver("checkout").status_code == 200
    assert stack.traffic("checkout") == [(PREVIOUS, 100)]
    measured = _measured(stack.last_message())
    assert f"suspect {SUSPECT}: 5xx 1" in measured  # ~18% of the last 2 minutes' requests
    assert f"target {PREVIOUS} when it last served: 5xx 0." in measured
    assert len(stack.monitoring.calls) - calls_before <= 6


def test_unconfirmed_alert_does_not_roll_back_and_shows_the_numbers(stack: Stack) -> None:
    stack.service("checkout", {PREVIOUS: GOOD, SUSPECT: GOOD}, history=[(60, ON_PREVIOUS), (15, LATEST)])
    assert stack.deliver("checkout").status_code == 200
    assert stack.traffic("checkout") == [("LATEST", 100)]
    assert stack.run.patches == []
    message = stack.last_message()
    assert "does not confirm" in message["text"]
    assert f"suspect {SUSPECT}: 5xx 0." in _measured(message)


def test_both_revisions_failing_escalates_instead_of_rolling_back(stack: Stack) -> None:
    stack.service("checkout", {PREVIOUS: BAD, SUSPECT: BAD}, history=[(60, ON_PREVIOUS), (15, LATEST)])
    assert stack.deliver("checkout").status_code == 200
    assert stack.run.patches == []
    message = stack.last_message()
    assert "ESCALATION" in message["text"]
    assert "would not help" in message["text"]
    assert f"target {PREVIOUS} when it last served: 5xx 1" in _measured(message)


def test_too_little_traffic_acts_on_the_alert_alone_by_default(stack: Stack) -> None:
    stack.service("checkout", {}, history=[(60, ON_PREVIOUS), (15, LATEST)])
    stack.monitoring.reset()  # no data at all: the suspect has 0 requests in its window
    assert stack.deliver("checkout").status_code == 200
    assert stack.traffic("checkout") == [(PREVIOUS, 100)]
    message = stack.last_message()
    assert "acting on the alert alone" in json.dumps(message["blocks"])


def test_too_little_traffic_with_a_careful_policy_does_nothing(stack: Stack) -> None:
    stack.service("careful-api", {}, history=[(60, ON_PREVIOUS), (15, LATEST)])
    stack.monitoring.reset()
    assert stack.deliver("careful-api").status_code == 200
    assert stack.run.patches == []
    assert "could not be verified" in stack.last_message()["text"]


def test_monitoring_outage_falls_back_to_the_alert_within_the_deadline(stack: Stack) -> None:
    stack.service("checkout", {PREVIOUS: GOOD, SUSPECT: BAD}, history=[(60, ON_PREVIOUS), (15, LATEST)])
    stack.monitoring.fail_next(1000)
    started = time.monotonic()
    assert stack.deliver("checkout").status_code == 200
    assert time.monotonic() - started < 8  # one 5 s Monitoring budget, plus the rest of the delivery
    assert stack.traffic("checkout") == [(PREVIOUS, 100)]
    assert "Cloud Monitoring unavailable" in _measured(stack.last_message())


def test_monitoring_outage_with_a_careful_policy_does_nothing(stack: Stack) -> None:
    stack.service("careful-api", {PREVIOUS: GOOD, SUSPECT: BAD}, history=[(60, ON_PREVIOUS), (15, LATEST)])
    stack.monitoring.fail_next(1000)
    assert stack.deliver("careful-api").status_code == 200
    assert stack.run.patches == []


def test_service_level_alert_is_attributed_by_the_per_revision_breakdown(stack: Stack) -> None:
    # The OLDER revision is the broken one; "newest serving" would have blamed the wrong one.
    split = [
        {"type": "REVISION", "revision": PREVIOUS, "percent": 50},
        {"type": "REVISION", "revision": SUSPECT, "percent": 50},
    ]
    on_oldest = [{"type": "REVISION", "revision": OLDEST, "percent": 100}]
    stack.service("checkout", {OLDEST: GOOD, PREVIOUS: BAD, SUSPECT: GOOD}, history=[(80, on_oldest), (10, split)])
    assert stack.deliver("checkout", revision=None).status_code == 200
    assert stack.traffic("checkout") == [(OLDEST, 100)]
    assert f"suspect {PREVIOUS}" in _measured(stack.last_message())


def test_after_the_rollback_the_service_recovers(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = stack.service("checkout", {PREVIOUS: GOOD, SUSPECT: BAD}, history=[(60, ON_PREVIOUS), (15, LATEST)])
    ref = ServiceRef(project=PROJECT, region=REGION, service="checkout")
    with MonitoringClient(stack.monitoring.target) as client:
        before = client.evidence(
            ref, trailing_window(stack.now, timedelta(minutes=5)), signals=frozenset({"error_rate"})
        )
        assert stack.deliver("checkout").status_code == 200
        sim.run_until(stack.now + timedelta(minutes=5))  # five more minutes on the rolled-back split
        # Read those minutes as Monitoring will show them once they are ingested.
        later = stack.now + timedelta(minutes=5) + stack.monitoring.ingestion_lag
        monkeypatch.setattr(stack.monitoring, "clock", lambda: later)
        after = client.evidence(
            ref,
            trailing_window(stack.now + timedelta(minutes=5), timedelta(minutes=5)),
            signals=frozenset({"error_rate"}),
        )

    def service_ratio(evidence: Evidence) -> float:
        requests = sum(n.requests for n in evidence.revisions.values())
        return sum(n.errors for n in evidence.revisions.values()) / requests

    assert service_ratio(before) > 0.05
    assert service_ratio(after) < 0.05
    assert after.get(SUSPECT).requests == 0
