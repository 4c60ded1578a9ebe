"""The pure decision core: guard order, target selection, traffic shape, and its invariants."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import T0, alert, latest, pinned, rev, state

from controller.core.decide import Reason, choose_target, decide, rollback_traffic
from controller.core.ledger import Hold, Ledger
from controller.core.policy import Policy
from controller.core.state import ServiceState, TrafficTarget

POLICY = Policy.model_validate(
    {
        "name": "default",
        "triggers": {"error_rate": {"above": 0.05, "for": "2m"}, "latency_p95": {"above_ms": 2000}},
        "rollback": {"cooldown": "15m", "max_per_day": 3},
    }
)
NOW = T0 + timedelta(minutes=7)
REVS = [rev("checkout-00040-aaa", 1), rev("checkout-00041-abc", 2), rev("checkout-00042-xyz", 3)]
LIVE = state(REVS)  # LATEST 100% → 00042 serves everything


def test_rolls_back_to_previous_ready_revision_and_remembers_it() -> None:
    d = decide(alert(), POLICY, LIVE, Ledger(), NOW)
    assert d.reason is Reason.ROLLED_BACK
    assert (d.suspect, d.target) == ("checkout-00042-xyz", "checkout-00041-abc")
    assert d.traffic_after == (pinned("checkout-00041-abc", 100),)
    assert d.ledger_after is not None
    assert d.ledger_after.handled("0.inc1") is not None
    assert d.ledger_after.is_quarantined("checkout-00042-xyz")
    assert d.ledger_after.last_good == "checkout-00041-abc"
    assert d.ledger_after.last_action is not None
    assert d.ledger_after.last_action.before == (latest(),)
    assert d.changes_traffic
    assert d.notify


def _ledger(**kw: object) -> Ledger:
    return Ledger().model_copy(update=kw)


HELD = _ledger(hold=Hold(by="alice@example.com", at=T0, reason="investigating"))
RECENT = _ledger(actions=(NOW - timedelta(minutes=5),))
SPENT = _ledger(actions=(NOW - timedelta(hours=5), NOW - timedelta(hours=4), NOW - timedelta(hours=3)))
HANDLED = Ledger().record_incident("0.inc1", to="checkout-00041-abc", now=T0)
ALL_OLDER_BAD = (
    Ledger().quarantine("checkout-00041-abc", reason="x", now=T0).quarantine("checkout-00040-aaa", reason="y", now=T0)
)


@pytest.mark.parametrize(
    ("alert_", "policy", "service", "ledger", "dry_run", "expected"),
    [
        pytest.param(
            alert(is_test=True), POLICY, LIVE, Ledger(), False, Reason.TEST_NOTIFICATION, id="test-notification"
        ),
        pytest.param(alert(state_="closed"), POLICY, LIVE, Ledger(), False, Reason.INCIDENT_CLOSED, id="closed"),
        pytest.param(alert(), None, LIVE, Ledger(), False, Reason.NO_POLICY, id="no-policy"),
        pytest.param(
            alert(trigger=None), POLICY, LIVE, Ledger(), False, Reason.TRIGGER_NOT_ENFORCED, id="unknown-metric"
        ),
        pytest.param(
            alert(trigger="health"), POLICY, LIVE, Ledger(), False, Reason.TRIGGER_NOT_ENFORCED, id="not-enforced"
        ),
        pytest.param(alert(), POLICY, LIVE, HANDLED, False, Reason.ALREADY_HANDLED, id="redelivery"),
        pytest.param(
            alert(revision="checkout-00040-aaa"),
            POLICY,
            LIVE,
            Ledger(),
            False,
            Reason.SUSPECT_NOT_SERVING,
            id="idle-suspect",
        ),
        pytest.param(alert(), POLICY, LIVE, HELD, False, Reason.HELD, id="held"),
        pytest.param(alert(), POLICY, LIVE, RECENT, False, Reason.COOLDOWN, id="cooldown"),
        pytest.param(alert(), POLICY, LIVE, SPENT, False, Reason.BUDGET_SPENT, id="budget"),
        pytest.param(alert(), POLICY, LIVE, ALL_OLDER_BAD, False, Reason.NO_TARGET, id="only-quarantined-left"),
        pytest.param(alert(), POLICY, LIVE, Ledger(), True, Reason.DRY_RUN, id="dry-run-env"),
        pytest.param(
            alert(),
            POLICY.model_copy(update={"mode": "dry-run"}),
            LIVE,
            Ledger(),
            False,
            Reason.DRY_RUN,
            id="dry-run-policy",
        ),
        pytest.param(
            alert(),
            POLICY.model_copy(update={"mode": "notify"}),
            LIVE,
            Ledger(),
            False,
            Reason.NOTIFY_MODE,
            id="notify-mode",
        ),
        pytest.param(alert(), POLICY, LIVE, Ledger(), False, Reason.ROLLED_BACK, id="rollback"),
    ],
)
def test_guard_chain(
    alert_: object, policy: Policy | None, service: ServiceState, ledger: Ledger, dry_run: bool, expected: Reason
) -> None:
    d = decide(alert_, policy, service, ledger, NOW, dry_run=dry_run)  # type: ignore[arg-type]
    assert d.reason is expected, d.message
    assert d.changes_traffic == (expected is Reason.ROLLED_BACK)
    if expected is not Reason.ROLLED_BACK:
        assert d.traffic_after == ()
        assert d.ledger_after is None


def test_expired_cooldown_and_budget_window_allow_action() -> None:
    old = _ledger(actions=(NOW - timedelta(minutes=16), NOW - timedelta(hours=25), NOW - timedelta(hours=26)))
    assert decide(alert(), POLICY, LIVE, old, NOW).reason is Reason.ROLLED_BACK


def test_closed_incident_says_whether_the_controller_acted() -> None:
    d = decide(alert(state_="closed"), POLICY, LIVE, HANDLED, NOW)
    assert "rolled back to checkout-00041-abc" in d.message


@pytest.mark.parametrize(
    ("revisions", "ledger", "expected"),
    [
        pytest.param(REVS, Ledger(), "checkout-00041-abc", id="newest-older"),
        pytest.param(REVS, Ledger().with_last_good("checkout-00040-aaa"), "checkout-00040-aaa", id="ledger-last-good"),
        pytest.param(
            REVS,
            Ledger().with_last_good("checkout-00040-aaa").quarantine("checkout-00040-aaa", reason="", now=T0),
            "checkout-00041-abc",
            id="last-good-quarantined",
        ),
        pytest.param(
            [rev("checkout-00040-aaa", 1), rev("checkout-00041-abc", 2, ready=False), rev("checkout-00042-xyz", 3)],
            Ledger(),
            "checkout-00040-aaa",
            id="skip-not-ready",
        ),
        pytest.param(
            [rev("checkout-00042-xyz", 3), rev("checkout-00043-new", 4)], Ledger(), "", id="only-newer-exists"
        ),
        pytest.param(
            # Listing order is not creation order: the choice must go by create_time.
            [rev("checkout-00041-abc", 2), rev("checkout-00042-xyz", 3), rev("checkout-00039-old", 0)],
            Ledger(),
            "checkout-00041-abc",
            id="unsorted-listing",
        ),
    ],
)
def test_choose_target(revisions: list[object], ledger: Ledger, expected: str) -> None:
    target, why = choose_target(state(revisions), ledger, "checkout-00042-xyz")  # type: ignore[arg-type]
    assert target == expected, why


def test_service_level_alert_blames_newest_serving_revision() -> None:
    split = state(REVS, [pinned("checkout-00041-abc", 90), pinned("checkout-00042-xyz", 10)])
    d = decide(alert(revision=None), POLICY, split, Ledger(), NOW)
    assert (d.suspect, d.target) == ("checkout-00042-xyz", "checkout-00041-abc")


def test_tags_survive_at_zero_and_latest_is_pinned() -> None:
    tagged = state(
        REVS,
        [latest(100), pinned("checkout-00040-aaa", 0, tag="old"), pinned("checkout-00042-xyz", 0, tag="canary")],
    )
    after = rollback_traffic(tagged, "checkout-00041-abc")
    assert after[0] == pinned("checkout-00041-abc", 100)
    assert {(t.revision, t.tag, t.percent) for t in after[1:]} == {
        ("checkout-00040-aaa", "old", 0),
        ("checkout-00042-xyz", "canary", 0),
    }
    assert not any(t.kind == "latest" and t.percent for t in after)


def test_target_with_a_tag_gets_the_traffic_on_its_tagged_entry() -> None:
    tagged = state(REVS, [latest(100), pinned("checkout-00041-abc", 0, tag="stable")])
    assert rollback_traffic(tagged, "checkout-00041-abc") == (pinned("checkout-00041-abc", 100, tag="stable"),)


# -- properties ------------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ServiceState, Ledger, str | None]:
    n = draw(st.integers(min_value=1, max_value=7))
    minutes = draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True))
    revisions = [rev(f"svc-{i:05d}", m, ready=draw(st.booleans())) for i, m in enumerate(minutes)]
    names = [r.name for r in revisions]
    # A traffic split over a subset of revisions that sums to 100, optionally with a LATEST share.
    k = draw(st.integers(min_value=1, max_value=n))
    chosen = draw(st.permutations(names))[:k]
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=k - 1, max_size=k - 1)))
    shares = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    traffic: list[TrafficTarget] = [pinned(name, p) for name, p in zip(chosen, shares, strict=True)]
    if draw(st.booleans()) and any(r.ready for r in revisions):
        traffic[0] = latest(traffic[0].percent)
    if draw(st.booleans()):
        traffic.append(pinned(draw(st.sampled_from(names)), 0, tag="t0"))
    ledger = Ledger()
    for name in draw(st.lists(st.sampled_from(names), max_size=3)):
        ledger = ledger.quarantine(name, reason="bad", now=T0)
    if draw(st.booleans()):
        ledger = ledger.with_last_good(draw(st.sampled_from(names)))
    suspect = draw(st.one_of(st.none(), st.sampled_from(names)))
    return state(revisions, traffic), ledger, suspect


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_rollback_invariants(scenario: tuple[ServiceState, Ledger, str | None]) -> None:
    service, ledger, suspect = scenario
    a = alert(revision=suspect)
    d = decide(a, POLICY, service, ledger, NOW)
    # Deciding twice on the same state gives the same answer.
    assert decide(a, POLICY, service, ledger, NOW) == d
    if not d.changes_traffic:
        return
    target = service.revision(d.target)
    assert target is not None
    assert target.ready
    assert d.target != d.suspect
    assert not ledger.is_quarantined(d.target)
    assert sum(t.percent for t in d.traffic_after) == 100
    assert all(t.percent == 0 for t in d.traffic_after if t.revision != d.target)
    assert not any(t.kind == "latest" and t.percent for t in d.traffic_after)
    # After the change, the suspect serves nothing and a redelivery does nothing.
    after = service.model_copy(update={"traffic": d.traffic_after})
    assert d.suspect not in after.percent_by_revision()
    assert d.ledger_after is not None
    again = decide(a, POLICY, after, d.ledger_after, NOW + timedelta(seconds=1))
    assert again.reason is Reason.ALREADY_HANDLED


def test_held_reads_once_and_to_the_second_in_slack() -> None:
    """Issue 10 point 11: no "service is on hold: service is on hold", times to the second with the zone."""
    from controller.core.messages import render

    d = decide(alert(), POLICY, LIVE, HELD, NOW)
    text = render(d, alert(), POLICY).text
    assert text.count("on hold") == 1, text
    assert f"since {T0:%Y-%m-%d %H:%M:%S} UTC by alice@example.com" in text
    assert "+00:00" not in d.message
