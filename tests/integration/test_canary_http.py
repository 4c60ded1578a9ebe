"""Canary routes end to end: functions-framework serving ``handle_http`` over real HTTP with Google-style
ID tokens (a local RSA key whose certificate a local server publishes), the real google-cloud-run,
google-cloud-monitoring and slack-sdk clients against the emulators, and the real clock.

The real clock is fine here: a candidate just deployed starts at once, and a gate right after says
``inconclusive``. For the approval flow, the traffic simulator writes the last minutes of traffic up
to the real "now" and the ledger says the 50% step started six minutes ago.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from tokens import google_claims, make_key, serve_certs

from controller.core.ledger import CanaryState, Ledger, read_ledger, write_ledger
from controller.core.slack_blocks import ACTION_PROMOTE, PROMOTE_BLOCK_ID
from controller.emulator.cloudrun import CloudRunEmulator, RevisionSpec
from controller.emulator.monitoring import MonitoringEmulator
from controller.emulator.slack import SlackEmulator
from controller.emulator.traffic import RevisionProfile, TrafficSimulator
from controller.surfaces.demo import PROJECT, REGION, free_port, function_env, start_function, stop_process

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime.datetime(2024, 6, 1, 12, 0, tzinfo=datetime.UTC)
STABLE, CANDIDATE = "checkout-00041-abc", "checkout-00042-xyz"
AUDIENCE = "https://europe-west1-demo-proj.cloudfunctions.net/rollback-http"
ALICE = "alice@example.com"
SECRET = "test-signing-secret-0123456789abcdef"
SLACK_USER = "U0123USER"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
POLICIES = """
name: gated
match: {services: ["gated-*"]}
triggers:
  error_rate: {above: 0.05, for: 2m, min_requests: 50}
canary: {steps: [10, 50, 100], step_for: 5m, metric_lag: 3m, min_requests: 100, require_approval: true}
---
name: alerts-only
match: {services: ["nocanary-*"]}
triggers:
  error_rate: {above: 0.05, for: 2m}
"""


KEY = make_key("local-google-1")


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY.sign(google_claims(AUDIENCE, ALICE))}"}


@dataclass
class Stack:
    run: CloudRunEmulator
    slack: SlackEmulator
    monitoring: MonitoringEmulator
    port: int

    def call(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> requests.Response:
        headers = bearer() if auth else {}
        return requests.request(method, f"http://127.0.0.1:{self.port}{path}", headers=headers, timeout=30, **kwargs)

    def deploy(self, service: str, annotations: dict[str, str] | None = None, percent: int = 0) -> None:
        """``service`` with STABLE serving and CANDIDATE deployed with --no-traffic (or at ``percent``)."""
        traffic = [{"type": "REVISION", "revision": STABLE, "percent": 100 - percent, "tag": "stable"}]
        traffic.append({"type": "REVISION", "revision": CANDIDATE, "percent": percent, "tag": "candidate"})
        if annotations is None:  # the controller already knows stable
            annotations = write_ledger(Ledger().with_last_good(STABLE), {})
        self.run.add_service(
            PROJECT,
            REGION,
            service,
            revisions=[
                RevisionSpec(name=STABLE, create_time=T0 - datetime.timedelta(days=2)),
                RevisionSpec(name=CANDIDATE, create_time=T0 - datetime.timedelta(minutes=10)),
            ],
            traffic=traffic,
            annotations=annotations,
        )

    def traffic(self, service: str) -> list[tuple[str, int]]:
        return [(t["revision"], t["percent"]) for t in self.run.traffic(PROJECT, REGION, service)]

    def ledger(self, service: str) -> Ledger:
        return read_ledger(self.run.service(PROJECT, REGION, service).get("annotations", {}))


@pytest.fixture(scope="module")
def stack_(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("canary-http")
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text((ROOT / "policies" / "default.yaml").read_text())
    (policies / "more.yaml").write_text(POLICIES)
    with (
        serve_certs(KEY) as certs_url,
        CloudRunEmulator() as run,
        SlackEmulator() as slack,
        # The canary's judged windows end at the tick (issue 10): ingestion lag off here.
        MonitoringEmulator(ingestion_lag=datetime.timedelta(0)) as monitoring,
    ):
        env = function_env(
            run.url,
            slack.api_url,
            monitoring=monitoring.target,
            ROLLBACK_POLICIES=str(policies),
            ROLLBACK_REGIONS=REGION,
            ROLLBACK_AUTH_AUDIENCE=AUDIENCE,
            ROLLBACK_ALLOWED_PRINCIPALS=ALICE,
            ROLLBACK_AUTH_CERTS_URL=certs_url,
            SLACK_SIGNING_SECRET=SECRET,
            ROLLBACK_SLACK_ALLOWED_USERS=SLACK_USER,
        )
        env = {k: v for k, v in env.items() if k.lower() not in PROXY_VARS}
        port = free_port()
        proc = start_function("handle_http", port, env, log_path=tmp / "http.log")
        try:
            yield Stack(run, slack, monitoring, port)
        finally:
            stop_process(proc)


@pytest.fixture
def stack(stack_: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    for name in PROXY_VARS:  # a developer's proxy must not intercept 127.0.0.1
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    stack_.run.reset()
    stack_.slack.reset()
    stack_.monitoring.reset()
    return stack_


COORDS = {"project": PROJECT, "region": REGION}


def test_canary_routes_need_a_token(stack: Stack) -> None:
    stack.deploy("checkout")
    for method, path in [("POST", "/canary/tick"), ("POST", "/canary/gate"), ("GET", "/canary/status")]:
        answer = stack.call(method, path, auth=False, params={**COORDS, "service": "checkout"})
        assert answer.status_code == 401, (path, answer.text)
    assert stack.traffic("checkout") == [(STABLE, 100), (CANDIDATE, 0)]


def test_tick_one_service_starts_its_canary(stack: Stack) -> None:
    stack.deploy("checkout")
    answer = stack.call("POST", "/canary/tick", json={**COORDS, "service": "checkout"})
    assert answer.status_code == 200, answer.text
    [report] = answer.json()["services"]
    assert (report["step"], report["percent"], report["candidate"], report["stable"]) == (
        "start",
        10,
        CANDIDATE,
        STABLE,
    )
    assert stack.traffic("checkout") == [(STABLE, 90), (CANDIDATE, 10)]
    [message] = stack.slack.wait_for_messages(1)
    assert "Canary started on checkout" in message["text"]
    cs = stack.ledger("checkout").canary
    assert cs is not None and cs.thread_ts == message["ts"]  # later messages thread under it


def test_tick_all_walks_every_service_with_a_canary_policy(stack: Stack) -> None:
    stack.deploy("checkout")
    stack.deploy("nocanary-api")
    answer = stack.call("POST", "/canary/tick")  # project from GOOGLE_CLOUD_PROJECT, region from ROLLBACK_REGIONS
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["count"] == 1
    assert [(r["service"]["service"], r["step"]) for r in body["services"]] == [("checkout", "start")]
    assert stack.traffic("nocanary-api") == [(STABLE, 100), (CANDIDATE, 0)]


def test_gate_answers_inconclusive_while_the_canary_runs(stack: Stack) -> None:
    stack.deploy("checkout")
    answer = stack.call("POST", "/canary/gate", params={**COORDS, "service": "checkout"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) >= {"verdict", "step", "percent", "candidate", "stable", "evidence", "message"}
    assert (body["verdict"], body["step"], body["percent"], body["candidate"]) == (
        "inconclusive",
        "start",
        10,
        CANDIDATE,
    )
    again = stack.call("POST", "/canary/gate", json={**COORDS, "service": "checkout", "revision": CANDIDATE}).json()
    assert (again["verdict"], again["step"], again["revision"]) == ("inconclusive", "wait", CANDIDATE)
    assert stack.run.applied_traffic_changes(PROJECT, REGION, "checkout") == 1


def test_gate_says_fail_for_a_quarantined_revision(stack: Stack) -> None:
    ledger = Ledger().with_last_good(STABLE).quarantine(CANDIDATE, reason="canary: 5xx", now=T0)
    stack.deploy("checkout", annotations=write_ledger(ledger, {}))
    body = stack.call("POST", "/canary/gate", params={**COORDS, "service": "checkout"}).json()
    assert (body["verdict"], body["revision"]) == ("fail", CANDIDATE)


def test_gate_errors(stack: Stack) -> None:
    stack.deploy("nocanary-api")
    answer = stack.call("POST", "/canary/gate", params={**COORDS, "service": "nocanary-api"})
    assert (answer.status_code, answer.json()["error"]) == (409, "no_canary_policy")
    answer = stack.call("POST", "/canary/gate", params={"service": "checkout"})
    assert (answer.status_code, answer.json()["error"]) == (422, "invalid_request")
    answer = stack.call("POST", "/canary/tick", json={"service": "checkout"})  # a service needs its region
    assert answer.status_code == 422
    answer = stack.call("POST", "/canary/gate", params={**COORDS, "service": "missing"})
    assert (answer.status_code, answer.json()["error"]) == (404, "service_not_found")
    answer = stack.call("POST", "/canary/gate", params={**COORDS, "service": "checkout", "revision": "x_Bad"})
    assert (answer.status_code, answer.json()["fields"][0]["field"]) == (422, "revision")
    answer = stack.call("GET", "/canary/gate")
    assert answer.status_code == 405


def test_status_shows_the_canary(stack: Stack) -> None:
    stack.deploy("checkout")
    stack.call("POST", "/canary/tick", json={**COORDS, "service": "checkout"})
    answer = stack.call("GET", "/canary/status", params={**COORDS, "service": "checkout"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["canary"]["candidate"] == CANDIDATE and body["steps"] == [10, 25, 50, 100]
    assert body["last_good"] == STABLE


def _half_way(stack: Stack, service: str) -> None:
    """A canary at 50% whose step started six minutes ago, with real traffic for those minutes."""
    now = datetime.datetime.now(datetime.UTC).replace(second=0, microsecond=0)
    cs = CanaryState(candidate=CANDIDATE, stable=STABLE, step=1, step_started_at=now - datetime.timedelta(minutes=6))
    ledger = Ledger().with_last_good(STABLE).model_copy(update={"canary": cs})
    stack.deploy(service, annotations=write_ledger(ledger, {}), percent=50)
    sim = TrafficSimulator(
        stack.run, stack.monitoring, project=PROJECT, region=REGION, service=service, seed=3,
        start=now - datetime.timedelta(minutes=6),
    )  # fmt: skip
    good = RevisionProfile(error_rate=0.005, latency_ms=120.0)
    sim.set_profile(STABLE, good)
    sim.set_profile(CANDIDATE, good)
    sim.run_until(now)


def test_approve_route_promotes_after_the_step_passed(stack: Stack) -> None:
    _half_way(stack, "gated-api")
    tick = stack.call("POST", "/canary/tick", json={**COORDS, "service": "gated-api"}).json()
    assert tick["services"][0]["step"] == "await-approval"
    answer = stack.call("POST", "/canary/approve", json={**COORDS, "service": "gated-api", "candidate": CANDIDATE})
    assert answer.status_code == 200, answer.text
    assert answer.json()["step"] == "promote" and f"approved by {ALICE}" in answer.json()["message"]
    assert stack.traffic("gated-api") == [(CANDIDATE, 100), (STABLE, 0)]


def _signed(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = b"payload=" + urllib.parse.quote(json.dumps(payload, separators=(",", ":")), safe="").encode()
    ts = str(int(time.time()))
    signature = "v0=" + hmac.new(SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
    }
    return body, headers


def test_promote_button_in_slack_promotes(stack: Stack) -> None:
    _half_way(stack, "gated-api")
    tick = stack.call("POST", "/canary/tick", json={**COORDS, "service": "gated-api"}).json()
    assert tick["services"][0]["step"] == "await-approval"
    [posted] = stack.slack.wait_for_messages(1)
    [actions] = [b for b in posted["blocks"] if b.get("block_id") == PROMOTE_BLOCK_ID]
    [button] = actions["elements"]
    assert button["action_id"] == ACTION_PROMOTE
    payload = {
        "type": "block_actions",
        "user": {"id": SLACK_USER, "username": "oncall", "name": "oncall"},
        "container": {"type": "message", "message_ts": posted["ts"], "channel_id": posted["channel"]},
        "channel": {"id": posted["channel"]},
        "message": {"text": posted["text"], "blocks": posted["blocks"], "ts": posted["ts"]},
        "actions": [{"action_id": ACTION_PROMOTE, "block_id": PROMOTE_BLOCK_ID, "value": button["value"]}],
    }
    body, headers = _signed(payload)
    answer = requests.post(f"http://127.0.0.1:{stack.port}/slack/actions", data=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True and answer.json()["step"] == "promote"
    assert stack.traffic("gated-api") == [(CANDIDATE, 100), (STABLE, 0)]
    cs = stack.ledger("gated-api").canary
    assert cs is not None and cs.approved_by == f"slack:{SLACK_USER} (oncall)"
    updated = [m for m in stack.slack.messages if m["method"] == "chat.update"]
    assert updated and "Promoted" in json.dumps(updated[-1]["blocks"])  # the button is gone, the outcome shown
    assert PROMOTE_BLOCK_ID not in json.dumps(updated[-1]["blocks"])
