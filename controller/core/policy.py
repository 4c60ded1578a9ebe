"""Rollback policies: the models behind the YAML under ``policies/``, and which one applies. Pure.

A policy says which services it covers (``match``), what counts as broken (``triggers``),
what to do about it (``mode``, ``rollback``, ``canary``, ``verification``) and whom to tell
(``notify``). Durations are written as ``90s``, ``2m``, ``1h`` or ``1d``. Models are strict and
closed (``extra="forbid"``): a misspelt key is an error, never silently ignored.

**Matching** (``PolicySet.select`` / ``PolicySet.select_for``): the most specific policy whose
``match`` accepts the service wins; the scoring is in ``explain_match`` and ``docs/policies.md``,
and every ``Selection`` carries a sentence saying why. Reading the YAML files (with line
numbers in every error) and the JSON Schema live in ``controller.policy_files``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from fnmatch import fnmatchcase
from itertools import pairwise
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from controller.core.alert import LABEL_ROLLBACK_POLICY
from controller.core.errors import PolicyError
from controller.core.models import Strict

# ---------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------

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

# A glob or label value: never empty (an empty glob matches nothing, which is never meant).
_Pattern = Annotated[str, Field(min_length=1)]

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
            if patterns and not any(_pattern_weight(p) == 0 for p in patterns):
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


# ---------------------------------------------------------------------------------------------
# Matching (pure)
# ---------------------------------------------------------------------------------------------

EXACT_POINTS = 2
GLOB_POINTS = 1
ANY_POINTS = 0
LABEL_POINTS = 2
_GLOB_CHARS = frozenset("*?[")


def _pattern_weight(pattern: str) -> int:
    """Exact literal → 2, a narrowing glob (``pay-*``, ``europe-west?``) → 1, ``*`` → 0."""
    if pattern.strip("*") == "":
        return ANY_POINTS
    if _GLOB_CHARS.intersection(pattern):
        return GLOB_POINTS
    return EXACT_POINTS


@dataclass(frozen=True)
class MatchExplanation:
    """How a match block accepted a service: its specificity score and the phrases behind it."""

    score: int
    because: tuple[str, ...]

    def sentence(self) -> str:
        return ", ".join(self.because) if self.because else "it covers every service"


def _match_dimension(what: str, patterns: Sequence[str], value: str | None) -> tuple[int, str | None] | None:
    """Best (points, phrase) over the patterns accepting ``value``; None when none accepts it.

    An empty list, or one holding ``*``, accepts anything, even an unknown (None) value; a
    narrowing pattern needs a known value, because a policy must not apply on a guess.
    """
    if not patterns or any(_pattern_weight(p) == ANY_POINTS for p in patterns):
        best: tuple[int, str | None] | None = (ANY_POINTS, None)
    else:
        best = None
    if value is None:
        return best
    for pattern in patterns:
        weight = _pattern_weight(pattern)
        if weight == ANY_POINTS or not fnmatchcase(value, pattern):
            continue
        phrase = f"{what} {value!r} exactly" if weight == EXACT_POINTS else f"{what} {value!r} by glob {pattern!r}"
        if best is None or weight > best[0]:
            best = (weight, phrase)
    return best


def explain_match(
    match: Match,
    *,
    project: str | None,
    region: str | None,
    service: str | None,
    labels: Mapping[str, str] | None = None,
) -> MatchExplanation | None:
    """Whether ``match`` accepts the service and how specifically; None when it does not.

    Score = sum over service, project and region of the best accepting pattern (exact 2,
    narrowing glob 1, ``*``/empty 0) + 2 per required alert label (all must be present with
    equal values).
    """
    score = 0
    because: list[str] = []
    for what, patterns, value in (
        ("service", match.services, service),
        ("project", match.projects, project),
        ("region", match.regions, region),
    ):
        found = _match_dimension(what, patterns, value)
        if found is None:
            return None
        score += found[0]
        if found[1]:
            because.append(found[1])
    labels = labels or {}
    for key, wanted in sorted(match.alert_labels.items()):
        if labels.get(key) != wanted:
            return None
        score += LABEL_POINTS
        because.append(f"label {key}={wanted}")
    return MatchExplanation(score=score, because=tuple(because))


def score_match(
    match: Match,
    *,
    project: str | None,
    region: str | None,
    service: str | None,
    labels: Mapping[str, str] | None = None,
) -> int | None:
    """The specificity score of ``match`` for this service, or None when it does not match."""
    found = explain_match(match, project=project, region=region, service=service, labels=labels)
    return None if found is None else found.score


def match_key(match: Match) -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[tuple[str, str]]]:
    """Two match blocks with the same key accept the same alerts equally specifically."""

    def norm(patterns: Sequence[str]) -> frozenset[str]:
        return frozenset(patterns) if patterns else frozenset({"*"})

    return (
        norm(match.services),
        norm(match.projects),
        norm(match.regions),
        frozenset(match.alert_labels.items()),
    )


class AlertLike(Protocol):
    """What selection reads from an alert (``controller.alert.Alert`` fits)."""

    @property
    def project(self) -> str | None: ...

    @property
    def region(self) -> str | None: ...

    @property
    def service(self) -> str | None: ...

    @property
    def user_labels(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class Selection:
    """The policy chosen for a service (None when none applies), why, and who else matched.

    ``candidates`` lists every matching policy, most specific first (ties by name);
    ``score`` is the winner's specificity score.
    """

    policy: Policy | None
    reason: str
    candidates: list[str] = field(default_factory=list)
    score: int | None = None


def _where(project: str | None, region: str | None, service: str | None) -> str:
    def show(value: str | None) -> str:
        return repr(value) if value is not None else "(unknown)"

    return f"service {show(service)} in project {show(project)}, region {show(region)}"


class PolicySet:
    """A validated collection of policies with unique names and distinct match blocks.

    Iterating yields policies in load order. ``select``/``select_for`` are pure.
    """

    def __init__(self, policies: Iterable[Policy], origins: Mapping[str, str] | None = None):
        self._policies = tuple(policies)
        self._by_name: dict[str, Policy] = {}
        self._origins = dict(origins or {})
        seen_keys: dict[Any, str] = {}
        for policy in self._policies:
            if policy.name in self._by_name:
                raise PolicyError(f"duplicate policy name {policy.name!r}")
            key = match_key(policy.match)
            if key in seen_keys:
                raise PolicyError(f"policies {seen_keys[key]!r} and {policy.name!r} have the same match block")
            seen_keys[key] = policy.name
            self._by_name[policy.name] = policy

    def __iter__(self) -> Iterator[Policy]:
        return iter(self._policies)

    def __len__(self) -> int:
        return len(self._policies)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Policy:
        return self._by_name[name]

    def __repr__(self) -> str:
        return f"PolicySet({self.names})"

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._policies]

    def get(self, name: str) -> Policy | None:
        return self._by_name.get(name)

    def origin(self, name: str) -> str | None:
        """Where the policy was defined (``file:line:col``), when it was loaded from a file."""
        return self._origins.get(name)

    def select(self, alert: AlertLike) -> Selection:
        """The policy for an alert: its ``rollback_policy`` label if set, else the most specific."""
        return self.select_for(alert.project, alert.region, alert.service, labels=alert.user_labels)

    def select_for(
        self,
        project: str | None,
        region: str | None,
        service: str | None,
        labels: Mapping[str, str] | None = None,
    ) -> Selection:
        """The policy for a service, as for an alert with these labels (manual and canary paths)."""
        labels = labels or {}
        where = _where(project, region, service)
        named = labels.get(LABEL_ROLLBACK_POLICY)
        if named:
            return self._select_named(named, project, region, service, labels, where)

        ranked: list[tuple[int, str, MatchExplanation]] = []
        for policy in self._policies:
            found = explain_match(policy.match, project=project, region=region, service=service, labels=labels)
            if found is not None:
                ranked.append((found.score, policy.name, found))
        if not ranked:
            # Sorted: no part of a selection may depend on load order.
            known = ", ".join(sorted(self.names)) or "none loaded"
            return Selection(None, f"no policy matches {where} (policies: {known})")
        # Highest score first, then name: deterministic whatever the load order.
        ranked.sort(key=lambda r: (-r[0], r[1]))
        score, name, found = ranked[0]
        candidates = [r[1] for r in ranked]
        reason = f"policy {name!r} matched: {found.sentence()}"
        tied = [r[1] for r in ranked[1:] if r[0] == score]
        if len(ranked) == 1:
            reason += " (the only matching policy)"
        elif tied:
            others = ", ".join(repr(t) for t in tied)
            reason += (
                f" (tied with {others} at score {score}, chosen by name; "
                f"{len(ranked)} matching: {', '.join(candidates)})"
            )
        else:
            reason += f" (most specific of {len(ranked)} matching: {', '.join(candidates)})"
        return Selection(self._by_name[name], reason, candidates, score)

    def _select_named(
        self,
        named: str,
        project: str | None,
        region: str | None,
        service: str | None,
        labels: Mapping[str, str],
        where: str,
    ) -> Selection:
        policy = self._by_name.get(named)
        label = f"the alert's {LABEL_ROLLBACK_POLICY} label"
        if policy is None:
            known = ", ".join(sorted(self.names)) or "none loaded"
            return Selection(None, f"{label} names policy {named!r}, which does not exist (known: {known})")
        found = explain_match(policy.match, project=project, region=region, service=service, labels=labels)
        if found is None:
            # Applying it anyway would act on a service its authors never meant to cover.
            return Selection(
                None,
                f"{label} names policy {named!r}, whose match ({policy.match.describe()}) does not cover {where}",
            )
        return Selection(
            policy,
            f"policy {named!r} named by {label}: {found.sentence()}",
            [named],
            found.score,
        )
