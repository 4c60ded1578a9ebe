"""The HTTP routes of ``handle_http``: a werkzeug ``Map`` of typed handlers on ``Api``.

``URL_MAP`` declares every route once (path, method, handler); ``ROUTES`` is derived from it and
``docs/openapi.yaml`` documents exactly those (a test checks it). Each handler is an ``Api`` method
``(request, actor) -> body | Answer``; what failures answer is in ``controller.surfaces.http_errors``
(per-exception tables), what requests may hold in ``controller.surfaces.http_requests``.

Still by hand, and why: the path is trimmed of *every* trailing slash before matching (werkzeug's
``strict_slashes=False`` forgives only one, and this API has always accepted ``/hold//``); HEAD is
taken off the GET rules (werkzeug adds it, this API answers it 405 with ``Allow: GET``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request

from controller.core.manual_results import result_json, status_json
from controller.surfaces.http_errors import answer_for, controller_errors, request_errors, unavailable
from controller.surfaces.http_requests import (
    CanaryApproveRequest,
    CanaryGateRequest,
    CanaryTickRequest,
    Coordinates,
    HeaderMapping,
    HoldRequest,
    HttpError,
    RollbackRequest,
    StatusQuery,
    UndoRequest,
    invalid,
    json_body,
    merged,
    query_dict,
    read_body,
    refuse_declared_oversize,
    validate,
)

if TYPE_CHECKING:
    from controller.adapters.auth import IdTokenVerifier
    from controller.adapters.command_queue import CommandQueue
    from controller.app.canary_control import CanaryControl
    from controller.app.manual import ManualControl
    from controller.core.state import ServiceRef
    from controller.surfaces.slack_actions import SlackActionHandler

log = logging.getLogger("controller.api")

Reply = tuple[dict[str, Any], int, dict[str, str]]


@dataclass(frozen=True)
class Answer:
    """A route's answer other than a plain 200: ``status`` with ``body`` (202: queued, not done yet)."""

    body: dict[str, Any]
    status: int = 200


Handler = Callable[["Api", Request, str], "dict[str, Any] | Answer"]


@dataclass(frozen=True)
class Endpoint:
    """What a rule leads to: ``handler`` (None: the health check, answered without building the API)
    and whether the caller must present an ID token (Slack's requests are signed instead)."""

    name: str
    handler: Handler | None
    authenticated: bool = True


class Api:
    """Authentication, the typed handlers and error mapping around ManualControl; one per process."""

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

    def dispatch(self, request: Request, endpoint: Endpoint) -> Reply:
        """Declared size, authentication, then the handler; an answer for every error the tables know."""
        assert endpoint.handler is not None  # the health check never gets here
        try:
            refuse_declared_oversize(request)
            actor = self._authenticate(request) if endpoint.authenticated else ""
            answer = endpoint.handler(self, request, actor)
        except Exception as exc:
            error = answer_for(exc, request_errors())
            if error is None:
                raise
            return error.body, error.status, error.headers
        if isinstance(answer, Answer):
            return answer.body, answer.status, {}
        return answer, 200, {}

    def _authenticate(self, request: Request) -> str:
        from controller.adapters.auth import AuthError

        if self.config_error:
            raise AuthError.of(503, "auth_not_configured", f"authentication is misconfigured: {self.config_error}")
        # X-Serverless-Authorization when present, else Authorization (see controller.auth).
        return self.id_tokens.verify_headers(HeaderMapping(request.headers)).email

    def _ref(self, coords: Coordinates) -> ServiceRef:
        from controller.core.state import ServiceRef

        project = coords.project or self.default_project
        if not project:
            message = "required: the request names no project and GOOGLE_CLOUD_PROJECT is unset"
            raise invalid([{"field": "project", "message": message}])
        return ServiceRef(project=project, region=coords.region, service=coords.service)

    def run(self, action: Callable[[], Any]) -> Any:
        """Run a ManualControl / CanaryControl call, answering what it raises from ``controller_errors``."""
        try:
            return action()
        except Exception as exc:
            error = answer_for(exc, controller_errors())
            if error is None:
                raise
            raise error from None

    # -- manual control -----------------------------------------------------------------------
    def rollback(self, request: Request, actor: str) -> dict[str, Any]:
        body = validate(RollbackRequest, json_body(request))
        ref = self._ref(body)
        result = self.run(
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

    def undo(self, request: Request, actor: str) -> dict[str, Any]:
        body = validate(UndoRequest, json_body(request))
        ref = self._ref(body)
        return result_json(
            self.run(lambda: self.control.undo(ref, actor=actor, reason=body.reason, dry_run=body.dry_run))
        )

    def hold(self, request: Request, actor: str) -> dict[str, Any]:
        body = validate(HoldRequest, json_body(request))
        ref = self._ref(body)
        return result_json(self.run(lambda: self.control.hold(ref, actor=actor, reason=body.reason)))

    def release(self, request: Request, actor: str) -> dict[str, Any]:
        # Coordinates may come in the query (DELETE bodies are unusual) or the body, or both if they agree.
        data = validate(HoldRequest, merged(request))
        ref = self._ref(data)
        return result_json(self.run(lambda: self.control.release(ref, actor=actor, reason=data.reason)))

    def status(self, request: Request, actor: str) -> dict[str, Any]:
        ref = self._ref(validate(StatusQuery, query_dict(request)))
        return status_json(self.run(lambda: self.control.status(ref)))

    def slack_actions(self, request: Request, actor: str) -> Answer:
        body, status = self.slack.handle(read_body(request), HeaderMapping(request.headers))
        return Answer(body, status)

    # -- canary -------------------------------------------------------------------------------
    def _canary_control(self) -> CanaryControl:
        if self.canary is None:
            raise HttpError(503, "not_configured", "canary control is not configured in this process")
        return self.canary

    def canary_tick(self, request: Request, actor: str) -> dict[str, Any] | Answer:
        from controller.app.canary_reports import report_json

        control = self._canary_control()
        data = validate(CanaryTickRequest, merged(request))
        if data.service:
            if not data.region:
                raise invalid([{"field": "region", "message": "required when service is given"}])
            ref = self._ref(Coordinates(project=data.project, region=data.region, service=data.service))
            reports = [self.run(lambda: control.tick(ref))]
        else:
            project = data.project or self.default_project
            if not project:
                message = "required: the request names no project and GOOGLE_CLOUD_PROJECT is unset"
                raise invalid([{"field": "project", "message": message}])
            if not data.region and not control.settings.regions:
                message = "required: the request names no region and ROLLBACK_REGIONS is unset"
                raise invalid([{"field": "region", "message": message}])
            if self.commands is not None:
                return self._enqueue_ticks(control, self.commands, project, data.region, actor)
            reports = self.run(lambda: control.tick_all(project, data.region))
        return {"services": [report_json(r) for r in reports], "count": len(reports)}

    def _enqueue_ticks(
        self, control: CanaryControl, commands: CommandQueue, project: str, region: str | None, actor: str
    ) -> Answer:
        """One ``canary-tick`` command per service a canary policy covers; ``handle_command`` ticks each."""
        from controller.adapters.pubsub import PublishFailed

        regions = (region,) if region else control.settings.regions
        refs: list[ServiceRef] = []
        for where in regions:

            def listing(where: str = where) -> list[ServiceRef]:
                return control.run.list_services(project, where)

            listed: list[ServiceRef] = self.run(listing)
            refs.extend(ref for ref in listed if control.policy_for(ref) is not None)
        try:
            ids = commands.canary_ticks(refs, actor=actor)
        except PublishFailed as exc:
            raise unavailable(f"could not queue the ticks, retry later: {exc}") from None
        log.info(
            "canary ticks queued",
            extra={"fields": {"event": "canary-tick-fleet", "count": len(ids), "project": project, "actor": actor}},
        )
        body = {
            "queued": len(ids),
            "count": len(ids),
            "topic": commands.topic,
            "services": [r.model_dump() for r in refs],
        }
        return Answer(body, 202)

    def canary_gate(self, request: Request, actor: str) -> dict[str, Any]:
        from controller.app.canary_reports import gate_json

        control = self._canary_control()
        data = validate(CanaryGateRequest, merged(request))
        ref = self._ref(data)
        return gate_json(self.run(lambda: control.gate(ref, data.revision)))

    def canary_status(self, request: Request, actor: str) -> dict[str, Any]:
        from controller.app.canary_reports import status_json

        control = self._canary_control()
        ref = self._ref(validate(StatusQuery, query_dict(request)))
        return status_json(self.run(lambda: control.status(ref)))

    def canary_approve(self, request: Request, actor: str) -> dict[str, Any]:
        from controller.app.canary_reports import report_json

        control = self._canary_control()
        data = validate(CanaryApproveRequest, json_body(request))
        ref = self._ref(data)
        return report_json(self.run(lambda: control.approve(ref, actor, data.candidate)))


# --------------------------------------------------------------------------- the routes

HEALTHZ: Final = Endpoint("healthz", None, authenticated=False)


def _endpoint(handler: Handler, *, authenticated: bool = True) -> Endpoint:
    return Endpoint(handler.__name__, handler, authenticated)


_TABLE: Final[tuple[tuple[str, str, Endpoint], ...]] = (
    ("/", "GET", HEALTHZ),
    ("/healthz", "GET", HEALTHZ),
    ("/rollback", "POST", _endpoint(Api.rollback)),
    ("/undo", "POST", _endpoint(Api.undo)),
    ("/hold", "POST", _endpoint(Api.hold)),
    ("/hold", "DELETE", _endpoint(Api.release)),
    ("/status", "GET", _endpoint(Api.status)),
    ("/slack/actions", "POST", _endpoint(Api.slack_actions, authenticated=False)),  # Slack's signature instead
    ("/canary/tick", "POST", _endpoint(Api.canary_tick)),
    ("/canary/gate", "POST", _endpoint(Api.canary_gate)),
    ("/canary/status", "GET", _endpoint(Api.canary_status)),
    ("/canary/approve", "POST", _endpoint(Api.canary_approve)),
)


def _rule(path: str, method: str, endpoint: Endpoint) -> Rule:
    rule = Rule(path, methods=[method], endpoint=endpoint)
    if rule.methods is not None:
        rule.methods.discard("HEAD")  # werkzeug's implicit HEAD for GET; this API answers HEAD 405
    return rule


# merge_slashes=False: ``/slack//actions`` is a 404 (werkzeug would redirect it).
URL_MAP: Final = Map([_rule(*row) for row in _TABLE], merge_slashes=False)

# path -> method -> handler name; docs/openapi.yaml documents exactly these (a test checks it).
ROUTES: Final[dict[str, dict[str, str]]] = {}
for _path, _method, _target in _TABLE:
    ROUTES.setdefault(_path, {})[_method] = _target.name


def route(request: Request) -> tuple[str, Endpoint]:
    """The request's (trimmed) path and its endpoint; 404 unknown path, 405 wrong method (with ``Allow``)."""
    path = (request.path or "/").rstrip("/") or "/"
    try:
        endpoint, _ = URL_MAP.bind_to_environ(request.environ).match(path, request.method)
    except NotFound:
        raise HttpError(404, "not_found", f"no route for {request.method} {path}") from None
    except MethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.valid_methods or ()))
        error = HttpError(405, "method_not_allowed", f"{request.method} is not allowed on {path} (allowed: {allowed})")
        error.headers["Allow"] = allowed
        raise error from None
    assert isinstance(endpoint, Endpoint)
    return path, endpoint
