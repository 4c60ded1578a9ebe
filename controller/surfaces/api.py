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
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import BaseModel, Field, ValidationError

from controller import __version__
from controller.core.models import Strict

if TYPE_CHECKING:
    from controller.adapters.auth import IdTokenVerifier
    from controller.adapters.command_queue import CommandQueue
    from controller.app.canary_control import CanaryControl
    from controller.app.manual import ManualControl
    from controller.core.state import ServiceRef
    from controller.surfaces.slack_actions import SlackActionHandler

log = logging.getLogger("controller.api")

M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES: Final = 64 * 1024
SLACK_API_TIMEOUT: Final = 1.0  # seconds per Cloud Run call on the Slack path (Slack waits 3 s in all)
SLACK_OPERATION_TIMEOUT: Final = 1.0  # then the change is reported as accepted-but-unconfirmed
SLACK_CONFLICT_RETRIES: Final = 2
SLACK_MONITORING_DEADLINE: Final = 0.8  # seconds for the Promote button's evidence

Reply = tuple[dict[str, Any], int, dict[str, str]]

# path -> method -> handler name; docs/openapi.yaml documents exactly these (a test checks it).
ROUTES: Final[dict[str, dict[str, str]]] = {
    "/": {"GET": "healthz"},
    "/healthz": {"GET": "healthz"},
    "/rollback": {"POST": "rollback"},
    "/undo": {"POST": "undo"},
    "/hold": {"POST": "hold", "DELETE": "release"},
    "/status": {"GET": "status"},
    "/slack/actions": {"POST": "slack_actions"},
    "/canary/tick": {"POST": "canary_tick"},
    "/canary/gate": {"POST": "canary_gate"},
    "/canary/status": {"GET": "canary_status"},
    "/canary/approve": {"POST": "canary_approve"},
}
UNAUTHENTICATED: Final = frozenset({"healthz", "slack_actions"})  # the latter is verified by Slack's signature


# --------------------------------------------------------------------------- request models

_NAME = r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$"  # Cloud Run service / revision ids, regions
_PROJECT = r"^[a-z][a-z0-9.:-]{4,61}[a-z0-9]$"  # project ids (incl. domain-scoped example.com:proj)
_NAME_OR_EMPTY = r"^(?:[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?)?$"  # an optional revision name


class _Strict(Strict):
    pass


class Coordinates(_Strict):
    """Which service: ``project`` defaults to GOOGLE_CLOUD_PROJECT."""

    project: str | None = Field(default=None, pattern=_PROJECT)
    region: str = Field(pattern=_NAME)
    service: str = Field(pattern=_NAME)


class RollbackRequest(Coordinates):
    to_revision: str | None = Field(default=None, pattern=_NAME)
    reason: str = Field(min_length=1, max_length=500)
    dry_run: bool = False
    force: bool = False  # route traffic to a quarantined revision anyway


class UndoRequest(Coordinates):
    reason: str = Field(default="", max_length=500)
    dry_run: bool = False


class HoldRequest(Coordinates):
    reason: str = Field(default="", max_length=500)


class StatusQuery(Coordinates):
    pass


class CanaryTickRequest(_Strict):
    """All services with a canary policy (in the project's ROLLBACK_REGIONS, or ``region``), or one."""

    project: str | None = Field(default=None, pattern=_PROJECT)
    region: str | None = Field(default=None, pattern=_NAME)
    service: str | None = Field(default=None, pattern=_NAME)


class CanaryGateRequest(Coordinates):
    revision: str = Field(default="", pattern=_NAME_OR_EMPTY)


class CanaryApproveRequest(Coordinates):
    candidate: str = Field(default="", pattern=_NAME_OR_EMPTY)


# --------------------------------------------------------------------------- plumbing


class HttpError(Exception):
    """An answer other than 200, raised from deep inside a handler."""

    def __init__(self, status: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": error, "message": message, **extra}
        self.headers: dict[str, str] = {}


def _invalid(fields: list[dict[str, str]]) -> HttpError:
    names = ", ".join(f["field"] for f in fields)
    return HttpError(422, "invalid_request", f"invalid request: {names}", fields=fields)


def _fields(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]} for err in exc.errors()]


@dataclass(frozen=True)
class Incoming:
    """What a route needs from the HTTP request (Flask's ``request`` adapted; tests may build one)."""

    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, list[str]]
    content_length: int | None
    read: Callable[[int], bytes]

    @classmethod
    def from_flask(cls, request: Any) -> Incoming:
        return cls(
            method=str(request.method).upper(),
            path=(request.path or "/").rstrip("/") or "/",
            headers=dict(request.headers.items()),
            query={k: list(v) for k, v in request.args.lists()},
            content_length=request.content_length,
            read=request.stream.read,
        )

    def body(self) -> bytes:
        """The raw body, at most MAX_BODY_BYTES (413 beyond, whether or not Content-Length said so)."""
        data = self.read(MAX_BODY_BYTES + 1)
        if len(data) > MAX_BODY_BYTES:
            raise _too_large()
        return data


def _too_large() -> HttpError:
    return HttpError(413, "payload_too_large", f"request bodies are limited to {MAX_BODY_BYTES} bytes")


def _query_dict(query: Mapping[str, list[str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, values in query.items():
        if len(values) != 1:
            raise _invalid([{"field": key, "message": "given more than once"}])
        out[key] = values[0]
    return out


def _parse_json_object(raw: bytes) -> dict[str, Any]:
    import json

    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise _invalid([{"field": "body", "message": f"not valid JSON: {exc}"}]) from None
    except RecursionError:
        raise _invalid([{"field": "body", "message": "JSON nested too deeply"}]) from None
    if not isinstance(value, dict):
        raise _invalid([{"field": "body", "message": "must be a JSON object"}])
    return value


def _validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(_fields(exc)) from None


# --------------------------------------------------------------------------- the API


@dataclass(frozen=True)
class Accepted:
    """A route's answer meaning "queued, not done yet": HTTP 202 with ``body``."""

    body: dict[str, Any]


class Api:
    """Routing, authentication and error mapping around ManualControl; one per process."""

    def __init__(
        self,
        control: ManualControl,
        id_tokens: IdTokenVerifier,
        slack: SlackActionHandler,
        *,
        default_project: str | None,
        config_error: str = "",
        canary: CanaryControl | None = None,
        commands: CommandQueue | None = None,
    ) -> None:
        self.control = control
        self.canary = canary
        self.commands = commands  # ROLLBACK_COMMANDS_TOPIC: fleet ticks are queued, one command per service
        self.id_tokens = id_tokens
        self.slack = slack
        self.default_project = default_project
        self.config_error = config_error  # malformed auth settings: every authenticated route answers 503

    def dispatch(self, req: Incoming, name: str) -> Reply:
        from controller.adapters.auth import AuthError

        try:
            if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
                raise _too_large()
            if name == "slack_actions":
                body, status = self.slack.handle(req.body(), req.headers)
                return body, status, {}
            actor = self._authenticate(req)
            answer = getattr(self, f"_{name}")(req, actor)
            if isinstance(answer, Accepted):
                return answer.body, 202, {}
            return answer, 200, {}
        except AuthError as exc:
            failure = exc.failure
            headers = {"WWW-Authenticate": f'Bearer error="{failure.error}"'} if failure.status == 401 else {}
            return {"error": failure.error, "message": failure.message}, failure.status, headers
        except HttpError as exc:
            return exc.body, exc.status, exc.headers

    def _authenticate(self, req: Incoming) -> str:
        from controller.adapters.auth import AuthError

        if self.config_error:
            raise AuthError.of(503, "auth_not_configured", f"authentication is misconfigured: {self.config_error}")
        # X-Serverless-Authorization when present, else Authorization (see controller.auth).
        return self.id_tokens.verify_headers(req.headers).email

    # -- coordinates --------------------------------------------------------------------------
    def _ref(self, coords: Coordinates) -> Any:
        from controller.core.state import ServiceRef

        project = coords.project or self.default_project
        if not project:
            message = "required: the request names no project and GOOGLE_CLOUD_PROJECT is unset"
            raise _invalid([{"field": "project", "message": message}])
        return ServiceRef(project=project, region=coords.region, service=coords.service)

    def _run(self, action: Callable[[], Any]) -> Any:
        """Run a ManualControl call, mapping the controller's errors to HTTP answers."""
        from controller.adapters.cloudrun import OperationFailed
        from controller.app.canary_reports import NoCanaryPolicy
        from controller.app.manual import Refused, traffic_json
        from controller.core.errors import ConflictError, PermanentError, ServiceNotFound, TemporaryError

        try:
            return action()
        except NoCanaryPolicy as exc:
            raise HttpError(409, "no_canary_policy", str(exc)) from None
        except Refused as exc:
            raise HttpError(
                409,
                exc.refusal.guard,
                exc.refusal.message,
                service=exc.state.ref.model_dump(),
                traffic=traffic_json(exc.state.traffic),
            ) from None
        except ServiceNotFound as exc:
            raise HttpError(404, "service_not_found", str(exc)) from None
        except ConflictError as exc:
            raise HttpError(409, "conflict", f"the service kept changing while acting; retry: {exc}") from None
        except OperationFailed as exc:
            raise HttpError(502, "operation_failed", f"{exc}; traffic may be unchanged, check status") from None
        except TemporaryError as exc:
            error = HttpError(503, "unavailable", f"Cloud Run is unavailable, retry later: {exc}")
            error.headers["Retry-After"] = "5"
            raise error from None
        except PermanentError as exc:
            raise HttpError(502, "cloud_run_refused", str(exc)) from None

    # -- routes -------------------------------------------------------------------------------
    def _rollback(self, req: Incoming, actor: str) -> dict[str, Any]:
        from controller.app.manual import result_json

        body = _validate(RollbackRequest, _parse_json_object(req.body()))
        ref = self._ref(body)
        result = self._run(
            lambda: self.control.rollback(
                ref,
                actor=actor,
                reason=body.reason,
                to_revision=body.to_revision,
                force=body.force,
                dry_run=body.dry_run,
            )
        )
        return result_json(result)

    def _undo(self, req: Incoming, actor: str) -> dict[str, Any]:
        from controller.app.manual import result_json

        body = _validate(UndoRequest, _parse_json_object(req.body()))
        ref = self._ref(body)
        return result_json(
            self._run(lambda: self.control.undo(ref, actor=actor, reason=body.reason, dry_run=body.dry_run))
        )

    def _hold(self, req: Incoming, actor: str) -> dict[str, Any]:
        from controller.app.manual import result_json

        body = _validate(HoldRequest, _parse_json_object(req.body()))
        ref = self._ref(body)
        return result_json(self._run(lambda: self.control.hold(ref, actor=actor, reason=body.reason)))

    def _release(self, req: Incoming, actor: str) -> dict[str, Any]:
        from controller.app.manual import result_json

        # Coordinates may come in the query (DELETE bodies are unusual) or the body, or both if they agree.
        query, body = _query_dict(req.query), _parse_json_object(req.body())
        clashes = [k for k in query.keys() & body.keys() if query[k] != body[k]]
        if clashes:
            raise _invalid([{"field": k, "message": "query and body disagree"} for k in sorted(clashes)])
        data = _validate(HoldRequest, {**query, **body})
        ref = self._ref(data)
        return result_json(self._run(lambda: self.control.release(ref, actor=actor, reason=data.reason)))

    def _status(self, req: Incoming, actor: str) -> dict[str, Any]:
        from controller.app.manual import status_json

        ref = self._ref(_validate(StatusQuery, _query_dict(req.query)))
        return status_json(self._run(lambda: self.control.status(ref)))

    # -- canary -------------------------------------------------------------------------------
    def _canary_control(self) -> CanaryControl:
        if self.canary is None:
            raise HttpError(503, "not_configured", "canary control is not configured in this process")
        return self.canary

    def _merged(self, req: Incoming) -> dict[str, Any]:
        """Query and body together (a scheduler or CI may send either); they must agree."""
        query, body = _query_dict(req.query), _parse_json_object(req.body())
        clashes = [k for k in query.keys() & body.keys() if query[k] != body[k]]
        if clashes:
            raise _invalid([{"field": k, "message": "query and body disagree"} for k in sorted(clashes)])
        return {**query, **body}

    def _canary_tick(self, req: Incoming, actor: str) -> dict[str, Any] | Accepted:
        from controller.app.canary_reports import report_json

        control = self._canary_control()
        data = _validate(CanaryTickRequest, self._merged(req))
        if data.service:
            if not data.region:
                raise _invalid([{"field": "region", "message": "required when service is given"}])
            ref = self._ref(Coordinates(project=data.project, region=data.region, service=data.service))
            reports = [self._run(lambda: control.tick(ref))]
        else:
            project = data.project or self.default_project
            if not project:
                message = "required: the request names no project and GOOGLE_CLOUD_PROJECT is unset"
                raise _invalid([{"field": "project", "message": message}])
            if not data.region and not control.settings.regions:
                message = "required: the request names no region and ROLLBACK_REGIONS is unset"
                raise _invalid([{"field": "region", "message": message}])
            if self.commands is not None:
                return self._enqueue_ticks(control, self.commands, project, data.region, actor)
            reports = self._run(lambda: control.tick_all(project, data.region))
        return {"services": [report_json(r) for r in reports], "count": len(reports)}

    def _enqueue_ticks(
        self, control: CanaryControl, commands: CommandQueue, project: str, region: str | None, actor: str
    ) -> Accepted:
        """One ``canary-tick`` command per service a canary policy covers; ``handle_command`` ticks each."""
        from controller.adapters.pubsub import PublishFailed

        regions = (region,) if region else control.settings.regions
        refs: list[ServiceRef] = []
        for where in regions:

            def listing(where: str = where) -> list[ServiceRef]:
                return control.run.list_services(project, where)

            listed: list[ServiceRef] = self._run(listing)
            refs.extend(ref for ref in listed if control.policy_for(ref) is not None)
        try:
            ids = commands.canary_ticks(refs, actor=actor)
        except PublishFailed as exc:
            error = HttpError(503, "unavailable", f"could not queue the ticks, retry later: {exc}")
            error.headers["Retry-After"] = "5"
            raise error from None
        log.info(
            "canary ticks queued",
            extra={"fields": {"event": "canary-tick-fleet", "count": len(ids), "project": project, "actor": actor}},
        )
        return Accepted(
            {"queued": len(ids), "count": len(ids), "topic": commands.topic, "services": [r.model_dump() for r in refs]}
        )

    def _canary_gate(self, req: Incoming, actor: str) -> dict[str, Any]:
        from controller.app.canary_reports import gate_json

        control = self._canary_control()
        data = _validate(CanaryGateRequest, self._merged(req))
        ref = self._ref(data)
        return gate_json(self._run(lambda: control.gate(ref, data.revision)))

    def _canary_status(self, req: Incoming, actor: str) -> dict[str, Any]:
        from controller.app.canary_reports import status_json

        control = self._canary_control()
        ref = self._ref(_validate(StatusQuery, _query_dict(req.query)))
        return status_json(self._run(lambda: control.status(ref)))

    def _canary_approve(self, req: Incoming, actor: str) -> dict[str, Any]:
        from controller.app.canary_reports import report_json

        control = self._canary_control()
        data = _validate(CanaryApproveRequest, _parse_json_object(req.body()))
        ref = self._ref(data)
        return report_json(self._run(lambda: control.approve(ref, actor, data.candidate)))


# --------------------------------------------------------------------------- entry point


def handle(request: Any) -> Reply:
    """``handle_http``: route one Flask request."""
    req = Incoming.from_flask(request)
    methods = ROUTES.get(req.path)
    if methods is None:
        return {"error": "not_found", "message": f"no route for {req.method} {req.path}"}, 404, {}
    name = methods.get(req.method)
    if name is None:
        allowed = ", ".join(sorted(methods))
        message = f"{req.method} is not allowed on {req.path} (allowed: {allowed})"
        return {"error": "method_not_allowed", "message": message}, 405, {"Allow": allowed}
    if name == "healthz":
        return {"status": "ok", "version": __version__}, 200, {}
    try:
        return get_api().dispatch(req, name)
    except Exception:
        # An answer, not a stack trace page; the details are in the log.
        log.exception("unexpected error handling %s %s", req.method, req.path)
        return {"error": "internal", "message": "unexpected error; see the function's logs"}, 500, {}


_api: Api | None = None
_api_lock = threading.Lock()


def utc_now() -> datetime:
    return datetime.now(UTC)


def build_api(env: Mapping[str, str]) -> Api:
    """Wire the API from the environment (the variables in the README and docs/security.md)."""
    from controller.adapters import logs
    from controller.adapters.auth import AuthConfig, IdTokenVerifier, SlackVerifier
    from controller.adapters.cloudrun import CloudRunClient
    from controller.app.canary_control import build_canary_control
    from controller.app.manual import ManualControl
    from controller.app.settings import Settings
    from controller.app.wiring import build_notifier
    from controller.surfaces.slack_actions import SlackActionHandler

    logs.configure()
    settings = Settings.from_env(env)
    from controller.adapters import events

    events.install(settings.events_topic)
    notifier = build_notifier(settings)
    # Answering Slack inline: a 1 s client timeout and no rate-limit sleeping (Slack waits 3 s).
    slack_notifier = build_notifier(settings, interactive=True)
    commands = None
    if settings.commands_topic:
        from controller.adapters.command_queue import CommandQueue
        from controller.adapters.pubsub import shared_publisher

        publisher = shared_publisher()
        publisher.warm()  # built and connected now, not on the first button press (Slack's 3 s)
        commands = CommandQueue(settings.commands_topic, publisher, utc_now)
    run = CloudRunClient(
        settings.run_endpoint, api_timeout=settings.api_timeout, operation_timeout=settings.operation_timeout
    )
    control = ManualControl(run, notifier, utc_now, settings)
    # Slack waits 3 s for an answer: the same engine with tight bounds (see slack_actions).
    slack_run = CloudRunClient(
        settings.run_endpoint, api_timeout=SLACK_API_TIMEOUT, operation_timeout=SLACK_OPERATION_TIMEOUT
    )
    slack_settings = settings.model_copy(update={"conflict_retries": SLACK_CONFLICT_RETRIES})
    slack_control = ManualControl(slack_run, slack_notifier, utc_now, slack_settings)
    config_error = ""
    try:
        auth = AuthConfig.from_env(env)
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
