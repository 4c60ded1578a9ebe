"""Google-signed ID tokens: who the caller of the HTTP API is (``Authorization: Bearer <token>``).

People and pipelines send ``Authorization: Bearer <ID token>`` (or ``X-Serverless-Authorization``),
a Google-signed OpenID Connect token minted for this function's URL (``gcloud auth
print-identity-token --audiences=...`` or a service account's metadata server).
:class:`IdTokenVerifier` checks it, then checks the verified email against
``ROLLBACK_ALLOWED_PRINCIPALS``.

Behind Cloud Run IAM (the function denies unauthenticated invocation) Cloud Run checks the token
itself and forwards it with its signature replaced by ``SIGNATURE_REMOVED_BY_GOOGLE``. With
``ROLLBACK_AUTH_TRUST_PLATFORM=true`` such a token is accepted without a signature check (every
claim is still checked); without it, it is refused with a message naming the setting. The identity
always comes from ``X-Serverless-Authorization`` when present (the only header Cloud Run checked
then), else from ``Authorization``.

**What google-auth does** (``google.auth.jwt``, the code behind ``google.oauth2.id_token``): the JWT
mechanics. ``jwt.decode_header`` / ``jwt.decode(verify=False)`` split the segments and decode
base64url and JSON; ``jwt.decode(token, certs={kid: pem}, verify=True, audience=None)`` verifies
the RS256 signature with the one certificate the ``kid`` names, and checks ``iat``/``exp``.

**Time: why the project still checks ``exp``/``iat``/``nbf`` itself.** google-auth reads the
system clock (``_helpers.utcnow``) and takes no clock argument, while the verifier's clock is
injectable (tests pin it; see ``clock=``). So the verifier's own clock is the authority: ``exp``,
``iat`` and ``nbf`` are compared with it, with :data:`CLOCK_SKEW_SECONDS`, after the signature,
which keeps the codes (``expired_token`` vs ``invalid_token``) and keeps injected time meaningful.
google-auth's check still runs, with ``clock_skew_in_seconds`` widened by the distance between the
system clock and the verifier's clock (plus 1 s: it truncates to whole seconds), so it can never
refuse a token the verifier's clock accepts. In production the two clocks are the same clock and
google-auth's check is a second fence, 1 s wider than ours; when it refuses (only a token ours
refuses too), the answer is still worked out by our checks, so the code is the same either way.

**Still hand-written, and why** (the project's policy on top of google-auth):

* ``alg`` pinned to ``RS256`` before any key is looked at (google-auth would also accept ES256
  and, with no ``kid``, try every certificate), and ``kid`` required;
* a strict shape check (base64url segments, at most 16 KiB) before decoding: google-auth's
  base64 decoding is lenient (it drops characters outside the alphabet), which matters for a
  token whose signature Cloud Run removed, since no signature then covers its bytes;
* every claim type-checked before any value is compared (a list ``iss`` or ``aud`` is 401, not a
  crash in a set lookup, and google-auth's ``exp``/``iat`` arithmetic only ever sees numbers);
* ``iss`` one of :data:`GOOGLE_ISSUERS` (what ``id_token.verify_oauth2_token`` checks; it cannot
  be called here as it fetches the certificates itself on every call);
* ``email_verified`` the JSON ``true``, ``email`` with one ``@``, ``sub`` non-empty;
* the audience last, against the comma-separated ``ROLLBACK_AUTH_AUDIENCE``, so that a wrong
  audience (403, a genuine token for another service) is only ever said of an otherwise valid
  token: google-auth checks ``aud`` before the claims above and raises the same ``InvalidValue``
  as for time, so it is given ``audience=None``;
* the certificates cache (:mod:`.token_certs`) and the 401/403/503 split with its error codes.

Verification *raises* :class:`AuthError` and returns only on success; messages and logs never
contain a token, a signature or a google-auth message (those quote the token's segments).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeGuard

from google.auth import exceptions as google_auth_errors
from google.auth import jwt

from controller.adapters.auth_config import (
    AUTH_LOGGER,
    TRUST_PLATFORM_SETTING,
    AuthConfig,
    AuthError,
    Principal,
    header_value,
)
from controller.adapters.token_certs import (
    CERTS_MIN_REFETCH_INTERVAL_SECONDS,
    CertsCache,
    CertsFetcher,
    fetch_certs_over_http,
)

log = logging.getLogger(AUTH_LOGGER)

GOOGLE_ISSUERS: Final = frozenset({"accounts.google.com", "https://accounts.google.com"})
"""Google documents both spellings of ``iss`` for its ID tokens (google-auth's
``google.oauth2.id_token._GOOGLE_ISSUERS``)."""

CLOCK_SKEW_SECONDS: Final = 30.0
"""Leeway on ``exp``/``iat``/``nbf``. google-auth's ``verify_token`` takes this as
``clock_skew_in_seconds`` (default 0); ID tokens are minted and checked on Google-synchronised
clocks, so a small leeway absorbs request latency without extending a token's life noticeably."""

MAX_TOKEN_CHARS: Final = 16 * 1024
"""Google ID tokens are about 1 KB; anything far larger is refused before any parsing."""

STRIPPED_SIGNATURE: Final = "SIGNATURE_REMOVED_BY_GOOGLE"
"""What Cloud Run puts in place of a token's signature after checking it at the edge (Cloud Run
troubleshooting, "signature removed"; service-to-service authentication docs)."""

_GOOGLE_AUTH_TRUNCATION_SECONDS: Final = 1.0
"""google-auth compares whole seconds (``calendar.timegm``); this much more skew covers that."""

_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def _invalid(message: str) -> AuthError:
    return AuthError.of(401, "invalid_token", message)


def _bearer_token(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise AuthError.of(401, "missing_token", "send Authorization: Bearer <Google ID token>")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError.of(401, "missing_token", "send Authorization: Bearer <Google ID token>")
    return token


def _decode_unverified(token: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """-> header, claims, decoded by google-auth. Nothing is trusted yet."""
    if len(token) > MAX_TOKEN_CHARS:
        raise _invalid("token is too long")
    if not _JWT_SHAPE.fullmatch(token):
        raise _invalid("token is not a JWT (three base64url segments: header.payload.signature)")
    try:
        header: Mapping[str, Any] = jwt.decode_header(token)  # type: ignore[no-untyped-call]
        claims: Mapping[str, Any] = jwt.decode(token, verify=False)  # type: ignore[no-untyped-call]
    # MalformedError for bad JSON or non-object segments; binascii.Error (a ValueError) for a
    # segment of impossible base64 length; RecursionError for absurdly nested JSON.
    except (google_auth_errors.GoogleAuthError, ValueError, RecursionError):
        raise _invalid("token is not a JWT (undecodable segment, or not JSON objects)") from None
    return header, claims


def _is_number(value: object) -> TypeGuard[float]:
    # bool is an int in Python; a claim of `true` is not a time.
    return isinstance(value, int | float) and not isinstance(value, bool)


# The JSON type of every claim the checks read, as Google's ID tokens carry them. Checked before
# any value is compared: a list where a string belongs must answer 401, not crash a set lookup.
_CLAIM_TYPES: Final[tuple[tuple[str, str, bool], ...]] = (
    # (claim, "string" | "number" | "boolean", required)
    ("iss", "string", True),
    ("aud", "string", True),
    ("exp", "number", True),
    ("iat", "number", True),
    ("nbf", "number", False),
    ("email", "string", True),
    ("email_verified", "boolean", False),
    ("sub", "string", True),
)


def _check_claim_types(claims: Mapping[str, Any]) -> None:
    for name, kind, required in _CLAIM_TYPES:
        if name not in claims:
            if required:
                raise _invalid(f"token lacks the {name} claim")
            continue
        value = claims[name]
        ok = (
            isinstance(value, str)
            if kind == "string"
            else _is_number(value)
            if kind == "number"
            else isinstance(value, bool)
        )
        if not ok:
            raise _invalid(f"token claim {name} is not a {kind}")


def identity_header(headers: Mapping[str, str]) -> str | None:
    """The header that carries the caller's identity: ``X-Serverless-Authorization`` when present
    (Cloud Run then checks only that one and forwards ``Authorization`` untouched), else
    ``Authorization``."""
    serverless = header_value(headers, "X-Serverless-Authorization")
    if serverless is not None and serverless.strip():
        return serverless
    return header_value(headers, "Authorization")


class IdTokenVerifier:
    """Verifies ``Authorization: Bearer <Google ID token>`` and the caller's email.

    What a token must be: three base64url segments; header ``alg`` exactly ``RS256`` (so ``none``
    and ``HS256``-with-the-public-cert forgeries never reach a key) and a ``kid`` naming one of the
    certificates at ``config.certs_url``; a valid RSA signature (google-auth's ``jwt.decode``), or,
    only with ``config.trust_platform``, the literal ``SIGNATURE_REMOVED_BY_GOOGLE`` Cloud Run leaves
    after checking the signature itself; every claim below of its JSON type (checked first, 401);
    ``iss`` ``accounts.google.com`` or ``https://accounts.google.com``; numeric ``exp`` and ``iat``
    (and ``nbf`` if present) within :data:`CLOCK_SKEW_SECONDS` of ``clock()``; ``email_verified``
    the JSON boolean ``true`` (the string ``"true"`` is refused: Google's ID tokens carry a boolean,
    and anything else is not a token Google signed in the documented form); ``email`` a string with
    one ``@``; ``sub`` a non-empty string. All of those answer 401. Then ``aud`` equal to one of
    ``config.audiences`` (403 ``wrong_audience``: a genuine token minted for another service) and
    the email on the allow list (403 ``forbidden_principal``).

    Certificates are fetched with ``fetch_certs`` (default :func:`fetch_certs_over_http`), cached
    for ``max-age`` clamped to [60 s, 1 h] (1 h if no ``max-age``), refetched once for an unknown
    ``kid`` (at most every ``min_refetch_interval`` seconds). A failed fetch is 503, not 401.
    """

    def __init__(
        self,
        config: AuthConfig,
        *,
        fetch_certs: CertsFetcher | None = None,
        clock: Callable[[], float] = time.time,
        clock_skew: float = CLOCK_SKEW_SECONDS,
        min_refetch_interval: float = CERTS_MIN_REFETCH_INTERVAL_SECONDS,
    ) -> None:
        self._config = config
        self._clock = clock
        self._skew = clock_skew
        self._certs = CertsCache(config.certs_url, fetch_certs or fetch_certs_over_http, clock, min_refetch_interval)

    def verify_headers(self, headers: Mapping[str, str]) -> Principal:
        """Like :meth:`verify`, on the header :func:`identity_header` picks from ``headers``."""
        return self.verify(identity_header(headers))

    def verify(self, authorization_header: str | None) -> Principal:
        """Return the allowed caller, or raise :class:`AuthError` (401, 403 or 503)."""
        try:
            principal = self._verify(authorization_header)
        except AuthError as exc:
            # The code is enough to debug a refusal from the logs; the token itself never is logged.
            log.info("ID token refused: %s %s", exc.failure.status, exc.failure.error)
            raise
        return principal

    def _verify(self, authorization_header: str | None) -> Principal:
        config = self._config
        if not config.id_token_configured or not config.audiences:
            raise AuthError.of(
                503,
                "auth_not_configured",
                "authentication is not configured: set ROLLBACK_AUTH_AUDIENCE and ROLLBACK_ALLOWED_PRINCIPALS",
            )
        token = _bearer_token(authorization_header)
        header, claims = _decode_unverified(token)

        # The algorithm is pinned, not taken from the token: only RS256 against Google's RSA keys.
        if header.get("alg") != "RS256":
            raise _invalid("token must be signed with RS256")
        if token.rpartition(".")[2] == STRIPPED_SIGNATURE:
            # Cloud Run checked the signature at the edge and removed it. Only trustworthy when
            # the platform really checked: the function denies unauthenticated invocation.
            if not config.trust_platform:
                raise _invalid(
                    f"token signature was removed by Cloud Run ({STRIPPED_SIGNATURE}); if the function "
                    f"denies unauthenticated invocation, set {TRUST_PLATFORM_SETTING}=true"
                )
            _check_claim_types(claims)
        else:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise _invalid("token header names no key id (kid)")
            certificate = self._certs.certificate_for(kid)
            if certificate is None:
                raise _invalid("token is signed by a key Google does not publish")
            _check_claim_types(claims)
            self._check_signature(token, kid, certificate, claims)

        # Signed by Google (or checked by Cloud Run) from here on; now: is it for us, now, and
        # about a verified email?
        self._check_claims(claims, config.audiences)
        email: str = claims["email"]
        subject: str = claims["sub"]
        if not config.principal_allowed(email):
            log.warning("ID token for %r verified but not in ROLLBACK_ALLOWED_PRINCIPALS", email)
            raise AuthError.of(403, "forbidden_principal", f"{email} is not allowed to use this API")
        return Principal(email=email, subject=subject)

    def _check_signature(self, token: str, kid: str, certificate: str, claims: Mapping[str, Any]) -> None:
        """google-auth verifies the RS256 signature (and, on the system clock, iat/exp: see the
        module docstring for why its window is widened)."""
        now = self._clock()
        google_auth_skew = self._skew + abs(time.time() - now) + _GOOGLE_AUTH_TRUNCATION_SECONDS
        try:
            jwt.decode(  # type: ignore[no-untyped-call]
                token,
                certs={kid: certificate},
                verify=True,
                audience=None,
                clock_skew_in_seconds=google_auth_skew,
            )
        except google_auth_errors.InvalidValue:
            # Raised after the signature verified (alg and key type are settled before): the
            # token is outside google-auth's time window, so outside ours too. Our checks name it.
            self._check_issuer(claims)
            self._check_times(claims, now)
            raise _invalid("token is not valid at this time (check clocks)") from None
        except (google_auth_errors.GoogleAuthError, ValueError, TypeError):
            raise _invalid("token signature does not verify") from None

    @staticmethod
    def _check_issuer(claims: Mapping[str, Any]) -> None:
        if claims["iss"] not in GOOGLE_ISSUERS:
            raise _invalid("token was not issued by accounts.google.com")

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", 0)
        if not (_is_number(exp) and _is_number(iat) and _is_number(nbf)):
            raise _invalid("token lacks numeric exp/iat claims")
        if now > exp + self._skew:
            raise AuthError.of(401, "expired_token", "token has expired; mint a fresh one")
        if iat > now + self._skew or nbf > now + self._skew:
            raise _invalid("token is not valid yet (issued in the future: check clocks)")

    def _check_claims(self, claims: Mapping[str, Any], audiences: tuple[str, ...]) -> None:
        """The claims after the signature, in order; their types were checked before."""
        self._check_issuer(claims)
        self._check_times(claims, self._clock())
        if claims.get("email_verified") is not True:
            raise _invalid("token's email is not verified")
        email = claims.get("email")
        if not isinstance(email, str) or email.count("@") != 1:
            raise _invalid("token carries no email")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise _invalid("token carries no subject")
        # Checked last, on purpose: only a token that is otherwise genuine, current and about a
        # verified email reaches this point, so "wrong audience" means "a real Google identity,
        # minted for another service" -> 403 (authenticated, not authorized here), as the issue's
        # contract says. Anything malformed, forged or expired was already answered 401.
        if claims["aud"] not in audiences:
            raise AuthError.of(
                403,
                "wrong_audience",
                f"token is for another audience; mint it with audience {' or '.join(audiences)}",
            )
