"""Pub/Sub deliveries as Eventarc sends them to the function: binary-mode CloudEvents.

See ../shared/wire/02-pubsub-cloudevent-functions-framework.md: ``ce-*`` headers carry the
event's attributes, the body is the Pub/Sub ``MessagePublishedData`` with base64 ``data``.
"""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

_ids = itertools.count(10_000_000)  # every delivery gets a new Pub/Sub message id


def cloud_event(doc: dict[str, Any] | bytes, *, project: str = "demo-proj") -> tuple[dict[str, str], bytes]:
    """Headers and body of one binary-mode CloudEvent carrying ``doc`` (a dict is JSON-encoded)."""
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    msg_id = str(next(_ids))
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/monitoring-alerts",
        "ce-id": msg_id,
        "ce-time": "2024-06-01T12:06:03.512Z",
    }
    body = {
        "message": {
            "data": base64.b64encode(raw).decode(),
            "messageId": msg_id,
            "publishTime": "2024-06-01T12:06:03.512Z",
            "attributes": {},
        },
        "subscription": f"projects/{project}/subscriptions/eventarc-sub",
    }
    return headers, json.dumps(body).encode()
