"""Who may call the HTTP API, and how a refusal looks: the auth adapters' configuration and results.

:class:`AuthConfig` is read once from the environment (``ROLLBACK_AUTH_*``, ``ROLLBACK_ALLOWED_PRINCIPALS``,
``SLACK_SIGNING_SECRET``, ``ROLLBACK_SLACK_ALLOWED_USERS``) and validated strictly: a malformed entry
is named at start-up, and missing configuration is never "open" (the routes answer 503).
:class:`AuthError` / :class:`AuthFailure` carry the 401/403/503 split and the stable error codes;
:class:`Principal` is a verified, allowed caller. The verifiers live in :mod:`.id_tokens` and
:mod:`.slack_signature`; :mod:`controller.adapters.auth` is the import path for all of it.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from controller.core.errors import ControllerError

AUTH_LOGGER: Final = "controller.adapters.auth"
"""One logger for every auth module (the name the logs carried before the module was split)."""

GOOGLE_CERTS_URL: Final = "https://www.googleapis.com/oauth2/v1/certs"
"""Google's OAuth2 token-signing certificates, v1 form: a JSON object of key id -> x509 PEM
(google-auth's ``google.oauth2.id_token._GOOGLE_OAUTH2_CERTS_URL``)."""

TRUST_PLATFORM_SETTING: Final = "ROLLBACK_AUTH_TRUST_PLATFORM"

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


class AuthConfig(BaseModel):
    """Who may call the HTTP API, read once from the environment (see :meth:`from_env`).

    ``allowed_principals`` holds exact emails or ``*@domain`` (that domain only, never its
    subdomains), lower-cased. ``audience`` is one audience or a comma-separated list (a gen2
    function answers on its ``cloudfunctions.net`` and its ``run.app`` URL); see :attr:`audiences`.
    Empty ``audience`` or ``allowed_principals`` -> the ID-token routes answer 503; empty
    ``slack_signing_secret`` or ``slack_allowed_users`` -> the Slack route does.
    ``trust_platform``: accept tokens whose signature Cloud Run removed (see :mod:`.id_tokens`).
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

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


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]``, with the name compared case-insensitively (as HTTP header names are); a
    plain dict from a test or another framework is not case-insensitive."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None
