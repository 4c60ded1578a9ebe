"""Slack buttons on the controller's messages: "Undo" and "Hold" (and "Release" once held), and
"Promote" on a canary waiting for approval.

Two halves:

* **Building** (pure, :mod:`controller.core.slack_blocks`): :func:`action_blocks` makes the Block Kit
  ``actions`` block. Each button's ``value`` carries the service coordinates compactly as
  ``project/region/service`` (none of the three may contain ``/``; well under Slack's 2000
  characters), so pressing it needs no other state.
* **Handling** ``POST /slack/actions`` (:func:`handle_block_actions`): verify the Slack signature
  on the *raw* body first (before anything parses the form), parse the ``block_actions``
  payload, admit only allowed Slack users, perform the action through
  :class:`controller.manual.ManualControl` as actor ``slack:<user id> (<name>)`` and replace the
  original message (``chat.update``) with its outcome and the next buttons. "Promote"
  (:func:`promote_blocks`, value ``project/region/service/candidate``) approves the canary's last
  step through :meth:`controller.canary_control.CanaryControl.approve` as ``slack:<user id>``;
  an approval only allows a promotion, it never delays a rollback.

Slack wants an HTTP 200 within 3 seconds, and a Cloud Function may do no work after answering, so
a press is *dispatched* (:meth:`SlackActionHandler.dispatch`) one of two ways:

* **queued** (``ROLLBACK_COMMANDS_TOPIC`` set): a ``slack-action`` command is published
  (:mod:`controller.commands`), the message's buttons are replaced by "Undoing … (requested by
  @user)", and the answer goes out well within a second; ``handle_command`` later calls
  :meth:`SlackActionHandler.execute` with ``queued=True``: temporary failures raise for
  redelivery, a refusal puts the buttons back, the outcome is also posted in the thread, and the
  command id is recorded in the ledger with the effect so a redelivery does nothing;
* **inline** (no topic: the emulators, or a function with minimum instances): executed on a small
  pool with one deadline for the whole request (:data:`INLINE_DEADLINE`); past it the answer says
  "in progress" and the action finishes on its thread. The ``ManualControl`` used here has short
  API and operation timeouts and few conflict retries (see ``controller.api``), and an update
  whose operation has not finished in time is reported as accepted-but-unconfirmed.

Anything that refuses or fails answers 200 with an ephemeral text (also posted to the payload's
``response_url``, since Slack shows nothing from an interaction's HTTP body), never a silent error.
The message edits and the ephemeral answers are in :mod:`controller.surfaces.slack_replies`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from controller.core.canary import Step
from controller.core.commands import SlackActionName
from controller.core.errors import ControllerError, ServiceNotFound, TemporaryError
from controller.core.slack_blocks import (
    ACTION_HOLD,
    ACTION_PROMOTE,
    ACTION_RELEASE,
    ACTION_UNDO,
    BLOCK_ID,
    BlockActions,
    actor_of,
    parse_button_value,
    parse_payload,
    parse_promote_value,
)
from controller.core.state import ServiceRef
from controller.surfaces.slack_replies import SlackReplies

if TYPE_CHECKING:
    from controller.adapters.auth import SlackVerifier
    from controller.adapters.command_queue import CommandQueue
    from controller.adapters.slack import Notifier
    from controller.app.canary_control import CanaryControl
    from controller.app.manual import ManualControl
    from controller.surfaces.slack_guard import SlackGuard

log = logging.getLogger("controller.slack_actions")

SLACK_HOOKS_PREFIX: Final = "https://hooks.slack.com/"
INLINE_DEADLINE: Final = 2.5  # seconds for a whole inline request (Slack gives up at 3)
# Inline presses run here so the request can be answered at the deadline while the action
# finishes; bounded, a few presses at once is all Slack ever sends.
_INLINE_POOL: Final = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="slack-inline")


# --------------------------------------------------------------------------- handling


@dataclass(frozen=True)
class Pressed:
    """A validated button press: what to do to which service (``candidate``: the Promote button's)."""

    action: SlackActionName
    ref: ServiceRef
    candidate: str = ""


_KINDS: Final[dict[str, SlackActionName]] = {ACTION_UNDO: "undo", ACTION_HOLD: "hold", ACTION_RELEASE: "release"}
_PENDING: Final[dict[str, str]] = {
    "undo": "Undoing the last action on {service}…",
    "hold": "Putting {service} on hold…",
    "release": "Releasing the hold on {service}…",
    "promote": "Approving the promotion of {service}…",
}
Reply = tuple[dict[str, Any], int]


class SlackActionHandler:
    """Performs button presses; built once per process by ``controller.api``.

    ``handle`` = verify → parse → check the user → :meth:`validate` → :meth:`dispatch`. With a
    command queue (ROLLBACK_COMMANDS_TOPIC), ``dispatch`` publishes a ``slack-action`` command and
    marks the message as in progress; ``handle_command`` later calls :meth:`execute`. Without
    one, ``dispatch`` executes inline within :data:`INLINE_DEADLINE` for the whole request.
    """

    def __init__(
        self,
        verifier: SlackVerifier,
        control: ManualControl,
        notifier: Notifier,
        *,
        slack_api_url: str | None = None,
        canary: CanaryControl | None = None,
        guard: SlackGuard | None = None,
        commands: CommandQueue | None = None,
        inline_deadline: float = INLINE_DEADLINE,
    ) -> None:
        from controller.surfaces.slack_guard import SlackGuard

        self._guard = guard or SlackGuard()
        self._verifier = verifier
        self._control = control
        self._notifier = notifier
        self._canary = canary
        self._commands = commands
        self._inline_deadline = inline_deadline
        prefixes = [SLACK_HOOKS_PREFIX]
        if slack_api_url:
            # A local Slack emulator (ROLLBACK_SLACK_API_URL) also serves response URLs.
            parts = urllib.parse.urlsplit(slack_api_url)
            prefixes.append(f"{parts.scheme}://{parts.netloc}/")
        self._replies = SlackReplies(notifier, prefixes)

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Reply:
        """Answer one interaction request. Raises ``AuthError`` for signature and user refusals."""
        started = time.monotonic()
        self._verifier.verify(body, headers)  # on the raw bytes, before any parsing
        try:
            payload = parse_payload(body)
        except ValueError as exc:
            return {
                "error": "invalid_request",
                "message": str(exc),
                "fields": [{"field": "payload", "message": str(exc)}],
            }, 422
        self._verifier.check_user(payload.user.id)
        # Workspace, the value against its own message, replays (controller/surfaces/slack_guard.py).
        refusal = self._guard.check(payload, body, headers)
        if refusal is not None:
            if not refusal.tell:
                return {"ok": False, "error": refusal.error, "message": refusal.text}, 200
            return self._replies.ephemeral(payload, refusal.text, error=refusal.error), 200
        pressed = self.validate(payload)
        if not isinstance(pressed, Pressed):
            return pressed
        return self.dispatch(payload, pressed, started=started)

    def validate(self, payload: BlockActions) -> Pressed | Reply:
        """Which button, on which service: a :class:`Pressed`, or the (ephemeral) refusal to answer."""
        if payload.type != "block_actions":
            return self._replies.ephemeral(payload, f"interaction type {payload.type!r} is not handled"), 200
        action = payload.actions[0]  # Slack sends one action per button press
        if action.action_id == ACTION_PROMOTE:
            if self._canary is None and self._commands is None:
                return self._replies.ephemeral(
                    payload, "canary control is not configured here", error="not_configured"
                ), 200
            try:
                ref, candidate = parse_promote_value(action.value)
            except ValueError as exc:
                return self._replies.ephemeral(payload, f"cannot tell which canary this button is for: {exc}"), 200
            return Pressed("promote", ref, candidate)
        kind = _KINDS.get(action.action_id)
        if kind is None:
            return self._replies.ephemeral(payload, f"unknown button {action.action_id!r}"), 200
        try:
            ref = parse_button_value(action.value)
        except ValueError as exc:
            return self._replies.ephemeral(payload, f"cannot tell which service this button is for: {exc}"), 200
        return Pressed(kind, ref)

    def dispatch(self, payload: BlockActions, pressed: Pressed, *, started: float) -> Reply:
        if self._commands is not None:
            return self._enqueue(payload, pressed, self._commands)
        return self._inline(payload, pressed, started)

    def execute(self, payload: BlockActions, pressed: Pressed, *, command_id: str = "", queued: bool = False) -> Reply:
        """Perform the press. ``queued`` (from ``handle_command``): temporary failures raise (Pub/Sub
        redelivers), a refusal restores the message's buttons, and the outcome is also posted in
        the message's thread."""
        if pressed.action == "promote":
            return self._promote(payload, pressed.ref, pressed.candidate, queued=queued)
        return self._perform(payload, pressed.action, pressed.ref, command_id=command_id, queued=queued)

    # -- the two dispatch modes -----------------------------------------------------------------
    def _enqueue(self, payload: BlockActions, pressed: Pressed, commands: CommandQueue) -> Reply:
        from controller.adapters.pubsub import PublishFailed

        actor = actor_of(payload.user)
        # The message says "in progress" *before* the command exists: the worker's outcome update
        # can then never be overwritten by this one.
        pending = _PENDING[pressed.action].format(service=pressed.ref.service) + f" (requested by <@{payload.user.id}>)"
        updated = self._replies.replace_buttons(payload, f":hourglass_flowing_sand: {pending}")
        try:
            command_id = commands.slack_action(
                pressed.ref,
                pressed.action,
                actor=actor,
                slack=payload.model_dump(mode="json"),
                candidate=pressed.candidate,
            )
        except PublishFailed as exc:
            log.error("slack action not queued", extra={"fields": {"error": str(exc), "slack_user": payload.user.id}})
            # A publish that timed out may still land: say so rather than promise nothing happened
            # (the guards make a second press harmless: a second undo is refused, holds are idempotent).
            text = (
                f":warning: the {pressed.action} of {pressed.ref.service} could not be queued ({exc}); "
                "it may still run: check the service before pressing again"
            )
            if updated:
                self.restore(payload, text)
            return self._replies.ephemeral(payload, text, error="unavailable"), 200
        log.info(
            "slack action queued",
            extra={
                "fields": {
                    "event": "slack-action",
                    "command_id": command_id,
                    "action": pressed.action,
                    "service": pressed.ref.model_dump(),
                    "actor": actor,
                    "slack_updated": updated,
                }
            },
        )
        return {"ok": True, "queued": True, "command_id": command_id, "slack_updated": updated}, 200

    def _inline(self, payload: BlockActions, pressed: Pressed, started: float) -> Reply:
        """Execute now, answering within the deadline whatever Cloud Run does: past it, the answer
        says "in progress" and the action finishes (and updates the message) on its thread. Fit for
        the emulators or a function with minimum instances (CPU stays allocated after answering)."""
        future = _INLINE_POOL.submit(self.execute, payload, pressed)
        left = max(0.05, self._inline_deadline - (time.monotonic() - started))
        try:
            return future.result(timeout=left)
        except concurrent.futures.TimeoutError:
            log.warning(
                "slack action still running at the answer deadline",
                extra={"fields": {"action": pressed.action, "service": pressed.ref.model_dump(), "deadline_s": left}},
            )
            return {"ok": True, "pending": True, "message": "still in progress; the message is updated when done"}, 200

    # -- performing ----------------------------------------------------------------------------
    def _perform(
        self, payload: BlockActions, kind: SlackActionName, ref: ServiceRef, *, command_id: str, queued: bool
    ) -> Reply:
        from controller.app.manual import Refused, perform
        from controller.core.errors import TemporaryError
        from controller.core.manual_messages import render_action
        from controller.core.manual_results import result_json

        actor = actor_of(payload.user)
        reason = "pressed in Slack"
        try:
            result = perform(self._control, kind, ref, actor=actor, reason=reason, notify=False, command_id=command_id)
        except Refused as exc:
            text = f":no_entry: {kind} refused for {ref.service} ({exc.refusal.guard}): {exc.refusal.message}"
            return self._refuse(payload, text, exc.refusal.guard, queued), 200
        except ServiceNotFound:
            return self._refuse(payload, f":no_entry: service {ref} not found", "service_not_found", queued), 200
        except TemporaryError:
            if queued:
                raise  # Pub/Sub redelivers; the ledger makes that safe
            text = (
                f":warning: {kind} of {ref.service} failed: Cloud Run is unavailable; check the service before retrying"
            )
            return self._refuse(payload, text, "failed", queued), 200
        except ControllerError as exc:
            text = f":warning: {kind} of {ref.service} failed: {exc}; check the service before retrying"
            return self._refuse(payload, text, "failed", queued), 200
        if result.duplicate:
            return {"ok": True, "duplicate": True, **result_json(result)}, 200
        updated = self._replies.update_message(payload, result)
        threaded = None
        if queued and payload.container.message_ts:
            # The outcome, with its numbers, as a reply; the buttons stay on the message itself.
            reply = render_action(result)
            blocks = tuple(b for b in reply.blocks if b.get("block_id") != BLOCK_ID)
            threaded = self._notifier.post_in_thread(
                reply.model_copy(update={"channel": self._replies.channel(payload) or None, "blocks": blocks}),
                payload.container.message_ts,
            )
        return {
            "ok": True,
            "slack_updated": updated,
            "slack_threaded": threaded is not None,
            **result_json(result),
        }, 200

    def _promote(self, payload: BlockActions, ref: ServiceRef, candidate: str, *, queued: bool) -> Reply:
        """The canary "Promote" button: approve (a tick with ``approved_by``) and note it on the message."""
        from controller.app.canary_reports import report_json

        if self._canary is None:
            return self._replies.ephemeral(
                payload, "canary control is not configured here", error="not_configured"
            ), 200
        actor = actor_of(payload.user)
        try:
            report = self._canary.approve(ref, actor, candidate)
        except ServiceNotFound:
            return self._refuse(payload, f":no_entry: service {ref} not found", "service_not_found", queued), 200
        except TemporaryError:
            if queued:
                raise
            text = f":warning: promote of {ref.service} failed: Cloud Run is unavailable; check the service, retry"
            return self._refuse(payload, text, "failed", queued), 200
        except ControllerError as exc:
            text = f":warning: promote of {ref.service} failed: {exc}; check the service before retrying"
            return self._refuse(payload, text, "failed", queued), 200
        verb = "Promoted" if report.step is Step.PROMOTE else "Approved"
        updated = self._replies.promoted(payload, verb, report.message)
        return {"ok": True, "slack_updated": updated, **report_json(report)}, 200

    # -- the message the buttons sit on ----------------------------------------------------------
    def restore(self, payload: BlockActions, line: str) -> bool:
        """Put the original message (with its buttons) back, with ``line`` under it (``SlackReplies.restore``)."""
        return self._replies.restore(payload, line)

    def _refuse(self, payload: BlockActions, text: str, error: str, queued: bool) -> dict[str, Any]:
        if queued:
            self.restore(payload, text)
        return self._replies.ephemeral(payload, text, error=error)
