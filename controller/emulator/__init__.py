"""Local fakes of the services the controller talks to, speaking their real wire protocols.

There is no GCP or Slack in development and CI, so the real client libraries are pointed at these
emulators instead (``google-cloud-run`` over REST, ``slack_sdk`` over HTTP):

* :mod:`controller.emulator.cloudrun` — Cloud Run Admin API v2 (services, revisions, etag, LRO).
* :mod:`controller.emulator.slack` — Slack Web API (``chat.postMessage`` …) and incoming webhooks.
* ``python -m controller.emulator`` runs both for people, seeded with a sample service.

This module holds only the HTTP plumbing they share (stdlib only, so importing one emulator does not
drag in the other's client libraries): a threaded server on a background thread that can be stopped
cleanly, closing keep-alive connections instead of leaving handler threads blocked on them.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = ["BackgroundHTTPServer", "JsonHandler"]


class _TrackingServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that remembers its open connections so ``stop`` can close them."""

    daemon_threads = True
    # The stdlib join in server_close() is unbounded; handler threads are tracked and joined here
    # with a deadline instead (see process_request / join_handlers).
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._conns: set[socket.socket] = set()
        self._handlers: list[threading.Thread] = []
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True)
        with self._conns_lock:
            self._handlers = [t for t in self._handlers if t.is_alive()]
            self._handlers.append(thread)
        thread.start()

    def join_handlers(self, timeout: float) -> None:
        """Wait for handler threads to finish, at most ``timeout`` seconds in total."""
        deadline = time.monotonic() + timeout
        with self._conns_lock:
            handlers = list(self._handlers)
        for thread in handlers:
            thread.join(max(0.0, deadline - time.monotonic()))

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self._conns_lock:
            self._conns.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every handler blocked on an idle keep-alive connection so its thread can end."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class JsonHandler(BaseHTTPRequestHandler):
    """Request handler base: HTTP/1.1 keep-alive, no Nagle delay, quiet, with small reply helpers."""

    # Keep-alive lets the clients' requests.Session reuse one connection: a warm call costs ~1 ms.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY a delayed ACK can add ~40 ms.
    disable_nagle_algorithm = True
    # An idle keep-alive connection is dropped after this many seconds (bounds handler lifetime).
    timeout = 30
    # Request bodies larger than this are refused (413) — nothing legitimate comes close.
    max_body_bytes = 4 * 1024 * 1024

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr logging (tests and the CLI print their own)."""

    def read_body(self) -> bytes | None:
        """The request body, or ``None`` (after answering 413) when it is too large."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.max_body_bytes:
            self.reply(413, b"request body too large", "text/plain; charset=utf-8")
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def reply(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send one complete response with an explicit Content-Length (required for keep-alive)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class BackgroundHTTPServer:
    """Serve a handler class on ``host:port`` (0 = ephemeral) from a daemon thread.

    Subclasses build the handler in :meth:`handler_class`; ``start``/``stop`` and the context
    manager protocol are shared.
    """

    thread_name = "emulator"  # names the serving thread, for debugging

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: _TrackingServer | None = None
        self._thread: threading.Thread | None = None

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server (IPv6 hosts are bracketed)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def _start_server(self, thread_name: str) -> None:
        if self._server is not None:
            raise RuntimeError("emulator already started")
        server = _TrackingServer((self._host, self._port), self.handler_class())
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=thread_name)
        thread.daemon = True
        thread.start()
        self._server, self._thread = server, thread

    def start(self) -> Self:
        self._start_server(self.thread_name)
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving, close open connections, and wait (bounded) for the threads to finish."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        server.join_handlers(timeout=5)
        if thread is not None:
            thread.join(timeout=5)
