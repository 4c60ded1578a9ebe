"""The manual-control HTTP API end to end: functions-framework serving ``handle_http`` over real HTTP,
Google-style ID tokens minted with a local RSA key whose certificate a local server publishes
(``ROLLBACK_AUTH_CERTS_URL``), the real google-cloud-run and slack-sdk clients talking to the
emulators. A second function process serves ``handle_alert`` against the same emulators, so manual
and automatic actions meet on one service: undo after an automatic rollback, hold blocking an
alert, and a manual rollback racing an alert-triggered one.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from deliveries import cloud_event
from tokens import google_claims, make_key, serve_certs

from controller.core.ledger import Ledger, write_ledger
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.surfaces.demo import PROJECT, REGION, SERVICE, free_port, function_env, start_function, stop_process
from controller.surfaces.http_requests import MAX_BODY_BYTES
from controller.surfaces.http_routes import ROUTES

ROOT = Path(__file__).resolve().parents[2]
INCIDENT = json.loads((ROOT / "tests" / "data" / "incident-5xx-open.json").read_text())
T0 = datetime.datetime(2024, 6, 1, 12, 0, tzinfo=datetime.UTC)
OLDEST, PREVIOUS, SUSPECT = "checkout-00040-aaa", "checkout-00041-abc", "checkout-00042-xyz"
AUDIENCE = "https://europe-west1-demo-proj.cloudfunctions.net/rollback-http"
ALICE = "alice@example.com"
LATEST_100 = [{"type": "LATEST", "revision": "", "percent": 100, "tag": ""}]
PREVIOUS_100 = [{"type": "REVISION", "revision": PREVIOUS, "percent": 100, "tag": ""}]
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


# --------------------------------------------------------------------------- keys and certificates


GOOGLE_KEY = make_key("local-google-1")
ATTACKER_KEY = make_key("attacker")


def claims(**overrides: Any) -> dict[str, Any]:
    return google_claims(AUDIENCE, ALICE, **overrides)


def bearer(**overrides: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {GOOGLE_KEY.sign(claims(**overrides))}"}


@pytest.fixture(scope="module")
def certs_url() -> Iterator[str]:
    with serve_certs(GOOGLE_KEY) as url:
        yield url


# --------------------------------------------------------------------------- the stack


def seed(emu: CloudRunEmulator, annotations: dict[str, str] | None = None) -> None:
    """checkout with three Ready revisions, the newest serving 100% through LATEST (as in test_alert_path)."""
    emu.reset()
    emu.add_service(
        PROJECT,
        REGION,
        SERVICE,
        revisions=[
            RevisionSpec(name=OLDEST, create_time=T0 - datetime.timedelta(days=3)),
            RevisionSpec(name=PREVIOUS, create_time=T0 - datetime.timedelta(days=2)),
            RevisionSpec(name=SUSPECT, create_time=T0 - datetime.timedelta(minutes=10)),
        ],
        annotations=annotations,
    )


@dataclass
class Stack:
    run: CloudRunEmulator
    slack: SlackEmulator
    http_port: int
    alert_port: int
    log: Path

    def call(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> requests.Response:
        headers = {**(bearer() if auth else {}), **kwargs.pop("headers", {})}
        return requests.request(
            method, f"http://127.0.0.1:{self.http_port}{path}", headers=headers, timeout=30, **kwargs
        )

    def deliver(self, doc: dict[str, Any]) -> requests.Response:
        headers, body = cloud_event(doc)
        return requests.post(f"http://127.0.0.1:{self.alert_port}/", headers=headers, data=body, timeout=30)

    def traffic(self) -> list[dict[str, Any]]:
        return self.run.traffic(PROJECT, REGION, SERVICE)

    def annotations(self) -> dict[str, str]:
        found: dict[str, str] = self.run.service(PROJECT, REGION, SERVICE).get("annotations", {})
        return found

    def changes(self) -> int:
        return self.run.applied_traffic_changes(PROJECT, REGION, SERVICE)

    def log_lines(self, event: str) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(raw)
                if isinstance(entry, dict) and entry.get("event") == event:
                    lines.append(entry)
        return lines


def stack_env(
    run: CloudRunEmulator, slack: SlackEmulator, monitoring: MonitoringEmulator, **extra: str
) -> dict[str, str]:
    """function_env for the emulators (Monitoring too when function_env takes it), without proxies."""
    if "monitoring" in inspect.signature(function_env).parameters:
        extra = {"monitoring": monitoring.target, **extra}
    env = function_env(run.url, slack.api_url, **extra)
    return {k: v for k, v in env.items() if k.lower() not in PROXY_VARS}


@pytest.fixture(scope="module")
def stack_(certs_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("http-api")
    with CloudRunEmulator(page_size=2) as run, SlackEmulator() as slack, MonitoringEmulator() as monitoring:
        auth = {
            "ROLLBACK_AUTH_AUDIENCE": AUDIENCE,
            "ROLLBACK_ALLOWED_PRINCIPALS": f"{ALICE},*@corp.example.org",
            "ROLLBACK_AUTH_CERTS_URL": certs_url,
        }
        http_port, alert_port = free_port(), free_port()
        http = start_function(
            "handle_http", http_port, stack_env(run, slack, monitoring, **auth), log_path=tmp / "http.log"
        )
        try:
            alert = start_function(
                "handle_alert", alert_port, stack_env(run, slack, monitoring), log_path=tmp / "alert.log"
            )
            try:
                yield Stack(run, slack, http_port, alert_port, tmp / "http.log")
            finally:
                stop_process(alert)
        finally:
            stop_process(http)


@pytest.fixture
def stack(stack_: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    for name in PROXY_VARS:  # a developer's proxy must not intercept 127.0.0.1
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    seed(stack_.run)
    stack_.slack.reset()
    return stack_


COORDS = {"project": PROJECT, "region": REGION, "service": SERVICE}


# --------------------------------------------------------------------------- health, routing, auth


def test_healthz_needs_no_token(stack: Stack) -> None:
    response = stack.call("GET", "/healthz", auth=False)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_unknown_route_is_404_and_wrong_method_is_405(stack: Stack) -> None:
    assert stack.call("GET", "/nope").status_code == 404
    response = stack.call("PUT", "/rollback", json=COORDS)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        pytest.param({}, 401, "missing_token", id="no-token"),
        pytest.param({"Authorization": "Bearer not.a-jwt"}, 401, "invalid_token", id="malformed"),
        pytest.param(
            {
                "Authorization": "Bearer "
                + GOOGLE_KEY.sign(claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600))
            },
            401,
            "expired_token",
            id="expired",
        ),
        pytest.param(
            {"Authorization": "Bearer " + ATTACKER_KEY.sign(claims(), kid=GOOGLE_KEY.kid)},
            401,
            "invalid_token",
            id="forged",
        ),
        pytest.param(bearer(aud="https://other.example/fn"), 403, "wrong_audience", id="wrong-audience"),
        pytest.param(bearer(email="bob@example.com"), 403, "forbidden_principal", id="wrong-principal"),
        pytest.param(bearer(email="x@eng.corp.example.org"), 403, "forbidden_principal", id="subdomain-of-wildcard"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        pytest.param("GET", "/status", {"params": {"region": REGION, "service": SERVICE}}, id="status"),
        pytest.param("POST", "/rollback", {"json": {**COORDS, "reason": "x"}}, id="rollback"),
    ],
)
def test_authentication_failures(
    stack: Stack, headers: dict[str, str], status: int, error: str, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = stack.call(method, path, auth=False, headers=headers, **kwargs)
    assert response.status_code == status
    assert response.json()["error"] == error
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert stack.run.patches == []
    token = headers.get("Authorization", "")[7:]
    if token:
        assert token not in stack.log.read_text(encoding="utf-8")  # never logged


def test_wildcard_domain_principal_is_admitted(stack: Stack) -> None:
    params = {"region": REGION, "service": SERVICE}
    response = stack.call("GET", "/status", auth=False, headers=bearer(email="x@corp.example.org"), params=params)
    assert response.status_code == 200


@pytest.fixture(scope="module")
def unconfigured_port(certs_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    # Audience set but no allowed principals: never open by default.
    with CloudRunEmulator() as run, SlackEmulator() as slack, MonitoringEmulator() as monitoring:
        port = free_port()
        env = stack_env(run, slack, monitoring, ROLLBACK_AUTH_AUDIENCE=AUDIENCE, ROLLBACK_AUTH_CERTS_URL=certs_url)
        proc = start_function("handle_http", port, env, log_path=tmp_path_factory.mktemp("unconf") / "http.log")
        try:
            yield port
        finally:
            stop_process(proc)


@pytest.mark.parametrize("with_token", [True, False], ids=["valid-token", "no-token"])
def test_unconfigured_auth_answers_503(unconfigured_port: int, with_token: bool) -> None:
    base = f"http://127.0.0.1:{unconfigured_port}"
    headers = bearer() if with_token else {}
    response = requests.get(
        f"{base}/status", params={"region": REGION, "service": SERVICE}, headers=headers, timeout=30
    )
    assert response.status_code == 503
    assert response.json()["error"] == "auth_not_configured"
    assert "ROLLBACK_ALLOWED_PRINCIPALS" in response.json()["message"]
    assert requests.get(f"{base}/healthz", timeout=30).status_code == 200
    slack = requests.post(f"{base}/slack/actions", data=b"payload=%7B%7D", timeout=30)
    assert slack.status_code == 503


# --------------------------------------------------------------------------- body limits and validation


def test_body_over_64_kib_is_413(stack: Stack) -> None:
    big = json.dumps({**COORDS, "reason": "x" * MAX_BODY_BYTES}).encode()
    response = stack.call("POST", "/rollback", data=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the read itself is bounded
        yield b'{"reason": "'
        for _ in range(80):
            yield b"y" * 1024
        yield b'"}'

    response = stack.call("POST", "/rollback", data=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert stack.run.patches == []


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param({"reason": "x"}, {"region", "service"}, id="missing-coordinates"),
        pytest.param({**COORDS}, {"reason"}, id="missing-reason"),
        pytest.param({**COORDS, "reason": "x", "dry_run": "yes"}, {"dry_run"}, id="wrong-type"),
        pytest.param({**COORDS, "reason": "x", "to_revsion": PREVIOUS}, {"to_revsion"}, id="unknown-field"),
        pytest.param({**COORDS, "reason": "x", "service": "../etc"}, {"service"}, id="bad-service-name"),
        pytest.param([COORDS], {"body"}, id="not-an-object"),
    ],
)
def test_invalid_body_is_422_listing_the_fields(stack: Stack, body: Any, fields: set[str]) -> None:
    response = stack.call("POST", "/rollback", json=body)
    assert response.status_code == 422
    answer = response.json()
    assert answer["error"] == "invalid_request"
    assert {f["field"] for f in answer["fields"]} == fields
    assert all(f["message"] for f in answer["fields"])


def test_invalid_json_is_422(stack: Stack) -> None:
    response = stack.call("POST", "/hold", data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "body"


def test_status_query_is_validated(stack: Stack) -> None:
    response = stack.call("GET", "/status", params={"service": SERVICE})
    assert response.status_code == 422
    assert [f["field"] for f in response.json()["fields"]] == ["region"]


def test_unknown_service_is_404(stack: Stack) -> None:
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/status", {"params": {"region": REGION, "service": "nope"}}),
        ("POST", "/rollback", {"json": {**COORDS, "service": "nope", "reason": "x"}}),
        ("POST", "/undo", {"json": {**COORDS, "service": "nope"}}),
        ("POST", "/hold", {"json": {**COORDS, "service": "nope"}}),
        ("DELETE", "/hold", {"params": {"region": REGION, "service": "nope"}}),
    ]
    for method, path, kwargs in cases:
        response = stack.call(method, path, **kwargs)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == "service_not_found"


# --------------------------------------------------------------------------- actions


def test_status_shows_traffic_revisions_and_ledger(stack: Stack) -> None:
    response = stack.call("GET", "/status", params={"region": REGION, "service": SERVICE})  # project defaulted
    assert response.status_code == 200
    status = response.json()
    assert status["traffic"] == LATEST_100
    assert [(r["name"], r["ready"]) for r in status["revisions"]] == [(SUSPECT, True), (PREVIOUS, True), (OLDEST, True)]
    assert status["quarantined"] == []
    assert status["hold"] is None and status["last_action"] is None


def test_manual_rollback_moves_traffic_quarantines_and_records_the_actor(stack: Stack) -> None:
    response = stack.call("POST", "/rollback", json={"region": REGION, "service": SERVICE, "reason": "bad deploy"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["traffic"] == PREVIOUS_100 == stack.traffic()
    assert answer["traffic_before"] == LATEST_100
    assert (answer["from_revision"], answer["to_revision"], answer["actor"]) == (SUSPECT, PREVIOUS, ALICE)
    assert stack.changes() == 1
    status = stack.call("GET", "/status", params={"region": REGION, "service": SERVICE}).json()
    assert [q["revision"] for q in status["quarantined"]] == [SUSPECT]
    assert status["last_action"]["kind"] == "manual-rollback"
    assert status["last_action"]["actor"] == ALICE
    [message] = stack.slack.wait_for_messages(1)
    assert ALICE in json.dumps(message["blocks"])
    assert "Manual rollback" in message["text"]
    # The function's log holds every test's lines: pick this action's by its reason.
    [line] = [e for e in stack.log_lines("manual") if e["action"] == "rollback" and e["reason"] == "bad deploy"]
    assert line["actor"] == ALICE and line["changed"] is True


@pytest.mark.parametrize(
    ("body", "guard"),
    [
        pytest.param({"to_revision": "checkout-00099-zzz"}, "unknown_revision", id="unknown-revision"),
        pytest.param({"to_revision": SUSPECT}, "already_serving", id="already-serving"),
        pytest.param({"to_revision": OLDEST}, "target_quarantined", id="quarantined"),
    ],
)
def test_rollback_guards_answer_409_naming_the_guard(stack: Stack, body: dict[str, str], guard: str) -> None:
    seed(stack.run, annotations=write_ledger(Ledger().quarantine(OLDEST, reason="bad", now=_now()), {}))
    response = stack.call("POST", "/rollback", json={**COORDS, "reason": "x", **body})
    assert response.status_code == 409
    assert response.json()["error"] == guard
    assert response.json()["traffic"] == LATEST_100
    assert stack.run.patches == []


def test_force_rolls_back_to_a_quarantined_revision(stack: Stack) -> None:
    seed(stack.run, annotations=write_ledger(Ledger().quarantine(OLDEST, reason="bad", now=_now()), {}))
    response = stack.call("POST", "/rollback", json={**COORDS, "reason": "x", "to_revision": OLDEST, "force": True})
    assert response.status_code == 200
    assert stack.traffic()[0]["revision"] == OLDEST


def test_a_second_rollback_within_the_cooldown_is_409_recent_action_unless_forced(stack: Stack) -> None:
    assert stack.call("POST", "/rollback", json={**COORDS, "reason": "bad deploy"}).status_code == 200
    again = stack.call("POST", "/rollback", json={**COORDS, "reason": "again"})
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "recent_action"
    assert f"rolled back to {PREVIOUS} by {ALICE} at" in again.json()["message"]
    assert again.json()["traffic"] == PREVIOUS_100 == stack.traffic()
    forced = stack.call("POST", "/rollback", json={**COORDS, "reason": "older still", "force": True})
    assert forced.status_code == 200, forced.text
    assert stack.traffic()[0]["revision"] == OLDEST


def test_dry_run_changes_nothing(stack: Stack) -> None:
    response = stack.call("POST", "/rollback", json={**COORDS, "reason": "x", "dry_run": True})
    assert response.status_code == 200
    assert response.json()["dry_run"] is True
    assert response.json()["changed"] is False
    assert response.json()["traffic"] == LATEST_100
    assert stack.run.patches == []
    assert stack.slack.messages == []  # a dry run tells only the caller


def test_undo_after_an_automatic_rollback_restores_the_exact_previous_traffic(stack: Stack) -> None:
    assert stack.deliver(INCIDENT).status_code == 200
    assert stack.traffic() == PREVIOUS_100
    assert SUSPECT in stack.annotations()["rollback-controller/quarantined"]
    response = stack.call("POST", "/undo", json={**COORDS, "reason": "false alarm"})
    assert response.status_code == 200, response.text
    assert response.json()["traffic"] == LATEST_100 == stack.traffic()
    assert stack.changes() == 2
    status = stack.call("GET", "/status", params=COORDS).json()
    assert status["quarantined"] == []  # the quarantine the rollback imposed is lifted
    assert status["last_action"]["kind"] == "undo"
    assert status["last_action"]["actor"] == ALICE
    # A redelivery of the same incident does not roll back again (it is still recorded as handled).
    assert stack.deliver(INCIDENT).status_code == 200
    assert stack.traffic() == LATEST_100
    # And a second undo has nothing to undo.
    again = stack.call("POST", "/undo", json=COORDS)
    assert again.status_code == 409
    assert again.json()["error"] == "nothing_to_undo"


def test_undo_with_nothing_to_undo_is_409(stack: Stack) -> None:
    response = stack.call("POST", "/undo", json=COORDS)
    assert response.status_code == 409
    assert response.json()["error"] == "nothing_to_undo"


def test_hold_blocks_an_alert_triggered_rollback_but_not_a_manual_one(stack: Stack) -> None:
    held = stack.call("POST", "/hold", json={**COORDS, "reason": "investigating"})
    assert held.status_code == 200
    assert held.json()["hold"]["by"] == ALICE
    assert held.json()["traffic"] == LATEST_100
    assert stack.changes() == 0  # a hold writes the ledger, not the traffic
    stack.slack.reset()

    assert stack.deliver(INCIDENT).status_code == 200
    assert stack.traffic() == LATEST_100
    [message] = stack.slack.wait_for_messages(1)
    assert "on hold" in message["text"]

    manual = stack.call("POST", "/rollback", json={**COORDS, "reason": "on-call decides"})
    assert manual.status_code == 200
    assert stack.traffic() == PREVIOUS_100
    assert manual.json()["hold"] is not None  # still held after the manual action


def test_release_takes_coordinates_from_the_query_or_the_body(stack: Stack) -> None:
    assert stack.call("POST", "/hold", json=COORDS).status_code == 200
    again = stack.call("POST", "/hold", json=COORDS)
    assert again.status_code == 200 and again.json()["changed"] is False
    released = stack.call("DELETE", "/hold", params={"region": REGION, "service": SERVICE})
    assert released.status_code == 200
    assert released.json()["hold"] is None and released.json()["changed"] is True
    assert stack.call("POST", "/hold", json=COORDS).status_code == 200
    released = stack.call("DELETE", "/hold", json={**COORDS, "reason": "fixed"})
    assert released.status_code == 200 and released.json()["changed"] is True
    clash = stack.call("DELETE", "/hold", params={"service": "other"}, json=COORDS)
    assert clash.status_code == 422
    assert stack.call("GET", "/status", params=COORDS).json()["hold"] is None


def test_manual_rollback_racing_an_alert_ends_consistent_with_one_traffic_change(stack: Stack) -> None:
    # Both read the same etag; hold the first PATCH until the second arrives, so the race is real.
    barrier = threading.Barrier(2, timeout=5)
    held: list[str] = []

    def hold(name: str) -> None:
        if len(held) >= 2:  # the alert's later "announced" write (traffic unchanged) is not raced
            return
        held.append(name)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()

    stack.run.before_patch = hold
    with ThreadPoolExecutor(2) as pool:
        alert = pool.submit(stack.deliver, INCIDENT)
        manual = pool.submit(lambda: stack.call("POST", "/rollback", json={**COORDS, "reason": "racing"}))
        alert_response, manual_response = alert.result(), manual.result()
    assert alert_response.status_code == 200
    assert manual_response.status_code in (200, 409), manual_response.text
    if manual_response.status_code == 409:
        assert manual_response.json()["error"] == "concurrent_change"  # the alert won; no second rollback
    # Leaving out the alert's "announced" write (applied, traffic unchanged: controller/core/announce.py).
    raced = [p.outcome for p in stack.run.patches if p.outcome != "applied" or p.traffic_changed]
    assert sorted(raced) == ["applied", "conflict"]
    assert stack.changes() == 1
    assert stack.traffic() == PREVIOUS_100
    annotations = stack.annotations()
    assert SUSPECT in annotations["rollback-controller/quarantined"]
    assert annotations["rollback-controller/last-good"] == PREVIOUS


# --------------------------------------------------------------------------- the OpenAPI document


def test_every_route_is_in_the_openapi_document() -> None:
    doc = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
    assert doc["openapi"].startswith("3.1")
    documented = {
        (path, method.upper()) for path, ops in doc["paths"].items() for method in ops if method != "parameters"
    }
    served = {(path, method) for path, methods in ROUTES.items() for method in methods}
    assert documented == served


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
