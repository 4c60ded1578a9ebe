"""Commands: the small versioned JSON documents ``handle_http`` publishes to ``ROLLBACK_COMMANDS_TOPIC``
and ``handle_command`` executes (schema in docs/manual-control.md, "Commands").

Why a queue: Slack wants the answer to a button press within 3 s, a Cloud Function may do no
work after answering, and a fleet-wide canary tick does not fit in one request. So the HTTP
function validates, publishes and answers; the worker acts later, with the alert path's
delivery semantics (acknowledge bad input, raise temporary failures, never act twice).

::

    {"v": 1, "id": "5f0c…", "kind": "slack-action", "service": {"project", "region", "service"},
     "actor": "slack:U0123 (maria)", "requested_at": "2024-06-01T12:00:00Z",
     "action": "undo", "slack": {<the block_actions payload: user, container, message, response_url, actions>}}
    {"v": 1, "id": "…", "kind": "canary-tick", "service": {…}, "actor": "…", "requested_at": "…"}
    {"v": 1, "id": "…", "kind": "slack-message", "actor": "rollback-controller", "requested_at": "…",
     "message": {"channel", "text", "blocks", "thread_ts"}}

* ``id`` is unique per command; a ``slack-action`` that changes the service records
  ``cmd:<id>`` in the service's ledger (the ``incidents`` list) in the same etag-checked write
  as its effect, so a redelivered command finds it and does nothing. A ``canary-tick`` needs no
  id in the ledger: a tick is idempotent by itself (a step lasts ``step_for`` from the traffic
  change that started it, read from the ledger under the etag).
* ``requested_at`` is when a human (or the scheduler) asked; a command older than
  :data:`MAX_AGE` for its kind is dropped with a notice, because acting on a ten-minute-old
  button press surprises whoever pressed it. ``slack-message`` keeps the time the message was
  first meant to be sent, and the worker says so in the message.
* Unknown versions, kinds or fields are malformed: acknowledged and logged, never retried.

Pure: no clock (``now`` is an argument), no network.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from controller.core.errors import MalformedInput
from controller.core.state import Frozen, ServiceRef

VERSION = 1
LEDGER_PREFIX = "cmd:"  # command ids share the ledger's bounded "incidents" list

MAX_AGE: dict[str, timedelta] = {
    "slack-action": timedelta(minutes=10),
    "canary-tick": timedelta(minutes=10),
    "slack-message": timedelta(hours=24),
}
MAX_COMMAND_BYTES = 256 * 1024

SlackActionName = Literal["undo", "hold", "release", "promote"]


class _Command(Frozen):
    v: Literal[1]
    id: str = Field(min_length=1, max_length=128)
    actor: str = Field(max_length=200)
    requested_at: datetime

    @property
    def ledger_id(self) -> str:
        return f"{LEDGER_PREFIX}{self.id}"


class SlackActionCommand(_Command):
    """A Slack button press, validated and authorised by ``/slack/actions``, to perform."""

    kind: Literal["slack-action"]
    service: ServiceRef
    action: SlackActionName
    candidate: str = Field(default="", max_length=63)  # "promote": the revision the button named
    slack: dict[str, Any]  # the block_actions payload (re-validated by slack_actions)


class CanaryTickCommand(_Command):
    """One service of a fleet-wide ``POST /canary/tick``."""

    kind: Literal["canary-tick"]
    service: ServiceRef


class QueuedMessage(Frozen):
    channel: str = Field(default="", max_length=200)
    text: str = Field(max_length=40_000)
    blocks: tuple[dict[str, Any], ...] = ()
    thread_ts: str = Field(default="", max_length=64)


class SlackMessageCommand(_Command):
    """A Slack message that could not be delivered within its delivery's deadline (handed over)."""

    kind: Literal["slack-message"]
    message: QueuedMessage
    service: ServiceRef | None = None


Command = Annotated[SlackActionCommand | CanaryTickCommand | SlackMessageCommand, Field(discriminator="kind")]
_COMMAND: TypeAdapter[Command] = TypeAdapter(Command)


def encode(command: SlackActionCommand | CanaryTickCommand | SlackMessageCommand) -> bytes:
    return command.model_dump_json().encode()


def decode(data: bytes) -> SlackActionCommand | CanaryTickCommand | SlackMessageCommand:
    """Pub/Sub ``message.data`` (already base64-decoded) → a command; MalformedInput naming the field."""
    if len(data) > MAX_COMMAND_BYTES:
        raise MalformedInput(f"command: {len(data)} bytes, more than {MAX_COMMAND_BYTES}")
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise MalformedInput(f"command: not JSON: {str(exc)[:200]}") from None
    if isinstance(raw, dict) and raw.get("v") != VERSION:
        raise MalformedInput(f"command.v: {str(raw.get('v'))[:20]!r} is not a known version (expected {VERSION})")
    try:
        return _COMMAND.validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "command"
        raise MalformedInput(f"command.{where[:120]}: {first['msg'][:200]}") from None


def expired(command: _Command, now: datetime) -> timedelta | None:
    """How far past its kind's maximum age the command is, or None if it may still run."""
    kind = getattr(command, "kind", "")
    late = now - command.requested_at - MAX_AGE[kind]
    return late if late > timedelta(0) else None
