"""Cloud Functions entry points: ``handle_alert`` (CloudEvent), ``handle_http`` (HTTP) and
``handle_command`` (CloudEvent: the commands ``handle_http`` publishes to ROLLBACK_COMMANDS_TOPIC).

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
    from controller.surfaces.edge import rejected_body

    return rejected_body(exc)


functions_framework.errorhandler(RecursionError)(_rejected_body)
functions_framework.errorhandler(DataUnmarshallerError)(_rejected_body)


@functions_framework.cloud_event
def handle_alert(cloud_event: Any) -> None:
    """Cloud Monitoring incident via Pub/Sub (Eventarc). Returning acknowledges; raising redelivers."""
    from controller.adapters import events
    from controller.app.engine import get_controller

    try:
        get_controller().handle_cloud_event(cloud_event)
    finally:
        events.flush()  # bounded: decision events still in the publisher's batch


@functions_framework.http
def handle_http(request: Any) -> Any:
    """Manual invoke over HTTP (see controller/surfaces/api.py for the routes)."""
    from controller.adapters import events
    from controller.surfaces.api import handle

    try:
        return handle(request)
    finally:
        events.flush(0.3)  # shorter: Slack waits 3 s for an interactive answer


@functions_framework.cloud_event
def handle_command(cloud_event: Any) -> None:
    """A command from ROLLBACK_COMMANDS_TOPIC (Slack button, canary tick, queued Slack message).
    Returning acknowledges; raising redelivers (deploy with ``--retry``)."""
    from controller.adapters import events
    from controller.surfaces.command_worker import get_worker

    try:
        get_worker().handle_cloud_event(cloud_event)
    finally:
        events.flush()
