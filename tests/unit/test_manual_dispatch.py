"""One of each: the after-rollback ledger rule (automatic and manual) and the manual-action dispatch table.

The rule (``controller.core.decide.ledger_after_rollback``) is what both the alert path's
``decide`` and ``plan_rollback`` write; the table (``controller.app.manual.ACTIONS``) is what the
CLI and the Slack buttons dispatch through, so its argument models must match the methods.
"""

from __future__ import annotations

import inspect
from datetime import timedelta
from typing import get_args

import pytest
from pydantic import ValidationError
from support import REF, T0, InMemoryCloudRun, RecordingNotifier, alert, latest, pinned, rev, state

from controller.app.manual import ACTIONS, ManualControl, perform
from controller.app.settings import Settings
from controller.core.decide import Reason, decide, ledger_after_rollback
from controller.core.ledger import Action, CanaryState, Ledger, read_ledger, write_ledger
from controller.core.manual_plans import ActionName, plan_rollback
from controller.core.policy import Policy

OLD, PREV, NEW = "checkout-00040-aaa", "checkout-00041-abc", "checkout-00042-xyz"
REVS = [rev(OLD, 1), rev(PREV, 2), rev(NEW, 3)]
POLICY = Policy.model_validate(
    {"name": "default", "triggers": {"error_rate": {"above": 0.05, "for": "2m"}}, "rollback": {"cooldown": "15m"}}
)
NOW = T0 + timedelta(minutes=7)
# NEW is a canary candidate taking 10% from PREV: rolling it back ends that canary.
CANARY = Ledger(canary=CanaryState(candidate=NEW, stable=PREV, step=0, step_started_at=T0))
SPLIT = [pinned(PREV, 90), pinned(NEW, 10, tag="candidate")]


# --------------------------------------------------------------------------- the ledger rule


def test_the_rule_quarantines_the_suspect_sets_last_good_ends_its_canary_and_records_the_action() -> None:
    action = Action(kind="rollback", at=NOW, actor="x", reason="r", from_revision=NEW, to_revision=PREV)
    after = ledger_after_rollback(CANARY, action, quarantine_reason="why", automatic=True, now=NOW)
    assert after.is_quarantined(NEW) and after.quarantined[-1].reason == "why"
    assert after.last_good == PREV
    assert after.canary is None
    assert after.last_action == action
    assert after.actions == (NOW,)
    # A manual rollback spends no automatic budget; a canary of another revision survives.
    other = CANARY.model_copy(update={"canary": CanaryState(candidate=OLD, stable=PREV, step=0, step_started_at=T0)})
    manual = ledger_after_rollback(other, action, quarantine_reason="why", automatic=False, now=NOW)
    assert manual.actions == () and manual.canary == other.canary


def test_the_alert_path_writes_the_rule() -> None:
    s = state(REVS, SPLIT, annotations=write_ledger(CANARY, {}))
    decision = decide(alert(revision=NEW), POLICY, s, CANARY, NOW)
    assert decision.reason is Reason.ROLLED_BACK and decision.ledger_after is not None
    assert decision.ledger_after.last_action is not None
    expected = ledger_after_rollback(
        CANARY.record_incident("0.inc1", to=PREV, now=NOW),
        decision.ledger_after.last_action,
        quarantine_reason="error_rate alert 0.inc1",
        automatic=True,
        now=NOW,
    )
    assert decision.ledger_after == expected
    assert decision.ledger_after.canary is None and decision.ledger_after.last_good == PREV


def test_a_manual_rollback_writes_the_same_rule() -> None:
    s = state(REVS, SPLIT, annotations=write_ledger(CANARY, {}))
    planned = plan_rollback(s, CANARY, actor="alice@example.com", reason="bad", now=NOW, to_revision=PREV)
    assert planned.ledger_after is not None and planned.ledger_after.last_action is not None
    expected = ledger_after_rollback(
        CANARY,
        planned.ledger_after.last_action,
        quarantine_reason="manual rollback by alice@example.com: bad",
        automatic=False,
        now=NOW,
    )
    assert planned.ledger_after == expected
    assert planned.ledger_after.canary is None and planned.ledger_after.is_quarantined(NEW)


# --------------------------------------------------------------------------- the dispatch table


def test_the_table_has_every_manual_action_and_its_models_match_the_methods() -> None:
    assert set(ACTIONS) == set(get_args(ActionName))
    for name, spec in ACTIONS.items():
        assert spec.method.__name__ == name
        parameters = inspect.signature(spec.method).parameters
        keywords = {n for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert set(spec.args.model_fields) == keywords, name
        for field, info in spec.args.model_fields.items():
            default = parameters[field].default
            assert info.is_required() == (default is inspect.Parameter.empty), (name, field)
            if not info.is_required():
                assert info.default == default, (name, field)


def control(run: InMemoryCloudRun, notifier: RecordingNotifier) -> ManualControl:
    return ManualControl(run, notifier, lambda: T0, Settings())


def test_perform_runs_the_method_with_checked_arguments() -> None:
    run, notifier = InMemoryCloudRun(state(REVS, [latest()])), RecordingNotifier()
    manual = control(run, notifier)
    held = perform(manual, "hold", REF, actor="alice@example.com", reason="investigating", notify=False)
    assert held.action == "hold" and held.changed
    assert read_ledger(run.read(REF).annotations).hold is not None
    assert notifier.messages == []
    with pytest.raises(ValidationError):
        perform(manual, "hold", REF, actor="alice@example.com", to_revision=PREV)  # hold takes no target
    with pytest.raises(ValueError, match="unknown manual action 'promote'"):
        perform(manual, "promote", REF, actor="alice@example.com")
    rolled = perform(manual, "rollback", REF, actor="alice@example.com", reason="bad", to_revision=OLD, dry_run=True)
    assert rolled.dry_run and rolled.to_revision == OLD and not rolled.changed
