"""Cloud Monitoring alert policies generated from the rollback policies, so thresholds are declared once.

``python -m controller alert-policies [PATHS] [--channel NAME] [--output-dir DIR]`` turns every
(rollback policy x trigger it enforces) into one ``AlertPolicy`` in the API's JSON form (camelCase),
as ``gcloud alpha monitoring policies create --policy-from-file=FILE`` reads it. The incidents those
policies open are exactly what ``controller.alert.alert_from_incident`` understands:

* conditions group by ``resource.label.service_name``, ``revision_name`` and ``location`` (Monitoring
  adds ``project_id``), so an incident names the service, the suspect revision and the region;
* ``userLabels`` carry ``rollback_policy`` (which policy to apply) and ``rollback_trigger`` (which
  trigger fired), plus the policy's ``match.alert_labels`` so the policy's own match accepts them;
* thresholds and durations are the policy's own (``for`` rounded up to whole minutes, the only
  durations Monitoring accepts).

The mappings, what cannot be expressed in a threshold condition (``min_requests``, "consecutive"),
and how overlapping policies are kept apart are explained in ``docs/alert-policies.md`` and in each
generated policy's ``documentation``. Pure except for the CLI handler: no ``google.cloud`` import
(the tests parse the output with ``monitoring_v3.AlertPolicy`` to prove the API accepts it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from controller.adapters.policy_files import PolicyLoadError, load_policy_paths
from controller.app.alertpolicies_terraform import FILENAME, dumps, to_terraform
from controller.app.settings import policies_from_env
from controller.core.alert import LABEL_ROLLBACK_POLICY, LABEL_TRIGGER, TriggerKind
from controller.core.policy import ErrorRateTrigger, HealthTrigger, LatencyTrigger, Match, Policy, format_duration

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "CHANNEL_PLACEHOLDER",
    "GROUP_BY",
    "LABEL_MANAGED_BY",
    "MANAGED_BY",
    "PROBE_PERIOD",
    "AlertPolicyError",
    "GeneratedAlertPolicy",
    "add_command",
    "check_channel",
    "generate",
    "health_window",
    "main",
]

# --------------------------------------------------------------------------------------------
# Constants of the mapping
# --------------------------------------------------------------------------------------------

LABEL_MANAGED_BY: Final = "managed_by"
MANAGED_BY: Final = "rollback-controller"
CHANNEL_PLACEHOLDER: Final = "projects/PROJECT_ID/notificationChannels/CHANNEL_ID"
_CHANNEL = re.compile(r"^projects/[^/\s]+/notificationChannels/[^/\s]+$")

RESOURCE_TYPE: Final = "cloud_run_revision"
REQUEST_COUNT: Final = "run.googleapis.com/request_count"
REQUEST_LATENCIES: Final = "run.googleapis.com/request_latencies"
PROBE_ATTEMPTS: Final = "run.googleapis.com/container/completed_probe_attempt_count"

# What alert_from_incident reads from resource labels: without revision_name in the group-by the
# incident could not name the suspect revision (wire doc 01, pitfall 4).
GROUP_BY: Final = (
    "resource.label.service_name",
    "resource.label.revision_name",
    "resource.label.location",
)

# Cloud Run samples its metrics every 60 s, and 60 s is the smallest alignment period.
ALIGNMENT: Final = timedelta(seconds=60)

# Cloud Run's default period for liveness (and HTTP startup) probes; the health mapping sizes its
# window so that this many consecutive failed attempts always land in one window.
PROBE_PERIOD: Final = timedelta(seconds=10)
# Cloud Run's default startup probe (TCP, every 240 s): all a service deployed with defaults has.
STARTUP_PROBE_PERIOD: Final = timedelta(seconds=240)

# Closed incidents notify too ("recovered" in Slack); autoClose bounds how long an incident whose
# series went silent stays open.
AUTO_CLOSE: Final = "1800s"

# The API's limit of conditions per alert policy; mixed exact/prefix matches use one per selector.
MAX_CONDITIONS: Final = 6

# GCP label keys and values: lowercase letters, digits, '_' and '-', at most 63 characters; a key
# starts with a letter.
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")

_GLOB_CHARS = frozenset("*?[")

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
PROG = "python -m controller alert-policies"


class AlertPolicyError(ValueError):
    """A rollback policy that cannot be turned into a correct alert policy (e.g. a bad label)."""


@dataclass(frozen=True)
class GeneratedAlertPolicy:
    """One generated AlertPolicy: for which rollback policy and trigger, its JSON body, and the
    caveats a human should read before creating it (also written into its documentation)."""

    policy: str
    trigger: TriggerKind
    body: dict[str, Any]
    notes: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        """``default.error_rate.json``: one file per policy x trigger, stable across runs."""
        return f"{self.policy}.{self.trigger}.json"

    def to_json(self) -> str:
        return json.dumps(self.body, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------
# Filters: from match globs to Monitoring filter clauses
# --------------------------------------------------------------------------------------------


def _quote(value: str) -> str:
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
        alternatives.append(f"{selector} = {_quote(exact[0])}")
    elif exact:
        alternatives.append(f"{selector} = one_of({', '.join(_quote(e) for e in sorted(set(exact)))})")
    alternatives += [f"{selector} = starts_with({_quote(p)})" for p in sorted({p for p in prefixes if p is not None})]
    return _Dimension(what, tuple(alternatives))


def _scopes(match: Match) -> tuple[list[tuple[str, ...]], list[str]]:
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


def _weight(pattern: str) -> int:
    """Specificity points as ``controller.policy`` scores them: exact 2, narrowing glob 1, any 0."""
    if _is_any(pattern):
        return 0
    return 1 if _GLOB_CHARS.intersection(pattern) else 2


def _weights(patterns: Sequence[str]) -> tuple[int, int]:
    """(lowest, highest) points a dimension can score on a value it accepts."""
    if not patterns or any(_is_any(p) for p in patterns):
        return 0, max((_weight(p) for p in patterns), default=0)
    found = [_weight(p) for p in patterns]
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
class _Overlap:
    excluded_services: set[str] = field(default_factory=set)
    unresolved: list[str] = field(default_factory=list)


def _overlaps(policy: Policy, others: Sequence[Policy]) -> _Overlap:
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
    found = _Overlap()
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
                mine = max((_weight(p) for p in m.services if fnmatchcase(service, p)), default=None)
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


# --------------------------------------------------------------------------------------------
# Conditions per trigger
# --------------------------------------------------------------------------------------------


def _seconds(value: timedelta) -> str:
    return f"{int(value.total_seconds())}s"


def _whole_minutes(value: timedelta) -> timedelta:
    """Monitoring accepts threshold durations in whole minutes only (0, 60, 120, … seconds)."""
    return timedelta(minutes=math.ceil(value.total_seconds() / 60))


def _aggregation(reducer: str, period: timedelta = ALIGNMENT) -> dict[str, Any]:
    return {
        "alignmentPeriod": _seconds(period),
        "perSeriesAligner": "ALIGN_DELTA",
        "crossSeriesReducer": reducer,
        "groupByFields": list(GROUP_BY),
    }


def _filter(metric_type: str, scope: Sequence[str], *extra: str) -> str:
    return " AND ".join(
        [f"metric.type = {_quote(metric_type)}", f"resource.type = {_quote(RESOURCE_TYPE)}", *scope, *extra]
    )


def health_window(consecutive_failures: int, probe_period: timedelta = PROBE_PERIOD) -> timedelta:
    """The window that always holds a run of ``consecutive_failures`` probe attempts whole.

    Cloud Run reports probe attempts as 60-s deltas. A run of N attempts ``probe_period`` apart
    spans (N-1)·period seconds, so it touches at most ceil(span / 60) + 1 of those samples; a
    window that long never splits the run between two windows.
    """
    span = (consecutive_failures - 1) * probe_period.total_seconds()
    return timedelta(minutes=math.ceil(span / 60) + 1)


@dataclass(frozen=True)
class _Spec:
    """What differs between the three triggers."""

    title: str  # for display names: "5xx ratio > 5% for 2m"
    conditions: tuple[dict[str, Any], ...]
    explanation: str  # markdown: what the condition measures and what it cannot express


def _threshold(
    *,
    filter_: str,
    aggregation: dict[str, Any],
    threshold: float,
    duration: timedelta,
    denominator: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"filter": filter_, "aggregations": [aggregation]}
    if denominator is not None:
        body["denominatorFilter"] = denominator
        body["denominatorAggregations"] = [dict(aggregation)]
    body |= {
        "comparison": "COMPARISON_GT",
        "thresholdValue": threshold,
        "duration": _seconds(duration),
        "trigger": {"count": 1},
        # A revision that was rolled back stops getting requests, so its series goes silent;
        # treating that as "condition not met" closes the incident (and Slack hears "recovered").
        "evaluationMissingData": "EVALUATION_MISSING_DATA_INACTIVE",
    }
    return body


def _rounded_note(written: timedelta, used: timedelta) -> str:
    if written == used:
        return ""
    return f" (`for: {format_duration(written)}` rounded up to {format_duration(used)}: Monitoring takes whole minutes)"


# Where min_requests is enforced instead (controller/core/verify.py, the policy's verification block).
_MIN_REQUESTS = (
    "the controller's verification applies it, reading the revision's own numbers back from Monitoring "
    "before acting; with fewer requests the evidence is inconclusive and the policy's "
    "`verification.on_inconclusive` decides."
)


def _error_rate(t: ErrorRateTrigger, scopes: Sequence[tuple[str, ...]]) -> _Spec:
    duration = _whole_minutes(t.for_)
    title = f"5xx ratio > {t.above * 100:g}% for {format_duration(duration)}"
    conditions = tuple(
        {
            "conditionThreshold": _threshold(
                filter_=_filter(REQUEST_COUNT, scope, 'metric.label.response_code_class = "5xx"'),
                denominator=_filter(REQUEST_COUNT, scope),
                aggregation=_aggregation("REDUCE_SUM"),
                threshold=t.above,
                duration=duration,
            )
        }
        for scope in scopes
    )
    explanation = (
        f"Fires when a revision's 5xx responses / all responses, per minute, stay above {t.above:g} "
        f"for {format_duration(duration)}{_rounded_note(t.for_, duration)}. "
        f"`min_requests: {t.min_requests}` cannot be written into a ratio condition (one 5xx out of "
        f"one request is 100%); {_MIN_REQUESTS}"
    )
    return _Spec(title, conditions, explanation)


def _latency(t: LatencyTrigger, scopes: Sequence[tuple[str, ...]]) -> _Spec:
    duration = _whole_minutes(t.for_)
    title = f"p95 latency > {t.above_ms:g} ms for {format_duration(duration)}"
    conditions = tuple(
        {
            "conditionThreshold": _threshold(
                filter_=_filter(REQUEST_LATENCIES, scope),
                # ALIGN_DELTA keeps each series' distribution; the reducer merges a revision's
                # distributions before reading p95 (never a percentile of percentiles).
                aggregation=_aggregation("REDUCE_PERCENTILE_95"),
                threshold=t.above_ms,
                duration=duration,
            )
        }
        for scope in scopes
    )
    explanation = (
        f"Fires when a revision's p95 request latency, per minute, stays above {t.above_ms:g} ms for "
        f"{format_duration(duration)}{_rounded_note(t.for_, duration)}. `min_requests: {t.min_requests}` "
        f"cannot be written into a threshold condition; {_MIN_REQUESTS}"
    )
    return _Spec(title, conditions, explanation)


def _health(t: HealthTrigger, scopes: Sequence[tuple[str, ...]], probe_period: timedelta | None) -> _Spec:
    n = t.consecutive_failures
    blind = probe_period is None  # no liveness probe: only startup probes (Cloud Run's default) report
    probe_period = STARTUP_PROBE_PERIOD if probe_period is None else probe_period
    window = health_window(n, probe_period)
    title = f">= {n} failed health checks in {format_duration(window)}"
    conditions = tuple(
        {
            "conditionThreshold": _threshold(
                filter_=_filter(PROBE_ATTEMPTS, scope, "metric.label.is_healthy = false"),
                aggregation=_aggregation("REDUCE_SUM", window),
                # Counts are whole numbers: "> N-1" is ">= N".
                threshold=n - 1,
                # The window already demands N failures; waiting longer only delays the rollback.
                duration=timedelta(0),
            )
        }
        for scope in scopes
    )
    explanation = (
        f"Fires when a revision records at least {n} failed probe attempts (startup or liveness, all "
        f"instances together) within {format_duration(window)}. Monitoring sees per-minute counts, "
        f"not runs, so 'consecutive' becomes 'within a window that always holds {n} consecutive "
        f"attempts {format_duration(probe_period)} apart'; failures spread over instances count together."
    )
    if blind:
        explanation += (
            " The service has no liveness probe, so this trigger sees only startup probes (Cloud Run's "
            f"default: TCP, every {format_duration(STARTUP_PROBE_PERIOD)}), which run only while an "
            "instance starts: a revision that fails after starting never trips it, and the controller "
            "skips health verification. Add a liveness probe to make this trigger meaningful."
        )
    return _Spec(title, conditions, explanation)


# --------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------

_MODE_SENTENCE = {
    "enforce": "moves 100% of the service's traffic back to the last good revision",
    "dry-run": "decides as if enforcing and posts what it *would* do to Slack, without changing traffic",
    "notify": "posts the alert to Slack; it makes no rollback decision",
}


def _check_label(key: str, value: str, where: str) -> None:
    if not _LABEL_KEY.match(key):
        raise AlertPolicyError(
            f"{where}: label key {key!r} is not a GCP label key (lowercase letters, digits, _ and -, "
            f"starting with a letter, at most 63 characters)"
        )
    if not _LABEL_VALUE.match(value):
        raise AlertPolicyError(
            f"{where}: label value {value!r} (key {key!r}) is not a GCP label value (lowercase "
            f"letters, digits, _ and -, at most 63 characters)"
        )


def _user_labels(policy: Policy, trigger: TriggerKind, name_label: bool) -> tuple[dict[str, str], list[str]]:
    notes: list[str] = []
    labels: dict[str, str] = {}
    for key, value in sorted(policy.match.alert_labels.items()):
        # The policy's own match requires these on the alert; without them it would never apply.
        _check_label(key, value, f"policy {policy.name!r} match.alert_labels")
        labels[key] = value
    if name_label and _LABEL_VALUE.match(policy.name):
        labels[LABEL_ROLLBACK_POLICY] = policy.name
    elif name_label:
        notes.append(
            f"the policy name {policy.name!r} is not a valid GCP label value, so the alert carries no "
            f"`{LABEL_ROLLBACK_POLICY}` label; the controller picks the most specific matching policy"
        )
    labels[LABEL_TRIGGER] = trigger
    labels[LABEL_MANAGED_BY] = MANAGED_BY
    return labels, notes


def _documentation(policy: Policy, spec: _Spec, labels: Mapping[str, str], notes: Sequence[str]) -> str:
    named = labels.get(LABEL_ROLLBACK_POLICY)
    chosen = (
        f"applies rollback policy `{policy.name}` (user label `{LABEL_ROLLBACK_POLICY}`)"
        if named
        else f"applies the most specific rollback policy covering the service (written for `{policy.name}`)"
    )
    lines = [
        f"Generated from rollback policy `{policy.name}` ({policy.match.describe()}; mode `{policy.mode}`)"
        " by `python -m controller alert-policies`. Edit the policy and regenerate, not this alert.",
        "",
        f"When this fires, the rollback controller (Pub/Sub notification channel) {chosen}: in mode "
        f"`{policy.mode}` it {_MODE_SENTENCE[policy.mode]}. The incident's resource labels name the "
        "service, the suspect revision and the region; its guards (cooldown, daily budget, hold, "
        "a Ready target) still apply.",
        "",
        spec.explanation,
    ]
    if notes:
        lines += ["", "Notes:", *(f"- {n}" for n in notes)]
    lines += ["", "See docs/alert-policies.md and README.md in the rollback controller's repository."]
    return "\n".join(lines)


def _alert_policy(
    policy: Policy,
    trigger: TriggerKind,
    spec: _Spec,
    overlap: _Overlap,
    scope_notes: Sequence[str],
    channels: Sequence[str],
) -> GeneratedAlertPolicy:
    notes = list(scope_notes)
    if overlap.excluded_services:
        names = ", ".join(sorted(overlap.excluded_services))
        notes.append(f"services {names} are left out: a more specific policy covers them with its own alerts")
    if overlap.unresolved:
        names = ", ".join(sorted(set(overlap.unresolved)))
        notes.append(
            f"policies {names} are more specific for some services this alert watches, and that cannot "
            f"be cut out of a Monitoring filter; so this alert carries no `{LABEL_ROLLBACK_POLICY}` label "
            "and the controller applies the most specific matching policy"
        )
    labels, label_notes = _user_labels(policy, trigger, name_label=not overlap.unresolved)
    notes += label_notes
    if policy.match.alert_labels:
        pairs = ", ".join(f"{k}={v}" for k, v in sorted(policy.match.alert_labels.items()))
        notes.append(
            f"this policy is chosen by alert labels ({pairs}); the alert carries them and watches every "
            "service its match allows: narrow the filter to the services that should get this policy"
        )
    count = len(spec.conditions)
    conditions = [
        {"displayName": spec.title + (f" [{i + 1}/{count}]" if count > 1 else ""), **condition}
        for i, condition in enumerate(spec.conditions)
    ]
    severity = "CRITICAL" if policy.mode == "enforce" else "WARNING"
    body: dict[str, Any] = {
        "displayName": f"rollback: {policy.name} / {spec.title}",
        "documentation": {
            "content": _documentation(policy, spec, labels, notes),
            "mimeType": "text/markdown",
            "subject": f"[rollback {policy.name}] ${{resource.label.service_name}} "
            f"${{resource.label.revision_name}}: {spec.title}",
        },
        "userLabels": labels,
        "conditions": conditions,
        "combiner": "OR",
        "enabled": True,
        "notificationChannels": list(channels) or [CHANNEL_PLACEHOLDER],
        "alertStrategy": {"autoClose": AUTO_CLOSE},
        "severity": severity,
    }
    return GeneratedAlertPolicy(policy.name, trigger, body, tuple(notes))


def _exclusions(services: Iterable[str]) -> tuple[str, ...]:
    return tuple(f"resource.label.service_name != {_quote(s)}" for s in sorted(services))


def check_channel(channel: str) -> None:
    """Raise ``AlertPolicyError`` unless ``channel`` is a notification channel resource name."""
    if not _CHANNEL.match(channel):
        raise AlertPolicyError(f"notification channel {channel!r} is not projects/PROJECT/notificationChannels/ID")


def generate(
    policies: Iterable[Policy],
    *,
    channels: Sequence[str] = (),
    probe_period: timedelta | None = PROBE_PERIOD,
) -> list[GeneratedAlertPolicy]:
    """AlertPolicy JSON bodies for every policy x enabled trigger, in policy then trigger order.

    ``policies`` should be the whole set the controller loads (a ``PolicySet`` fits): overlaps
    between policies decide exclusions and whether ``rollback_policy`` is set. ``channels`` are
    notification channel names; none gives ``CHANNEL_PLACEHOLDER``. ``probe_period`` is the
    services' liveness probe period (None: they have no liveness probe, and the health policy
    says so). Raises ``AlertPolicyError``
    for a policy whose alert labels are not valid GCP labels, or a malformed channel name.
    """
    for channel in channels:
        check_channel(channel)
    everything = list(policies)
    out: list[GeneratedAlertPolicy] = []
    for policy in everything:
        overlap = _overlaps(policy, everything)
        scopes, scope_notes = _scopes(policy.match)
        scopes = [(*scope, *_exclusions(overlap.excluded_services)) for scope in scopes]
        t = policy.triggers
        specs: list[tuple[TriggerKind, _Spec]] = []
        if t.error_rate is not None:
            specs.append(("error_rate", _error_rate(t.error_rate, scopes)))
        if t.latency_p95 is not None:
            specs.append(("latency_p95", _latency(t.latency_p95, scopes)))
        if t.health is not None:
            specs.append(("health", _health(t.health, scopes, probe_period)))
        out += [_alert_policy(policy, kind, spec, overlap, scope_notes, channels) for kind, spec in specs]
    return out


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def add_command(subparsers: Subparsers) -> None:
    """Register ``alert-policies`` on the controller's CLI (``controller.cli.COMMANDS``)."""
    parser = subparsers.add_parser(
        "alert-policies",
        help="generate Cloud Monitoring alert policies from the rollback policies",
        description="Print one Cloud Monitoring AlertPolicy (API JSON) per rollback policy and trigger, "
        "as a JSON array; with --output-dir, write one file per policy and trigger for "
        "`gcloud alpha monitoring policies create --policy-from-file=FILE`. See docs/alert-policies.md.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="policy files or directories, as one set (default: $ROLLBACK_POLICIES, else policies/)",
    )
    parser.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="NAME",
        help="notification channel, projects/P/notificationChannels/ID (repeatable); "
        f"default: the placeholder {CHANNEL_PLACEHOLDER}",
    )
    parser.add_argument(
        "--probe-period",
        default="10",
        metavar="SECONDS|none",
        help="the services' liveness probe period, as `gcloud run services describe` shows it; `none` when "
        "they have no liveness probe (Cloud Run's default: only a TCP startup probe) (default: 10)",
    )
    parser.add_argument(
        "--output-dir",
        "-o",
        metavar="DIR",
        help="write POLICY.TRIGGER.json files into DIR (created if missing) instead of printing",
    )
    parser.add_argument(
        "--format",
        choices=("json", "terraform"),
        default="json",
        help="json: the API's AlertPolicy JSON (default); terraform: google_monitoring_alert_policy resources "
        "as Terraform JSON for deploy/terraform (with --output-dir: DIR/alert_policies.tf.json), notifying the "
        "module's channel unless --channel is given",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The ``alert-policies`` handler: 0 done, 1 invalid policies, 2 usage error."""
    # Resolved per call, not at import: tests and callers may swap sys.stdout.
    out, err = out or sys.stdout, err or sys.stderr
    try:
        for channel in args.channel:
            check_channel(channel)
    except AlertPolicyError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return EXIT_USAGE
    raw_period = str(getattr(args, "probe_period", "10")).strip().lower()
    period: timedelta | None = None
    if raw_period != "none":
        if not raw_period.isdigit() or not 1 <= int(raw_period) <= 3600:
            print(f"{PROG}: error: --probe-period {raw_period!r}: expected whole seconds (1-3600) or none", file=err)
            return EXIT_USAGE
        period = timedelta(seconds=int(raw_period))
    paths: list[str] = list(args.paths) or [_display(policies_from_env())]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        for path in missing:
            print(f"{PROG}: error: no such file or directory: {path}", file=err)
        return EXIT_USAGE
    try:
        policies = load_policy_paths(paths)
    except PolicyLoadError as exc:
        for line in exc.problems:
            print(line, file=out)
        print(f"{len(exc.problems)} problem(s) in {', '.join(paths)}: nothing generated", file=err)
        return EXIT_INVALID
    try:
        generated = generate(policies, channels=args.channel, probe_period=period)
    except AlertPolicyError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return EXIT_INVALID

    terraform = getattr(args, "format", "json") == "terraform"
    if not args.channel and not terraform:
        print(
            f"warning: no --channel given; the policies notify {CHANNEL_PLACEHOLDER}: replace it with "
            "your Pub/Sub channel (gcloud beta monitoring channels list) before creating them",
            file=err,
        )
    for policy in policies:
        if not any(g.policy == policy.name for g in generated):
            print(f"note: policy {policy.name!r} enforces no trigger; no alert policy for it", file=err)
    for item in generated:
        for note in item.notes:
            print(f"note: {item.filename}: {note}", file=err)

    if terraform:
        return _write_terraform(generated, args, out, err)
    if args.output_dir:
        directory = Path(args.output_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for item in generated:
                (directory / item.filename).write_text(item.to_json(), encoding="utf-8")
        except OSError as exc:
            print(f"{PROG}: error: cannot write to {args.output_dir}: {exc.strerror}", file=err)
            return EXIT_USAGE
        for item in generated:
            print(directory / item.filename, file=out)
    else:
        out.write(json.dumps([g.body for g in generated], indent=2, ensure_ascii=False) + "\n")
    return EXIT_OK


def _write_terraform(
    generated: Sequence[GeneratedAlertPolicy], args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    text = dumps(to_terraform(generated, channels=args.channel))
    if not args.output_dir:
        out.write(text)
        return EXIT_OK
    target = Path(args.output_dir) / FILENAME
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"{PROG}: error: cannot write to {args.output_dir}: {exc.strerror}", file=err)
        return EXIT_USAGE
    print(target, file=out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``alert-policies`` alone (``python -m controller.app.alertpolicies``), as the CLI would."""
    parser = argparse.ArgumentParser(prog="python -m controller")
    add_command(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(["alert-policies", *(sys.argv[1:] if argv is None else argv)])
    except SystemExit as exc:  # --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
