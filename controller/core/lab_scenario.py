"""The alerting lab's scenarios and results: what a run is asked to simulate and what it saw. Pure.

A ``Scenario`` (YAML under ``samples/lab/``) describes a service, its traffic, a deploy and
Monitoring's lag; ``LabResult`` holds one run's timeline (``Mark``), per-minute stats
(``MinuteStat``) and the figures the CLI and ``bench/mttr.py`` print. The simulation is
``controller.surfaces.lab``; docs/lab.md explains the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.core.durations import Duration
from controller.core.errors import InvalidInput
from controller.core.stats import Histogram, bucket_bounds

__all__ = [
    "STRATEGIES",
    "Behaviour",
    "LabResult",
    "Mark",
    "MinuteStat",
    "Scenario",
    "ScenarioError",
    "Strategy",
    "mark_recovery",
]

Strategy = Literal["default", "fast", "flagger", "crm"]
STRATEGIES: tuple[Strategy, ...] = ("default", "fast", "flagger", "crm")
DEPLOY_AT = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
FLAGGER_THRESHOLD = 5
CRM_WINDOW = timedelta(minutes=30)


class ScenarioError(InvalidInput):
    """A scenario file that cannot be read or does not validate (one line, for the CLI)."""


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Behaviour(_Model):
    """How one revision behaves (see ``controller.emulator.traffic.RevisionProfile``)."""

    error_rate: float = Field(default=0.005, ge=0.0, le=1.0)
    latency_ms: float = Field(default=120.0, gt=0.0)
    latency_sigma: float = Field(default=0.5, ge=0.0, le=3.0)


class Scenario(_Model):
    """One lab scenario (YAML). Revisions: ``older`` (optional) < ``stable`` (serving) < ``candidate``."""

    name: str = Field(min_length=1)
    description: str = ""
    project: str = "demo-proj"
    region: str = "us-central1"
    service: str = "checkout"
    policy: str = "default"
    requests_per_minute: int = Field(default=500, ge=1, le=100_000)
    baseline: Duration = timedelta(minutes=15)
    after: Duration = timedelta(minutes=40)
    ingestion_lag: Duration = timedelta(seconds=180)
    notification_delay: Duration = timedelta(seconds=10)
    older: Behaviour | None = None
    stable: Behaviour = Behaviour()
    candidate: Behaviour = Behaviour()
    candidate_percent: int = Field(default=100, ge=1, le=100)
    expect: Literal["rollback", "no-rollback", "refuse"] = "rollback"
    seed: int = 1


@dataclass
class MinuteStat:
    """What one revision served in one minute (ending ``end``), as the lab saw it written."""

    end: datetime
    revision: str
    requests: int = 0
    errors: int = 0
    latency: Histogram | None = None
    share: int = 0

    def p95(self) -> float | None:
        return self.latency.percentile(95.0) if self.latency is not None and self.latency.count else None

    def slower_than(self, threshold_ms: float) -> int:
        if self.latency is None:
            return 0
        return sum(
            c
            for (low, _high), c in zip(bucket_bounds(self.latency.options), self.latency.counts, strict=True)
            if low >= threshold_ms
        )


@dataclass(frozen=True)
class Mark:
    at: datetime
    what: str
    detail: str = ""


@dataclass
class LabResult:
    """Everything one run saw; ``figures()`` are the numbers the CLI and the bench print."""

    scenario: Scenario
    strategy: Strategy
    seed: int
    deploy_at: datetime
    candidate: str
    stable: str
    marks: list[Mark] = field(default_factory=list)
    minutes: list[MinuteStat] = field(default_factory=list)
    outcome: str = "none"  # rolled-back | refused | none
    reason: str = ""
    error_threshold: float = 0.05
    latency_threshold_ms: float = 2000.0

    def first(self, what: str) -> Mark | None:
        return next((m for m in self.marks if m.what == what), None)

    def _since_deploy(self, what: str) -> float | None:
        mark = self.first(what)
        return None if mark is None else (mark.at - self.deploy_at).total_seconds()

    def bad_requests(self) -> int:
        """5xx plus responses slower than the latency threshold, served by the candidate."""
        return sum(
            m.errors + m.slower_than(self.latency_threshold_ms) for m in self.minutes if m.revision == self.candidate
        )

    def figures(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "strategy": self.strategy,
            "seed": self.seed,
            "expect": self.scenario.expect,
            "outcome": self.outcome,
            "as_expected": self.as_expected,
            "reason": self.reason,
            "time_to_detect_s": self._since_deploy("alert opened"),
            "time_to_traffic_shifted_s": self._since_deploy("traffic shifted"),
            "bad_requests_served": self.bad_requests(),
            "candidate_requests": sum(m.requests for m in self.minutes if m.revision == self.candidate),
        }

    @property
    def false_rollback(self) -> bool:
        return self.outcome == "rolled-back" and self.scenario.expect != "rollback"

    @property
    def as_expected(self) -> bool:
        wanted = {"rollback": "rolled-back", "refuse": "refused", "no-rollback": "none"}[self.scenario.expect]
        return self.outcome == wanted or (self.scenario.expect == "no-rollback" and self.outcome == "refused")

    def to_json(self) -> dict[str, Any]:
        return {
            "figures": self.figures(),
            "timeline": [{"at": m.at.isoformat(), "what": m.what, "detail": m.detail} for m in self.marks],
            "minutes": [
                {
                    "end": m.end.isoformat(),
                    "revision": m.revision,
                    "requests": m.requests,
                    "errors": m.errors,
                    "p95_ms": m.p95(),
                    "share": m.share,
                }
                for m in self.minutes
            ],
        }


def mark_recovery(result: LabResult) -> None:
    shifted = result.first("traffic shifted")
    if shifted is None:
        return
    by_end: dict[datetime, tuple[int, int]] = {}
    for m in result.minutes:
        req, err = by_end.get(m.end, (0, 0))
        by_end[m.end] = (req + m.requests, err + m.errors)
    for end in sorted(by_end):
        req, err = by_end[end]
        if end - MINUTE >= shifted.at and req and err / req <= result.error_threshold:
            result.marks.append(Mark(end, "recovery", f"service 5xx {err}/{req} in the minute ending {end:%H:%M}"))
            result.marks.sort(key=lambda m: m.at)
            return
