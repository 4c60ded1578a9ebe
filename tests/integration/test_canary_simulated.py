"""Simulated canaries: the canary orchestration in-process on a simulated clock, with the real
google-cloud-run client against the Cloud Run emulator, the real google-cloud-monitoring client
against the Monitoring emulator, the real slack-sdk client against the Slack emulator, and the
traffic simulator writing each revision's requests, 5xx and latencies as the canary moves traffic.

The clock of the control is the simulator's: each loop iteration simulates one minute of traffic
(with the split the last tick left) and then ticks, so a 10 → 25 → 50 → 100 canary of 4 × 5 minutes
runs in seconds. Every loop is bounded by a number of simulated minutes.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.adapters.cloudrun import CloudRunClient
from controller.adapters.monitoring import MonitoringClient
from controller.adapters.policy_files import load_policies
from controller.adapters.slack import WebApiNotifier
from controller.app.canary_control import CanaryControl
from controller.app.canary_reports import CanaryReport
from controller.app.engine import Controller
from controller.app.settings import Settings
from controller.core.alert import Alert
from controller.core.canary import Step
from controller.core.canary_verdict import Verdict
from controller.core.ledger import Ledger, read_ledger, write_ledger
from controller.core.policy_matching import PolicySet
from controller.core.state import ServiceRef
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.emulator.traffic import RevisionProfile, TrafficSimulator

PROJECT, REGION = "demo-proj", "us-central1"
STABLE, CANDIDATE = "checkout-00041-abc", "checkout-00042-xyz"
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
GOOD = RevisionProfile(error_rate=0.005, latency_ms=120.0)

POLICIES = """
name: canary-notify
match: {services: ["checkout*"]}
triggers:
  error_rate: {above: 0.05, for: 2m, min_requests: 50}
  latency_p95: {above_ms: 2000, for: 2m, min_requests: 50}
  health: {consecutive_failures: 3}
canary:
  steps: [10, 25, 50, 100]
  step_for: 5m
  metric_lag: 3m
  min_requests: 100
  max_error_rate_increase: 0.01
  max_latency_ratio: 1.25
  inconclusive_timeout: 10m
  on_timeout: notify
  watch: 30m
---
name: canary-strict
match: {services: ["quiet-*"]}
triggers:
  error_rate: {above: 0.05, for: 2m, min_requests: 50}
canary: {step_for: 5m, metric_lag: 3m, min_requests: 100, inconclusive_timeout: 10m, on_timeout: rollback}
"""


@dataclass
class Stack:
    run: CloudRunEmulator
    monitoring: MonitoringEmulator
    slack: SlackEmulator
    client: MonitoringClient
    policies: PolicySet

    def control(self, sim: TrafficSimulator) -> CanaryControl:
        notifier = WebApiNotifier("xoxb-test", "#deploys", self.slack.api_url)
        return CanaryControl(
            CloudRunClient(self.run.url), self.client, notifier, self.policies, Settings(), lambda: sim.now
        )


@pytest.fixture(scope="module")
def stack_(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("canary-policies")
    (folder / "canary.yaml").write_text(POLICIES)
    with CloudRunEmulator() as run, MonitoringEmulator() as monitoring, SlackEmulator() as slack:
        client = MonitoringClient(monitoring.target)
        try:
            yield Stack(run, monitoring, slack, client, load_policies(Path(folder)))
        finally:
            client.close()


@pytest.fixture
def stack(stack_: Stack) -> Stack:
    stack_.run.reset()
    stack_.monitoring.reset()
    stack_.slack.reset()
    return stack_


def deploy(
    stack: Stack,
    candidate: RevisionProfile,
    *,
    service: str = "checkout",
    stable: RevisionProfile = GOOD,
    requests_per_minute: int = 2000,
) -> tuple[TrafficSimulator, ServiceRef]:
    """``stable`` serves 100% for 10 simulated minutes; the candidate is deployed with --no-traffic --tag candidate."""
    stack.run.add_service(
        PROJECT,
        REGION,
        service,
        revisions=[
            RevisionSpec(name=STABLE, create_time=T0 - timedelta(days=2)),
            RevisionSpec(name=CANDIDATE, create_time=T0 - timedelta(minutes=1)),
        ],
        # CI deployed with --no-traffic --tag candidate; the controller already knows stable.
        traffic=[
            {"type": "REVISION", "revision": STABLE, "percent": 100},
            {"type": "REVISION", "revision": CANDIDATE, "percent": 0, "tag": "candidate"},
        ],
        annotations=write_ledger(Ledger().with_last_good(STABLE), {}),
    )
    sim = TrafficSimulator(
        stack.run, stack.monitoring, project=PROJECT, region=REGION, service=service,
        requests_per_minute=requests_per_minute, seed=7, start=T0 - timedelta(minutes=10),
    )  # fmt: skip
    sim.set_profile(STABLE, stable)
    sim.set_profile(CANDIDATE, candidate)
    sim.run_until(T0)
    return sim, ServiceRef(project=PROJECT, region=REGION, service=service)


def drive(
    control: CanaryControl, sim: TrafficSimulator, ref: ServiceRef, minutes: int, *, stop: Step | None = None
) -> list[CanaryReport]:
    """Tick now, then (simulate a minute, tick) up to ``minutes`` times; stop early after ``stop``."""
    reports = [control.tick(ref)]
    for _ in range(minutes):
        if stop is not None and reports[-1].step is stop:
            break
        sim.advance(1)
        reports.append(control.tick(ref))
    return reports


def changes(reports: list[CanaryReport]) -> list[tuple[Step, int]]:
    return [(r.step, r.percent) for r in reports if r.changed and r.step is not Step.ADOPT]


def traffic(stack: Stack, service: str = "checkout") -> list[tuple[str, int, str]]:
    return [(t["revision"], t["percent"], t["tag"]) for t in stack.run.traffic(PROJECT, REGION, service)]


def ledger(stack: Stack, service: str = "checkout") -> Ledger:
    return read_ledger(stack.run.service(PROJECT, REGION, service).get("annotations", {}))


def test_healthy_candidate_goes_10_25_50_100_and_becomes_stable(stack: Stack) -> None:
    sim, ref = deploy(stack, GOOD)
    control = stack.control(sim)
    reports = drive(control, sim, ref, 30, stop=Step.PROMOTE)
    assert changes(reports) == [(Step.START, 10), (Step.STEP, 25), (Step.STEP, 50), (Step.PROMOTE, 100)]
    assert sim.now == T0 + timedelta(minutes=15)  # each step lasted step_for from its traffic change
    assert all(r.comparison is None or r.comparison.judgement.value != "fail" for r in reports)
    # The candidate is stable now (tags kept right); the old stable stays last-good while watched.
    assert traffic(stack) == [(CANDIDATE, 100, "stable"), (STABLE, 0, "previous")]
    after = ledger(stack)
    assert after.last_good == STABLE
    cs = after.canary
    assert cs is not None and cs.promoted_at == sim.now and cs.checks == 3
    assert control.gate(ref).verdict is Verdict.PASS
    # Slack: one message per step change, all threaded under the first one, with the numbers.
    messages = stack.slack.wait_for_messages(4)
    assert len(messages) == 4
    assert not messages[0].get("thread_ts")
    assert {m.get("thread_ts") for m in messages[1:]} == {messages[0]["ts"]}
    assert cs.thread_ts == messages[0]["ts"]
    assert "5xx: candidate" in json.dumps(messages[1]["blocks"])
    # After the watch period the new stable becomes the alert path's last-good target.
    sim.advance(30)
    assert control.tick(ref).step is Step.WATCH_OVER
    assert ledger(stack).last_good == CANDIDATE
    assert ledger(stack).canary is None
    assert control.tick(ref).step is Step.NONE


def test_three_points_more_5xx_is_rolled_back_at_the_first_step_and_quarantined(stack: Stack) -> None:
    sim, ref = deploy(stack, RevisionProfile(error_rate=0.035, latency_ms=120.0))
    control = stack.control(sim)
    reports = drive(control, sim, ref, 20, stop=Step.ROLLBACK)
    assert changes(reports) == [(Step.START, 10), (Step.ROLLBACK, 0)]
    rollback = reports[-1]
    assert rollback.comparison is not None and "5xx ratio" in rollback.comparison.reasons[0]
    assert sim.now <= T0 + timedelta(minutes=8)  # judged as soon as the first step had enough data
    assert traffic(stack) == [(STABLE, 100, "stable"), (CANDIDATE, 0, "candidate")]
    after = ledger(stack)
    assert after.is_quarantined(CANDIDATE)
    assert after.canary is None and after.last_good == STABLE
    messages = stack.slack.wait_for_messages(2)
    assert "rolled back" in messages[-1]["text"].lower()
    assert messages[-1]["thread_ts"] == messages[0]["ts"]
    assert "stable 0." in json.dumps(messages[-1]["blocks"])  # stable's measured ratio is shown
    assert control.gate(ref, CANDIDATE).verdict is Verdict.FAIL
    assert control.tick(ref).step is Step.NONE  # a quarantined revision is never a candidate again


def test_candidate_with_1_6x_the_stable_p95_is_rolled_back(stack: Stack) -> None:
    sim, ref = deploy(stack, RevisionProfile(error_rate=0.005, latency_ms=192.0))  # 1.6 x 120 ms
    control = stack.control(sim)
    reports = drive(control, sim, ref, 20, stop=Step.ROLLBACK)
    assert changes(reports) == [(Step.START, 10), (Step.ROLLBACK, 0)]
    comparison = reports[-1].comparison
    assert comparison is not None
    assert any(reason.startswith("p95 ") and "x stable's" in reason for reason in comparison.reasons)
    assert ledger(stack).is_quarantined(CANDIDATE)


def test_low_traffic_candidate_never_promotes_on_silence(stack: Stack) -> None:
    # 20 requests a minute: 2 a minute at 10%. The window grows with the step (it is judged from
    # the end of the metric lag up to now), so 100 candidate requests would take 53 minutes.
    sim, ref = deploy(stack, GOOD, requests_per_minute=20)
    control = stack.control(sim)
    reports = drive(control, sim, ref, 40)
    assert changes(reports) == [(Step.START, 10), (Step.TIMEOUT, 10)]  # Slack is told once, then it holds
    timeout = next(r for r in reports if r.step is Step.TIMEOUT)
    assert timeout.comparison is not None and "candidate requests" in timeout.comparison.reasons[0]
    assert sim.now == T0 + timedelta(minutes=40)
    assert traffic(stack) == [(STABLE, 90, "stable"), (CANDIDATE, 10, "candidate")]
    assert control.gate(ref).verdict is Verdict.INCONCLUSIVE


def test_low_traffic_times_out_into_a_rollback_when_the_policy_says_so(stack: Stack) -> None:
    sim, ref = deploy(stack, GOOD, service="quiet-checkout", requests_per_minute=30)
    control = stack.control(sim)
    reports = drive(control, sim, ref, 30, stop=Step.ROLLBACK)
    assert changes(reports) == [(Step.START, 10), (Step.ROLLBACK, 0)]
    assert sim.now == T0 + timedelta(minutes=15)  # step_for + inconclusive_timeout
    assert "still inconclusive" in reports[-1].message
    assert ledger(stack, "quiet-checkout").is_quarantined(CANDIDATE)


def test_monitoring_outage_holds_and_never_promotes(stack: Stack) -> None:
    sim, ref = deploy(stack, GOOD)
    dead = MonitoringClient("127.0.0.1:9", deadline=0.3)  # nothing listens on port 9
    try:
        notifier = WebApiNotifier("xoxb-test", "#deploys", stack.slack.api_url)
        control = CanaryControl(
            CloudRunClient(stack.run.url), dead, notifier, stack.policies, Settings(), lambda: sim.now
        )
        reports = drive(control, sim, ref, 8)
    finally:
        dead.close()
    assert changes(reports) == [(Step.START, 10)]
    last = reports[-1]
    assert last.step is Step.WAIT and last.comparison is not None
    assert "Cloud Monitoring unavailable" in last.comparison.reasons[0]


def test_two_ticks_racing_do_not_double_step(stack: Stack) -> None:
    sim, ref = deploy(stack, GOOD)
    # Hold the first two PATCHes until both ticks have read the same etag and PATCH, so the race
    # really happens (bounded: if it cannot, the barrier times out).
    barrier = threading.Barrier(2, timeout=3)
    calls: list[str] = []

    def hold(name: str) -> None:
        calls.append(name)
        if len(calls) <= 2:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()

    stack.run.before_patch = hold
    first, second = stack.control(sim), stack.control(sim)  # two instances: own clients, same clock
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda c: c.tick(ref), [first, second]))
    assert sorted(r.step.value for r in reports) == ["start", "wait"]  # the loser re-planned and waited
    assert stack.run.applied_traffic_changes(PROJECT, REGION, "checkout") == 1
    outcomes = [p.outcome for p in stack.run.patches]
    assert sorted(outcomes[:2]) == ["applied", "conflict"]
    assert len(stack.slack.wait_for_messages(1)) == 1
    # The same again at the step boundary: exactly one step to 25%.
    stack.run.before_patch = None
    sim.advance(5)
    calls.clear()
    barrier.reset()
    stack.run.before_patch = hold
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda c: c.tick(ref), [first, second]))
    assert sorted(r.step.value for r in reports) == ["step", "wait"]
    assert stack.run.applied_traffic_changes(PROJECT, REGION, "checkout") == 2
    assert traffic(stack)[:2] == [(STABLE, 75, "stable"), (CANDIDATE, 25, "candidate")]


def test_alert_during_a_canary_rolls_back_to_stable(stack: Stack) -> None:
    sim, ref = deploy(stack, RevisionProfile(error_rate=0.2, latency_ms=120.0))
    control = stack.control(sim)
    reports = drive(control, sim, ref, 3)  # still inside the metric lag: the canary waits
    assert changes(reports) == [(Step.START, 10)]
    engine = Controller(
        Settings(),
        CloudRunClient(stack.run.url),
        WebApiNotifier("xoxb-test", "#deploys", stack.slack.api_url),
        policies=stack.policies,
        clock=lambda: sim.now,
        monitoring=stack.client,
    )
    alert = Alert(
        incident_id="0.canary-inc",
        state="open",
        project=PROJECT,
        region=REGION,
        service="checkout",
        revision=CANDIDATE,
        trigger="error_rate",
        metric_type="run.googleapis.com/request_count",
        observed_value=0.2,
        threshold_value=0.05,
        window=timedelta(minutes=2),
        started_at=sim.now,
    )
    outcome = engine.handle_alert(alert)
    assert outcome.decision is not None and outcome.decision.reason.value == "rolled-back", outcome
    assert [(r, p) for r, p, _ in traffic(stack) if p] == [(STABLE, 100)]
    after = ledger(stack)
    assert after.is_quarantined(CANDIDATE)
    assert after.canary is None  # the alert ended the canary
    assert after.last_good == STABLE
    assert control.tick(ref).step is Step.NONE
    assert control.gate(ref, CANDIDATE).verdict is Verdict.FAIL


def test_list_services_follows_pages() -> None:
    with CloudRunEmulator(page_size=2) as run:
        for name in ["e-svc", "a-svc", "c-svc", "b-svc", "d-svc"]:
            run.add_service(PROJECT, REGION, name, revisions=[RevisionSpec(name=f"{name}-00001-aaa", create_time=T0)])
        run.add_service(
            PROJECT, "europe-west1", "elsewhere", revisions=[RevisionSpec(name="x-00001-aaa", create_time=T0)]
        )
        found = CloudRunClient(run.url).list_services(PROJECT, REGION)
    assert [ref.service for ref in found] == ["a-svc", "b-svc", "c-svc", "d-svc", "e-svc"]
    assert {ref.region for ref in found} == {REGION}
