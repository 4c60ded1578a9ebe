"""Slack messages (Block Kit) for the controller's decisions: pure rendering, no I/O.

A message must let an on-call engineer act without opening anything else: which service
(project, region), what moved (from → to revision), why (the trigger with the observed
value, the threshold and the window), whether anything really changed (dry runs say so in
the header), who acted, and links to the incident and to the Cloud Run console.
"""

from __future__ import annotations

from typing import Any

from controller.core import slack_blocks as kit
from controller.core.alert import Alert
from controller.core.decide import Decision, Reason
from controller.core.durations import format_duration
from controller.core.formatting import percent
from controller.core.mrkdwn import escape, link
from controller.core.policy import Policy
from controller.core.state import Frozen

_HEADERS = {
    Reason.ROLLED_BACK: ":rewind: Rolled back {service}",
    Reason.DRY_RUN: ":test_tube: DRY RUN: would roll back {service} (traffic unchanged)",
    Reason.NOTIFY_MODE: ":bell: Would roll back {service} (policy is notify-only; traffic unchanged)",
    Reason.INCIDENT_CLOSED: ":white_check_mark: Incident closed for {service}",
    Reason.TEST_NOTIFICATION: ":wave: Test notification from Cloud Monitoring received",
    Reason.HELD: ":pause_button: Not rolling back {service}",  # the detail says "service is on hold since..."
    Reason.COOLDOWN: ":hourglass: Not rolling back {service}: cooldown",
    Reason.BUDGET_SPENT: ":no_entry: Not rolling back {service}: daily rollback budget spent",
    Reason.NO_TARGET: ":rotating_light: Cannot roll back {service}: no safe revision to roll back to",
    Reason.NOT_CONFIRMED: ":mag: Not rolling back {service}: Cloud Monitoring does not confirm the alert",
    Reason.TARGET_ALSO_FAILING: ":rotating_light: ESCALATION: rolling back {service} would not help",
    Reason.UNVERIFIED: ":grey_question: Not rolling back {service}: the alert could not be verified",
}
_DEFAULT_HEADER = ":information_source: {service}: {reason}"
FAILED_HEADER = ":rotating_light: Rollback of {service} FAILED"
UNCONFIRMED_HEADER = ":warning: Rolled back {service} (operation not confirmed yet)"
LATE_HEADER = ":rewind: Rolled back {service} (announced late: the first attempt never saw its write confirmed)"


class SlackMessage(Frozen):
    text: str
    blocks: tuple[dict[str, Any], ...]
    channel: str | None = None
    thread_ts: str | None = None  # set on messages that were posted as replies (for tests and logs)


def describe_trigger(alert: Alert, policy: Policy | None) -> str:
    """E.g. ``5xx ratio 18.3% > 5% for 5m`` from the alert's numbers, else the policy's."""
    trigger = alert.trigger
    window = alert.window
    threshold = alert.threshold_value
    if policy is not None and trigger is not None:
        configured = getattr(policy.triggers, trigger)
        if configured is not None and trigger != "health":
            window = window or configured.for_
            if threshold is None:
                threshold = configured.above if trigger == "error_rate" else configured.above_ms
        if configured is not None and trigger == "health" and threshold is None:
            threshold = float(configured.consecutive_failures)
    observed = alert.observed_value
    span = f" for {format_duration(window)}" if window else ""
    if trigger == "error_rate":
        obs = percent(observed) if observed is not None else "?"
        thr = percent(threshold) if threshold is not None else "?"
        return f"5xx ratio {obs} > {thr}{span}"
    if trigger == "latency_p95":
        obs = f"{observed:.0f} ms" if observed is not None else "?"
        thr = f"{threshold:.0f} ms" if threshold is not None else "?"
        return f"p95 latency {obs} > {thr}{span}"
    if trigger == "health":
        obs = f"{observed:g}" if observed is not None else "?"
        thr = f"{threshold:g}" if threshold is not None else "?"
        return f"health-check failures {obs} (threshold {thr}){span}"
    return alert.condition_name or alert.metric_type or "unknown trigger"


def console_url(project: str, region: str, service: str) -> str:
    return f"https://console.cloud.google.com/run/detail/{region}/{service}/revisions?project={project}"


def render(
    decision: Decision,
    alert: Alert,
    policy: Policy | None,
    *,
    channel: str | None = None,
    header: str | None = None,
    extra: str = "",
    actions: tuple[dict[str, Any], ...] = (),
) -> SlackMessage:
    ref = decision.service
    name = ref.service if ref else (alert.service or "unknown service")
    head = (header or _HEADERS.get(decision.reason, _DEFAULT_HEADER)).format(service=name, reason=decision.reason.value)
    # Everything interpolated into mrkdwn below may come from outside (labels, the incident, a
    # human's reason): escaped (controller/core/mrkdwn.py); only our own markup stays live.
    facts: list[str] = []
    if ref:
        facts.append(f"*Service*\n{escape(ref.service)}")
        facts.append(f"*Project / region*\n{escape(ref.project)} / {escape(ref.region)}")
    if decision.suspect or decision.target:
        facts.append(f"*From → to*\n`{escape(decision.suspect or '?')}` → `{escape(decision.target or 'none')}`")
    if not alert.is_test:
        facts.append(f"*Trigger*\n{escape(describe_trigger(alert, policy))}")
    mode: str = policy.mode if policy else "n/a"
    if decision.reason is Reason.DRY_RUN:
        mode = "DRY RUN"
    facts.append(f"*Mode*\n{mode}")
    facts.append("*Actor*\nrollback-controller (alert)")

    blocks: list[dict[str, Any]] = [
        kit.header(head),
        kit.section(escape(decision.message)),
        kit.fields(facts),
    ]
    if decision.evidence:
        measured = "\n".join(f"• {escape(line)}" for line in decision.evidence)
        blocks.append(kit.section(f"*Measured by Cloud Monitoring*\n{measured}"))
    if extra:
        blocks.append(kit.section(escape(extra)))
    links = []
    if alert.url:
        links.append(link(alert.url, f"Incident {alert.incident_id}"))
    if ref:
        links.append(link(console_url(ref.project, ref.region, ref.service), "Cloud Run console"))
    policy_name = escape(decision.policy or "none")
    blocks.append(kit.context(" · ".join([*links, f"policy `{policy_name}`", f"reason `{decision.reason.value}`"])))
    blocks.extend(actions)
    # The plain text is what phones and screen readers show; it must stand on its own.
    # The header already says "Rolled back"; don't repeat the verb in the sentence after it.
    detail = (
        decision.message.removeprefix("rolled back ") if decision.reason is Reason.ROLLED_BACK else decision.message
    )
    text = escape(f"{head}: {detail}")
    return SlackMessage(text=text[:3000], blocks=tuple(blocks), channel=channel)
