"""Which rollback policy applies: match scoring, explanations and the validated ``PolicySet``. Pure.

**Matching** (``PolicySet.select`` / ``PolicySet.select_for``): the most specific policy whose
``match`` accepts the service wins; the scoring is in ``explain_match`` and ``docs/policies.md``,
and every ``Selection`` carries a sentence saying why. The models are in ``controller.core.policy``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Protocol

from controller.core.alert import LABEL_ROLLBACK_POLICY
from controller.core.errors import PolicyError
from controller.core.policy import ANY_POINTS, EXACT_POINTS, LABEL_POINTS, Match, Policy, pattern_weight


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
    if not patterns or any(pattern_weight(p) == ANY_POINTS for p in patterns):
        best: tuple[int, str | None] | None = (ANY_POINTS, None)
    else:
        best = None
    if value is None:
        return best
    for pattern in patterns:
        weight = pattern_weight(pattern)
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
