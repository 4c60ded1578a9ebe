"""One delivery's or request's log lines carry its trace, span and execution id (issue 8 item 7).

The deliveries and requests go through the real functions-framework app built from ``main.py``
(so its execution-id middleware and context run), against an in-memory Cloud Run.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from deliveries import cloud_event
from functions_framework import _function_registry
from support import InMemoryCloudRun, RecordingNotifier, rev, state

from controller.adapters import logs
from controller.adapters.policy_files import load_policies
from controller.app import engine
from controller.app.engine import Controller
from controller.app.settings import Settings
from controller.surfaces import api

ROOT = Path(__file__).resolve().parent.parent.parent
MAIN = ROOT / "main.py"
INCIDENT = json.loads((ROOT / "tests" / "data" / "incident-5xx-open.json").read_text())
PROJECT = "demo-proj"
TRACE_A, SPAN_A = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACE_B, SPAN_B = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
REVS = [rev("checkout-00041-abc", 1), rev("checkout-00042-xyz", 2)]


def traceparent(trace: str, span: str) -> str:
    return f"00-{trace}-{span}-01"


@pytest.fixture
def make_app(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], Any]:
    """A test client of one main.py entry point; functions-framework's global state restored afterwards."""
    for name in ("FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE", "FUNCTION_TRIGGER_TYPE"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setattr(sys, "path", [*sys.path])
    monkeypatch.setitem(sys.modules, "main", sys.modules.get("main"))
    monkeypatch.setattr(_function_registry, "REGISTRY_MAP", dict(_function_registry.REGISTRY_MAP))
    create_app: Callable[..., Any] = functions_framework.create_app

    def make(target: str, signature: str) -> Any:
        return create_app(target=target, source=str(MAIN), signature_type=signature).test_client()

    return make


@pytest.fixture
def in_memory_controller(monkeypatch: pytest.MonkeyPatch) -> InMemoryCloudRun:
    run = InMemoryCloudRun(state(REVS))
    ctl = Controller(
        Settings(default_project=PROJECT), run, RecordingNotifier(), policies=load_policies(ROOT / "policies")
    )
    monkeypatch.setattr(engine, "_controller", ctl)
    return run


class Lines(logging.Handler):
    """Every formatted controller line, with the thread that wrote it."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logs.CloudLoggingFormatter())
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.threadName or "", json.loads(self.format(record))))


@pytest.fixture
def captured() -> Iterator[Lines]:
    logs.configure()
    handler = Lines()
    logger = logging.getLogger("controller")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def post_delivery(client: Any, doc: Any, extra: dict[str, str]) -> Any:
    headers, body = cloud_event(doc)
    return client.post("/", headers={**headers, **extra}, data=body)


def test_a_delivery_with_a_traceparent_has_only_lines_carrying_its_trace(
    make_app: Callable[[str, str], Any], in_memory_controller: InMemoryCloudRun, captured: Lines
) -> None:
    client = make_app("handle_alert", "cloudevent")
    response = post_delivery(client, INCIDENT, {"ce-traceparent": traceparent(TRACE_A, SPAN_A)})
    assert response.status_code == 200
    lines = [line for _thread, line in captured.lines]
    decisions = [line["decision"]["reason"] for line in lines if isinstance(line.get("decision"), dict)]
    assert decisions == ["rolled-back"]  # a real rollback: its decision line is among them
    for line in lines:
        assert line[logs.TRACE_KEY] == f"projects/{PROJECT}/traces/{TRACE_A}", line
        assert line[logs.SPAN_KEY] == SPAN_A
        assert line[logs.LABELS_KEY]["execution_id"], line  # functions-framework's, always set by its middleware


def test_an_http_request_with_x_cloud_trace_context_has_only_lines_carrying_its_trace(
    make_app: Callable[[str, str], Any], monkeypatch: pytest.MonkeyPatch, captured: Lines
) -> None:
    # An invalid allow list: building the API logs an error, and the route answers 503 (and logs nothing else).
    monkeypatch.setenv("ROLLBACK_ALLOWED_PRINCIPALS", "not an email")
    api.reset_api()
    try:
        client = make_app("handle_http", "http")
        response = client.post(
            "/rollback",
            json={"project": PROJECT, "region": "us-central1", "service": "checkout"},
            headers={"X-Cloud-Trace-Context": f"{TRACE_B}/12345;o=1", "Function-Execution-Id": "exec-42"},
        )
    finally:
        api.reset_api()
    assert response.status_code == 503
    lines = [line for _thread, line in captured.lines]
    assert lines
    for line in lines:
        assert line[logs.TRACE_KEY] == f"projects/{PROJECT}/traces/{TRACE_B}", line
        assert line[logs.SPAN_KEY] == f"{12345:016x}"  # decimal in the header, hex in LogEntry.spanId
        assert line[logs.LABELS_KEY]["execution_id"] == "exec-42"


def test_lines_of_two_deliveries_at_once_do_not_mix(
    make_app: Callable[[str, str], Any], in_memory_controller: InMemoryCloudRun, captured: Lines
) -> None:
    client = make_app("handle_alert", "cloudevent")
    other = json.loads(json.dumps(INCIDENT))
    other["incident"]["incident_id"] = "0.other"
    traces = {"delivery-a": (INCIDENT, TRACE_A, SPAN_A), "delivery-b": (other, TRACE_B, SPAN_B)}
    barrier = threading.Barrier(2, timeout=30)

    def deliver(doc: Any, trace: str, span: str) -> None:
        barrier.wait()
        post_delivery(client, doc, {"ce-traceparent": traceparent(trace, span)})

    threads = [threading.Thread(target=deliver, args=args, name=name, daemon=True) for name, args in traces.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    logging.getLogger("controller.test").info("after both deliveries")
    seen = set()
    for thread_name, line in captured.lines:
        if thread_name in traces:
            _doc, trace, span = traces[thread_name]
            assert (line[logs.TRACE_KEY], line[logs.SPAN_KEY]) == (f"projects/{PROJECT}/traces/{trace}", span), line
            seen.add(thread_name)
        else:  # outside any delivery: no keys left behind
            assert logs.TRACE_KEY not in line and logs.LABELS_KEY not in line, line
    assert seen == set(traces)
    executions = {
        thread_name: {line[logs.LABELS_KEY]["execution_id"] for name, line in captured.lines if name == thread_name}
        for thread_name in traces
    }
    assert all(len(ids) == 1 for ids in executions.values())
    assert executions["delivery-a"] != executions["delivery-b"]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"traceparent": traceparent(TRACE_A, SPAN_A)},
            {logs.TRACE_KEY: f"projects/p/traces/{TRACE_A}", logs.SPAN_KEY: SPAN_A},
            id="w3c",
        ),
        pytest.param(
            {"cloud_trace_context": f"{TRACE_B}/1;o=1"},
            {logs.TRACE_KEY: f"projects/p/traces/{TRACE_B}", logs.SPAN_KEY: "0000000000000001"},
            id="x-cloud-trace-context",
        ),
        pytest.param({"cloud_trace_context": TRACE_B}, {logs.TRACE_KEY: f"projects/p/traces/{TRACE_B}"}, id="no-span"),
        pytest.param(
            {"traceparent": traceparent(TRACE_A, SPAN_A), "cloud_trace_context": f"{TRACE_B}/1"},
            {logs.TRACE_KEY: f"projects/p/traces/{TRACE_A}", logs.SPAN_KEY: SPAN_A},
            id="traceparent-wins",
        ),
        pytest.param({"traceparent": traceparent("0" * 32, SPAN_A)}, {}, id="all-zero-trace-is-invalid"),
        pytest.param({"traceparent": "00-" + "x" * 5000}, {}, id="garbage"),
        pytest.param({"cloud_trace_context": "a" * 31}, {}, id="short-trace-id"),
        pytest.param({"execution_id": "abc123"}, {logs.LABELS_KEY: {"execution_id": "abc123"}}, id="execution-id"),
        pytest.param({"execution_id": "a b\n"}, {}, id="odd-execution-id-dropped"),
    ],
)
def test_correlation_keys(kwargs: dict[str, str], expected: dict[str, Any]) -> None:
    assert logs.correlation_keys("p", **kwargs) == expected


def test_no_project_means_no_trace() -> None:
    assert logs.correlation_keys(None, traceparent=traceparent(TRACE_A, SPAN_A)) == {}


def test_the_invocation_labels_merge_with_a_lines_own_labels() -> None:
    handler = Lines()
    logger = logging.getLogger("controller.test.labels")
    logger.addHandler(handler)
    try:
        with logs.invocation(logs.correlation_keys("p", execution_id="e1")):
            logger.warning("x", extra={"labels": {"service": "checkout"}})
        logger.warning("y")
    finally:
        logger.removeHandler(handler)
    (_t, inside), (_u, outside) = handler.lines
    assert inside[logs.LABELS_KEY] == {"execution_id": "e1", "service": "checkout"}
    assert logs.LABELS_KEY not in outside
