"""Rollback policies: the models behind the YAML under ``policies/``, how they load, and which one applies.

A policy says which services it covers (``match``), what counts as broken (``triggers``),
what to do about it (``mode``, ``rollback``, ``canary``) and whom to tell (``notify``).
Durations are written as ``90s``, ``2m``, ``1h`` or ``1d``. Models are strict and closed
(``extra="forbid"``): a misspelt key is an error, never silently ignored.

Three jobs live here, all pure except that ``load_policies`` reads files:

* **Loading** (``load_policies``, ``load_policy_paths``, ``validate_paths``): a file or the top
  level of a directory (``*.yaml``/``*.yml``; sub-directories such as ``examples/`` are *not*
  read, so examples can sit beside live policies without becoming live). A file holds one
  policy per YAML document (``---``), or a document that is a list of policies. Every problem
  in the whole set is reported at once, each as ``file:line:col: dotted.path: message``.
* **Matching** (``PolicySet.select`` / ``PolicySet.select_for``): the most specific policy
  whose ``match`` accepts the service wins; the scoring is in ``explain_match`` and
  ``docs/policies.md``, and every ``Selection`` carries a sentence saying why.
* **JSON Schema** (``policy_json_schema``) for editors, exported to ``deploy/policy.schema.json``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from fnmatch import fnmatchcase
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema

from controller.alert import LABEL_ROLLBACK_POLICY
from controller.errors import PolicyError, TemporaryError

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


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)


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


class Verification(StrictModel):
    """Evidence before action: check the alert against Cloud Monitoring's per-revision numbers.

    The suspect must breach the trigger over the trigger's window (ending now) with at least
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


def _match_key(match: Match) -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[tuple[str, str]]]:
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
            key = _match_key(policy.match)
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


# ---------------------------------------------------------------------------------------------
# Loading (reads files; everything else here is pure)
# ---------------------------------------------------------------------------------------------

ENV_POLICIES = "ROLLBACK_POLICIES"
# The repository root's policies/ — beside main.py in the deployed function's source.
DEFAULT_POLICY_PATH = Path(__file__).resolve().parent.parent / "policies"
POLICY_SUFFIXES = (".yaml", ".yml")


def policy_path(environ: Mapping[str, str]) -> Path:
    """``ROLLBACK_POLICIES`` when set and non-empty, else the shipped ``policies/`` directory."""
    value = environ.get(ENV_POLICIES, "").strip()
    return Path(value) if value else DEFAULT_POLICY_PATH


@dataclass(frozen=True)
class _Problem:
    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyLoadError(PolicyError):
    """Invalid policies. ``problems`` holds one ``file:line:col: path: message`` line per problem."""

    def __init__(self, problems: Sequence[str]):
        self.problems = tuple(problems)
        count = len(self.problems)
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in rollback policies:\n"
            + "\n".join(f"  {p}" for p in self.problems)
        )


@dataclass
class _Loaded:
    policy: Policy
    file: str
    node: yaml.Node

    def at(self, key: str) -> tuple[int, int]:
        node = _locate(self.node, (key,))
        return node.start_mark.line + 1, node.start_mark.column + 1


def _render_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        else:
            out += f".{part}" if out else part
    return out


def _locate(node: yaml.Node, loc: Sequence[int | str]) -> yaml.Node:
    """The node an error ``loc`` points at: a mapping entry's *key*, a sequence item, or the
    nearest existing parent when the path does not exist (e.g. a missing required key)."""
    best = node
    current: yaml.Node = node
    for part in loc:
        if isinstance(current, yaml.MappingNode) and isinstance(part, str):
            for key_node, value_node in current.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                    best, current = key_node, value_node
                    break
            else:
                return best
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(current.value):
                return best
            best = current = current.value[part]
        else:
            return best
    return best


def _model_keys(loc: Sequence[int | str]) -> list[str]:
    """The keys the model at ``loc`` accepts (for did-you-mean on unknown keys)."""
    model: type[BaseModel] = Policy
    for part in loc:
        info = model.model_fields.get(str(part)) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        if info is None:
            return []
        candidates = [info.annotation, *get_args(info.annotation)]
        nested = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nested is None:
            return []
        model = nested
    return [f.alias or name for name, f in model.model_fields.items()]


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden" and loc:
        allowed = _model_keys(loc[:-1])
        text = f"unknown key {loc[-1]!r}"
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            return f"{text}; did you mean {close[0]!r}?"
        return f"{text}; expected one of: {', '.join(allowed)}" if allowed else text
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch" and tuple(loc) == ("name",):
        return "a policy name is lowercase letters, digits, '_', '.' and '-', starting with a letter or digit"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def _duplicate_keys(node: yaml.Node, file: str, prefix: tuple[int | str, ...]) -> list[_Problem]:
    """YAML quietly keeps the last of two equal keys; a policy file never means that."""
    problems: list[_Problem] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            name = key_node.value
            if name in first:
                mark = key_node.start_mark
                problems.append(
                    _Problem(
                        file,
                        mark.line + 1,
                        mark.column + 1,
                        _render_loc((*prefix, name)),
                        f"duplicate key {name!r} (first at line {first[name].start_mark.line + 1})",
                    )
                )
            else:
                first[name] = key_node
            problems += _duplicate_keys(value_node, file, (*prefix, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(item, file, (*prefix, index))
    return problems


def _problem_at(file: str, node: yaml.Node, path: str, message: str) -> _Problem:
    return _Problem(file, node.start_mark.line + 1, node.start_mark.column + 1, path, message)


def _validate_document(file: str, node: yaml.Node, data: Any, loaded: list[_Loaded], problems: list[_Problem]) -> None:
    if data is None:
        return  # an empty document (a lone comment, a trailing ---) is not an error
    if isinstance(data, list) and isinstance(node, yaml.SequenceNode):
        items = list(zip(node.value, data, strict=True))
    else:
        items = [(node, data)]
    for item_node, item in items:
        if not isinstance(item, dict):
            problems.append(
                _problem_at(
                    file,
                    item_node,
                    "",
                    f"a policy must be a mapping of keys (name, match, triggers, ...), not {type(item).__name__}",
                )
            )
            continue
        dupes = _duplicate_keys(item_node, file, ())
        problems += dupes
        try:
            # by_name=False: YAML speaks the aliases ("for"), never Python's "for_".
            policy = Policy.model_validate(item, by_alias=True, by_name=False)
        except ValidationError as exc:
            for error in exc.errors():
                loc = error["loc"]
                problems.append(
                    _problem_at(file, _locate(item_node, loc), _render_loc(loc) or "(policy)", _message(error))
                )
            continue
        if not dupes:
            loaded.append(_Loaded(policy, file, item_node))


def _load_file(path: Path, file: str, loaded: list[_Loaded], problems: list[_Problem]) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(_Problem(file, 0, 0, "", f"cannot read: {exc}"))
        return
    loader = yaml.SafeLoader(text)
    try:
        # compose + construct by hand (what safe_load_all does inside) to keep each
        # document's node tree: it maps validation errors back to lines and columns.
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # check_node() said there is one; keeps the type checker honest
                break
            data = loader.construct_document(node)
            _validate_document(file, node, data, loaded, problems)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = f"YAML syntax error: {exc.problem or exc.context}"
        if mark is None:
            problems.append(_Problem(file, 0, 0, "", message))
        else:
            problems.append(_Problem(file, mark.line + 1, mark.column + 1, "", message))
    except yaml.YAMLError as exc:
        problems.append(_Problem(file, 0, 0, "", f"YAML error: {exc}"))
    finally:
        loader.dispose()


def _policy_files(path: Path, shown: str, problems: list[_Problem]) -> list[tuple[Path, str]]:
    if path.is_dir():
        # Top level only: examples/ and other sub-directories are documentation, not live policy.
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix in POLICY_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            problems.append(_Problem(shown, 0, 0, "", "no policy files (*.yaml, *.yml) here"))
        return [(p, str(Path(shown) / p.name)) for p in files]
    if path.is_file():
        return [(path, shown)]
    problems.append(_Problem(shown, 0, 0, "", "no such file or directory"))
    return []


def _cross_checks(loaded: Sequence[_Loaded]) -> list[_Problem]:
    """Checks across the whole set: unique names, and no two identical match blocks (a tie
    between them could only be broken arbitrarily, so one of them is a mistake)."""
    problems: list[_Problem] = []
    by_name: dict[str, _Loaded] = {}
    by_match: dict[Any, _Loaded] = {}
    for item in loaded:
        name = item.policy.name
        if name in by_name:
            first = by_name[name]
            line, col = item.at("name")
            fl, fc = first.at("name")
            problems.append(
                _Problem(
                    item.file,
                    line,
                    col,
                    "name",
                    f"duplicate policy name {name!r} (first defined at {first.file}:{fl}:{fc})",
                )
            )
            continue
        by_name[name] = item
        key = _match_key(item.policy.match)
        if key in by_match:
            other = by_match[key]
            line, col = item.at("match")
            ol, oc = other.at("match")
            problems.append(
                _Problem(
                    item.file,
                    line,
                    col,
                    "match",
                    f"policy {name!r} has the same match as policy {other.policy.name!r} "
                    f"({other.file}:{ol}:{oc}); neither is more specific, so narrow or merge them",
                )
            )
            continue
        by_match[key] = item
    return problems


def load_policy_paths(paths: Iterable[str | Path]) -> PolicySet:
    """Load files and directories as one set (as if they sat in one directory).

    Raises ``PolicyLoadError`` (a ``PolicyError``) listing every problem, sorted by file,
    line and column.
    """
    given_paths = [str(p) for p in paths]
    loaded: list[_Loaded] = []
    problems: list[_Problem] = []
    file_order: dict[str, int] = {}
    for given in given_paths:
        for path, shown in _policy_files(Path(given), str(given), problems):
            file_order.setdefault(shown, len(file_order))
            _load_file(path, shown, loaded, problems)
    problems += _cross_checks(loaded)
    if not loaded and not problems:
        # An empty set would make the controller ignore every alert: say so loudly.
        problems.append(_Problem(", ".join(given_paths), 0, 0, "", "no policies found"))
    if problems:
        problems.sort(key=lambda p: (file_order.get(p.file, -1), p.line, p.col))
        raise PolicyLoadError([str(p) for p in problems])
    origins = {
        item.policy.name: f"{item.file}:{item.node.start_mark.line + 1}:{item.node.start_mark.column + 1}"
        for item in loaded
    }
    return PolicySet((item.policy for item in loaded), origins)


def load_policies(path: str | Path) -> PolicySet:
    """Load a policy file, or the ``*.yaml``/``*.yml`` files at the top level of a directory."""
    return load_policy_paths([path])


def load_for_runtime(path: str | Path) -> PolicySet:
    """Load the live policy set for the function. An invalid set is a *temporary* error: the
    controller must not acknowledge alerts it could not judge, so Pub/Sub keeps them until the
    files are fixed (and a scheduler tick fails loudly instead of silently doing nothing)."""
    try:
        return load_policies(path)
    except PolicyError as exc:
        raise TemporaryError(f"rollback policies at {path} are invalid: {exc}") from exc


def validate_paths(paths: Iterable[str | Path]) -> list[str]:
    """Every problem in these paths, taken as one set, as ``file:line:col: path: message`` lines."""
    try:
        load_policy_paths(paths)
    except PolicyLoadError as exc:
        return list(exc.problems)
    return []


# ---------------------------------------------------------------------------------------------
# JSON Schema
# ---------------------------------------------------------------------------------------------


class _YamlDefaults(GenerateJsonSchema):
    """Show duration defaults as people write them (``2m``), not as ISO 8601 (``PT2M``)."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of one policy document, keys by their YAML names (``for``)."""
    schema = Policy.model_json_schema(by_alias=True, mode="validation", schema_generator=_YamlDefaults)
    schema.pop("title", None)
    schema.pop("description", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Cloud Run rollback policy",
        "description": (
            "One policy document of the Cloud Run rollback controller (policies/*.yaml). "
            "Durations are a whole number and a unit: 90s, 2m, 1h, 1d. "
            "Reference: docs/policies.md."
        ),
        **schema,
    }
