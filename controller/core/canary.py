"""Canary promotion gating as a pure state machine: (service, ledger, policy, comparison, now) → next step.

A new revision (the *candidate*) gets the policy's traffic steps in turn (10% → 25% → 50% →
100% by default) next to the *stable* revision, and moves on only while its numbers stay close
to stable's over the same window. The state lives in the ledger (``rollback-controller/canary``)
so every tick, from any instance, continues the same canary; every write goes through
``controller.commit`` with the etag, so two ticks racing cannot double-step.

Candidate and stable
    stable    = the ledger's last-good revision if Ready and not quarantined. With no memory
                yet, the revision serving the largest share: the first tick only records it as
                last-good (``adopt``, a ledger-only write; nothing moves), because without memory
                a fresh deploy cannot be told from a revision that has served production for weeks.
    candidate = the newest Ready, non-quarantined revision created after stable that someone
                chose deliberately (``is_deliberate``): tagged ``candidate`` (``--no-traffic --tag
                candidate``), or given traffic by a deploy (caught: the first step takes that
                traffic back to the first step's share). A ``--tag pr-123`` preview is not one;
                the policy's ``candidates: any`` makes every newer Ready revision one.
    An undo (``controller.manual``) makes the restored revision last-good, i.e. stable: no
    canary is started on what a human just said is fine.

Each step lasts ``step_for`` from its traffic change. Its first ``metric_lag`` is ignored while
metrics catch up; the range judged is ``[step start + metric_lag, now]``, read as the whole
minutes of it ending now (``judged_window``).

Policy edited during a canary: ``steps-changed`` continues at the first step at or above the
candidate's share as last written (``_placement``), never at 100% without a pass.

Judgement, candidate against stable over that window (``compare``); precedence is written
down once: **fail beats inconclusive beats pass**.
    fail          5xx: the candidate's Wilson lower bound is above stable's ratio plus
                  ``max_error_rate_increase``, or above the policy's absolute 5xx threshold;
                  p95: candidate/stable above ``max_latency_ratio``, or above the absolute
                  p95 threshold; health: probe failures at the health trigger's count.
    inconclusive  fewer than ``min_requests`` candidate requests (never promote on silence),
                  no latency data, or a 5xx ratio above the limit that is not yet significant.
    pass          otherwise.

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

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import ValidationError

from controller.core.ledger import Action, Ledger
from controller.core.policy import Canary, Policy, Triggers
from controller.core.state import Frozen, ServiceState, TrafficTarget
from controller.core.verify import Numbers

ACTOR = "rollback-controller (canary)"
TAG_STABLE, TAG_CANDIDATE, TAG_PREVIOUS = "stable", "candidate", "previous"
_OUR_TAGS = frozenset({TAG_STABLE, TAG_CANDIDATE, TAG_PREVIOUS})
MINUTE = timedelta(minutes=1)


class CanaryState(Frozen):
    """What the ledger remembers about the canary in progress (or just promoted)."""

    candidate: str
    stable: str
    step: int  # index into the policy's steps: the candidate's current share is steps[step]
    step_started_at: datetime
    # The candidate's share as last written (0 in states written before it was recorded). It
    # differs from steps[step] only when the policy's steps changed under a running canary.
    percent: int = 0
    checks: int = 0  # judgements that led to a recorded change in this canary
    approved_by: str = ""
    approval_requested: bool = False
    timeout_notified: bool = False
    thread_ts: str = ""  # the Slack thread this canary's messages go to
    promoted_at: datetime | None = None

    @classmethod
    def from_ledger(cls, raw: dict[str, Any] | None) -> CanaryState | None:
        if not raw:
            return None
        try:
            return cls.model_validate(raw, strict=False)
        except ValidationError:
            return None  # an unreadable canary is treated as none: the next tick starts afresh

    def to_ledger(self) -> dict[str, Any]:
        data: dict[str, Any] = self.model_dump(mode="json")
        return data


class Judgement(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Comparison(Frozen):
    judgement: Judgement
    reasons: tuple[str, ...] = ()  # why it failed / is inconclusive
    lines: tuple[str, ...] = ()  # the measured numbers, for Slack and CI


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
Candidates = Literal["tagged", "any"]


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


# -- judgement ------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def compare(cfg: Canary, triggers: Triggers, candidate: Numbers, stable: Numbers) -> Comparison:
    """Candidate against stable over the same window (module docstring: rules and precedence)."""
    fails: list[str] = []
    unsure: list[str] = []
    lines: list[str] = []
    need = max(cfg.min_requests, 1)

    if candidate.requests < need:
        unsure.append(f"only {candidate.requests:,} candidate requests in the window (need {need:,})")
    else:
        lines.append(
            f"5xx: candidate {_pct(candidate.error_ratio)} of {candidate.requests:,} "
            f"(95% CI {_pct(candidate.error_ratio_lower)}-{_pct(candidate.error_ratio_upper)}), "
            f"stable {_pct(stable.error_ratio)} of {stable.requests:,}"
        )
        limit = stable.error_ratio + cfg.max_error_rate_increase if stable.requests >= need else None
        absolute = triggers.error_rate.above if triggers.error_rate else None
        if limit is not None and candidate.error_ratio_lower > limit:
            fails.append(
                f"5xx ratio {_pct(candidate.error_ratio)} is significantly above stable's "
                f"{_pct(stable.error_ratio)} + {_pct(cfg.max_error_rate_increase)} allowed"
            )
        elif absolute is not None and candidate.error_ratio_lower > absolute:
            fails.append(f"5xx ratio {_pct(candidate.error_ratio)} is above the policy's {_pct(absolute)}")
        elif limit is not None and candidate.error_ratio > limit:
            unsure.append(f"5xx ratio {_pct(candidate.error_ratio)} is above the limit but not yet significantly")

        c95 = candidate.p95_ms
        if candidate.latency_count < need or c95 is None:
            unsure.append("no latency data for the candidate")
        else:
            s95 = stable.p95_ms if stable.latency_count >= need else None
            lines.append(f"p95: candidate {c95:,.0f} ms, stable " + (f"{s95:,.0f} ms" if s95 else "n/a"))
            if s95 and c95 / s95 > cfg.max_latency_ratio:
                fails.append(
                    f"p95 {c95:,.0f} ms is {c95 / s95:.2f}x stable's {s95:,.0f} ms (allowed {cfg.max_latency_ratio}x)"
                )
            elif triggers.latency_p95 is not None and c95 > triggers.latency_p95.above_ms:
                fails.append(f"p95 {c95:,.0f} ms is above the policy's {triggers.latency_p95.above_ms:,.0f} ms")

    failures = candidate.health_failures
    if triggers.health is not None and failures is not None:
        lines.append(f"health: {failures} failed probes")
        if failures >= triggers.health.consecutive_failures:
            fails.append(f"{failures} failed health checks (threshold {triggers.health.consecutive_failures})")

    if fails:
        return Comparison(judgement=Judgement.FAIL, reasons=tuple(fails), lines=tuple(lines))
    if unsure:
        return Comparison(judgement=Judgement.INCONCLUSIVE, reasons=tuple(unsure), lines=tuple(lines))
    return Comparison(judgement=Judgement.PASS, lines=tuple(lines))


# -- candidate, stable, traffic -------------------------------------------------------------------


def find_stable(state: ServiceState, ledger: Ledger) -> str:
    """The ledger's last-good revision if usable; with no memory yet, the revision with the largest share."""
    last_good = state.revision(ledger.last_good) if ledger.last_good else None
    if last_good is not None and last_good.ready and not ledger.is_quarantined(last_good.name):
        return last_good.name
    serving = state.percent_by_revision()
    usable = [n for n in state.serving() if (r := state.revision(n)) and r.ready and not ledger.is_quarantined(n)]
    return max(usable, key=lambda n: serving[n]) if usable else ""


def is_deliberate(state: ServiceState, name: str) -> bool:
    """A revision someone meant for production: tagged ``candidate``, or given traffic by a deploy."""
    tagged = any(t.kind == "revision" and t.revision == name and t.tag == TAG_CANDIDATE for t in state.traffic)
    return tagged or state.percent_by_revision().get(name, 0) > 0


def find_pair(state: ServiceState, ledger: Ledger, candidates: Candidates = "tagged") -> tuple[str, str] | None:
    """(candidate, stable), or None. The candidate is the newest Ready, non-quarantined revision
    created after stable that was chosen deliberately (``is_deliberate``); with ``candidates:
    any``, any such revision (a ``--no-traffic --tag pr-123`` preview included)."""
    stable = find_stable(state, ledger)
    anchor = state.revision(stable) if stable else None
    if anchor is None:
        return None
    newer = [
        r
        for r in state.revisions
        if r.ready
        and not ledger.is_quarantined(r.name)
        and r.create_time > anchor.create_time
        and (candidates == "any" or is_deliberate(state, r.name))
    ]
    if not newer:
        return None
    return max(newer, key=lambda r: r.create_time).name, stable


def split(state: ServiceState, candidate: str, stable: str, percent: int) -> tuple[TrafficTarget, ...]:
    """Candidate at ``percent`` (tag ``candidate``), stable at the rest (tag ``stable``); at 100% the
    candidate becomes ``stable`` and the old stable keeps a ``previous`` tag at 0%. Other tagged
    entries are kept at 0% so their URLs survive."""
    out: list[TrafficTarget] = []
    if percent >= 100:
        out.append(TrafficTarget(kind="revision", revision=candidate, percent=100, tag=TAG_STABLE))
        out.append(TrafficTarget(kind="revision", revision=stable, percent=0, tag=TAG_PREVIOUS))
    elif percent <= 0:
        out.append(TrafficTarget(kind="revision", revision=stable, percent=100, tag=TAG_STABLE))
        out.append(TrafficTarget(kind="revision", revision=candidate, percent=0, tag=TAG_CANDIDATE))
    else:
        out.append(TrafficTarget(kind="revision", revision=stable, percent=100 - percent, tag=TAG_STABLE))
        out.append(TrafficTarget(kind="revision", revision=candidate, percent=percent, tag=TAG_CANDIDATE))
    ours = {candidate, stable}
    for t in state.traffic:
        if t.tag and t.tag not in _OUR_TAGS and not (t.kind == "revision" and t.revision in ours):
            out.append(t.model_copy(update={"percent": 0}))
    return tuple(out)


def window(cs: CanaryState, cfg: Canary, now: datetime) -> tuple[datetime, datetime] | None:
    """The documented range for the current step, ``[step start + metric_lag, now]``, or None
    while it holds less than one minute."""
    start = cs.step_started_at + cfg.metric_lag
    return (start, now) if now - start >= MINUTE else None


def judged_window(cs: CanaryState, cfg: Canary, now: datetime) -> tuple[datetime, datetime] | None:
    """The window actually measured: the whole minutes ending ``now`` that lie inside ``window``.

    Monitoring aligns its buckets to the end of the read interval, in periods of at least 60 s; a
    65 s range would be read as a 120 s bucket reaching into the minute before the step. Whole
    minutes ending now are exactly the 60 s buckets inside the range; the leftover (under a
    minute, at the start) is not judged.
    """
    span = window(cs, cfg, now)
    if span is None:
        return None
    minutes = int((now - span[0]) // MINUTE)
    return now - minutes * MINUTE, now


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
    cs = CanaryState.from_ledger(ledger.canary)
    pair = find_pair(state, ledger, cfg.candidates)

    def start(candidate: str, stable: str, why: str) -> CanaryDecision:
        percent = cfg.steps[0]
        fresh = CanaryState(candidate=candidate, stable=stable, step=0, step_started_at=now, percent=percent)
        after = ledger.with_last_good(stable).model_copy(update={"canary": fresh.to_ledger()})
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
    placed = _placement(cfg.steps, cs, state)
    percent = _share(cfg.steps, cs, state)
    placed = _placement(cfg.steps, cs, state)  # the steps may have changed since the last tick
    failed = comparison is not None and comparison.judgement is Judgement.FAIL
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
        return ledger.model_copy(update={"canary": cs.model_copy(update=update).to_ledger()})

    if comparison is not None and comparison.judgement is Judgement.FAIL:
        return rollback("; ".join(comparison.reasons))
    if elapsed < cfg.step_for:
        left = cfg.step_for - elapsed
        return made(
            step=Step.WAIT, message=f"step {percent}% in progress, {int(left.total_seconds())}s left", percent=percent
        )
    if comparison is None or comparison.judgement is Judgement.INCONCLUSIVE:
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
        after = ledger.model_copy(update={"canary": promoted.to_ledger()}).with_last_good(cs.stable)
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
    after = _record(
        ledger.model_copy(update={"canary": moved.to_ledger()}), "step", f"{percent}% passed", state, cs, now
    )
    return made(
        step=Step.STEP,
        message=f"{cs.candidate} passed {percent}%; now {target}%",
        percent=target,
        traffic_after=split(state, cs.candidate, cs.stable, target),
        ledger_after=after,
    )


def _share(steps: list[int], cs: CanaryState, state: ServiceState) -> int:
    """The candidate's share as last written (see ``CanaryState.percent``)."""
    if cs.percent:
        return cs.percent
    if 0 <= cs.step < len(steps):
        return steps[cs.step]
    return state.percent_by_revision().get(cs.candidate, 0)


def _placement(steps: list[int], cs: CanaryState, state: ServiceState) -> tuple[int, int]:
    """(step index, share) where a canary continues under the policy's steps as they are now.

    The share is the one last written (``cs.percent``; for older states ``steps[step]``, or the
    candidate's live share when that index no longer exists). It continues at the first step at
    or above that share, except that 100% is never reached without a pass: then it keeps its
    share and the next pass promotes (index one before the last step)."""
    share = _share(steps, cs, state)
    index = next(i for i, p in enumerate(steps) if p >= share)  # the last step is 100
    if steps[index] == share or steps[index] < 100:
        return index, steps[index]
    return index - 1, share


def _steps_changed(
    state: ServiceState, ledger: Ledger, cfg: Canary, cs: CanaryState, now: datetime, placed: tuple[int, int]
) -> CanaryDecision:
    """The policy's steps changed under a running canary: continue at ``placed`` (``_placement``)."""
    index, percent = placed
    was = _share(cfg.steps, cs, state)
    steps = ", ".join(str(p) for p in cfg.steps)
    moves = percent != was
    update: dict[str, Any] = {"step": index, "percent": percent}
    if moves:
        update |= {"step_started_at": now, "timeout_notified": False}
    moved = cs.model_copy(update=update)
    after = ledger.model_copy(update={"canary": moved.to_ledger()})
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


class GateVerdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


def gate(decision: CanaryDecision, ledger: Ledger, revision: str = "") -> GateVerdict:
    """The answer a CI pipeline polls for, after the tick ``decision`` (``ledger`` = after it).

    pass: the revision (default: the canary's candidate) was promoted, or is the last-good one
    with no canary running; fail: it was rolled back or is quarantined; inconclusive: the canary
    is still in progress (keep polling; never pass on silence).
    """
    cs = CanaryState.from_ledger(ledger.canary)
    name = revision or decision.candidate or (cs.candidate if cs else "")
    if decision.step is Step.ROLLBACK or (name and ledger.is_quarantined(name)):
        return GateVerdict.FAIL
    if cs is not None and cs.promoted_at is not None and cs.candidate == name:
        return GateVerdict.PASS
    if cs is None and name and name == ledger.last_good:
        return GateVerdict.PASS
    return GateVerdict.INCONCLUSIVE
