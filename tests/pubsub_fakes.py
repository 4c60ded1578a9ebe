"""An in-memory ``Publisher`` (controller.pubsub) and CloudEvents carrying what it captured, for tests
that do not need Google's Pub/Sub emulator (the ones that do start it: tests/integration/test_commands_pubsub.py)."""

from __future__ import annotations

import base64
import itertools
import threading
from collections.abc import Callable, Sequence

from cloudevents.http import CloudEvent

from controller.adapters.pubsub import PublishFailed

_ids = itertools.count(1)


class InMemoryPublisher:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.published: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()

    def publish_all(self, topic: str, messages: Sequence[bytes], *, timeout: float) -> list[str]:
        if self.fail:
            raise PublishFailed("injected: Pub/Sub unavailable")
        with self._lock:
            self.published.extend((topic, m) for m in messages)
            return [str(next(_ids)) for _ in messages]

    def publish_nowait(self, topic: str, data: bytes, on_error: Callable[[Exception], None]) -> None:
        if self.fail:
            on_error(PublishFailed("injected: Pub/Sub unavailable"))
            return
        with self._lock:
            self.published.append((topic, data))

    def flush(self, timeout: float) -> None:
        return None


def message_event(data: bytes, *, topic: str = "projects/demo-proj/topics/rollback-commands") -> CloudEvent:
    """The CloudEvent functions-framework hands ``handle_command`` for one Pub/Sub message."""
    msg_id = str(next(_ids))
    attrs = {
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": f"//pubsub.googleapis.com/{topic}",
        "id": msg_id,
        "specversion": "1.0",
    }
    body = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "messageId": msg_id,
            "publishTime": "2024-06-01T12:00:00Z",
        },
        "subscription": "projects/demo-proj/subscriptions/commands",
    }
    return CloudEvent(attrs, body)
