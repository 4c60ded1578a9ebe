"""The controller's memory, kept in annotations on the Cloud Run service itself.

No database: what the controller must remember lives next to the traffic it protects, and
is written in the *same* UpdateService call as the traffic change, with the service's etag
as a precondition. So "record that incident X was handled" and "move the traffic" commit
together or not at all, and two instances racing on one incident cannot both win.

Keys (all under ``rollback-controller/``; values are short JSON or plain strings so that
``gcloud run services describe`` stays readable):

==========================  =============================================================
``version``                 ledger format version (``1``)
``last-good``               revision the controller last trusted (rolled back to)
``quarantined``             revisions that must never get traffic again automatically
``incidents``               incidents already acted on (idempotency under redelivery)
``last-action``             what, from which traffic, to what, why, who, when (undo/status)
``actions``                 times of recent automatic actions (cooldown, daily budget)
``hold``                    a human pinned the service: automation keeps its hands off
``canary``                  the canary in progress (``CanaryState``, typed: read once here)
``unannounced``             rollbacks written but not yet told in Slack (announce exactly once)
==========================  =============================================================

Every list is bounded, so the annotations never grow without limit. Reading is tolerant:
a value that does not parse is reported in ``Ledger.problems`` and treated as absent, so a
hand-edited annotation can never stop a rollback (the engine logs the problem).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from controller.core.state import Frozen, TrafficTarget

PREFIX = "rollback-controller/"
VERSION = "1"

MAX_INCIDENTS = 50
MAX_QUARANTINED = 50
MAX_ACTIONS = 50
ACTION_HISTORY = timedelta(days=1)
MAX_TEXT = 160  # reasons and actors are for humans; cap them so one cannot bloat the service

K_VERSION = PREFIX + "version"
K_LAST_GOOD = PREFIX + "last-good"
K_QUARANTINED = PREFIX + "quarantined"
K_INCIDENTS = PREFIX + "incidents"
K_LAST_ACTION = PREFIX + "last-action"
K_ACTIONS = PREFIX + "actions"
K_HOLD = PREFIX + "hold"
K_CANARY = PREFIX + "canary"
K_UNANNOUNCED = PREFIX + "unannounced"

ActionKind = Literal["rollback", "manual-rollback", "undo", "canary-step", "canary-rollback"]


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


class HandledIncident(Frozen):
    id: str
    at: datetime
    to: str = ""


class Quarantine(Frozen):
    revision: str
    at: datetime
    reason: str = ""


class Action(Frozen):
    kind: ActionKind
    at: datetime
    actor: str
    reason: str = ""
    incident_id: str = ""
    from_revision: str = ""
    to_revision: str = ""
    before: tuple[TrafficTarget, ...] = ()


class Hold(Frozen):
    by: str
    at: datetime
    reason: str = ""


class Unannounced(Frozen):
    """A rollback recorded by the write of Pub/Sub message ``message_id`` and not yet announced.

    Written in the same UpdateService as the rollback, removed once Slack was told: a redelivery
    of that message that finds it knows its earlier attempt never saw the write confirmed (answer
    lost, crash before the post), and announces it (``controller.announce``).
    """

    incident_id: str
    message_id: str = ""
    at: datetime


class CanaryState(Frozen):
    """What the ledger remembers about the canary in progress (or just promoted).

    Parsed once, with the rest of the ledger (``read_ledger``): a value that does not parse is
    reported in ``Ledger.problems`` and read as no canary, so the next tick starts afresh.
    """

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


class Ledger(Frozen):
    last_good: str = ""
    quarantined: tuple[Quarantine, ...] = ()
    incidents: tuple[HandledIncident, ...] = ()
    last_action: Action | None = None
    actions: tuple[datetime, ...] = ()
    hold: Hold | None = None
    canary: CanaryState | None = None
    unannounced: tuple[Unannounced, ...] = ()
    problems: tuple[str, ...] = Field(default=(), exclude=True)

    # -- queries ---------------------------------------------------------------------
    def handled(self, incident_id: str) -> HandledIncident | None:
        for item in self.incidents:
            if item.id == incident_id:
                return item
        return None

    def pending_announcement(self, incident_id: str) -> Unannounced | None:
        for item in self.unannounced:
            if item.incident_id == incident_id:
                return item
        return None

    def is_quarantined(self, revision: str) -> bool:
        return any(q.revision == revision for q in self.quarantined)

    def actions_since(self, since: datetime) -> int:
        return sum(1 for at in self.actions if at > since)

    def last_automatic_action(self) -> datetime | None:
        return max(self.actions, default=None)

    # -- updates (pure: each returns a new, bounded ledger) ---------------------------
    def record_action(self, action: Action, *, automatic: bool, now: datetime) -> Ledger:
        actions = (*self.actions, now) if automatic else self.actions
        actions = tuple(at for at in actions if at > now - ACTION_HISTORY)[-MAX_ACTIONS:]
        clipped = action.model_copy(update={"reason": _clip(action.reason), "actor": _clip(action.actor)})
        return self.model_copy(update={"last_action": clipped, "actions": actions})

    def record_incident(self, incident_id: str, *, to: str, now: datetime) -> Ledger:
        kept = tuple(i for i in self.incidents if i.id != incident_id)
        items = (*kept, HandledIncident(id=incident_id, at=now, to=to))[-MAX_INCIDENTS:]
        return self.model_copy(update={"incidents": items})

    def await_announcement(self, incident_id: str, *, message_id: str, now: datetime) -> Ledger:
        kept = tuple(i for i in self.unannounced if i.incident_id != incident_id)
        item = Unannounced(incident_id=incident_id, message_id=message_id, at=now)
        return self.model_copy(update={"unannounced": (*kept, item)[-MAX_INCIDENTS:]})

    def announced(self, incident_id: str) -> Ledger:
        kept = tuple(i for i in self.unannounced if i.incident_id != incident_id)
        return self.model_copy(update={"unannounced": kept})

    def quarantine(self, revision: str, *, reason: str, now: datetime) -> Ledger:
        if not revision or self.is_quarantined(revision):
            return self
        item = Quarantine(revision=revision, at=now, reason=_clip(reason))
        return self.model_copy(update={"quarantined": (*self.quarantined, item)[-MAX_QUARANTINED:]})

    def with_last_good(self, revision: str) -> Ledger:
        return self.model_copy(update={"last_good": revision})


_QUARANTINED = TypeAdapter(tuple[Quarantine, ...])
_INCIDENTS = TypeAdapter(tuple[HandledIncident, ...])
_ACTIONS = TypeAdapter(tuple[datetime, ...])
_CANARY = TypeAdapter(CanaryState)
_UNANNOUNCED = TypeAdapter(tuple[Unannounced, ...])


def _parse(key: str, raw: str, adapter: TypeAdapter[Any], problems: list[str]) -> Any:
    try:
        # Annotations are JSON text; timestamps inside are ISO strings, so parse in JSON mode.
        return adapter.validate_json(raw, strict=False)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        problems.append(f"annotation {key} ignored: {where or 'value'}: {first['msg']}")
        return None


def read_ledger(annotations: Mapping[str, str]) -> Ledger:
    """Build the ledger from a service's annotations (unknown or broken keys never raise)."""
    problems: list[str] = []
    values: dict[str, Any] = {"last_good": annotations.get(K_LAST_GOOD, "")}
    version = annotations.get(K_VERSION, VERSION)
    if version != VERSION:
        problems.append(f"annotation {K_VERSION}={version!r} is not {VERSION!r}; reading it anyway")
    for key, field, adapter in (
        (K_QUARANTINED, "quarantined", _QUARANTINED),
        (K_INCIDENTS, "incidents", _INCIDENTS),
        (K_ACTIONS, "actions", _ACTIONS),
        (K_LAST_ACTION, "last_action", TypeAdapter(Action)),
        (K_HOLD, "hold", TypeAdapter(Hold)),
        (K_CANARY, "canary", _CANARY),
        (K_UNANNOUNCED, "unannounced", _UNANNOUNCED),
    ):
        raw = annotations.get(key)
        if raw:
            parsed = _parse(key, raw, adapter, problems)
            if parsed is not None:
                values[field] = parsed
    return Ledger(**values, problems=tuple(problems))


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def write_ledger(ledger: Ledger, annotations: Mapping[str, str]) -> dict[str, str]:
    """The service's annotations with the ledger written in; other keys are kept untouched."""
    out = {k: v for k, v in annotations.items() if not k.startswith(PREFIX)}
    data = ledger.model_dump(mode="json")
    entries = {
        K_VERSION: VERSION,
        K_LAST_GOOD: ledger.last_good,
        K_QUARANTINED: _dump(data["quarantined"]) if ledger.quarantined else "",
        K_INCIDENTS: _dump(data["incidents"]) if ledger.incidents else "",
        K_LAST_ACTION: _dump(data["last_action"]) if ledger.last_action else "",
        K_ACTIONS: _dump(data["actions"]) if ledger.actions else "",
        K_HOLD: _dump(data["hold"]) if ledger.hold else "",
        K_CANARY: _dump(data["canary"]) if ledger.canary is not None else "",
        K_UNANNOUNCED: _dump(data["unannounced"]) if ledger.unannounced else "",
    }
    out.update({k: v for k, v in entries.items() if v})
    return out
