"""Cloud Run v2 protos → the core's ``ServiceState``: traffic, revisions, and what actually serves.

What serves is ``traffic_statuses`` while the service reconciles, its ``observed_generation``
lags ``generation``, or its ``terminal_condition`` is not succeeded: ``traffic`` is then only the
request (``google.cloud.run_v2.types.Service`` field docs). The enum values are the protos' numbers,
so this module needs no client library import (cold start).
"""

from __future__ import annotations

from typing import Any, Literal

from controller.core.state import Revision, ServiceRef, ServiceState, TrafficTarget

LATEST = 1  # run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPELATEST
REVISION = 2  # ...TRAFFIC_TARGET_ALLOCATION_TYPEREVISION
SUCCEEDED = 4  # run_v2.Condition.State.CONDITION_SUCCEEDED
FAILED = 3  # run_v2.Condition.State.CONDITION_FAILED


def short_name(name: str) -> str:
    return name.rsplit("/", 1)[-1] if name else ""


def traffic_targets(entries: Any) -> tuple[TrafficTarget, ...]:
    out = []
    for t in entries:
        kind: Literal["latest", "revision"] = (
            "latest" if int(t.type_) == LATEST or (int(t.type_) != REVISION and not t.revision) else "revision"
        )
        out.append(
            TrafficTarget(
                kind=kind,
                revision=t.revision if kind == "revision" else "",
                percent=t.percent,
                tag=t.tag,
            )
        )
    return tuple(out)


def is_ready(conditions: Any) -> bool:
    return any(c.type_ == "Ready" and int(c.state) == SUCCEEDED for c in conditions)


def _period(container: Any, probe: str) -> int:
    # An absent probe is 0; a present one without a period has Cloud Run's default (10 s).
    return int(getattr(container, probe).period_seconds or 10) if probe in container else 0


def revision_from_proto(rev: Any) -> Revision:
    first = rev.containers[0] if rev.containers else None
    return Revision(
        name=short_name(rev.name),
        create_time=rev.create_time,
        ready=is_ready(rev.conditions),
        image=first.image if first is not None else "",
        liveness_period=_period(first, "liveness_probe") if first is not None else 0,
        startup_period=_period(first, "startup_probe") if first is not None else 0,
    )


def settled(svc: Any) -> bool:
    """True when ``traffic`` is what serves: not reconciling, status caught up, last rollout succeeded."""
    terminal = svc.terminal_condition
    failed_or_pending = bool(terminal.type_) and int(terminal.state) != SUCCEEDED
    return not (svc.reconciling or int(svc.observed_generation) != int(svc.generation) or failed_or_pending)


def service_state(ref: ServiceRef, svc: Any, revisions: tuple[Revision, ...]) -> ServiceState:
    serving = svc.traffic if settled(svc) or not svc.traffic_statuses else svc.traffic_statuses
    return ServiceState(
        ref=ref,
        etag=svc.etag,
        generation=int(svc.generation),
        traffic=traffic_targets(serving),
        revisions=revisions,
        annotations=dict(svc.annotations),
        latest_ready_revision=short_name(svc.latest_ready_revision),
        uri=svc.uri,
    )
