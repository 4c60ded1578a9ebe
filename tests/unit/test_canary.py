"""The canary state machine and its judgement: tables and properties, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import T0, alert, latest, pinned, rev, state

from controller.core.canary import Step, gate, tick
from controller.core.canary_traffic import find_pair, split
from controller.core.canary_verdict import Comparison, Verdict, compare
from controller.core.decide import Reason, decide
from controller.core.ledger import CanaryState, Hold, Ledger
from controller.core.manual_plans import plan_undo
from controller.core.policy import Canary, Policy
from controller.core.state import ServiceState

POLICY = Policy.model_validate(
    {
        "name": "canary",
        "triggers": {
            "error_rate": {"above": 0.05, "for": "2m"},
            "latency_p95": {"above_ms": 2000, "for": "2m"},
            "health": {"consecutive_failures": 3},
        },
        "canary": {"steps": [10, 25, 50, 100], "step_for": "5m", "metric_lag": "3m", "min_requests": 100},
    }
)
CFG: Canary = POLICY.canary or Canary()
STABLE, CANDIDATE = "svc-00041-abc", "svc-00042-xyz"
REVS = [rev("svc-00040-aaa", 1), rev(STABLE, 2), rev(CANDIDATE, 3)]
PASS = Comparison(judgement=Verdict.PASS)
FAIL = Comparison(judgement=Verdict.FAIL, reasons=("5xx too high",))
UNSURE = Comparison(judgement=Verdict.INCONCLUSIVE, reasons=("only 10 candidate requests",))


@dataclass(frozen=True)
class N:
    revision: str = CANDIDATE
    requests: int = 1000
    errors: int = 5
    latency_count: int = 1000
    p95_ms: float | None = 200.0
    health_failures: int | None = 0
    error_ratio_lower: float = 0.0
    error_ratio_upper: float = 1.0

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def running(step: int = 0, minutes_ago: int = 6, **extra: object) -> Ledger:
    cs = CanaryState(candidate=CANDIDATE, stable=STABLE, step=step, step_started_at=T0 - timedelta(minutes=minutes_ago))
    return Ledger().with_last_good(STABLE).model_copy(update={"canary": cs.model_copy(update=extra)})


def split_state(percent: int) -> ServiceState:
    return state(REVS, [pinned(STABLE, 100 - percent, "stable"), pinned(CANDIDATE, percent, "candidate")])


# -- judgement --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "stable", "expected"),
    [
        pytest.param(N(errors=5), N(revision=STABLE, errors=5), Verdict.PASS, id="same-as-stable"),
        pytest.param(N(errors=35, error_ratio_lower=0.024), N(revision=STABLE, errors=5), Verdict.FAIL, id="3-points-more-5xx"),
        pytest.param(N(errors=20, error_ratio_lower=0.012), N(revision=STABLE, errors=5), Verdict.INCONCLUSIVE, id="above-limit-not-significant"),
        pytest.param(N(errors=80, error_ratio_lower=0.06), N(revision=STABLE, requests=10, errors=9), Verdict.FAIL, id="absolute-5xx-stable-too-quiet"),
        pytest.param(N(p95_ms=320.0), N(revision=STABLE, p95_ms=200.0), Verdict.FAIL, id="p95-1.6x"),
        pytest.param(N(p95_ms=240.0), N(revision=STABLE, p95_ms=200.0), Verdict.PASS, id="p95-1.2x"),
        pytest.param(N(p95_ms=2500.0), N(revision=STABLE, p95_ms=2400.0), Verdict.FAIL, id="p95-absolute"),
        pytest.param(N(health_failures=3), N(revision=STABLE), Verdict.FAIL, id="health"),
        pytest.param(N(requests=50, errors=0, latency_count=50), N(revision=STABLE), Verdict.INCONCLUSIVE, id="too-few-requests"),
        pytest.param(N(requests=50, errors=0, latency_count=50, health_failures=5), N(revision=STABLE), Verdict.FAIL, id="fail-beats-inconclusive"),
        pytest.param(N(latency_count=0, p95_ms=None), N(revision=STABLE), Verdict.INCONCLUSIVE, id="no-latency-data"),
    ],
)  # fmt: skip
def test_compare(candidate: N, stable: N, expected: Verdict) -> None:
    result = compare(CFG, POLICY.triggers, candidate, stable)
    assert result.judgement is expected, result


# -- candidate and stable ---------------------------------------------------------------------


def test_pair_after_a_no_traffic_deploy() -> None:
    deployed = state(REVS, [pinned(STABLE, 100), pinned(CANDIDATE, 0, "candidate")])  # --no-traffic --tag candidate
    assert find_pair(deployed, Ledger()) == (CANDIDATE, STABLE)


def test_pair_when_a_deploy_sent_traffic_straight_to_the_candidate() -> None:
    assert find_pair(state(REVS, [latest()]), Ledger().with_last_good(STABLE)) == (CANDIDATE, STABLE)


def test_without_memory_production_is_adopted_as_stable_first() -> None:
    steady = state(REVS, [latest()])  # the newest revision has served 100% for who knows how long
    assert find_pair(steady, Ledger()) is None
    d = tick(steady, Ledger(), POLICY, T0, None)
    assert d.step is Step.ADOPT
    assert d.ledger_after is not None
    assert d.ledger_after.last_good == CANDIDATE
    assert d.traffic_after == steady.traffic  # nothing moves


def test_quarantined_revision_is_never_a_candidate() -> None:
    ledger = Ledger().quarantine(CANDIDATE, reason="bad", now=T0)
    assert find_pair(state(REVS, [pinned(STABLE, 100)]), ledger) is None


def test_split_keeps_tags_right() -> None:
    base = state(REVS, [pinned(STABLE, 100), pinned("svc-00040-aaa", 0, "old")])
    assert split(base, CANDIDATE, STABLE, 25)[:2] == (pinned(STABLE, 75, "stable"), pinned(CANDIDATE, 25, "candidate"))
    assert split(base, CANDIDATE, STABLE, 100)[:2] == (pinned(CANDIDATE, 100, "stable"), pinned(STABLE, 0, "previous"))
    assert pinned("svc-00040-aaa", 0, "old") in split(base, CANDIDATE, STABLE, 25)


# -- transitions ------------------------------------------------------------------------------


def test_start() -> None:
    deployed = state(REVS, [pinned(STABLE, 100), pinned(CANDIDATE, 0, "candidate")])
    d = tick(deployed, Ledger().with_last_good(STABLE), POLICY, T0, None)
    assert d.step is Step.START
    assert d.traffic_after[:2] == (pinned(STABLE, 90, "stable"), pinned(CANDIDATE, 10, "candidate"))
    assert d.ledger_after is not None
    assert d.ledger_after.last_good == STABLE
    cs = d.ledger_after.canary
    assert cs is not None
    assert (cs.step, cs.step_started_at) == (0, T0)


@pytest.mark.parametrize(
    ("ledger", "comparison", "expected", "percent"),
    [
        pytest.param(running(minutes_ago=2), PASS, Step.WAIT, 10, id="step-not-over"),
        pytest.param(running(minutes_ago=2), FAIL, Step.ROLLBACK, 0, id="fail-early"),
        pytest.param(running(minutes_ago=6), PASS, Step.STEP, 25, id="pass-next-step"),
        pytest.param(running(minutes_ago=6), UNSURE, Step.WAIT, 10, id="inconclusive-holds"),
        pytest.param(running(minutes_ago=6), None, Step.WAIT, 10, id="no-window-holds"),
        pytest.param(running(minutes_ago=40), UNSURE, Step.TIMEOUT, 10, id="inconclusive-timeout-notify"),
        pytest.param(running(minutes_ago=40, timeout_notified=True), UNSURE, Step.WAIT, 10, id="timeout-told-once"),
        pytest.param(running(step=2, minutes_ago=6), PASS, Step.PROMOTE, 100, id="promote"),
        pytest.param(
            running(step=0, minutes_ago=6, approved_by="x"), PASS, Step.STEP, 25, id="approval-only-before-last"
        ),
    ],
)
def test_tick(ledger: Ledger, comparison: Comparison | None, expected: Step, percent: int) -> None:
    d = tick(split_state(10), ledger, POLICY, T0, comparison)
    assert d.step is expected, d.message
    assert d.percent == percent
    if expected in (Step.STEP, Step.PROMOTE, Step.ROLLBACK):
        assert sum(t.percent for t in d.traffic_after) == 100
        assert any(t.revision == CANDIDATE and t.percent == percent for t in d.traffic_after)


def test_rollback_quarantines_and_ends_the_canary() -> None:
    d = tick(split_state(25), running(step=1), POLICY, T0, FAIL)
    assert d.ledger_after is not None
    assert d.ledger_after.is_quarantined(CANDIDATE)
    assert d.ledger_after.canary is None
    assert d.ledger_after.last_good == STABLE
    assert d.ledger_after.actions == ()  # a canary rollback does not spend the alert path's daily budget


def test_undo_of_a_canary_rollback_lifts_the_candidates_quarantine() -> None:
    # The rollback is recorded like every other: from the revision moved away from (and
    # quarantined) to the one that took the traffic, so undo knows which quarantine to lift.
    before = split_state(25)
    d = tick(before, running(step=1), POLICY, T0, FAIL)
    assert d.ledger_after is not None and d.ledger_after.last_action is not None
    last = d.ledger_after.last_action
    assert (last.kind, last.from_revision, last.to_revision) == ("canary-rollback", CANDIDATE, STABLE)
    rolled_back = state(REVS, list(d.traffic_after))
    undone = plan_undo(rolled_back, d.ledger_after, actor="alice", reason="", now=T0 + timedelta(minutes=1))
    assert undone.ledger_after is not None
    assert not undone.ledger_after.is_quarantined(CANDIDATE)
    assert undone.traffic_after == before.traffic


def test_timeout_can_roll_back_when_the_policy_says_so() -> None:
    strict = POLICY.model_copy(update={"canary": CFG.model_copy(update={"on_timeout": "rollback"})})
    assert tick(split_state(10), running(minutes_ago=40), strict, T0, UNSURE).step is Step.ROLLBACK


def test_approval_before_the_last_step() -> None:
    gated = POLICY.model_copy(update={"canary": CFG.model_copy(update={"require_approval": True})})
    asked = tick(split_state(50), running(step=2), gated, T0, PASS)
    assert asked.step is Step.AWAIT_APPROVAL
    assert asked.ledger_after is not None
    again = tick(split_state(50), asked.ledger_after, gated, T0 + timedelta(minutes=1), PASS)
    assert again.step is Step.WAIT
    approved = tick(split_state(50), asked.ledger_after, gated, T0 + timedelta(minutes=1), PASS, approved_by="alice")
    assert approved.step is Step.PROMOTE
    assert "approved by alice" in approved.message
    # Approval never delays a rollback.
    assert tick(split_state(50), asked.ledger_after, gated, T0, FAIL).step is Step.ROLLBACK


def test_watch_period_then_new_stable_is_last_good() -> None:
    promoted = tick(split_state(50), running(step=2), POLICY, T0, PASS)
    assert promoted.ledger_after is not None
    assert promoted.ledger_after.last_good == STABLE  # the old stable stays the alert path's target
    after = state(REVS, list(promoted.traffic_after))
    assert tick(after, promoted.ledger_after, POLICY, T0 + timedelta(minutes=10), None).step is Step.NONE
    done = tick(after, promoted.ledger_after, POLICY, T0 + timedelta(minutes=31), None)
    assert done.step is Step.WATCH_OVER
    assert done.ledger_after is not None
    assert done.ledger_after.last_good == CANDIDATE
    assert done.ledger_after.canary is None


def test_hold_pauses_the_canary() -> None:
    held = running().model_copy(update={"hold": Hold(by="bob", at=T0)})
    assert tick(split_state(10), held, POLICY, T0, FAIL).step is Step.NONE


def test_alert_during_a_canary_rolls_back_to_stable_and_ends_it() -> None:
    d = decide(alert(revision=CANDIDATE), POLICY, split_state(25), running(step=1), T0)
    assert d.reason is Reason.ROLLED_BACK
    assert d.target == STABLE
    assert d.ledger_after is not None
    assert d.ledger_after.canary is None
    assert d.ledger_after.is_quarantined(CANDIDATE)


@pytest.mark.parametrize(
    ("ledger", "comparison", "verdict"),
    [
        pytest.param(running(step=2), PASS, Verdict.PASS, id="promoted"),
        pytest.param(running(step=0), PASS, Verdict.INCONCLUSIVE, id="in-progress"),
        pytest.param(running(step=0), FAIL, Verdict.FAIL, id="failed"),
        pytest.param(running(step=0), UNSURE, Verdict.INCONCLUSIVE, id="silence-never-passes"),
    ],
)
def test_gate(ledger: Ledger, comparison: Comparison, verdict: Verdict) -> None:
    d = tick(split_state(10), ledger, POLICY, T0, comparison)
    assert gate(d, d.ledger_after or ledger, CANDIDATE) is verdict


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2),
    st.integers(0, 120),
    st.sampled_from([PASS, FAIL, UNSURE, None]),
)
def test_tick_invariants(step: int, minutes_ago: int, comparison: Comparison | None) -> None:
    ledger = running(step=step, minutes_ago=minutes_ago)
    service = split_state(CFG.steps[step])
    d = tick(service, ledger, POLICY, T0, comparison)
    assert tick(service, ledger, POLICY, T0, comparison) == d  # deterministic
    if d.traffic_after:
        assert sum(t.percent for t in d.traffic_after) == 100
        assert len({t.tag for t in d.traffic_after if t.tag}) == len([t for t in d.traffic_after if t.tag])
    if comparison is not None and comparison.judgement is Verdict.FAIL:
        assert d.step is Step.ROLLBACK  # fail always wins
    if d.step in (Step.STEP, Step.PROMOTE):
        assert comparison is PASS  # never promoted on silence
