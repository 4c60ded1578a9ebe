"""Configuration, read once from the environment (the contract in DESIGN §7 and the README).

Every variable is optional: unset endpoints mean Google's, unset Slack settings mean "log
only", and the policies default to ``policies/`` beside ``main.py``. Secrets are held as
``SecretStr`` so that printing the settings never shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, SecretStr

from controller.adapters.policy_files import DEFAULT_POLICY_PATH as DEFAULT_POLICIES
from controller.core.models import Strict

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _flag(name: str, raw: str | None) -> bool:
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r}: expected true or false")


class Settings(Strict):
    policies: Path = DEFAULT_POLICIES
    run_endpoint: str | None = None
    monitoring_endpoint: str | None = None
    slack_bot_token: SecretStr | None = None
    slack_channel: str | None = None
    slack_webhook_url: SecretStr | None = None
    slack_api_url: str | None = None
    # The one Slack workspace whose button presses are obeyed (ROLLBACK_SLACK_TEAM_ID; unset: any).
    slack_team_id: str | None = None
    dry_run: bool = False
    default_project: str | None = None
    # Regions the canary tick walks when a request names none (ROLLBACK_REGIONS, comma-separated).
    regions: tuple[str, ...] = ()
    # Bounds on the alert path (seconds): an API call, and waiting for the traffic operation.
    api_timeout: float = Field(default=10.0, gt=0)
    operation_timeout: float = Field(default=60.0, gt=0)
    conflict_retries: int = Field(default=4, ge=1, le=10)
    # The most a Monitoring outage may cost a delivery before the policy's fallback applies.
    monitoring_deadline: float = Field(default=5.0, gt=0)
    # Every delivery acts, acknowledges or raises within this (ROLLBACK_DELIVERY_DEADLINE, seconds):
    # below Cloud Functions' timeout (60 s by default), so the platform never cuts a delivery short.
    delivery_deadline: float = Field(default=50.0, gt=0)
    # Pub/Sub topics (projects/P/topics/T): commands for handle_command, and decision events.
    commands_topic: str | None = Field(default=None, pattern=r"^projects/[^/\s]+/topics/[^/\s]+$")
    events_topic: str | None = Field(default=None, pattern=r"^projects/[^/\s]+/topics/[^/\s]+$")
    # Seconds a Slack message may spend on retries (5xx, Retry-After) before it is handed over.
    slack_retry_budget: float = Field(default=20.0, ge=0)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        token, webhook = get("SLACK_BOT_TOKEN"), get("SLACK_WEBHOOK_URL")
        return cls(
            policies=Path(get("ROLLBACK_POLICIES") or DEFAULT_POLICIES),
            run_endpoint=get("ROLLBACK_RUN_ENDPOINT"),
            monitoring_endpoint=get("ROLLBACK_MONITORING_ENDPOINT"),
            slack_bot_token=SecretStr(token) if token else None,
            slack_channel=get("SLACK_CHANNEL"),
            slack_webhook_url=SecretStr(webhook) if webhook else None,
            slack_api_url=get("ROLLBACK_SLACK_API_URL"),
            slack_team_id=get("ROLLBACK_SLACK_TEAM_ID"),
            dry_run=_flag("ROLLBACK_DRY_RUN", get("ROLLBACK_DRY_RUN")),
            default_project=get("GOOGLE_CLOUD_PROJECT"),
            delivery_deadline=float(get("ROLLBACK_DELIVERY_DEADLINE") or 50.0),
            commands_topic=get("ROLLBACK_COMMANDS_TOPIC"),
            events_topic=get("ROLLBACK_EVENTS_TOPIC"),
            slack_retry_budget=float(get("ROLLBACK_SLACK_RETRY_BUDGET") or 20.0),
            regions=tuple(r.strip() for r in (get("ROLLBACK_REGIONS") or "").split(",") if r.strip()),
        )
