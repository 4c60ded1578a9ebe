"""The one way the controller changes a service: read → decide → write with the etag → retry.

Every writer (the alert path, manual actions, canary steps) goes through ``commit``: it reads
the service, hands the state and its ledger to a pure ``plan`` function, and if the plan has a
change, writes traffic and ledger together in one UpdateService carrying the etag of that read.
When someone else changed the service in between (stale etag), it reads again and asks the plan
again, because the right answer may now be different (e.g. the incident is already handled).
So a human and the automation racing on one service end consistent: one change per decision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from controller.cloudrun import Applied, CloudRunApi
from controller.errors import ConflictError
from controller.ledger import Ledger, read_ledger, write_ledger
from controller.state import ServiceRef, ServiceState, TrafficTarget

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Change:
    """What to write: the full new traffic list and the new ledger."""

    traffic: tuple[TrafficTarget, ...]
    ledger: Ledger


@dataclass(frozen=True)
class Committed(Generic[T]):
    outcome: T  # the plan's answer for the state it was last asked about
    state: ServiceState  # that state (before the change, if there was one)
    applied: Applied | None  # the write's result, when there was a change
    attempts: int


Plan = Callable[[ServiceState, Ledger], tuple[T, Change | None]]


def commit(run: CloudRunApi, ref: ServiceRef, plan: Plan[T], *, retries: int = 4) -> Committed[T]:
    """Apply ``plan`` to the service with optimistic concurrency; raise ConflictError after ``retries`` tries."""
    last_conflict = ""
    for attempt in range(1, retries + 1):
        state = run.read(ref)
        ledger = read_ledger(state.annotations)
        if ledger.problems:
            log.warning("ledger annotations partly unreadable", extra={"fields": {"problems": list(ledger.problems)}})
        outcome, change = plan(state, ledger)
        if change is None:
            return Committed(outcome, state, None, attempt)
        try:
            applied = run.update(state, change.traffic, write_ledger(change.ledger, state.annotations))
        except ConflictError as exc:
            last_conflict = str(exc)
            log.info(
                "service changed under us; re-reading",
                extra={"fields": {"attempt": attempt, "conflict": last_conflict}},
            )
            continue
        return Committed(outcome, state, applied, attempt)
    raise ConflictError(f"gave up after {retries} attempts: {last_conflict}")
