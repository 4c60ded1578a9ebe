"""RS256 signing keys with self-signed certificates, for minting Google-style ID tokens in tests.

The controller fetches token-signing certificates from ``ROLLBACK_AUTH_CERTS_URL`` in the form
Google serves them (key id → x509 PEM); tests serve these keys' certificates locally and sign
tokens with the private halves.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt


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
    return SigningKey(
        kid=kid, private_pem=private_pem, cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    )
