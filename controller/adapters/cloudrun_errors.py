"""Cloud Run API errors → the controller's error classes: what the caller must do about each.

Not found → ``ServiceNotFound``; a stale etag (409/412, or a 400 FAILED_PRECONDITION about the
etag) → ``ConflictError`` (re-read, re-decide, retry); 401/403 → ``AccessDenied`` naming the IAM
permission (``METHODS``); known transient conditions only → ``TemporaryError`` (Pub/Sub
redelivers); everything else → ``PermanentError`` (never a poison loop). The client libraries are
imported inside the functions: they run only after a call failed, and ``import main`` must load no
client library (cold start).
"""

from __future__ import annotations

from typing import Any

from controller.core.errors import (
    AccessDenied,
    ConflictError,
    ControllerError,
    PermanentError,
    ServiceNotFound,
    TemporaryError,
)
from controller.core.state import ServiceRef

# The API method behind each call, and the IAM permission it needs (Cloud Run IAM permissions page).
METHODS: dict[str, tuple[str, str]] = {
    "get_service": ("GetService", "run.services.get"),
    "list_services": ("ListServices", "run.services.list"),
    "update_service": ("UpdateService", "run.services.update"),
    "list_revisions": ("ListRevisions", "run.revisions.list"),
    "get_revision": ("GetRevision", "run.revisions.get"),
    "get_operation": ("GetOperation", "run.operations.get"),
}


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


def translate(exc: Exception, what: str, ref: ServiceRef) -> Exception:
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
