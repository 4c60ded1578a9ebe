"""The alert path's decision, as a pure function.

``decide(alert, selection, state, ledger, now, dry_run=...)`` answers one question: given
what the alert claims, the policy that covers the service, the service as it is now and the
controller's memory, what should happen? It is an ordered chain of guards, each returning a
``Decision`` with a named ``Reason``; the first guard that applies wins. The order is the
documentation:

1. console test notification          → nothing (Slack is told the wiring works)
2. incident closed                    → nothing (Slack is told it recovered)
3. no policy covers the service       → nothing
4. the alert's trigger is not one the policy enforces (or is unknown) → nothing
5. incident already acted on          → nothing (idempotency under Pub/Sub redelivery)
6. the suspect serves no traffic      → nothing
7. service on hold                    → nothing (Slack is told)
8. cooldown since the last automatic action → nothing (Slack is told)
9. daily budget of automatic actions spent → nothing (Slack is told)
10. evidence (when verified): the suspect's numbers do not breach the trigger → nothing
    (Slack gets the numbers); the target was as bad when it last served → nothing, escalate
11. no Ready, non-quarantined target  → nothing (Slack is told)
12. evidence unavailable or inconclusive and the policy says skip → nothing (Slack is told)
13. policy mode notify / dry run      → nothing changes (Slack says what would have happened)
14. otherwise                         → roll back: 100% to the target, suspect quarantined

No clock, no network, no cloud client: ``now`` is an argument, and the same inputs always
give the same decision.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from controller.core.alert import Alert, TriggerKind
from controller.core.ledger import Action, CanaryState, Ledger
from controller.core.policy import Policy
from controller.core.state import Frozen, ServiceRef, ServiceState, TrafficTarget
from controller.core.verify import Verdict, Verification
from controller.core.wording import human_time

ACTOR = "rollback-controller"


class Reason(StrEnum):
    ROLLED_BACK = "rolled-back"
    DRY_RUN = "dry-run"
    NOTIFY_MODE = "notify-mode"
    TEST_NOTIFICATION = "test-notification"
    INCIDENT_CLOSED = "incident-closed"
    NO_POLICY = "no-policy"
    TRIGGER_NOT_ENFORCED = "trigger-not-enforced"
    ALREADY_HANDLED = "already-handled"
    SUSPECT_NOT_SERVING = "suspect-not-serving"
    HELD = "held"
    COOLDOWN = "cooldown"
    BUDGET_SPENT = "budget-spent"
    NO_TARGET = "no-target"
    NOT_CONFIRMED = "not-confirmed"
    TARGET_ALSO_FAILING = "target-also-failing"
    UNVERIFIED = "unverified"
    # Not a decision of decide(): the engine reports a rollback that the API accepted but
    # could not complete (e.g. the target stopped being Ready in between).
    ROLLBACK_FAILED = "rollback-failed"


# Outcomes a human should hear about even though traffic did not change.
NOTIFY_REASONS = frozenset(
    {
        Reason.ROLLED_BACK,
        Reason.DRY_RUN,
        Reason.NOTIFY_MODE,
        Reason.TEST_NOTIFICATION,
        Reason.INCIDENT_CLOSED,
        Reason.HELD,
        Reason.COOLDOWN,
        Reason.BUDGET_SPENT,
        Reason.NO_TARGET,
        Reason.NOT_CONFIRMED,
        Reason.TARGET_ALSO_FAILING,
        Reason.UNVERIFIED,
        Reason.ROLLBACK_FAILED,
    }
)

# Decisions that would change traffic but for the mode: worth fetching evidence for.
WOULD_ACT = frozenset({Reason.ROLLED_BACK, Reason.DRY_RUN, Reason.NOTIFY_MODE})


class Decision(Frozen):
    reason: Reason
    message: str
    service: ServiceRef | None = None
    policy: str = ""
    trigger: TriggerKind | None = None
    suspect: str = ""
    target: str = ""
    traffic_before: tuple[TrafficTarget, ...] = ()
    traffic_after: tuple[TrafficTarget, ...] = ()
    ledger_after: Ledger | None = None
    verification: Verification | None = None

    @property
    def evidence(self) -> list[str]:
        return self.verification.lines() if self.verification else []

    @property
    def changes_traffic(self) -> bool:
        return self.reason is Reason.ROLLED_BACK

    @property
    def notify(self) -> bool:
        return self.reason in NOTIFY_REASONS


def choose_target(state: ServiceState, ledger: Ledger, suspect: str) -> tuple[str, str]:
    """The revision to roll back to, and why it was chosen (or why none qualifies).

    The ledger's last-good revision if it is Ready and not quarantined; otherwise the newest
    Ready, non-quarantined revision created before the suspect (by ``create_time``: the API
    lists revisions in no promised order).
    """
    suspect_rev = state.revision(suspect)

    def eligible(name: str) -> bool:
        rev = state.revision(name)
        return rev is not None and rev.ready and name != suspect and not ledger.is_quarantined(name)

    if ledger.last_good and eligible(ledger.last_good):
        return ledger.last_good, f"{ledger.last_good} is the last known-good revision"
    older = [
        r
        for r in state.revisions
        if eligible(r.name) and (suspect_rev is None or r.create_time < suspect_rev.create_time)
    ]
    if older:
        best = max(older, key=lambda r: r.create_time)
        return best.name, f"{best.name} is the newest Ready revision older than {suspect}"
    skipped = [
        f"{r.name} ({'quarantined' if ledger.is_quarantined(r.name) else 'not Ready'})"
        for r in state.revisions
        if r.name != suspect and (not r.ready or ledger.is_quarantined(r.name))
    ]
    why = f"no Ready, non-quarantined revision older than {suspect}"
    return "", why + (f"; passed over: {', '.join(skipped)}" if skipped else "")


def rollback_traffic(state: ServiceState, target: str) -> tuple[TrafficTarget, ...]:
    """100% to ``target``, pinned by name; every tagged entry kept (at 0%) so tag URLs survive.

    A LATEST entry carrying traffic is what made the bad revision live; it is never kept with
    a share, so the next deploy cannot silently take traffic back from the pinned target.
    """
    tagged = [t.model_copy(update={"percent": 0}) for t in state.traffic if t.tag]
    for i, entry in enumerate(tagged):
        if entry.kind == "revision" and entry.revision == target:
            tagged[i] = entry.model_copy(update={"percent": 100})
            return tuple(tagged)
    return (TrafficTarget(kind="revision", revision=target, percent=100), *tagged)


def canary_after_rollback(ledger: Ledger, suspect: str) -> CanaryState | None:
    """Rolling back a canary's candidate ends that canary (its stable is the last-good target)."""
    if ledger.canary and ledger.canary.candidate == suspect:
        return None
    return ledger.canary


def ledger_after_rollback(
    ledger: Ledger, action: Action, *, quarantine_reason: str, automatic: bool, now: datetime
) -> Ledger:
    """The ledger after a rollback ``action`` (automatic or manual) moved traffic from
    ``action.from_revision`` to ``action.to_revision``: the revision moved away from is quarantined
    (so nothing automatic promotes it again), the target becomes the last-good revision, a canary of
    the quarantined candidate ends, and the action is the last one (what undo restores)."""
    suspect = action.from_revision
    return (
        ledger.quarantine(suspect, reason=quarantine_reason, now=now)
        .with_last_good(action.to_revision)
        .model_copy(update={"canary": canary_after_rollback(ledger, suspect)})
        .record_action(action, automatic=automatic, now=now)
    )


def _enforced(policy: Policy, trigger: TriggerKind) -> bool:
    return getattr(policy.triggers, trigger) is not None


def _fmt(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def decide(
    alert: Alert,
    policy: Policy | None,
    state: ServiceState | None,
    ledger: Ledger,
    now: datetime,
    *,
    dry_run: bool = False,
    policy_reason: str = "",
    verification: Verification | None = None,
) -> Decision:
    """Decide what to do about one delivery of an alert. See the module docstring for the order."""
    base = {
        "service": state.ref if state else None,
        "policy": policy.name if policy else "",
        "trigger": alert.trigger,
        "traffic_before": state.traffic if state else (),
        "verification": verification,
    }

    def no(reason: Reason, message: str, **extra: str) -> Decision:
        return Decision(reason=reason, message=message, **base, **extra)  # type: ignore[arg-type]

    if alert.is_test:
        return no(
            Reason.TEST_NOTIFICATION,
            "Cloud Monitoring test notification: the wiring works, nothing to do",
        )
    if alert.state == "closed":
        handled = ledger.handled(alert.incident_id)
        acted = f"; the controller had rolled back to {handled.to}" if handled else ""
        return no(Reason.INCIDENT_CLOSED, f"incident {alert.incident_id} closed{acted}")
    if policy is None:
        return no(Reason.NO_POLICY, policy_reason or "no rollback policy covers this service")
    if state is None:
        raise ValueError("decide() needs the service state for anything but a test notification")
    if alert.trigger is None:
        return no(
            Reason.TRIGGER_NOT_ENFORCED,
            f"metric {alert.metric_type or '(none)'} is not a rollback trigger; "
            "label the alert policy rollback_trigger=error_rate|latency_p95|health",
        )
    if not _enforced(policy, alert.trigger):
        return no(Reason.TRIGGER_NOT_ENFORCED, f"policy {policy.name} does not enforce {alert.trigger}")
    handled = ledger.handled(alert.incident_id)
    if handled:
        return no(
            Reason.ALREADY_HANDLED,
            f"incident {alert.incident_id} was already handled at {human_time(handled.at)} "
            f"(rolled back to {handled.to})",
        )

    serving = state.percent_by_revision()
    if alert.revision:
        suspect = alert.revision
        if suspect not in serving:
            return no(
                Reason.SUSPECT_NOT_SERVING,
                f"{suspect} serves no traffic; nothing to roll back",
                suspect=suspect,
            )
    else:
        newest = state.serving()
        if not newest:
            return no(Reason.SUSPECT_NOT_SERVING, "no revision serves traffic; nothing to roll back")
        suspect = max(newest, key=lambda n: r.create_time if (r := state.revision(n)) else now)

    if ledger.hold:
        return no(
            Reason.HELD,
            f"service is on hold since {human_time(ledger.hold.at)} by {ledger.hold.by}"
            + (f" ({ledger.hold.reason})" if ledger.hold.reason else "")
            + "; automation does not change its traffic",
            suspect=suspect,
        )
    last = ledger.last_automatic_action()
    if last is not None and now - last < policy.rollback.cooldown:
        return no(
            Reason.COOLDOWN,
            f"last automatic action was {_fmt(now - last)} ago, within the {_fmt(policy.rollback.cooldown)} cooldown",
            suspect=suspect,
        )
    used = ledger.actions_since(now - timedelta(days=1))
    if used >= policy.rollback.max_per_day:
        return no(
            Reason.BUDGET_SPENT,
            f"{used} automatic actions in the last 24h; the daily budget is {policy.rollback.max_per_day}",
            suspect=suspect,
        )
    target, why = choose_target(state, ledger, suspect)
    if verification is not None:
        evidence = "; ".join(verification.lines())
        if verification.verdict is Verdict.NOT_CONFIRMED:
            return no(
                Reason.NOT_CONFIRMED,
                f"the alert is not confirmed by Cloud Monitoring: {evidence}",
                suspect=suspect,
                target=target,
            )
        if verification.target_as_bad and policy.verification.compare_target:
            return no(
                Reason.TARGET_ALSO_FAILING,
                f"rollback would not help: {target} was as bad when it last served ({evidence}); "
                "check shared infrastructure (databases, downstream APIs)",
                suspect=suspect,
                target=target,
            )
    if not target:
        return no(Reason.NO_TARGET, why, suspect=suspect)
    if verification is not None and verification.verdict in (Verdict.UNAVAILABLE, Verdict.INCONCLUSIVE):
        rule = (
            policy.verification.on_unavailable
            if verification.verdict is Verdict.UNAVAILABLE
            else policy.verification.on_inconclusive
        )
        if rule == "skip":
            return no(
                Reason.UNVERIFIED,
                f"not acting on an unverified alert ({verification.verdict.value}: {'; '.join(verification.lines())}); "
                f"policy {policy.name} says skip",
                suspect=suspect,
                target=target,
            )
        why += f"; acting on the alert alone ({'; '.join(verification.lines())})"

    traffic_after = rollback_traffic(state, target)
    share = serving.get(suspect, 0)
    summary = f"{suspect} ({share}% of traffic) → {target} (100%): {why}"
    if dry_run or policy.mode == "dry-run":
        source = "ROLLBACK_DRY_RUN is set" if dry_run else f"policy {policy.name} is in dry-run mode"
        return no(Reason.DRY_RUN, f"would roll back {summary}; {source}", suspect=suspect, target=target)
    if policy.mode == "notify":
        return no(
            Reason.NOTIFY_MODE,
            f"policy {policy.name} only notifies; would roll back {summary}",
            suspect=suspect,
            target=target,
        )

    reason = f"{alert.trigger} alert {alert.incident_id}"
    ledger_after = ledger_after_rollback(
        ledger.record_incident(alert.incident_id, to=target, now=now),
        Action(
            kind="rollback",
            at=now,
            actor=ACTOR,
            reason=reason,
            incident_id=alert.incident_id,
            from_revision=suspect,
            to_revision=target,
            before=state.traffic,
        ),
        quarantine_reason=reason,
        automatic=True,
        now=now,
    )
    return Decision(
        reason=Reason.ROLLED_BACK,
        message=f"rolled back {summary}",
        suspect=suspect,
        target=target,
        traffic_after=traffic_after,
        ledger_after=ledger_after,
        **base,  # type: ignore[arg-type]
    )
