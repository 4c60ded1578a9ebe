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
generated policy's ``documentation``. Pure, with no ``google.cloud`` import (the tests parse the
output with ``monitoring_v3.AlertPolicy`` to prove the API accepts it). This module assembles
each policy (labels, documentation, severity) and holds ``generate``; the filters are in
``alertpolicy_scope``, the conditions in ``alertpolicy_conditions``, the Terraform form in
``alertpolicy_terraform``, the command in ``controller.surfaces.cli_alert_policies``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from controller.core.alert import LABEL_ROLLBACK_POLICY, LABEL_TRIGGER, TriggerKind
from controller.core.alertpolicy_conditions import (
    GROUP_BY,
    PROBE_PERIOD,
    Spec,
    error_rate,
    health,
    health_window,
    latency,
)
from controller.core.alertpolicy_scope import MAX_CONDITIONS, Overlap, filter_scopes, overlaps, quote
from controller.core.errors import InvalidInput
from controller.core.policy import Policy

__all__ = [
    "CHANNEL_PLACEHOLDER",
    "GROUP_BY",
    "LABEL_MANAGED_BY",
    "MANAGED_BY",
    "MAX_CONDITIONS",
    "PROBE_PERIOD",
    "AlertPolicyError",
    "GeneratedAlertPolicy",
    "check_channel",
    "generate",
    "health_window",
]

LABEL_MANAGED_BY: Final = "managed_by"
MANAGED_BY: Final = "rollback-controller"
CHANNEL_PLACEHOLDER: Final = "projects/PROJECT_ID/notificationChannels/CHANNEL_ID"
_CHANNEL = re.compile(r"^projects/[^/\s]+/notificationChannels/[^/\s]+$")

# Closed incidents notify too ("recovered" in Slack); autoClose bounds how long an incident whose
# series went silent stays open.
AUTO_CLOSE: Final = "1800s"

# GCP label keys and values: lowercase letters, digits, '_' and '-', at most 63 characters; a key
# starts with a letter.
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


class AlertPolicyError(InvalidInput):
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


def _documentation(policy: Policy, spec: Spec, labels: Mapping[str, str], notes: Sequence[str]) -> str:
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
    spec: Spec,
    overlap: Overlap,
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
    return tuple(f"resource.label.service_name != {quote(s)}" for s in sorted(services))


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
        overlap = overlaps(policy, everything)
        scopes, scope_notes = filter_scopes(policy.match)
        scopes = [(*scope, *_exclusions(overlap.excluded_services)) for scope in scopes]
        t = policy.triggers
        specs: list[tuple[TriggerKind, Spec]] = []
        if t.error_rate is not None:
            specs.append(("error_rate", error_rate(t.error_rate, scopes)))
        if t.latency_p95 is not None:
            specs.append(("latency_p95", latency(t.latency_p95, scopes)))
        if t.health is not None:
            specs.append(("health", health(t.health, scopes, probe_period)))
        out += [_alert_policy(policy, kind, spec, overlap, scope_notes, channels) for kind, spec in specs]
    return out
