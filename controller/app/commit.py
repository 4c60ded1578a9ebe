"""The one way the controller changes a service: read → decide → write with the etag → retry.

Every writer (the alert path, manual actions, canary steps) goes through ``commit``: it reads
the service, hands the state and its ledger to a pure ``plan`` function, and if the plan has a
change, writes traffic and ledger together in one UpdateService carrying the etag of that read.
When someone else changed the service in between (stale etag), it reads again and asks the plan
again, because the right answer may now be different (e.g. the incident is already handled).
So a human and the automation racing on one service end consistent: one change per decision.
Re-reads after a conflict back off a little, with jitter, and never past the delivery deadline.

A rollout that Cloud Run accepted but could not serve (``OperationFailed``) leaves our ledger in
the spec as if the change had happened. ``commit`` re-reads, writes back the ledger as it was
before the change, plus a ``rollback-controller/last-failure`` note, with the traffic that really
serves (so the spec stops asking for what cannot serve), and re-raises: the incident stays
retryable and Pub/Sub redelivers.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from controller.adapters import deadline as deadlines
from controller.adapters.cloudrun import Applied, CloudRunApi, OperationFailed
from controller.core.errors import ConflictError, ControllerError
from controller.core.ledger import PREFIX, Ledger, read_ledger, write_ledger
from controller.core.state import ServiceRef, ServiceState, TrafficTarget

log = logging.getLogger("controller.commit")  # a log field: stable across module moves

T = TypeVar("T")

K_LAST_FAILURE = PREFIX + "last-failure"  # the last rollout Cloud Run accepted but could not serve
BACKOFF_BASE = 0.05  # seconds before the first re-read; doubles per attempt, jittered
BACKOFF_MAX = 1.0


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


def commit(
    run: CloudRunApi,
    ref: ServiceRef,
    plan: Plan[T],
    *,
    retries: int = 4,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
) -> Committed[T]:
    """Apply ``plan`` to the service with optimistic concurrency; raise ConflictError after ``retries`` tries.

    ``sleep`` and ``jitter`` (a number in [0, 1)) are injected by tests.
    """
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
            if attempt < retries:
                _backoff(attempt, sleep, jitter)
            continue
        except OperationFailed as exc:
            _record_failure(run, ref, ledger, exc)
            raise
        return Committed(outcome, state, applied, attempt)
    raise ConflictError(f"gave up after {retries} attempts: {last_conflict}")


def _backoff(attempt: int, sleep: Callable[[float], None], jitter: Callable[[], float]) -> None:
    """Sleep before re-read ``attempt + 1``: base·2^(attempt-1), jittered to 50-150 %, within the deadline."""
    delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1)) * (0.5 + jitter())
    left = deadlines.current().remaining()
    if delay >= left:
        raise deadlines.DeadlineReached(
            f"delivery deadline reached while the service kept changing (attempt {attempt})"
        )
    sleep(delay)


def _record_failure(run: CloudRunApi, ref: ServiceRef, before: Ledger, exc: OperationFailed) -> None:
    """After a failed rollout: ledger as before the change (+ a failure note), traffic as it serves."""
    try:
        failed = run.read(ref)
        note = json.dumps({"targets": list(exc.targets), "error": exc.error[:300]}, sort_keys=True)
        annotations = {**write_ledger(before, failed.annotations), K_LAST_FAILURE: note}
        run.update(failed, failed.traffic, annotations)
    except (ControllerError, OSError) as err:
        # The redelivery re-reads and sees the failure itself; losing the note loses no safety.
        log.warning(
            "could not record the failed rollout in the ledger",
            extra={"fields": {"service": str(ref), "error": str(err)}},
        )
