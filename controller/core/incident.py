"""Cloud Monitoring incident models: stage 2 of the alert path's parsing (the payload).

A Monitoring alert reaches the controller as a Pub/Sub message whose ``data`` is the base64 of
the incident JSON (``{"incident": {...}, "version": "1.2"}``). Eventarc wraps that message in a
CloudEvent (binary or structured mode); functions-framework also turns a raw Pub/Sub push body
(the Pub/Sub emulator) and a 1st-gen background event into the same CloudEvent shape. In every
case the function receives ``cloud_event.data == {"message": {...}, "subscription": ...}`` with
``message.data`` still base64.

Parsing has two stages, as AWS Powertools' parser does it: first the envelope
(``MessagePublishedData`` / ``PubsubMessage`` in :mod:`controller.core.envelope`, base64 decoded in
a ``mode="before"`` validator), then the payload (``Notification`` / ``Incident``, here). Every
failure becomes ``MalformedInput`` whose message names the offending field
(``incident.started_at: Input should be a valid number``) and is bounded in length
(:mod:`controller.core.parsing`), so the caller can log it, acknowledge the message and move on.

Tolerance, decided once here (see also ``docs`` in each model):

* The incident format grows (schema 1.1 → 1.2 → ``severity`` …), so the incident models ignore
  unknown keys, and every field the controller does not need to act may be missing or ``null``.
  What it cannot act without is required: ``incident_id``, ``state`` and ``started_at``.
* The console's "Send test notification" payload parses (``state: "OPEN"``, zero timestamps, a
  string ``documentation``); ``controller.alert`` marks it as a test.
* The envelope's tolerance is written down in :mod:`controller.core.envelope`.

Pure: no clock, no network, no Google client libraries.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, field_validator
from pydantic_core import PydanticCustomError

from controller.core.errors import MalformedInput
from controller.core.models import Lenient
from controller.core.parsing import loads, type_name, validate

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- value coercions
#
# Each raises PydanticCustomError so the error text reads like pydantic's own
# ("Input should be a valid number") and carries the field path.


def _is_number(value: object) -> bool:
    # bool is an int subclass, but true/false is never a timestamp or a measurement.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _epoch_seconds(value: object) -> datetime:
    """JSON number of seconds since the epoch → tz-aware UTC datetime."""
    if isinstance(value, datetime):  # already converted (model_validate on a model's dump)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    try:
        # Adding a timedelta (instead of datetime.fromtimestamp) behaves the same on every
        # platform and raises OverflowError, not OSError, for absurd values.
        return _EPOCH + timedelta(seconds=value)
    except (OverflowError, ValueError) as exc:  # NaN, ±inf, beyond year 9999
        raise PydanticCustomError(
            "timestamp_out_of_range", "Input should be epoch seconds within years 1-9999"
        ) from exc


def _optional_epoch_seconds(value: object) -> datetime | None:
    # ended_at is null while the incident is open; the console test sends 0 — both mean "unset"
    # (0 is also the protobuf default for an unset timestamp).
    if value is None or (_is_number(value) and value == 0):
        return None
    return _epoch_seconds(value)


def _text(value: object) -> object:
    """Optional text: JSON null → "" (anything else is left for strict ``str`` validation)."""
    return "" if value is None else value


def _number_text(value: object) -> object:
    """A value documented as a string holding a number ("0.183"): also accept a bare number."""
    if value is None:
        return ""
    if _is_number(value):
        return str(value)
    return value


def _labels(value: object) -> object:
    """A label map: null → {}, scalar values → their text (false → "false"), null values dropped.

    Monitoring sends label values as strings; a BOOL or INT64 label arriving as a JSON scalar
    must not make the whole notification unreadable.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        return value  # strict dict validation reports it
    out: dict[object, object] = {}
    for key, item in value.items():
        if item is None:
            continue
        if isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif _is_number(item):
            out[key] = str(item)
        else:
            out[key] = item
    return out


def _dict_or_empty(value: object) -> object:
    return {} if value is None else value


def _finite_float(value: object) -> float | None:
    """ "0.183" / 0.183 → 0.183; "", "n/a", NaN, ±inf, bool → None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    elif isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            return None
    else:
        return None
    return number if math.isfinite(number) else None


_DURATION = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,9})?)s\s*$")


def parse_duration(value: object) -> timedelta | None:
    """Protobuf JSON Duration ("300s", "1.5s") → timedelta; anything else → None."""
    if not isinstance(value, str):
        return None
    match = _DURATION.match(value)
    if match is None:
        return None
    return timedelta(seconds=float(match.group(1)))


Text = Annotated[str, BeforeValidator(_text)]
NumberText = Annotated[str, BeforeValidator(_number_text)]
Labels = Annotated[dict[str, str], BeforeValidator(_labels)]


# --------------------------------------------------------------------------- stage 2: payload


class _Open(Lenient):
    # Monitoring's notification format grows over time (1.1 → 1.2 added a dozen fields, then
    # severity): unknown keys are ignored rather than refused, or a harmless Google-side
    # addition would stop every rollback. Known keys are typed strictly.
    pass


class Resource(_Open):
    """Monitored resource *after aggregation*: only labels kept by ``groupByFields`` survive."""

    type: Text = ""
    labels: Labels = Field(default_factory=dict)


class Metric(_Open):
    type: Text = ""
    display_name: Text = Field(default="", validation_alias=AliasChoices("displayName", "display_name"))
    labels: Labels = Field(default_factory=dict)


class Metadata(_Open):
    # system_labels is a protobuf Struct (any JSON value); user_labels is a string map.
    system_labels: Annotated[dict[str, Any], BeforeValidator(_dict_or_empty)] = Field(default_factory=dict)
    user_labels: Labels = Field(default_factory=dict)


class Documentation(_Open):
    content: Text = ""
    mime_type: Text = ""
    subject: Text = ""


def _documentation(value: object) -> object:
    # The console test notification sends documentation as a plain string; normalise it to the
    # object form so callers have one shape to read.
    if isinstance(value, str):
        return {"content": value}
    return value


class Incident(_Open):
    """One Monitoring incident (schema 1.2; 1.1 and the console test notification tolerated).

    Required: ``incident_id``, ``state``, ``started_at``. Everything else defaults to empty.
    ``state`` is lower-cased; ``started_at``/``ended_at`` (epoch seconds) become UTC datetimes,
    ``ended_at`` 0 or null → None. ``severity`` is deliberately not modelled: its value format is
    undocumented and nothing here depends on it.
    """

    incident_id: str = Field(min_length=1)
    state: Literal["open", "closed"]
    started_at: Annotated[datetime, BeforeValidator(_epoch_seconds)]
    ended_at: Annotated[datetime | None, BeforeValidator(_optional_epoch_seconds)] = None
    scoping_project_id: str | None = None
    scoping_project_number: int | None = None
    url: Text = ""
    summary: Text = ""
    observed_value: NumberText = ""
    threshold_value: NumberText = ""
    resource: Resource = Field(default_factory=Resource)
    resource_type_display_name: Text = ""
    resource_id: Text = ""
    resource_display_name: Text = ""
    resource_name: Text = ""
    apigee_url: Text = ""
    metric: Metric = Field(default_factory=Metric)
    metadata: Metadata = Field(default_factory=Metadata)
    policy_name: Text = ""
    policy_user_labels: Labels = Field(default_factory=dict)
    documentation: Annotated[Documentation | None, BeforeValidator(_documentation)] = None
    condition: Annotated[dict[str, Any], BeforeValidator(_dict_or_empty)] = Field(default_factory=dict)
    condition_name: Text = ""

    @field_validator("state", mode="before")
    @classmethod
    def _lower_state(cls, value: object) -> object:
        # Real notifications say "open"/"closed"; the console test says "OPEN".
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("resource", "metric", "metadata", mode="before")
    @classmethod
    def _null_object(cls, value: object) -> object:
        return {} if value is None else value

    @property
    def observed_float(self) -> float | None:
        """``observed_value`` as a number; None when empty or not a finite number."""
        return _finite_float(self.observed_value)

    @property
    def threshold_float(self) -> float | None:
        """``threshold_value`` as a number, else the condition's ``thresholdValue`` (schema 1.1)."""
        value = _finite_float(self.threshold_value)
        return value if value is not None else self.condition_threshold_value

    @property
    def condition_spec(self) -> Mapping[str, Any]:
        """The condition's typed body (``conditionThreshold``, ``conditionAbsent``, …), or {}."""
        # An AlertPolicy.Condition holds exactly one "condition<Kind>" member (a proto oneof),
        # next to "name" and "displayName"; new kinds keep that naming.
        for key, value in self.condition.items():
            if key.startswith("condition") and isinstance(value, dict):
                return value
        return {}

    @property
    def condition_duration(self) -> timedelta | None:
        """How long the condition had to hold (``duration`` "300s"), or None if unknown."""
        return parse_duration(self.condition_spec.get("duration"))

    @property
    def condition_threshold_value(self) -> float | None:
        return _finite_float(self.condition_spec.get("thresholdValue"))

    @property
    def condition_filter(self) -> str:
        """The monitoring filter of a threshold/absence condition ("" for MQL/PromQL ones)."""
        value = self.condition_spec.get("filter")
        return value if isinstance(value, str) else ""


class Notification(_Open):
    """The whole document Monitoring publishes: ``{"incident": {...}, "version": "1.2"}``."""

    incident: Incident
    # "1.2", "1.1", or "test" for the console's test button. Missing → "" (unknown).
    version: NumberText = ""


# --------------------------------------------------------------------------- public API


def parse_notification(raw: bytes | str, where: str = "message.data") -> Notification:
    """Decoded notification JSON (the Pub/Sub payload, or a webhook body) → ``Notification``.

    ``where`` names the input in error messages. Raises ``MalformedInput``.
    """
    document = loads(raw, where)
    if not isinstance(document, dict):
        raise MalformedInput(f"{where}: JSON is {type_name(document)}, expected an object")
    return validate(Notification, document, where)
