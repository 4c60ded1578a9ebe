"""Editing the Slack message a button sits on, and answering only the presser.

Used by :class:`controller.surfaces.slack_actions.SlackActionHandler`: the buttons are replaced by
"in progress" while a queued command runs, put back when it was refused or failed, replaced by the
outcome (with the next buttons) once it is done, and a refusal is told ephemerally through the
payload's ``response_url`` (Slack shows nothing from an interaction's HTTP body). The blocks come
from :mod:`controller.core.slack_blocks`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from controller.core.messages import SlackMessage
from controller.core.mrkdwn import escape
from controller.core.slack_blocks import (
    BLOCK_ID,
    MAX_BLOCKS,
    MESSAGE_TEXT_CHARS,
    PROMOTE_BLOCK_ID,
    BlockActions,
    action_blocks,
    actor_of,
    context,
    section,
)

if TYPE_CHECKING:
    from controller.adapters.slack import Notifier
    from controller.core.manual_results import ActionResult

log = logging.getLogger("controller.slack_actions")

RESPONSE_URL_TIMEOUT: Final = 2.0  # seconds; we are inside Slack's 3 s budget


class SlackReplies:
    """The message edits and ephemeral answers of one handler (``response_prefixes``: allowed URLs)."""

    def __init__(self, notifier: Notifier, response_prefixes: list[str]) -> None:
        self._notifier = notifier
        self._response_prefixes = response_prefixes

    @staticmethod
    def channel(payload: BlockActions) -> str:
        return payload.container.channel_id or (payload.channel.id if payload.channel else "")

    def replace_buttons(self, payload: BlockActions, line: str) -> bool:
        """Show ``line`` where the buttons were (so nobody presses twice while the command runs)."""
        channel, ts = self.channel(payload), payload.container.message_ts
        if not channel or not ts or payload.message is None:
            return False
        kept = [b for b in payload.message.blocks if b.get("block_id") not in (BLOCK_ID, PROMOTE_BLOCK_ID)]
        tail = context(line)
        blocks = (*kept[: MAX_BLOCKS - 1], tail)
        text = f"{payload.message.text} — {line}"[:MESSAGE_TEXT_CHARS]
        return self._notifier.update(channel, ts, SlackMessage(text=text, blocks=blocks, channel=channel))

    def restore(self, payload: BlockActions, line: str) -> bool:
        """Put the original message (with its buttons) back, with ``line`` under it: the queued
        press was refused, failed or expired, so the buttons must be usable again."""
        channel, ts = self.channel(payload), payload.container.message_ts
        if not channel or not ts or payload.message is None:
            return False
        note = context(line)
        blocks = (*payload.message.blocks[: MAX_BLOCKS - 1], note)
        text = payload.message.text[:MESSAGE_TEXT_CHARS] or line[:MESSAGE_TEXT_CHARS]
        return self._notifier.update(channel, ts, SlackMessage(text=text, blocks=blocks, channel=channel))

    def update_message(self, payload: BlockActions, result: ActionResult) -> bool:
        from controller.core.manual_messages import render_action
        from controller.core.manual_plans import describe_traffic

        channel = self.channel(payload)
        ts = payload.container.message_ts
        outcome = render_action(result)
        if not channel or not ts or payload.message is None:
            # Not a button on a message (or Slack left the message out): say it in a new one.
            return self._notifier.post(outcome)
        kept = [b for b in payload.message.blocks if b.get("block_id") != BLOCK_ID]
        who = f"<@{escape(payload.user.id)}>"
        verb = {"undo": "Undone", "hold": "Held", "release": "Hold released"}[result.action]
        if not result.changed:
            verb = f"{verb.split()[0]} (nothing to change)"
        line = f"*{verb}* by {who}: {escape(result.message)}. Traffic now: {escape(describe_traffic(result.traffic))}"
        held = result.hold is not None
        buttons = action_blocks(result.service, undo=False, hold=not held, release=held)
        tail: list[dict[str, Any]] = [section(line), *buttons]
        blocks = kept[: MAX_BLOCKS - len(tail)] + tail
        # payload.message.text is Slack's stored text (already escaped when we posted it).
        text = f"{payload.message.text} — {verb} by {escape(actor_of(payload.user))}"[:MESSAGE_TEXT_CHARS]
        return self._notifier.update(channel, ts, SlackMessage(text=text, blocks=tuple(blocks), channel=channel))

    def promoted(self, payload: BlockActions, verb: str, message: str) -> bool:
        """Replace the "Promote" button by who approved (``verb``: Promoted / Approved) and the tick's message."""
        channel, ts = self.channel(payload), payload.container.message_ts
        if not channel or not ts or payload.message is None:
            return False
        kept = [b for b in payload.message.blocks if b.get("block_id") != PROMOTE_BLOCK_ID]
        line = f"*{verb}* by <@{escape(payload.user.id)}>: {escape(message)}"
        blocks = [*kept[: MAX_BLOCKS - 1], section(line)]
        text = f"{payload.message.text} — {verb} by {escape(actor_of(payload.user))}"[:MESSAGE_TEXT_CHARS]
        return self._notifier.update(channel, ts, SlackMessage(text=text, blocks=tuple(blocks), channel=channel))

    def ephemeral(self, payload: BlockActions, text: str, *, error: str = "refused") -> dict[str, Any]:
        """Tell only the presser: via response_url (Slack ignores an interaction's HTTP body) and in the body."""
        log.info("slack action not performed", extra={"fields": {"slack_user": payload.user.id, "error": error}})
        answer = {"response_type": "ephemeral", "replace_original": False, "text": escape(text)}
        url = payload.response_url
        if url and any(url.startswith(prefix) for prefix in self._response_prefixes):
            self._post_response_url(url, answer)
        return {"ok": False, "error": error, **answer}

    def _post_response_url(self, url: str, answer: dict[str, Any]) -> None:
        from slack_sdk.webhook import WebhookClient

        try:
            response = WebhookClient(url, timeout=int(RESPONSE_URL_TIMEOUT)).send_dict(answer)
        except Exception as exc:  # never let Slack's side turn a refusal into a 500
            log.warning("slack: response_url post failed", extra={"fields": {"slack_error": type(exc).__name__}})
            return
        if response.status_code != 200:
            log.warning("slack: response_url refused", extra={"fields": {"slack_status": response.status_code}})
