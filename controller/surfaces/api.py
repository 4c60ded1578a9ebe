"""HTTP routes of ``handle_http``: manual control (rollback, undo, hold, status), canary gating and Slack buttons.

JSON in, JSON out. Every route but ``/healthz`` (and ``/``) and ``/slack/actions`` requires a
Google-signed ID token of an allowed principal (``controller.auth``); ``/slack/actions`` is
verified by Slack's request signature instead. The OpenAPI document is ``docs/openapi.yaml``.

=================  ======================================  ===================================
route              what                                    body / query
=================  ======================================  ===================================
GET /healthz       liveness; touches no cloud API           –
POST /rollback     100% to ``to_revision`` or the chosen    {project?, region, service,
                   target; quarantine the one moved from    to_revision?, reason, dry_run?, force?}
POST /undo         restore the traffic before the last      {project?, region, service, reason?,
                   action                                   dry_run?}
POST /hold         automation never changes the service     {project?, region, service, reason?}
DELETE /hold       lift the hold                            query and/or body: coordinates, reason?
GET /status        traffic, revisions, ledger               ?project=&region=&service=
POST /canary/tick  advance canaries one step (Cloud          body and/or query: {project?,
                   Scheduler); one service or all (202:      region?, service?}
                   queued per service, with the topic)
POST /canary/gate  tick, then CI's verdict: pass | fail |    query and/or body: {project?, region,
                   inconclusive, with the evidence           service, revision?}
GET /canary/status the canary state in the ledger           ?project=&region=&service=
POST /canary/...   approve the promotion to 100%            {project?, region, service, candidate?}
POST /slack/...    Slack interactivity (block_actions)      payload=<JSON> (form), signed
=================  ======================================  ===================================

Answers: 200 with the outcome and the resulting ``traffic``; 401/403/503 from authentication
(``{"error", "message"}``); 404 unknown service or route; 405 wrong method (with ``Allow``);
409 a guard refused (``{"error": <guard>, "message", "traffic"}``) or the service kept changing;
413 body over 64 KiB; 422 invalid body or query (``{"error": "invalid_request", "fields": [...]}``);
502/503 Cloud Run refused or is unavailable.

The order of checks is fixed: route → method → declared size → authentication → read the body
(bounded) → validate → act. Authentication comes before the body is read, so an anonymous caller
cannot make the function parse anything; a ``Content-Length`` over the limit is refused first since
that costs nothing. Everything is built once per process (:func:`get_api`), like the alert path's
controller, and lazily: a health check never imports the Cloud Run or Slack clients.

This module is the entry point and the wiring; the rest of the HTTP surface is in two modules:
``controller.surfaces.http_routes`` (the werkzeug ``Map`` of typed handlers, authentication and the
per-exception answer tables) and ``controller.surfaces.http_requests`` (request models, the body
limit, JSON and query parsing). Still by hand, each for a reason written there: trimming every
trailing slash, no implicit HEAD, and the body limit (``request.max_content_length`` turns a 413 into
a 500 under functions-framework, whose after-request hook reads the body again).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from pydantic import ValidationError

from controller import __version__
from controller.surfaces.http_requests import HttpError
from controller.surfaces.http_routes import ROUTES, Api, Reply, route

if TYPE_CHECKING:
    from werkzeug.wrappers import Request

__all__ = ["ROUTES", "Api", "build_api", "get_api", "handle", "reset_api"]

log = logging.getLogger("controller.api")

SLACK_API_TIMEOUT: Final = 1.0  # seconds per Cloud Run call on the Slack path (Slack waits 3 s in all)
SLACK_OPERATION_TIMEOUT: Final = 1.0  # then the change is reported as accepted-but-unconfirmed
SLACK_CONFLICT_RETRIES: Final = 2
SLACK_MONITORING_DEADLINE: Final = 0.8  # seconds for the Promote button's evidence


# --------------------------------------------------------------------------- entry point


def handle(request: Request) -> Reply:
    """``handle_http``: route one Flask (werkzeug) request."""
    try:
        path, endpoint = route(request)
    except HttpError as exc:
        return exc.body, exc.status, exc.headers
    if endpoint.handler is None:
        return {"status": "ok", "version": __version__}, 200, {}
    try:
        return get_api().dispatch(request, endpoint)
    except Exception:
        # An answer, not a stack trace page; the details are in the log.
        log.exception("unexpected error handling %s %s", request.method, path)
        return {"error": "internal", "message": "unexpected error; see the function's logs"}, 500, {}


_api: Api | None = None
_api_lock = threading.Lock()


def build_api(env: Mapping[str, str]) -> Api:
    """Wire the API from the environment (the variables in the README and docs/security.md)."""
    from controller.adapters import logs
    from controller.adapters.auth import AuthConfig, IdTokenVerifier, SlackVerifier
    from controller.adapters.clock import utc_now
    from controller.app.manual import ManualControl
    from controller.app.settings import Settings
    from controller.app.wiring import (
        build_auth_config,
        build_canary_control,
        build_command_queue,
        build_manual_control,
        build_notifier,
        build_run_client,
    )
    from controller.surfaces.slack_actions import SlackActionHandler

    logs.configure()
    settings = Settings.from_env(env)
    from controller.adapters import events

    events.install(settings.events_topic)
    notifier = build_notifier(settings)
    # Answering Slack inline: a 1 s client timeout and no rate-limit sleeping (Slack waits 3 s).
    slack_notifier = build_notifier(settings, interactive=True)
    commands = build_command_queue(settings, utc_now)  # its publisher connected now (Slack's 3 s)
    control = build_manual_control(settings, notifier, utc_now)
    # Slack waits 3 s for an answer: the same engine with tight bounds (see slack_actions).
    slack_run = build_run_client(settings, api_timeout=SLACK_API_TIMEOUT, operation_timeout=SLACK_OPERATION_TIMEOUT)
    slack_settings = settings.model_copy(update={"conflict_retries": SLACK_CONFLICT_RETRIES})
    slack_control = ManualControl(slack_run, slack_notifier, utc_now, slack_settings)
    config_error = ""
    try:
        auth = build_auth_config(settings)
    except ValidationError as exc:
        # Never open: a malformed allow list closes every authenticated route (503) and says why.
        config_error = "; ".join(str(err["msg"]) for err in exc.errors())
        log.error("authentication settings are invalid; authenticated routes answer 503: %s", config_error)
        auth = AuthConfig()
    canary = build_canary_control(settings, notifier, utc_now)
    # The Slack "Promote" button ticks too: same tight bounds, and Monitoring gets at most
    # SLACK_MONITORING_DEADLINE (an outage then only makes the tick inconclusive: no promotion).
    slack_canary = build_canary_control(
        slack_settings.model_copy(
            update={
                "api_timeout": SLACK_API_TIMEOUT,
                "operation_timeout": SLACK_OPERATION_TIMEOUT,
                "monitoring_deadline": SLACK_MONITORING_DEADLINE,
            }
        ),
        slack_notifier,
        utc_now,
    )
    from controller.surfaces.slack_guard import SlackGuard

    slack = SlackActionHandler(
        SlackVerifier(auth),
        slack_control,
        slack_notifier,
        slack_api_url=settings.slack_api_url,
        canary=slack_canary,
        commands=commands,
        guard=SlackGuard(team_id=settings.slack_team_id),
    )
    return Api(
        control,
        IdTokenVerifier(auth),
        slack,
        default_project=settings.default_project,
        config_error=config_error,
        canary=canary,
        commands=commands,
    )


def get_api(env: Mapping[str, str] | None = None) -> Api:
    """The process-wide API, built from the environment on first use (Cloud Functions reuses it)."""
    global _api
    with _api_lock:
        if _api is None:
            _api = build_api(os.environ if env is None else env)
        return _api


def reset_api() -> None:
    """Forget the process-wide API (tests change the environment between cases)."""
    global _api
    with _api_lock:
        _api = None
