"""Manual actions as pure plans: rollback, undo, hold and release, with their guards. Pure.

``plan_rollback``, ``plan_undo``, ``plan_hold`` and ``plan_release`` answer, for one service state
and its ledger, what the action would write (a :class:`Plan`) or which guard refuses it (a
:class:`Refusal` with a stable machine code, answered as ``{"error": <guard>}`` with HTTP 409). No
clock, no network: ``now`` is an argument. :mod:`controller.app.manual` runs them through the etag
commit loop.

**Rollback** moves 100% of the traffic to a target, pinned by name (the same traffic shape as an
automatic rollback: tagged entries kept at 0%, LATEST never keeps a share). The target is the named
``to_revision``, or else the one the automation would pick (the ledger's last-good revision, else
the newest Ready, non-quarantined revision older than the one we move away from). Guards, in order:
``unknown_revision``, ``target_not_ready``, ``target_quarantined`` (pass ``force`` to override:
a human may deliberately go back to a quarantined revision; it stays quarantined, so automation
still never picks it), ``already_serving`` (the target already has 100%), ``no_target``,
``recent_action`` (the last action on the service was a rollback, automatic, manual or canary,
within the cooldown of the service's policy: a second ``rollback`` from shell history would walk
one more revision back and quarantine the good one; the refusal names who rolled back to what,
and when; ``force`` overrides it too). The
revision moved away from (the newest revision serving traffic other than the target) is
quarantined, so nothing automatic promotes it again, and the target becomes the last-good revision.

**Undo** restores exactly the traffic recorded as ``before`` in the ledger's last action (automatic
or manual rollback), and lifts the quarantine *that action* imposed (a quarantine recorded earlier,
by another action, stays). Refused with ``nothing_to_undo`` when there is no last action, when the
last action was itself an undo (undoing an undo is a rollback: ask for one explicitly), or when the
traffic already equals what would be restored; with ``unknown_revision`` / ``target_not_ready``
when a revision the old traffic names no longer exists or is not Ready. Incidents already handled
stay recorded, so a redelivery of the same alert does not roll back again; a *new* incident does.
An undo is a human saying "this was fine": the revision serving the largest share of the restored
traffic becomes the accepted one (the ledger's last-good, the canary's stable), so no canary is
started on it. (Undoing a canary rollback restores the split: its stable stays accepted, and the
candidate, no longer quarantined, gets a fresh canary.)

**Hold** pins the service: automation (alerts, canary) never changes a held service, manual actions
still work. **Release** lifts it. Both are idempotent (``changed: false`` when there was nothing to
do). The hold lives in the ledger's ``hold`` entry (by, at, reason); hold and release are not
recorded as the *last action*, because the last action is what undo restores.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from controller.core.decide import choose_target, ledger_after_rollback, rollback_traffic
from controller.core.durations import format_duration
from controller.core.ledger import Action, Hold, Ledger
from controller.core.state import Frozen, ServiceState, TrafficTarget
from controller.core.wording import action_name, human_time

ActionName = Literal["rollback", "undo", "hold", "release"]

# Guard names: stable machine codes, answered as {"error": <guard>} with HTTP 409.
UNKNOWN_REVISION = "unknown_revision"
TARGET_NOT_READY = "target_not_ready"
TARGET_QUARANTINED = "target_quarantined"
ALREADY_SERVING = "already_serving"
NO_TARGET = "no_target"
NOTHING_TO_UNDO = "nothing_to_undo"
CONCURRENT_CHANGE = "concurrent_change"
RECENT_ACTION = "recent_action"
# Last actions that moved traffic backwards: another rollback within the cooldown walks further back.
_ROLLBACK_KINDS = frozenset({"rollback", "manual-rollback", "canary-rollback"})


class Refusal(Frozen):
    """A guard said no: ``guard`` is the machine code, ``message`` says why in words."""

    guard: str
    message: str


class Plan(Frozen):
    """What a manual action would do to one service state (pure planning's answer)."""

    action: ActionName
    refusal: Refusal | None = None
    changed: bool = False  # the plan writes something (traffic and/or ledger)
    from_revision: str = ""
    to_revision: str = ""
    traffic_after: tuple[TrafficTarget, ...] = ()
    ledger_after: Ledger | None = None
    message: str = ""
    duplicate: bool = False  # the command asking for it was already executed (ledger says so)

    @property
    def change(self) -> tuple[tuple[TrafficTarget, ...], Ledger] | None:
        """What to write (traffic, ledger); None when refused or when there is nothing to change."""
        if self.refusal is not None or not self.changed or self.ledger_after is None:
            return None
        return self.traffic_after, self.ledger_after


def refuse(action: ActionName, guard: str, message: str) -> Plan:
    return Plan(action=action, refusal=Refusal(guard=guard, message=message))


def describe_traffic(traffic: tuple[TrafficTarget, ...]) -> str:
    """``LATEST 100%`` / ``checkout-00041-abc 100%, checkout-00042-xyz 0% [tag canary]``."""
    parts = []
    for t in traffic:
        name = t.revision if t.kind == "revision" else "LATEST"
        parts.append(f"{name} {t.percent}%" + (f" [tag {t.tag}]" if t.tag else ""))
    return ", ".join(parts) or "(none)"


def newest_serving(state: ServiceState, *, other_than: str) -> str:
    """The newest revision (by creation time) with a share of traffic, other than ``other_than``."""
    serving = [n for n in state.percent_by_revision() if n != other_than]
    if not serving:
        return ""

    def created(name: str) -> float:
        rev = state.revision(name)
        return rev.create_time.timestamp() if rev else 0.0

    return max(serving, key=created)


def plan_rollback(
    state: ServiceState,
    ledger: Ledger,
    *,
    actor: str,
    reason: str,
    now: datetime,
    to_revision: str | None = None,
    force: bool = False,
    cooldown: timedelta | None = None,
) -> Plan:
    """Plan a manual rollback (see the module docstring for the guards and their order)."""
    if to_revision:
        target = to_revision
        rev = state.revision(target)
        if rev is None:
            known = ", ".join(sorted(r.name for r in state.revisions)) or "none"
            return refuse("rollback", UNKNOWN_REVISION, f"{target} is not a revision of {state.ref} (known: {known})")
        if not rev.ready:
            return refuse("rollback", TARGET_NOT_READY, f"{target} is not Ready and cannot serve traffic")
        if ledger.is_quarantined(target) and not force:
            return refuse(
                "rollback",
                TARGET_QUARANTINED,
                f"{target} is quarantined (it was rolled back away from); pass --force "
                '(HTTP: "force": true) to route traffic to it anyway',
            )
        if state.percent_by_revision().get(target, 0) == 100:
            return refuse("rollback", ALREADY_SERVING, f"{target} already serves 100% of the traffic")
        from_revision = newest_serving(state, other_than=target)
        why = "named by the caller"
    else:
        from_revision = newest_serving(state, other_than="")
        if not from_revision:
            return refuse("rollback", NO_TARGET, "no revision serves traffic; nothing to roll back from")
        target, why = choose_target(state, ledger, from_revision)
        if not target:
            return refuse("rollback", NO_TARGET, why)

    recent = _recent_rollback(state, ledger, now, cooldown) if not force else None
    if recent is not None:
        return recent
    traffic_after = rollback_traffic(state, target)
    quarantine_reason = f"manual rollback by {actor}" + (f": {reason}" if reason else "")
    ledger_after = ledger_after_rollback(
        ledger,
        Action(
            kind="manual-rollback",
            at=now,
            actor=actor,
            reason=reason,
            from_revision=from_revision,
            to_revision=target,
            before=state.traffic,
        ),
        quarantine_reason=quarantine_reason,
        automatic=False,
        now=now,
    )
    message = (
        f"rolled back {from_revision or '(nothing)'} → {target} (100%): {why}; "
        f"traffic was {describe_traffic(state.traffic)}"
    )
    return Plan(
        action="rollback",
        changed=True,
        from_revision=from_revision,
        to_revision=target,
        traffic_after=traffic_after,
        ledger_after=ledger_after,
        message=message,
    )


def clock_time(moment: datetime) -> str:
    """``14:02:05 UTC``: times in refusals, to the second with the zone."""
    return moment.astimezone(UTC).strftime("%H:%M:%S UTC")


def _recent_rollback(state: ServiceState, ledger: Ledger, now: datetime, cooldown: timedelta | None) -> Plan | None:
    """Refuse a rollback within ``cooldown`` of the last rollback of the service (any kind): a
    second one, easy from shell history, would walk a further revision back and quarantine the
    good one."""
    last = ledger.last_action
    if cooldown is None or last is None or last.kind not in _ROLLBACK_KINDS or now - last.at >= cooldown:
        return None
    minutes = int((now - last.at).total_seconds() // 60)
    ago = f"{minutes} min ago" if minutes else "less than a minute ago"
    return refuse(
        "rollback",
        RECENT_ACTION,
        f"{state.ref.service} was rolled back to {last.to_revision} by {last.actor} at {clock_time(last.at)} "
        f"({ago}, within the {format_duration(cooldown)} cooldown); pass --force "
        '(HTTP: "force": true) to go further back',
    )


def accepted_revision(state: ServiceState, traffic: tuple[TrafficTarget, ...]) -> str:
    """The revision serving the largest share of ``traffic`` (LATEST resolved as the service does)."""
    shares = state.model_copy(update={"traffic": traffic}).percent_by_revision()
    return max(shares, key=lambda name: shares[name]) if shares else ""


def _lift_quarantine(ledger: Ledger, action: Action) -> Ledger:
    """Drop the quarantine ``action`` imposed: same revision, recorded at the action's own time.

    Rollbacks quarantine with ``at == action.at`` in the same write; a revision quarantined
    earlier (by another action) kept its older entry, which is not this action's to lift.
    """
    kept = tuple(q for q in ledger.quarantined if not (q.revision == action.from_revision and q.at == action.at))
    return ledger.model_copy(update={"quarantined": kept})


def _same_traffic(a: tuple[TrafficTarget, ...], b: tuple[TrafficTarget, ...]) -> bool:
    def key(t: TrafficTarget) -> tuple[str, str, int, str]:
        return (t.kind, t.revision, t.percent, t.tag)

    return sorted(map(key, a)) == sorted(map(key, b))


def plan_undo(state: ServiceState, ledger: Ledger, *, actor: str, reason: str, now: datetime) -> Plan:
    """Plan restoring exactly the traffic before the ledger's last action."""
    last = ledger.last_action
    if last is None:
        return refuse("undo", NOTHING_TO_UNDO, "the ledger records no action on this service")
    if last.kind == "undo":
        return refuse(
            "undo",
            NOTHING_TO_UNDO,
            f"the last action was already an undo (by {last.actor} at {human_time(last.at)}); "
            "roll back explicitly instead",
        )
    if not last.before:
        return refuse("undo", NOTHING_TO_UNDO, f"the last action ({last.kind}) recorded no previous traffic")
    for entry in last.before:
        if entry.kind != "revision":
            continue
        rev = state.revision(entry.revision)
        if rev is None:
            return refuse("undo", UNKNOWN_REVISION, f"{entry.revision}, in the traffic to restore, no longer exists")
        if entry.percent and not rev.ready:
            return refuse("undo", TARGET_NOT_READY, f"{entry.revision}, in the traffic to restore, is not Ready")
    if _same_traffic(state.traffic, last.before):
        return refuse("undo", NOTHING_TO_UNDO, f"traffic already is {describe_traffic(last.before)}")

    # An undo is a human saying "this was fine": what it restores becomes the accepted revision
    # (stable, last-good), so no canary is started on it and the alert path's target is unchanged.
    accepted = accepted_revision(state, last.before) or ledger.last_good
    ledger_after = _lift_quarantine(ledger, last).with_last_good(accepted)
    ledger_after = ledger_after.record_action(
        Action(
            kind="undo",
            at=now,
            actor=actor,
            reason=reason or f"undo {action_name(last.kind)} by {last.actor} at {human_time(last.at)}",
            from_revision=last.to_revision,
            to_revision=last.from_revision,
            before=state.traffic,
        ),
        automatic=False,
        now=now,
    )
    lifted = "" if ledger_after.is_quarantined(last.from_revision) else f"; {last.from_revision} no longer quarantined"
    message = (
        f"undid the {action_name(last.kind)} by {last.actor} at {human_time(last.at)}: traffic restored to "
        f"{describe_traffic(last.before)}{lifted if last.from_revision else ''}; "
        f"{accepted} is the accepted revision now (stable, last-good)"
    )
    return Plan(
        action="undo",
        changed=True,
        from_revision=last.to_revision,
        to_revision=last.from_revision,
        traffic_after=last.before,
        ledger_after=ledger_after,
        message=message,
    )


def plan_hold(state: ServiceState, ledger: Ledger, *, actor: str, reason: str, now: datetime) -> Plan:
    """Pin the service; already held → unchanged (the first hold, with its author, is kept)."""
    if ledger.hold is not None:
        held = ledger.hold
        return Plan(
            action="hold",
            traffic_after=state.traffic,
            message=f"already on hold since {human_time(held.at)} by {held.by}"
            + (f" ({held.reason})" if held.reason else ""),
        )
    hold = Hold(by=actor, at=now, reason=reason[:160])
    return Plan(
        action="hold",
        changed=True,
        traffic_after=state.traffic,  # traffic untouched: only the ledger changes
        ledger_after=ledger.model_copy(update={"hold": hold}),
        message="automation will not change this service's traffic until released",
    )


def plan_release(state: ServiceState, ledger: Ledger) -> Plan:
    """Lift the hold; not held → unchanged."""
    if ledger.hold is None:
        return Plan(action="release", traffic_after=state.traffic, message="was not on hold")
    held = ledger.hold
    return Plan(
        action="release",
        changed=True,
        traffic_after=state.traffic,
        ledger_after=ledger.model_copy(update={"hold": None}),
        message=f"released the hold set by {held.by} at {human_time(held.at)}; automation may act again",
    )
