"""RS256 signing keys with self-signed certificates, for minting Google-style ID tokens in tests.

The controller fetches token-signing certificates from ``ROLLBACK_AUTH_CERTS_URL`` in the form
Google serves them (key id → x509 PEM); tests serve these keys' certificates locally and sign
tokens with the private halves.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.auth import crypt, jwt

from controller.emulator.tokens import SigningKey as GeneratedKey


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: bytes
    cert_pem: str

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        """RS256 JWT over ``claims`` with header kid ``kid`` (default: this key's; "" = none)."""
        signer = crypt.RSASigner.from_string(self.private_pem)  # type: ignore[no-untyped-call]
        header_kid = self.kid if kid is None else (kid or None)
        token: bytes = jwt.encode(signer, claims, key_id=header_kid)  # type: ignore[no-untyped-call]
        return token.decode("ascii")


def make_key(kid: str) -> SigningKey:
    """A fresh RSA key and self-signed certificate: the same generator the emulator's token issuer uses."""
    generated = GeneratedKey.generate(kid)
    return SigningKey(kid=generated.kid, private_pem=generated.private_pem, cert_pem=generated.cert_pem)


def google_claims(audience: str, email: str, /, **overrides: Any) -> dict[str, Any]:
    """The claims of a valid Google ID token for ``email`` and ``audience``, valid for an hour."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "https://accounts.google.com",
        "aud": audience,
        "sub": "110169484474386276334",
        "email": email,
        "email_verified": True,
        "iat": now - 10,
        "exp": now + 3600,
    }
    claims.update(overrides)
    return claims


@contextlib.contextmanager
def serve_certs(*keys: SigningKey) -> Iterator[str]:
    """Serve ``keys``' certificates on loopback in Google's v1 form; yields the certificates URL."""
    body = json.dumps({key.kid: key.cert_pem for key in keys}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "public, max-age=3600")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/oauth2/v1/certs"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
