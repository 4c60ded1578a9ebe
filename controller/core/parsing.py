"""Bounded, field-named ``MalformedInput`` texts from pydantic and JSON failures of third-party input.

Shared by the two parsing stages of the alert path (:mod:`controller.core.envelope` for the Pub/Sub
envelope, :mod:`controller.core.incident` for the Monitoring payload): every failure becomes one
``MalformedInput`` whose message names the offending field and is bounded in length, since it is
logged and may be posted to Slack. Pure.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from controller.core.errors import MalformedInput

# Bounds on the text of a MalformedInput: it is logged and may be posted to Slack.
_MAX_ERRORS_SHOWN = 3
_MAX_LOC_CHARS = 120
MAX_MSG_CHARS = 200


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(exc: ValidationError, root: str) -> str:
    """A bounded, field-named summary of a ValidationError: ``incident.state: Input should …``."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for error in errors[:_MAX_ERRORS_SHOWN]:
        loc = ".".join(str(part) for part in error["loc"]) or root
        parts.append(f"{clip(loc, _MAX_LOC_CHARS)}: {clip(error['msg'], MAX_MSG_CHARS)}")
    if len(errors) > _MAX_ERRORS_SHOWN:
        parts.append(f"(+{len(errors) - _MAX_ERRORS_SHOWN} more)")
    return "; ".join(parts)


_M = TypeVar("_M", bound=BaseModel)


def validate(model: type[_M], value: object, root: str) -> _M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise MalformedInput(_describe(exc, root)) from None
    except RecursionError:
        raise MalformedInput(f"{root}: nested too deeply") from None


def type_name(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN/Infinity, which are not JSON and not a timestamp.
    raise ValueError(f"{name} is not valid JSON")


def loads(raw: bytes | bytearray | str, where: str) -> Any:
    """UTF-8 JSON → Python, as Google's own decoder does (decode, strip, loads)."""
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes | bytearray) else raw
    except UnicodeDecodeError as exc:
        raise MalformedInput(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    text = text.strip()
    if not text:
        raise MalformedInput(f"{where}: empty, expected a JSON document")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise MalformedInput(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:
        raise MalformedInput(f"{where}: {clip(str(exc), MAX_MSG_CHARS)}") from None
    except RecursionError:
        raise MalformedInput(f"{where}: JSON nested too deeply") from None
