"""Issue 10 points 1-7, the pure parts: humans and the controller never fight over traffic.

An undo makes the restored revision the accepted one; "adopt" is a writing step; candidates are
chosen deliberately (tag ``candidate``, or a deploy sent traffic to them); a policy edited during a
canary is a named transition; a manual rollback within the cooldown of the last action is refused;
the judged window is whole minutes inside ``[step start + metric_lag, now]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import pytest
from support import T0, InMemoryCloudRun, RecordingNotifier, pinned, rev, state

from controller.adapters.cloudrun import Applied
from controller.app.canary_control import CanaryControl
from controller.app.settings import Settings
from controller.core.canary import Step, tick
from controller.core.canary_traffic import find_pair, judged_window
from controller.core.canary_verdict import Comparison, Verdict
from controller.core.evidence import Evidence, Window
from controller.core.ledger import CanaryState, Ledger, write_ledger
from controller.core.manual_plans import RECENT_ACTION, plan_rollback, plan_undo
from controller.core.messages import SlackMessage
from controller.core.policy import Canary, Policy, policy_warnings
from controller.core.policy_matching import PolicySet
from controller.core.state import ServiceRef, ServiceState, TrafficTarget
from controller.core.timeseries import queries

STABLE, CANDIDATE, PREVIEW = "svc-00041-abc", "svc-00042-xyz", "svc-00043-pre"
OLD = "svc-00040-aaa"
REVS = [rev(OLD, 1), rev(STABLE, 2), rev(CANDIDATE, 3)]
PASS = Comparison(judgement=Verdict.PASS)
POLICY = Policy.model_validate({"name": "canary", "triggers": {"error_rate": {"above": 0.05}}, "canary": {}})
CFG: Canary = POLICY.canary or Canary()


def known(last_good: str = STABLE) -> Ledger:
    return Ledger().with_last_good(last_good)


def with_policy(**canary: object) -> Policy:
    return POLICY.model_copy(update={"canary": CFG.model_copy(update=canary)})


# -- point 1: an undo is a human saying "this revision is fine" ------------------------------------


def test_undo_makes_the_restored_revision_the_accepted_one_and_no_canary_starts_on_it() -> None:
    serving = state(REVS, [pinned(CANDIDATE, 100)])
    ledger = known()
    rolled = plan_rollback(serving, ledger, actor="alice", reason="5xx?", now=T0)
    assert rolled.ledger_after is not None and rolled.to_revision == STABLE
    after_rollback = state(REVS, list(rolled.traffic_after))
    undone = plan_undo(after_rollback, rolled.ledger_after, actor="alice", reason="false alarm", now=T0)
    assert undone.ledger_after is not None
    assert undone.ledger_after.last_good == CANDIDATE  # the restored revision is accepted
    assert "accepted" in undone.message
    restored = state(REVS, list(undone.traffic_after))
    d = tick(restored, undone.ledger_after, POLICY, T0 + timedelta(minutes=1), None)
    assert d.step is Step.NONE, d.message  # no canary restarted on the accepted revision
    assert find_pair(restored, undone.ledger_after, "any") is None


# -- point 2 and 6: adopt is written; candidates are chosen deliberately ---------------------------


def test_adopt_is_a_writing_step() -> None:
    d = tick(state(REVS, [pinned(CANDIDATE, 100)]), Ledger(), POLICY, T0, None)
    assert d.step is Step.ADOPT
    assert d.writes
    assert d.ledger_after is not None and d.ledger_after.last_good == CANDIDATE


def test_without_memory_the_first_tick_only_records_stable_even_with_a_tagged_candidate() -> None:
    fresh = state(REVS, [pinned(STABLE, 100), pinned(CANDIDATE, 0, "candidate")])
    d = tick(fresh, Ledger(), POLICY, T0, None)
    assert d.step is Step.ADOPT
    assert d.traffic_after == fresh.traffic  # nothing moves
    assert d.ledger_after is not None and d.ledger_after.last_good == STABLE
    nxt = tick(fresh, d.ledger_after, POLICY, T0 + timedelta(minutes=1), None)
    assert nxt.step is Step.START and nxt.candidate == CANDIDATE


def test_a_deploy_straight_to_100_percent_is_caught_after_adopt() -> None:
    first = tick(state(REVS[:2], [pinned(STABLE, 100)]), Ledger(), POLICY, T0, None)
    assert first.step is Step.ADOPT and first.ledger_after is not None
    deployed = state(REVS, [pinned(CANDIDATE, 100)])  # gcloud run deploy (no --no-traffic)
    d = tick(deployed, first.ledger_after, POLICY, T0 + timedelta(minutes=1), None)
    assert d.step is Step.START
    assert (d.candidate, d.stable, d.percent) == (CANDIDATE, STABLE, 10)
    assert d.traffic_after[:2] == (pinned(STABLE, 90, "stable"), pinned(CANDIDATE, 10, "candidate"))


def test_a_preview_revision_never_gets_traffic() -> None:
    preview = state(REVS, [pinned(STABLE, 100), pinned(CANDIDATE, 0, "pr-123")])
    assert find_pair(preview, known()) is None
    d = tick(preview, known(), POLICY, T0, None)
    assert d.step is Step.NONE, d.message
    untagged = state(REVS, [pinned(STABLE, 100)])  # an untagged --no-traffic revision
    assert find_pair(untagged, known()) is None


def test_candidates_any_widens_the_choice() -> None:
    preview = state(REVS, [pinned(STABLE, 100), pinned(CANDIDATE, 0, "pr-123")])
    assert find_pair(preview, known(), "any") == (CANDIDATE, STABLE)
    d = tick(preview, known(), with_policy(candidates="any"), T0, None)
    assert d.step is Step.START


def test_the_tagged_candidate_is_chosen_over_a_newer_preview() -> None:
    revs = [*REVS, rev(PREVIEW, 4)]
    both = state(revs, [pinned(STABLE, 100), pinned(CANDIDATE, 0, "candidate"), pinned(PREVIEW, 0, "pr-9")])
    assert find_pair(both, known()) == (CANDIDATE, STABLE)


# -- point 4: policy edited during a canary ---------------------------------------------------------


def running_at(step: int, percent: int) -> tuple[ServiceState, Ledger]:
    cs = CanaryState(
        candidate=CANDIDATE, stable=STABLE, step=step, step_started_at=T0 - timedelta(minutes=2), percent=percent
    )
    service = state(REVS, [pinned(STABLE, 100 - percent, "stable"), pinned(CANDIDATE, percent, "candidate")])
    return service, known().model_copy(update={"canary": cs})


def test_steps_shrunk_under_a_running_canary_continue_at_the_same_share() -> None:
    service, ledger = running_at(2, 50)  # at 50% under [10, 25, 50, 100]
    d = tick(service, ledger, with_policy(steps=[50, 100]), T0, PASS)
    assert d.step is Step.STEPS_CHANGED, d.message
    assert d.percent == 50
    assert d.writes and d.ledger_after is not None
    cs = d.ledger_after.canary
    assert cs is not None and cs.step == 0
    assert cs.step_started_at == T0 - timedelta(minutes=2)  # same share: the step's clock runs on
    assert "50, 100" in d.message


def test_steps_changed_moves_up_to_the_first_step_at_or_above_the_share() -> None:
    service, ledger = running_at(1, 25)
    d = tick(service, ledger, with_policy(steps=[30, 60, 100]), T0, PASS)
    assert d.step is Step.STEPS_CHANGED
    assert d.percent == 30
    assert d.traffic_after[:2] == (pinned(STABLE, 70, "stable"), pinned(CANDIDATE, 30, "candidate"))
    assert d.ledger_after is not None
    cs = d.ledger_after.canary
    assert cs is not None and (cs.step, cs.step_started_at) == (0, T0)


def test_steps_changed_under_a_state_without_a_recorded_share_uses_the_live_share() -> None:
    service, ledger = running_at(2, 50)
    legacy = ledger.canary
    assert legacy is not None
    ledger = ledger.model_copy(update={"canary": legacy.model_copy(update={"percent": 0})})
    d = tick(service, ledger, with_policy(steps=[50, 100]), T0, PASS)  # steps[2] no longer exists
    assert (d.step, d.percent) == (Step.STEPS_CHANGED, 50)


def test_100_percent_is_never_reached_without_a_pass() -> None:
    service, ledger = running_at(2, 50)
    d = tick(service, ledger, with_policy(steps=[40, 100]), T0, PASS)
    assert (d.step, d.percent) == (Step.STEPS_CHANGED, 50)
    assert d.traffic_after == service.traffic
    assert d.ledger_after is not None
    nxt = tick(service, d.ledger_after, with_policy(steps=[40, 100]), T0 + timedelta(minutes=4), PASS)
    assert (nxt.step, nxt.percent) == (Step.PROMOTE, 100)


def test_steps_changed_still_rolls_back_on_a_fail() -> None:
    service, ledger = running_at(2, 50)
    fail = Comparison(judgement=Verdict.FAIL, reasons=("bad",))
    assert tick(service, ledger, with_policy(steps=[50, 100]), T0, fail).step is Step.ROLLBACK


# -- point 3: a rollback within the cooldown of the last action ------------------------------------


def test_a_second_rollback_within_the_cooldown_is_refused_naming_the_first() -> None:
    serving = state(REVS, [pinned(CANDIDATE, 100)])
    first = plan_rollback(serving, Ledger(), actor="cli:alice", reason="5xx", now=T0)
    assert first.ledger_after is not None and first.to_revision == STABLE
    again = state(REVS, list(first.traffic_after))
    cooldown = timedelta(minutes=15)
    second = plan_rollback(
        again, first.ledger_after, actor="cli:bob", reason="", now=T0 + timedelta(minutes=2), cooldown=cooldown
    )
    assert second.refusal is not None
    assert second.refusal.guard == RECENT_ACTION
    text = second.refusal.message
    assert f"rolled back to {STABLE} by cli:alice at 12:00:00 UTC" in text, text
    assert "--force" in text
    forced = plan_rollback(
        again,
        first.ledger_after,
        actor="cli:bob",
        reason="",
        now=T0 + timedelta(minutes=2),
        cooldown=cooldown,
        force=True,
    )
    assert forced.refusal is None and forced.to_revision == OLD
    later = plan_rollback(
        again, first.ledger_after, actor="cli:bob", reason="", now=T0 + timedelta(minutes=16), cooldown=cooldown
    )
    assert later.refusal is None


def test_a_canary_step_is_not_a_recent_rollback() -> None:
    # Stopping a canary by hand is always allowed: the last action moved traffic forward.
    start = tick(state(REVS, [pinned(STABLE, 100), pinned(CANDIDATE, 0, "candidate")]), known(), POLICY, T0, None)
    assert start.ledger_after is not None
    split = state(REVS, list(start.traffic_after))
    refused = plan_rollback(split, start.ledger_after, actor="a", reason="", now=T0, cooldown=timedelta(minutes=15))
    assert refused.refusal is None and refused.to_revision == STABLE


# -- point 7: the judged window -------------------------------------------------------------------


def test_judged_window_is_whole_minutes_inside_the_documented_range() -> None:
    cs = CanaryState(candidate=CANDIDATE, stable=STABLE, step=0, step_started_at=T0)
    lag = CFG.metric_lag
    assert judged_window(cs, CFG, T0 + lag + timedelta(seconds=59)) is None
    now = T0 + lag + timedelta(seconds=65)
    bounds = judged_window(cs, CFG, now)
    assert bounds is not None
    window = Window(start=bounds[0], end=bounds[1])
    assert window.end == now
    assert window.start >= T0 + lag
    assert window.length == timedelta(minutes=1)
    (q, *_) = queries(REF_FOR_QUERIES, window, {"error_rate"})
    assert q.alignment_period == timedelta(seconds=60)
    assert q.start >= T0 + lag  # the minute before the step is never read
    longer = judged_window(cs, CFG, T0 + lag + timedelta(seconds=185))
    assert longer == (T0 + lag + timedelta(seconds=5), T0 + lag + timedelta(seconds=185))


@pytest.mark.parametrize(
    ("step_for", "metric_lag", "warned"),
    [("5m", "3m", False), ("4m", "3m", False), ("210s", "3m", True), ("90s", "60s", True)],
)
def test_validate_warns_when_a_step_cannot_hold_a_judgeable_minute(
    step_for: str, metric_lag: str, warned: bool
) -> None:
    policy = Policy.model_validate(
        {
            "name": "p",
            "triggers": {"error_rate": {"above": 0.05}},
            "canary": {"step_for": step_for, "metric_lag": metric_lag},
        }
    )
    found = policy_warnings(policy)
    assert bool(found) is warned, found
    if warned:
        assert "step_for" in found[0] and "metric_lag" in found[0]


REF_FOR_QUERIES = state(REVS).ref


# -- point 4: one service's failure never stops the others' ticks ---------------------------------


class TwoServices:
    """``CloudRunApi`` over two in-memory services; the first one's policy was edited mid-canary."""

    def __init__(self, broken: ServiceState, healthy: ServiceState) -> None:
        self.by_ref = {s.ref: InMemoryCloudRun(s) for s in (broken, healthy)}
        self.order = [broken.ref, healthy.ref]

    def read(self, ref: ServiceRef) -> ServiceState:
        return self.by_ref[ref].read(ref)

    def update(
        self, state: ServiceState, traffic: tuple[TrafficTarget, ...], annotations: Mapping[str, str]
    ) -> Applied:
        return self.by_ref[state.ref].update(state, traffic, annotations)

    def list_services(self, project: str, region: str) -> list[ServiceRef]:
        return list(self.order)


def test_tick_all_reports_a_failing_service_and_ticks_the_others() -> None:
    service, ledger = running_at(2, 50)
    broken = service.model_copy(update={"annotations": write_ledger(ledger, {})})
    other_ref = broken.ref.model_copy(update={"service": "cart"})
    healthy = state(
        REVS, [pinned(STABLE, 100), pinned(CANDIDATE, 0, "candidate")], annotations=write_ledger(known(), {})
    )
    healthy = healthy.model_copy(update={"ref": other_ref})
    run = TwoServices(broken, healthy)

    class Exploding(RecordingNotifier):
        def post_in_thread(self, message: SlackMessage, thread_ts: str | None) -> str | None:
            if "checkout" in message.text:
                raise RuntimeError("a bug in one service's path")
            return super().post_in_thread(message, thread_ts)

    control = CanaryControl(
        run,
        None,
        Exploding(),
        PolicySet([with_policy(steps=[50, 100])]),
        Settings(),
        lambda: T0,
    )
    reports = control.tick_all(broken.ref.project, broken.ref.region)
    assert [r.service.service for r in reports] == ["checkout", "cart"]
    assert "RuntimeError" in reports[0].error
    assert reports[1].step is Step.START and not reports[1].error


class RecordingMonitoring:
    """``MonitoringApi`` that records the windows asked and has no numbers (inconclusive)."""

    def __init__(self) -> None:
        self.windows: list[Window] = []

    def evidence(self, ref: ServiceRef, window: Window, *, signals: frozenset[str]) -> Evidence:
        self.windows.append(window)
        return Evidence(window=window, revisions={}, calls=len(signals), signals=signals)


def test_a_tick_asks_monitoring_for_whole_minutes_inside_the_step() -> None:
    started = T0 - CFG.metric_lag - timedelta(seconds=65)  # 65 s of judgeable time
    service, ledger = running_at(0, 10)
    cs = ledger.canary
    assert cs is not None
    ledger = ledger.model_copy(update={"canary": cs.model_copy(update={"step_started_at": started})})
    run = InMemoryCloudRun(service.model_copy(update={"annotations": write_ledger(ledger, {})}))
    monitoring = RecordingMonitoring()
    control = CanaryControl(run, monitoring, RecordingNotifier(), PolicySet([POLICY]), Settings(), lambda: T0)
    report = control.tick(service.ref)
    assert report.step is Step.WAIT
    [asked] = monitoring.windows
    assert (asked.start, asked.end) == (T0 - timedelta(minutes=1), T0)
    assert report.window == asked


def test_a_rollback_after_an_undo_is_allowed_and_goes_where_the_first_went() -> None:
    serving = state(REVS, [pinned(CANDIDATE, 100)])
    first = plan_rollback(serving, known(), actor="alice", reason="", now=T0)
    assert first.ledger_after is not None
    undone = plan_undo(state(REVS, list(first.traffic_after)), first.ledger_after, actor="alice", reason="", now=T0)
    assert undone.ledger_after is not None
    again = plan_rollback(
        state(REVS, list(undone.traffic_after)),
        undone.ledger_after,
        actor="alice",
        reason="it was bad after all",
        now=T0 + timedelta(minutes=1),
        cooldown=timedelta(minutes=15),
    )
    assert again.refusal is None
    assert again.to_revision == STABLE
