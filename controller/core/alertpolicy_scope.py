"""Which series an alert policy watches: match globs as Monitoring filter clauses, and overlaps.

Part of the alert-policy generator (``controller.core.alertpolicies``). ``scopes`` turns a rollback
policy's ``match`` (exact names and trailing-``*`` globs) into the AND-only filter clauses a
threshold condition accepts, one combination per condition, widened to fit the API's condition
limit. ``overlaps`` finds the services of a broad policy's alerts that a more specific policy
covers, to exclude them or to leave the ``rollback_policy`` label out. Pure.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Final

from controller.core.policy import Match, Policy, pattern_weight

__all__ = ["MAX_CONDITIONS", "Overlap", "filter_scopes", "overlaps", "quote"]

# The API's limit of conditions per alert policy; mixed exact/prefix matches use one per selector.
MAX_CONDITIONS: Final = 6

_GLOB_CHARS = frozenset("*?[")


# --------------------------------------------------------------------------------------------
# Filters: from match globs to Monitoring filter clauses
# --------------------------------------------------------------------------------------------


def quote(value: str) -> str:
    # Monitoring filter strings are double-quoted with backslash escapes, like JSON strings.
    return json.dumps(value)


def _is_any(pattern: str) -> bool:
    return pattern.strip("*") == ""


def _prefix(pattern: str) -> str | None:
    """``pay-*`` → ``pay-``; None for anything but one trailing ``*`` after a literal."""
    if pattern.endswith("*") and not _GLOB_CHARS.intersection(pattern[:-1]):
        return pattern[:-1]
    return None


@dataclass(frozen=True)
class _Dimension:
    """The alternatives one match dimension becomes: each is one AND-clause, or None for "any".

    Several alternatives (exact names *and* prefixes) cannot share one AND-only filter; each gets
    its own condition. ``note`` says why a dimension was left unfiltered when it was narrowed.
    """

    what: str
    alternatives: tuple[str | None, ...]
    note: str | None = None


def _dimension(what: str, selector: str, patterns: Sequence[str]) -> _Dimension:
    if not patterns or any(_is_any(p) for p in patterns):
        return _Dimension(what, (None,))
    exact = [p for p in patterns if not _GLOB_CHARS.intersection(p)]
    prefixes = [_prefix(p) for p in patterns if _GLOB_CHARS.intersection(p)]
    if any(p is None for p in prefixes):
        odd = ", ".join(p for p in patterns if _GLOB_CHARS.intersection(p) and _prefix(p) is None)
        return _Dimension(
            what,
            (None,),
            f"{what} glob {odd} cannot be written as a Monitoring filter (only exact names and a "
            f"trailing * are), so this alert watches every {what}; the controller still applies the "
            f"policy only where its match accepts the {what}",
        )
    alternatives: list[str | None] = []
    if len(exact) == 1:
        alternatives.append(f"{selector} = {quote(exact[0])}")
    elif exact:
        alternatives.append(f"{selector} = one_of({', '.join(quote(e) for e in sorted(set(exact)))})")
    alternatives += [f"{selector} = starts_with({quote(p)})" for p in sorted({p for p in prefixes if p is not None})]
    return _Dimension(what, tuple(alternatives))


def filter_scopes(match: Match) -> tuple[list[tuple[str, ...]], list[str]]:
    """Every combination of match alternatives as a tuple of clauses, plus notes.

    If the combinations exceed the API's condition limit, dimensions are widened (regions first,
    then projects, then services) until they fit: a wider alert is safe, because the controller
    re-checks the policy's match before it acts (see ``PolicySet.select_for``).
    """
    dims = [
        _dimension("service", "resource.label.service_name", match.services),
        _dimension("project", "resource.label.project_id", match.projects),
        _dimension("region", "resource.label.location", match.regions),
    ]
    notes = [d.note for d in dims if d.note]
    for index in (2, 1, 0):
        if math.prod(len(d.alternatives) for d in dims) <= MAX_CONDITIONS:
            break
        wide = dims[index]
        notes.append(
            f"the {wide.what} patterns would need more than {MAX_CONDITIONS} conditions, so this alert "
            f"watches every {wide.what}; the controller still applies the policy only where its match "
            f"accepts the {wide.what}"
        )
        dims[index] = _Dimension(wide.what, (None,))
    combos = [tuple(c for c in combo if c is not None) for combo in itertools.product(*(d.alternatives for d in dims))]
    return combos, notes


# --------------------------------------------------------------------------------------------
# Overlaps: an alert of a broad policy must not speak for a narrower policy's services
# --------------------------------------------------------------------------------------------


def _weights(patterns: Sequence[str]) -> tuple[int, int]:
    """(lowest, highest) points a dimension can score on a value it accepts."""
    if not patterns or any(_is_any(p) for p in patterns):
        return 0, max((pattern_weight(p) for p in patterns), default=0)
    found = [pattern_weight(p) for p in patterns]
    return min(found), max(found)


def _may_intersect(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two pattern lists may accept a common value (erring towards yes)."""
    if not a or not b or any(_is_any(p) for p in (*a, *b)):
        return True
    for x, y in itertools.product(a, b):
        if fnmatchcase(x, y) or fnmatchcase(y, x):
            return True
        px, py = _prefix(x), _prefix(y)
        if px is not None and py is not None and (px.startswith(py) or py.startswith(px)):
            return True
        if (px is None and _GLOB_CHARS.intersection(x)) or (py is None and _GLOB_CHARS.intersection(y)):
            return True  # a glob we cannot reason about: assume it overlaps
    return False


def _is_catch_all(patterns: Sequence[str]) -> bool:
    return not patterns or any(_is_any(p) for p in patterns)


@dataclass
class Overlap:
    excluded_services: set[str] = field(default_factory=set)
    unresolved: list[str] = field(default_factory=list)


def overlaps(policy: Policy, others: Sequence[Policy]) -> Overlap:
    """Which series of ``policy``'s alerts belong to a more specific policy, and what to do.

    The controller gives an alert to the policy its ``rollback_policy`` label names. A broad
    policy's alert (e.g. ``default``, every service) also fires for services a narrower policy
    covers, so it would apply the broad policy's mode there (enforce on a dry-run service). Where
    the narrower policy names exact services only (any project, any region), those services are
    excluded from the broad alert with ``!=`` clauses. Any other overlap cannot be cut out of an
    AND-only filter; then the broad alert leaves ``rollback_policy`` out and the controller picks
    the most specific matching policy itself.

    Policies selected by alert labels claim no services (only alerts carrying their labels), so
    they neither exclude nor are excluded.
    """
    found = Overlap()
    if policy.match.alert_labels:
        return found
    m = policy.match
    mins = [_weights(p)[0] for p in (m.services, m.projects, m.regions)]
    maxs = [_weights(p)[1] for p in (m.services, m.projects, m.regions)]
    for other in others:
        o = other.match
        if other.name == policy.name or o.alert_labels:
            continue
        if not all(
            _may_intersect(a, b)
            for a, b in ((m.services, o.services), (m.projects, o.projects), (m.regions, o.regions))
        ):
            continue
        other_min = sum(_weights(p)[0] for p in (o.services, o.projects, o.regions))
        other_max = sum(_weights(p)[1] for p in (o.services, o.projects, o.regions))
        if other_max < sum(mins) or (other_max == sum(mins) == sum(maxs) and other.name > policy.name):
            continue  # this policy wins wherever both match
        exact_only = bool(o.services) and not any(_GLOB_CHARS.intersection(s) for s in o.services)
        if exact_only and _is_catch_all(o.projects) and _is_catch_all(o.regions):
            for service in o.services:
                # This policy's score on that service, in its best and worst project/region.
                mine = max((pattern_weight(p) for p in m.services if fnmatchcase(service, p)), default=None)
                if mine is None:
                    continue
                high, low = mine + maxs[1] + maxs[2], mine + mins[1] + mins[2]
                if other_min > high or (other_min == high == low and other.name < policy.name):
                    found.excluded_services.add(service)
                elif other_min >= low:
                    found.unresolved.append(other.name)
            continue
        found.unresolved.append(other.name)
    return found
