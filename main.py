"""Cloud Functions entry points: ``handle_alert`` (CloudEvent) and ``handle_http`` (HTTP).

Deliberately tiny: the controller and its client libraries are imported on first use, not
at import time, so a cold start pays only for what the first request needs (a health check
never loads google-cloud-run or slack-sdk).
"""

from __future__ import annotations

from typing import Any

import functions_framework
from cloudevents.exceptions import DataUnmarshallerError


def _rejected_body(exc: BaseException) -> Any:
    """A body functions-framework itself cannot parse (5,000 levels deep): 400, not 500."""
    from controller.edge import rejected_body

    return rejected_body(exc)


functions_framework.errorhandler(RecursionError)(_rejected_body)
functions_framework.errorhandler(DataUnmarshallerError)(_rejected_body)


@functions_framework.cloud_event
def handle_alert(cloud_event: Any) -> None:
    """Cloud Monitoring incident via Pub/Sub (Eventarc). Returning acknowledges; raising redelivers."""
    from controller.engine import get_controller

    get_controller().handle_cloud_event(cloud_event)


@functions_framework.http
def handle_http(request: Any) -> Any:
    """Manual invoke over HTTP (see controller/api.py for the routes)."""
    from controller.api import handle

    return handle(request)
