"""Manual control of a service: roll back now, undo the controller's last action, hold, release, status.

On-call people (over HTTP, from Slack buttons or the CLI) act through the *same* machinery as the
automation, so humans and the controller never fight over traffic:

* every write goes through :func:`controller.app.commit.commit`: read, plan (a pure function of the
  service state and the ledger, :mod:`controller.core.manual_plans`, where the semantics and the
  guards of each action are written down), one UpdateService carrying the etag, re-read and re-plan
  on a conflict;
* the ledger (annotations on the service) records every manual action with its actor, in the same
  write as the traffic change.

A refusal is a :class:`~controller.core.manual_plans.Refusal` naming the guard that refused;
:class:`ManualControl` raises it as :class:`Refused` (the HTTP layer answers 409 with the guard's
name, the CLI exits 1). :data:`ACTIONS` is the one dispatch table from an action's name to its
method and argument model (:func:`perform` dispatches through it).

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from controller.adapters.cloudrun import CloudRunApi
from controller.adapters.policy_files import load_for_runtime
from controller.adapters.slack import Notifier
from controller.app.commit import Change, commit
from controller.app.settings import Settings
from controller.core.durations import format_duration
from controller.core.errors import ControllerError, PermanentError
from controller.core.ledger import Ledger, read_ledger
from controller.core.manual_messages import render_action
from controller.core.manual_plans import (
    CONCURRENT_CHANGE,
    ActionName,
    Plan,
    Refusal,
    describe_traffic,
    newest_serving,
    plan_hold,
    plan_release,
    plan_rollback,
    plan_undo,
    refuse,
)
from controller.core.manual_results import ActionResult, StatusReport, status_report, traffic_json
from controller.core.policy import Rollback
from controller.core.policy_matching import PolicySet
from controller.core.state import Frozen, ServiceRef, ServiceState

log = logging.getLogger("controller.manual")

Clock = Callable[[], datetime]


class Refused(PermanentError):
    """A manual action refused by a guard (HTTP 409, CLI exit 1); ``traffic`` is the service's as read."""

    def __init__(self, refusal: Refusal, state: ServiceState) -> None:
        super().__init__(f"{refusal.guard}: {refusal.message}")
        self.refusal = refusal
        self.state = state


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
                serving = newest_serving(state, other_than="")
                if first_from and serving != first_from[0]:
                    return refuse(
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
            writes = None if dry_run else planned.change
            change = Change(*writes) if writes is not None else None
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


# --------------------------------------------------------------------------- the dispatch table


class RollbackArgs(Frozen):
    """What :meth:`ManualControl.rollback` takes besides the service."""

    actor: str
    reason: str
    to_revision: str | None = None
    force: bool = False
    dry_run: bool = False
    notify: bool = True


class UndoArgs(Frozen):
    """What :meth:`ManualControl.undo` takes besides the service."""

    actor: str
    reason: str = ""
    dry_run: bool = False
    notify: bool = True
    command_id: str = ""


class HoldArgs(Frozen):
    """What :meth:`ManualControl.hold` and :meth:`ManualControl.release` take besides the service."""

    actor: str
    reason: str = ""
    notify: bool = True
    command_id: str = ""


@dataclass(frozen=True)
class ActionSpec:
    """One manual action: the :class:`ManualControl` method that performs it and its argument model."""

    method: Callable[..., ActionResult]
    args: type[Frozen]


# Action name -> how to perform it; the CLI and the Slack buttons dispatch here (through perform).
ACTIONS: Final[Mapping[str, ActionSpec]] = MappingProxyType(
    {
        "rollback": ActionSpec(ManualControl.rollback, RollbackArgs),
        "undo": ActionSpec(ManualControl.undo, UndoArgs),
        "hold": ActionSpec(ManualControl.hold, HoldArgs),
        "release": ActionSpec(ManualControl.release, HoldArgs),
    }
)


def perform(control: ManualControl, action: str, ref: ServiceRef, **arguments: Any) -> ActionResult:
    """Perform the manual ``action`` on ``ref``; ``arguments`` are checked against its model first
    (a field the action does not take is a ``pydantic.ValidationError``, an unknown action a
    ``ValueError``: both are programming errors, the surfaces validate their input before)."""
    spec = ACTIONS.get(action)
    if spec is None:
        raise ValueError(f"unknown manual action {action!r}; known: {', '.join(ACTIONS)}")
    return spec.method(control, ref, **spec.args(**arguments).model_dump())
