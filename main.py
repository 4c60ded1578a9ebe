"""Cloud Functions entry points: ``handle_alert`` (CloudEvent), ``handle_http`` (HTTP) and
``handle_command`` (CloudEvent: the commands ``handle_http`` publishes to ROLLBACK_COMMANDS_TOPIC).

Deliberately tiny: the controller and its client libraries are imported on first use, not
at import time, so a cold start pays only for what the first request needs (a health check
never loads google-cloud-run or slack-sdk).

Each entry point sets the log correlation keys once for its invocation (trace and span from the
CloudEvent's ``traceparent`` or the request's ``traceparent`` / ``X-Cloud-Trace-Context``, and
functions-framework's execution id): see ``controller/adapters/logs.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flask
import functions_framework
from cloudevents.exceptions import DataUnmarshallerError
from functions_framework import execution_id as ff_execution_id


def _rejected_body(exc: BaseException) -> Any:
    """A body functions-framework itself cannot parse (5,000 levels deep): 400, not 500."""
    from controller.surfaces.edge import rejected_body

    return rejected_body(exc)


functions_framework.errorhandler(RecursionError)(_rejected_body)
functions_framework.errorhandler(DataUnmarshallerError)(_rejected_body)


def _project() -> str | None:
    """GOOGLE_CLOUD_PROJECT as the settings read it; a bad setting elsewhere must not cost the log keys."""
    from controller.app.settings import Settings

    try:
        return Settings.from_env().default_project
    except ValueError:  # the handler reports the bad setting itself
        return None


def _headers(headers: Any = None) -> Mapping[str, str]:
    """The trace headers of ``headers`` (default: the request being served), by their canonical names."""
    if headers is None:
        headers = flask.request.headers if flask.has_request_context() else {}
    found = {name: headers.get(name) for name in ("traceparent", "X-Cloud-Trace-Context", "Function-Execution-Id")}
    return {name: value for name, value in found.items() if isinstance(value, str)}


def _execution_id() -> str | None:
    """functions-framework's execution id (its ``Function-Execution-Id``), set before our function runs."""
    context = ff_execution_id.execution_context_var.get()
    value = getattr(context, "execution_id", None) or _headers().get("Function-Execution-Id")
    return value if isinstance(value, str) else None


@functions_framework.cloud_event
def handle_alert(cloud_event: Any) -> None:
    """Cloud Monitoring incident via Pub/Sub (Eventarc). Returning acknowledges; raising redelivers."""
    from controller.adapters import events, logs
    from controller.app.engine import get_controller

    with logs.invocation(logs.cloud_event_keys(_project(), cloud_event, _headers(), _execution_id())):
        try:
            get_controller().handle_cloud_event(cloud_event)
        finally:
            events.flush()  # bounded: decision events still in the publisher's batch


@functions_framework.http
def handle_http(request: Any) -> Any:
    """Manual invoke over HTTP (see controller/surfaces/api.py for the routes)."""
    from controller.adapters import events, logs
    from controller.surfaces.api import handle

    with logs.invocation(logs.header_keys(_project(), _headers(request.headers), _execution_id())):
        try:
            return handle(request)
        finally:
            events.flush(0.3)  # shorter: Slack waits 3 s for an interactive answer


@functions_framework.cloud_event
def handle_command(cloud_event: Any) -> None:
    """A command from ROLLBACK_COMMANDS_TOPIC (Slack button, canary tick, queued Slack message).
    Returning acknowledges; raising redelivers (deploy with ``--retry``)."""
    from controller.adapters import events, logs
    from controller.surfaces.command_worker import get_worker

    with logs.invocation(logs.cloud_event_keys(_project(), cloud_event, _headers(), _execution_id())):
        try:
            get_worker().handle_cloud_event(cloud_event)
        finally:
            events.flush()
