"""The publishing side of commands: what ``handle_http`` (and a Slack handover) puts on
``ROLLBACK_COMMANDS_TOPIC`` for ``handle_command`` to execute (see :mod:`controller.commands`).

Publishing waits until Pub/Sub has accepted the message (bounded by ``timeout``): a command is
answered as queued only once it really is.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from controller.adapters.clock import utc_now
from controller.adapters.pubsub import Publisher, PublishFailed, shared_publisher
from controller.core.commands import (
    CanaryTickCommand,
    QueuedMessage,
    SlackActionCommand,
    SlackActionName,
    SlackMessageCommand,
    encode,
)
from controller.core.messages import SlackMessage
from controller.core.state import ServiceRef

log = logging.getLogger("controller.commands")

Clock = Callable[[], datetime]
PUBLISH_TIMEOUT = 0.7  # seconds: the Slack path answers within 1 s in all
FLEET_PUBLISH_TIMEOUT = 20.0  # seconds for a fleet tick's whole batch
HANDOVER_TIMEOUT = 5.0
CONTROLLER_ACTOR = "rollback-controller"


def new_id() -> str:
    return uuid.uuid4().hex


class CommandQueue:
    def __init__(self, topic: str, publisher: Publisher, clock: Clock = utc_now) -> None:
        self.topic = topic
        self.publisher = publisher
        self.clock = clock

    def slack_action(
        self, ref: ServiceRef, action: SlackActionName, *, actor: str, slack: dict[str, Any], candidate: str = ""
    ) -> str:
        command = SlackActionCommand(
            v=1,
            id=new_id(),
            kind="slack-action",
            service=ref,
            action=action,
            candidate=candidate,
            actor=actor[:200],
            requested_at=self.clock(),
            slack=slack,
        )
        self.publisher.publish_all(self.topic, [encode(command)], timeout=PUBLISH_TIMEOUT)
        return command.id

    def canary_ticks(self, refs: Sequence[ServiceRef], *, actor: str) -> list[str]:
        now = self.clock()
        commands = [
            CanaryTickCommand(v=1, id=new_id(), kind="canary-tick", service=ref, actor=actor[:200], requested_at=now)
            for ref in refs
        ]
        if commands:
            self.publisher.publish_all(self.topic, [encode(c) for c in commands], timeout=FLEET_PUBLISH_TIMEOUT)
        return [c.id for c in commands]

    def slack_message(self, message: SlackMessage, thread_ts: str | None, first_try: datetime) -> bool:
        """Hand a Slack message over; False (logged) if even Pub/Sub does not take it."""
        command = SlackMessageCommand(
            v=1,
            id=new_id(),
            kind="slack-message",
            actor=CONTROLLER_ACTOR,
            requested_at=first_try,
            message=QueuedMessage(
                channel=message.channel or "", text=message.text, blocks=message.blocks, thread_ts=thread_ts or ""
            ),
        )
        try:
            self.publisher.publish_all(self.topic, [encode(command)], timeout=HANDOVER_TIMEOUT)
        except PublishFailed as exc:
            log.error(
                "slack: could not queue the message either; it is lost (the decision stands and is logged)",
                extra={"fields": {"error": str(exc), "command_id": command.id}},
            )
            return False
        log.info("slack: message handed over", extra={"fields": {"command_id": command.id, "topic": self.topic}})
        return True


def slack_handover(topic: str) -> Callable[[SlackMessage, str | None, datetime], bool]:
    """The notifier's handover hook: a ``slack-message`` command on ``topic``."""
    return CommandQueue(topic, shared_publisher()).slack_message
