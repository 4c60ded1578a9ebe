"""The Slack message for a manual action: what, who, why, the traffic, and the next buttons. Pure.

Reasons and actors come from humans (the API, Slack names), so every field is escaped
(:mod:`controller.core.mrkdwn`). The buttons are :func:`controller.core.slack_blocks.action_blocks`.
"""

from __future__ import annotations

from typing import Any

from controller.core.manual_plans import ActionName, describe_traffic
from controller.core.manual_results import ActionResult
from controller.core.messages import SlackMessage, console_url
from controller.core.mrkdwn import escape, link
from controller.core.slack_blocks import action_blocks

_HEADERS: dict[ActionName, str] = {
    "rollback": ":rewind: Manual rollback of {service}",
    "undo": ":leftwards_arrow_with_hook: Undid the last action on {service}",
    "hold": ":pause_button: {service} is on hold",
    "release": ":arrow_forward: Hold released on {service}",
}


def render_action(result: ActionResult) -> SlackMessage:
    """The Slack message for a manual action: what, who, why, the traffic, and the next buttons."""
    ref = result.service
    head = _HEADERS[result.action].format(service=ref.service)
    if result.dry_run:
        head = f":test_tube: DRY RUN: {head} (traffic unchanged)"
    elif not result.changed:
        head = f":information_source: {ref.service}: {result.action}, nothing to change"
    # Reasons and actors come from humans (the API, Slack names): escaped (controller/core/mrkdwn.py).
    fields = [
        f"*Service*\n{escape(ref.service)}",
        f"*Project / region*\n{escape(ref.project)} / {escape(ref.region)}",
        f"*Actor*\n{escape(result.actor)}",
        f"*Traffic now*\n{escape(describe_traffic(result.traffic))}",
    ]
    if result.from_revision or result.to_revision:
        moved = f"`{escape(result.from_revision or '?')}` → `{escape(result.to_revision or '?')}`"
        fields.append(f"*From → to*\n{moved}")
    if result.reason:
        fields.append(f"*Reason*\n{escape(result.reason)}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": escape(result.message)[:2900]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:1900]} for f in fields[:10]]},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"{link(console_url(ref.project, ref.region, ref.service), 'Cloud Run console')} · "
                    f"manual `{result.action}`",
                }
            ],
        },
    ]
    if result.changed and not result.dry_run:
        held = result.hold is not None
        blocks.extend(action_blocks(ref, undo=result.action == "rollback", hold=not held, release=held))
    return SlackMessage(text=escape(f"{head}: {result.message}")[:3000], blocks=tuple(blocks))
