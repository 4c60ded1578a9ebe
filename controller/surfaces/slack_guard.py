"""Checks on a Slack button press after its signature: workspace, origin of the value, replays.

``SlackActionHandler.handle`` calls :meth:`SlackGuard.check` right after the signature and the
user were verified, before anything is performed:

* **Workspace pinned** (``ROLLBACK_SLACK_TEAM_ID``): a signed request from another workspace the
  app is installed in (same signing secret) is refused with 403. Slack puts the workspace in the
  payload's ``team.id`` (and ``user.team_id``). Unset: any workspace of the app is accepted.
* **The value must come from the message**: Slack sends the message the button was on
  (``message``); the pressed ``action_id``/``value`` must be one of that message's own buttons,
  and the service it names (``project/region/service``, valid names; a Promote button's
  candidate too) must be named in the message's text. A button value naming another service,
  or a press without its message, is refused (ephemeral answer).
* **Replay memory**: Slack's signature is valid for five minutes (the verifier's window), so a
  captured request could be sent again and, say, re-apply a Hold after someone released it. A
  press is identified by its signed timestamp and body (each press has its own ``action_ts``, so
  two real presses never collide); one seen in the last window is refused. The memory is per
  process and bounded (``MAX_REMEMBERED`` entries): two instances do not share it, which is the
  limit of a stateless function; each still refuses a replay it received itself.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from controller.core import names

if TYPE_CHECKING:
    from controller.core.slack_blocks import BlockActions, SlackAction

log = logging.getLogger("controller.slack_actions")

REPLAY_WINDOW_SECONDS: Final = 5 * 60  # the signature verifier's window (controller.auth)
MAX_REMEMBERED: Final = 10_000


@dataclass(frozen=True)
class Refusal:
    error: str
    text: str
    tell: bool = True  # post an ephemeral answer to the presser (not for a replay: nobody pressed)


def _texts(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "text" and isinstance(value, str):
                yield value
            else:
                yield from _texts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _texts(value)


def _buttons(blocks: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for block in blocks:
        if block.get("type") != "actions":
            continue
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("type") == "button":
                yield str(element.get("action_id", "")), str(element.get("value", ""))


def _header(headers: Mapping[str, str], name: str) -> str:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), "")


class SlackGuard:
    def __init__(
        self,
        *,
        team_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        window: float = 2 * REPLAY_WINDOW_SECONDS,  # a timestamp may be 5 min off either way
    ) -> None:
        self.team_id = team_id
        self._clock = clock
        self._window = window
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, payload: BlockActions, body: bytes, headers: Mapping[str, str]) -> Refusal | None:
        """None if the press may be performed; raises AuthError (403) for another workspace."""
        self._check_team(payload)
        if payload.type != "block_actions":
            return None
        if not self._first_time(body, headers):
            log.warning("slack action refused: replayed request", extra={"fields": {"slack_user": payload.user.id}})
            return Refusal("replayed", "this button press was already received; not applied again", tell=False)
        return self._from_message(payload, payload.actions[0])

    def _check_team(self, payload: BlockActions) -> None:
        if not self.team_id:
            return
        team = payload.team.id if payload.team is not None else payload.user.team_id
        if team != self.team_id:
            from controller.adapters.auth import AuthError

            raise AuthError.of(403, "wrong_workspace", "this Slack workspace may not act on this controller")

    def _first_time(self, body: bytes, headers: Mapping[str, str]) -> bool:
        stamp = _header(headers, "X-Slack-Request-Timestamp")
        key = hashlib.sha256(stamp.encode() + b":" + body).hexdigest()
        now = self._clock()
        with self._lock:
            while self._seen:
                oldest, at = next(iter(self._seen.items()))
                if now - at <= self._window and len(self._seen) < MAX_REMEMBERED:
                    break
                del self._seen[oldest]
            if key in self._seen:
                return False
            self._seen[key] = now
            return True

    def _from_message(self, payload: BlockActions, action: SlackAction) -> Refusal | None:
        message = payload.message
        if message is None:
            return Refusal("no_message", "cannot check this button: Slack did not send the message it was on")
        if (action.action_id, action.value) not in set(_buttons(message.blocks)):
            return Refusal("not_on_message", "this button's value is not one of the message's own buttons")
        parts = action.value.split("/")
        coordinates = dict(zip(("project", "region", "service", "revision"), parts, strict=False))
        bad = [why for kind, value in coordinates.items() if (why := names.problem(kind, value))]
        if len(parts) not in (3, 4) or bad:
            return Refusal("invalid_value", "this button does not name a valid service: " + "; ".join(bad[:2]))
        text = "\n".join([message.text, *_texts(message.blocks)])
        # The service (and a Promote button's candidate) must be what the message is about.
        named = [coordinates["service"], *([coordinates["revision"]] if "revision" in coordinates else [])]
        missing = [value for value in named if value not in text]
        if missing:
            shown = names.shown(action.value)
            return Refusal("not_on_message", f"this button names {shown}, not this message's service")
        return None
