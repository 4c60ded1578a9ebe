"""The fleet view: ``rollback-controller status --region R`` with no service.

One row per Cloud Run service in a region: who serves the traffic, the controller's last action
(what, who, when), the canary in progress, the hold and the quarantined revisions, read from each
service's ledger annotation. One unreadable service is reported on its row; the others still show.
"""

from __future__ import annotations

from typing import Any

from controller.adapters.cloudrun import CloudRunApi
from controller.core.errors import ControllerError
from controller.core.ledger import Action, Hold, read_ledger
from controller.core.state import Frozen, ServiceRef, TrafficTarget
from controller.core.wording import action_name, human_time


class FleetCanary(Frozen):
    candidate: str
    stable: str
    step: int  # index into the policy's steps
    percent: int  # the share the candidate really serves now
    promoted: bool


class FleetRow(Frozen):
    service: ServiceRef
    traffic: tuple[TrafficTarget, ...] = ()
    last_action: Action | None = None
    canary: FleetCanary | None = None
    hold: Hold | None = None
    quarantined: tuple[str, ...] = ()
    error: str = ""


def fleet_status(run: CloudRunApi, project: str, region: str) -> list[FleetRow]:
    """Every service in ``project``/``region``, sorted by name (listing errors raise)."""
    rows: list[FleetRow] = []
    for ref in run.list_services(project, region):
        try:
            state = run.read(ref)
        except ControllerError as exc:
            rows.append(FleetRow(service=ref, error=str(exc)))
            continue
        ledger = read_ledger(state.annotations)
        canary = ledger.canary
        rows.append(
            FleetRow(
                service=ref,
                traffic=state.traffic,
                last_action=ledger.last_action,
                canary=None
                if canary is None
                else FleetCanary(
                    candidate=canary.candidate,
                    stable=canary.stable,
                    step=canary.step,
                    percent=state.percent_by_revision().get(canary.candidate, 0),
                    promoted=canary.promoted_at is not None,
                ),
                hold=ledger.hold,
                quarantined=tuple(q.revision for q in ledger.quarantined),
            )
        )
    return rows


def fleet_json(rows: list[FleetRow]) -> dict[str, Any]:
    """``{"services": [...], "count": N}``; traffic in the API's form, as ``GET /status`` answers it."""
    from controller.core.manual_results import traffic_json

    services = []
    for row in rows:
        data = row.model_dump(mode="json")
        data["traffic"] = traffic_json(row.traffic)
        if row.last_action is not None:
            data["last_action"]["before"] = traffic_json(row.last_action.before)
        services.append(data)
    return {"services": services, "count": len(services)}


def _traffic(traffic: tuple[TrafficTarget, ...]) -> str:
    parts = [f"{t.revision if t.kind == 'revision' else 'LATEST'} {t.percent}%" for t in traffic if t.percent]
    return ", ".join(parts) or "-"


def format_fleet(rows: list[FleetRow], project: str, region: str) -> str:
    """A table a person reads at 3 a.m.: one service per line, details indented under it."""
    if not rows:
        return f"no services in {project}/{region}"
    lines = [f"Services in {project}/{region}:"]
    for row in rows:
        lines.append(f"  {row.service.service}: {_traffic(row.traffic) if not row.error else 'ERROR ' + row.error}")
        last = row.last_action
        if last is not None:
            moved = f" {last.from_revision or '?'} → {last.to_revision or '?'}" if last.to_revision else ""
            lines.append(f"    last action: {action_name(last.kind)}{moved} by {last.actor} at {human_time(last.at)}")
        if row.canary is not None:
            c = row.canary
            where = "promoted" if c.promoted else f"step {c.step + 1}, serving {c.percent}%"
            lines.append(f"    canary:      {c.candidate} vs {c.stable} ({where})")
        if row.hold is not None:
            why = f" ({row.hold.reason})" if row.hold.reason else ""
            lines.append(f"    on hold:     since {human_time(row.hold.at)} by {row.hold.by}{why}")
        if row.quarantined:
            lines.append(f"    quarantined: {', '.join(row.quarantined)}")
    return "\n".join(lines)
