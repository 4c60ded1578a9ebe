"""The HTTP surface's werkzeug routing, its per-exception answers and the body limit, in process.

The routes' full behaviour (authentication, bodies, Cloud Run) is tested end to end in
tests/integration/test_http_api.py; these pin what the move to werkzeug could have changed:
trailing slashes, HEAD, ``Allow``, which table entry answers a subclass, header case, and that a
body over the limit is a 413 under functions-framework's app (not a 500 from its after-request hook).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from functions_framework import _function_registry
from werkzeug.datastructures import Headers
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from controller.adapters.cloudrun import OperationFailed
from controller.app.canary_reports import NoCanaryPolicy
from controller.core.errors import AccessDenied, ConflictError, PermanentError, ServiceNotFound, TemporaryError
from controller.surfaces import api
from controller.surfaces.http_errors import answer_for, controller_errors, request_errors
from controller.surfaces.http_requests import MAX_BODY_BYTES, HeaderMapping, HttpError
from controller.surfaces.http_routes import route

MAIN = Path(__file__).resolve().parent.parent.parent / "main.py"


def _request(method: str, path: str, **kwargs: Any) -> Request:
    return Request(EnvironBuilder(method=method, path=path, **kwargs).get_environ())


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        pytest.param("GET", "/", "healthz", id="root"),
        pytest.param("GET", "/healthz///", "healthz", id="every-trailing-slash"),
        pytest.param("DELETE", "/hold//", "release", id="delete-hold-two-slashes"),
        pytest.param("POST", "/hold/", "hold", id="post-hold-slash"),
        pytest.param("POST", "/slack/actions/", "slack_actions", id="slack"),
        pytest.param("POST", "/canary/approve", "canary_approve", id="approve"),
    ],
)
def test_routes_match_with_any_trailing_slashes(method: str, path: str, name: str) -> None:
    assert route(_request(method, path))[1].name == name


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        pytest.param("HEAD", "/healthz", 405, "GET", id="no-implicit-head"),
        pytest.param("PUT", "/hold", 405, "DELETE, POST", id="put-hold"),
        pytest.param("PROPFIND", "/status", 405, "GET", id="unknown-method"),
        pytest.param("POST", "/slack//actions", 404, None, id="inner-double-slash"),
        pytest.param("GET", "/canary", 404, None, id="prefix-only"),
        pytest.param("GET", "/rollback/x", 404, None, id="below-a-route"),
    ],
)
def test_unknown_paths_are_404_and_wrong_methods_405_with_allow(
    method: str, path: str, status: int, allow: str | None
) -> None:
    with pytest.raises(HttpError) as caught:
        route(_request(method, path))
    assert caught.value.status == status
    assert caught.value.headers.get("Allow") == allow
    trimmed = path.rstrip("/")
    expected = (
        f"no route for {method} {trimmed}"
        if status == 404
        else f"{method} is not allowed on {trimmed} (allowed: {allow})"
    )
    assert caught.value.body == {
        "error": "not_found" if status == 404 else "method_not_allowed",
        "message": expected,
    }


@pytest.mark.parametrize(
    ("exc", "status", "error"),
    [
        pytest.param(OperationFailed("boom"), 502, "operation_failed", id="operation-failed-before-temporary"),
        pytest.param(ConflictError("etag"), 409, "conflict", id="conflict-before-temporary"),
        pytest.param(TemporaryError("down"), 503, "unavailable", id="temporary"),
        pytest.param(ServiceNotFound("gone"), 404, "service_not_found", id="not-found-before-permanent"),
        pytest.param(NoCanaryPolicy("none"), 409, "no_canary_policy", id="no-canary-policy"),
        pytest.param(
            AccessDenied("no", service="s", method="m", permission="p"), 502, "cloud_run_refused", id="subclass"
        ),
        pytest.param(PermanentError("no"), 502, "cloud_run_refused", id="permanent"),
    ],
)
def test_the_most_specific_table_entry_answers(exc: Exception, status: int, error: str) -> None:
    answer = answer_for(exc, controller_errors())
    assert answer is not None
    assert (answer.status, answer.body["error"]) == (status, error)
    assert ("Retry-After" in answer.headers) == (status == 503)


def test_errors_no_table_knows_are_left_to_raise() -> None:
    assert answer_for(ValueError("x"), controller_errors()) is None
    assert answer_for(ServiceNotFound("x"), request_errors()) is None  # outside Api.run: a 500, as before


def test_headers_reach_the_verifiers_uncopied_and_case_insensitive() -> None:
    headers = HeaderMapping(Headers([("X-Slack-Signature", "v0=abc"), ("Authorization", "Bearer t")]))
    assert headers["x-slack-signature"] == "v0=abc"
    assert headers.get("AUTHORIZATION") == "Bearer t"
    assert dict(headers.items()) == {"X-Slack-Signature": "v0=abc", "Authorization": "Bearer t"}
    assert len(headers) == 2


@pytest.fixture
def http_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """handle_http in functions-framework's own app (its after-request hook reads the body again)."""
    for name in ("FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE", "FUNCTION_TRIGGER_TYPE"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "demo-proj")
    monkeypatch.setattr(sys, "path", [*sys.path])
    monkeypatch.setitem(sys.modules, "main", sys.modules.get("main"))
    monkeypatch.setattr(_function_registry, "REGISTRY_MAP", dict(_function_registry.REGISTRY_MAP))
    create_app: Callable[..., Any] = functions_framework.create_app
    api.reset_api()
    try:
        yield create_app(target="handle_http", source=str(MAIN), signature_type="http").test_client()
    finally:
        api.reset_api()


@pytest.mark.parametrize("path", ["/rollback", "/slack/actions"])
def test_a_declared_body_over_the_limit_is_413_under_functions_framework(http_app: Any, path: str) -> None:
    response = http_app.post(path, data=b"x" * (MAX_BODY_BYTES + 1), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.get_json() == {
        "error": "payload_too_large",
        "message": f"request bodies are limited to {MAX_BODY_BYTES} bytes",
    }
