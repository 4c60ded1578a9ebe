"""controller.manual: pure planning of manual actions (guards, undo, hold) and ManualControl's one path.

Planning is tested with tables over built states and ledgers; ManualControl runs against the
in-memory Cloud Run fake (real etag semantics) and a recording notifier, so commit(), the log line
and the Slack message are exercised without a network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import REF, T0, InMemoryCloudRun, RecordingNotifier, latest, pinned, rev, state

from controller.adapters.cloudrun import Applied
from controller.app.manual import ManualControl, Refused
from controller.app.settings import Settings
from controller.core.errors import ConflictError, ServiceNotFound
from controller.core.ledger import Action, Hold, Ledger, read_ledger, write_ledger
from controller.core.manual_plans import (
    ALREADY_SERVING,
    CONCURRENT_CHANGE,
    NO_TARGET,
    NOTHING_TO_UNDO,
    TARGET_NOT_READY,
    TARGET_QUARANTINED,
    UNKNOWN_REVISION,
    Plan,
    plan_hold,
    plan_release,
    plan_rollback,
    plan_undo,
)
from controller.core.manual_results import result_json, status_json, status_report
from controller.core.slack_blocks import ACTION_HOLD, ACTION_UNDO, BLOCK_ID, parse_button_value
from controller.core.state import Revision, ServiceState, TrafficTarget

OLD, PREV, NEW = "checkout-00040-aaa", "checkout-00041-abc", "checkout-00042-xyz"
REVS = [rev(OLD, 1), rev(PREV, 2), rev(NEW, 3)]
ACTOR = "alice@example.com"


def rolled_back_ledger(*, automatic: bool = True) -> Ledger:
    """The ledger after an automatic rollback NEW → PREV from LATEST 100%."""
    return (
        Ledger()
        .record_incident("0.inc1", to=PREV, now=T0)
        .quarantine(NEW, reason="error_rate alert 0.inc1", now=T0)
        .with_last_good(PREV)
        .record_action(
            Action(
                kind="rollback" if automatic else "manual-rollback",
                at=T0,
                actor="rollback-controller",
                reason="error_rate alert 0.inc1",
                incident_id="0.inc1",
                from_revision=NEW,
                to_revision=PREV,
                before=(latest(),),
            ),
            automatic=automatic,
            now=T0,
        )
    )


def svc(
    traffic: list[TrafficTarget] | None = None, ledger: Ledger | None = None, revisions: list[Revision] | None = None
) -> ServiceState:
    annotations = write_ledger(ledger, {}) if ledger is not None else {}
    return state(revisions or REVS, traffic, annotations=annotations)


def rollback(s: ServiceState, **kwargs: object) -> Plan:
    return plan_rollback(s, read_ledger(s.annotations), actor=ACTOR, reason="bad deploy", now=T0, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rollback planning


def test_rollback_without_target_moves_to_the_previous_ready_revision() -> None:
    planned = rollback(svc())
    assert planned.refusal is None
    assert (planned.from_revision, planned.to_revision) == (NEW, PREV)
    assert planned.traffic_after == (pinned(PREV, 100),)  # LATEST never keeps a share
    ledger = planned.ledger_after
    assert ledger is not None
    assert ledger.is_quarantined(NEW)
    assert ledger.last_good == PREV
    assert ledger.last_action is not None
    assert ledger.last_action.kind == "manual-rollback"
    assert ledger.last_action.actor == ACTOR
    assert ledger.last_action.before == (latest(),)
    assert ledger.actions == ()  # manual actions are not counted in the automatic budget


def test_rollback_to_a_named_revision_keeps_tags_at_zero() -> None:
    s = svc([pinned(NEW, 90), pinned(PREV, 10, tag="stable"), latest(0, tag="head")])
    planned = rollback(s, to_revision=OLD)
    assert planned.refusal is None
    assert planned.from_revision == NEW  # the newest revision that served traffic
    assert planned.traffic_after == (pinned(OLD, 100), pinned(PREV, 0, tag="stable"), latest(0, tag="head"))


@pytest.mark.parametrize(
    ("traffic", "ledger", "revisions", "kwargs", "guard"),
    [
        pytest.param(None, None, None, {"to_revision": "checkout-00099-zzz"}, UNKNOWN_REVISION, id="unknown-revision"),
        pytest.param(
            None, None, [rev(OLD, 1), rev(PREV, 2, ready=False), rev(NEW, 3)], {"to_revision": PREV},
            TARGET_NOT_READY, id="target-not-ready",
        ),
        pytest.param(
            None, Ledger().quarantine(PREV, reason="bad", now=T0), None, {"to_revision": PREV},
            TARGET_QUARANTINED, id="target-quarantined",
        ),
        pytest.param([pinned(PREV, 100)], None, None, {"to_revision": PREV}, ALREADY_SERVING, id="already-serving"),
        pytest.param(
            None, None, [rev(NEW, 3)], {}, NO_TARGET, id="no-older-revision",
        ),
        pytest.param(
            None, Ledger().quarantine(PREV, reason="x", now=T0).quarantine(OLD, reason="y", now=T0), None, {},
            NO_TARGET, id="all-older-quarantined",
        ),
    ],
)  # fmt: skip
def test_rollback_guards_say_which_one_refused(
    traffic: list[TrafficTarget] | None,
    ledger: Ledger | None,
    revisions: list[Revision] | None,
    kwargs: dict[str, object],
    guard: str,
) -> None:
    planned = rollback(svc(traffic, ledger, revisions), **kwargs)
    assert planned.refusal is not None
    assert planned.refusal.guard == guard
    assert planned.refusal.message
    assert planned.change is None


def test_force_routes_to_a_quarantined_revision_which_stays_quarantined() -> None:
    planned = rollback(svc(ledger=Ledger().quarantine(PREV, reason="bad", now=T0)), to_revision=PREV, force=True)
    assert planned.refusal is None
    assert planned.ledger_after is not None
    assert planned.ledger_after.is_quarantined(PREV)  # automation still never picks it
    assert planned.ledger_after.is_quarantined(NEW)


# --------------------------------------------------------------------------- undo planning


def test_undo_after_an_automatic_rollback_restores_exactly_and_lifts_that_quarantine() -> None:
    earlier = rolled_back_ledger().quarantine(OLD, reason="older trouble", now=T0 - timedelta(days=2))
    s = svc([pinned(PREV, 100)], earlier)
    planned = plan_undo(s, read_ledger(s.annotations), actor=ACTOR, reason="false alarm", now=T0 + timedelta(minutes=5))
    assert planned.refusal is None
    assert planned.traffic_after == (latest(),)
    ledger = planned.ledger_after
    assert ledger is not None
    assert not ledger.is_quarantined(NEW)  # imposed by the undone action: lifted
    assert ledger.is_quarantined(OLD)  # imposed earlier by something else: kept
    assert ledger.handled("0.inc1") is not None  # a redelivery of the incident must not roll back again
    assert ledger.last_action is not None
    assert ledger.last_action.kind == "undo"
    assert ledger.last_action.before == (pinned(PREV, 100),)
    assert ledger.actions == read_ledger(s.annotations).actions  # not counted as automatic


def test_undo_keeps_a_quarantine_recorded_before_the_action() -> None:
    ledger = Ledger().quarantine(NEW, reason="first time", now=T0 - timedelta(days=1))
    ledger = ledger.record_action(
        Action(kind="rollback", at=T0, actor="x", from_revision=NEW, to_revision=PREV, before=(latest(),)),
        automatic=True,
        now=T0,
    )
    s = svc([pinned(PREV, 100)], ledger)
    planned = plan_undo(s, read_ledger(s.annotations), actor=ACTOR, reason="", now=T0)
    assert planned.ledger_after is not None
    assert planned.ledger_after.is_quarantined(NEW)


@pytest.mark.parametrize(
    ("traffic", "ledger", "guard"),
    [
        pytest.param([pinned(PREV, 100)], Ledger(), NOTHING_TO_UNDO, id="no-last-action"),
        pytest.param([latest()], rolled_back_ledger(), NOTHING_TO_UNDO, id="already-restored"),
        pytest.param(
            [latest()],
            rolled_back_ledger().record_action(
                Action(kind="undo", at=T0, actor=ACTOR, before=(pinned(PREV, 100),)), automatic=False, now=T0
            ),
            NOTHING_TO_UNDO,
            id="last-action-was-an-undo",
        ),
        pytest.param(
            [pinned(PREV, 100)],
            Ledger().record_action(
                Action(kind="rollback", at=T0, actor="x", before=(pinned("checkout-00001-old", 100),)),
                automatic=True,
                now=T0,
            ),
            UNKNOWN_REVISION,
            id="revision-to-restore-is-gone",
        ),
    ],
)
def test_undo_refusals(traffic: list[TrafficTarget], ledger: Ledger, guard: str) -> None:
    s = svc(traffic, ledger)
    planned = plan_undo(s, read_ledger(s.annotations), actor=ACTOR, reason="", now=T0)
    assert planned.refusal is not None
    assert planned.refusal.guard == guard


@settings(max_examples=60, deadline=None)
@given(
    shares=st.tuples(st.integers(0, 100), st.integers(0, 100)).map(
        lambda ab: [min(ab), max(ab) - min(ab), 100 - max(ab)]  # two cut points split 100 into three shares
    ),
    target=st.sampled_from([OLD, PREV]),
)
def test_rollback_then_undo_restores_any_split_exactly(shares: list[int], target: str) -> None:
    before = tuple(pinned(name, share) for name, share in zip((OLD, PREV, NEW), shares, strict=True) if share)
    s = svc(list(before))
    planned = rollback(s, to_revision=target)
    if planned.refusal is not None:
        assert planned.refusal.guard == ALREADY_SERVING
        return
    assert planned.ledger_after is not None
    after = s.model_copy(
        update={"traffic": planned.traffic_after, "annotations": write_ledger(planned.ledger_after, {})}
    )
    undone = plan_undo(after, planned.ledger_after, actor=ACTOR, reason="", now=T0)
    assert undone.refusal is None
    assert undone.traffic_after == before
    assert undone.ledger_after is not None
    assert undone.ledger_after.quarantined == ()


# --------------------------------------------------------------------------- hold / release / status


def test_hold_and_release_are_idempotent_and_touch_only_the_ledger() -> None:
    s = svc()
    held = plan_hold(s, Ledger(), actor=ACTOR, reason="investigating", now=T0)
    assert held.changed
    assert held.traffic_after == s.traffic
    assert held.ledger_after is not None
    assert held.ledger_after.hold == Hold(by=ACTOR, at=T0, reason="investigating")
    again = plan_hold(s, held.ledger_after, actor="bob@example.com", reason="", now=T0)
    assert not again.changed
    assert ACTOR in again.message  # the first hold and its author are kept
    released = plan_release(s, held.ledger_after)
    assert released.changed
    assert released.ledger_after is not None
    assert released.ledger_after.hold is None
    assert not plan_release(s, Ledger()).changed


def test_status_lists_revisions_newest_first_and_quarantined() -> None:
    s = svc([pinned(PREV, 100)], rolled_back_ledger().model_copy(update={"hold": Hold(by=ACTOR, at=T0)}))
    report = status_json(status_report(s, read_ledger(s.annotations)))
    assert [r["name"] for r in report["revisions"]] == [NEW, PREV, OLD]
    assert [r["percent"] for r in report["revisions"]] == [0, 100, 0]
    assert [q["revision"] for q in report["quarantined"]] == [NEW]
    assert report["hold"]["by"] == ACTOR
    assert report["last_action"]["before"] == [{"type": "LATEST", "revision": "", "percent": 100, "tag": ""}]
    assert report["traffic"] == [{"type": "REVISION", "revision": PREV, "percent": 100, "tag": ""}]
    json.dumps(report)  # JSON-ready


# --------------------------------------------------------------------------- ManualControl


def control(run: InMemoryCloudRun, notifier: RecordingNotifier | None = None, **settings_: object) -> ManualControl:
    return ManualControl(run, notifier or RecordingNotifier(), lambda: T0, Settings(**settings_))  # type: ignore[arg-type]


def manual_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "controller.manual"]


def test_control_rollback_writes_once_logs_the_actor_and_posts_buttons(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="controller.manual")
    run, notifier = InMemoryCloudRun(svc()), RecordingNotifier()
    result = control(run, notifier).rollback(REF, actor=ACTOR, reason="bad deploy")
    assert result.changed and result.confirmed
    assert run.updates == [(pinned(PREV, 100),)]
    assert result.traffic == (pinned(PREV, 100),)
    assert result_json(result)["traffic_before"] == [{"type": "LATEST", "revision": "", "percent": 100, "tag": ""}]
    [line] = manual_lines(caplog)
    fields = line.fields  # type: ignore[attr-defined]
    assert fields["actor"] == ACTOR and fields["action"] == "rollback" and fields["changed"] is True
    [message] = notifier.messages
    assert ACTOR in json.dumps(message.blocks)
    [actions] = [b for b in message.blocks if b.get("block_id") == BLOCK_ID]
    assert {e["action_id"] for e in actions["elements"]} == {ACTION_UNDO, ACTION_HOLD}
    assert {parse_button_value(e["value"]) for e in actions["elements"]} == {REF}


def test_control_refusal_raises_with_the_guard_and_writes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="controller.manual")
    run, notifier = InMemoryCloudRun(svc([pinned(PREV, 100)])), RecordingNotifier()
    with pytest.raises(Refused) as caught:
        control(run, notifier).rollback(REF, actor=ACTOR, reason="x", to_revision=PREV)
    assert caught.value.refusal.guard == ALREADY_SERVING
    assert run.updates == [] and notifier.messages == []
    [line] = manual_lines(caplog)
    assert line.fields["refused"] == ALREADY_SERVING  # type: ignore[attr-defined]


def test_control_dry_run_changes_nothing_but_says_what_it_would_do() -> None:
    run, notifier = InMemoryCloudRun(svc()), RecordingNotifier()
    result = control(run, notifier, dry_run=True).rollback(REF, actor=ACTOR, reason="x")
    assert result.dry_run and not result.changed
    assert result.message.startswith("would have rolled back")
    assert run.updates == []
    assert notifier.messages == []  # a dry run tells only the caller
    assert not result.notified


def test_control_hold_does_not_block_manual_actions() -> None:
    run = InMemoryCloudRun(svc())
    ctl = control(run)
    assert ctl.hold(REF, actor=ACTOR, reason="investigating").hold is not None
    result = ctl.rollback(REF, actor="bob@example.com", reason="still bad")
    assert result.changed
    assert read_ledger(run.current.annotations).hold is not None  # the hold survives the rollback
    undone = ctl.undo(REF, actor=ACTOR)
    assert undone.traffic == (latest(),)
    assert ctl.release(REF, actor=ACTOR).hold is None


def test_control_retries_a_stale_etag_and_changes_traffic_once() -> None:
    run = InMemoryCloudRun(svc())
    run.conflicts_to_inject = 1  # someone touched the service (same content) between read and write
    result = control(run).rollback(REF, actor=ACTOR, reason="x")
    assert result.attempts == 2
    assert run.updates == [(pinned(PREV, 100),)]


class _AutomationWinsTheRace(InMemoryCloudRun):
    """The first write loses to an automatic rollback NEW → PREV that lands just before it."""

    def update(
        self, state: ServiceState, traffic: tuple[TrafficTarget, ...], annotations: Mapping[str, str]
    ) -> Applied:
        if not self.updates:
            self.updates.append((pinned(PREV, 100),))
            self._bump(traffic=(pinned(PREV, 100),), annotations=write_ledger(rolled_back_ledger(), {}))
        return super().update(state, traffic, annotations)


def test_rollback_racing_the_automation_does_not_roll_back_twice() -> None:
    run = _AutomationWinsTheRace(svc())
    with pytest.raises(Refused) as caught:
        control(run).rollback(REF, actor=ACTOR, reason="x")
    assert caught.value.refusal.guard == CONCURRENT_CHANGE
    assert run.current.traffic == (pinned(PREV, 100),)
    assert len(run.updates) == 1  # only the automation's change


def test_rollback_to_a_named_target_racing_the_automation_is_refused_as_already_serving() -> None:
    run = _AutomationWinsTheRace(svc())
    with pytest.raises(Refused) as caught:
        control(run).rollback(REF, actor=ACTOR, reason="x", to_revision=PREV)
    assert caught.value.refusal.guard == ALREADY_SERVING
    assert len(run.updates) == 1


def test_control_errors_propagate() -> None:
    run = InMemoryCloudRun(svc())
    with pytest.raises(ServiceNotFound):
        control(run).status(REF.model_copy(update={"service": "nope"}))
    run.conflicts_to_inject = 10
    with pytest.raises(ConflictError):
        control(run, conflict_retries=2).hold(REF, actor=ACTOR)


def test_slack_failure_never_blocks_the_action() -> None:
    run = InMemoryCloudRun(svc())
    result = control(run, RecordingNotifier(fail=True)).rollback(REF, actor=ACTOR, reason="x")
    assert result.changed and not result.notified


def test_manual_rollback_of_a_canary_candidate_ends_the_canary() -> None:
    from controller.core.ledger import CanaryState

    canary = CanaryState(candidate="checkout-00042-xyz", stable="checkout-00041-abc", step=1, step_started_at=T0)
    split_ = state(REVS, [pinned("checkout-00041-abc", 75, "stable"), pinned("checkout-00042-xyz", 25, "candidate")])
    ledger = Ledger().with_last_good("checkout-00041-abc").model_copy(update={"canary": canary})
    plan = plan_rollback(split_, ledger, actor=ACTOR, reason="bad canary", now=T0)
    assert isinstance(plan, Plan)
    assert plan.ledger_after is not None
    assert plan.ledger_after.canary is None
    assert plan.ledger_after.is_quarantined("checkout-00042-xyz")
