"""Cloud Run Admin API v2 adapter: read a service and its revisions, write traffic + ledger.

Built on google-cloud-run's ``ServicesClient``/``RevisionsClient`` over REST (so the same
code talks to Google or to the local emulator given ``ROLLBACK_RUN_ENDPOINT``). The client
library is imported lazily, on first use, to keep the function's cold start small.

The write is one ``UpdateService`` carrying a minimal Service (name, traffic, annotations,
etag) with ``update_mask = traffic,annotations``. It never touches ``template``: without a mask
the PATCH replaces the whole service, and any template difference (clearing a named
``template.revision`` included) deploys a new revision (terraform-provider-google #13410); echoing
a named one with any difference is refused with 409 (googleapis/google-cloud-python #11870). A
masked ``annotations`` replaces the whole map, so the caller sends every annotation back. The etag
of the read makes a service changed in between refuse the write (409/412, or a 400
FAILED_PRECONDITION about the etag); the caller re-reads, re-decides and retries.

What serves is ``traffic_statuses`` while the service reconciles, its ``observed_generation``
lags ``generation``, or its ``terminal_condition`` is not succeeded: ``traffic`` is then only the
request (``google.cloud.run_v2.types.Service`` field docs).

The operation is polled here, not with ``operation.result()``: each poll has its own timeout
(a hung poll must not hold the worker: ``result(timeout=)`` bounds only the loop), the wait ends
at ``operation_timeout`` or the delivery's deadline (:mod:`controller.deadline`), and a poll that
cannot be parsed (api-core parses operations with ``ignore_unknown_fields=False``, so any field
newer than the pinned client breaks it) is confirmed by reading the service, which parses leniently.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from controller.adapters import deadline as deadlines
from controller.core.errors import (
    AccessDenied,
    ConflictError,
    ControllerError,
    PermanentError,
    ServiceNotFound,
    TemporaryError,
)
from controller.core.state import Frozen, Revision, ServiceRef, ServiceState, TrafficTarget

log = logging.getLogger(__name__)

_LATEST = 1  # run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
_REVISION = 2  # ...TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
_SUCCEEDED = 4  # run_v2.Condition.State.CONDITION_SUCCEEDED
_FAILED = 3  # run_v2.Condition.State.CONDITION_FAILED
UPDATE_MASK = ("traffic", "annotations")
_LISTED_SERVICES = 256  # services whose revision listing is kept (canary ticks walk many)

# The API method behind each call, and the IAM permission it needs (Cloud Run IAM permissions page).
METHODS: dict[str, tuple[str, str]] = {
    "get_service": ("GetService", "run.services.get"),
    "list_services": ("ListServices", "run.services.list"),
    "update_service": ("UpdateService", "run.services.update"),
    "list_revisions": ("ListRevisions", "run.revisions.list"),
    "get_revision": ("GetRevision", "run.revisions.get"),
    "get_operation": ("GetOperation", "run.operations.get"),
}


class Applied(Frozen):
    """The outcome of a committed traffic update."""

    state: ServiceState
    confirmed: bool  # False: accepted by the API, but its operation did not finish in time
    detail: str = ""


class OperationFailed(TemporaryError):
    """Cloud Run accepted the update (spec and annotations are written) but could not serve it.

    Temporary: the caller records the failure, restores what serves and raises, so Pub/Sub
    redelivers and the incident is tried again within the retry budget.
    """

    def __init__(self, message: str, *, targets: tuple[str, ...] = (), error: str = "", code: int = 0) -> None:
        super().__init__(message)
        self.targets = targets
        self.error = error or message
        self.code = code


class CloudRunApi(Protocol):
    """What the engine needs from Cloud Run; the emulator-backed client and test fakes implement it."""

    def read(self, ref: ServiceRef) -> ServiceState: ...

    def update(
        self,
        state: ServiceState,
        traffic: tuple[TrafficTarget, ...],
        annotations: Mapping[str, str],
    ) -> Applied: ...

    def list_services(self, project: str, region: str) -> list[ServiceRef]:
        """Every service in one project and region (the canary tick walks them)."""
        ...


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1] if name else ""


def _traffic(entries: Any) -> tuple[TrafficTarget, ...]:
    out = []
    for t in entries:
        kind: Literal["latest", "revision"] = (
            "latest" if int(t.type_) == _LATEST or (int(t.type_) != _REVISION and not t.revision) else "revision"
        )
        out.append(
            TrafficTarget(
                kind=kind,
                revision=t.revision if kind == "revision" else "",
                percent=t.percent,
                tag=t.tag,
            )
        )
    return tuple(out)


def _ready(conditions: Any) -> bool:
    return any(c.type_ == "Ready" and int(c.state) == _SUCCEEDED for c in conditions)


def _period(container: Any, probe: str) -> int:
    # An absent probe is 0; a present one without a period has Cloud Run's default (10 s).
    return int(getattr(container, probe).period_seconds or 10) if probe in container else 0


def _revision(rev: Any) -> Revision:
    first = rev.containers[0] if rev.containers else None
    return Revision(
        name=_short(rev.name),
        create_time=rev.create_time,
        ready=_ready(rev.conditions),
        image=first.image if first is not None else "",
        liveness_period=_period(first, "liveness_probe") if first is not None else 0,
        startup_period=_period(first, "startup_probe") if first is not None else 0,
    )


def settled(svc: Any) -> bool:
    """True when ``traffic`` is what serves: not reconciling, status caught up, last rollout succeeded."""
    terminal = svc.terminal_condition
    failed_or_pending = bool(terminal.type_) and int(terminal.state) != _SUCCEEDED
    return not (svc.reconciling or int(svc.observed_generation) != int(svc.generation) or failed_or_pending)


def _state(ref: ServiceRef, svc: Any, revisions: tuple[Revision, ...]) -> ServiceState:
    serving = svc.traffic if settled(svc) or not svc.traffic_statuses else svc.traffic_statuses
    return ServiceState(
        ref=ref,
        etag=svc.etag,
        generation=int(svc.generation),
        traffic=_traffic(serving),
        revisions=revisions,
        annotations=dict(svc.annotations),
        latest_ready_revision=_short(svc.latest_ready_revision),
        uri=svc.uri,
    )


def _status_name(exc: Any) -> str:
    """The gRPC status of an API error: from the exception class, or (REST) from the JSON body."""
    code = getattr(exc, "grpc_status_code", None)
    if code is not None:
        return str(getattr(code, "name", code))
    response = getattr(exc, "response", None)
    try:
        return str(response.json()["error"]["status"]) if response is not None else ""
    except Exception:  # no JSON body: the status is unknown, the HTTP code still classifies
        return ""


def _transient(exc: Exception) -> bool:
    """Known transient conditions only (issue 12: everything else is permanent, never a poison loop)."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, auth_exc.GoogleAuthError) and exc.retryable:
        return True  # google-auth says so itself (e.g. a metadata-server hiccup while refreshing)
    return isinstance(
        exc,
        (
            gexc.TooManyRequests,  # 429, gRPC RESOURCE_EXHAUSTED
            gexc.InternalServerError,  # 500, INTERNAL
            gexc.BadGateway,  # 502
            gexc.ServiceUnavailable,  # 503, UNAVAILABLE
            gexc.GatewayTimeout,  # 504, DEADLINE_EXCEEDED
            gexc.RetryError,  # api-core retried a transient error until its deadline
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            auth_exc.TransportError,  # the token endpoint could not be reached
            auth_exc.TimeoutError,
            TimeoutError,
            ConnectionError,
        ),
    )


def _translate(exc: Exception, what: str, ref: ServiceRef) -> Exception:
    """Map an exception from a call (``what`` = a key of METHODS) to what the caller must do."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, ControllerError):
        return exc
    method, permission = METHODS.get(what, (what, ""))
    if isinstance(exc, gexc.NotFound):
        return ServiceNotFound(f"{method}: {ref} not found: {exc.message}")
    if isinstance(exc, gexc.Conflict | gexc.PreconditionFailed):  # 409 ABORTED/ALREADY_EXISTS, 412
        return ConflictError(f"{method}: {ref} changed since it was read ({exc.message})")
    if isinstance(exc, gexc.BadRequest):
        # AIP-154 says a stale etag is ABORTED (409); some APIs answer FAILED_PRECONDITION (400)
        # about the etag. Only that one is a conflict: other 400s will fail the same way again.
        about_etag = "etag" in str(exc.message).lower()
        if about_etag and (isinstance(exc, gexc.FailedPrecondition) or _status_name(exc) == "FAILED_PRECONDITION"):
            return ConflictError(f"{method}: {ref} changed since it was read ({exc.message})")
        return PermanentError(f"{method}: {ref}: the API refused the request: {exc.message}")
    if isinstance(exc, gexc.Unauthorized | gexc.Forbidden):  # REST 401/403; gRPC UNAUTHENTICATED/PERMISSION_DENIED
        return AccessDenied(
            f"Cloud Run {method} on {ref} was refused ({exc.code}): the controller's service account "
            f"lacks {permission or 'a permission'}: {exc.message}",
            service=ref.service,
            method=method,
            permission=permission,
        )
    if _transient(exc):
        return TemporaryError(f"{method}: {ref}: {type(exc).__name__}: {exc}")
    return PermanentError(f"{method}: {ref}: unexpected {type(exc).__name__}: {exc}")


class CloudRunClient:
    """``CloudRunApi`` on google-cloud-run v2 (REST transport).

    Every call takes its timeout from ``api_timeout`` (operation polls: ``poll_timeout``), cut to
    what remains of the delivery's deadline; the operation wait ends after ``operation_timeout``.
    All four are settable so tests do not sleep out production budgets.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        api_timeout: float = 10.0,
        operation_timeout: float = 60.0,
        poll_interval: float = 0.5,
        poll_timeout: float = 5.0,
        revision_ttl: float = 300.0,
    ) -> None:
        self._endpoint = endpoint
        self._api_timeout = api_timeout
        self._operation_timeout = operation_timeout
        self._poll_interval = poll_interval
        self._poll_timeout = poll_timeout
        self._revision_ttl = revision_ttl
        self._lock = threading.Lock()
        self._clients: tuple[Any, Any] | None = None
        # Revisions listed per service: (latest created revision then, monotonic time, revisions).
        self._listed: OrderedDict[str, tuple[str, float, tuple[Revision, ...]]] = OrderedDict()

    def _get_clients(self) -> tuple[Any, Any]:
        with self._lock:
            if self._clients is None:
                from google.cloud import run_v2

                kwargs: dict[str, Any] = {"transport": "rest"}
                if self._endpoint:
                    # Local emulator: plain HTTP, no Google credentials anywhere.
                    from google.auth.credentials import AnonymousCredentials

                    kwargs["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
                    kwargs["client_options"] = {"api_endpoint": self._endpoint}
                self._clients = (run_v2.ServicesClient(**kwargs), run_v2.RevisionsClient(**kwargs))
            return self._clients

    def _call(self, what: str, ref: ServiceRef, fn: Any, *, retry: bool = True, **kwargs: Any) -> Any:
        """One API call with a timeout inside the delivery deadline, errors translated."""
        from google.api_core import exceptions as gexc
        from google.api_core.retry import Retry, if_exception_type

        timeout = deadlines.current().timeout(self._api_timeout, METHODS[what][0])
        if retry:
            kwargs["retry"] = Retry(
                initial=0.1,
                maximum=1.0,
                multiplier=2.0,
                timeout=timeout,
                predicate=if_exception_type(
                    gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError, gexc.TooManyRequests
                ),
            )
        try:
            return fn(timeout=timeout, **kwargs)
        except Exception as exc:
            error = _translate(exc, what, ref)
            if isinstance(error, TemporaryError) and deadlines.current().expired():
                error = deadlines.DeadlineReached(f"delivery deadline reached during {METHODS[what][0]}: {error}")
            raise error from exc

    def _read_service(self, ref: ServiceRef) -> Any:
        services, _ = self._get_clients()
        return self._call("get_service", ref, services.get_service, name=ref.resource_name)

    def read(self, ref: ServiceRef) -> ServiceState:
        """The service, with its revisions listed only when a deploy happened since the last listing.

        A service may have hundreds of revisions (many pages): they are listed again only when
        ``latest_created_revision`` changed or the listing is older than ``revision_ttl``. What a
        stale listing could get wrong (a target since deleted or no longer Ready) is checked by
        ``update`` against the revision itself before writing.
        """
        _, revisions = self._get_clients()
        svc = self._read_service(ref)
        key, created = ref.resource_name, _short(svc.latest_created_revision)
        with self._lock:
            cached = self._listed.get(key)
        if cached is not None and cached[0] == created and time.monotonic() - cached[1] < self._revision_ttl:
            return _state(ref, svc, cached[2])

        def listed(timeout: float, retry: Any) -> tuple[Revision, ...]:
            pager = revisions.list_revisions(parent=ref.resource_name, retry=retry, timeout=timeout)
            return tuple(_revision(r) for r in pager)  # the pager fetches further pages itself

        revs = self._call("list_revisions", ref, listed)
        with self._lock:
            self._listed[key] = (created, time.monotonic(), revs)
            self._listed.move_to_end(key)
            while len(self._listed) > _LISTED_SERVICES:
                self._listed.popitem(last=False)
        return _state(ref, svc, revs)

    def forget_revisions(self, ref: ServiceRef) -> None:
        """Drop the listing of ``ref``'s revisions: the next read lists them again."""
        with self._lock:
            self._listed.pop(ref.resource_name, None)

    def _check_new_targets(self, state: ServiceState, traffic: tuple[TrafficTarget, ...]) -> None:
        """A revision about to receive traffic must still be as the (possibly cached) listing says."""
        _, revisions = self._get_clients()
        serving = set(state.percent_by_revision())
        for name in sorted({t.revision for t in traffic if t.kind == "revision" and t.percent > 0} - serving):
            known = state.revision(name)
            try:
                rev = self._call(
                    "get_revision", state.ref, revisions.get_revision, name=state.ref.revision_resource_name(name)
                )
                now_ready: bool | None = _ready(rev.conditions)
            except ServiceNotFound:
                now_ready = None
            if known is None or now_ready != known.ready:
                self.forget_revisions(state.ref)
                what = "no longer exists" if now_ready is None else f"is {'now' if now_ready else 'no longer'} Ready"
                raise ConflictError(f"revision {name} {what} since the revisions were listed; re-reading")

    def list_services(self, project: str, region: str) -> list[ServiceRef]:
        """Every service in ``projects/{project}/locations/{region}``, all pages (sorted by name)."""
        services, _ = self._get_clients()
        parent = f"projects/{project}/locations/{region}"
        where = ServiceRef(project=project, region=region, service="*")

        def listed(timeout: float, retry: Any) -> list[str]:
            return sorted(
                _short(svc.name) for svc in services.list_services(parent=parent, retry=retry, timeout=timeout)
            )

        names = self._call("list_services", where, listed)
        return [ServiceRef(project=project, region=region, service=n) for n in names]

    def update(
        self,
        state: ServiceState,
        traffic: tuple[TrafficTarget, ...],
        annotations: Mapping[str, str],
    ) -> Applied:
        from google.cloud import run_v2
        from google.protobuf import field_mask_pb2

        services, _ = self._get_clients()
        ref = state.ref
        svc = run_v2.Service(
            name=ref.resource_name,
            etag=state.etag,
            traffic=[
                run_v2.TrafficTarget(
                    type_=_LATEST if t.kind == "latest" else _REVISION,
                    revision=t.revision if t.kind == "revision" else "",
                    percent=t.percent,
                    tag=t.tag,
                )
                for t in traffic
            ],
            annotations=dict(annotations),
        )
        self._check_new_targets(state, traffic)
        request = run_v2.UpdateServiceRequest(service=svc, update_mask=field_mask_pb2.FieldMask(paths=UPDATE_MASK))
        # No retry: an answer lost after the commit must reach the caller (the etag guards a resend).
        operation = self._call("update_service", ref, services.update_service, retry=False, request=request)
        try:
            return self._wait(ref, state, traffic, annotations, operation.operation)
        except OperationFailed:
            self.forget_revisions(ref)  # what the listing said about the target may be stale
            raise

    # -- the operation ------------------------------------------------------------------------
    def _wait(
        self,
        ref: ServiceRef,
        state: ServiceState,
        traffic: tuple[TrafficTarget, ...],
        annotations: Mapping[str, str],
        op: Any,
    ) -> Applied:
        from google.cloud import run_v2
        from google.protobuf import json_format
        from google.protobuf.message import DecodeError

        services, _ = self._get_clients()
        targets = tuple(t.revision or "LATEST" for t in traffic if t.percent > 0)
        budget = min(self._operation_timeout, deadlines.current().remaining_for_waiting())
        until = time.monotonic() + budget
        interval = self._poll_interval
        expected = state.generation + 1
        with contextlib.suppress(DecodeError):  # the metadata is the Service as written
            expected = int(run_v2.Service.deserialize(op.metadata.value).generation) or expected
        last_problem = ""
        while not op.done:
            left = until - time.monotonic()
            if left <= 0:
                pending = state.model_copy(update={"traffic": traffic, "annotations": dict(annotations)})
                detail = f"operation {op.name} not done after {budget:.1f}s"
                return Applied(
                    state=pending, confirmed=False, detail=detail + (f" ({last_problem})" if last_problem else "")
                )
            time.sleep(min(interval, left))
            interval = min(interval * 1.5, 2.0)
            try:
                timeout = max(0.05, min(self._poll_timeout, until - time.monotonic()))
                op = services.get_operation(request={"name": op.name}, timeout=timeout)
            except json_format.ParseError as exc:
                log.info(
                    "operation poll not parseable (newer API fields); confirming by reading the service",
                    extra={"fields": {"operation": op.name, "error": str(exc)[:200]}},
                )
                return self._confirm_by_read(ref, state, traffic, annotations, targets, expected, until)
            except Exception as exc:  # a hung or failed poll: the write is committed, keep waiting
                problem = _translate(exc, "get_operation", ref)
                if isinstance(problem, AccessDenied):
                    # The write is committed; without run.operations.get, watch the service instead.
                    log.error(str(problem), extra={"fields": {"api_method": "GetOperation"}})
                    return self._confirm_by_read(ref, state, traffic, annotations, targets, expected, until)
                last_problem = str(problem)
        if op.HasField("error"):
            raise self._failed(ref, targets, op.error.message, op.error.code)
        try:
            done = run_v2.Service.deserialize(op.response.value)
        except DecodeError:
            return self._confirm_by_read(ref, state, traffic, annotations, targets, expected, until)
        return Applied(state=_state(ref, done, state.revisions), confirmed=True)

    def _confirm_by_read(
        self,
        ref: ServiceRef,
        state: ServiceState,
        traffic: tuple[TrafficTarget, ...],
        annotations: Mapping[str, str],
        targets: tuple[str, ...],
        expected: int,
        until: float,
    ) -> Applied:
        """Wait for the service itself (parsed leniently) to show the rollout of ``expected`` ended."""
        interval = self._poll_interval
        while True:
            svc = self._read_service(ref)
            if int(svc.generation) > expected or (int(svc.observed_generation) >= expected and not svc.reconciling):
                terminal = svc.terminal_condition
                if int(terminal.state) == _FAILED and int(svc.generation) == expected:
                    raise self._failed(ref, targets, terminal.message, 0)
                return Applied(state=_state(ref, svc, state.revisions), confirmed=True, detail="confirmed by read")
            left = until - time.monotonic()
            if left <= 0:
                pending = state.model_copy(update={"traffic": traffic, "annotations": dict(annotations)})
                return Applied(state=pending, confirmed=False, detail=f"generation {expected} still rolling out")
            time.sleep(min(interval, left))
            interval = min(interval * 1.5, 2.0)

    @staticmethod
    def _failed(ref: ServiceRef, targets: tuple[str, ...], error: str, code: int) -> OperationFailed:
        what = ", ".join(targets) or "the requested traffic"
        return OperationFailed(
            f"Cloud Run accepted the change but could not serve {what}: {error}",
            targets=targets,
            error=error,
            code=code,
        )
