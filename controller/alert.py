"""What an incident claims, normalised: which service, which revision, which trigger, which numbers.

``alert_from_incident`` turns a parsed Monitoring incident (``controller.incident``) into an
``Alert``. It is pure: no clock, no network. Where the incident is silent the fields are None,
and the engine decides what that means (e.g. no revision label → the newest serving revision).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from controller.state import Frozen

TriggerKind = Literal["error_rate", "latency_p95", "health"]

# Alert-policy user labels the controller understands (GCP label keys: lowercase, digits, _ and -).
LABEL_ROLLBACK_POLICY = "rollback_policy"  # name of the rollback policy to apply
LABEL_TRIGGER = "rollback_trigger"  # error_rate | latency_p95 | health, when the metric is ambiguous


class Alert(Frozen):
    incident_id: str
    state: Literal["open", "closed"]
    is_test: bool = False
    project: str | None = None
    region: str | None = None
    service: str | None = None
    revision: str | None = None
    trigger: TriggerKind | None = None
    metric_type: str = ""
    observed_value: float | None = None
    threshold_value: float | None = None
    window: timedelta | None = None
    alert_policy: str = ""
    condition_name: str = ""
    user_labels: dict[str, str] = {}
    url: str = ""
    summary: str = ""
    started_at: datetime
    ended_at: datetime | None = None

    @property
    def rollback_policy(self) -> str | None:
        return self.user_labels.get(LABEL_ROLLBACK_POLICY) or None
