"""Google's token-signing certificates: the fetch over HTTP and the cache the ID-token check reads.

Still hand-written, on purpose: google-auth's ``google.oauth2.id_token.verify_token`` fetches the
certificates on *every* call through a transport ``Request`` and keeps nothing, which is neither
fast enough for an API nor safe under load. The project's policy, kept here, is:

* the v1 form (key id -> x509 PEM, what ``jwt.decode(certs=...)`` takes), fetched with a short
  timeout, no redirects (a redirect could downgrade https to http), a 1 MiB cap on the body;
* kept for the answer's ``max-age`` clamped to [60 s, 1 h] (1 h when none is sent);
* refetched for an unknown ``kid`` (key rotation), at most every 30 s, so made-up key ids cannot
  turn the function into a load generator against Google's endpoint;
* one fetch at a time (single flight), made *outside* the lock: requests whose key is cached never
  wait, the others wait for that one fetch; a failed fetch is remembered for 10 s, during which
  requests that need certificates answer 503 at once.

``max-age`` is read from ``Cache-Control`` with a small case-insensitive pattern rather than
werkzeug's ``parse_cache_control_header``: werkzeug 3.1 matches directive names case-sensitively
(``MAX-AGE=5`` reads as none), where RFC 9111 section 5.2 says they are case-insensitive.

Every certificate is parsed with google-auth's ``crypt.RSAVerifier`` when fetched, so an
unusable answer (not PEM, not RSA) is "certificates unavailable" (503), not a refused token.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from controller.adapters.auth_config import AUTH_LOGGER, AuthError
from controller.core.errors import TemporaryError

log = logging.getLogger(AUTH_LOGGER)

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


class FetchedCerts(NamedTuple):
    """A certificates fetch: key id -> x509 PEM, and the ``max-age`` if one was sent."""

    certs: Mapping[str, str]
    max_age: float | None = None


CertsFetcher = Callable[[str], FetchedCerts]
"""Fetch certificates from a URL. Any exception it raises means "unavailable" (-> 503)."""


class CertsFetchError(TemporaryError):
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


def _check_rsa_certificate(pem: str) -> None:
    # google-auth's RSAVerifier (backed by `cryptography`) is what jwt.decode builds for RS256;
    # building one here refuses an unusable certificate (ValueError) before any token needs it.
    from google.auth import crypt  # lazy: the certs are first needed by a request, not at cold start

    crypt.RSAVerifier.from_string(pem)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class _KeySet:
    certs: Mapping[str, str]
    fetched_at: float
    expires_at: float


class _Flight:
    """One certificates fetch in progress; followers wait on ``done`` for its outcome."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.keys: _KeySet | None = None
        self.error: AuthError | None = None


class CertsCache:
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

    def certificate_for(self, kid: str) -> str | None:
        """The PEM certificate of key ``kid``, or None if Google does not publish it; raises
        :class:`AuthError` 503 when the certificates cannot be had."""
        now = self._clock()
        with self._lock:
            keys = self._keys
        if keys is None or now >= keys.expires_at:
            keys = self._refreshed(now, keys)
        found = keys.certs.get(kid)
        if found is None and now - keys.fetched_at >= self._min_refetch:
            # Unknown key id: perhaps Google rotated keys since we fetched. Look once more.
            log.info("token key id not in cached certificates; refetching %s", self._url)
            keys = self._refreshed(now, keys)
            found = keys.certs.get(kid)
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
            certs = dict(fetched.certs)
            for pem in certs.values():
                _check_rsa_certificate(pem)
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
        if not certs:
            log.warning("token-signing certificates from %s are empty", self._url)
            raise AuthError.of(503, "certs_unavailable", "token-signing certificates are empty; try again later")
        max_age = fetched.max_age if fetched.max_age is not None else CERTS_MAX_TTL_SECONDS
        ttl = min(max(max_age, CERTS_MIN_TTL_SECONDS), CERTS_MAX_TTL_SECONDS)
        log.debug("fetched %d token-signing certificates, kept for %.0f s", len(certs), ttl)
        return _KeySet(certs=certs, fetched_at=now, expires_at=now + ttl)
