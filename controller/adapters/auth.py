"""Authentication for the controller's HTTP API: the one import path of the auth adapters.

The manual controls (rollback, undo, hold, status) change production traffic, so every route
behind them is authenticated *in the app*, on top of Cloud Functions IAM at the edge (see
``docs/security.md``). Two kinds of caller exist, each with its verifier:

* people and pipelines send a Google-signed ID token: :class:`IdTokenVerifier`
  (:mod:`.id_tokens`; signature and JWT mechanics through google-auth, certificates cached by
  :mod:`.token_certs`), then the verified email is checked against ``ROLLBACK_ALLOWED_PRINCIPALS``;
* Slack posts button presses signed with the app's signing secret: :class:`SlackVerifier`
  (:mod:`.slack_signature`, on slack_sdk's ``SignatureVerifier``), then the Slack user id is
  checked against ``ROLLBACK_SLACK_ALLOWED_USERS``.

Style: verification *raises* :class:`AuthError` (carrying an :class:`AuthFailure` with the HTTP
status, a machine code and a human message) and returns only on success, so a caller that forgets
to look at a result cannot let a request through. The HTTP layer maps ``failure.status`` to its
answer. Messages never contain a token, a signature or a secret, and neither do the logs.
Missing configuration is never "open": the matching routes answer 503 ``auth_not_configured``
(:class:`AuthConfig`, :mod:`.auth_config`).

These modules import no web framework: the HTTP layer hands them header values and raw body bytes.
This module only gathers their public names, so importers need not know how they are split.
"""

from __future__ import annotations

from controller.adapters.auth_config import (
    GOOGLE_CERTS_URL,
    TRUST_PLATFORM_SETTING,
    AuthConfig,
    AuthError,
    AuthFailure,
    FailureStatus,
    Principal,
)
from controller.adapters.id_tokens import (
    CLOCK_SKEW_SECONDS,
    GOOGLE_ISSUERS,
    MAX_TOKEN_CHARS,
    STRIPPED_SIGNATURE,
    IdTokenVerifier,
    identity_header,
)
from controller.adapters.slack_signature import SLACK_REPLAY_WINDOW_SECONDS, SlackVerifier
from controller.adapters.token_certs import (
    CERTS_FAILURE_TTL_SECONDS,
    CERTS_FETCH_TIMEOUT_SECONDS,
    CERTS_MAX_BYTES,
    CERTS_MAX_TTL_SECONDS,
    CERTS_MIN_REFETCH_INTERVAL_SECONDS,
    CERTS_MIN_TTL_SECONDS,
    CERTS_WAIT_SECONDS,
    CertsFetcher,
    CertsFetchError,
    FetchedCerts,
    fetch_certs_over_http,
)

__all__ = [
    "CERTS_FAILURE_TTL_SECONDS",
    "CERTS_FETCH_TIMEOUT_SECONDS",
    "CERTS_MAX_BYTES",
    "CERTS_MAX_TTL_SECONDS",
    "CERTS_MIN_REFETCH_INTERVAL_SECONDS",
    "CERTS_MIN_TTL_SECONDS",
    "CERTS_WAIT_SECONDS",
    "CLOCK_SKEW_SECONDS",
    "GOOGLE_CERTS_URL",
    "GOOGLE_ISSUERS",
    "MAX_TOKEN_CHARS",
    "SLACK_REPLAY_WINDOW_SECONDS",
    "STRIPPED_SIGNATURE",
    "TRUST_PLATFORM_SETTING",
    "AuthConfig",
    "AuthError",
    "AuthFailure",
    "CertsFetchError",
    "CertsFetcher",
    "FailureStatus",
    "FetchedCerts",
    "IdTokenVerifier",
    "Principal",
    "SlackVerifier",
    "fetch_certs_over_http",
    "identity_header",
]
