"""Slack Block Kit: the one place blocks are built, the buttons, and the payload Slack posts back.

Pure: the block helpers every message uses (``header``, ``section``, ``fields``, ``context``, each
clipped to Slack's limits), building the ``actions`` blocks (Undo / Hold / Release / Promote, with
their values naming the service) and parsing a ``block_actions`` payload into typed models. The HTTP handling, checks
and dispatch live in ``controller.surfaces.slack_actions``; the message texts in
``controller.core.messages`` and ``controller.core.canary_messages``.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Final

from pydantic import ConfigDict, Field, ValidationError

from controller.core.models import Lenient
from controller.core.state import ServiceRef

BLOCK_ID: Final = "rollback_controller_actions"
ACTION_UNDO: Final = "rollback_undo"
ACTION_HOLD: Final = "rollback_hold"
ACTION_RELEASE: Final = "rollback_release"
ACTION_PROMOTE: Final = "canary_promote"
PROMOTE_BLOCK_ID: Final = "rollback_controller_canary"
MAX_VALUE_CHARS: Final = 2000  # Slack's limit on a button value
# Slack's limits are 150 (header), 3000 (section/context text), 2000 (a field) and 10 fields per
# section; the texts are clipped a little below them so an escaped entity is never what breaks one.
HEADER_CHARS: Final = 150
TEXT_CHARS: Final = 2900
FIELD_CHARS: Final = 1900
MAX_FIELDS: Final = 10
MESSAGE_TEXT_CHARS: Final = 3000  # a message's plain ``text`` (what phones and screen readers show)
MAX_BLOCKS: Final = 50  # Slack's limit per message


# --------------------------------------------------------------------------- blocks


def header(text: str) -> dict[str, Any]:
    """A ``header`` block (plain text, emoji on)."""
    return {"type": "header", "text": {"type": "plain_text", "text": text[:HEADER_CHARS], "emoji": True}}


def section(text: str) -> dict[str, Any]:
    """A ``section`` block of mrkdwn ``text`` (already escaped by the caller)."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:TEXT_CHARS]}}


def fields(items: list[str]) -> dict[str, Any]:
    """A ``section`` block of mrkdwn fields (at most ``MAX_FIELDS``, each clipped)."""
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:FIELD_CHARS]} for f in items[:MAX_FIELDS]]}


def context(text: str) -> dict[str, Any]:
    """A ``context`` block of one mrkdwn element."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:TEXT_CHARS]}]}


# --------------------------------------------------------------------------- buttons


def button_value(ref: ServiceRef) -> str:
    value = f"{ref.project}/{ref.region}/{ref.service}"
    if len(value) > MAX_VALUE_CHARS:  # cannot happen with real Cloud Run names; never send a broken button
        raise ValueError(f"service coordinates too long for a Slack button: {len(value)} chars")
    return value


def parse_button_value(value: str) -> ServiceRef:
    """``project/region/service`` → ServiceRef; raises ValueError for anything else."""
    parts = value.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError("button value is not project/region/service")
    project, region, service = parts
    return ServiceRef(project=project, region=region, service=service)


def _button(action_id: str, text: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def action_blocks(
    ref: ServiceRef, *, undo: bool = True, hold: bool = True, release: bool = False
) -> list[dict[str, Any]]:
    """The ``actions`` block with the requested buttons, as a list (empty when no button is wanted)."""
    value = button_value(ref)
    elements: list[dict[str, Any]] = []
    if undo:
        confirmed = _button(ACTION_UNDO, "Undo", value, "danger")
        # A production traffic change deserves a second click.
        confirmed["confirm"] = {
            "title": {"type": "plain_text", "text": "Undo the last action?"},
            "text": {
                "type": "mrkdwn",
                "text": f"Traffic of *{ref.service}* goes back to exactly what it was before the last action.",
            },
            "confirm": {"type": "plain_text", "text": "Undo"},
            "deny": {"type": "plain_text", "text": "Cancel"},
        }
        elements.append(confirmed)
    if hold:
        elements.append(_button(ACTION_HOLD, "Hold", value))
    if release:
        elements.append(_button(ACTION_RELEASE, "Release hold", value, "primary"))
    if not elements:
        return []
    return [{"type": "actions", "block_id": BLOCK_ID, "elements": elements}]


def promote_blocks(ref: ServiceRef, candidate: str) -> list[dict[str, Any]]:
    """The "Promote" button of a canary waiting for approval. Its value names the candidate too
    (``project/region/service/candidate``), so a button on an old message never approves a newer
    revision. Approval only allows the last step; it never delays a rollback."""
    value = f"{button_value(ref)}/{candidate}"
    button = _button(ACTION_PROMOTE, "Promote", value[:MAX_VALUE_CHARS], "primary")
    button["confirm"] = {
        "title": {"type": "plain_text", "text": "Promote to 100%?"},
        "text": {"type": "mrkdwn", "text": f"*{candidate}* gets 100% of *{ref.service}* once its step passes."},
        "confirm": {"type": "plain_text", "text": "Promote"},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }
    return [{"type": "actions", "block_id": PROMOTE_BLOCK_ID, "elements": [button]}]


def parse_promote_value(value: str) -> tuple[ServiceRef, str]:
    """``project/region/service/candidate`` → (ServiceRef, candidate); raises ValueError otherwise."""
    head, _, candidate = value.rpartition("/")
    if not candidate:
        raise ValueError("button value is not project/region/service/candidate")
    return parse_button_value(head), candidate


# --------------------------------------------------------------------------- payload


class _Lenient(Lenient):
    # Slack adds payload fields over time; we read the few we need and ignore the rest (this is
    # Slack's document, not our API, so unknown fields are not an error here). Not strict: the
    # payload arrives form-encoded and JSON-decoded, and was always read with coercion.
    model_config = ConfigDict(strict=False)


class SlackUser(_Lenient):
    id: str = Field(min_length=1, max_length=64)
    username: str = ""
    name: str = ""
    team_id: str = ""


class SlackTeam(_Lenient):
    id: str = ""


class SlackContainer(_Lenient):
    type: str = ""
    message_ts: str = ""
    channel_id: str = ""


class SlackChannel(_Lenient):
    id: str = ""


class SlackAction(_Lenient):
    action_id: str
    block_id: str = ""
    value: str = Field(default="", max_length=MAX_VALUE_CHARS)


class SlackPostedMessage(_Lenient):
    text: str = ""
    blocks: list[dict[str, Any]] = Field(default_factory=list)


class BlockActions(_Lenient):
    type: str
    user: SlackUser
    team: SlackTeam | None = None
    container: SlackContainer = SlackContainer()
    channel: SlackChannel | None = None
    message: SlackPostedMessage | None = None
    response_url: str = ""
    actions: list[SlackAction] = Field(min_length=1)


def parse_payload(body: bytes) -> BlockActions:
    """``payload=<url-encoded JSON>`` → BlockActions; raises ValueError naming what is wrong."""
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("body is not a form (expected payload=<JSON>)") from None
    values = form.get("payload")
    if not values or len(values) != 1:
        raise ValueError("body has no single payload field")
    try:
        return BlockActions.model_validate_json(values[0])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise ValueError(f"payload.{where}: {first['msg']}") from None


def actor_of(user: SlackUser) -> str:
    name = user.name or user.username
    return f"slack:{user.id}" + (f" ({name})" if name else "")
