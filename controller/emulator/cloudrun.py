"""An in-process emulator of the Cloud Run Admin API v2 (REST), for the real ``google-cloud-run`` client.

Point ``run_v2.ServicesClient(transport="rest", credentials=AnonymousCredentials(),
client_options={"api_endpoint": emulator.url})`` at it and the controller's Cloud Run adapter runs
unchanged. Request bodies are parsed, and responses produced, with the real proto types
(``run_v2.Service`` / ``run_v2.Revision`` + ``json_format``), so a field the real client would not
send or accept fails here too. Wire details: ``wire/03-cloud-run-admin-v2-rest.md``.

Implemented (paths under ``/v2/projects/{p}/locations/{l}``):

* ``GET services/{s}``, ``GET services`` (paged), ``PATCH services/{s}`` (returns an LRO),
* ``GET services/{s}/revisions`` (paged, deliberately *not* in creation order — the real API
  promises no order), ``GET services/{s}/revisions/{r}``,
* ``GET operations/{id}`` (LRO polling; answered ``done:false`` ``operation_polls - 1`` times;
  a read of the service while it reconciles is a step of the rollout too, as a real rollout
  proceeds whether or not anyone polls).

Fault injection (5xx/429/401/403/412, delays before and after commit, hung calls, failing
operations, persistent 409, unknown fields): ``emulator.faults``, see
:mod:`controller.emulator.cloudrun_faults`.

What a PATCH does, in order (this is the contract the controller relies on):

1. unknown service → 404; body that is not a valid ``Service`` → 400 ``INVALID_ARGUMENT``;
2. :attr:`CloudRunEmulator.before_patch` runs (lets a test change the service to simulate a race);
3. under one lock, so check-and-write is atomic: a non-empty ``etag`` that differs from the current
   one → 409 ``ABORTED``; ``template.revision`` naming an existing revision whose container images
   differ from the template sent → 409 ``ABORTED`` "Revision named … with different configuration
   already exists"; invalid traffic (percent sum ≠ 100, unknown revision, duplicate tag, …) → 400;
   a target with traffic that is not Ready → the operation finishes with error code 9
   (``FAILED_PRECONDITION``) and the service is left unchanged;
4. ``validateOnly=true`` stops here: a finished operation, nothing changed;
5. otherwise traffic, annotations, labels and template are replaced (only those named in
   ``updateMask`` when one is given; without a mask, everything: AIP-134; empty traffic means
   LATEST 100 %, as in Cloud Run), ``generation`` is bumped, ``etag`` and ``updateTime`` change,
   and ``trafficStatuses`` follows ``traffic`` once the operation is done;
6. a template that differs from the current one (clearing a named ``template.revision`` included)
   deploys a new revision (terraform-provider-google #13410); naming an existing revision with a
   different template is 409 (googleapis/google-cloud-python #11870). ``template.revision`` is empty
   unless the service was seeded with ``named_revisions=True``;
7. traffic to a revision made to fail with :meth:`CloudRunEmulator.fail_to_serve` (or an armed
   ``faults.fail_operations``) is committed, but the rollout fails: ``trafficStatuses`` keep what
   served, ``terminalCondition`` is FAILED, the operation ends with code 13.

Simplifications, on purpose:

* A deployed revision is Ready at once and takes the image of the template's first container;
  the rest of the template is the emulator's fixed one.
* Services cannot be created or deleted over the API (``allowMissing`` is ignored); tests seed them
  with :meth:`CloudRunEmulator.add_service`. No IAM: requests carry no credentials (the client uses
  ``AnonymousCredentials``), and none are required.
* The etag changes on every write made through the API or the Python helpers, including status
  changes such as :meth:`CloudRunEmulator.set_revision_ready`, but not when an operation finishes
  reconciling.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import logging
import re
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from google.api import launch_stage_pb2
from google.cloud import run_v2
from google.protobuf import json_format

from controller.emulator import BackgroundHTTPServer, JsonHandler
from controller.emulator.cloudrun_faults import CloudRunFaults

__all__ = [
    "SAMPLE_PROJECT",
    "SAMPLE_REGION",
    "SAMPLE_REVISIONS",
    "SAMPLE_SERVICE",
    "CloudRunEmulator",
    "PatchOutcome",
    "PatchRecord",
    "RevisionSpec",
    "seed_sample",
]

log = logging.getLogger(__name__)

SERVICE_TYPE_URL = "type.googleapis.com/google.cloud.run.v2.Service"

PatchOutcome = Literal["applied", "validated", "conflict", "invalid", "failed", "not_found"]
TrafficKind = Literal["LATEST", "REVISION"]

_ALLOCATION = run_v2.TrafficTargetAllocationType
_ALLOCATION_BY_KIND = {
    "LATEST": _ALLOCATION.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
    "REVISION": _ALLOCATION.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
}
_SUCCEEDED = run_v2.Condition.State.CONDITION_SUCCEEDED
_FAILED = run_v2.Condition.State.CONDITION_FAILED

_BASE = r"^/v2/projects/(?P<p>[^/]+)/locations/(?P<l>[^/]+)"
_ROUTES: list[tuple[str, str, re.Pattern[str]]] = [
    ("GET", "list_services", re.compile(_BASE + r"/services$")),
    ("GET", "get_service", re.compile(_BASE + r"/services/(?P<s>[^/:]+)$")),
    ("PATCH", "update_service", re.compile(_BASE + r"/services/(?P<s>[^/:]+)$")),
    ("GET", "list_revisions", re.compile(_BASE + r"/services/(?P<s>[^/]+)/revisions$")),
    ("GET", "get_revision", re.compile(_BASE + r"/services/(?P<s>[^/]+)/revisions/(?P<r>[^/:]+)$")),
    ("GET", "get_operation", re.compile(_BASE + r"/operations/(?P<o>[^/:]+)$")),
]
_ERROR_OUTCOMES: dict[int, PatchOutcome] = {404: "not_found", 409: "conflict"}
_MAX_PAGE_SIZE = 1000
_MAX_OPERATIONS = 1000  # finished operations kept for polling; the oldest are forgotten
_MAX_RECORDS = 10_000  # bound on the request/patch logs, so a long-running emulator stays small


@dataclass(frozen=True)
class RevisionSpec:
    """A revision to seed. ``image`` defaults to a digest derived from the name (distinct per revision)."""

    name: str
    create_time: datetime
    ready: bool = True
    image: str = ""
    liveness_period: int = 0  # seconds; 0 = no liveness probe, as on a service deployed with defaults


@dataclass(frozen=True)
class PatchRecord:
    """One PATCH the emulator received and what became of it (for assertions in tests)."""

    service: str  # full resource name
    outcome: PatchOutcome
    http_status: int
    message: str
    traffic: tuple[dict[str, Any], ...]  # requested traffic, simplified form (see CloudRunEmulator.traffic)
    traffic_changed: bool
    validate_only: bool
    etag_sent: str
    update_mask: tuple[str, ...]
    operation: str  # operation name, "" when the PATCH was answered with an error
    at: datetime


@dataclass(frozen=True)
class _Target:
    kind: TrafficKind
    revision: str = ""
    percent: int = 0
    tag: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "revision": self.revision, "percent": self.percent, "tag": self.tag}


@dataclass
class _Revision:
    name: str
    create_time: datetime
    ready: bool
    image: str
    uid: str
    ready_since: datetime
    serve_error: str = ""  # set by fail_to_serve: routing traffic here fails reconciliation
    liveness_period: int = 0  # seconds between liveness probes; 0 = none (Cloud Run's default)


@dataclass
class _Service:
    project: str
    region: str
    name: str
    uid: str
    create_time: datetime
    update_time: datetime
    etag: str
    labels: dict[str, str]
    annotations: dict[str, str]
    traffic: list[_Target]
    traffic_statuses: list[_Target]
    revisions: dict[str, _Revision] = field(default_factory=dict)
    generation: int = 1
    observed_generation: int = 1
    reconciling: bool = False
    named_revisions: bool = False  # deployed with --revision-suffix / by Cloud Functions
    failure: str = ""  # terminalCondition message after a failed reconciliation ("" = Ready)

    @property
    def resource_name(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/services/{self.name}"

    def newest(self, *, ready_only: bool) -> _Revision | None:
        candidates = [r for r in self.revisions.values() if r.ready or not ready_only]
        return max(candidates, key=lambda r: r.create_time, default=None)


@dataclass
class _Operation:
    name: str
    service_key: str
    generation: int  # the service generation this operation rolls out
    polls_left: int  # GETs still answered done:false
    error: tuple[int, str] | None = None
    committed: bool = False  # the spec was written although the operation ends in ``error``
    done_json: dict[str, Any] | None = None


class _ApiError(Exception):
    """An error answered as ``{"error": {code, status, message}}`` (Google's JSON error shape)."""

    def __init__(self, http_status: int, status: str, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.http_status, "status": self.status, "message": self.message}}


def _not_found(kind: str, name: str, region: str, project: str) -> _ApiError:
    # Same wording as the real API (json/03-run-v2-error-404-not-found.json).
    return _ApiError(
        404,
        "NOT_FOUND",
        f"Resource '{name}' of kind '{kind}' in region '{region}' in project '{project}' does not exist.",
    )


def _key(project: str, region: str, service: str) -> str:
    return f"projects/{project}/locations/{region}/services/{service}"


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def _target_from_dict(raw: Mapping[str, Any]) -> _Target:
    """Accept the simplified form ``{"type": "REVISION"|"LATEST", "revision", "percent", "tag"}``.

    ``type`` may also be the full enum name; when omitted it is REVISION if a revision is named.
    """
    default = "REVISION" if raw.get("revision") else "LATEST"
    kind = str(raw.get("type", default)).upper().removeprefix("TRAFFIC_TARGET_ALLOCATION_TYPE_")
    if kind not in ("LATEST", "REVISION"):
        raise ValueError(f"unknown traffic target type {raw.get('type')!r}")
    return _Target(
        kind="LATEST" if kind == "LATEST" else "REVISION",
        revision=str(raw.get("revision", "")),
        percent=int(raw.get("percent", 0)),
        tag=str(raw.get("tag", "")),
    )


def _targets_from_proto(targets: Iterable[Any]) -> list[_Target]:
    """Convert request ``TrafficTarget``s; raises :class:`_ApiError` 400 for malformed targets."""
    out: list[_Target] = []
    for t in targets:
        kind: TrafficKind
        if t.type_ == _ALLOCATION.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST:
            kind = "LATEST"
        elif t.type_ == _ALLOCATION.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION:
            kind = "REVISION"
        elif t.revision:
            kind = "REVISION"  # unspecified type with a revision name reads as a revision target
        else:
            raise _ApiError(400, "INVALID_ARGUMENT", "Traffic target must specify a type or a revision.")
        out.append(_Target(kind, t.revision, int(t.percent), t.tag))
    return out


def _check_traffic(svc: _Service, targets: Sequence[_Target]) -> str | None:
    """The reason ``targets`` is not a valid traffic split for ``svc`` (400), or ``None``."""
    tags: set[str] = set()
    for t in targets:
        if not 0 <= t.percent <= 100:
            return f"Traffic percent must be between 0 and 100; got {t.percent}."
        if t.kind == "REVISION" and not t.revision:
            return "A traffic target of type REVISION must name a revision."
        if t.kind == "LATEST" and t.revision:
            return f"A traffic target of type LATEST must not name a revision; got '{t.revision}'."
        if t.kind == "REVISION" and t.revision not in svc.revisions:
            return f"Revision '{t.revision}' referenced in traffic does not exist."
        if t.tag:
            if t.tag in tags:
                return f"Traffic tag '{t.tag}' is used by more than one traffic target."
            tags.add(t.tag)
    total = sum(t.percent for t in targets)
    if targets and total != 100:
        return f"Traffic percentages must add up to 100; got {total}."
    return None


def _check_ready(svc: _Service, targets: Sequence[_Target]) -> str | None:
    """The reason a target that would receive traffic cannot serve it, or ``None``."""
    for t in targets:
        if t.percent <= 0:
            continue
        if t.kind == "LATEST":
            if svc.newest(ready_only=True) is None:
                return "The service has no Ready revision to receive LATEST traffic."
        elif not svc.revisions[t.revision].ready:
            return f"Revision '{t.revision}' is not ready and cannot serve traffic."
    return None


def _serve_failure(svc: _Service, targets: Sequence[_Target]) -> tuple[int, str] | None:
    """The operation error when traffic would reach a revision made to fail (``fail_to_serve``)."""
    for t in targets:
        rev = svc.newest(ready_only=True) if t.kind == "LATEST" else svc.revisions.get(t.revision)
        if t.percent > 0 and rev is not None and rev.serve_error:
            return 13, f"Revision '{rev.name}' cannot serve traffic: {rev.serve_error}"
    return None


def _canonical(targets: Iterable[_Target]) -> list[tuple[str, str, int, str]]:
    return sorted((t.kind, t.revision, t.percent, t.tag) for t in targets)


class _Renderer:
    """Builds API JSON for the emulator's state through the real proto types."""

    def __init__(self, svc: _Service) -> None:
        self.svc = svc
        h = _digest(svc.project, svc.name)[:10]
        region_code = "".join(part[0] for part in svc.region.split("-") if part)
        self.project_number = str(int(_digest(svc.project), 16) % 10**12).zfill(12)
        self.host = f"{svc.name}-{h}-{region_code}.a.run.app"
        self.service_account = f"{svc.name}@{svc.project}.iam.gserviceaccount.com"

    def _container(self, rev: _Revision) -> Any:
        # Every revision has Cloud Run's default TCP startup probe (period 240 s, Cloud Run docs
        # "Configure container health checks"); a liveness probe only when seeded with one.
        liveness = (
            run_v2.Probe(
                http_get=run_v2.HTTPGetAction(path="/healthz", port=8080),
                period_seconds=rev.liveness_period,
                timeout_seconds=1,
                failure_threshold=3,
            )
            if rev.liveness_period
            else None
        )
        return run_v2.Container(
            image=rev.image,
            startup_probe=run_v2.Probe(
                tcp_socket=run_v2.TCPSocketAction(port=8080),
                period_seconds=240,
                timeout_seconds=240,
                failure_threshold=1,
            ),
            liveness_probe=liveness,
            ports=[run_v2.ContainerPort(name="http1", container_port=8080)],
            resources=run_v2.ResourceRequirements(
                limits={"cpu": "1000m", "memory": "512Mi"}, cpu_idle=True, startup_cpu_boost=True
            ),
        )

    def _traffic_status(self, t: _Target) -> Any:
        return run_v2.TrafficTargetStatus(
            type_=_ALLOCATION_BY_KIND[t.kind],
            revision=t.revision,
            percent=t.percent,
            tag=t.tag,
            uri=f"https://{t.tag}---{self.host}" if t.tag else "",
        )

    def template(self) -> Any:
        """The service's current template: the newest created revision's configuration.

        ``revision`` is set only when the service names its revisions (as Cloud Run does for
        ``--revision-suffix`` deploys and Cloud Functions-managed services).
        """
        svc = self.svc
        created = svc.newest(ready_only=False)
        return run_v2.RevisionTemplate(
            revision=created.name if created and svc.named_revisions else "",
            scaling=run_v2.RevisionScaling(max_instance_count=100),
            timeout=timedelta(seconds=300),
            service_account=self.service_account,
            containers=[self._container(created)] if created else [],
            execution_environment=run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2,
            max_instance_request_concurrency=80,
        )

    def _terminal(self) -> Any:
        svc = self.svc
        if svc.reconciling:
            return run_v2.Condition(
                type_="Ready", state=run_v2.Condition.State.CONDITION_RECONCILING, last_transition_time=svc.update_time
            )
        if svc.failure:
            return run_v2.Condition(
                type_="Ready",
                state=_FAILED,
                message=svc.failure,
                last_transition_time=svc.update_time,
                severity=run_v2.Condition.Severity.ERROR,
            )
        return run_v2.Condition(type_="Ready", state=_SUCCEEDED, last_transition_time=svc.update_time)

    def service(self) -> dict[str, Any]:
        svc = self.svc
        created = svc.newest(ready_only=False)
        ready = svc.newest(ready_only=True)
        msg = run_v2.Service(
            name=svc.resource_name,
            uid=svc.uid,
            generation=svc.generation,
            labels=svc.labels,
            annotations=svc.annotations,
            create_time=svc.create_time,
            update_time=svc.update_time,
            creator="deployer@example.com",
            last_modifier="deployer@example.com",
            ingress=run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL,
            launch_stage=launch_stage_pb2.LaunchStage.GA,
            template=self.template(),
            traffic=[
                run_v2.TrafficTarget(
                    type_=_ALLOCATION_BY_KIND[t.kind],
                    revision=t.revision,
                    percent=t.percent,
                    tag=t.tag,
                )
                for t in svc.traffic
            ],
            observed_generation=svc.observed_generation,
            terminal_condition=self._terminal(),
            conditions=[
                run_v2.Condition(type_="RoutesReady", state=_SUCCEEDED, last_transition_time=svc.update_time),
                run_v2.Condition(
                    type_="ConfigurationsReady",
                    state=_SUCCEEDED,
                    last_transition_time=created.create_time if created else svc.create_time,
                ),
            ],
            latest_ready_revision=f"{svc.resource_name}/revisions/{ready.name}" if ready else "",
            latest_created_revision=(f"{svc.resource_name}/revisions/{created.name}" if created else ""),
            traffic_statuses=[self._traffic_status(t) for t in svc.traffic_statuses],
            uri=f"https://{self.host}",
            urls=[
                f"https://{svc.name}-{self.project_number}.{svc.region}.run.app",
                f"https://{self.host}",
            ],
            reconciling=svc.reconciling,
            etag=svc.etag,
        )
        out: dict[str, Any] = json_format.MessageToDict(run_v2.Service.pb(msg))
        # proto3 JSON omits defaults; the real API prints these, and clients read them.
        out.setdefault("labels", {})
        out.setdefault("annotations", {})
        out.setdefault("reconciling", False)
        return out

    def revision(self, rev: _Revision) -> dict[str, Any]:
        svc = self.svc
        state = _SUCCEEDED if rev.ready else _FAILED
        ready = run_v2.Condition(type_="Ready", state=state, last_transition_time=rev.ready_since)
        if not rev.ready:
            ready = run_v2.Condition(
                type_="Ready",
                state=state,
                last_transition_time=rev.ready_since,
                message="The user-provided container failed the configured startup probe checks.",
                reason=run_v2.Condition.CommonReason.REVISION_FAILED,
            )
        msg = run_v2.Revision(
            name=f"{svc.resource_name}/revisions/{rev.name}",
            uid=rev.uid,
            generation=1,
            create_time=rev.create_time,
            update_time=rev.create_time,
            launch_stage=launch_stage_pb2.LaunchStage.GA,
            service=svc.resource_name,
            scaling=run_v2.RevisionScaling(max_instance_count=100),
            max_instance_request_concurrency=80,
            timeout=timedelta(seconds=300),
            service_account=self.service_account,
            containers=[self._container(rev)],
            execution_environment=run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2,
            conditions=[
                ready,
                run_v2.Condition(type_="ContainerHealthy", state=state, last_transition_time=rev.ready_since),
                run_v2.Condition(
                    type_="ResourcesAvailable",
                    state=_SUCCEEDED,
                    last_transition_time=rev.create_time,
                ),
            ],
            observed_generation=1,
            log_uri=(
                f"https://console.cloud.google.com/logs/viewer?project={svc.project}"
                f"&resource=cloud_run_revision/service_name/{svc.name}/revision_name/{rev.name}"
            ),
            creator="deployer@example.com",
            etag=f'"{_digest(rev.uid, str(rev.ready))[:24]}/{rev.name}"',
            reconciling=False,
        )
        out: dict[str, Any] = json_format.MessageToDict(run_v2.Revision.pb(msg))
        out.setdefault("labels", {})
        out.setdefault("annotations", {})
        out.setdefault("reconciling", False)
        return out


def _page(items: Sequence[Any], token: str, size: int, parent: str) -> tuple[Sequence[Any], str]:
    """Slice one page; tokens are opaque (base64 JSON bound to the parent), as the API promises."""
    offset = 0
    if token:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token.encode() + b"=="))
            if decoded["parent"] != parent:
                raise ValueError("token from another collection")
            offset = int(decoded["offset"])
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise _ApiError(400, "INVALID_ARGUMENT", "Invalid page token.") from exc
    page = items[offset : offset + size]
    if offset + size >= len(items):
        return page, ""
    raw = json.dumps({"parent": parent, "offset": offset + size}).encode()
    return page, base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _page_size(query: Mapping[str, list[str]], default: int) -> int:
    raw = query.get("pageSize", [""])[0]
    if not raw:
        return default
    try:
        size = int(raw)
    except ValueError as exc:
        raise _ApiError(400, "INVALID_ARGUMENT", f"Invalid pageSize '{raw}'.") from exc
    if size < 0:
        raise _ApiError(400, "INVALID_ARGUMENT", "pageSize must not be negative.")
    return min(size, _MAX_PAGE_SIZE) if size else default


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[0].lower() in ("true", "1")


def _parse_service(body: bytes) -> tuple[Any, list[_Target]]:
    """Parse a PATCH body strictly as a ``run_v2.Service`` (request enums arrive as integers)."""
    try:
        sent = run_v2.Service.from_json(body.decode("utf-8"), ignore_unknown_fields=False)
    except Exception as exc:  # json_format.ParseError, UnicodeDecodeError, …
        raise _ApiError(400, "INVALID_ARGUMENT", f"Invalid Service in request body: {exc}") from exc
    return sent, _targets_from_proto(sent.traffic)


@dataclass(frozen=True)
class _PatchContext:
    """What is known about a PATCH before it is evaluated; builds its :class:`PatchRecord`."""

    key: str
    validate_only: bool
    update_mask: tuple[str, ...]

    def record(
        self,
        outcome: PatchOutcome,
        result: _ApiError | str,
        at: datetime,
        *,
        traffic: Sequence[_Target] = (),
        changed: bool = False,
        etag: str = "",
        operation: str = "",
    ) -> PatchRecord:
        return PatchRecord(
            service=self.key,
            outcome=outcome,
            http_status=result.http_status if isinstance(result, _ApiError) else 200,
            message=result.message if isinstance(result, _ApiError) else result,
            traffic=tuple(t.as_dict() for t in traffic),
            traffic_changed=changed,
            validate_only=self.validate_only,
            etag_sent=etag,
            update_mask=self.update_mask,
            operation=operation,
            at=at,
        )


def _default_clock() -> datetime:
    return datetime.now(UTC)


class CloudRunEmulator(BackgroundHTTPServer):
    """Cloud Run Admin API v2 over plain HTTP on loopback, with helpers to seed and inspect state.

    ``operation_polls`` = 0 answers a PATCH with a finished operation (fastest); N > 0 answers
    ``done:false`` and then ``done:false`` to N-1 polls before ``done:true`` — meanwhile the service
    shows ``reconciling: true`` and its old ``trafficStatuses``. ``clock`` supplies "now"
    (timezone-aware) for ``updateTime``; tests may freeze it.
    """

    thread_name = "cloudrun-emulator"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        page_size: int = 50,
        operation_polls: int = 0,
        clock: Callable[[], datetime] = _default_clock,
    ) -> None:
        super().__init__(host, port)
        if page_size <= 0 or operation_polls < 0:
            raise ValueError("page_size must be > 0 and operation_polls >= 0")
        self.page_size = page_size
        self.operation_polls = operation_polls
        self.clock = clock
        #: Called (outside the state lock) with the service's resource name before a PATCH is
        #: evaluated — e.g. to call :meth:`set_traffic` and so make the client's etag stale.
        self.before_patch: Callable[[str], None] | None = None
        #: Called with each :class:`PatchRecord` after it is recorded (the CLI prints them).
        self.after_patch: Callable[[PatchRecord], None] | None = None
        self._lock = threading.RLock()
        self._services: dict[str, _Service] = {}
        self._operations: OrderedDict[str, _Operation] = OrderedDict()
        self._patches: deque[PatchRecord] = deque(maxlen=_MAX_RECORDS)
        self._requests: deque[tuple[str, str]] = deque(maxlen=_MAX_RECORDS)
        self._etag_counter = itertools.count(1)
        #: Armed faults (errors, delays, hangs, failing operations, ...): see ``cloudrun_faults``.
        self.faults = CloudRunFaults()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The ``api_endpoint`` for the client, e.g. ``http://127.0.0.1:40123``."""
        return self.base_url

    def reset(self) -> None:
        """Forget every service, operation and record, and drop ``before_patch`` (a fault injection).

        The server keeps running; ``after_patch`` (an observer) and the settings are kept.
        """
        self.before_patch = None
        self.faults.clear()
        with self._lock:
            self._services.clear()
            self._operations.clear()
            self._patches.clear()
            self._requests.clear()

    def stop(self) -> None:
        """Stop serving; requests sleeping in an injected delay are woken first."""
        self.faults.release()
        super().stop()

    # -- seeding and out-of-band changes ---------------------------------------------------

    def add_service(
        self,
        project: str,
        region: str,
        service: str,
        *,
        revisions: Sequence[RevisionSpec],
        traffic: Sequence[Mapping[str, Any]] | None = None,
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        named_revisions: bool = False,
    ) -> None:
        """Create a service with its revisions. Default traffic: LATEST 100 %.

        ``named_revisions``: the service names its revisions (``--revision-suffix`` deploys, Cloud
        Functions), so its ``template.revision`` is the newest revision's name.
        """
        key = _key(project, region, service)
        now = self.clock()
        revs = [self._new_revision(project, region, service, spec) for spec in revisions]
        svc = _Service(
            project=project,
            region=region,
            name=service,
            uid=str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
            create_time=min((r.create_time for r in revs), default=now),
            update_time=now,
            etag="",
            labels=dict(labels or {}),
            annotations=dict(annotations or {}),
            traffic=[],
            traffic_statuses=[],
            revisions={r.name: r for r in revs},
            named_revisions=named_revisions,
        )
        if len(svc.revisions) != len(revs):
            raise ValueError("revision names must be unique")
        targets = [_target_from_dict(t) for t in traffic] if traffic else [_Target("LATEST", "", 100)]
        problem = _check_traffic(svc, targets)
        if problem:
            raise ValueError(problem)
        svc.traffic, svc.traffic_statuses = list(targets), list(targets)
        with self._lock:
            if key in self._services:
                raise ValueError(f"service {key} already exists")
            svc.etag = self._new_etag(svc)
            self._services[key] = svc

    def add_revision(self, project: str, region: str, service: str, spec: RevisionSpec) -> None:
        """Simulate a deploy: a new revision (a new generation); traffic is left as it is."""
        with self._lock:
            svc = self._get(project, region, service)
            if spec.name in svc.revisions:
                raise ValueError(f"revision {spec.name} already exists")
            svc.revisions[spec.name] = self._new_revision(project, region, service, spec)
            svc.generation += 1
            svc.observed_generation = svc.generation
            svc.update_time = self.clock()
            svc.etag = self._new_etag(svc)

    def set_revision_ready(self, project: str, region: str, service: str, revision: str, ready: bool = True) -> None:
        """Flip a revision's Ready condition (a status change: new etag, same generation)."""
        with self._lock:
            svc = self._get(project, region, service)
            rev = svc.revisions[revision]
            if rev.ready != ready:
                rev.ready = ready
                rev.ready_since = self.clock()
                svc.etag = self._new_etag(svc)

    def fail_to_serve(
        self,
        project: str,
        region: str,
        service: str,
        revision: str,
        message: str = "The user-provided container failed to start and listen on the port defined by PORT=8080.",
    ) -> None:
        """Make ``revision`` unable to take traffic although it reads Ready (``message=""`` undoes it).

        A PATCH that routes traffic to it is committed (spec and annotations as sent, a new
        generation) but its rollout fails: ``trafficStatuses`` keep what served before,
        ``terminalCondition`` turns FAILED with the reason and the operation ends with code 13
        (``google.cloud.run_v2.types.Service`` field docs: reconciling, traffic_statuses,
        terminal_condition).
        """
        with self._lock:
            self._get(project, region, service).revisions[revision].serve_error = message

    def revision_names(self, project: str, region: str, service: str) -> list[str]:
        """Every revision of the service, oldest first."""
        with self._lock:
            revs = self._get(project, region, service).revisions.values()
            return [r.name for r in sorted(revs, key=lambda r: r.create_time)]

    def set_traffic(self, project: str, region: str, service: str, traffic: Sequence[Mapping[str, Any]]) -> None:
        """Change traffic out of band (a human, or another controller instance): new etag."""
        targets = [_target_from_dict(t) for t in traffic]
        with self._lock:
            svc = self._get(project, region, service)
            problem = _check_traffic(svc, targets) or ("" if targets else "traffic is empty")
            if problem:
                raise ValueError(problem)
            svc.traffic, svc.traffic_statuses = list(targets), list(targets)
            svc.generation += 1
            svc.observed_generation = svc.generation
            svc.reconciling = False
            svc.failure = ""
            svc.update_time = self.clock()
            svc.etag = self._new_etag(svc)

    # -- inspection --------------------------------------------------------------------------

    def service(self, project: str, region: str, service: str) -> dict[str, Any]:
        """The service as the API would return it (JSON dict, enum names)."""
        with self._lock:
            return _Renderer(self._get(project, region, service)).service()

    def revision(self, project: str, region: str, service: str, revision: str) -> dict[str, Any]:
        with self._lock:
            svc = self._get(project, region, service)
            return _Renderer(svc).revision(svc.revisions[revision])

    def etag(self, project: str, region: str, service: str) -> str:
        with self._lock:
            return self._get(project, region, service).etag

    def traffic(self, project: str, region: str, service: str) -> list[dict[str, Any]]:
        """Current traffic, simplified: ``[{type: "REVISION"|"LATEST", revision, percent, tag}]``."""
        with self._lock:
            return [t.as_dict() for t in self._get(project, region, service).traffic]

    @property
    def patches(self) -> list[PatchRecord]:
        """Every PATCH received so far (a snapshot, oldest first)."""
        with self._lock:
            return list(self._patches)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(method, path?query)`` of every request received (a snapshot, oldest first)."""
        with self._lock:
            return list(self._requests)

    def applied_traffic_changes(self, project: str, region: str, service: str) -> int:
        """How many PATCHes actually changed this service's traffic."""
        key = _key(project, region, service)
        with self._lock:
            return sum(1 for p in self._patches if p.service == key and p.outcome == "applied" and p.traffic_changed)

    # -- internals ---------------------------------------------------------------------------

    def _get(self, project: str, region: str, service: str) -> _Service:
        svc = self._services.get(_key(project, region, service))
        if svc is None:
            raise KeyError(f"no service {_key(project, region, service)} in the emulator")
        return svc

    def _new_revision(self, project: str, region: str, service: str, spec: RevisionSpec) -> _Revision:
        if spec.create_time.tzinfo is None:
            raise ValueError(f"create_time of {spec.name} must be timezone-aware")
        image = spec.image or (f"{region}-docker.pkg.dev/{project}/app/{service}@sha256:{_digest(spec.name)}")
        return _Revision(
            name=spec.name,
            create_time=spec.create_time,
            ready=spec.ready,
            image=image,
            uid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{_key(project, region, service)}/{spec.name}")),
            ready_since=spec.create_time,
            liveness_period=spec.liveness_period,
        )

    def _new_etag(self, svc: _Service) -> str:
        # Opaque and quoted like the real one; the counter guarantees a change on every write.
        raw = f"{svc.generation}:{next(self._etag_counter)}:{svc.uid}".encode()
        return '"' + base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:15]).decode() + '"'

    def _lookup(self, project: str, region: str, service: str) -> _Service:
        svc = self._services.get(_key(project, region, service))
        if svc is None:
            raise _not_found("SERVICE", service, region, project)
        return svc

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one HTTP request: ``(status, JSON body)``. Used by the HTTP handler."""
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query, keep_blank_values=True)
        with self._lock:
            self._requests.append((method, raw_path))
        allowed = False
        for verb, action, pattern in _ROUTES:
            match = pattern.match(parts.path)
            if not match:
                continue
            allowed = True
            if verb != method:
                continue
            args = {k: unquote(v) for k, v in match.groupdict().items()}
            injected = self.faults.before(action)
            if injected is not None:
                return injected.http_status, _ApiError(injected.http_status, injected.status, injected.message).body()
            try:
                payload = getattr(self, f"_api_{action}")(args, query, body)
            except _ApiError as err:
                return err.http_status, err.body()
            self.faults.after(action)
            return 200, self.faults.decorate(payload)
        if allowed:
            return 501, _ApiError(501, "UNIMPLEMENTED", f"{method} is not implemented here.").body()
        return 404, _ApiError(404, "NOT_FOUND", f"No route for {method} {parts.path}.").body()

    def _api_get_service(self, a: dict[str, str], q: Mapping[str, list[str]], body: bytes) -> dict[str, Any]:
        with self._lock:
            svc = self._lookup(a["p"], a["l"], a["s"])
            if svc.reconciling:
                # A rollout proceeds whether or not anyone polls its operation: a read is a step too.
                for op in list(self._operations.values()):
                    if op.done_json is None and op.service_key == svc.resource_name:
                        self._step(op, svc)
            return _Renderer(svc).service()

    def _api_list_services(self, a: dict[str, str], q: Mapping[str, list[str]], body: bytes) -> dict[str, Any]:
        parent = f"projects/{a['p']}/locations/{a['l']}"
        size = _page_size(q, self.page_size)
        with self._lock:
            names = sorted(k for k in self._services if k.startswith(parent + "/"))
            page, token = _page(names, q.get("pageToken", [""])[0], size, parent)
            out: dict[str, Any] = {"services": [_Renderer(self._services[n]).service() for n in page]}
        if token:
            out["nextPageToken"] = token
        return out

    def _api_list_revisions(self, a: dict[str, str], q: Mapping[str, list[str]], body: bytes) -> dict[str, Any]:
        size = _page_size(q, self.page_size)
        with self._lock:
            svc = self._lookup(a["p"], a["l"], a["s"])
            # A stable order unrelated to creation time: callers must sort by createTime.
            names = sorted(svc.revisions, key=_digest)
            page, token = _page(names, q.get("pageToken", [""])[0], size, svc.resource_name)
            renderer = _Renderer(svc)
            out: dict[str, Any] = {"revisions": [renderer.revision(svc.revisions[n]) for n in page]}
        if token:
            out["nextPageToken"] = token
        return out

    def _api_get_revision(self, a: dict[str, str], q: Mapping[str, list[str]], body: bytes) -> dict[str, Any]:
        with self._lock:
            svc = self._lookup(a["p"], a["l"], a["s"])
            rev = svc.revisions.get(a["r"])
            if rev is None:
                raise _not_found("REVISION", a["r"], a["l"], a["p"])
            return _Renderer(svc).revision(rev)

    def _api_get_operation(self, a: dict[str, str], q: Mapping[str, list[str]], body: bytes) -> dict[str, Any]:
        name = f"projects/{a['p']}/locations/{a['l']}/operations/{a['o']}"
        with self._lock:
            op = self._operations.get(name)
            if op is None:
                raise _ApiError(404, "NOT_FOUND", f"Operation '{name}' does not exist.")
            if op.done_json is not None:
                return op.done_json
            svc = self._services.get(op.service_key)
            if svc is None:  # the service was removed by reset(); nothing left to roll out
                raise _ApiError(404, "NOT_FOUND", f"Operation '{name}' does not exist.")
            return self._step(op, svc)

    def _step(self, op: _Operation, svc: _Service) -> dict[str, Any]:
        """One step of a rollout (a poll of its operation or a read of its service); caller holds the lock."""
        if op.polls_left > 0:
            op.polls_left -= 1
            return self._operation_json(op, svc, done=False)
        if (op.error is None or op.committed) and svc.generation == op.generation and svc.reconciling:
            # Rollout finished (no etag change, see docstring).
            self._finish_rollout(svc, op)
        op.done_json = self._operation_json(op, svc, done=True)
        return op.done_json

    def _operation_json(self, op: _Operation, svc: _Service, *, done: bool) -> dict[str, Any]:
        # Polls are parsed strictly by the client: only Service fields may follow "@type".
        rendered = _Renderer(svc).service()
        out: dict[str, Any] = {
            "name": op.name,
            "metadata": {"@type": SERVICE_TYPE_URL, **rendered},
            "done": done,
        }
        if done and op.error is not None:
            out["error"] = {"code": op.error[0], "message": op.error[1], "details": []}
        elif done:
            out["response"] = {"@type": SERVICE_TYPE_URL, **rendered}
        return out

    def _api_update_service(self, a: dict[str, str], q: Mapping[str, list[str]], body: bytes) -> dict[str, Any]:
        patch = _PatchContext(
            key=_key(a["p"], a["l"], a["s"]),
            validate_only=_flag(q, "validateOnly"),
            update_mask=tuple(p.strip() for raw in q.get("updateMask", []) for p in raw.split(",") if p.strip()),
        )
        try:
            with self._lock:
                self._lookup(a["p"], a["l"], a["s"])
            sent, targets = _parse_service(body)
        except _ApiError as err:
            self._record_patch(patch.record("not_found" if err.http_status == 404 else "invalid", err, self.clock()))
            raise

        hook = self.before_patch
        if hook is not None:
            hook(patch.key)  # outside the lock: the hook may call the emulator's helpers

        # Without a mask the PATCH replaces the whole service with what was sent (AIP-134).
        fields = {"traffic", "annotations", "labels", "template"}
        if patch.update_mask:
            fields &= {p.split(".", 1)[0] for p in patch.update_mask}
        with self._lock:
            try:
                svc = self._lookup(a["p"], a["l"], a["s"])  # the hook may have removed it
                op, changed, message = self._evaluate_patch(svc, sent, targets, fields, patch.validate_only)
            except _ApiError as err:
                outcome: PatchOutcome = _ERROR_OUTCOMES.get(err.http_status, "invalid")
                rec = patch.record(outcome, err, self.clock(), traffic=targets, etag=sent.etag)
                self._record_patch(rec)
                raise
            done = op.polls_left < 0
            op.polls_left = max(op.polls_left, 0)
            self._operations[op.name] = op
            while len(self._operations) > _MAX_OPERATIONS:
                self._operations.popitem(last=False)
            reply = self._operation_json(op, svc, done=done)
            if done:
                op.done_json = reply
            outcome = "failed" if op.error else ("validated" if patch.validate_only else "applied")
            rec = patch.record(
                outcome,
                message,
                self.clock(),
                traffic=targets,
                changed=changed,
                etag=sent.etag,
                operation=op.name,
            )
            # Recorded under the lock, so the record order is the order changes were applied.
            self._patches.append(rec)
        self._notify(rec)
        return reply

    def _record_patch(self, rec: PatchRecord) -> None:
        with self._lock:
            self._patches.append(rec)
        self._notify(rec)

    def _evaluate_patch(
        self,
        svc: _Service,
        sent: Any,
        targets: list[_Target],
        fields: set[str],
        validate_only: bool,
    ) -> tuple[_Operation, bool, str]:
        """Check and (unless validate-only) apply a PATCH. Caller holds the lock.

        Returns the new operation — ``polls_left`` is -1 when it is already done — whether
        traffic changed, and a short description for the record.
        """
        if self.faults.conflict_always:
            raise _ApiError(409, "ABORTED", "The etag provided does not match the current etag of the resource.")
        if sent.etag and sent.etag != svc.etag:
            raise _ApiError(409, "ABORTED", "The etag provided does not match the current etag of the resource.")
        new_revision = self._template_change(svc, sent.template) if "template" in fields else None
        revisions = dict(svc.revisions)
        if new_revision is not None:
            revisions[new_revision.name] = new_revision
        scratch = _Service(**{**svc.__dict__, "revisions": revisions})  # what the checks see
        # Empty traffic in a full update means "LATEST 100 %", as on Cloud Run.
        new_traffic = (targets or [_Target("LATEST", "", 100)]) if "traffic" in fields else list(svc.traffic)
        problem = _check_traffic(scratch, new_traffic)
        if problem:
            raise _ApiError(400, "INVALID_ARGUMENT", problem)

        op = _Operation(
            name=f"projects/{svc.project}/locations/{svc.region}/operations/{uuid.uuid4()}",
            service_key=svc.resource_name,
            generation=svc.generation,
            polls_left=self.operation_polls - 1,
        )
        not_ready = _check_ready(scratch, new_traffic)
        if not_ready:
            op.error = (9, not_ready)  # FAILED_PRECONDITION; the service stays as it was
            return op, False, not_ready
        changed = _canonical(new_traffic) != _canonical(svc.traffic)
        if validate_only:
            return op, changed, "validated; nothing changed"

        # Reconciliation failures keep the spec (annotations included) but not the serving state.
        failure = _serve_failure(scratch, new_traffic) or self.faults.take_operation_failure()
        svc.revisions = revisions
        svc.traffic = list(new_traffic)
        if "annotations" in fields:
            svc.annotations = dict(sent.annotations)
        if "labels" in fields:
            svc.labels = dict(sent.labels)
        svc.generation += 1
        svc.update_time = self.clock()
        svc.etag = self._new_etag(svc)
        op.generation = svc.generation
        if failure is not None:
            op.error, op.committed = failure, True
        if op.polls_left < 0:
            self._finish_rollout(svc, op)
        else:
            svc.reconciling = True  # status catches up when the operation is polled to done
        created = f"; created revision {new_revision.name}" if new_revision else ""
        return op, changed, f"generation {svc.generation}{created}"

    def _finish_rollout(self, svc: _Service, op: _Operation) -> None:
        """The rollout of ``op`` ends: status follows spec, or (on failure) keeps what served."""
        svc.reconciling = False
        svc.observed_generation = svc.generation
        if op.error is None:
            svc.traffic_statuses = list(svc.traffic)
            svc.failure = ""
        else:
            svc.failure = op.error[1]

    def _template_change(self, svc: _Service, sent: Any) -> _Revision | None:
        """The revision a PATCH's template deploys, or None when the template is unchanged.

        Any difference from the current template (clearing ``revision`` included) is a deploy
        (terraform-provider-google #13410); naming an existing revision with a different template
        is refused (googleapis/google-cloud-python #11870).
        """
        current = _Renderer(svc).template()
        if run_v2.RevisionTemplate.pb(sent) == run_v2.RevisionTemplate.pb(current):
            return None
        if sent.revision and sent.revision in svc.revisions:
            raise _ApiError(
                409, "ABORTED", f"Revision named '{sent.revision}' with different configuration already exists."
            )
        if not sent.containers or not sent.containers[0].image:
            raise _ApiError(400, "INVALID_ARGUMENT", "template.containers: a revision needs a container image.")
        name = sent.revision or f"{svc.name}-{len(svc.revisions) + 1:05d}-{_digest(svc.etag, svc.name)[:3]}"
        first = sent.containers[0]
        period = int(first.liveness_probe.period_seconds or 10) if "liveness_probe" in first else 0
        spec = RevisionSpec(name, self.clock(), image=first.image, liveness_period=period)
        return self._new_revision(svc.project, svc.region, svc.name, spec)

    def _notify(self, rec: PatchRecord) -> None:
        hook = self.after_patch
        if hook is not None:
            hook(rec)

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(JsonHandler):
            def _dispatch(self) -> None:
                body = self.read_body()
                if body is None:
                    return
                try:
                    status, payload = emulator.handle(self.command, self.path, body)
                except Exception:  # a bug in the emulator must still answer, not hang the client
                    log.exception("cloud run emulator failed on %s %s", self.command, self.path)
                    status = 500
                    payload = _ApiError(500, "INTERNAL", "emulator error").body()
                self.reply(status, json.dumps(payload).encode())

            do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _dispatch

        return Handler


SAMPLE_PROJECT = "demo-proj"
SAMPLE_REGION = "us-central1"
SAMPLE_SERVICE = "checkout"
SAMPLE_REVISIONS = ("checkout-00040-aaa", "checkout-00041-abc", "checkout-00042-xyz")


def seed_sample(emu: CloudRunEmulator) -> str:
    """Seed the demo service the shipped sample alert names; returns its resource name.

    ``demo-proj/us-central1/checkout`` with three Ready revisions, oldest first
    (``checkout-00040-aaa``, ``-00041-abc``, ``-00042-xyz``) and traffic LATEST 100 %, so
    ``checkout-00042-xyz`` serves everything.
    """
    start = datetime(2024, 5, 10, 9, 0, 5, tzinfo=UTC)
    revisions = [
        RevisionSpec(name, start + timedelta(days=10 * i, minutes=i)) for i, name in enumerate(SAMPLE_REVISIONS)
    ]
    emu.add_service(
        SAMPLE_PROJECT,
        SAMPLE_REGION,
        SAMPLE_SERVICE,
        revisions=revisions,
        labels={"team": "payments"},
    )
    return _key(SAMPLE_PROJECT, SAMPLE_REGION, SAMPLE_SERVICE)
