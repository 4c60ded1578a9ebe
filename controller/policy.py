"""Rollback policies: the models behind the YAML under ``policies/``.

A policy says which services it covers (``match``), what counts as broken (``triggers``),
what to do about it (``mode``, ``rollback``) and whom to tell (``notify``). Durations are
written as ``90s``, ``2m``, ``1h`` or ``1d``. Models are strict and closed (``extra="forbid"``):
a misspelt key is an error, never silently ignored.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """``"2m"`` → ``timedelta(minutes=2)``; timedeltas pass through; anything else is left for pydantic to reject."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"invalid duration {value!r}: write a whole number and a unit, e.g. 90s, 2m, 1h, 1d")
        return timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    return value


def format_duration(value: timedelta) -> str:
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
    Field(json_schema_extra={"type": "string", "pattern": _DURATION.pattern}),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)


class Match(StrictModel):
    """Which services a policy covers. Every list holds shell-style globs; empty = any."""

    services: list[str] = Field(default_factory=lambda: ["*"])
    projects: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    alert_labels: dict[str, str] = Field(
        default_factory=dict,
        description="the alert policy's user labels must hold all of these key/value pairs",
    )


class ErrorRateTrigger(StrictModel):
    above: float = Field(gt=0, lt=1, description="5xx share of requests, e.g. 0.05 for 5%")
    for_: Duration = Field(alias="for", default=timedelta(minutes=2))
    min_requests: int = Field(default=50, ge=0)


class LatencyTrigger(StrictModel):
    above_ms: float = Field(gt=0, description="p95 request latency in milliseconds")
    for_: Duration = Field(alias="for", default=timedelta(minutes=2))
    min_requests: int = Field(default=50, ge=0)


class HealthTrigger(StrictModel):
    consecutive_failures: int = Field(default=3, ge=1)


class Triggers(StrictModel):
    error_rate: ErrorRateTrigger | None = None
    latency_p95: LatencyTrigger | None = None
    health: HealthTrigger | None = None


class Rollback(StrictModel):
    to: Literal["last-good"] = "last-good"
    cooldown: Duration = timedelta(minutes=15)
    max_per_day: int = Field(default=3, ge=0)


class Canary(StrictModel):
    steps: list[int] = Field(default_factory=lambda: [10, 25, 50, 100], min_length=1)
    step_for: Duration = timedelta(minutes=5)
    metric_lag: Duration = timedelta(minutes=3)
    min_requests: int = Field(default=100, ge=0)
    max_error_rate_increase: float = Field(default=0.01, ge=0, le=1)
    max_latency_ratio: float = Field(default=1.25, gt=0)


class Notify(StrictModel):
    slack_channel: str | None = None


class Policy(StrictModel):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    match: Match = Field(default_factory=Match)
    mode: Literal["enforce", "dry-run", "notify"] = "enforce"
    triggers: Triggers = Field(default_factory=Triggers)
    rollback: Rollback = Field(default_factory=Rollback)
    canary: Canary | None = None
    notify: Notify = Field(default_factory=Notify)
