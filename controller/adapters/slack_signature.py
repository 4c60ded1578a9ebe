"""Slack request signatures: whether a button press really comes from our Slack app, and from whom.

Slack posts interactivity requests signed with the app's signing secret. :class:`SlackVerifier`
checks the signature on the raw body with slack_sdk's ``SignatureVerifier`` (constant-time), then
the Slack user id against ``ROLLBACK_SLACK_ALLOWED_USERS``. Hand-written on top of slack_sdk, and
why: header shapes are checked first (slack_sdk would raise on a non-numeric timestamp or a
non-ASCII signature instead of answering "invalid"), and the replay window is checked here too, so
a stale request gets its own code (``stale_request``) rather than ``invalid_signature``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Final

from slack_sdk.signature import Clock, SignatureVerifier

from controller.adapters.auth_config import AUTH_LOGGER, AuthConfig, AuthError, header_value

log = logging.getLogger(AUTH_LOGGER)

SLACK_REPLAY_WINDOW_SECONDS: Final = 300
"""Slack's documented window, and slack_sdk's ``SignatureVerifier`` check (``> 60 * 5`` fails)."""

_SLACK_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_SLACK_SIGNATURE_RE = re.compile(r"v0=[0-9a-f]{64}")


class _CallableClock(Clock):
    """Adapts a ``() -> float`` clock to slack_sdk's ``Clock`` interface."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock()


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
        timestamp = header_value(headers, "X-Slack-Request-Timestamp")
        signature = header_value(headers, "X-Slack-Signature")
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
