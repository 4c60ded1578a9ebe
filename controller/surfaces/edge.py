"""Answers for requests that cannot be parsed before the controller's own code runs.

functions-framework parses a CloudEvent body itself (``cloudevents.http.from_http``) before it
calls ``handle_alert``: a body nested thousands of levels deep raises ``RecursionError`` inside
``json.loads`` there (wrapped in cloudevents' ``DataUnmarshallerError`` in binary mode), and Flask
answers 500. ``main.py`` registers :func:`rejected_body` with ``functions_framework.errorhandler``
for those exceptions, so such a request gets a 400 and one "rejected" log line instead.

No Pub/Sub delivery can look like that (Pub/Sub and Eventarc build the envelope; the incident is
base64 inside it and ``controller.incident`` parses it with its own bounds), so the only senders
are direct HTTP callers: 400 is the honest answer, and nothing redelivers it.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("controller.alert")


def rejected_body(exc: BaseException) -> tuple[dict[str, Any], int]:
    """Flask error handler: 400 with a JSON reason, and a log line saying the request was rejected."""
    from controller.adapters import logs

    logs.configure()
    cause = exc.__cause__ or exc.__context__
    deep = isinstance(exc, RecursionError) or isinstance(cause, RecursionError)
    why = "nested too deeply" if deep else "not a parseable CloudEvent"
    log.error(
        f"rejected request (HTTP 400, not retried): body {why}",
        extra={
            "fields": {"event": "alert", "error": f"body {why}", "exception_type": type(exc).__name__},
            "labels": {"reason": "malformed"},
        },
    )
    return {"error": "invalid_request", "message": f"request body {why}"}, 400
