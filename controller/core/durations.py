"""Durations as policies and scenarios write them: ``90s``, ``2m``, ``1h``, ``1d``. Pure.

``parse_duration`` reads them (bare numbers are refused), ``format_duration`` writes a
``timedelta`` back in the largest exact unit, and ``Duration`` is the pydantic field type that
does both, with the JSON Schema describing the written form.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    PlainSerializer,
    WithJsonSchema,
)

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """``"2m"`` → ``timedelta(minutes=2)``; timedeltas pass through; anything else is left for pydantic to reject.

    Bare numbers are refused on purpose: ``for: 120`` could mean seconds or minutes, and a
    rollback threshold is the wrong place to guess.
    """
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"invalid duration {value!r}: write a whole number and a unit, e.g. 90s, 2m, 1h, 1d")
        return timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    if isinstance(value, int | float):
        raise ValueError(f"invalid duration {value!r}: add a unit, e.g. {value}s or {value}m (90s, 2m, 1h, 1d)")
    return value


def format_duration(value: timedelta) -> str:
    """The inverse of ``parse_duration``: the largest unit that divides the duration exactly."""
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    # Not pydantic's default ISO 8601 ("PT2M"): the schema describes what people write in YAML.
    WithJsonSchema({"type": "string", "pattern": _DURATION.pattern, "examples": ["90s", "2m", "1h", "1d"]}),
]
