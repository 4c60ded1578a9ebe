"""Transport envelope → payload bytes: stage 1 of the alert path's parsing, and the delivery's metadata.

A Monitoring alert reaches the controller as a Pub/Sub message whose ``data`` is the base64 of
the incident JSON. Eventarc wraps that message in a CloudEvent (binary or structured mode);
functions-framework also turns a raw Pub/Sub push body (the Pub/Sub emulator) and a 1st-gen
background event into the same CloudEvent shape. In every case the function receives
``cloud_event.data == {"message": {...}, "subscription": ...}`` with ``message.data`` still base64.

This module validates that envelope (``MessagePublishedData`` / ``PubsubMessage``, base64 decoded
in a ``mode="before"`` validator) and hands ``message.data`` to stage 2,
:func:`controller.core.incident.parse_notification`. The Pub/Sub envelope ignores unknown keys:
Google has added fields to it before (``orderingKey``, ``deliveryAttempt``), and an envelope field
we do not read must never stop a rollback. The fields we do read are typed strictly.
``message.data`` over 256 KiB (decoded) is refused: real notifications are a few KB.

Pure: no clock, no network, no Google client libraries.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import AliasChoices, Field, field_validator
from pydantic_core import PydanticCustomError

from controller.core.errors import MalformedInput
from controller.core.incident import Labels, Notification, Text, parse_notification
from controller.core.models import Lenient
from controller.core.parsing import clip, loads, type_name, validate
from controller.core.state import Frozen

MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
"""The only CloudEvent type the alert function accepts (Eventarc's Pub/Sub event)."""

MAX_MESSAGE_BYTES = 256 * 1024
"""Largest decoded ``message.data`` accepted. Monitoring notifications are a few KB."""

# Base64 of MAX_MESSAGE_BYTES, plus slack for padding/whitespace: longer strings are refused
# before decoding so an oversized message costs no memory.
_MAX_ENCODED_CHARS = (MAX_MESSAGE_BYTES + 2) // 3 * 4 + 16
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


# --------------------------------------------------------------------------- stage 1: envelope


class _Envelope(Lenient):
    # Strict types for what we read; unknown keys ignored (see module docstring).
    # validate_by_name lets tests and callers build models with the Python field names.
    pass


class PubsubMessage(_Envelope):
    """``google.pubsub.v1.PubsubMessage`` as JSON; ``data`` is decoded from base64 to bytes.

    Both spellings of the id and time are accepted: Eventarc and the emulator send
    ``messageId`` *and* ``message_id``; the framework's conversion keeps only ``messageId``.
    """

    data: bytes
    attributes: Labels = Field(default_factory=dict)
    message_id: Text = Field(default="", validation_alias=AliasChoices("messageId", "message_id"))
    publish_time: str | None = Field(default=None, validation_alias=AliasChoices("publishTime", "publish_time"))
    ordering_key: Text = Field(default="", validation_alias=AliasChoices("orderingKey", "ordering_key"))
    type_url: str | None = Field(default=None, validation_alias="@type")

    @field_validator("data", mode="before")
    @classmethod
    def _decode_base64(cls, value: object) -> bytes:
        if not isinstance(value, str):
            raise PydanticCustomError("string_type", "Input should be a base64 string")
        if len(value) > _MAX_ENCODED_CHARS:
            raise PydanticCustomError(
                "too_long",
                "Input is over the {limit}-byte limit (Monitoring notifications are a few KB)",
                {"limit": MAX_MESSAGE_BYTES},
            )
        # proto3 JSON accepts the URL-safe alphabet and missing padding on input; so do we.
        text = value.strip().translate(_URLSAFE_TO_STANDARD)
        text += "=" * (-len(text) % 4)
        try:
            decoded = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PydanticCustomError(
                "base64_invalid", "Input should be valid base64 ({reason})", {"reason": str(exc)}
            ) from exc
        if len(decoded) > MAX_MESSAGE_BYTES:
            raise PydanticCustomError(
                "too_long",
                "Decoded data is {size} bytes, over the {limit}-byte limit",
                {"size": len(decoded), "limit": MAX_MESSAGE_BYTES},
            )
        return decoded


class MessagePublishedData(_Envelope):
    """``cloud_event.data`` of a ``messagePublished`` event: ``{"message", "subscription"}``.

    ``subscription`` is absent when functions-framework converted a raw push or legacy event.
    """

    message: PubsubMessage
    subscription: str | None = None
    delivery_attempt: int | None = Field(
        default=None, validation_alias=AliasChoices("deliveryAttempt", "delivery_attempt")
    )


# --------------------------------------------------------------------------- delivery metadata


class DeliveryInfo(Frozen):
    """Who delivered the notification: for logs, and to tell redeliveries apart."""

    event_id: str
    event_type: str
    source: str
    time: str | None = None
    message_id: str = ""
    subscription: str | None = None
    # Pub/Sub's first publish time (kept across redeliveries) and its delivery counter (sent only
    # when the subscription has a dead-letter policy): how old and how often retried a delivery is.
    publish_time: str | None = None
    delivery_attempt: int | None = None


class CloudEventLike(Protocol):
    """What we use of ``cloudevents.http.CloudEvent`` (as functions-framework hands it over)."""

    @property
    def data(self) -> Any: ...

    def get(self, key: str, default: Any = None) -> Any: ...


# --------------------------------------------------------------------------- public API


def parse_envelope(data: object) -> MessagePublishedData:
    """``cloud_event.data`` → validated envelope with ``message.data`` decoded. Stage 1 only."""
    if not isinstance(data, Mapping):
        raise MalformedInput(f"data: is {type_name(data)}, expected an object with 'message' (a Pub/Sub message)")
    return validate(MessagePublishedData, dict(data), "data")


def _event_data(event: CloudEventLike) -> Any:
    data = event.data
    if data is None:
        raise MalformedInput("data: missing, the event carries no Pub/Sub message")
    # The framework keeps bytes/str when its own JSON parse failed; try once more (it may be
    # a BOM or odd whitespace) so the error names what is actually wrong.
    if isinstance(data, bytes | bytearray | str):
        return loads(data, "data")
    return data


def _attr_text(event: CloudEventLike, name: str) -> str | None:
    value = event.get(name)
    return None if value is None else str(value)


def delivery_info(event: CloudEventLike) -> DeliveryInfo:
    """Best-effort delivery metadata of any event; never raises for odd data.

    For logging a delivery that ``parse_cloud_event`` refused: which event, which message.
    """
    data = event.data
    message = data.get("message") if isinstance(data, Mapping) else None
    message = message if isinstance(message, Mapping) else {}
    message_id = message.get("messageId", message.get("message_id", ""))
    subscription = data.get("subscription") if isinstance(data, Mapping) else None
    return DeliveryInfo(
        event_id=_attr_text(event, "id") or "",
        event_type=_attr_text(event, "type") or "",
        source=_attr_text(event, "source") or "",
        time=_attr_text(event, "time"),
        message_id=message_id if isinstance(message_id, str) else "",
        subscription=subscription if isinstance(subscription, str) else None,
    )


def parse_cloud_event(event: CloudEventLike) -> tuple[Notification, DeliveryInfo]:
    """The CloudEvent functions-framework passes to the alert function → incident + delivery.

    Accepts only ``google.cloud.pubsub.topic.v1.messagePublished`` (Eventarc, raw push and
    legacy events all arrive as that type). Raises ``MalformedInput`` naming the field at fault.
    """
    event_type = _attr_text(event, "type") or ""
    if event_type != MESSAGE_PUBLISHED:
        raise MalformedInput(f"type: {clip(event_type, 100)!r} is not a Pub/Sub event, expected {MESSAGE_PUBLISHED!r}")
    envelope = parse_envelope(_event_data(event))
    notification = parse_notification(envelope.message.data)
    info = DeliveryInfo(
        event_id=_attr_text(event, "id") or "",
        event_type=event_type,
        source=_attr_text(event, "source") or "",
        time=_attr_text(event, "time"),
        message_id=envelope.message.message_id,
        subscription=envelope.subscription,
        publish_time=envelope.message.publish_time,
        delivery_attempt=envelope.delivery_attempt,
    )
    return notification, info
