"""Rollback policies: the models behind the YAML under ``policies/``. Pure.

A policy says which services it covers (``match``), what counts as broken (``triggers``),
what to do about it (``mode``, ``rollback``, ``canary``, ``verification``) and whom to tell
(``notify``). Durations are written as ``90s``, ``2m``, ``1h`` or ``1d`` (``controller.core.durations``).
Models are strict and closed (``extra="forbid"``): a misspelt key is an error, never silently ignored.

Which policy applies to a service or an alert (``PolicySet``, ``explain_match``) is in
``controller.core.policy_matching``; this module holds only the specificity points of one pattern,
which a ``match`` block's validation needs too. Reading the YAML files (with line numbers in every
error) and the JSON Schema live in ``controller.adapters.policy_files``.
"""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import (
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from controller.core.durations import Duration, format_duration
from controller.core.models import Strict

# A glob or label value: never empty (an empty glob matches nothing, which is never meant).
_Pattern = Annotated[str, Field(min_length=1)]


EXACT_POINTS = 2
GLOB_POINTS = 1
ANY_POINTS = 0
LABEL_POINTS = 2
_GLOB_CHARS = frozenset("*?[")


def pattern_weight(pattern: str) -> int:
    """Exact literal → 2, a narrowing glob (``pay-*``, ``europe-west?``) → 1, ``*`` → 0."""
    if pattern.strip("*") == "":
        return ANY_POINTS
    if _GLOB_CHARS.intersection(pattern):
        return GLOB_POINTS
    return EXACT_POINTS


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


class StrictModel(Strict):
    model_config = ConfigDict(populate_by_name=True)


class Match(StrictModel):
    """Which services a policy covers. Every list holds shell-style globs; empty = any."""

    services: list[_Pattern] = Field(
        default_factory=lambda: ["*"],
        description="Cloud Run service names (case-sensitive globs: *, ?, [abc]); default any",
    )
    projects: list[_Pattern] = Field(default_factory=list, description="GCP project ids (globs); empty = any project")
    regions: list[_Pattern] = Field(
        default_factory=list, description="Cloud Run regions, e.g. europe-west1 (globs); empty = any"
    )
    alert_labels: dict[_Pattern, str] = Field(
        default_factory=dict,
        description="the alert policy's user labels must hold all of these key/value pairs",
    )

    def describe(self) -> str:
        """A short human summary, e.g. ``services checkout; projects shop-prod``."""
        parts = []
        for label, patterns in (
            ("services", self.services),
            ("projects", self.projects),
            ("regions", self.regions),
        ):
            if patterns and not any(pattern_weight(p) == 0 for p in patterns):
                parts.append(f"{label} {', '.join(patterns)}")
        if self.alert_labels:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(self.alert_labels.items()))
            parts.append(f"alert labels {labels}")
        return "; ".join(parts) if parts else "any service"


class ErrorRateTrigger(StrictModel):
    """Roll back when the revision's 5xx share of requests stays above a ratio."""

    above: float = Field(gt=0, lt=1, description="5xx share of requests, e.g. 0.05 for 5%")
    for_: Duration = Field(
        alias="for",
        default=timedelta(minutes=2),
        description="how long the ratio must stay above the threshold",
    )
    min_requests: int = Field(default=50, ge=0, description="fewer requests than this in the window prove nothing")


class LatencyTrigger(StrictModel):
    """Roll back when the revision's p95 latency stays above a bound."""

    above_ms: float = Field(gt=0, description="p95 request latency in milliseconds")
    for_: Duration = Field(
        alias="for",
        default=timedelta(minutes=2),
        description="how long p95 must stay above the threshold",
    )
    min_requests: int = Field(default=50, ge=0, description="fewer requests than this in the window prove nothing")


class HealthTrigger(StrictModel):
    """Roll back after consecutive failed health (startup/liveness) checks."""

    consecutive_failures: int = Field(default=3, ge=1, description="failed checks in a row that count as broken")


class Triggers(StrictModel):
    """What counts as broken. A trigger left out is never acted on for this policy."""

    error_rate: ErrorRateTrigger | None = Field(default=None, description="5xx ratio trigger")
    latency_p95: LatencyTrigger | None = Field(default=None, description="p95 latency trigger")
    health: HealthTrigger | None = Field(default=None, description="health-check trigger")

    def describe(self) -> str:
        """A short human summary, e.g. ``error_rate > 5% for 2m (min 50 requests)``."""
        parts = []
        if self.error_rate:
            t = self.error_rate
            parts.append(
                f"error_rate > {t.above * 100:g}% for {format_duration(t.for_)} (min {t.min_requests} requests)"
            )
        if self.latency_p95:
            lat = self.latency_p95
            parts.append(
                f"latency_p95 > {lat.above_ms:g} ms for {format_duration(lat.for_)} (min {lat.min_requests} requests)"
            )
        if self.health:
            parts.append(f"health {self.health.consecutive_failures} consecutive failures")
        return ", ".join(parts) if parts else "none"


class Rollback(StrictModel):
    """Where traffic goes back to, and how often the controller may do it unattended."""

    to: Literal["last-good"] = Field(
        default="last-good",
        description="last-good: the newest Ready, non-quarantined revision known to be healthy",
    )
    cooldown: Duration = Field(
        default=timedelta(minutes=15),
        description="no automatic rollback of the same service within this time of the last one",
    )
    max_per_day: int = Field(
        default=3,
        ge=0,
        description="automatic rollbacks per service per 24h; beyond it, notify only (0 = never)",
    )
    max_alert_age: Duration = Field(
        default=timedelta(minutes=30),
        description=(
            "an open incident that started (or was published) longer ago than this is acted on only if "
            "Cloud Monitoring's current numbers confirm it (redeliveries go on for up to 24 h)"
        ),
    )


class Canary(StrictModel):
    """Gate a new revision's traffic through steps while it stays as healthy as the stable one."""

    steps: list[int] = Field(
        default_factory=lambda: [10, 25, 50, 100],
        min_length=1,
        description="traffic percentages, strictly increasing, each in 1..100, the last one 100",
        # The validator below enforces these; the schema repeats them for editors.
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 100}},
    )
    step_for: Duration = Field(
        default=timedelta(minutes=5),
        description="how long each step lasts, measured from its traffic change",
    )
    metric_lag: Duration = Field(
        default=timedelta(minutes=3),
        description="start of each step ignored while metrics catch up; shorter than step_for",
    )
    min_requests: int = Field(
        default=100,
        ge=0,
        description="candidate requests needed per step; fewer = inconclusive (hold, never promote)",
    )
    max_error_rate_increase: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="candidate 5xx ratio may exceed stable's by at most this (0.01 = 1 point)",
    )
    max_latency_ratio: float = Field(
        default=1.25, gt=0, description="candidate p95 may be at most this multiple of stable's"
    )
    inconclusive_timeout: Duration = Field(
        default=timedelta(minutes=30),
        description="a step still without enough data this long after it should have ended times out",
    )
    on_timeout: Literal["rollback", "notify"] = Field(
        default="notify",
        description="what a timed-out step does: roll the candidate back, or hold and tell Slack once",
    )
    require_approval: bool = Field(
        default=False,
        description="wait for a human (Slack 'Promote' button, or POST /canary/approve) before the last step",
    )
    watch: Duration = Field(
        default=timedelta(minutes=30),
        description="after 100%, the old stable stays the alert path's last-good target this long",
    )
    candidates: Literal["tagged", "any"] = Field(
        default="tagged",
        description="which new revisions get a canary: tagged (tag 'candidate', or given traffic by a deploy) "
        "or any (every newer Ready revision, --no-traffic previews included)",
    )

    @field_validator("steps")
    @classmethod
    def _steps_climb_to_100(cls, steps: list[int]) -> list[int]:
        # Each rule gets its own message: "invalid steps" alone sends people hunting.
        for step in steps:
            if not 1 <= step <= 100:
                raise ValueError(f"step {step} is not a traffic percentage in 1..100")
        for before, after in pairwise(steps):
            if after <= before:
                raise ValueError(f"steps must strictly increase, but {after} follows {before}")
        if steps[-1] != 100:
            raise ValueError(
                f"the last step must be 100 (a canary that never reaches 100% is never promoted); got {steps[-1]}"
            )
        return steps

    @model_validator(mode="after")
    def _step_outlasts_metric_lag(self) -> Canary:
        # Every step skips its first metric_lag; without time left there is nothing to judge.
        if self.step_for <= self.metric_lag:
            raise ValueError(
                f"step_for ({format_duration(self.step_for)}) must be longer than metric_lag "
                f"({format_duration(self.metric_lag)}), or no step is ever measured"
            )
        return self


def policy_warnings(policy: Policy) -> list[str]:
    """Things that are valid but probably not meant (``validate`` prints them; they never fail it)."""
    found: list[str] = []
    cfg = policy.canary
    if cfg is not None and cfg.step_for - cfg.metric_lag < timedelta(minutes=1):
        # Monitoring's smallest bucket is a minute: a step must hold one after its metric lag.
        found.append(
            f"canary.step_for ({format_duration(cfg.step_for)}) leaves less than one judgeable minute after "
            f"canary.metric_lag ({format_duration(cfg.metric_lag)}): every step holds until it is overdue; "
            f"make step_for at least {format_duration(cfg.metric_lag + timedelta(minutes=1))}"
        )
    return found


class Verification(StrictModel):
    """Evidence before action: check the alert against Cloud Monitoring's per-revision numbers.

    The suspect must breach the trigger over the trigger's window (ending at the incident's start,
    or ``ingestion_lag`` before now if that is later) with at least
    ``min_requests``; the target must not have breached it when it last served. When the
    numbers cannot be had, or there is too little traffic to judge, the policy decides.
    """

    enabled: bool = Field(default=True, description="verify alerts with Cloud Monitoring before acting")
    on_unavailable: Literal["act", "skip"] = Field(
        default="act",
        description="Monitoring unreachable or erroring: act on the alert alone (act) or do nothing (skip)",
    )
    on_inconclusive: Literal["act", "skip"] = Field(
        default="act",
        description="too little traffic to judge: act on the alert alone (act) or do nothing (skip)",
    )
    compare_target: bool = Field(
        default=True,
        description="refuse to roll back into a revision that was as bad when it last served; escalate instead",
    )
    ingestion_lag: Duration = Field(
        default=timedelta(minutes=3),
        description=(
            "how long Cloud Monitoring takes to show Cloud Run's numbers (documented: up to 180 s); the "
            "suspect is measured over data at least this old, or up to the incident's start"
        ),
    )


class Notify(StrictModel):
    """Where the controller reports what it did."""

    slack_channel: str | None = Field(default=None, description="Slack channel for this policy; unset = SLACK_CHANNEL")


class Policy(StrictModel):
    """A Cloud Run rollback policy: which services, what counts as broken, what to do."""

    name: str = Field(
        min_length=1,
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="unique name; alerts may pick a policy with a rollback_policy user label",
    )
    description: str = Field(default="", description="free text for humans")
    match: Match = Field(default_factory=Match, description="which services this policy covers")
    mode: Literal["enforce", "dry-run", "notify"] = Field(
        default="enforce",
        description="enforce: roll back; dry-run: decide and report, never change traffic; "
        "notify: report the alert only",
    )
    triggers: Triggers = Field(default_factory=Triggers, description="what counts as broken")
    rollback: Rollback = Field(default_factory=Rollback, description="how rollbacks are done")
    canary: Canary | None = Field(default=None, description="canary promotion gating; unset = off")
    verification: Verification = Field(
        default_factory=Verification, description="evidence from Cloud Monitoring before acting"
    )
    notify: Notify = Field(default_factory=Notify, description="where to report")

    @model_validator(mode="after")
    def _does_something(self) -> Policy:
        # A policy wins over less specific ones outright (no inheritance), so an empty policy
        # would silently switch the controller off for its services. Canary-only is allowed:
        # it is a deliberate "gate deploys, leave alerts to humans".
        t = self.triggers
        if t.error_rate is None and t.latency_p95 is None and t.health is None and not self.canary:
            raise ValueError("a policy needs at least one trigger (error_rate, latency_p95, health) or a canary block")
        return self
