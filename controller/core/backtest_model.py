"""What a backtest found, its stable ``--json`` document, and the pure steps of the replay. Pure.

``Found`` is one would-be incident, ``Backtest`` the whole result (``summary``, ``to_json``
following :data:`JSON_SHAPE`, documented in docs/backtest.md). ``scoped_condition`` narrows a generated
condition to one service, ``state_at`` rebuilds the service as it was at an incident (Cloud Run
keeps no traffic history), ``action_for`` names what a decision would have done. The replay
that reads Monitoring is ``controller.app.backtest``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from controller.core.alertpolicy_spec import ConditionSpec
from controller.core.decide import Decision, Reason
from controller.core.errors import TemporaryError
from controller.core.policy import Policy
from controller.core.state import Revision, ServiceRef, ServiceState, TrafficTarget

__all__ = [
    "CHUNK",
    "DEPLOY_NEARBY",
    "JSON_SHAPE",
    "MAX_SINCE",
    "MINUTE",
    "Backtest",
    "BacktestError",
    "Found",
    "action_for",
    "parse_since",
    "scoped_condition",
    "state_at",
]

CHUNK: Final = timedelta(hours=6)
MINUTE: Final = timedelta(minutes=1)
# A deploy "nearby": the suspect revision was created at most this long before the incident.
DEPLOY_NEARBY: Final = timedelta(hours=1)
MAX_SINCE: Final = timedelta(days=42)  # Cloud Monitoring keeps Cloud Run metrics for 6 weeks


#: The ``--json`` document, documented in docs/backtest.md; keys are stable (new keys may be added
#: to ``evidence`` and ``summary`` only).
JSON_SHAPE: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["service", "since", "until", "policy", "incidents", "summary"],
    "properties": {
        "service": {"type": "string"},
        "since": {"type": "string", "format": "date-time"},
        "until": {"type": "string", "format": "date-time"},
        "policy": {"type": "string"},
        "incidents": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "opened_at",
                    "closed_at",
                    "trigger",
                    "suspect",
                    "action",
                    "target",
                    "reason",
                    "evidence",
                ],
                "properties": {
                    "opened_at": {"type": "string", "format": "date-time"},
                    "closed_at": {"type": ["string", "null"], "format": "date-time"},
                    "trigger": {"type": "string", "enum": ["error_rate", "latency_p95", "health"]},
                    "suspect": {"type": "string"},
                    "action": {"type": "string", "enum": ["rollback", "refuse", "notify"]},
                    "target": {"type": ["string", "null"]},
                    "reason": {"type": "string"},
                    "evidence": {"type": "object"},
                },
            },
        },
        "summary": {
            "type": "object",
            "required": ["incidents", "would_roll_back", "refused", "notify", "no_deploy_nearby", "suppressed"],
            "properties": {
                "incidents": {"type": "integer"},
                "would_roll_back": {"type": "integer"},
                "refused": {"type": "integer"},
                "notify": {"type": "integer"},
                "no_deploy_nearby": {"type": "integer"},
                "suppressed": {"type": "integer"},
                "revisions": {"type": "integer"},
                "minutes": {"type": "integer"},
            },
        },
    },
}

_SINCE = re.compile(r"^(\d+)([mhd])$")
_UNIT = {"m": 60, "h": 3600, "d": 86400}
_REFUSALS = frozenset(
    {
        Reason.TARGET_ALSO_FAILING,
        Reason.NOT_CONFIRMED,
        Reason.NO_TARGET,
        Reason.COOLDOWN,
        Reason.BUDGET_SPENT,
        Reason.HELD,
        Reason.UNVERIFIED,
    }
)


class BacktestError(TemporaryError):
    """Cloud Run or Monitoring could not be read (exit 1), with a one-line message."""


def parse_since(text: str) -> timedelta:
    m = _SINCE.match(text.strip())
    if not m:
        raise ValueError(f"--since {text!r}: write a number and a unit, e.g. 90m, 12h, 7d")
    value = timedelta(seconds=int(m.group(1)) * _UNIT[m.group(2)])
    if not timedelta(minutes=10) <= value <= MAX_SINCE:
        raise ValueError(f"--since {text}: between 10m and 42d (Cloud Monitoring keeps Cloud Run metrics 6 weeks)")
    return value


@dataclass
class Found:
    """One would-be incident and what the controller would have done."""

    opened_at: datetime
    closed_at: datetime | None
    trigger: str
    suspect: str
    action: str
    target: str | None
    reason: str
    evidence: dict[str, Any]
    incident_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "opened_at": self.opened_at.isoformat(),
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "trigger": self.trigger,
            "suspect": self.suspect,
            "action": self.action,
            "target": self.target,
            "reason": self.reason,
            "evidence": self.evidence,
        }


@dataclass
class Backtest:
    service: ServiceRef
    since: datetime
    until: datetime
    policy: str
    incidents: list[Found] = field(default_factory=list)
    suppressed: int = 0
    revisions: int = 0
    minutes: int = 0
    hourly: dict[str, dict[datetime, list[float]]] = field(default_factory=dict)  # for --plot

    def summary(self) -> dict[str, int]:
        count = {a: sum(1 for i in self.incidents if i.action == a) for a in ("rollback", "refuse", "notify")}
        return {
            "incidents": len(self.incidents),
            "would_roll_back": count["rollback"],
            "refused": count["refuse"],
            "notify": count["notify"],
            "no_deploy_nearby": sum(1 for i in self.incidents if not i.evidence.get("deploy_nearby")),
            "suppressed": self.suppressed,
            "revisions": self.revisions,
            "minutes": self.minutes,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "service": str(self.service),
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "policy": self.policy,
            "incidents": [i.to_json() for i in self.incidents],
            "summary": self.summary(),
        }


def scoped_condition(cond: ConditionSpec, ref: ServiceRef) -> ConditionSpec:
    """The condition narrowed to one service and region (the generated filters cover a policy's whole match)."""
    extra = f' AND resource.label.service_name = "{ref.service}" AND resource.label.location = "{ref.region}"'
    return dataclasses.replace(
        cond,
        filter=cond.filter + extra,
        denominator_filter=cond.denominator_filter + extra if cond.denominator_filter else "",
    )


def state_at(ref: ServiceRef, revisions: Sequence[Revision], at: datetime, shares: Mapping[str, int]) -> ServiceState:
    existing = tuple(r for r in revisions if r.create_time <= at)
    total = sum(shares.values())
    traffic: list[TrafficTarget] = []
    if total:
        percents = {n: math.floor(100 * c / total) for n, c in shares.items() if c}
        left = 100 - sum(percents.values())
        for name in sorted(percents, key=lambda n: -shares[n])[:left]:
            percents[name] += 1
        traffic = [TrafficTarget(kind="revision", revision=n, percent=p) for n, p in sorted(percents.items()) if p]
    return ServiceState(ref=ref, etag="backtest", traffic=tuple(traffic), revisions=existing)


def action_for(decision: Decision, policy: Policy) -> str:
    if decision.reason is Reason.ROLLED_BACK:
        return "notify" if policy.mode == "notify" else "rollback"
    if decision.reason in _REFUSALS:
        return "refuse"
    return "notify"
