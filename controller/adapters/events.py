"""Decision events: with ``ROLLBACK_EVENTS_TOPIC`` set, every decision is also published to Pub/Sub as
a versioned JSON event (schema: docs/events.md), for audit trails and BigQuery subscriptions.

The source of an event is the decision's own log line. The alert path, manual control, canary
ticks and the command worker each write exactly one structured line per decision (loggers
``controller.alert``, ``controller.manual``, ``controller.canary``, ``controller.commands``); a
logging handler turns that line into an event. So the log and the events can never disagree, and
no orchestration code had to learn about Pub/Sub.

Publishing never blocks or undoes an action: the event goes to the client library's background
batcher (:meth:`Publisher.publish_nowait`); a failure is logged (``controller.events``) and
nothing else. The entry points wait at most :data:`FLUSH_TIMEOUT` at the end of a delivery for
pending events, because Cloud Functions may stop the CPU once the function has returned.

Which lines are events: every alert delivery (acted, refused by a guard, rejected as malformed,
failed), every manual action (done, unchanged, refused, failed), canary ticks that decided
something (started, stepped, promoted, rolled back, awaited approval, timed out, failed — not the
"nothing to do" and "step still running" ticks, which would be one event per service per
minute), and commands dropped without acting (malformed, expired, failed).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from controller.adapters.pubsub import Publisher

VERSION = 1
FLUSH_TIMEOUT = 1.0  # seconds an entry point waits for pending events after a delivery
SOURCES = {
    "controller.alert": "alert",
    "controller.manual": "manual",
    "controller.canary": "canary",
    "controller.commands": "command",
}
_QUIET_CANARY_STEPS = {"none", "wait"}
_COMMAND_DROPS = {"malformed", "expired", "failed"}

log = logging.getLogger("controller.events")


def _revisions(**names: Any) -> dict[str, str]:
    return {k: str(v) for k, v in names.items() if v}


def event_from_fields(
    source: str, fields: dict[str, Any], *, message: str, severity: str, at: datetime
) -> dict[str, Any] | None:
    """The event for one decision log line, or None when the line is not a decision worth an event."""
    event: dict[str, Any] = {
        "v": VERSION,
        "id": uuid.uuid4().hex,
        "time": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "source": source,
        "what": "",
        "outcome": "",
        "severity": severity,
        "why": message,
        "service": None,
        "revisions": {},
        "traffic_before": [],
        "traffic_after": [],
        "evidence": None,
        "actor": "rollback-controller",
        "incident_id": "",
        # Manual lines carry the ledger's spelling (cmd:<id>); events use the command's own id.
        "command_id": str(fields.get("command_id", "")).removeprefix("cmd:"),
    }
    fill = _FILL.get(source)
    if fill is None or not fill(event, fields):
        return None
    if fields.get("error"):
        event["error"] = str(fields["error"])
    return event


def _alert(event: dict[str, Any], fields: dict[str, Any]) -> bool:
    decision = fields.get("decision") or {}
    event["incident_id"] = str((fields.get("incident") or {}).get("id") or "")
    if not decision:
        malformed = (fields.get("labels") or {}).get("reason") == "malformed"
        event["what"] = "rejected" if malformed else "failed"
        event["outcome"] = "failed"
        return True
    reason = str(decision.get("reason", ""))
    event["what"] = reason
    event["outcome"] = "acted" if reason == "rolled-back" else "no-change"
    event["service"] = decision.get("service")
    event["revisions"] = _revisions(suspect=decision.get("suspect"), target=decision.get("target"))
    event["traffic_before"] = decision.get("traffic_before") or []
    event["traffic_after"] = decision.get("traffic_after") or []
    event["evidence"] = decision.get("verification")
    event["confirmed"] = bool(fields.get("confirmed", True))
    return True


def _manual(event: dict[str, Any], fields: dict[str, Any]) -> bool:
    event["what"] = f"manual-{fields.get('action', '')}"
    event["actor"] = str(fields.get("actor", ""))
    event["service"] = fields.get("service")
    event["revisions"] = _revisions(**{"from": fields.get("from_revision"), "to": fields.get("to_revision")})
    if fields.get("refused"):
        event["outcome"] = "refused"
        event["refusal"] = str(fields["refused"])
        event["traffic_before"] = fields.get("traffic") or []
    elif fields.get("error"):
        event["outcome"] = "failed"
    else:
        event["outcome"] = "acted" if fields.get("changed") else "no-change"
        event["dry_run"] = bool(fields.get("dry_run", False))
        event["traffic_before"] = fields.get("traffic_before") or []
        event["traffic_after"] = fields.get("traffic_after") or []
    return True


def _canary(event: dict[str, Any], fields: dict[str, Any]) -> bool:
    step = str(fields.get("step", ""))
    if step in _QUIET_CANARY_STEPS and not fields.get("changed") and not fields.get("error"):
        return False
    event["what"] = f"canary-{step}"
    event["outcome"] = "failed" if fields.get("error") else ("acted" if fields.get("changed") else "no-change")
    event["service"] = fields.get("service")
    event["revisions"] = _revisions(candidate=fields.get("candidate"), stable=fields.get("stable"))
    event["traffic_after"] = fields.get("traffic") or []
    event["evidence"] = fields.get("comparison")
    event["percent"] = fields.get("percent", 0)
    return True


def _command(event: dict[str, Any], fields: dict[str, Any]) -> bool:
    outcome = str(fields.get("outcome", ""))
    if outcome not in _COMMAND_DROPS:
        return False
    event["what"] = f"command-{outcome}"
    event["outcome"] = "failed" if outcome == "failed" else "refused"
    event["service"] = fields.get("service")
    event["actor"] = str(fields.get("actor", "")) or event["actor"]
    return True


_FILL: dict[str, Callable[[dict[str, Any], dict[str, Any]], bool]] = {
    "alert": _alert,
    "manual": _manual,
    "canary": _canary,
    "command": _command,
}


class EventHandler(logging.Handler):
    """Publishes an event for each decision log line of the ``controller`` loggers."""

    _decision_events = True

    def __init__(self, topic: str, publisher: Publisher) -> None:
        super().__init__(level=logging.INFO)
        self.topic = topic
        self.publisher = publisher

    def emit(self, record: logging.LogRecord) -> None:
        source = SOURCES.get(record.name)
        fields = getattr(record, "fields", None)
        if source is None or not isinstance(fields, dict):
            return
        try:
            labels = getattr(record, "labels", None)
            merged = {**fields, "labels": labels} if isinstance(labels, dict) else fields
            event = event_from_fields(
                source,
                merged,
                message=record.getMessage(),
                severity=record.levelname,
                at=datetime.fromtimestamp(record.created, UTC),
            )
            if event is None:
                return
            data = json.dumps(event, default=str, ensure_ascii=False).encode("utf-8", errors="replace")
        except Exception:  # an event must never break the decision's own log line
            log.exception("decision event could not be built; the decision stands")
            return
        self.publisher.publish_nowait(self.topic, data, self._failed)

    def _failed(self, exc: Exception) -> None:
        log.error(
            "decision event not published; the decision stands",
            extra={
                "fields": {"event": "events", "error": f"{type(exc).__name__}: {str(exc)[:200]}", "topic": self.topic}
            },
        )


_lock = threading.Lock()
_installed: EventHandler | None = None


def install(topic: str | None, publisher: Publisher | None = None) -> EventHandler | None:
    """Publish decision events to ``topic`` (idempotent; None = not configured, nothing happens)."""
    global _installed
    if not topic:
        return None
    with _lock:
        if _installed is not None and _installed.topic == topic:
            return _installed
        if publisher is None:
            from controller.adapters.pubsub import shared_publisher

            # The client is built by the first event, i.e. after the first decision was carried out:
            # the cold start of the first alert does not pay for it.
            publisher = shared_publisher()
        logger = logging.getLogger("controller")
        if _installed is not None:
            logger.removeHandler(_installed)
        _installed = EventHandler(topic, publisher)
        logger.addHandler(_installed)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        return _installed


def uninstall() -> None:
    global _installed
    with _lock:
        if _installed is not None:
            logging.getLogger("controller").removeHandler(_installed)
            _installed = None


def flush(timeout: float = FLUSH_TIMEOUT) -> None:
    """Wait (bounded) for events still being published; called by the entry points after a delivery."""
    handler = _installed
    if handler is not None:
        handler.publisher.flush(timeout)
