"""Authentication for the controller's HTTP API: Google-signed ID tokens, Slack request signatures.

The manual controls (rollback, undo, hold, status) change production traffic, so every route
behind them is authenticated *in the app*, on top of Cloud Functions IAM at the edge (see
``docs/security.md``). Two kinds of caller exist:

* **People and pipelines** send ``Authorization: Bearer <ID token>`` (or
  ``X-Serverless-Authorization``), a Google-signed OpenID Connect token minted for this
  function's URL (``gcloud auth print-identity-token --audiences=...`` or a service account's
  metadata server). :class:`IdTokenVerifier` checks it and then checks the verified email against
  ``ROLLBACK_ALLOWED_PRINCIPALS``.

  Behind Cloud Run IAM (the function denies unauthenticated invocation) Cloud Run checks the
  token itself and forwards it with its signature replaced by ``SIGNATURE_REMOVED_BY_GOOGLE``.
  With ``ROLLBACK_AUTH_TRUST_PLATFORM=true`` such a token is accepted without a signature check
  (every claim is still checked); without it, it is refused with a message naming the setting.
  The identity always comes from ``X-Serverless-Authorization`` when present (the only header
  Cloud Run checked then), else from ``Authorization``.
* **Slack** posts button presses signed with the app's signing secret. :class:`SlackVerifier`
  checks the signature on the raw body, then the Slack user id against
  ``ROLLBACK_SLACK_ALLOWED_USERS``.

Style: verification *raises* :class:`AuthError` (carrying an :class:`AuthFailure` with the HTTP
status, a machine code and a human message) and returns only on success, so a caller that forgets
to look at a result cannot let a request through. The HTTP layer maps ``failure.status`` to its
answer. Messages never contain a token, a signature or a secret, and neither do the logs.

Missing configuration is never "open": with no audience, no allowed principals, no Slack signing
secret or no allowed Slack users, the matching routes answer 503 ``auth_not_configured``.

This module imports no web framework: the HTTP layer hands it header values and raw body bytes.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, Protocol, TypeGuard

from pydantic import SecretStr, field_validator
from slack_sdk.signature import Clock, SignatureVerifier

from controller.core.errors import ControllerError
from controller.core.models import Strict

log = logging.getLogger(__name__)

GOOGLE_CERTS_URL: Final = "https://www.googleapis.com/oauth2/v1/certs"
"""Google's OAuth2 token-signing certificates, v1 form: a JSON object of key id -> x509 PEM."""

GOOGLE_ISSUERS: Final = frozenset({"accounts.google.com", "https://accounts.google.com"})
"""Google documents both spellings of ``iss`` for its ID tokens."""

CLOCK_SKEW_SECONDS: Final = 30.0
"""Leeway on ``exp``/``iat``/``nbf``. google-auth's ``verify_token`` takes this as
``clock_skew_in_seconds`` (default 0); ID tokens are minted and checked on Google-synchronised
clocks, so a small leeway absorbs request latency without extending a token's life noticeably."""

CERTS_FETCH_TIMEOUT_SECONDS: Final = 5.0
CERTS_MAX_TTL_SECONDS: Final = 3600.0
"""Upper bound on how long fetched certificates are trusted, whatever ``max-age`` says (Google
sends several hours): a revoked key stops being accepted within the hour."""
CERTS_MIN_TTL_SECONDS: Final = 60.0
"""Lower bound, so a ``max-age=0`` endpoint does not turn every request into a fetch."""
CERTS_MIN_REFETCH_INTERVAL_SECONDS: Final = 30.0
"""An unknown ``kid`` triggers a refetch (key rotation) at most this often: a stream of tokens with
made-up key ids must not turn the function into a load generator against the certs endpoint."""
CERTS_FAILURE_TTL_SECONDS: Final = 10.0
"""A failed certificates fetch is remembered this long: while Google's endpoint is down or slow,
requests answer 503 at once instead of each waiting for a fetch of its own."""
CERTS_WAIT_SECONDS: Final = CERTS_FETCH_TIMEOUT_SECONDS + 1.0
"""How long a request waits for another request's certificates fetch (the fetch's own timeout)."""
CERTS_MAX_BYTES: Final = 1 << 20
MAX_TOKEN_CHARS: Final = 16 * 1024
STRIPPED_SIGNATURE: Final = "SIGNATURE_REMOVED_BY_GOOGLE"
"""What Cloud Run puts in place of a token's signature after checking it at the edge (Cloud Run
troubleshooting, "signature removed"; service-to-service authentication docs)."""
TRUST_PLATFORM_SETTING: Final = "ROLLBACK_AUTH_TRUST_PLATFORM"
"""Google ID tokens are about 1 KB; anything far larger is refused before any parsing."""

SLACK_REPLAY_WINDOW_SECONDS: Final = 300
"""Slack's documented window, and slack_sdk's ``SignatureVerifier`` check (``> 60 * 5`` fails)."""


# --------------------------------------------------------------------------- results and errors

FailureStatus = Literal[401, 403, 503]


@dataclass(frozen=True)
class AuthFailure:
    """Why a request was refused.

    ``status``: 401 (no or bad credentials), 403 (good credentials, not allowed: a genuine token
    minted for another audience, or a principal not on the allow list), 503 (the check
    cannot be made: not configured, or certificates unavailable; retrying later may help).
    ``error``: a stable machine code, one of ``missing_token``, ``invalid_token``,
    ``expired_token``, ``wrong_audience``, ``forbidden_principal``, ``auth_not_configured``,
    ``certs_unavailable``, ``missing_signature``, ``invalid_signature``, ``stale_request``.
    ``message``: for humans; never contains a token, a signature or a secret.
    """

    status: FailureStatus
    error: str
    message: str


class AuthError(ControllerError):
    """Raised by every verification that does not succeed; ``failure`` says how to answer."""

    def __init__(self, failure: AuthFailure) -> None:
        super().__init__(f"{failure.status} {failure.error}: {failure.message}")
        self.failure = failure

    @classmethod
    def of(cls, status: FailureStatus, error: str, message: str) -> AuthError:
        return cls(AuthFailure(status=status, error=error, message=message))


@dataclass(frozen=True)
class Principal:
    """A caller whose Google ID token verified and who is allowed: the token's email and ``sub``."""

    email: str
    subject: str


# --------------------------------------------------------------------------- configuration

# Domain: dot-separated DNS labels ending in an alphabetic TLD. Local part: anything but
# whitespace, "@", "," (the list separator) and "*" (reserved for the wildcard form).
_DOMAIN = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
_PRINCIPAL_RE = re.compile(rf"(?:\*|[^\s@,*]+)@{_DOMAIN}", re.IGNORECASE)
# Slack user ids are upper-case alphanumerics starting with a letter (U..., W... on Enterprise
# Grid). Checking the shape catches "@alice" or an email pasted in by mistake.
_SLACK_USER_RE = re.compile(r"[A-Z][A-Z0-9]{2,}")
_LOOPBACK_HOSTS = frozenset({"localhost"})


def _split_list(raw: str | None) -> tuple[str, ...]:
    """``" a, ,b "`` -> ``("a", "b")``: trim whitespace, drop empties."""
    if raw is None:
        return ()
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AuthConfig(Strict):
    """Who may call the HTTP API, read once from the environment (see :meth:`from_env`).

    ``allowed_principals`` holds exact emails or ``*@domain`` (that domain only, never its
    subdomains), lower-cased. ``audience`` is one audience or a comma-separated list (a gen2
    function answers on its ``cloudfunctions.net`` and its ``run.app`` URL); see :attr:`audiences`.
    Empty ``audience`` or ``allowed_principals`` -> the ID-token routes answer 503; empty
    ``slack_signing_secret`` or ``slack_allowed_users`` -> the Slack route does.
    ``trust_platform``: accept tokens whose signature Cloud Run removed (see the module docstring).
    """

    audience: str | None = None
    allowed_principals: tuple[str, ...] = ()
    certs_url: str = GOOGLE_CERTS_URL
    slack_signing_secret: SecretStr | None = None
    slack_allowed_users: tuple[str, ...] = ()
    trust_platform: bool = False

    @field_validator("audience")
    @classmethod
    def _audience_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not _split_list(value):
            raise ValueError("ROLLBACK_AUTH_AUDIENCE must not be blank (leave it unset instead)")
        return value

    @field_validator("trust_platform", mode="before")
    @classmethod
    def _trust_flag(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"", "0", "false", "no", "off"}:
            return False
        raise ValueError(f"{TRUST_PLATFORM_SETTING}={value!r}: expected true or false")

    @field_validator("allowed_principals")
    @classmethod
    def _principals_well_formed(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not _PRINCIPAL_RE.fullmatch(entry):
                raise ValueError(
                    f"ROLLBACK_ALLOWED_PRINCIPALS entry {entry!r} is neither an email "
                    "(alice@example.com) nor a whole domain (*@example.com)"
                )
        # Google lower-cases the emails it puts in ID tokens; compare case-insensitively anyway.
        return tuple(entry.lower() for entry in value)

    @field_validator("certs_url")
    @classmethod
    def _certs_url_trustworthy(cls, value: str) -> str:
        # The certificates decide which signatures are genuine: fetched over plain HTTP from
        # another host, anyone on the path could substitute their own. Plain HTTP is allowed only
        # on loopback (local stacks and tests).
        parsed = urllib.parse.urlsplit(value)
        host = parsed.hostname or ""
        if parsed.scheme == "https" and host:
            return value
        if parsed.scheme == "http" and _is_loopback(host):
            return value
        raise ValueError(
            f"ROLLBACK_AUTH_CERTS_URL {value!r} must be an https:// URL (plain http:// only on localhost/127.0.0.1)"
        )

    @field_validator("slack_signing_secret")
    @classmethod
    def _secret_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("SLACK_SIGNING_SECRET must not be blank (leave it unset instead)")
        return value

    @field_validator("slack_allowed_users")
    @classmethod
    def _slack_users_well_formed(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not _SLACK_USER_RE.fullmatch(entry):
                raise ValueError(
                    f"ROLLBACK_SLACK_ALLOWED_USERS entry {entry!r} is not a Slack user id "
                    "(like U0123ABCD; find it in the user's profile, 'Copy member ID')"
                )
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AuthConfig:
        """Read ``ROLLBACK_AUTH_AUDIENCE``, ``ROLLBACK_ALLOWED_PRINCIPALS``,
        ``ROLLBACK_AUTH_CERTS_URL``, ``ROLLBACK_AUTH_TRUST_PLATFORM``, ``SLACK_SIGNING_SECRET`` and
        ``ROLLBACK_SLACK_ALLOWED_USERS``.

        Values are trimmed; empty values count as unset; list entries are comma-separated.
        Raises ``ValueError`` (a pydantic ``ValidationError``) naming a malformed entry.
        """

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        secret = text("SLACK_SIGNING_SECRET")
        return cls(
            audience=text("ROLLBACK_AUTH_AUDIENCE"),
            allowed_principals=_split_list(env.get("ROLLBACK_ALLOWED_PRINCIPALS")),
            certs_url=text("ROLLBACK_AUTH_CERTS_URL") or GOOGLE_CERTS_URL,
            slack_signing_secret=SecretStr(secret) if secret is not None else None,
            slack_allowed_users=_split_list(env.get("ROLLBACK_SLACK_ALLOWED_USERS")),
            trust_platform=env.get(TRUST_PLATFORM_SETTING, ""),  # type: ignore[arg-type]  # parsed by _trust_flag
        )

    @property
    def audiences(self) -> tuple[str, ...]:
        """Every accepted ``aud``: ``ROLLBACK_AUTH_AUDIENCE`` split on commas."""
        return _split_list(self.audience)

    @property
    def id_token_configured(self) -> bool:
        return self.audience is not None and bool(self.allowed_principals)

    @property
    def slack_configured(self) -> bool:
        return self.slack_signing_secret is not None and bool(self.slack_allowed_users)

    def principal_allowed(self, email: str) -> bool:
        """Exact email, or ``*@<the email's own domain>``: a@eng.example.com is *not* matched by
        ``*@example.com``, nor is a@example.com.evil.io."""
        email = email.lower()
        _, _, domain = email.rpartition("@")
        return email in self.allowed_principals or f"*@{domain}" in self.allowed_principals


# --------------------------------------------------------------------------- certificates


class FetchedCerts(NamedTuple):
    """A certificates fetch: key id -> x509 PEM, and the ``max-age`` if one was sent."""

    certs: Mapping[str, str]
    max_age: float | None = None


CertsFetcher = Callable[[str], FetchedCerts]
"""Fetch certificates from a URL. Any exception it raises means "unavailable" (-> 503)."""


class CertsFetchError(Exception):
    """The certificates endpoint could not be reached or answered something unusable."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # Google's certs URL never redirects; following one could downgrade https to http.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_MAX_AGE_RE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


def _parse_max_age(cache_control: str | None) -> float | None:
    if not cache_control:
        return None
    m = _MAX_AGE_RE.search(cache_control)
    return float(m.group(1)) if m else None


def fetch_certs_over_http(url: str, *, timeout: float = CERTS_FETCH_TIMEOUT_SECONDS) -> FetchedCerts:
    """GET Google's v1 certificates form (``{"<kid>": "-----BEGIN CERTIFICATE-----..."}``).

    Short timeout, no redirects, body capped at 1 MiB. Raises :class:`CertsFetchError`.
    """
    opener = urllib.request.build_opener(_NoRedirects)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 (scheme checked in AuthConfig)
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(CERTS_MAX_BYTES + 1)
            cache_control = response.headers.get("Cache-Control")
    except urllib.error.HTTPError as exc:
        exc.close()  # an HTTPError holds the open response; leaking it leaks the socket
        raise CertsFetchError(f"HTTP {exc.code} from {url}") from None
    except (OSError, ValueError) as exc:  # URLError, timeouts, resets, bad URLs
        raise CertsFetchError(f"{type(exc).__name__} fetching {url}: {exc}") from None
    if len(body) > CERTS_MAX_BYTES:
        raise CertsFetchError(f"{url} answered more than {CERTS_MAX_BYTES} bytes")
    try:
        decoded = json.loads(body)
    except ValueError:
        raise CertsFetchError(f"{url} did not answer JSON") from None
    if not isinstance(decoded, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in decoded.items()):
        raise CertsFetchError(
            f"{url} did not answer a JSON object of key id -> PEM certificate "
            "(the v1 form, e.g. https://www.googleapis.com/oauth2/v1/certs, not the v3 JWKS form)"
        )
    return FetchedCerts(certs=decoded, max_age=_parse_max_age(cache_control))


class _SignatureVerifier(Protocol):
    def verify(self, message: bytes, signature: bytes) -> bool: ...


def _rsa_verifier(pem: str) -> _SignatureVerifier:
    # google-auth's RSAVerifier (backed by `cryptography`) accepts an x509 certificate PEM and
    # refuses non-RSA keys with ValueError.
    from google.auth import crypt

    verifier: _SignatureVerifier = crypt.RSAVerifier.from_string(pem)  # type: ignore[no-untyped-call]
    return verifier


@dataclass(frozen=True)
class _KeySet:
    verifiers: Mapping[str, _SignatureVerifier]
    fetched_at: float
    expires_at: float


class _Flight:
    """One certificates fetch in progress; followers wait on ``done`` for its outcome."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.keys: _KeySet | None = None
        self.error: AuthError | None = None


class _CertsCache:
    """Certificates by key id, fetched lazily, kept for ``max-age`` within bounds; thread-safe.

    The lock guards the cache's state only, never a fetch: one request fetches (single flight)
    while requests whose key id is already cached carry on without waiting, and only requests that
    need the fetch's answer wait for it (at most :data:`CERTS_WAIT_SECONDS`). A failed fetch is
    remembered for ``failure_ttl`` seconds, during which requests that need certificates answer 503
    at once instead of each trying the endpoint again.
    """

    def __init__(
        self,
        url: str,
        fetch: CertsFetcher,
        clock: Callable[[], float],
        min_refetch: float,
        failure_ttl: float = CERTS_FAILURE_TTL_SECONDS,
    ) -> None:
        self._url = url
        self._fetch = fetch
        self._clock = clock
        self._min_refetch = min_refetch
        self._failure_ttl = failure_ttl
        self._keys: _KeySet | None = None
        self._failed: tuple[float, AuthError] | None = None  # (until, the error to answer)
        self._flight: _Flight | None = None
        self._lock = threading.Lock()

    def verifier_for(self, kid: str) -> _SignatureVerifier | None:
        now = self._clock()
        with self._lock:
            keys = self._keys
        if keys is None or now >= keys.expires_at:
            keys = self._refreshed(now, keys)
        found = keys.verifiers.get(kid)
        if found is None and now - keys.fetched_at >= self._min_refetch:
            # Unknown key id: perhaps Google rotated keys since we fetched. Look once more.
            log.info("token key id not in cached certificates; refetching %s", self._url)
            keys = self._refreshed(now, keys)
            found = keys.verifiers.get(kid)
        return found

    def _refreshed(self, now: float, seen: _KeySet | None) -> _KeySet:
        """Keys newer than ``seen``: fetched by this caller, or by the fetch already in flight."""
        with self._lock:
            current = self._keys
            if current is not None and current is not seen and now < current.expires_at:
                return current  # another request fetched since this one looked
            if self._failed is not None and now < self._failed[0]:
                raise self._failed[1]
            flight = self._flight
            leading = flight is None
            if flight is None:
                flight = self._flight = _Flight()
        if not leading:
            if not flight.done.wait(CERTS_WAIT_SECONDS):
                raise AuthError.of(
                    503, "certs_unavailable", "token-signing certificates are slow to fetch; try again later"
                )
            if flight.error is not None:
                raise flight.error
            assert flight.keys is not None
            return flight.keys
        try:
            keys = self._refresh(now)
        except AuthError as exc:
            with self._lock:
                self._failed = (self._clock() + self._failure_ttl, exc)
                self._flight = None
            flight.error = exc
            flight.done.set()
            raise
        with self._lock:
            self._keys, self._failed, self._flight = keys, None, None
        flight.keys = keys
        flight.done.set()
        return keys

    def _refresh(self, now: float) -> _KeySet:
        try:
            fetched = self._fetch(self._url)
            verifiers = {kid: _rsa_verifier(pem) for kid, pem in fetched.certs.items()}
        except Exception as exc:
            # Fail closed, but say so: our problem (503, retry later), not the caller's (401).
            log.warning(
                "cannot use token-signing certificates from %s: %s: %s",
                self._url,
                type(exc).__name__,
                exc,
            )
            raise AuthError.of(
                503, "certs_unavailable", "cannot fetch token-signing certificates; try again later"
            ) from None
        if not verifiers:
            log.warning("token-signing certificates from %s are empty", self._url)
            raise AuthError.of(503, "certs_unavailable", "token-signing certificates are empty; try again later")
        max_age = fetched.max_age if fetched.max_age is not None else CERTS_MAX_TTL_SECONDS
        ttl = min(max(max_age, CERTS_MIN_TTL_SECONDS), CERTS_MAX_TTL_SECONDS)
        log.debug("fetched %d token-signing certificates, kept for %.0f s", len(verifiers), ttl)
        return _KeySet(verifiers=verifiers, fetched_at=now, expires_at=now + ttl)


# --------------------------------------------------------------------------- ID tokens

_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")


def _b64url_decode(segment: str) -> bytes:
    if not _B64URL_RE.fullmatch(segment):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


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


def _split_jwt(token: str) -> tuple[Mapping[str, Any], Mapping[str, Any], bytes, bytes | None]:
    """-> header, claims, signed bytes, signature (None: removed by Cloud Run). Nothing is trusted yet."""
    if len(token) > MAX_TOKEN_CHARS:
        raise _invalid("token is too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise _invalid("token is not a JWT (header.payload.signature)")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = None if parts[2] == STRIPPED_SIGNATURE else _b64url_decode(parts[2]) if parts[2] else b""
    except (ValueError, binascii.Error):  # also covers UnicodeDecodeError and JSONDecodeError
        raise _invalid("token is not a JWT (undecodable segment)") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise _invalid("token is not a JWT (segments are not JSON objects)")
    signed = f"{parts[0]}.{parts[1]}".encode("ascii")
    return header, claims, signed, signature


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
    serverless = _header(headers, "X-Serverless-Authorization")
    if serverless is not None and serverless.strip():
        return serverless
    return _header(headers, "Authorization")


class IdTokenVerifier:
    """Verifies ``Authorization: Bearer <Google ID token>`` and the caller's email.

    What a token must be: three base64url segments; header ``alg`` exactly ``RS256`` (so ``none``
    and ``HS256``-with-the-public-cert forgeries never reach a key) and a ``kid`` naming one of the
    certificates at ``config.certs_url``; a valid RSA signature, or, only with
    ``config.trust_platform``, the literal ``SIGNATURE_REMOVED_BY_GOOGLE`` Cloud Run leaves after
    checking the signature itself; every claim below of its JSON type (checked first, 401);
    ``iss`` ``accounts.google.com``
    or ``https://accounts.google.com``; numeric ``exp`` and ``iat`` (and ``nbf`` if present) within
    :data:`CLOCK_SKEW_SECONDS` of ``clock()``; ``email_verified`` the JSON boolean ``true`` (the
    string ``"true"`` is refused: Google's ID tokens carry a boolean, and anything else is not a
    token Google signed in the documented form); ``email`` a string with one ``@``; ``sub`` a
    non-empty string. All of those answer 401. Then ``aud`` equal to one of ``config.audiences``
    (403 ``wrong_audience``: a genuine token minted for another service) and the email on the allow
    list (403 ``forbidden_principal``).

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
        self._certs = _CertsCache(config.certs_url, fetch_certs or fetch_certs_over_http, clock, min_refetch_interval)

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
        header, claims, signed, signature = _split_jwt(token)

        # The algorithm is pinned, not taken from the token: only RS256 against Google's RSA keys.
        if header.get("alg") != "RS256":
            raise _invalid("token must be signed with RS256")
        if signature is None:
            # Cloud Run checked the signature at the edge and removed it. Only trustworthy when
            # the platform really checked: the function denies unauthenticated invocation.
            if not config.trust_platform:
                raise _invalid(
                    f"token signature was removed by Cloud Run ({STRIPPED_SIGNATURE}); if the function "
                    f"denies unauthenticated invocation, set {TRUST_PLATFORM_SETTING}=true"
                )
        else:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise _invalid("token header names no key id (kid)")
            verifier = self._certs.verifier_for(kid)
            if verifier is None:
                raise _invalid("token is signed by a key Google does not publish")
            if not verifier.verify(signed, signature):
                raise _invalid("token signature does not verify")

        # Signed by Google (or checked by Cloud Run) from here on; now: is it for us, now, and
        # about a verified email?
        self._check_claims(claims, config.audiences)
        email: str = claims["email"]
        subject: str = claims["sub"]
        if not config.principal_allowed(email):
            log.warning("ID token for %r verified but not in ROLLBACK_ALLOWED_PRINCIPALS", email)
            raise AuthError.of(403, "forbidden_principal", f"{email} is not allowed to use this API")
        return Principal(email=email, subject=subject)

    def _check_claims(self, claims: Mapping[str, Any], audiences: tuple[str, ...]) -> None:
        _check_claim_types(claims)
        if claims["iss"] not in GOOGLE_ISSUERS:
            raise _invalid("token was not issued by accounts.google.com")
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", 0)
        if not (_is_number(exp) and _is_number(iat) and _is_number(nbf)):
            raise _invalid("token lacks numeric exp/iat claims")
        now = self._clock()
        if now > exp + self._skew:
            raise AuthError.of(401, "expired_token", "token has expired; mint a fresh one")
        if iat > now + self._skew or nbf > now + self._skew:
            raise _invalid("token is not valid yet (issued in the future: check clocks)")
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


# --------------------------------------------------------------------------- Slack

_SLACK_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_SLACK_SIGNATURE_RE = re.compile(r"v0=[0-9a-f]{64}")


class _CallableClock(Clock):
    """Adapts a ``() -> float`` clock to slack_sdk's ``Clock`` interface."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Header names are case-insensitive; a plain dict from a test or another framework is not.
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


class SlackVerifier:
    """Verifies a Slack request's signature, then whether its user may press our buttons.

    ``verify`` must see the body bytes exactly as received (before any form parsing). Signing is
    ``v0=hex(HMAC-SHA256(secret, "v0:" + timestamp + ":" + body))``; requests more than
    :data:`SLACK_REPLAY_WINDOW_SECONDS` from ``clock()`` either way are refused (replay window).
    The comparison itself is slack_sdk's ``SignatureVerifier`` (constant-time).
    """

    def __init__(self, config: AuthConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        secret = config.slack_signing_secret
        self._verifier = (
            SignatureVerifier(secret.get_secret_value(), clock=_CallableClock(clock)) if secret is not None else None
        )

    def _require_configured(self) -> SignatureVerifier:
        if self._verifier is None or not self._config.slack_configured:
            raise AuthError.of(
                503,
                "auth_not_configured",
                "Slack actions are not configured: set SLACK_SIGNING_SECRET and ROLLBACK_SLACK_ALLOWED_USERS",
            )
        return self._verifier

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Raise :class:`AuthError` unless ``body`` carries a fresh, valid Slack signature."""
        try:
            self._verify(body, headers)
        except AuthError as exc:
            log.info("Slack request refused: %s %s", exc.failure.status, exc.failure.error)
            raise

    def _verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        verifier = self._require_configured()
        timestamp = _header(headers, "X-Slack-Request-Timestamp")
        signature = _header(headers, "X-Slack-Signature")
        if not timestamp or not signature:
            raise AuthError.of(
                401,
                "missing_signature",
                "X-Slack-Request-Timestamp and X-Slack-Signature headers are required",
            )
        # Shapes are checked here because slack_sdk would raise on them: int() on a non-number,
        # hmac.compare_digest on a non-ASCII str.
        if not _SLACK_TIMESTAMP_RE.fullmatch(timestamp):
            raise AuthError.of(401, "invalid_signature", "X-Slack-Request-Timestamp is malformed")
        if not _SLACK_SIGNATURE_RE.fullmatch(signature):
            raise AuthError.of(401, "invalid_signature", "X-Slack-Signature is malformed")
        if abs(self._clock() - int(timestamp)) > SLACK_REPLAY_WINDOW_SECONDS:
            raise AuthError.of(401, "stale_request", "request timestamp is outside the 5-minute replay window")
        if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
            raise AuthError.of(401, "invalid_signature", "Slack signature does not verify")

    def check_user(self, user_id: str | None) -> None:
        """Raise :class:`AuthError` 403 unless ``user_id`` is in ROLLBACK_SLACK_ALLOWED_USERS."""
        self._require_configured()
        if not user_id or user_id not in self._config.slack_allowed_users:
            log.warning("Slack user %r is not in ROLLBACK_SLACK_ALLOWED_USERS", user_id)
            raise AuthError.of(
                403,
                "forbidden_principal",
                f"Slack user {user_id} is not allowed to act on rollbacks",
            )
