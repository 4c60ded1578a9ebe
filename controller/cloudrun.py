"""Cloud Run Admin API v2 adapter: read a service and its revisions, write traffic + ledger.

Built on google-cloud-run's ``ServicesClient``/``RevisionsClient`` over REST (so the same
code talks to Google or to the local emulator given ``ROLLBACK_RUN_ENDPOINT``). The client
library is imported lazily, on first use, to keep the function's cold start small.

The write is one ``UpdateService`` carrying:

* the service exactly as read, with ``template.revision`` cleared (echoing it makes Cloud Run
  treat the call as "create a revision with this name" and answer 409 when anything in the
  template differs),
* the new traffic and the new annotations (the ledger),
* the etag of the read, so a service changed by someone else in between is refused (409/400)
  instead of overwritten. The caller re-reads, re-decides and retries.

It then waits for the long-running operation, bounded by ``operation_timeout``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, Literal, Protocol

from controller.errors import ConflictError, PermanentError, ServiceNotFound, TemporaryError
from controller.state import Frozen, Revision, ServiceRef, ServiceState, TrafficTarget

if TYPE_CHECKING:
    from google.cloud import run_v2

log = logging.getLogger(__name__)

_LATEST = 1  # run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
_REVISION = 2  # ...TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
_SUCCEEDED = 4  # run_v2.Condition.State.CONDITION_SUCCEEDED
_CACHE_SIZE = 64


class Applied(Frozen):
    """The outcome of a committed traffic update."""

    state: ServiceState
    confirmed: bool  # False: accepted by the API, but its operation did not finish in time
    detail: str = ""


class OperationFailed(PermanentError):
    """Cloud Run accepted the update but its operation ended in an error (e.g. target not Ready)."""


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


def _revision(rev: Any) -> Revision:
    image = rev.containers[0].image if rev.containers else ""
    return Revision(
        name=_short(rev.name),
        create_time=rev.create_time,
        ready=_ready(rev.conditions),
        image=image,
    )


def _state(ref: ServiceRef, svc: Any, revisions: tuple[Revision, ...]) -> ServiceState:
    return ServiceState(
        ref=ref,
        etag=svc.etag,
        generation=int(svc.generation),
        traffic=_traffic(svc.traffic),
        revisions=revisions,
        annotations=dict(svc.annotations),
        latest_ready_revision=_short(svc.latest_ready_revision),
        uri=svc.uri,
    )


def _translate(exc: Exception, what: str, ref: ServiceRef) -> Exception:
    """Map google.api_core errors to the controller's: what the caller must do about them."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.NotFound):
        return ServiceNotFound(f"{what}: {ref} not found: {exc.message}")
    if isinstance(exc, gexc.Conflict):
        return ConflictError(f"{what}: {ref} changed since it was read ({exc.message})")
    if isinstance(exc, gexc.BadRequest):
        # Errors are mapped by HTTP status, so a 400 is a plain BadRequest whatever its
        # gRPC status. AIP-154 says a stale etag is ABORTED (409), but some APIs answer
        # FAILED_PRECONDITION (400): treat a 400 about the etag as a conflict too.
        if isinstance(exc, gexc.FailedPrecondition) or "etag" in str(exc.message).lower():
            return ConflictError(f"{what}: {ref} changed since it was read ({exc.message})")
        return PermanentError(f"{what}: {ref}: the API refused the request: {exc.message}")
    return TemporaryError(f"{what}: {ref}: {type(exc).__name__}: {exc}")


class CloudRunClient:
    """``CloudRunApi`` on google-cloud-run v2 (REST transport)."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        api_timeout: float = 10.0,
        operation_timeout: float = 60.0,
    ) -> None:
        self._endpoint = endpoint
        self._api_timeout = api_timeout
        self._operation_timeout = operation_timeout
        self._lock = threading.Lock()
        self._clients: tuple[Any, Any] | None = None
        # The last services read, by (name, etag): the update echoes exactly what was read.
        self._read_cache: OrderedDict[tuple[str, str], run_v2.Service] = OrderedDict()

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

    def _retry(self) -> Any:
        from google.api_core import exceptions as gexc
        from google.api_core.retry import Retry, if_exception_type

        return Retry(
            initial=0.1,
            maximum=1.0,
            multiplier=2.0,
            timeout=self._api_timeout,
            predicate=if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError),
        )

    def read(self, ref: ServiceRef) -> ServiceState:
        services, revisions = self._get_clients()
        try:
            svc = services.get_service(name=ref.resource_name, retry=self._retry(), timeout=self._api_timeout)
            pager = revisions.list_revisions(parent=ref.resource_name, retry=self._retry(), timeout=self._api_timeout)
            revs = tuple(_revision(r) for r in pager)
        except Exception as exc:
            raise _translate(exc, "read", ref) from exc
        with self._lock:
            self._read_cache[(svc.name, svc.etag)] = svc
            while len(self._read_cache) > _CACHE_SIZE:
                self._read_cache.popitem(last=False)
        return _state(ref, svc, revs)

    def list_services(self, project: str, region: str) -> list[ServiceRef]:
        """Every service in ``projects/{project}/locations/{region}``, all pages (sorted by name)."""
        services, _ = self._get_clients()
        parent = f"projects/{project}/locations/{region}"
        where = ServiceRef(project=project, region=region, service="*")
        try:
            pager = services.list_services(parent=parent, retry=self._retry(), timeout=self._api_timeout)
            names = sorted(_short(svc.name) for svc in pager)  # the pager fetches further pages itself
        except Exception as exc:
            raise _translate(exc, "list services", where) from exc
        return [ServiceRef(project=project, region=region, service=n) for n in names]

    def update(
        self,
        state: ServiceState,
        traffic: tuple[TrafficTarget, ...],
        annotations: Mapping[str, str],
    ) -> Applied:
        from google.cloud import run_v2

        services, _ = self._get_clients()
        ref = state.ref
        with self._lock:
            cached = self._read_cache.get((ref.resource_name, state.etag))
        if cached is None:
            # Not read through this client: fetch it, but keep the etag the decision was made on.
            try:
                cached = services.get_service(name=ref.resource_name, retry=self._retry(), timeout=self._api_timeout)
            except Exception as exc:
                raise _translate(exc, "read", ref) from exc
        svc = run_v2.Service(cached)  # a deep copy: the cached read stays as it was
        svc.template.revision = ""
        svc.etag = state.etag
        del svc.traffic[:]
        svc.traffic.extend(
            run_v2.TrafficTarget(
                type_=_LATEST if t.kind == "latest" else _REVISION,
                revision=t.revision if t.kind == "revision" else "",
                percent=t.percent,
                tag=t.tag,
            )
            for t in traffic
        )
        svc.annotations.clear()
        svc.annotations.update(annotations)
        try:
            operation = services.update_service(service=svc, timeout=self._api_timeout)
        except Exception as exc:
            raise _translate(exc, "update", ref) from exc
        try:
            done = operation.result(timeout=self._operation_timeout)
        except FutureTimeout:
            # The update is committed (the API accepted it, ledger included); only its
            # completion is unconfirmed. Report it as such rather than retrying the write.
            pending = state.model_copy(update={"traffic": traffic, "annotations": dict(annotations)})
            return Applied(
                state=pending,
                confirmed=False,
                detail=f"operation {operation.operation.name} not done after {self._operation_timeout:.0f}s",
            )
        except Exception as exc:
            raise OperationFailed(f"update of {ref} failed: {exc}") from exc
        return Applied(state=_state(ref, done, state.revisions), confirmed=True)
