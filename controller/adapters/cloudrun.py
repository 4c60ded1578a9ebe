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

This module is the transport (clients, timeouts, the write and the operation wait). The protos
become ``ServiceState`` in :mod:`controller.adapters.cloudrun_convert` (what serves while a service
reconciles), and API errors become the controller's error classes in
:mod:`controller.adapters.cloudrun_errors`.

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
from typing import Any, Protocol

from controller.adapters import deadline as deadlines
from controller.adapters.cloudrun_convert import (
    FAILED,
    LATEST,
    REVISION,
    is_ready,
    revision_from_proto,
    service_state,
    short_name,
)
from controller.adapters.cloudrun_errors import METHODS, translate
from controller.core.errors import (
    AccessDenied,
    ConflictError,
    ServiceNotFound,
    TemporaryError,
)
from controller.core.state import Frozen, Revision, ServiceRef, ServiceState, TrafficTarget

log = logging.getLogger("controller.cloudrun")  # a log field: stable across module moves

UPDATE_MASK = ("traffic", "annotations")
_LISTED_SERVICES = 256  # services whose revision listing is kept (canary ticks walk many)


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
            error = translate(exc, what, ref)
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
        key, created = ref.resource_name, short_name(svc.latest_created_revision)
        with self._lock:
            cached = self._listed.get(key)
        if cached is not None and cached[0] == created and time.monotonic() - cached[1] < self._revision_ttl:
            return service_state(ref, svc, cached[2])

        def listed(timeout: float, retry: Any) -> tuple[Revision, ...]:
            pager = revisions.list_revisions(parent=ref.resource_name, retry=retry, timeout=timeout)
            return tuple(revision_from_proto(r) for r in pager)  # the pager fetches further pages itself

        revs = self._call("list_revisions", ref, listed)
        with self._lock:
            self._listed[key] = (created, time.monotonic(), revs)
            self._listed.move_to_end(key)
            while len(self._listed) > _LISTED_SERVICES:
                self._listed.popitem(last=False)
        return service_state(ref, svc, revs)

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
                now_ready: bool | None = is_ready(rev.conditions)
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
                short_name(svc.name) for svc in services.list_services(parent=parent, retry=retry, timeout=timeout)
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
                    type_=LATEST if t.kind == "latest" else REVISION,
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
                problem = translate(exc, "get_operation", ref)
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
        return Applied(state=service_state(ref, done, state.revisions), confirmed=True)

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
                if int(terminal.state) == FAILED and int(svc.generation) == expected:
                    raise self._failed(ref, targets, terminal.message, 0)
                return Applied(
                    state=service_state(ref, svc, state.revisions), confirmed=True, detail="confirmed by read"
                )
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
