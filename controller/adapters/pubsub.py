"""Publishing to Pub/Sub: commands for ``handle_command`` and decision events.

Only Google's client library talks to Pub/Sub (``google.cloud.pubsub_v1.PublisherClient``),
imported on first use so that ``import main`` and a health check never load it. The library
honours ``PUBSUB_EMULATOR_HOST`` (plaintext gRPC, anonymous credentials; see
``wire/06-pubsub-emulator.md``), which is how the tests and the local stack use Google's real
Pub/Sub emulator.

Two ways to publish, for two kinds of message:

* :meth:`Publisher.publish_all` waits (bounded) until Pub/Sub has accepted every message and
  raises :class:`PublishFailed` otherwise: a command that was not accepted must not be answered
  as queued.
* :meth:`Publisher.publish_nowait` hands the message to the client's background batcher and
  returns at once; a failure is only logged by the caller's callback. Decision events use it:
  publishing must never block or undo an action.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from controller.core.errors import TemporaryError

log = logging.getLogger("controller.pubsub")

TOPIC_PATTERN = r"^projects/[^/\s]+/topics/[^/\s]+$"


class PublishFailed(TemporaryError):
    """Pub/Sub did not accept a message in time (the caller answers 503, or raises to be redelivered)."""


class Publisher(Protocol):
    def publish_all(self, topic: str, messages: Sequence[bytes], *, timeout: float) -> list[str]:
        """Publish and wait for every message id; raise PublishFailed if any is not accepted in time."""
        ...

    def publish_nowait(self, topic: str, data: bytes, on_error: Callable[[Exception], None]) -> None:
        """Publish in the background; ``on_error`` is called (on another thread) if it fails."""
        ...

    def flush(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for background publishes to finish."""
        ...


class PubSubPublisher:
    """``Publisher`` over google-cloud-pubsub; the client is built on first use and reused."""

    def __init__(self) -> None:
        self._client: Any = None
        self._lock = threading.Lock()
        self._pending: set[Any] = set()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import pubsub_v1  # type: ignore[attr-defined]

                self._client = pubsub_v1.PublisherClient()
            return self._client

    def warm(self, timeout: float = 5.0) -> None:
        """Build the client and connect its gRPC channel in the background, so that the first
        publish (a Slack press, with 3 s to answer) does not pay for the connection."""
        client = self.client()

        def connect() -> None:
            import grpc

            try:
                grpc.channel_ready_future(client.transport.grpc_channel).result(timeout=timeout)
            except Exception as exc:  # the first publish will connect (and report) instead
                log.info("pubsub: channel not ready yet", extra={"fields": {"error": type(exc).__name__}})

        threading.Thread(target=connect, name="pubsub-warm", daemon=True).start()

    def publish_all(self, topic: str, messages: Sequence[bytes], *, timeout: float) -> list[str]:
        import concurrent.futures

        client = self.client()
        try:
            futures = [client.publish(topic, data) for data in messages]
        except Exception as exc:  # e.g. the batcher refused (client closed, message too large)
            raise PublishFailed(f"publishing to {topic} failed: {type(exc).__name__}: {exc}") from None
        _, not_done = concurrent.futures.wait(futures, timeout=timeout)
        if not_done:
            raise PublishFailed(
                f"Pub/Sub did not accept {len(not_done)} of {len(futures)} message(s) in {timeout:.1f}s"
            )
        ids: list[str] = []
        for future in futures:
            try:
                ids.append(str(future.result(timeout=0)))
            except Exception as exc:
                raise PublishFailed(f"publishing to {topic} failed: {type(exc).__name__}: {exc}") from None
        return ids

    def publish_nowait(self, topic: str, data: bytes, on_error: Callable[[Exception], None]) -> None:
        try:
            future = self.client().publish(topic, data)
        except Exception as exc:
            on_error(exc)
            return
        with self._lock:
            self._pending.add(future)

        def done(f: Any) -> None:
            with self._lock:
                self._pending.discard(f)
            exc = f.exception()
            if exc is not None:
                on_error(exc)

        future.add_done_callback(done)

    def flush(self, timeout: float) -> None:
        import concurrent.futures

        with self._lock:
            pending = list(self._pending)
        if pending:
            concurrent.futures.wait(pending, timeout=timeout)


_shared: PubSubPublisher | None = None
_shared_lock = threading.Lock()


def shared_publisher() -> PubSubPublisher:
    """One publisher client per process (it owns a gRPC channel and a batching thread)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = PubSubPublisher()
        return _shared
