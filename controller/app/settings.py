"""Configuration: the one reader of the environment (the contract in DESIGN §7 and the README).

Every variable the controller obeys is named here, as the ``validation_alias`` of one field, and
nowhere else: entry points, the CLI and the HTTP surface get a :class:`Settings` (from
:meth:`Settings.from_env`) and ask :mod:`controller.app.wiring` for clients built from it.
pydantic-settings does the reading; values are trimmed and an empty value counts as unset.

Every variable is optional: unset endpoints mean Google's, unset Slack settings mean "log
only", and the policies default to ``policies/`` beside ``main.py``. Secrets are held as
``SecretStr`` so that printing the settings never shows them. The HTTP API's authentication
variables are held raw here and parsed by ``AuthConfig`` (see ``wiring.build_auth_config``): a
malformed allow list closes the authenticated routes (503), it does not stop the controller.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from controller.adapters.policy_files import DEFAULT_POLICY_PATH as DEFAULT_POLICIES
from controller.adapters.policy_files import ENV_POLICIES, policy_path
from controller.core.errors import InvalidInput

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
_TOPIC = r"^projects/[^/\s]+/topics/[^/\s]+$"

# The mapping Settings.from_env reads (a context variable, so concurrent readers never mix).
# Unset: Settings(...) built in code reads no environment at all.
_SOURCE: ContextVar[Mapping[str, str] | None] = ContextVar("settings_source", default=None)


def _flag(name: str, raw: str | None) -> bool:
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r}: expected true or false")


def _env(name: str) -> AliasChoices:
    """The field reads variable ``name`` (and, built in code, is passed by its field name)."""
    return AliasChoices(name)


class _MappingSource(EnvSettingsSource):
    """The environment pydantic-settings reads: :meth:`Settings.from_env`'s mapping, trimmed,
    blanks dropped (so that ``X=`` and ``X=" "`` mean unset, as they always have)."""

    # pydantic-settings' hook for where the variables come from (the version is pinned).
    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _SOURCE.get()
        if env is None:
            return {}
        return {name: value.strip() for name, value in env.items() if isinstance(value, str) and value.strip()}

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool) -> Any:
        # Strings -> typed values here, not in field validators, so that values built in code
        # stay strictly typed. A string that does not convert is left as it is: the strict
        # validation then rejects it, naming the variable.
        convert = _FROM_TEXT.get(field_name)
        if convert is None or not isinstance(value, str):
            return value
        try:
            return convert(value)
        except ValueError:
            return value


class Settings(BaseSettings):
    # Built in code (tests, model_copy): by field name, strictly typed. Read from the
    # environment: by variable name, strings converted by the field validators below.
    model_config = SettingsConfigDict(
        strict=True, extra="forbid", frozen=True, case_sensitive=True, validate_by_name=True
    )

    policies: Path = Field(default=DEFAULT_POLICIES, validation_alias=_env(ENV_POLICIES))
    run_endpoint: str | None = Field(default=None, validation_alias=_env("ROLLBACK_RUN_ENDPOINT"))
    monitoring_endpoint: str | None = Field(default=None, validation_alias=_env("ROLLBACK_MONITORING_ENDPOINT"))
    slack_bot_token: SecretStr | None = Field(default=None, validation_alias=_env("SLACK_BOT_TOKEN"))
    slack_channel: str | None = Field(default=None, validation_alias=_env("SLACK_CHANNEL"))
    slack_webhook_url: SecretStr | None = Field(default=None, validation_alias=_env("SLACK_WEBHOOK_URL"))
    slack_api_url: str | None = Field(default=None, validation_alias=_env("ROLLBACK_SLACK_API_URL"))
    # The one Slack workspace whose button presses are obeyed (ROLLBACK_SLACK_TEAM_ID; unset: any).
    slack_team_id: str | None = Field(default=None, validation_alias=_env("ROLLBACK_SLACK_TEAM_ID"))
    dry_run: bool = Field(default=False, validation_alias=_env("ROLLBACK_DRY_RUN"))
    default_project: str | None = Field(default=None, validation_alias=_env("GOOGLE_CLOUD_PROJECT"))
    # Regions the canary tick walks when a request names none (ROLLBACK_REGIONS, comma-separated).
    regions: tuple[str, ...] = Field(default=(), validation_alias=_env("ROLLBACK_REGIONS"))
    # Bounds on the alert path (seconds): an API call, and waiting for the traffic operation.
    api_timeout: float = Field(default=10.0, gt=0, validation_alias=_env("ROLLBACK_API_TIMEOUT"))
    operation_timeout: float = Field(default=60.0, gt=0, validation_alias=_env("ROLLBACK_OPERATION_TIMEOUT"))
    # Attempts at the read-decide-write loop when the etag is stale (another writer in between).
    conflict_retries: int = Field(default=4, ge=1, le=10, validation_alias=_env("ROLLBACK_CONFLICT_RETRIES"))
    # The most a Monitoring outage may cost a delivery before the policy's fallback applies.
    monitoring_deadline: float = Field(default=5.0, gt=0, validation_alias=_env("ROLLBACK_MONITORING_DEADLINE"))
    # Every delivery acts, acknowledges or raises within this (ROLLBACK_DELIVERY_DEADLINE, seconds):
    # below Cloud Functions' timeout (60 s by default), so the platform never cuts a delivery short.
    delivery_deadline: float = Field(default=50.0, gt=0, validation_alias=_env("ROLLBACK_DELIVERY_DEADLINE"))
    # Pub/Sub topics (projects/P/topics/T): commands for handle_command, and decision events.
    commands_topic: str | None = Field(default=None, pattern=_TOPIC, validation_alias=_env("ROLLBACK_COMMANDS_TOPIC"))
    events_topic: str | None = Field(default=None, pattern=_TOPIC, validation_alias=_env("ROLLBACK_EVENTS_TOPIC"))
    # Seconds a Slack message may spend on retries (5xx, Retry-After) before it is handed over.
    slack_retry_budget: float = Field(default=20.0, ge=0, validation_alias=_env("ROLLBACK_SLACK_RETRY_BUDGET"))
    # The HTTP API's authentication, raw (parsed, and validated, by AuthConfig: see the module docstring).
    auth_audience: str | None = Field(default=None, validation_alias=_env("ROLLBACK_AUTH_AUDIENCE"))
    auth_allowed_principals: str | None = Field(default=None, validation_alias=_env("ROLLBACK_ALLOWED_PRINCIPALS"))
    auth_certs_url: str | None = Field(default=None, validation_alias=_env("ROLLBACK_AUTH_CERTS_URL"))
    auth_trust_platform: str | None = Field(default=None, validation_alias=_env("ROLLBACK_AUTH_TRUST_PLATFORM"))
    slack_signing_secret: SecretStr | None = Field(default=None, validation_alias=_env("SLACK_SIGNING_SECRET"))
    slack_allowed_users: str | None = Field(default=None, validation_alias=_env("ROLLBACK_SLACK_ALLOWED_USERS"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the caller passes: no .env file, no secrets directory, and os.environ only
        # through from_env (so Settings() in a test never picks up the developer's shell).
        return (init_settings, _MappingSource(settings_cls))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the variables from ``env`` (default: the process environment).

        Raises :class:`SettingsError` (a ``ValueError``): one line per wrong variable, naming it."""
        with _reading(os.environ if env is None else env):
            try:
                return cls()
            except ValidationError as exc:
                raise SettingsError(_explain(exc)) from None


class SettingsError(InvalidInput):
    """A variable is set to something the controller cannot use (the message names it)."""


def policies_from_env(env: Mapping[str, str] | None = None) -> Path:
    """``ROLLBACK_POLICIES`` alone (``validate`` and ``alert-policies`` need no other setting,
    so a malformed unrelated variable must not stop them)."""
    return policy_path(os.environ if env is None else env)


@contextmanager
def _reading(env: Mapping[str, str]) -> Iterator[None]:
    token = _SOURCE.set(env)
    try:
        yield
    finally:
        _SOURCE.reset(token)


def _regions(text: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in text.split(",") if r.strip())


def _dry_run(text: str) -> bool:
    return _flag("ROLLBACK_DRY_RUN", text)


_FROM_TEXT: dict[str, Callable[[str], object]] = {
    "policies": Path,
    "slack_bot_token": SecretStr,
    "slack_webhook_url": SecretStr,
    "slack_signing_secret": SecretStr,
    "dry_run": _dry_run,
    "regions": _regions,
    "api_timeout": float,
    "operation_timeout": float,
    "monitoring_deadline": float,
    "delivery_deadline": float,
    "slack_retry_budget": float,
    "conflict_retries": int,
}


def _explain(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        message = "expected true or false" if error["type"] == "bool_type" else str(error["msg"])
        lines.append(f"{name}={error['input']!r}: {message}")
    return "; ".join(lines)
