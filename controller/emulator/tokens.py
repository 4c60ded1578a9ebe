"""Local stand-in for Google's token-signing certificates, so the HTTP API can be tried with no cloud account.

``handle_http`` accepts Google-signed ID tokens only: it fetches the signing certificates from
``ROLLBACK_AUTH_CERTS_URL`` (Google's v1 form, a JSON object of key id -> x509 PEM,
https://www.googleapis.com/oauth2/v1/certs) and checks ``iss``, ``aud``, ``exp``/``iat``,
``email`` and ``email_verified`` (see ``controller.auth``). This module makes an RSA key with a
self-signed certificate, serves the certificate in that form on loopback, and signs RS256 ID
tokens with Google's claims for a local principal: ``GET /token`` answers a fresh one.

Only for a person at a terminal (``python -m controller.emulator --auth``) and for tests: the
tokens it signs are worthless against a controller that trusts Google's real certificates.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

CERTS_PATH = "/oauth2/v1/certs"
TOKEN_PATH = "/token"  # noqa: S105 (a URL path, not a secret)
TOKEN_LIFETIME_SECONDS = 3600  # what Google issues


@dataclass(frozen=True)
class SigningKey:
    """An RSA key and its self-signed certificate, named by key id (the JWT header's ``kid``)."""

    kid: str
    private_pem: bytes
    cert_pem: str

    @classmethod
    def generate(cls, kid: str) -> SigningKey:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kid)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls(kid, private_pem, cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))

    def sign(self, claims: dict[str, Any]) -> str:
        """An RS256 JWT over ``claims``, with this key's id in the header (as Google's tokens carry)."""
        from google.auth import crypt, jwt

        signer = crypt.RSASigner.from_string(self.private_pem, key_id=self.kid)  # type: ignore[no-untyped-call]
        token: bytes = jwt.encode(signer, claims)  # type: ignore[no-untyped-call]
        return token.decode("ascii")


def id_token_claims(audience: str, email: str, now: float) -> dict[str, Any]:
    """The claims Google puts in an ID token for a signed-in account (valid for an hour from ``now``)."""
    return {
        "iss": "https://accounts.google.com",
        "aud": audience,
        "sub": str(int(hashlib.sha256(email.encode()).hexdigest(), 16))[:21],  # a stable numeric id
        "email": email,
        "email_verified": True,
        "iat": int(now) - 10,
        "exp": int(now) + TOKEN_LIFETIME_SECONDS,
    }


@dataclass
class TokenIssuer:
    """Serves the certificate (``GET /oauth2/v1/certs``) and fresh ID tokens (``GET /token``) on loopback."""

    audience: str
    principal: str
    host: str = "127.0.0.1"
    port: int = 0
    key: SigningKey = field(default_factory=lambda: SigningKey.generate("local-emulator-key"))
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def token(self, email: str | None = None) -> str:
        return self.key.sign(id_token_claims(self.audience, email or self.principal, time.time()))

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the token issuer is not running; call start() first")
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def certs_url(self) -> str:
        return self.url + CERTS_PATH

    def start(self) -> Self:
        issuer = self
        certs = json.dumps({self.key.kid: self.key.cert_pem}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path == CERTS_PATH:
                    body, kind = certs, "application/json"
                elif url.path == TOKEN_PATH:
                    email = (urllib.parse.parse_qs(url.query).get("email") or [""])[0]
                    body, kind = (issuer.token(email or None) + "\n").encode(), "text/plain"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Cache-Control", "public, max-age=3600")  # as Google's certs answer
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="token-issuer")
        thread.daemon = True
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
