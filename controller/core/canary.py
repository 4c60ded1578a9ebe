"""Canary promotion gating as a pure state machine: (service, ledger, policy, comparison, now) → next step.

A new revision (the *candidate*) gets the policy's traffic steps in turn (10% → 25% → 50% →
100% by default) next to the *stable* revision, and moves on only while its numbers stay close
to stable's over the same window. The state lives in the ledger (``rollback-controller/canary``)
so every tick, from any instance, continues the same canary; every write goes through
``controller.commit`` with the etag, so two ticks racing cannot double-step.

Which revisions are compared, the split written and the window judged are in
:mod:`controller.core.canary_traffic`; the judgement (fail beats inconclusive beats pass) and the
one ``Verdict`` enum in :mod:`controller.core.canary_verdict`.

Policy edited during a canary: ``steps-changed`` continues at the first step at or above the
candidate's share as last written (``canary_traffic.placement``), never at 100% without a pass.

Transitions (``tick``)
    fail                         → roll back: stable 100%, candidate quarantined (any time in a step)
    step not over yet            → wait
    inconclusive after the step  → wait; ``inconclusive_timeout`` past the step's end →
                                   ``on_timeout``: roll back, or tell Slack once and keep holding
    pass after the step          → next step; the last (100%) is the promotion: the candidate
                                   becomes stable, optionally after a human's approval
    after promotion              → for ``watch`` the old stable stays last-good (the alert path's
                                   target); then the new stable becomes last-good
No clock and no I/O here: ``now`` and the comparison's numbers are arguments.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from controller.core.canary_traffic import TAG_CANDIDATE, current_share, find_pair, find_stable, placement, split
from controller.core.canary_verdict import Comparison, Verdict
from controller.core.ledger import Action, CanaryState, Ledger
from controller.core.policy import Canary, Policy
from controller.core.state import Frozen, ServiceState, TrafficTarget

ACTOR = "rollback-controller (canary)"


class Step(StrEnum):
    NONE = "none"  # nothing to do (no canary policy, held, no candidate, watching)
    WAIT = "wait"
    START = "start"
    STEP = "step"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    AWAIT_APPROVAL = "await-approval"
    TIMEOUT = "timeout"  # inconclusive for too long: Slack is told once
    WATCH_OVER = "watch-over"
    ADOPT = "adopt"  # no memory yet: record the revision serving production as stable
    STEPS_CHANGED = "steps-changed"  # the policy's steps changed under a running canary


# Steps that change something and are written to the service (traffic and/or ledger).
WRITES = frozenset(
    {
        Step.START,
        Step.STEP,
        Step.PROMOTE,
        Step.ROLLBACK,
        Step.AWAIT_APPROVAL,
        Step.TIMEOUT,
        Step.WATCH_OVER,
        Step.ADOPT,
        Step.STEPS_CHANGED,
    }
)
# Steps a human hears about in the canary's Slack thread.
NOTIFIES = frozenset(
    {Step.START, Step.STEP, Step.PROMOTE, Step.ROLLBACK, Step.AWAIT_APPROVAL, Step.TIMEOUT, Step.STEPS_CHANGED}
)


class CanaryDecision(Frozen):
    step: Step
    message: str
    candidate: str = ""
    stable: str = ""
    percent: int = 0  # the candidate's share after this decision
    comparison: Comparison | None = None
    traffic_after: tuple[TrafficTarget, ...] = ()
    ledger_after: Ledger | None = None

    @property
    def writes(self) -> bool:
        return self.step in WRITES

    @property
    def notify(self) -> bool:
        return self.step in NOTIFIES


# -- the state machine ----------------------------------------------------------------------------


def _record(ledger: Ledger, kind: str, reason: str, state: ServiceState, cs: CanaryState, now: datetime) -> Ledger:
    # from → to names the direction traffic moved, as every other action does: a step moves it
    # towards the candidate, a rollback away from it. Undo relies on this: it lifts the quarantine
    # of the action's from_revision, i.e. the candidate a canary rollback quarantined.
    rollback = kind == "rollback"
    action = Action(
        kind="canary-rollback" if rollback else "canary-step",
        at=now,
        actor=ACTOR,
        reason=reason,
        from_revision=cs.candidate if rollback else cs.stable,
        to_revision=cs.stable if rollback else cs.candidate,
        before=state.traffic,
    )
    # Canary steps are planned changes, not emergency rollbacks: they do not spend the daily budget.
    return ledger.record_action(action, automatic=False, now=now)


def tick(
    state: ServiceState,
    ledger: Ledger,
    policy: Policy,
    now: datetime,
    comparison: Comparison | None,
    *,
    approved_by: str = "",
) -> CanaryDecision:
    """The next canary step for one service (see the module docstring for every transition)."""
    cfg = policy.canary
    if cfg is None:
        return CanaryDecision(step=Step.NONE, message=f"policy {policy.name} has no canary block")
    if ledger.hold:
        return CanaryDecision(step=Step.NONE, message=f"service is on hold by {ledger.hold.by}; canary paused")
    cs = ledger.canary
    pair = find_pair(state, ledger, cfg.candidates)

    def start(candidate: str, stable: str, why: str) -> CanaryDecision:
        percent = cfg.steps[0]
        fresh = CanaryState(candidate=candidate, stable=stable, step=0, step_started_at=now, percent=percent)
        after = ledger.with_last_good(stable).model_copy(update={"canary": fresh})
        after = _record(after, "step", f"canary started at {percent}%", state, fresh, now)
        return CanaryDecision(
            step=Step.START,
            message=f"canary started: {candidate} gets {percent}% next to {stable} ({why})",
            candidate=candidate,
            stable=stable,
            percent=percent,
            traffic_after=split(state, candidate, stable, percent),
            ledger_after=after,
        )

    if cs is not None and cs.promoted_at is not None:
        if pair is not None and pair[0] != cs.candidate:
            return start(pair[0], cs.candidate, "a new revision after the last promotion")
        if now - cs.promoted_at >= cfg.watch:
            after = ledger.with_last_good(cs.candidate).model_copy(update={"canary": None})
            return CanaryDecision(
                step=Step.WATCH_OVER,
                message=f"watch over: {cs.candidate} is the last-good revision now",
                candidate=cs.candidate,
                stable=cs.stable,
                percent=100,
                traffic_after=state.traffic,
                ledger_after=after,
            )
        return CanaryDecision(
            step=Step.NONE, message=f"watching {cs.candidate} after promotion", candidate=cs.candidate
        )

    if cs is None:
        current = find_stable(state, ledger)
        if pair is None or not ledger.last_good:
            if current and ledger.last_good != current:
                # Remember what production runs now, so the next deploy is recognised as a
                # candidate even when it sends traffic straight to the new revision. Without
                # memory this is all the first tick does: nothing moves.
                why = "first tick for this service" if not ledger.last_good else "no candidate"
                return CanaryDecision(
                    step=Step.ADOPT,
                    message=f"{why}; {current} recorded as the stable revision (traffic unchanged)",
                    stable=current,
                    traffic_after=state.traffic,
                    ledger_after=ledger.with_last_good(current),
                )
            return CanaryDecision(step=Step.NONE, message="no candidate revision to promote", stable=current)
        new, anchor = pair
        tagged = any(t.revision == new and t.tag == TAG_CANDIDATE for t in state.traffic)
        why = (
            f"new Ready revision tagged {TAG_CANDIDATE}"
            if tagged
            else "new Ready revision a deploy sent traffic to"
            if state.percent_by_revision().get(new, 0) > 0
            else "new Ready revision (candidates: any)"
        )
        return start(new, anchor, why)

    candidate = state.revision(cs.candidate)
    stable = state.revision(cs.stable)
    if stable is None or not stable.ready:
        return CanaryDecision(
            step=Step.NONE,
            message=f"stable revision {cs.stable} is gone or not Ready; a human must decide",
            candidate=cs.candidate,
        )
    if candidate is None or not candidate.ready or ledger.is_quarantined(cs.candidate):
        why = "quarantined" if ledger.is_quarantined(cs.candidate) else "gone or not Ready"
        after = ledger.model_copy(update={"canary": None})
        return CanaryDecision(
            step=Step.ROLLBACK,
            message=f"candidate {cs.candidate} is {why}: canary ended, {cs.stable} takes 100%",
            candidate=cs.candidate,
            stable=cs.stable,
            percent=0,
            traffic_after=split(state, cs.candidate, cs.stable, 0),
            ledger_after=after,
        )
    if pair is not None and pair[0] != cs.candidate:
        return start(pair[0], cs.stable, f"{pair[0]} replaced candidate {cs.candidate}")

    return _advance(state, ledger, cfg, cs, now, comparison, approved_by)


def _advance(
    state: ServiceState,
    ledger: Ledger,
    cfg: Canary,
    cs: CanaryState,
    now: datetime,
    comparison: Comparison | None,
    approved_by: str,
) -> CanaryDecision:
    """A canary in progress: fail, wait, time out, ask for approval, step up or promote."""
    placed = placement(cfg.steps, cs, state)
    percent = current_share(cfg.steps, cs, state)
    placed = placement(cfg.steps, cs, state)  # the steps may have changed since the last tick
    failed = comparison is not None and comparison.judgement is Verdict.FAIL
    if placed != (cs.step, percent) and not failed:
        return _steps_changed(state, ledger, cfg, cs, now, placed)
    elapsed = now - cs.step_started_at

    def made(
        step: Step,
        message: str,
        percent: int,
        traffic_after: tuple[TrafficTarget, ...] = (),
        ledger_after: Ledger | None = None,
    ) -> CanaryDecision:
        return CanaryDecision(
            step=step,
            message=message,
            candidate=cs.candidate,
            stable=cs.stable,
            percent=percent,
            comparison=comparison,
            traffic_after=traffic_after,
            ledger_after=ledger_after,
        )

    def rollback(reason: str) -> CanaryDecision:
        after = (
            ledger.quarantine(cs.candidate, reason=f"canary: {reason}", now=now)
            .with_last_good(cs.stable)
            .model_copy(update={"canary": None})
        )
        after = _record(after, "rollback", reason, state, cs, now)
        return made(
            step=Step.ROLLBACK,
            message=f"canary failed at {percent}%: {reason}; {cs.stable} takes 100%, {cs.candidate} quarantined",
            percent=0,
            traffic_after=split(state, cs.candidate, cs.stable, 0),
            ledger_after=after,
        )

    def keep(update: dict[str, Any]) -> Ledger:
        return ledger.model_copy(update={"canary": cs.model_copy(update=update)})

    if comparison is not None and comparison.judgement is Verdict.FAIL:
        return rollback("; ".join(comparison.reasons))
    if elapsed < cfg.step_for:
        left = cfg.step_for - elapsed
        return made(
            step=Step.WAIT, message=f"step {percent}% in progress, {int(left.total_seconds())}s left", percent=percent
        )
    if comparison is None or comparison.judgement is Verdict.INCONCLUSIVE:
        why = "; ".join(comparison.reasons) if comparison else "no window to judge yet"
        if elapsed >= cfg.step_for + cfg.inconclusive_timeout:
            if cfg.on_timeout == "rollback":
                return rollback(f"still inconclusive after {cfg.inconclusive_timeout} ({why})")
            if not cs.timeout_notified:
                return made(
                    step=Step.TIMEOUT,
                    message=f"canary stuck at {percent}%: inconclusive for too long ({why}); "
                    "holding, a human should look",
                    percent=percent,
                    traffic_after=state.traffic,
                    ledger_after=keep({"timeout_notified": True}),
                )
        return made(step=Step.WAIT, message=f"holding at {percent}%: {why}", percent=percent)

    nxt = cs.step + 1
    if nxt >= len(cfg.steps):  # already at 100% without a promotion record: finish it
        nxt = len(cfg.steps) - 1
    target = cfg.steps[nxt]
    approver = approved_by or cs.approved_by
    if target >= 100 and cfg.require_approval and not approver:
        if cs.approval_requested:
            return made(step=Step.WAIT, message=f"waiting for approval to promote {cs.candidate}", percent=percent)
        return made(
            step=Step.AWAIT_APPROVAL,
            message=f"{cs.candidate} passed {percent}%; waiting for a human to approve promotion to 100%",
            percent=percent,
            traffic_after=state.traffic,
            ledger_after=keep({"approval_requested": True}),
        )
    checks = cs.checks + 1
    if target >= 100:
        promoted = cs.model_copy(
            update={
                "step": nxt,
                "step_started_at": now,
                "promoted_at": now,
                "checks": checks,
                "approved_by": approver,
                "percent": 100,
            }
        )
        after = ledger.model_copy(update={"canary": promoted}).with_last_good(cs.stable)
        after = _record(after, "step", f"promoted after {percent}% passed", state, cs, now)
        who = f" (approved by {approver})" if approver else ""
        return made(
            step=Step.PROMOTE,
            message=f"{cs.candidate} promoted to 100% and is now stable{who}; "
            f"{cs.stable} stays last-good for {cfg.watch}",
            percent=100,
            traffic_after=split(state, cs.candidate, cs.stable, 100),
            ledger_after=after,
        )
    moved = cs.model_copy(
        update={"step": nxt, "step_started_at": now, "checks": checks, "timeout_notified": False, "percent": target}
    )
    after = _record(ledger.model_copy(update={"canary": moved}), "step", f"{percent}% passed", state, cs, now)
    return made(
        step=Step.STEP,
        message=f"{cs.candidate} passed {percent}%; now {target}%",
        percent=target,
        traffic_after=split(state, cs.candidate, cs.stable, target),
        ledger_after=after,
    )


def _steps_changed(
    state: ServiceState, ledger: Ledger, cfg: Canary, cs: CanaryState, now: datetime, placed: tuple[int, int]
) -> CanaryDecision:
    """The policy's steps changed under a running canary: continue at ``placed`` (``canary_traffic.placement``)."""
    index, percent = placed
    was = current_share(cfg.steps, cs, state)
    steps = ", ".join(str(p) for p in cfg.steps)
    moves = percent != was
    update: dict[str, Any] = {"step": index, "percent": percent}
    if moves:
        update |= {"step_started_at": now, "timeout_notified": False}
    moved = cs.model_copy(update=update)
    after = ledger.model_copy(update={"canary": moved})
    if moves:
        after = _record(after, "step", f"policy steps changed to [{steps}]: {was}% → {percent}%", state, cs, now)
        what = f"continues at {percent}% (was {was}%)"
    else:
        what = f"continues at {was}%" + ("; the next pass promotes" if index == len(cfg.steps) - 2 else "")
    return CanaryDecision(
        step=Step.STEPS_CHANGED,
        message=f"policy steps changed to [{steps}] during the canary of {cs.candidate}: {what}",
        candidate=cs.candidate,
        stable=cs.stable,
        percent=percent,
        traffic_after=split(state, cs.candidate, cs.stable, percent) if moves else state.traffic,
        ledger_after=after,
    )


def gate(decision: CanaryDecision, ledger: Ledger, revision: str = "") -> Verdict:
    """The answer a CI pipeline polls for, after the tick ``decision`` (``ledger`` = after it).

    pass: the revision (default: the canary's candidate) was promoted, or is the last-good one
    with no canary running; fail: it was rolled back or is quarantined; inconclusive: the canary
    is still in progress (keep polling; never pass on silence).
    """
    cs = ledger.canary
    name = revision or decision.candidate or (cs.candidate if cs else "")
    if decision.step is Step.ROLLBACK or (name and ledger.is_quarantined(name)):
        return Verdict.FAIL
    if cs is not None and cs.promoted_at is not None and cs.candidate == name:
        return Verdict.PASS
    if cs is None and name and name == ledger.last_good:
        return Verdict.PASS
    return Verdict.INCONCLUSIVE
