"""Manual control of a service: roll back now, undo the controller's last action, hold, release, status.

On-call people (over HTTP, from Slack buttons or the CLI) act through the *same* machinery as the
automation, so humans and the controller never fight over traffic:

* every write goes through :func:`controller.commit.commit`: read, plan (a pure function of the
  service state and the ledger), one UpdateService carrying the etag, re-read and re-plan on a
  conflict;
* the ledger (annotations on the service) records every manual action with its actor, in the same
  write as the traffic change.

The planning functions (``plan_rollback``, ``plan_undo``, ``plan_hold``, ``plan_release``) are pure:
no clock, no network. A refusal is a :class:`Refusal` naming the guard that refused; the
orchestration class :class:`ManualControl` raises it as :class:`Refused` (the HTTP layer answers 409
with the guard's name, the CLI exits 1).

Semantics, in one place:

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

Manual actions are never counted in the automatic daily budget nor the alert path's cooldown
(``record_action(automatic=False)``), and hold does not block them.

``ROLLBACK_DRY_RUN=true`` (or ``dry_run`` on a request) makes rollback and undo answer what they
would do without writing, to the caller only (nothing is posted to Slack); hold and release change
no traffic and are always applied.

Each action writes exactly one structured log line (logger ``controller.manual``, Cloud Logging JSON
like the alert path) with the actor, and posts a Slack message; Slack failures never block or undo
an action (the notifier swallows and logs them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import Field

from controller.adapters.cloudrun import CloudRunApi
from controller.adapters.policy_files import load_for_runtime
from controller.adapters.slack import Notifier
from controller.app.commit import Change, commit
from controller.app.settings import Settings
from controller.core.decide import canary_after_rollback, choose_target, rollback_traffic
from controller.core.errors import ControllerError, PermanentError
from controller.core.ledger import Action, Hold, Ledger, Quarantine, read_ledger
from controller.core.messages import SlackMessage, console_url
from controller.core.policy import PolicySet, Rollback, format_duration
from controller.core.slack_blocks import action_blocks
from controller.core.state import Frozen, ServiceRef, ServiceState, TrafficTarget
from controller.core.wording import action_name, human_time

log = logging.getLogger("controller.manual")

Clock = Callable[[], datetime]
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


class Refused(PermanentError):
    """A manual action refused by a guard (HTTP 409, CLI exit 1); ``traffic`` is the service's as read."""

    def __init__(self, refusal: Refusal, state: ServiceState) -> None:
        super().__init__(f"{refusal.guard}: {refusal.message}")
        self.refusal = refusal
        self.state = state


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
    def change(self) -> Change | None:
        if self.refusal is not None or not self.changed or self.ledger_after is None:
            return None
        return Change(self.traffic_after, self.ledger_after)


class ActionResult(Frozen):
    """The outcome of one manual action, as the API answers it and the CLI prints it."""

    action: ActionName
    service: ServiceRef
    actor: str
    reason: str = ""
    changed: bool
    dry_run: bool = False
    message: str
    from_revision: str = ""
    to_revision: str = ""
    traffic_before: tuple[TrafficTarget, ...]
    traffic: tuple[TrafficTarget, ...]  # after the action (or as it is, when nothing changed)
    hold: Hold | None = None
    confirmed: bool = True  # False: Cloud Run accepted the write but its operation did not finish in time
    attempts: int = 0
    notified: bool = False
    duplicate: bool = False  # a redelivered command: it was already executed, nothing was done


class RevisionStatus(Frozen):
    name: str
    ready: bool
    create_time: datetime
    percent: int = Field(ge=0, le=100)
    quarantined: bool


class StatusReport(Frozen):
    """``GET /status``: traffic, revisions with readiness, and the ledger (last action, quarantine, hold)."""

    service: ServiceRef
    uri: str = ""
    traffic: tuple[TrafficTarget, ...]
    revisions: tuple[RevisionStatus, ...]
    last_good: str = ""
    last_action: Action | None = None
    hold: Hold | None = None
    quarantined: tuple[Quarantine, ...] = ()
    ledger_problems: tuple[str, ...] = ()


# --------------------------------------------------------------------------- pure planning


def _refuse(action: ActionName, guard: str, message: str) -> Plan:
    return Plan(action=action, refusal=Refusal(guard=guard, message=message))


def describe_traffic(traffic: tuple[TrafficTarget, ...]) -> str:
    """``LATEST 100%`` / ``checkout-00041-abc 100%, checkout-00042-xyz 0% [tag canary]``."""
    parts = []
    for t in traffic:
        name = t.revision if t.kind == "revision" else "LATEST"
        parts.append(f"{name} {t.percent}%" + (f" [tag {t.tag}]" if t.tag else ""))
    return ", ".join(parts) or "(none)"


def _newest_serving(state: ServiceState, *, other_than: str) -> str:
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
            return _refuse("rollback", UNKNOWN_REVISION, f"{target} is not a revision of {state.ref} (known: {known})")
        if not rev.ready:
            return _refuse("rollback", TARGET_NOT_READY, f"{target} is not Ready and cannot serve traffic")
        if ledger.is_quarantined(target) and not force:
            return _refuse(
                "rollback",
                TARGET_QUARANTINED,
                f"{target} is quarantined (it was rolled back away from); pass --force "
                '(HTTP: "force": true) to route traffic to it anyway',
            )
        if state.percent_by_revision().get(target, 0) == 100:
            return _refuse("rollback", ALREADY_SERVING, f"{target} already serves 100% of the traffic")
        from_revision = _newest_serving(state, other_than=target)
        why = "named by the caller"
    else:
        from_revision = _newest_serving(state, other_than="")
        if not from_revision:
            return _refuse("rollback", NO_TARGET, "no revision serves traffic; nothing to roll back from")
        target, why = choose_target(state, ledger, from_revision)
        if not target:
            return _refuse("rollback", NO_TARGET, why)

    recent = _recent_rollback(state, ledger, now, cooldown) if not force else None
    if recent is not None:
        return recent
    traffic_after = rollback_traffic(state, target)
    quarantine_reason = f"manual rollback by {actor}" + (f": {reason}" if reason else "")
    ledger_after = (
        ledger.quarantine(from_revision, reason=quarantine_reason, now=now)
        .with_last_good(target)
        .model_copy(update={"canary": canary_after_rollback(ledger, from_revision)})
    )
    ledger_after = ledger_after.record_action(
        Action(
            kind="manual-rollback",
            at=now,
            actor=actor,
            reason=reason,
            from_revision=from_revision,
            to_revision=target,
            before=state.traffic,
        ),
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
    return _refuse(
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
        return _refuse("undo", NOTHING_TO_UNDO, "the ledger records no action on this service")
    if last.kind == "undo":
        return _refuse(
            "undo",
            NOTHING_TO_UNDO,
            f"the last action was already an undo (by {last.actor} at {human_time(last.at)}); "
            "roll back explicitly instead",
        )
    if not last.before:
        return _refuse("undo", NOTHING_TO_UNDO, f"the last action ({last.kind}) recorded no previous traffic")
    for entry in last.before:
        if entry.kind != "revision":
            continue
        rev = state.revision(entry.revision)
        if rev is None:
            return _refuse("undo", UNKNOWN_REVISION, f"{entry.revision}, in the traffic to restore, no longer exists")
        if entry.percent and not rev.ready:
            return _refuse("undo", TARGET_NOT_READY, f"{entry.revision}, in the traffic to restore, is not Ready")
    if _same_traffic(state.traffic, last.before):
        return _refuse("undo", NOTHING_TO_UNDO, f"traffic already is {describe_traffic(last.before)}")

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


def status_report(state: ServiceState, ledger: Ledger) -> StatusReport:
    shares = state.percent_by_revision()
    revisions = tuple(
        RevisionStatus(
            name=r.name,
            ready=r.ready,
            create_time=r.create_time,
            percent=shares.get(r.name, 0),
            quarantined=ledger.is_quarantined(r.name),
        )
        for r in sorted(state.revisions, key=lambda r: r.create_time, reverse=True)
    )
    return StatusReport(
        service=state.ref,
        uri=state.uri,
        traffic=state.traffic,
        revisions=revisions,
        last_good=ledger.last_good,
        last_action=ledger.last_action,
        hold=ledger.hold,
        quarantined=ledger.quarantined,
        ledger_problems=ledger.problems,
    )


# --------------------------------------------------------------------------- orchestration

_HEADERS: dict[ActionName, str] = {
    "rollback": ":rewind: Manual rollback of {service}",
    "undo": ":leftwards_arrow_with_hook: Undid the last action on {service}",
    "hold": ":pause_button: {service} is on hold",
    "release": ":arrow_forward: Hold released on {service}",
}


def render_action(result: ActionResult) -> SlackMessage:
    """The Slack message for a manual action: what, who, why, the traffic, and the next buttons."""
    ref = result.service
    head = _HEADERS[result.action].format(service=ref.service)
    if result.dry_run:
        head = f":test_tube: DRY RUN: {head} (traffic unchanged)"
    elif not result.changed:
        head = f":information_source: {ref.service}: {result.action}, nothing to change"
    from controller.core.mrkdwn import escape, link

    # Reasons and actors come from humans (the API, Slack names): escaped (controller/core/mrkdwn.py).
    fields = [
        f"*Service*\n{escape(ref.service)}",
        f"*Project / region*\n{escape(ref.project)} / {escape(ref.region)}",
        f"*Actor*\n{escape(result.actor)}",
        f"*Traffic now*\n{escape(describe_traffic(result.traffic))}",
    ]
    if result.from_revision or result.to_revision:
        moved = f"`{escape(result.from_revision or '?')}` → `{escape(result.to_revision or '?')}`"
        fields.append(f"*From → to*\n{moved}")
    if result.reason:
        fields.append(f"*Reason*\n{escape(result.reason)}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": escape(result.message)[:2900]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:1900]} for f in fields[:10]]},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"{link(console_url(ref.project, ref.region, ref.service), 'Cloud Run console')} · "
                    f"manual `{result.action}`",
                }
            ],
        },
    ]
    if result.changed and not result.dry_run:
        held = result.hold is not None
        blocks.extend(action_blocks(ref, undo=result.action == "rollback", hold=not held, release=held))
    return SlackMessage(text=escape(f"{head}: {result.message}")[:3000], blocks=tuple(blocks))


class ManualControl:
    """Manual actions on one engine: commit() for writes, one log line and one Slack message per action."""

    def __init__(
        self,
        run: CloudRunApi,
        notifier: Notifier,
        clock: Clock,
        settings: Settings,
        policies: PolicySet | None = None,
    ) -> None:
        self.run = run
        self.notifier = notifier
        self.clock = clock
        self.settings = settings
        self._policies = policies

    def cooldown(self, ref: ServiceRef) -> timedelta:
        """The cooldown of the service's policy (``rollback.cooldown``), used by the recent-rollback
        guard. Unreadable policies never block a human: the default cooldown applies (logged)."""
        if self._policies is None:
            try:
                self._policies = load_for_runtime(self.settings.policies)
            except ControllerError as exc:
                log.warning(
                    "manual: policies unreadable (%s); the default %s cooldown guards manual rollbacks",
                    exc,
                    format_duration(Rollback().cooldown),
                )
                return Rollback().cooldown
        policy = self._policies.select_for(ref.project, ref.region, ref.service).policy
        return policy.rollback.cooldown if policy is not None else Rollback().cooldown

    # -- actions ------------------------------------------------------------------------------
    def rollback(
        self,
        ref: ServiceRef,
        *,
        actor: str,
        reason: str,
        to_revision: str | None = None,
        force: bool = False,
        dry_run: bool = False,
        notify: bool = True,
    ) -> ActionResult:
        first_from: list[str] = []
        cooldown = self.cooldown(ref)

        def plan(state: ServiceState, ledger: Ledger) -> Plan:
            if not to_revision:
                # "Roll back" without a target means "away from what I saw serving". If the
                # service changed under us (an automatic rollback won the race), re-planning
                # would roll back *further*, a second change for one decision: refuse instead
                # (before any other guard: this is what the human needs to hear).
                serving = _newest_serving(state, other_than="")
                if first_from and serving != first_from[0]:
                    return _refuse(
                        "rollback",
                        CONCURRENT_CHANGE,
                        f"the service changed while acting: {first_from[0]} no longer serves traffic "
                        f"(now {describe_traffic(state.traffic)}); check status and retry if still needed",
                    )
                first_from[:] = [serving]
            return plan_rollback(
                state,
                ledger,
                actor=actor,
                reason=reason,
                now=self.clock(),
                to_revision=to_revision,
                force=force,
                cooldown=cooldown,
            )

        return self._act("rollback", ref, plan, actor=actor, reason=reason, dry_run=dry_run, notify=notify)

    def undo(
        self,
        ref: ServiceRef,
        *,
        actor: str,
        reason: str = "",
        dry_run: bool = False,
        notify: bool = True,
        command_id: str = "",
    ) -> ActionResult:
        def plan(state: ServiceState, ledger: Ledger) -> Plan:
            return plan_undo(state, ledger, actor=actor, reason=reason, now=self.clock())

        return self._act(
            "undo", ref, plan, actor=actor, reason=reason, dry_run=dry_run, notify=notify, command_id=command_id
        )

    def hold(
        self, ref: ServiceRef, *, actor: str, reason: str = "", notify: bool = True, command_id: str = ""
    ) -> ActionResult:
        def plan(state: ServiceState, ledger: Ledger) -> Plan:
            return plan_hold(state, ledger, actor=actor, reason=reason, now=self.clock())

        return self._act(
            "hold", ref, plan, actor=actor, reason=reason, dry_run=False, notify=notify, command_id=command_id
        )

    def release(
        self, ref: ServiceRef, *, actor: str, reason: str = "", notify: bool = True, command_id: str = ""
    ) -> ActionResult:
        def plan(state: ServiceState, ledger: Ledger) -> Plan:
            return plan_release(state, ledger)

        return self._act(
            "release", ref, plan, actor=actor, reason=reason, dry_run=False, notify=notify, command_id=command_id
        )

    def status(self, ref: ServiceRef) -> StatusReport:
        state = self.run.read(ref)
        return status_report(state, read_ledger(state.annotations))

    # -- the one path every action takes ------------------------------------------------------
    def _act(
        self,
        action: ActionName,
        ref: ServiceRef,
        plan: Callable[[ServiceState, Ledger], Plan],
        *,
        actor: str,
        reason: str,
        dry_run: bool,
        notify: bool,
        command_id: str = "",
    ) -> ActionResult:
        started = time.perf_counter()
        dry_run = dry_run or (self.settings.dry_run and action in ("rollback", "undo"))

        def commit_plan(state: ServiceState, ledger: Ledger) -> tuple[Plan, Change | None]:
            # A queued command (controller.commands) records its id in the same write as its
            # effect, so its redelivery finds it here and does nothing.
            done_before = ledger.handled(command_id) if command_id else None
            if done_before is not None:
                message = f"command {command_id} was already executed at {done_before.at.isoformat()}"
                return Plan(action=action, traffic_after=state.traffic, message=message, duplicate=True), None
            planned = plan(state, ledger)
            change = None if dry_run else planned.change
            if change is not None and command_id:
                recorded = change.ledger.record_incident(command_id, to=planned.to_revision, now=self.clock())
                change = Change(change.traffic, recorded)
            return planned, change

        try:
            done = commit(self.run, ref, commit_plan, retries=self.settings.conflict_retries)
        except Exception as exc:
            self._log(
                logging.ERROR,
                f"manual {action} on {ref} failed: {exc}",
                action,
                ref,
                actor,
                reason,
                started,
                error=type(exc).__name__,
            )
            raise
        planned, state = done.outcome, done.state
        if planned.refusal is not None:
            refusal = planned.refusal
            self._log(
                logging.WARNING,
                f"manual {action} on {ref} refused ({refusal.guard}): {refusal.message}",
                action,
                ref,
                actor,
                reason,
                started,
                refused=refusal.guard,
                attempts=done.attempts,
                traffic=traffic_json(state.traffic),
            )
            raise Refused(refusal, state)

        applied = done.applied
        after_state = applied.state if applied else state
        hold = read_ledger(after_state.annotations).hold if applied else read_ledger(state.annotations).hold
        message = planned.message if not dry_run else f"would have {planned.message}"
        result = ActionResult(
            action=action,
            service=ref,
            actor=actor,
            reason=reason,
            changed=applied is not None,
            dry_run=dry_run,
            message=message,
            from_revision=planned.from_revision,
            to_revision=planned.to_revision,
            traffic_before=state.traffic,
            traffic=after_state.traffic if applied else state.traffic,
            hold=hold,
            confirmed=applied.confirmed if applied else True,
            attempts=done.attempts,
            duplicate=planned.duplicate,
        )
        # A dry run tells only the caller: nothing changed, so the channel has nothing to hear.
        if notify and result.changed:
            result = result.model_copy(update={"notified": self.notifier.post(render_action(result))})
        self._log(
            logging.INFO if result.confirmed else logging.WARNING,
            f"manual {action} on {ref} by {actor}: {message}",
            action,
            ref,
            actor,
            reason,
            started,
            changed=result.changed,
            dry_run=dry_run,
            confirmed=result.confirmed,
            attempts=done.attempts,
            notified=result.notified,
            from_revision=result.from_revision,
            to_revision=result.to_revision,
            traffic_before=traffic_json(result.traffic_before),
            traffic_after=traffic_json(result.traffic),
            command_id=command_id,
            duplicate=result.duplicate,
        )
        return result

    def _log(
        self,
        level: int,
        message: str,
        action: ActionName,
        ref: ServiceRef,
        actor: str,
        reason: str,
        started: float,
        **fields: Any,
    ) -> None:
        payload: dict[str, Any] = {
            "event": "manual",
            "action": action,
            "service": ref.model_dump(),
            "actor": actor,
            "reason": reason,
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
            **fields,
        }
        labels = {"service": str(ref), "action": action, "actor": actor}
        log.log(level, message, extra={"fields": payload, "labels": labels})


def traffic_json(traffic: tuple[TrafficTarget, ...]) -> list[dict[str, Any]]:
    """Traffic as the API answers it, in Cloud Run's words: type (LATEST/REVISION), revision, percent, tag."""
    return [
        {
            "type": "LATEST" if t.kind == "latest" else "REVISION",
            "revision": t.revision,
            "percent": t.percent,
            "tag": t.tag,
        }
        for t in traffic
    ]


def _action_json(action: Action | None) -> dict[str, Any] | None:
    if action is None:
        return None
    data = action.model_dump(mode="json")
    data["before"] = traffic_json(action.before)
    return data


def result_json(result: ActionResult) -> dict[str, Any]:
    """An action's outcome as the API answers it and ``--json`` prints it."""
    data = result.model_dump(mode="json")
    data["traffic_before"] = traffic_json(result.traffic_before)
    data["traffic"] = traffic_json(result.traffic)
    return data


def status_json(report: StatusReport) -> dict[str, Any]:
    """``GET /status`` and ``status --json``: quarantined revisions under ``quarantined``."""
    data = report.model_dump(mode="json")
    data["traffic"] = traffic_json(report.traffic)
    data["last_action"] = _action_json(report.last_action)
    return data
