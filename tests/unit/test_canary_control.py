"""The canary orchestration with in-memory fakes: windows, evidence, commit, Slack threads, approval, logs."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

import pytest
from support import REF, T0, InMemoryCloudRun, RecordingNotifier, pinned, rev, state

from controller.adapters.monitoring import MonitoringUnavailable
from controller.app.canary_control import CanaryControl
from controller.app.canary_reports import NoCanaryPolicy, gate_json, report_json
from controller.app.settings import Settings
from controller.core.canary import Step
from controller.core.canary_verdict import Verdict
from controller.core.errors import PermanentError
from controller.core.evidence import Evidence, RevisionNumbers, Window
from controller.core.ledger import CanaryState, Hold, Ledger, read_ledger, write_ledger
from controller.core.policy import Policy
from controller.core.policy_matching import PolicySet
from controller.core.slack_blocks import ACTION_PROMOTE, parse_promote_value
from controller.core.state import ServiceRef
from controller.core.stats import ExponentialBuckets, Histogram, bucket_index, num_buckets

STABLE, CANDIDATE = "checkout-00041-abc", "checkout-00042-xyz"
REVS = [rev("checkout-00040-aaa", 1), rev(STABLE, 2), rev(CANDIDATE, 3)]


def policy(**canary: object) -> Policy:
    return Policy.model_validate(
        {
            "name": "gated",
            "triggers": {"error_rate": {"above": 0.05, "for": "2m"}},
            "canary": {"steps": [10, 50, 100], "step_for": "5m", "metric_lag": "3m", "min_requests": 100, **canary},
        }
    )


BUCKETS = ExponentialBuckets(num_finite_buckets=40, growth_factor=1.4, scale=1.0)


def latency(ms: float, count: int) -> Histogram:
    counts = [0] * num_buckets(BUCKETS)
    counts[bucket_index(BUCKETS, ms)] = count
    return Histogram(options=BUCKETS, counts=tuple(counts), mean=ms, sum_of_squared_deviation=0.0)


def numbers(revision: str, requests: int = 1000, errors: int = 5, ms: float = 100.0) -> RevisionNumbers:
    return RevisionNumbers.build(
        revision,
        requests=requests,
        errors=errors,
        latency=latency(ms, requests) if requests else None,
        health_failures=0,
    )


class FakeMonitoring:
    """``MonitoringApi`` answering fixed numbers per revision; records every window asked."""

    def __init__(self, *found: RevisionNumbers, fail: bool = False) -> None:
        self.found = {n.revision: n for n in found}
        self.fail = fail
        self.windows: list[Window] = []

    def evidence(self, ref: ServiceRef, window: Window, *, signals: frozenset[str]) -> Evidence:
        self.windows.append(window)
        if self.fail:
            raise MonitoringUnavailable("UNAVAILABLE: connection refused")
        return Evidence(window=window, revisions=dict(self.found), calls=len(signals), signals=signals)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


def make(
    monitoring: FakeMonitoring | None = None,
    *,
    the_policy: Policy | None = None,
    ledger: Ledger | None = None,
    settings: Settings | None = None,
    notifier: RecordingNotifier | None = None,
) -> tuple[CanaryControl, InMemoryCloudRun, RecordingNotifier, Clock]:
    # The controller already knows the service (last-good) and CI deployed with --tag candidate.
    known = ledger if ledger is not None else Ledger().with_last_good(STABLE)
    traffic = [pinned(STABLE, 100), pinned(CANDIDATE, 0, "candidate")]
    initial = state(REVS, traffic, annotations=write_ledger(known, {}))
    run = InMemoryCloudRun(initial)
    notifier = notifier or RecordingNotifier()
    clock = Clock()
    mon = monitoring if monitoring is not None else FakeMonitoring(numbers(STABLE), numbers(CANDIDATE))
    control = CanaryControl(
        run,
        mon,
        notifier,
        PolicySet([the_policy or policy()]),
        settings or Settings(default_project="demo-proj"),
        clock,
    )
    return control, run, notifier, clock


def current(run: InMemoryCloudRun) -> CanaryState | None:
    return read_ledger(run.current.annotations).canary


def test_start_step_and_promote_with_candidate_and_stable_over_the_same_window() -> None:
    mon = FakeMonitoring(numbers(STABLE), numbers(CANDIDATE))
    control, run, notifier, clock = make(mon)
    assert control.tick(REF).step is Step.START
    assert run.current.traffic[:2] == (pinned(STABLE, 90, "stable"), pinned(CANDIDATE, 10, "candidate"))
    clock.advance(3)
    assert control.tick(REF).step is Step.WAIT  # inside the metric lag: Monitoring is not even asked
    assert mon.windows == []
    clock.advance(2)
    report = control.tick(REF)
    assert (report.step, report.percent) == (Step.STEP, 50)
    assert mon.windows == [Window(start=T0 + timedelta(minutes=3), end=T0 + timedelta(minutes=5))]
    assert report.comparison is not None and report.comparison.judgement is Verdict.PASS
    clock.advance(5)
    assert control.tick(REF).step is Step.PROMOTE
    assert run.current.traffic[:2] == (pinned(CANDIDATE, 100, "stable"), pinned(STABLE, 0, "previous"))
    # Slack: every change, threaded under the START message whose ts the ledger remembers.
    assert [m.thread_ts for m in notifier.messages] == [None, "1.000", "1.000"]
    cs = current(run)
    assert cs is not None and cs.thread_ts == "1.000" and cs.promoted_at == clock.now


def test_one_json_log_line_per_tick(caplog: pytest.LogCaptureFixture) -> None:
    control, _, _, clock = make()
    with caplog.at_level(logging.INFO, logger="controller.canary"):
        control.tick(REF)
        clock.advance(1)
        control.tick(REF)
    lines = [r for r in caplog.records if r.name == "controller.canary"]
    assert [r.fields["step"] for r in lines] == ["start", "wait"]  # type: ignore[attr-defined]
    assert lines[0].labels == {"service": str(REF), "step": "start"}  # type: ignore[attr-defined]
    json.dumps(lines[0].fields)  # type: ignore[attr-defined]  # serialisable as it is logged


def test_failing_candidate_is_rolled_back_with_the_numbers_in_slack() -> None:
    mon = FakeMonitoring(numbers(STABLE, errors=5), numbers(CANDIDATE, errors=60))
    control, run, notifier, clock = make(mon)
    control.tick(REF)
    clock.advance(4)  # fail is acted on at once, before the step is over
    report = control.tick(REF)
    assert report.step is Step.ROLLBACK
    assert run.current.traffic[:2] == (pinned(STABLE, 100, "stable"), pinned(CANDIDATE, 0, "candidate"))
    assert read_ledger(run.current.annotations).is_quarantined(CANDIDATE)
    text = json.dumps(notifier.messages[-1].blocks)
    assert "5xx: candidate 6% of 1,000" in text and "stable 0.5%" in text
    assert notifier.messages[-1].thread_ts == "1.000"


def test_monitoring_outage_is_inconclusive_asked_once_and_never_promotes() -> None:
    mon = FakeMonitoring(fail=True)
    control, run, _, clock = make(mon)
    control.tick(REF)
    clock.advance(6)
    run.conflicts_to_inject = 1  # a conflict makes the tick re-plan: Monitoring is not asked again
    report = control.tick(REF)
    assert report.step is Step.WAIT
    assert report.comparison is not None and report.comparison.judgement is Verdict.INCONCLUSIVE
    assert "Cloud Monitoring unavailable" in report.comparison.reasons[0]
    assert len(mon.windows) == 1
    assert run.current.traffic[1] == pinned(CANDIDATE, 10, "candidate")


def test_slack_failure_never_blocks_a_step() -> None:
    control, run, _, clock = make(notifier=RecordingNotifier(fail=True))
    report = control.tick(REF)
    assert report.changed and not report.notified
    cs = current(run)
    assert cs is not None and cs.thread_ts == ""  # nothing to thread under; later messages stand alone
    clock.advance(5)
    assert control.tick(REF).step is Step.STEP


def test_dry_run_decides_but_writes_nothing() -> None:
    control, run, notifier, _ = make(settings=Settings(dry_run=True))
    report = control.tick(REF)
    assert report.step is Step.START and report.dry_run and not report.changed
    assert report.message.startswith("would have: ")
    assert run.updates == [] and notifier.messages == []


def test_hold_pauses_the_canary() -> None:
    control, run, _, _ = make(ledger=Ledger(hold=Hold(by="alice", at=T0)))
    assert control.tick(REF).step is Step.NONE
    assert run.updates == []


def test_no_canary_policy() -> None:
    no_canary = Policy.model_validate({"name": "alerts-only", "triggers": {"error_rate": {"above": 0.05, "for": "2m"}}})
    control, run, _, _ = make(the_policy=no_canary)
    assert control.tick(REF).step is Step.NONE
    with pytest.raises(NoCanaryPolicy):
        control.gate(REF)
    assert control.tick_all("demo-proj", REF.region) == []  # services without a canary policy are skipped
    assert run.updates == []


def test_tick_all_walks_the_services_of_the_configured_regions() -> None:
    control = make(settings=Settings(default_project="demo-proj", regions=(REF.region, "asia-east1")))[0]
    reports = control.tick_all()
    assert [(r.service, r.step) for r in reports] == [(REF, Step.START)]
    with pytest.raises(PermanentError, match="ROLLBACK_REGIONS"):
        make()[0].tick_all()


def test_gate_verdicts_and_json_shape() -> None:
    mon = FakeMonitoring(numbers(STABLE), numbers(CANDIDATE))
    control, _, _, clock = make(mon)
    gate = control.gate(REF)
    assert (gate.verdict, gate.step, gate.percent, gate.candidate) == (
        Verdict.INCONCLUSIVE,
        Step.START,
        10,
        CANDIDATE,
    )
    assert set(gate_json(gate)) >= {"verdict", "step", "percent", "candidate", "stable", "evidence", "message"}
    clock.advance(5)
    gate = control.gate(REF)
    assert gate.verdict is Verdict.INCONCLUSIVE and gate.evidence  # stepped to 50%, numbers attached
    clock.advance(5)
    assert control.gate(REF).verdict is Verdict.PASS


def test_gate_after_a_rollback_defaults_to_the_newest_revision() -> None:
    quarantined = Ledger().with_last_good(STABLE).quarantine(CANDIDATE, reason="canary: 5xx", now=T0)
    control, _, _, _ = make(ledger=quarantined)
    gate = control.gate(REF)
    assert (gate.verdict, gate.revision) == (Verdict.FAIL, CANDIDATE)


def test_approval_before_the_last_step_and_the_promote_button() -> None:
    control, run, notifier, clock = make(the_policy=policy(require_approval=True))
    control.tick(REF)
    clock.advance(5)
    assert control.tick(REF).step is Step.STEP  # 50%
    clock.advance(5)
    assert control.tick(REF).step is Step.AWAIT_APPROVAL
    [actions] = [b for b in notifier.messages[-1].blocks if b["type"] == "actions"]
    [button] = actions["elements"]
    assert button["action_id"] == ACTION_PROMOTE
    assert parse_promote_value(button["value"]) == (REF, CANDIDATE)
    clock.advance(1)
    assert control.tick(REF).step is Step.WAIT  # asked once; waits for the human
    assert control.approve(REF, "slack:U1", "checkout-00099-new").message.startswith("nothing to approve")
    report = control.approve(REF, "slack:U1", CANDIDATE)
    assert report.step is Step.PROMOTE and "approved by slack:U1" in report.message
    assert run.current.traffic[0] == pinned(CANDIDATE, 100, "stable")


def test_an_early_approval_is_remembered_and_never_delays_a_rollback() -> None:
    mon = FakeMonitoring(numbers(STABLE), numbers(CANDIDATE))
    control, run, _, clock = make(mon, the_policy=policy(require_approval=True))
    control.tick(REF)
    clock.advance(1)
    report = control.approve(REF, "cli:bob")
    assert "approved by cli:bob" in report.message
    cs = current(run)
    assert cs is not None and cs.approved_by == "cli:bob"
    clock.advance(4)
    assert control.tick(REF).step is Step.STEP
    mon.found[CANDIDATE] = numbers(CANDIDATE, errors=80)
    clock.advance(4)
    assert control.tick(REF).step is Step.ROLLBACK


def test_status_and_report_json() -> None:
    control, _, _, _ = make()
    report = control.tick(REF)
    data = report_json(report)
    assert data["traffic"][1] == {"type": "REVISION", "revision": CANDIDATE, "percent": 10, "tag": "candidate"}
    status = control.status(REF)
    assert status.canary is not None and status.canary.candidate == CANDIDATE and status.steps == (10, 50, 100)


def test_render_shows_candidate_stable_share_and_reasons() -> None:
    mon = FakeMonitoring(numbers(STABLE, ms=100.0), numbers(CANDIDATE, ms=200.0))
    control, _, notifier, clock = make(mon)
    control.tick(REF)
    clock.advance(5)
    control.tick(REF)
    text = json.dumps(notifier.messages[-1].blocks)
    assert "Canary rolled back" in notifier.messages[-1].text
    assert CANDIDATE in text and STABLE in text and "x stable's" in text


def test_rollback_regions_setting() -> None:
    settings = Settings.from_env({"ROLLBACK_REGIONS": " europe-west1, ,us-central1 "})
    assert settings.regions == ("europe-west1", "us-central1")
    assert Settings.from_env({}).regions == ()
