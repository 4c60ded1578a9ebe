"""The ledger in annotations: round trip, bounds, tolerance of hand-edited values."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from support import T0, latest, pinned

from controller.core.ledger import (
    K_INCIDENTS,
    K_QUARANTINED,
    MAX_INCIDENTS,
    MAX_QUARANTINED,
    MAX_TEXT,
    PREFIX,
    Action,
    CanaryState,
    Hold,
    Ledger,
    read_ledger,
    write_ledger,
)

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=30)
times = st.integers(0, 10**6).map(lambda s: T0 + timedelta(seconds=s))


@st.composite
def ledgers(draw: st.DrawFn) -> Ledger:
    ledger = Ledger()
    for name, at in draw(st.lists(st.tuples(names, times), max_size=8)):
        ledger = ledger.record_incident(name, to=draw(names), now=at)
    for name, at in draw(st.lists(st.tuples(names, times), max_size=5)):
        ledger = ledger.quarantine(name, reason=draw(st.text(max_size=40)), now=at)
    if draw(st.booleans()):
        ledger = ledger.with_last_good(draw(names))
    if draw(st.booleans()):
        at = draw(times)
        action = Action(
            kind="rollback",
            at=at,
            actor="rollback-controller",
            reason=draw(st.text(max_size=40)),
            from_revision=draw(names),
            to_revision=draw(names),
            before=(latest(90), pinned("x", 10, tag="t")),
        )
        ledger = ledger.record_action(action, automatic=draw(st.booleans()), now=at)
    if draw(st.booleans()):
        ledger = ledger.model_copy(update={"hold": Hold(by="alice@example.com", at=draw(times), reason="debugging")})
    if draw(st.booleans()):
        ledger = ledger.model_copy(
            update={
                "canary": CanaryState(candidate=draw(names), stable=draw(names), step=1, step_started_at=draw(times))
            }
        )
    return ledger


@settings(max_examples=200, deadline=None)
@given(ledgers(), st.dictionaries(names, st.text(max_size=20), max_size=3))
def test_round_trip_keeps_ledger_and_foreign_annotations(ledger: Ledger, foreign: dict[str, str]) -> None:
    annotations = write_ledger(ledger, foreign)
    assert read_ledger(annotations) == ledger
    assert {k: v for k, v in annotations.items() if not k.startswith(PREFIX)} == foreign
    # Writing is idempotent: the same ledger gives the same annotations.
    assert write_ledger(read_ledger(annotations), annotations) == annotations


def test_lists_are_bounded() -> None:
    ledger = Ledger()
    for i in range(MAX_INCIDENTS + 30):
        ledger = ledger.record_incident(f"inc-{i}", to="r", now=T0 + timedelta(seconds=i))
        ledger = ledger.quarantine(f"rev-{i}", reason="x" * 1000, now=T0)
    assert len(ledger.incidents) == MAX_INCIDENTS
    assert ledger.incidents[-1].id == f"inc-{MAX_INCIDENTS + 29}"  # newest kept
    assert len(ledger.quarantined) == MAX_QUARANTINED
    assert all(len(q.reason) <= MAX_TEXT for q in ledger.quarantined)
    total = sum(len(v) for v in write_ledger(ledger, {}).values())
    assert total < 16_000


def test_actions_older_than_a_day_are_dropped() -> None:
    ledger = Ledger()
    action = Action(kind="rollback", at=T0, actor="c")
    for hours in (0, 10, 30):
        now = T0 + timedelta(hours=hours)
        ledger = ledger.record_action(action.model_copy(update={"at": now}), automatic=True, now=now)
    assert ledger.actions == (T0 + timedelta(hours=10), T0 + timedelta(hours=30))


def test_broken_values_are_reported_not_fatal() -> None:
    good = write_ledger(Ledger().quarantine("bad-rev", reason="5xx", now=T0), {})
    broken = {**good, K_INCIDENTS: "{not json", PREFIX + "version": "9"}
    ledger = read_ledger(broken)
    assert ledger.is_quarantined("bad-rev")  # what parsed is kept
    assert ledger.incidents == ()
    assert len(ledger.problems) == 2
    assert any(K_INCIDENTS in p for p in ledger.problems)


def test_empty_service_has_empty_ledger() -> None:
    assert read_ledger({}) == Ledger()
    assert read_ledger({K_QUARANTINED: ""}) == Ledger()
