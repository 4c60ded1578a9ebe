"""Bodies nested ~5,000 levels deep answer 400/422, never 500 (issue 12 point 6).

The alert function goes through the real functions-framework (which parses the CloudEvent itself
before ``handle_alert`` runs); the HTTP API's JSON parser is called directly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from functions_framework import _function_registry

from controller.surfaces import http_requests as api

MAIN = Path(__file__).resolve().parent.parent.parent / "main.py"
DEEP = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"a":' * 5000 + b"1" + b"}" * 5000
BINARY = {
    "ce-specversion": "1.0",
    "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
    "ce-source": "//pubsub.googleapis.com/projects/demo-proj/topics/alerts",
    "ce-id": "1",
    "Content-Type": "application/json",
}


@pytest.fixture
def alert_app(monkeypatch: pytest.MonkeyPatch) -> Any:
    """handle_alert in a real functions-framework app, global state restored afterwards."""
    for name in ("FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE", "FUNCTION_TRIGGER_TYPE"):
        monkeypatch.setenv(name, "")
    monkeypatch.setattr(sys, "path", [*sys.path])
    monkeypatch.setitem(sys.modules, "main", sys.modules.get("main"))
    monkeypatch.setattr(_function_registry, "REGISTRY_MAP", dict(_function_registry.REGISTRY_MAP))
    create_app: Callable[..., Any] = functions_framework.create_app
    return create_app(target="handle_alert", source=str(MAIN), signature_type="cloudevent").test_client()


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param(BINARY, DEEP, id="binary-mode"),
        pytest.param(
            {"Content-Type": "application/cloudevents+json"},
            b'{"specversion":"1.0","type":"t","source":"s","id":"1","data":' + DEEP + b"}",
            id="structured-mode",
        ),
        pytest.param({"Content-Type": "application/json"}, b'{"context":{},"data":' + DEEP + b"}", id="legacy-event"),
        pytest.param({"Content-Type": "application/json"}, DEEP_OBJECT, id="bare-object"),
    ],
)
def test_deep_body_to_the_alert_function_is_a_400_with_a_rejected_line(
    alert_app: Any, capsys: pytest.CaptureFixture[str], headers: dict[str, str], body: bytes
) -> None:
    response = alert_app.post("/", headers=headers, data=body)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert any(str(line["message"]).startswith("rejected request") for line in lines)


def test_deep_body_to_the_http_api_is_invalid_request_not_recursion_error() -> None:
    with pytest.raises(api.HttpError) as caught:
        api._parse_json_object(DEEP_OBJECT)
    assert caught.value.status == 422
    assert caught.value.body["fields"] == [{"field": "body", "message": "JSON nested too deeply"}]
