"""What the HTTP API answers when something fails: one table per scope, looked up by exception class.

Instead of an ``except`` ladder, each table maps an exception class to the ``HttpError`` it answers,
and :func:`answer_for` picks the entry for the most specific class in the exception's MRO (so
``OperationFailed``, a ``TemporaryError``, answers 502 ``operation_failed``, not 503):

* :func:`request_errors`: the request itself (authentication, the body limit, validation), for any
  handler at any time;
* :func:`controller_errors`: what ManualControl / CanaryControl raised while acting, only inside
  ``Api.run`` (the same classes raised elsewhere, e.g. a policy error while listing, stay 500s, as
  they always were).

The tables are built on first use: a health check imports neither the auth module (slack_sdk) nor
Cloud Run's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import RequestEntityTooLarge

from controller.core.manual_results import traffic_json
from controller.surfaces.http_requests import HttpError, too_large

if TYPE_CHECKING:
    from controller.adapters.auth import AuthError
    from controller.app.manual import Refused

ErrorTable = Mapping[type[BaseException], Callable[[Any], HttpError]]


def unavailable(message: str) -> HttpError:
    error = HttpError(503, "unavailable", message)
    error.headers["Retry-After"] = "5"
    return error


def _auth_answer(exc: AuthError) -> HttpError:
    failure = exc.failure
    error = HttpError(failure.status, failure.error, failure.message)
    if failure.status == 401:
        error.headers["WWW-Authenticate"] = f'Bearer error="{failure.error}"'
    return error


def _refused(exc: Refused) -> HttpError:
    guard, state = exc.refusal, exc.state
    return HttpError(
        409, guard.guard, guard.message, service=state.ref.model_dump(), traffic=traffic_json(state.traffic)
    )


@functools.cache
def request_errors() -> ErrorTable:
    # Imported on first use, not at module level: a health check loads no auth (slack_sdk) module.
    from controller.adapters.auth import AuthError

    return {
        HttpError: lambda exc: exc,
        RequestEntityTooLarge: too_large,
        AuthError: _auth_answer,
    }


@functools.cache
def controller_errors() -> ErrorTable:
    # Imported on first use (cold start): a health check loads neither Cloud Run nor the controller.
    from controller.adapters.cloudrun import OperationFailed
    from controller.app.canary_reports import NoCanaryPolicy
    from controller.app.manual import Refused
    from controller.core.errors import ConflictError, PermanentError, ServiceNotFound, TemporaryError

    return {
        NoCanaryPolicy: lambda exc: HttpError(409, "no_canary_policy", str(exc)),
        Refused: _refused,
        ServiceNotFound: lambda exc: HttpError(404, "service_not_found", str(exc)),
        ConflictError: lambda exc: HttpError(409, "conflict", f"the service kept changing while acting; retry: {exc}"),
        OperationFailed: lambda exc: HttpError(
            502, "operation_failed", f"{exc}; traffic may be unchanged, check status"
        ),
        TemporaryError: lambda exc: unavailable(f"Cloud Run is unavailable, retry later: {exc}"),
        PermanentError: lambda exc: HttpError(502, "cloud_run_refused", str(exc)),
    }


def answer_for(exc: BaseException, table: ErrorTable) -> HttpError | None:
    """The table's answer for ``exc``'s most specific class in it, or None (not this table's to answer)."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls](exc)
    return None
