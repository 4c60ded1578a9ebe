"""What a manual action answers: its result, the service's status, and their JSON. Pure.

:class:`ActionResult` is one action's outcome and :class:`StatusReport` a service's traffic,
revisions and ledger (:func:`status_report`). :func:`result_json`, :func:`status_json` and
:func:`traffic_json` are the bodies the HTTP API answers and ``--json`` prints, traffic in Cloud
Run's words (type LATEST/REVISION, revision, percent, tag).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from controller.core.ledger import Action, Hold, Ledger, Quarantine
from controller.core.manual_plans import ActionName
from controller.core.state import Frozen, ServiceRef, ServiceState, TrafficTarget


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
