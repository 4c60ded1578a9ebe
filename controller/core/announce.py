"""Announcing a rollback whose write this delivery never saw confirmed, exactly once.

A rollback is written (traffic and ledger in one UpdateService) *before* Slack is told. Two faults
separate the two: the write commits but its answer is lost (a timeout: the delivery raises so
Pub/Sub redelivers), or the function stops between the write and the post. Either way the
redelivery finds the incident already handled, and without more memory it would stop silently:
traffic moved and nobody was told.

So the rollback's write also records the incident as *unannounced*, with the Pub/Sub message id
of the delivery that wrote it (``Ledger.unannounced``), and the engine removes that entry in a
second write once Slack has the message. A delivery that finds the incident handled *and* still
unannounced by an attempt of its own message (same message id: Pub/Sub redelivers only what was
not acknowledged, i.e. an attempt that failed or died) announces it: the message says what the
ledger recorded and what really serves now (read from the service), the log line says
``announced_late``, and the entry is then removed the same way, so it is said once.

Another message for the same incident (a second notification) never announces: the attempt that
wrote is either still running (and will post) or will come back as its own redelivery. An entry
without a message id (written by a direct call, not a delivery) may be announced by any delivery.
If Slack cannot be told, the entry stays, so a later redelivery of that message tries again.
Removing it after the post (not before) means a crash in between may announce twice, never zero
times.

Pure: no clock, no network.
"""

from __future__ import annotations

from controller.core.alert import Alert
from controller.core.decide import Decision, Reason
from controller.core.ledger import Ledger
from controller.core.state import ServiceState


def _serving(state: ServiceState) -> str:
    shares = state.percent_by_revision()
    return ", ".join(f"{name} {shares[name]}%" for name in state.serving()) or "no revision"


def late_announcement(
    alert: Alert, state: ServiceState, ledger: Ledger, *, message_id: str, policy: str = ""
) -> Decision | None:
    """The message owed for ``alert`` if this delivery must announce it (see module docstring), else None."""
    pending = ledger.pending_announcement(alert.incident_id)
    if pending is None:
        return None
    if pending.message_id and pending.message_id != message_id:
        return None
    handled = ledger.handled(alert.incident_id)
    action = ledger.last_action if ledger.last_action and ledger.last_action.incident_id == alert.incident_id else None
    suspect = action.from_revision if action else ""
    target = handled.to if handled else (action.to_revision if action else "")
    message = (
        f"rolled back {suspect or '?'} → {target or '?'} for incident {alert.incident_id} at {pending.at.isoformat()}; "
        "announced on redelivery: the write was committed but the attempt that made it never saw it confirmed "
        f"(its answer was lost or the function stopped). Serving now: {_serving(state)}"
    )
    return Decision(
        reason=Reason.ROLLED_BACK,
        message=message,
        service=state.ref,
        policy=policy,
        trigger=alert.trigger,
        suspect=suspect,
        target=target,
        traffic_before=action.before if action else (),
        traffic_after=state.traffic,
    )
