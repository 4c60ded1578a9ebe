"""Pub/Sub deliveries as Eventarc sends them to the function: binary-mode CloudEvents.

See ../shared/wire/02-pubsub-cloudevent-functions-framework.md: ``ce-*`` headers carry the
event's attributes, the body is the Pub/Sub ``MessagePublishedData`` with base64 ``data``.

Timing is realistic by default: Monitoring publishes an incident's notification moments after it
opens, so the message is published *now* and an incident document's ``started_at`` is moved to
:data:`OPENED_BEFORE_PUBLISH` before that. (The controller treats an incident older than the
policy's ``rollback.max_alert_age`` as an old delivery that needs Monitoring's current
confirmation; the sample files' 2024 timestamps would make every delivery one.) Pass
``published`` and ``started_at`` to model old deliveries, or ``keep_started_at=True``.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

_ids = itertools.count(10_000_000)  # every delivery gets a new Pub/Sub message id

OPENED_BEFORE_PUBLISH = timedelta(minutes=4)
"""How long before its notification an incident started: the condition's duration and the
evaluation, so that the data Monitoring evaluated is already ingested (see verify.suspect_window_end)."""


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cloud_event(
    doc: dict[str, Any] | bytes,
    *,
    project: str = "demo-proj",
    published: datetime | None = None,
    started_at: datetime | None = None,
    keep_started_at: bool = False,
    delivery_attempt: int | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of one binary-mode CloudEvent carrying ``doc`` (a dict is JSON-encoded).

    ``published`` (default now) is the Pub/Sub publish time and the CloudEvent time;
    ``started_at`` (default ``published - OPENED_BEFORE_PUBLISH``) replaces the incident's start
    unless ``keep_started_at``; ``delivery_attempt`` adds Pub/Sub's ``deliveryAttempt`` (sent
    when the subscription has a dead-letter policy).
    """
    published = published or datetime.now(UTC)
    if isinstance(doc, dict) and not keep_started_at and isinstance(doc.get("incident"), dict):
        doc = copy.deepcopy(doc)
        start = started_at or published - OPENED_BEFORE_PUBLISH
        doc["incident"]["started_at"] = int(start.timestamp())
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    msg_id = str(next(_ids))
    when = rfc3339(published)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/monitoring-alerts",
        "ce-id": msg_id,
        "ce-time": when,
    }
    body: dict[str, Any] = {
        "message": {
            "data": base64.b64encode(raw).decode(),
            "messageId": msg_id,
            "publishTime": when,
            "attributes": {},
        },
        "subscription": f"projects/{project}/subscriptions/eventarc-sub",
    }
    if delivery_attempt is not None:
        body["deliveryAttempt"] = delivery_attempt
    return headers, json.dumps(body).encode()
