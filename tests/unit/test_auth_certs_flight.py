"""Token-signing certificates under a slow or failing endpoint (issue 12, point 11).

A real HTTP server on 127.0.0.1 serves the certificates; it can be held (each request waits on a
gate the test opens) or made to fail. The verifier runs with the real clock and real threads: a
fetch must never hold up requests whose key is already cached, concurrent requests share one
fetch, and a failed fetch is remembered briefly instead of being retried by every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tokens import SigningKey, google_claims, make_key

from controller.adapters.auth import AuthConfig, AuthError, IdTokenVerifier

AUDIENCE = "https://us-central1-demo-proj.cloudfunctions.net/rollback-http"
ALICE = "alice@example.com"
OLD, NEW = make_key("google-old"), make_key("google-new")


@dataclass
class SlowCerts:
    url: str = ""
    keys: list[SigningKey] = field(default_factory=lambda: [OLD])
    status: int = 200
    gate: threading.Event = field(default_factory=threading.Event)  # requests wait until it is set
    arrived: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def certs() -> Iterator[SlowCerts]:
    state = SlowCerts()
    state.gate.set()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.hits += 1
            state.arrived.release()
            state.gate.wait(10)
            body = json.dumps({k.kid: k.cert_pem for k in state.keys}).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/oauth2/v1/certs"
    try:
        yield state
    finally:
        state.gate.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def verifier_for(certs: SlowCerts) -> IdTokenVerifier:
    config = AuthConfig(audience=AUDIENCE, allowed_principals=(ALICE,), certs_url=certs.url)
    return IdTokenVerifier(config, min_refetch_interval=0.0)


def bearer(key: SigningKey) -> str:
    return f"Bearer {key.sign(google_claims(AUDIENCE, ALICE))}"


def in_thread(verifier: IdTokenVerifier, header: str) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(verifier.verify(header))
        except AuthError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_cached_key_is_not_held_up_by_a_refetch_in_flight(certs: SlowCerts) -> None:
    verifier = verifier_for(certs)
    verifier.verify(bearer(OLD))  # warm cache
    assert certs.arrived.acquire(timeout=5)
    certs.gate.clear()
    certs.keys = [OLD, NEW]
    rotated, rotated_outcome = in_thread(verifier, bearer(NEW))  # unknown kid: refetches (held)
    assert certs.arrived.acquire(timeout=5)  # the refetch reached the endpoint and waits there
    known, known_outcome = in_thread(verifier, bearer(OLD))
    known.join(timeout=3)
    finished_while_held = not known.is_alive()
    certs.gate.set()
    known.join(timeout=10)
    rotated.join(timeout=10)
    assert finished_while_held, "a request with a cached key waited for another request's fetch"
    assert [getattr(o, "email", o) for o in known_outcome] == [ALICE]
    assert [getattr(o, "email", o) for o in rotated_outcome] == [ALICE]
    assert certs.hits == 2


def test_concurrent_requests_on_a_cold_cache_share_one_fetch(certs: SlowCerts) -> None:
    verifier = verifier_for(certs)
    certs.gate.clear()
    threads = [in_thread(verifier, bearer(OLD)) for _ in range(6)]
    assert certs.arrived.acquire(timeout=5)
    certs.gate.set()
    for thread, _ in threads:
        thread.join(timeout=10)
    assert [getattr(o, "email", o) for _, out in threads for o in out] == [ALICE] * 6
    assert certs.hits == 1


def test_a_failed_fetch_is_remembered_briefly(certs: SlowCerts) -> None:
    certs.status = 500
    verifier = verifier_for(certs)
    for _ in range(5):
        with pytest.raises(AuthError) as refused:
            verifier.verify(bearer(OLD))
        assert (refused.value.failure.status, refused.value.failure.error) == (503, "certs_unavailable")
    assert certs.hits == 1  # one fetch failed; the next four answered 503 without asking again


def test_followers_of_a_failed_fetch_get_its_503(certs: SlowCerts) -> None:
    certs.status = 500
    certs.gate.clear()
    verifier = verifier_for(certs)
    threads = [in_thread(verifier, bearer(OLD)) for _ in range(4)]
    assert certs.arrived.acquire(timeout=5)
    certs.gate.set()
    for thread, _ in threads:
        thread.join(timeout=10)
    outcomes = [o for _, out in threads for o in out]
    assert len(outcomes) == 4
    assert all(isinstance(o, AuthError) and o.failure.status == 503 for o in outcomes)
    assert certs.hits == 1
