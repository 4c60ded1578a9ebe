"""The ID-token check on google-auth (issue 8, point 4): whose clock decides, and what stays ours.

google-auth's ``jwt.decode`` verifies the signature and checks ``iat``/``exp`` on the *system*
clock; the verifier's clock is injectable and is the authority (see controller.adapters.id_tokens).
These cases pin that down from both sides: a verifier on the real clock still answers
``expired_token`` / ``invalid_token`` when google-auth's own window refuses first, and an injected
clock far from the system clock decides alone. Certificates come from an injected fetcher.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from google.oauth2 import id_token as google_id_token
from tokens import SigningKey, google_claims, make_key

from controller.adapters.auth import (
    CLOCK_SKEW_SECONDS,
    GOOGLE_CERTS_URL,
    GOOGLE_ISSUERS,
    AuthConfig,
    AuthError,
    FetchedCerts,
    IdTokenVerifier,
)

AUDIENCE = "https://europe-west1-demo-project.cloudfunctions.net/rollback"
ALICE = "alice@example.com"
KEY = make_key("google-1")
SKEW = int(CLOCK_SKEW_SECONDS)


def verifier(clock: Any = time.time, *, trust_platform: bool = False, key: SigningKey = KEY) -> IdTokenVerifier:
    config = AuthConfig(audience=AUDIENCE, allowed_principals=(ALICE,), trust_platform=trust_platform)
    fetched = FetchedCerts(certs={key.kid: key.cert_pem})
    return IdTokenVerifier(config, fetch_certs=lambda _: fetched, clock=clock)


def refused(v: IdTokenVerifier, token: str) -> tuple[int, str]:
    with pytest.raises(AuthError) as caught:
        v.verify(f"Bearer {token}")
    return caught.value.failure.status, caught.value.failure.error


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize(
    ("offsets", "error"),
    [
        # Beyond google-auth's widened window too, so its InvalidValue comes first.
        pytest.param({"iat": -7200, "exp": -SKEW - 120}, "expired_token", id="expired"),
        pytest.param({"iat": SKEW + 120, "exp": 3600}, "invalid_token", id="issued-in-the-future"),
    ],
)
def test_on_the_system_clock_google_auths_refusal_keeps_our_codes(offsets: dict[str, int], error: str) -> None:
    now = int(time.time())
    token = KEY.sign(google_claims(AUDIENCE, ALICE, **{k: now + v for k, v in offsets.items()}))
    assert refused(verifier(), token) == (401, error)


def test_on_the_system_clock_a_wrong_issuer_still_comes_before_the_time() -> None:
    now = int(time.time())
    token = KEY.sign(google_claims(AUDIENCE, ALICE, iss="https://evil.example", iat=now - 7200, exp=now - 600))
    with pytest.raises(AuthError) as caught:
        verifier().verify(f"Bearer {token}")
    assert (caught.value.failure.error, caught.value.failure.message) == (
        "invalid_token",
        "token was not issued by accounts.google.com",
    )


def test_on_the_system_clock_a_current_token_is_accepted() -> None:
    assert verifier().verify(f"Bearer {KEY.sign(google_claims(AUDIENCE, ALICE))}").email == ALICE


def test_an_injected_clock_ahead_of_the_system_clock_decides_expiry() -> None:
    # Valid for the next hour by the system clock; two hours later by the verifier's clock.
    token = KEY.sign(google_claims(AUDIENCE, ALICE))
    assert refused(verifier(lambda: time.time() + 7200), token) == (401, "expired_token")


def test_an_injected_clock_behind_the_system_clock_decides_validity() -> None:
    # Expired a day ago by the system clock, current by the verifier's clock.
    then = time.time() - 86_400
    token = KEY.sign(google_claims(AUDIENCE, ALICE, iat=int(then) - 10, exp=int(then) + 3600))
    assert verifier(lambda: then).verify(f"Bearer {token}").email == ALICE


def test_deeply_nested_json_is_a_refused_token_not_a_crash() -> None:
    header = b64(json.dumps({"alg": "RS256", "kid": KEY.kid}).encode())
    token = f"{header}.{b64(b'[' * 5000)}.{b64(b'sig')}"
    assert refused(verifier(), token) == (401, "invalid_token")


def test_a_stripped_token_must_still_be_strict_base64url() -> None:
    # No signature covers a token Cloud Run stripped, so its bytes are taken as they come; google-auth's
    # base64 decoding would silently drop characters outside the alphabet.
    header, payload, _ = KEY.sign(google_claims(AUDIENCE, ALICE)).split(".")
    good = f"{header}.{payload}.SIGNATURE_REMOVED_BY_GOOGLE"
    v = verifier(trust_platform=True)
    assert v.verify(f"Bearer {good}").email == ALICE
    junk = f"{header}.{payload[:10]}$*{payload[10:]}.SIGNATURE_REMOVED_BY_GOOGLE"
    assert refused(v, junk) == (401, "invalid_token")


def test_our_google_constants_are_google_auths() -> None:
    # Drift guard: the issuers and certificates URL google-auth's verify_oauth2_token uses.
    assert frozenset(google_id_token._GOOGLE_ISSUERS) == GOOGLE_ISSUERS
    assert GOOGLE_CERTS_URL == google_id_token._GOOGLE_OAUTH2_CERTS_URL
