"""Slack messages (Block Kit) for canary events: pure rendering, no I/O.

One message per canary decision that a human should hear about (``CanaryDecision.notify``):
start, each step, promotion, rollback, a wait for approval (with a "Promote" button) and a
timed-out step. Each names the service, the candidate and the stable revision, the candidate's
share now, and, when a judgement was made, the measured numbers behind it (candidate against
stable over the same window) and the reasons. The orchestration posts them threaded under the
canary's first message (``controller.canary_control``).
"""

from __future__ import annotations

from typing import Any

from controller.core.canary import CanaryDecision, Step
from controller.core.messages import SlackMessage, console_url
from controller.core.mrkdwn import escape, link
from controller.core.slack_blocks import context, fields, header, promote_blocks, section
from controller.core.state import ServiceRef

_HEADERS: dict[Step, str] = {
    Step.START: ":hatching_chick: Canary started on {service}",
    Step.STEP: ":arrow_up: Canary step on {service}",
    Step.PROMOTE: ":white_check_mark: Canary promoted on {service}",
    Step.ROLLBACK: ":rewind: Canary rolled back on {service}",
    Step.AWAIT_APPROVAL: ":raised_hand: Canary on {service} waits for approval",
    Step.TIMEOUT: ":hourglass: Canary on {service} is stuck (inconclusive)",
}
_DEFAULT = ":information_source: Canary on {service}: {step}"
UNCONFIRMED = " (operation not confirmed yet)"


def render_canary(
    ref: ServiceRef,
    decision: CanaryDecision,
    *,
    policy: str,
    channel: str | None = None,
    confirmed: bool = True,
) -> SlackMessage:
    """The message for one canary decision; AWAIT_APPROVAL carries the "Promote" button."""
    head = _HEADERS.get(decision.step, _DEFAULT).format(service=ref.service, step=decision.step.value)
    if not confirmed:
        head += UNCONFIRMED
    facts = [  # escaped: names and reasons may come from outside (controller/core/mrkdwn.py)
        f"*Service*\n{escape(ref.service)}",
        f"*Project / region*\n{escape(ref.project)} / {escape(ref.region)}",
        f"*Candidate*\n`{escape(decision.candidate or '?')}`",
        f"*Stable*\n`{escape(decision.stable or '?')}`",
        f"*Candidate's share now*\n{decision.percent}%",
    ]
    blocks: list[dict[str, Any]] = [
        header(head),
        section(escape(decision.message)),
        fields(facts),
    ]
    comparison = decision.comparison
    if comparison is not None and (comparison.lines or comparison.reasons):
        lines = [f"*Judgement: {comparison.judgement.value}* (candidate against stable, same window)"]
        lines += [f"• {escape(line)}" for line in comparison.lines]
        lines += [f"• _{escape(reason)}_" for reason in comparison.reasons]
        blocks.append(section("\n".join(lines)))
    console = link(console_url(ref.project, ref.region, ref.service), "Cloud Run console")
    blocks.append(context(f"{console} · policy `{escape(policy)}`"))
    if decision.step is Step.AWAIT_APPROVAL:
        blocks.extend(promote_blocks(ref, decision.candidate))
    # The plain text is what phones and screen readers show; it must stand on its own.
    return SlackMessage(text=escape(f"{head}: {decision.message}")[:3000], blocks=tuple(blocks), channel=channel)
